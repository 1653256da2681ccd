// Index-codec kernels: bit and byte counts, varint sizes, and the bitmap and subset-bitmap
// rows to and from columns, dense rows and gathered values (docs/wire-format.md).
//
// Compiled once per x86 target by hwy/foreach_target.h (the file includes itself); the
// exported table and HWY_DYNAMIC_DISPATCH pick the best target at the first call. Every
// result is the same on every target (simd/kernels.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "simd/index_kernels.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "simd/kernels.hpp"
#include "simd/lanes-inl.hpp"

HWY_BEFORE_NAMESPACE();
namespace sparselink::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

uint64_t CountSetBits(const uint8_t* HWY_RESTRICT bytes, size_t n) {
  const hn::ScalableTag<uint64_t> d64;
  const size_t lanes = hn::Lanes(d64);  // words per vector
  auto sum = hn::Zero(d64);
  size_t i = 0;
  for (; i + 8 * lanes <= n; i += 8 * lanes) {
    // LoadU reads the (unaligned) bytes as words; the count does not care about their order.
    const auto words = hn::LoadU(d64, reinterpret_cast<const uint64_t*>(bytes + i));
    sum = hn::Add(sum, hn::PopulationCount(words));
  }
  uint64_t count = hn::GetLane(hn::SumOfLanes(d64, sum));
  for (; i < n; ++i) {
    for (uint32_t b = bytes[i]; b != 0; b &= b - 1) ++count;
  }
  return count;
}

uint64_t CountByte(const uint8_t* HWY_RESTRICT bytes, size_t n, uint8_t value) {
  const hn::ScalableTag<uint8_t> d8;
  const size_t lanes = hn::Lanes(d8);
  const auto v = hn::Set(d8, value);
  uint64_t count = 0;
  size_t i = 0;
  for (; i + lanes <= n; i += lanes)
    count += hn::CountTrue(d8, hn::Eq(hn::LoadU(d8, bytes + i), v));
  for (; i < n; ++i) count += bytes[i] == value ? 1 : 0;
  return count;
}

uint64_t GapVarintExtraBytes(const uint32_t* HWY_RESTRICT ids, size_t n) {
  const DU du;
  const size_t lanes = hn::Lanes(du);
  const auto one = hn::Set(du, 1u);
  uint64_t extra = 0;
  size_t i = 1;
  for (; i + lanes <= n; i += lanes) {
    const auto gap = hn::Sub(hn::Sub(hn::LoadU(du, ids + i), hn::LoadU(du, ids + i - 1)), one);
    extra += hn::CountTrue(du, hn::Gt(gap, hn::Set(du, (1u << 7) - 1))) +
             hn::CountTrue(du, hn::Gt(gap, hn::Set(du, (1u << 14) - 1))) +
             hn::CountTrue(du, hn::Gt(gap, hn::Set(du, (1u << 21) - 1))) +
             hn::CountTrue(du, hn::Gt(gap, hn::Set(du, (1u << 28) - 1)));
  }
  for (; i < n; ++i) {
    const uint32_t gap = ids[i] - ids[i - 1] - 1;
    extra += uint64_t{gap >= (1u << 7)} + (gap >= (1u << 14)) + (gap >= (1u << 21)) +
             (gap >= (1u << 28));
  }
  return extra;
}

uint8_t MaxByte(const uint8_t* HWY_RESTRICT bytes, size_t n) {
  const hn::ScalableTag<uint8_t> d8;
  const size_t lanes = hn::Lanes(d8);
  auto best = hn::Zero(d8);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) best = hn::Max(best, hn::LoadU(d8, bytes + i));
  uint8_t lane_max[HWY_MAX_BYTES] = {};
  hn::StoreU(best, d8, lane_max);
  uint8_t m = 0;
  for (size_t j = 0; j < lanes; ++j) m = std::max(m, lane_max[j]);
  for (; i < n; ++i) m = std::max(m, bytes[i]);
  return m;
}

bool AscendingBelow(const uint32_t* HWY_RESTRICT ids, size_t n, uint32_t limit) {
  if (n == 0) return true;
  const DU du;
  const size_t lanes = hn::Lanes(du);
  auto bad = hn::Zero(du);
  size_t i = 0;
  for (; i + 1 + lanes <= n; i += lanes) {
    const auto here = hn::LoadU(du, ids + i);
    const auto next = hn::LoadU(du, ids + i + 1);
    bad = hn::Or(bad, hn::VecFromMask(du, hn::Not(hn::Gt(next, here))));
  }
  bool ok = hn::AllTrue(du, hn::Eq(bad, hn::Zero(du)));
  for (; i + 1 < n; ++i) ok = ok && ids[i + 1] > ids[i];
  return ok && ids[n - 1] < limit;
}

// The bitmap's 64-bit word w (little-endian), zero-padded past the end of the bytes.
uint64_t LoadWord(const uint8_t* bytes, size_t num_bytes, uint64_t w) {
  uint64_t x = 0;
  const uint64_t first = w * 8;
  if (first + 8 <= num_bytes) {
    std::memcpy(&x, bytes + first, 8);
  } else {
    for (uint64_t i = first; i < num_bytes; ++i) x |= uint64_t{bytes[i]} << (8 * (i - first));
  }
  return x;
}

bool BitmapToColumns(const uint8_t* HWY_RESTRICT bytes, size_t num_bytes, uint64_t rows,
                     uint64_t cols, uint32_t* HWY_RESTRICT offsets, uint32_t* HWY_RESTRICT out,
                     uint64_t capacity, uint64_t* count) {
  const DU du;
  const size_t lanes = hn::Lanes(du);
  // Whole vectors of mask bits straight from the bytes when every row starts on a byte and a
  // vector covers whole bytes; otherwise (and for each row's last partial vector) word by word.
  const bool vector_rows = cols % 8 == 0 && lanes % 8 == 0;
  const auto step = hn::Set(du, static_cast<uint32_t>(lanes));
  uint64_t pos = 0;
  for (uint64_t r = 0; r < rows; ++r) {
    offsets[r] = static_cast<uint32_t>(pos);
    const uint64_t begin = r * cols;
    const uint64_t end = begin + cols;
    uint64_t c = 0;  // columns of this row done
    if (vector_rows) {
      auto col = hn::Iota(du, 0u);
      // LoadMaskBits may read up to 8 bytes: the last bytes of the bitmap go word by word.
      for (; c + lanes <= cols && (begin + c) / 8 + 8 <= num_bytes;
           c += lanes, col = hn::Add(col, step)) {
        const auto mask = hn::LoadMaskBits(du, bytes + (begin + c) / 8);
        const size_t bits = hn::CountTrue(du, mask);
        if (bits > capacity - pos) {
          *count = pos + bits;
          return false;
        }
        hn::StoreU(CompressLanes(du, col, mask), du, out + pos);
        pos += bits;
      }
    }
    for (uint64_t w = (begin + c) / 64; w * 64 < end; ++w) {
      uint64_t x = LoadWord(bytes, num_bytes, w);
      if (w * 64 < begin + c) x &= ~uint64_t{0} << ((begin + c) % 64);
      if (end < w * 64 + 64) x &= (uint64_t{1} << (end % 64)) - 1;
      const auto bits = static_cast<uint64_t>(hwy::PopCount(x));
      if (bits > capacity - pos) {
        *count = pos + bits;
        return false;
      }
      const auto base = static_cast<uint32_t>(w * 64 - begin);  // wraps; base + bit does not
      uint32_t* dst = out + pos;
      for (uint64_t written = 0; written < bits; written += 8, dst += 8) {
        for (int i = 0; i < 8; ++i) {
          dst[i] = base + static_cast<uint32_t>(std::countr_zero(x));
          x &= x - 1;
        }
      }
      pos += bits;
    }
  }
  offsets[rows] = static_cast<uint32_t>(pos);
  *count = pos;
  return true;
}

void RowBitCounts(const uint8_t* HWY_RESTRICT bytes, size_t num_bytes, uint64_t rows, uint64_t cols,
                  uint32_t* HWY_RESTRICT counts) {
  for (uint64_t r = 0; r < rows; ++r) {
    const uint64_t begin = r * cols;
    const uint64_t end = begin + cols;
    uint64_t count = 0;
    for (uint64_t w = begin / 64; w * 64 < end; ++w) {
      uint64_t x = LoadWord(bytes, num_bytes, w);
      if (w * 64 < begin) x &= ~uint64_t{0} << (begin % 64);
      if (end < w * 64 + 64) x &= (uint64_t{1} << (end % 64)) - 1;
      count += static_cast<uint64_t>(hwy::PopCount(x));
    }
    counts[r] = static_cast<uint32_t>(count);
  }
}

// The bits of x where m is set, packed to the low end (BMI2 pext), and the inverse (pdep).
// The portable loops cost one step per set bit of m.
uint64_t ExtractBitsLoop(uint64_t x, uint64_t m) {
  uint64_t r = 0;
  for (uint64_t bit = 1; m != 0; m &= m - 1, bit <<= 1) {
    if ((x & m & (~m + 1)) != 0) r |= bit;
  }
  return r;
}
uint64_t DepositBitsLoop(uint64_t x, uint64_t m) {
  uint64_t r = 0;
  for (uint64_t bit = 1; m != 0; m &= m - 1, bit <<= 1) {
    if ((x & bit) != 0) r |= m & (~m + 1);
  }
  return r;
}
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2 && !defined(HWY_DISABLE_BMI2_FMA)
// AMD family 17h (Zen 1, Zen+, Zen 2) runs pext/pdep in microcode, up to hundreds of cycles
// each: there the loops are faster.
bool SlowPext() {
  static const bool slow = __builtin_cpu_is("amdfam17h");
  return slow;
}
uint64_t ExtractBits(uint64_t x, uint64_t m) {
  return SlowPext() ? ExtractBitsLoop(x, m) : _pext_u64(x, m);
}
uint64_t DepositBits(uint64_t x, uint64_t m) {
  return SlowPext() ? DepositBitsLoop(x, m) : _pdep_u64(x, m);
}
#else
uint64_t ExtractBits(uint64_t x, uint64_t m) { return ExtractBitsLoop(x, m); }
uint64_t DepositBits(uint64_t x, uint64_t m) { return DepositBitsLoop(x, m); }
#endif

void PackMaskedRow(const uint8_t* HWY_RESTRICT row_bits, size_t cols,
                   const uint64_t* HWY_RESTRICT mask, uint8_t* HWY_RESTRICT out, uint64_t* pos) {
  const size_t row_bytes = (cols + 7) / 8;
  uint64_t at = *pos;
  for (size_t w = 0; w * 64 < cols; ++w) {
    if (mask[w] == 0) continue;
    const uint64_t bits = ExtractBits(LoadWord(row_bits, row_bytes, w), mask[w]);
    const auto n = static_cast<unsigned>(std::popcount(mask[w]));
    // OR-ed in at bit `at`: the low part into the 8 bytes from at / 8, the spill (when the
    // shifted bits pass 64) into the ninth; `out` is zeroed with 8 bytes of slack.
    uint8_t* dst = out + at / 8;
    const unsigned shift = at % 8;
    uint64_t word;
    std::memcpy(&word, dst, 8);
    word |= bits << shift;
    std::memcpy(dst, &word, 8);
    if (shift != 0 && shift + n > 64)
      dst[8] = static_cast<uint8_t>(dst[8] | (bits >> (64 - shift)));
    at += n;
  }
  *pos = at;
}

// n (<= 64) bits of `in` from bit `at`, zero past num_bytes.
uint64_t ReadBitsAt(const uint8_t* HWY_RESTRICT in, size_t num_bytes, uint64_t at, unsigned n) {
  const uint64_t first = at / 8;
  const unsigned shift = at % 8;
  uint64_t x;
  if (first + 9 <= num_bytes) {
    std::memcpy(&x, in + first, 8);
    x >>= shift;
    if (shift != 0) x |= uint64_t{in[first + 8]} << (64 - shift);
  } else {
    x = 0;
    for (uint64_t i = first; i < num_bytes && i < first + 9; ++i) {
      const uint64_t byte = in[i];
      const int at_bit = static_cast<int>(8 * (i - first)) - static_cast<int>(shift);
      x |= at_bit >= 0 ? byte << at_bit : byte >> -at_bit;
    }
  }
  return n == 64 ? x : x & ((uint64_t{1} << n) - 1);
}

uint64_t UnpackMaskedRow(const uint8_t* HWY_RESTRICT in, size_t num_bytes, uint64_t* pos,
                         size_t cols, const uint64_t* HWY_RESTRICT mask,
                         uint8_t* HWY_RESTRICT row_bits) {
  const size_t row_bytes = (cols + 7) / 8;
  uint64_t at = *pos;
  uint64_t set = 0;
  for (size_t w = 0; w * 64 < cols; ++w) {
    const auto n = static_cast<unsigned>(std::popcount(mask[w]));
    uint64_t word = 0;
    if (n != 0) {
      word = DepositBits(ReadBitsAt(in, num_bytes, at, n), mask[w]);
      at += n;
      set += static_cast<uint64_t>(std::popcount(word));
    }
    const size_t bytes = std::min<size_t>(8, row_bytes - 8 * w);
    if (bytes == 8) {
      std::memcpy(row_bits + 8 * w, &word, 8);
    } else {
      for (size_t i = 0; i < bytes; ++i)
        row_bits[8 * w + i] = static_cast<uint8_t>(word >> (8 * i));
    }
  }
  *pos = at;
  return set;
}

#if HWY_TARGET <= HWY_AVX3 && HWY_ARCH_X86
// The dense row of `cols` columns (a multiple of 16) from its bitmap bytes and its values, by
// AVX-512's expand (vexpandps; Highway 1.0 has no Expand): one store per 16 columns, no
// zeroing pass and no column list. Returns the values used.
size_t ExpandRow(const uint8_t* HWY_RESTRICT bits, size_t cols, const float* HWY_RESTRICT values,
                 float* HWY_RESTRICT row) {
  static_assert(hn::MaxLanes(DF()) == 16);
  const DF df;
  size_t used = 0;
  for (size_t c = 0; c < cols; c += 16) {
    uint16_t mask;
    std::memcpy(&mask, bits + c / 8, sizeof mask);
    const hn::Vec<DF> v{_mm512_maskz_expand_ps(mask, hn::LoadU(df, values + used).raw)};
    hn::StoreU(v, df, row + c);
    used += static_cast<size_t>(std::popcount(mask));
  }
  return used;
}
#endif

void ScatterBits(const uint8_t* HWY_RESTRICT bytes, size_t num_bytes, uint64_t rows, uint64_t cols,
                 const float* HWY_RESTRICT values, float* HWY_RESTRICT out, size_t stride) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
#if HWY_TARGET <= HWY_AVX3 && HWY_ARCH_X86
  if (cols % 16 == 0) {  // every row starts on a whole byte (and 16-bit mask)
    for (uint64_t r = 0; r < rows; ++r)
      values += ExpandRow(bytes + r * cols / 8, cols, values, out + r * stride);
    return;
  }
#endif
  // One row's columns at a time (BitmapToColumns on the row, into a buffer that stays in L1),
  // then one store per kept value: no branch per bit, no index array in memory.
  thread_local std::vector<uint32_t> ids;
  if (ids.size() < cols + 2 * HWY_MAX_BYTES) ids.resize(cols + 2 * HWY_MAX_BYTES);
  uint32_t offsets[2];
  for (uint64_t r = 0; r < rows; ++r) {
    float* row = out + r * stride;
    size_t c = 0;
    for (; c + lanes <= cols; c += lanes) hn::StoreU(hn::Zero(df), df, row + c);
    for (; c < cols; ++c) row[c] = 0.0f;
    // Bits [r * cols, (r + 1) * cols): BitmapToColumns of a one-row bitmap starting there.
    uint64_t count = 0;
    if ((r * cols) % 8 == 0) {
      const size_t first_byte = r * cols / 8;
      BitmapToColumns(bytes + first_byte, num_bytes - first_byte, 1, cols, offsets, ids.data(),
                      cols, &count);
    } else {
      // Unaligned row start: the words straight from the whole bitmap.
      const uint64_t begin = r * cols;
      const uint64_t end = begin + cols;
      for (uint64_t w = begin / 64; w * 64 < end; ++w) {
        uint64_t x = LoadWord(bytes, num_bytes, w);
        if (w * 64 < begin) x &= ~uint64_t{0} << (begin % 64);
        if (end < w * 64 + 64) x &= (uint64_t{1} << (end % 64)) - 1;
        for (; x != 0; x &= x - 1) {
          ids[count++] = static_cast<uint32_t>(w * 64 + std::countr_zero(x) - begin);
        }
      }
    }
    for (uint64_t j = 0; j < count; ++j) row[ids[j]] = values[j];
    values += count;
  }
}

void ScatterInt8Row(const uint8_t* HWY_RESTRICT bits, size_t cols, const int8_t* HWY_RESTRICT q,
                    size_t count, float scale, float* HWY_RESTRICT out) {
#if HWY_TARGET <= HWY_AVX3 && HWY_ARCH_X86
  static_assert(hn::MaxLanes(DF()) == 16);
  if (cols % 16 == 0) {
    const DF df;
    const DI di;
    const hn::Rebind<int8_t, DI> d8;
    const auto vs = hn::Set(df, scale);
    size_t used = 0;
    for (size_t c = 0; c < cols; c += 16) {
      uint16_t mask;
      std::memcpy(&mask, bits + c / 8, sizeof mask);
      const auto n = static_cast<size_t>(std::popcount(mask));
      // A masked load reads none of the bytes past the row's values (the packet may end there).
      const auto v = hn::Mul(
          hn::ConvertTo(df, hn::PromoteTo(di, hn::MaskedLoad(hn::FirstN(d8, n), d8, q + used))),
          vs);
      hn::StoreU(hn::Vec<DF>{_mm512_maskz_expand_ps(mask, v.raw)}, df, out + c);
      used += n;
    }
    return;
  }
#endif
  thread_local std::vector<float> values;
  if (values.size() < count + kSlack) values.resize(count + kSlack);
  Int8ToFloat(q, count, scale, values.data());
  ScatterBits(bits, (cols + 7) / 8, 1, cols, values.data(), out, cols);
}

// 64 bits of the bitmap from bit `bit` on (zero past num_bytes).
uint64_t BitsFrom(const uint8_t* bytes, size_t num_bytes, uint64_t bit) {
  const uint64_t first = bit / 8;
  uint64_t x = 0;
  if (first + 8 <= num_bytes) {
    std::memcpy(&x, bytes + first, 8);
  } else {
    for (uint64_t i = first; i < num_bytes; ++i) x |= uint64_t{bytes[i]} << (8 * (i - first));
  }
  const unsigned shift = bit % 8;
  if (shift == 0) return x;
  const uint64_t next = first + 8 < num_bytes ? bytes[first + 8] : 0;
  return (x >> shift) | (next << (64 - shift));
}

uint64_t GatherBits(const uint8_t* HWY_RESTRICT bytes, size_t num_bytes, uint64_t rows,
                    uint64_t cols, const float* HWY_RESTRICT dense, size_t stride,
                    float* HWY_RESTRICT out) {
  const DF df;
  const size_t lanes = std::min<size_t>(hn::Lanes(df), 64);  // a power of two; 16 on AVX3
  const uint64_t lane_bits = lanes == 64 ? ~uint64_t{0} : (uint64_t{1} << lanes) - 1;
  uint64_t m = 0;
  for (uint64_t r = 0; r < rows; ++r) {
    const float* row = dense + r * stride;
    const uint64_t begin = r * cols;
    uint64_t c = 0;
    // 64 columns a word, one compress a vector.
    for (; c + 64 <= cols; c += 64) {
      const uint64_t word = BitsFrom(bytes, num_bytes, begin + c);
      for (size_t j = 0; j < 64; j += lanes) {
        const uint64_t sub = word >> j;
        uint8_t mask_bytes[8];
        std::memcpy(mask_bytes, &sub, sizeof sub);
        const auto take = hn::LoadMaskBits(df, mask_bytes);
        hn::StoreU(CompressLanes(df, hn::LoadU(df, row + c + j), take), df, out + m);
        m += static_cast<uint64_t>(std::popcount(sub & lane_bits));
      }
    }
    if (c < cols) {  // the last < 64 columns, one set bit at a time
      uint64_t word = BitsFrom(bytes, num_bytes, begin + c) & ((uint64_t{1} << (cols - c)) - 1);
      for (; word != 0; word &= word - 1) out[m++] = row[c + std::countr_zero(word)];
    }
  }
  return m;
}

}  // namespace HWY_NAMESPACE
}  // namespace sparselink::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace sparselink::simd {

HWY_EXPORT(MaxByte);
HWY_EXPORT(CountByte);
HWY_EXPORT(GapVarintExtraBytes);
HWY_EXPORT(AscendingBelow);
HWY_EXPORT(CountSetBits);
HWY_EXPORT(RowBitCounts);
HWY_EXPORT(ScatterBits);
HWY_EXPORT(ScatterInt8Row);
HWY_EXPORT(GatherBits);
HWY_EXPORT(PackMaskedRow);
HWY_EXPORT(UnpackMaskedRow);
HWY_EXPORT(BitmapToColumns);

uint8_t MaxByte(const uint8_t* bytes, size_t n) { return HWY_DYNAMIC_DISPATCH(MaxByte)(bytes, n); }
uint64_t CountByte(const uint8_t* bytes, size_t n, uint8_t value) {
  return HWY_DYNAMIC_DISPATCH(CountByte)(bytes, n, value);
}
uint64_t GapVarintExtraBytes(const uint32_t* ids, size_t n) {
  return n < 2 ? 0 : HWY_DYNAMIC_DISPATCH(GapVarintExtraBytes)(ids, n);
}
bool AscendingBelow(const uint32_t* ids, size_t n, uint32_t limit) {
  return HWY_DYNAMIC_DISPATCH(AscendingBelow)(ids, n, limit);
}
uint64_t CountSetBits(const uint8_t* bytes, size_t n) {
  return HWY_DYNAMIC_DISPATCH(CountSetBits)(bytes, n);
}
void RowBitCounts(const uint8_t* bytes, size_t num_bytes, uint64_t rows, uint64_t cols,
                  uint32_t* counts) {
  HWY_DYNAMIC_DISPATCH(RowBitCounts)(bytes, num_bytes, rows, cols, counts);
}
void ScatterBits(const uint8_t* bytes, size_t num_bytes, uint64_t rows, uint64_t cols,
                 const float* values, float* out, size_t stride) {
  HWY_DYNAMIC_DISPATCH(ScatterBits)(bytes, num_bytes, rows, cols, values, out, stride);
}
void ScatterInt8Row(const uint8_t* bits, size_t cols, const int8_t* q, size_t count, float scale,
                    float* out) {
  HWY_DYNAMIC_DISPATCH(ScatterInt8Row)(bits, cols, q, count, scale, out);
}
uint64_t GatherBits(const uint8_t* bytes, size_t num_bytes, uint64_t rows, uint64_t cols,
                    const float* dense, size_t stride, float* out) {
  return HWY_DYNAMIC_DISPATCH(GatherBits)(bytes, num_bytes, rows, cols, dense, stride, out);
}
void PackMaskedRow(const uint8_t* row_bits, size_t cols, const uint64_t* mask, uint8_t* out,
                   uint64_t* pos) {
  HWY_DYNAMIC_DISPATCH(PackMaskedRow)(row_bits, cols, mask, out, pos);
}
uint64_t UnpackMaskedRow(const uint8_t* in, size_t num_bytes, uint64_t* pos, size_t cols,
                         const uint64_t* mask, uint8_t* row_bits) {
  return HWY_DYNAMIC_DISPATCH(UnpackMaskedRow)(in, num_bytes, pos, cols, mask, row_bits);
}
bool BitmapToColumns(const uint8_t* bytes, size_t num_bytes, uint64_t rows, uint64_t cols,
                     uint32_t* offsets, uint32_t* out, uint64_t capacity, uint64_t* count) {
  return HWY_DYNAMIC_DISPATCH(BitmapToColumns)(bytes, num_bytes, rows, cols, offsets, out, capacity,
                                               count);
}

}  // namespace sparselink::simd
#endif  // HWY_ONCE
