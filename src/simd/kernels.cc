// Highway implementations of src/simd/kernels.hpp. This file is compiled once per target by
// hwy/foreach_target.h (it includes itself); HWY_EXPORT / HWY_DYNAMIC_DISPATCH pick the best
// at run time.
//
// Every loop runs whole vectors first and finishes the last n % lanes entries with the same
// operations on a partial tail in scalar code (QuantizeInt8: through the vector lanes on a
// zero-padded copy), so a result never depends on the target.
// The fp16 and bf16 conversions are written with integer operations rather than Highway's
// DemoteTo: on targets without F16C Highway 1.0 truncates, and the wire format rounds to
// nearest even (docs/wire-format.md).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "simd/kernels.cc"
#include "simd/kernels.hpp"

#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <string_view>
#include <vector>

HWY_BEFORE_NAMESPACE();
namespace sparselink::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using DU = hn::RebindToUnsigned<DF>;
using DI = hn::RebindToSigned<DF>;

constexpr uint32_t kAbsMask = 0x7FFFFFFFu;
constexpr uint32_t kInfBits = 0x7F800000u;

// --- scalar tails (the same arithmetic as the vector bodies) ---

// 16-bit streams sit at any byte offset inside a packet: the tails access them bytewise.
uint16_t LoadU16(const uint16_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
void StoreU16(uint16_t v, uint16_t* p) { std::memcpy(p, &v, sizeof v); }

uint32_t ScalarKey(float a, const float* w, size_t i) {
  const uint32_t abs = std::bit_cast<uint32_t>(a) & kAbsMask;
  if (abs >= kInfBits) return 0;
  if (w == nullptr) return abs;
  return std::bit_cast<uint32_t>(std::bit_cast<float>(abs) * w[i]) & kAbsMask;
}

uint16_t ScalarHalf(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & kAbsMask;
  uint32_t h;
  if (abs > kInfBits) {
    h = 0x7E00u;
  } else if (abs == kInfBits) {
    h = 0x7C00u;
  } else if (abs >= 0x477FE000u) {
    h = 0x7BFFu;
  } else if (abs >= 0x38800000u) {
    h = (abs - 0x38000000u + 0xFFFu + ((abs >> 13) & 1u)) >> 13;
  } else {
    h = static_cast<uint32_t>(std::nearbyint(std::bit_cast<float>(abs) * 0x1p24f));
  }
  return static_cast<uint16_t>(sign | h);
}

uint16_t ScalarBf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & kAbsMask) > kInfBits) return static_cast<uint16_t>((x >> 16) | 0x0040u);
  const uint32_t rounded = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
  if ((x & kAbsMask) < kInfBits && (rounded & 0x7FFFu) == 0x7F80u) {
    return static_cast<uint16_t>((rounded & 0x8000u) | 0x7F7Fu);
  }
  return static_cast<uint16_t>(rounded);
}

int8_t ScalarQuantize(float v, double scale) {
  if (scale == 0.0 || !std::isfinite(v)) return 0;
  const double x = static_cast<double>(v) / scale;
  double r = std::trunc(x);
  if (std::fabs(x - r) >= 0.5) r += std::copysign(1.0, x);
  return static_cast<int8_t>(std::clamp(r, -127.0, 127.0));
}

// Half to float; false for Inf/NaN.
bool ScalarHalfToFloat(uint16_t h, float* out) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  if (exp == 31) return false;
  if (exp == 0) {
    const float v = static_cast<float>(h & 0x3FFu) * 0x1p-24f;
    *out = std::bit_cast<float>(std::bit_cast<uint32_t>(v) | sign);
  } else {
    *out = std::bit_cast<float>(sign | (((h & 0x7FFFu) << 13) + 0x38000000u));
  }
  return true;
}

// --- compress ---

// Compress of 32-bit lanes (the lanes of `mask` moved to the front, in order). AVX-512 has an
// instruction for it, which Highway uses. On the other x86 targets Highway 1.0 builds the
// index table inside the function, and GCC copies that table onto the stack at every call
// (`rep movsq`, 1 KiB for AVX2), which made routing 8x and decoding 7x slower on machines
// without AVX-512 (docs/RESULTS.md). There the indices come from this static table instead:
// entry m holds, for an 8-bit mask m, the set lanes' positions ascending, then the others
// (a 4-lane target reads the first four; for m < 16 those are all below 4).
struct CompressTable {
  std::array<uint8_t, 256 * 8> index{};
  constexpr CompressTable() {
    for (size_t m = 0; m < 256; ++m) {
      size_t pos = 0;
      for (size_t want : {1u, 0u}) {
        for (size_t lane = 0; lane < 8; ++lane) {
          if (((m >> lane) & 1u) == want) index[m * 8 + pos++] = static_cast<uint8_t>(lane);
        }
      }
    }
  }
};
constexpr CompressTable kCompressTable;

template <class D, class V, class M>
V CompressLanes(D d, V v, M mask) {
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_SSE4 || HWY_TARGET == HWY_SSSE3
  static_assert(hn::MaxLanes(D()) <= 8 && sizeof(hn::TFromD<D>) == 4);
  const hn::RebindToUnsigned<D> du;
  const hn::Rebind<uint8_t, decltype(du)> d8;
  uint8_t bits[8] = {};
  hn::StoreMaskBits(d, mask, bits);
  const auto index = hn::PromoteTo(du, hn::LoadU(d8, kCompressTable.index.data() + 8 * bits[0]));
  return hn::TableLookupLanes(v, hn::IndicesFromVec(d, index));
#else
  (void)d;
  return hn::Compress(v, mask);
#endif
}

// The bitmaps of the emit passes are bytes (the wire's: bit i % 8 of byte i / 8), written a
// 64-bit little-endian word at a time: whole words, then the last one's ceil((n % 64) / 8) bytes.
static_assert(std::endian::native == std::endian::little);
inline void StoreWord(uint8_t* bits, size_t word_index, uint64_t word) {
  std::memcpy(bits + 8 * word_index, &word, sizeof word);
}
inline void StoreLastWord(uint8_t* bits, size_t n, uint64_t word) {
  if (bits != nullptr && n % 64 != 0) std::memcpy(bits + 8 * (n / 64), &word, (n % 64 + 7) / 8);
}

// One vector of an emit pass at column i: the taken lanes' columns to ids and their `value`
// lanes to values at *m (both slack), and their mask bits into *word, which goes to the bitmap
// (bits null: none) once it holds 64 columns. (Storing each vector's mask bits straight to the
// bitmap's bytes made the streaming pass a third slower: 26 against 36 GB/s.)
template <class D, class M, class V, class VF>
HWY_INLINE void EmitLanes(D du, M take, V col, VF value, size_t i, uint32_t* HWY_RESTRICT ids,
                          float* HWY_RESTRICT values, size_t* m, uint8_t* HWY_RESTRICT bits,
                          uint64_t* word) {
  const hn::RebindToFloat<D> df;
  const size_t lanes = hn::Lanes(du);
  hn::StoreU(CompressLanes(du, col, take), du, ids + *m);
  hn::StoreU(CompressLanes(df, value, hn::RebindMask(df, take)), df, values + *m);
  *m += hn::CountTrue(du, take);
  if (bits != nullptr) {
    uint8_t mask_bytes[8] = {};
    hn::StoreMaskBits(du, take, mask_bytes);
    uint64_t mask;
    std::memcpy(&mask, mask_bytes, sizeof mask);
    *word |= mask << (i % 64);
    if ((i + lanes) % 64 == 0) {
      StoreWord(bits, i / 64, *word);
      *word = 0;
    }
  }
}

// The scalar tail's step of the same: column i, value a (0 where not finite).
inline void EmitOne(bool take, size_t i, float a, uint32_t* ids, float* values, size_t* m,
                    uint8_t* bits, uint64_t* word) {
  ids[*m] = static_cast<uint32_t>(i);
  values[*m] = std::isfinite(a) ? a : 0.0f;
  *m += take ? 1 : 0;
  *word |= static_cast<uint64_t>(take) << (i % 64);
  if (bits != nullptr && (i + 1) % 64 == 0) {
    StoreWord(bits, i / 64, *word);
    *word = 0;
  }
}

// --- vector kernels ---

bool MagnitudeKeys(const float* HWY_RESTRICT a, const float* HWY_RESTRICT w, size_t n,
                   uint32_t* HWY_RESTRICT keys) {
  const DF df;
  const DU du;
  const size_t lanes = hn::Lanes(df);
  const auto abs_mask = hn::Set(du, kAbsMask);
  const auto inf = hn::Set(du, kInfBits);
  auto worst = hn::Zero(du);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto abs = hn::And(hn::BitCast(du, hn::LoadU(df, a + i)), abs_mask);
    worst = hn::Max(worst, abs);
    const auto finite = hn::Lt(abs, inf);
    auto key = abs;
    if (w != nullptr) {
      key = hn::And(hn::BitCast(du, hn::Mul(hn::BitCast(df, abs), hn::LoadU(df, w + i))), abs_mask);
    }
    hn::StoreU(hn::IfThenElseZero(finite, key), du, keys + i);
  }
  bool all_finite = hn::GetLane(hn::MaxOfLanes(du, worst)) < kInfBits;
  for (; i < n; ++i) {
    keys[i] = ScalarKey(a[i], w, i);
    all_finite = all_finite && std::isfinite(a[i]);
  }
  return all_finite;
}

bool MaxBelow(const uint32_t* HWY_RESTRICT keys, size_t n, uint32_t limit, uint32_t* out) {
  const DU du;
  const size_t lanes = hn::Lanes(du);
  const auto vlimit = hn::Set(du, limit);
  const auto one = hn::Set(du, 1u);
  // The largest key + 1 among those below limit (no overflow: key + 1 <= limit), 0 for none.
  auto best = hn::Zero(du);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto k = hn::LoadU(du, keys + i);
    best = hn::Max(best, hn::IfThenElseZero(hn::Lt(k, vlimit), hn::Add(k, one)));
  }
  uint32_t result = hn::GetLane(hn::MaxOfLanes(du, best));
  for (; i < n; ++i) result = keys[i] < limit ? std::max(result, keys[i] + 1) : result;
  if (result == 0) return false;
  *out = result - 1;
  return true;
}

bool MinAbove(const uint32_t* HWY_RESTRICT keys, size_t n, uint32_t limit, uint32_t* out) {
  const DU du;
  const size_t lanes = hn::Lanes(du);
  const auto vlimit = hn::Set(du, limit);
  const auto none = hn::Set(du, UINT32_MAX);
  auto best = none;
  auto any = hn::Zero(du);  // lanes that saw a key above limit
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto k = hn::LoadU(du, keys + i);
    const auto above = hn::Gt(k, vlimit);
    best = hn::Min(best, hn::IfThenElse(above, k, none));
    any = hn::Or(any, hn::VecFromMask(du, above));
  }
  uint32_t result = hn::GetLane(hn::MinOfLanes(du, best));
  bool found = !hn::AllTrue(du, hn::Eq(any, hn::Zero(du)));
  for (; i < n; ++i) {
    if (keys[i] > limit) {
      result = std::min(result, keys[i]);
      found = true;
    }
  }
  if (found) *out = result;
  return found;
}

size_t CountAbove(const uint32_t* HWY_RESTRICT keys, size_t n, uint32_t t) {
  const DU du;
  const size_t lanes = hn::Lanes(du);
  const auto vt = hn::Set(du, t);
  // Counts per lane (each lane sees at most n / lanes hits, far below 2^32).
  auto sum = hn::Zero(du);
  const auto one = hn::Set(du, 1u);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    sum = hn::Add(sum, hn::IfThenElseZero(hn::Gt(hn::LoadU(du, keys + i), vt), one));
  }
  size_t count = hn::GetLane(hn::SumOfLanes(du, sum));
  for (; i < n; ++i) count += keys[i] > t ? 1 : 0;
  return count;
}

size_t FilterRange(const uint32_t* keys, size_t n, uint32_t lo, uint32_t hi, uint32_t* out,
                   size_t* above) {
  const DU du;
  const size_t lanes = hn::Lanes(du);
  const auto vlo = hn::Set(du, lo);
  const auto vhi = hn::Set(du, hi);
  const auto one = hn::Set(du, 1u);
  auto sum = hn::Zero(du);
  size_t m = 0;
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto k = hn::LoadU(du, keys + i);
    const auto over = hn::Gt(k, vhi);
    sum = hn::Add(sum, hn::IfThenElseZero(over, one));
    const auto in = hn::AndNot(hn::Or(over, hn::Lt(k, vlo)), hn::FirstN(du, lanes));
    hn::StoreU(CompressLanes(du, k, in), du, out + m);
    m += hn::CountTrue(du, in);
  }
  size_t count = hn::GetLane(hn::SumOfLanes(du, sum));
  for (; i < n; ++i) {
    const uint32_t k = keys[i];
    count += k > hi ? 1 : 0;
    out[m] = k;
    m += (k >= lo && k <= hi) ? 1 : 0;
  }
  *above = count;
  return m;
}

void SampleRanks(const uint32_t* HWY_RESTRICT sample, size_t s, uint32_t* HWY_RESTRICT greater) {
  const DU du;
  const size_t lanes = hn::Lanes(du);
  const auto one = hn::Set(du, 1u);
  size_t i = 0;
  // A block of lanes at a time: broadcast each sample key and count it where it is greater.
  for (; i + lanes <= s; i += lanes) {
    const auto mine = hn::LoadU(du, sample + i);
    auto count = hn::Zero(du);
    for (size_t j = 0; j < s; ++j) {
      count = hn::Add(count, hn::IfThenElseZero(hn::Gt(hn::Set(du, sample[j]), mine), one));
    }
    hn::StoreU(count, du, greater + i);
  }
  for (; i < s; ++i) greater[i] = static_cast<uint32_t>(CountAbove(sample, s, sample[i]));
}

uint32_t OrderStatistic(const uint32_t* HWY_RESTRICT sample, const uint32_t* HWY_RESTRICT greater,
                        size_t s, size_t rank) {
  const DU du;
  const size_t lanes = hn::Lanes(du);
  const auto vrank = hn::Set(du, static_cast<uint32_t>(rank));
  const auto none = hn::Set(du, UINT32_MAX);
  auto best = none;
  size_t i = 0;
  for (; i + lanes <= s; i += lanes) {
    const auto fewer = hn::Lt(hn::LoadU(du, greater + i), vrank);
    best = hn::Min(best, hn::IfThenElse(fewer, hn::LoadU(du, sample + i), none));
  }
  uint32_t result = hn::GetLane(hn::MinOfLanes(du, best));
  for (; i < s; ++i) result = greater[i] < rank ? std::min(result, sample[i]) : result;
  return result;
}

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

void AddAbs(const float* HWY_RESTRICT x, size_t n, float* HWY_RESTRICT acc) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    hn::StoreU(hn::Add(hn::LoadU(df, acc + i), hn::Abs(hn::LoadU(df, x + i))), df, acc + i);
  }
  for (; i < n; ++i) acc[i] += std::fabs(x[i]);
}

void AddKeptCorrection(const uint32_t* HWY_RESTRICT ids, const float* HWY_RESTRICT a,
                       const float* HWY_RESTRICT g, const float* HWY_RESTRICT s, size_t n,
                       float scale, float* HWY_RESTRICT acc) {
  const DF df;
  const DU du;
  const DI di;
  const size_t lanes = hn::Lanes(df);
  const auto vscale = hn::Set(df, scale);
  size_t i = 0;
  // The lanes of one vector hold distinct ids (the caller's promise), so the scatter of their
  // sums loses none.
  for (; i + lanes <= n; i += lanes) {
    const auto index = hn::BitCast(di, hn::LoadU(du, ids + i));
    auto term = hn::Sub(hn::Abs(hn::LoadU(df, g + i)), hn::GatherIndex(df, s, index));
    if (a != nullptr) term = hn::Mul(hn::Abs(hn::LoadU(df, a + i)), term);
    term = hn::Mul(term, vscale);
    hn::ScatterIndex(hn::Add(hn::GatherIndex(df, acc, index), term), df, acc, index);
  }
  for (; i < n; ++i) {
    const float term = std::fabs(g[i]) - s[ids[i]];
    acc[ids[i]] += (a != nullptr ? std::fabs(a[i]) * term : term) * scale;
  }
}

void AddMagnitudes(const float* HWY_RESTRICT a, const float* HWY_RESTRICT b, size_t n,
                   float* HWY_RESTRICT acc) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  const auto magnitude = [&](auto v) { return hn::IfThenElseZero(hn::IsFinite(v), hn::Abs(v)); };
  const auto one = [](float x) { return std::isfinite(x) ? std::fabs(x) : 0.0f; };
  size_t i = 0;
  if (b == nullptr) {
    for (; i + lanes <= n; i += lanes) {
      hn::StoreU(hn::Add(hn::LoadU(df, acc + i), magnitude(hn::LoadU(df, a + i))), df, acc + i);
    }
    for (; i < n; ++i) acc[i] += one(a[i]);
    return;
  }
  for (; i + lanes <= n; i += lanes) {
    const auto product = hn::Mul(magnitude(hn::LoadU(df, a + i)), magnitude(hn::LoadU(df, b + i)));
    hn::StoreU(hn::Add(hn::LoadU(df, acc + i), product), df, acc + i);
  }
  for (; i < n; ++i) acc[i] += one(a[i]) * one(b[i]);
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

bool AllFinite(const float* HWY_RESTRICT a, size_t n) {
  const DF df;
  const DU du;
  const size_t lanes = hn::Lanes(df);
  auto worst = hn::Zero(du);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    worst = hn::Max(worst, hn::And(hn::BitCast(du, hn::LoadU(df, a + i)), hn::Set(du, kAbsMask)));
  }
  bool ok = hn::GetLane(hn::MaxOfLanes(du, worst)) < kInfBits;
  for (; i < n; ++i) ok = ok && std::isfinite(a[i]);
  return ok;
}

size_t TieEnd(const uint32_t* keys, size_t n, uint32_t t, size_t q) {
  if (q == 0) return 0;
  const DU du;
  const size_t lanes = hn::Lanes(du);
  const auto vt = hn::Set(du, t);
  size_t seen = 0;
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const size_t c = hn::CountTrue(du, hn::Eq(hn::LoadU(du, keys + i), vt));
    if (seen + c >= q) break;
    seen += c;
  }
  for (; i < n; ++i) {
    seen += keys[i] == t ? 1 : 0;
    if (seen == q) return i + 1;
  }
  return n;
}

size_t EmitKept(const uint32_t* HWY_RESTRICT keys, const float* HWY_RESTRICT a, size_t n,
                uint32_t t, size_t tie_end, uint32_t* HWY_RESTRICT ids, float* HWY_RESTRICT values,
                uint8_t* HWY_RESTRICT bits) {
  const DF df;
  const DU du;
  const size_t lanes = hn::Lanes(du);  // a power of two, at most 64 here
  const auto vt = hn::Set(du, t);
  const auto vtie_end = hn::Set(du, static_cast<uint32_t>(std::min<size_t>(tie_end, UINT32_MAX)));
  const auto step = hn::Set(du, static_cast<uint32_t>(lanes));
  const auto abs_mask = hn::Set(du, kAbsMask);
  const auto inf = hn::Set(du, kInfBits);
  auto col = hn::Iota(du, 0u);
  uint64_t word = 0;  // the take mask of columns [64 * (i / 64), i)
  size_t m = 0;
  size_t i = 0;
  for (; i + lanes <= n; i += lanes, col = hn::Add(col, step)) {
    const auto k = hn::LoadU(du, keys + i);
    const auto take = hn::Or(hn::Gt(k, vt), hn::And(hn::Eq(k, vt), hn::Lt(col, vtie_end)));
    const auto v = hn::LoadU(df, a + i);
    const auto finite = hn::Lt(hn::And(hn::BitCast(du, v), abs_mask), inf);
    const auto safe = hn::IfThenElseZero(hn::RebindMask(df, finite), v);
    EmitLanes(du, take, col, safe, i, ids, values, &m, bits, &word);
  }
  for (; i < n; ++i) {
    const bool take = keys[i] > t || (keys[i] == t && i < tie_end);
    EmitOne(take, i, a[i], ids, values, &m, bits, &word);
  }
  StoreLastWord(bits, n, word);
  return m;
}

// How far ahead of its reads ThresholdEmit prefetches (sparselink bench route, 256 x 4096, three
// interleaved rounds: 8 KiB 10.7-10.8 GB/s, 16 KiB 12.2-12.5, 32 KiB 11.0-11.2).
constexpr uintptr_t kPrefetchBytes = 16384;
bool ThresholdEmit(const float* HWY_RESTRICT a, const float* HWY_RESTRICT w, size_t n, uint32_t t,
                   uint32_t* HWY_RESTRICT ids, float* HWY_RESTRICT values,
                   uint8_t* HWY_RESTRICT bits, size_t* count) {
  const DF df;
  const DU du;
  const size_t lanes = hn::Lanes(du);  // a power of two, at most 64 here
  const auto vt = hn::Set(du, t);
  const auto abs_mask = hn::Set(du, kAbsMask);
  const auto step = hn::Set(du, static_cast<uint32_t>(lanes));
  auto col = hn::Iota(du, 0u);
  auto worst = hn::Zero(du);
  uint64_t word = 0;  // the take mask of columns [64 * (i / 64), i)
  size_t m = 0;
  size_t i = 0;
  // The loop takes the values as they are: a row with a non-finite value is the caller's to
  // redo (the return value), so nothing here masks them.
  for (; i + lanes <= n; i += lanes, col = hn::Add(col, step)) {
    // The stream ahead, into the next row (rows are contiguous): the hardware prefetcher idles
    // while the router works on the candidates between two rows. Integer arithmetic: the
    // address may lie past the array, and a prefetch never faults.
    __builtin_prefetch(
        reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(a + i) + kPrefetchBytes));
    const auto v = hn::LoadU(df, a + i);
    const auto abs = hn::And(hn::BitCast(du, v), abs_mask);
    worst = hn::Max(worst, abs);
    auto key = abs;
    if (w != nullptr) {
      key = hn::And(hn::BitCast(du, hn::Mul(hn::BitCast(df, abs), hn::LoadU(df, w + i))), abs_mask);
    }
    EmitLanes(du, hn::Not(hn::Lt(key, vt)), col, v, i, ids, values, &m, bits, &word);
  }
  bool all_finite = hn::GetLane(hn::MaxOfLanes(du, worst)) < kInfBits;
  for (; i < n; ++i) {
    const bool take = ScalarKey(a[i], w, i) >= t;
    all_finite = all_finite && std::isfinite(a[i]);
    EmitOne(take, i, a[i], ids, values, &m, bits, &word);
  }
  StoreLastWord(bits, n, word);
  *count = m;
  return all_finite;
}

size_t CandidateKeys(const uint32_t* HWY_RESTRICT ids, const float* HWY_RESTRICT values, size_t m,
                     const float* HWY_RESTRICT w, uint32_t* HWY_RESTRICT keys, uint32_t at) {
  const DF df;
  const DU du;
  const DI di;
  const size_t lanes = hn::Lanes(du);
  const auto abs_mask = hn::Set(du, kAbsMask);
  const auto vat = hn::Set(du, at);
  const auto one = hn::Set(du, 1u);
  auto sum = hn::Zero(du);  // per lane (each sees at most m / lanes, far below 2^32)
  size_t i = 0;
  for (; i + lanes <= m; i += lanes) {
    auto key = hn::And(hn::BitCast(du, hn::LoadU(df, values + i)), abs_mask);
    if (w != nullptr) {
      const auto weight = hn::GatherIndex(df, w, hn::BitCast(di, hn::LoadU(du, ids + i)));
      key = hn::And(hn::BitCast(du, hn::Mul(hn::BitCast(df, key), weight)), abs_mask);
    }
    hn::StoreU(key, du, keys + i);
    sum = hn::Add(sum, hn::IfThenZeroElse(hn::Lt(key, vat), one));
  }
  size_t count = hn::GetLane(hn::SumOfLanes(du, sum));
  for (; i < m; ++i) {
    keys[i] = ScalarKey(values[i], w == nullptr ? nullptr : w + ids[i], 0);
    count += keys[i] >= at ? 1 : 0;
  }
  return count;
}

size_t KeepCut(uint32_t* keys, const uint32_t* HWY_RESTRICT ids, const float* HWY_RESTRICT values,
               size_t m, uint32_t t, size_t tie_end, bool compact_keys,
               uint32_t* HWY_RESTRICT out_ids, float* HWY_RESTRICT out_values,
               uint32_t* HWY_RESTRICT dropped, size_t* num_dropped) {
  const DF df;
  const DU du;
  const size_t lanes = hn::Lanes(du);
  const auto vt = hn::Set(du, t);
  const auto vtie_end = hn::Set(du, static_cast<uint32_t>(std::min<size_t>(tie_end, UINT32_MAX)));
  const auto step = hn::Set(du, static_cast<uint32_t>(lanes));
  auto pos = hn::Iota(du, 0u);
  size_t kept = 0;
  size_t gone = 0;
  size_t i = 0;
  for (; i + lanes <= m; i += lanes, pos = hn::Add(pos, step)) {
    const auto key = hn::LoadU(du, keys + i);
    const auto id = hn::LoadU(du, ids + i);
    const auto take = hn::Or(hn::Gt(key, vt), hn::And(hn::Eq(key, vt), hn::Lt(pos, vtie_end)));
    const auto drop = hn::Not(take);
    hn::StoreU(CompressLanes(du, id, drop), du, dropped + gone);
    gone += hn::CountTrue(du, drop);
    if (compact_keys) hn::StoreU(CompressLanes(du, key, take), du, keys + kept);
    hn::StoreU(CompressLanes(du, id, take), du, out_ids + kept);
    hn::StoreU(CompressLanes(df, hn::LoadU(df, values + i), hn::RebindMask(df, take)), df,
               out_values + kept);
    kept += hn::CountTrue(du, take);
  }
  for (; i < m; ++i) {
    const uint32_t key = keys[i];
    const bool take = key > t || (key == t && i < tie_end);
    dropped[gone] = ids[i];
    gone += take ? 0 : 1;
    keys[kept] = key;
    out_ids[kept] = ids[i];
    out_values[kept] = values[i];
    kept += take ? 1 : 0;
  }
  *num_dropped = gone;
  return kept;
}

void FloatToHalf(const float* HWY_RESTRICT in, size_t n, uint16_t* HWY_RESTRICT out) {
  const DF df;
  const DU du;
  const hn::Rebind<uint16_t, DU> d16;
  const size_t lanes = hn::Lanes(du);
  size_t i = 0;
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2 && !defined(HWY_DISABLE_F16C)
  // F16C (vcvtps2ph, round to nearest even whatever MXCSR says) on inputs the wire format's
  // way: a finite |x| above 65504 saturates to 65504 rather than rounding to infinity, and a
  // NaN becomes the quiet NaN 0x7E00 with its sign (the quiet float NaN converts to it).
  // Less than half the integer emulation's time here (4096 values: 0.21 against 0.46 us).
  const hn::Rebind<hwy::float16_t, DF> dh;
  const auto convert = [&](size_t at) {
    const auto x = hn::BitCast(du, hn::LoadU(df, in + at));
    const auto sign = hn::And(x, hn::Set(du, ~kAbsMask));
    const auto abs = hn::And(x, hn::Set(du, kAbsMask));
    const auto inf = hn::Set(du, kInfBits);
    const auto finite = hn::Or(sign, hn::Min(abs, hn::Set(du, 0x477FE000u)));
    const auto other = hn::IfThenElse(hn::Gt(abs, inf), hn::Or(sign, hn::Set(du, 0x7FC00000u)), x);
    const auto y = hn::BitCast(df, hn::IfThenElse(hn::Lt(abs, inf), finite, other));
    hn::StoreU(hn::BitCast(d16, hn::DemoteTo(dh, y)), d16, out + at);
  };
  for (; i + lanes <= n; i += lanes) convert(i);
  // The tail as the last whole vector again (the same values written twice), not entry by entry.
  if (i < n && n >= lanes) {
    convert(n - lanes);
    i = n;
  }
#else
  const DI di;
  for (; i + lanes <= n; i += lanes) {
    const auto x = hn::BitCast(du, hn::LoadU(df, in + i));
    const auto sign = hn::And(hn::ShiftRight<16>(x), hn::Set(du, 0x8000u));
    const auto abs = hn::And(x, hn::Set(du, kAbsMask));
    const auto normal =
        hn::ShiftRight<13>(hn::Add(hn::Sub(abs, hn::Set(du, 0x38000000u - 0xFFFu)),
                                   hn::And(hn::ShiftRight<13>(abs), hn::Set(du, 1u))));
    const auto sub =
        hn::BitCast(du, hn::NearestInt(hn::Mul(hn::BitCast(df, abs), hn::Set(df, 0x1p24f))));
    auto h = hn::IfThenElse(hn::Lt(abs, hn::Set(du, 0x38800000u)), sub, normal);
    h = hn::IfThenElse(hn::Lt(abs, hn::Set(du, 0x477FE000u)), h, hn::Set(du, 0x7BFFu));
    h = hn::IfThenElse(hn::Eq(abs, hn::Set(du, kInfBits)), hn::Set(du, 0x7C00u), h);
    h = hn::IfThenElse(hn::Gt(abs, hn::Set(du, kInfBits)), hn::Set(du, 0x7E00u), h);
    hn::StoreU(hn::DemoteTo(d16, hn::BitCast(di, hn::Or(sign, h))), d16, out + i);
  }
#endif
  for (; i < n; ++i) StoreU16(ScalarHalf(in[i]), out + i);
}

void FloatToBf16(const float* HWY_RESTRICT in, size_t n, uint16_t* HWY_RESTRICT out) {
  const DF df;
  const DU du;
  const DI di;
  const hn::Rebind<uint16_t, DU> d16;
  const size_t lanes = hn::Lanes(du);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto x = hn::BitCast(du, hn::LoadU(df, in + i));
    const auto abs = hn::And(x, hn::Set(du, kAbsMask));
    auto r = hn::ShiftRight<16>(
        hn::Add(hn::Add(x, hn::Set(du, 0x7FFFu)), hn::And(hn::ShiftRight<16>(x), hn::Set(du, 1u))));
    const auto overflow = hn::And(hn::Lt(abs, hn::Set(du, kInfBits)),
                                  hn::Eq(hn::And(r, hn::Set(du, 0x7FFFu)), hn::Set(du, 0x7F80u)));
    r = hn::IfThenElse(overflow, hn::Or(hn::And(r, hn::Set(du, 0x8000u)), hn::Set(du, 0x7F7Fu)), r);
    r = hn::IfThenElse(hn::Gt(abs, hn::Set(du, kInfBits)),
                       hn::Or(hn::ShiftRight<16>(x), hn::Set(du, 0x0040u)), r);
    hn::StoreU(hn::DemoteTo(d16, hn::BitCast(di, r)), d16, out + i);
  }
  for (; i < n; ++i) StoreU16(ScalarBf16(in[i]), out + i);
}

float MaxAbsFinite(const float* HWY_RESTRICT in, size_t n) {
  const DF df;
  const DU du;
  const size_t lanes = hn::Lanes(df);
  auto best = hn::Zero(du);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto abs = hn::And(hn::BitCast(du, hn::LoadU(df, in + i)), hn::Set(du, kAbsMask));
    // Non-negative floats order like their bits; non-finite ones count as 0.
    best = hn::Max(best, hn::IfThenElseZero(hn::Lt(abs, hn::Set(du, kInfBits)), abs));
  }
  uint32_t m = hn::GetLane(hn::MaxOfLanes(du, best));
  for (; i < n; ++i) {
    const uint32_t abs = std::bit_cast<uint32_t>(in[i]) & kAbsMask;
    if (abs < kInfBits) m = std::max(m, abs);
  }
  return std::bit_cast<float>(m);
}

void QuantizeInt8(const float* HWY_RESTRICT in, size_t n, float scale, int8_t* HWY_RESTRICT out) {
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> df;
  const hn::Rebind<int32_t, decltype(dd)> di32;
  const hn::Rebind<int8_t, decltype(dd)> di8;
  const size_t lanes = hn::Lanes(dd);
  const double s = static_cast<double>(scale);
  size_t i = 0;
  if (scale != 0.0f) {
    const auto vs = hn::Set(dd, s);
    const auto half = hn::Set(dd, 0.5);
    const auto one = hn::Set(dd, 1.0);
    const auto levels = hn::Set(dd, 127.0);
    const auto quantize = [&](const float* from, int8_t* to) {
      const auto v = hn::LoadU(df, from);
      const auto x = hn::Div(hn::PromoteTo(dd, hn::IfThenElseZero(hn::IsFinite(v), v)), vs);
      auto r = hn::Trunc(x);
      r = hn::Add(r,
                  hn::IfThenElseZero(hn::Ge(hn::Abs(hn::Sub(x, r)), half), hn::CopySign(one, x)));
      r = hn::Min(hn::Max(r, hn::Neg(levels)), levels);
      hn::StoreU(hn::DemoteTo(di8, hn::DemoteTo(di32, r)), di8, to);
    };
    // Whole float vectors multiply by the reciprocal instead (a double division per value was
    // the kernel's cost): y = v * (1 / scale) is within 2^-16 of v / scale for |v / scale| <=
    // 127.5, so it rounds to the same integer unless the quotient lies within that of a
    // halfway point; a vector with any lane within 2^-14 of one goes the exact way.
    const float inv = 1.0f / scale;
    if (std::isfinite(inv)) {
      const DF dfl;
      const hn::Rebind<int32_t, DF> di32f;
      const hn::Rebind<int8_t, DF> di8f;
      const size_t float_lanes = hn::Lanes(dfl);
      const auto vinv = hn::Set(dfl, inv);
      const auto fhalf = hn::Set(dfl, 0.5f);
      const auto fone = hn::Set(dfl, 1.0f);
      const auto flevels = hn::Set(dfl, 127.0f);
      const auto margin = hn::Set(dfl, 0x1p-14f);
      for (; i + float_lanes <= n; i += float_lanes) {
        const auto v = hn::LoadU(dfl, in + i);
        const auto y = hn::Mul(hn::IfThenElseZero(hn::IsFinite(v), v), vinv);
        auto r = hn::Trunc(y);
        const auto frac = hn::Abs(hn::Sub(y, r));
        if (!hn::AllFalse(dfl, hn::Lt(hn::Abs(hn::Sub(frac, fhalf)), margin))) {
          for (size_t j = 0; j < float_lanes; j += lanes) quantize(in + i + j, out + i + j);
          continue;
        }
        r = hn::Add(r, hn::IfThenElseZero(hn::Ge(frac, fhalf), hn::CopySign(fone, y)));
        r = hn::Min(hn::Max(r, hn::Neg(flevels)), flevels);
        hn::StoreU(hn::DemoteTo(di8f, hn::ConvertTo(di32f, r)), di8f, out + i);
      }
    }
    for (; i + lanes <= n; i += lanes) quantize(in + i, out + i);
    // The last partial vector through the same lanes (rows are short: a scalar tail was a
    // fifth of the time), padded with zeros that are not stored.
    constexpr size_t kMaxLanes = 64;
    if (i < n && lanes <= kMaxLanes) {
      float padded_in[kMaxLanes] = {};
      int8_t padded_out[kMaxLanes];
      std::copy(in + i, in + n, padded_in);
      quantize(padded_in, padded_out);
      std::copy(padded_out, padded_out + (n - i), out + i);
      i = n;
    }
  }
  for (; i < n; ++i) out[i] = ScalarQuantize(in[i], s);
}

bool HalfToFloat(const uint16_t* HWY_RESTRICT in, size_t n, float* HWY_RESTRICT out) {
  const DF df;
  const DU du;
  const hn::Rebind<uint16_t, DU> d16;
  const size_t lanes = hn::Lanes(du);
  auto bad = hn::Zero(du);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto h = hn::PromoteTo(du, hn::LoadU(d16, in + i));
    const auto sign = hn::ShiftLeft<16>(hn::And(h, hn::Set(du, 0x8000u)));
    const auto abs = hn::And(h, hn::Set(du, 0x7FFFu));
    const auto normal = hn::Add(hn::ShiftLeft<13>(abs), hn::Set(du, 0x38000000u));
    const auto sub =
        hn::BitCast(du, hn::Mul(hn::ConvertTo(df, hn::BitCast(hn::RebindToSigned<DU>(), abs)),
                                hn::Set(df, 0x1p-24f)));
    const auto f = hn::Or(sign, hn::IfThenElse(hn::Lt(abs, hn::Set(du, 0x0400u)), sub, normal));
    bad = hn::Or(bad, hn::VecFromMask(du, hn::Gt(abs, hn::Set(du, 0x7BFFu))));
    hn::StoreU(hn::BitCast(df, f), df, out + i);
  }
  bool ok = hn::AllTrue(du, hn::Eq(bad, hn::Zero(du)));
  for (; i < n; ++i) ok = ScalarHalfToFloat(LoadU16(in + i), out + i) && ok;
  return ok;
}

bool Bf16ToFloat(const uint16_t* HWY_RESTRICT in, size_t n, float* HWY_RESTRICT out) {
  const DF df;
  const DU du;
  const hn::Rebind<uint16_t, DU> d16;
  const size_t lanes = hn::Lanes(du);
  auto bad = hn::Zero(du);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto f = hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, in + i)));
    bad = hn::Or(bad, hn::VecFromMask(du, hn::Gt(hn::And(f, hn::Set(du, kAbsMask)),
                                                 hn::Set(du, kInfBits - 1))));
    hn::StoreU(hn::BitCast(df, f), df, out + i);
  }
  bool ok = hn::AllTrue(du, hn::Eq(bad, hn::Zero(du)));
  for (; i < n; ++i) {
    const uint32_t f = static_cast<uint32_t>(LoadU16(in + i)) << 16;
    ok = ok && (f & kAbsMask) < kInfBits;
    out[i] = std::bit_cast<float>(f);
  }
  return ok;
}

bool Int8ToFloat(const int8_t* HWY_RESTRICT in, size_t n, float scale, float* HWY_RESTRICT out) {
  const DF df;
  const DI di;
  const hn::Rebind<int8_t, DI> d8;
  const size_t lanes = hn::Lanes(di);
  const auto vs = hn::Set(df, scale);
  auto bad = hn::Zero(di);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto q = hn::PromoteTo(di, hn::LoadU(d8, in + i));
    bad = hn::Or(bad, hn::VecFromMask(di, hn::Eq(q, hn::Set(di, -128))));
    hn::StoreU(hn::Mul(hn::ConvertTo(df, q), vs), df, out + i);
  }
  bool ok = hn::AllTrue(di, hn::Eq(bad, hn::Zero(di)));
  for (; i < n; ++i) {
    ok = ok && in[i] != -128;
    out[i] = static_cast<float>(in[i]) * scale;
  }
  return ok;
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

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace sparselink::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace sparselink::simd {

HWY_EXPORT(MagnitudeKeys);
HWY_EXPORT(CountAbove);
HWY_EXPORT(MaxBelow);
HWY_EXPORT(MinAbove);
HWY_EXPORT(FilterRange);
HWY_EXPORT(SampleRanks);
HWY_EXPORT(AllFinite);
HWY_EXPORT(AscendingBelow);
HWY_EXPORT(MaxByte);
HWY_EXPORT(AddAbs);
HWY_EXPORT(AddMagnitudes);
HWY_EXPORT(AddKeptCorrection);
HWY_EXPORT(CountSetBits);
HWY_EXPORT(CountByte);
HWY_EXPORT(GapVarintExtraBytes);
HWY_EXPORT(OrderStatistic);
HWY_EXPORT(TieEnd);
HWY_EXPORT(EmitKept);
HWY_EXPORT(ThresholdEmit);
HWY_EXPORT(CandidateKeys);
HWY_EXPORT(KeepCut);
HWY_EXPORT(FloatToHalf);
HWY_EXPORT(FloatToBf16);
HWY_EXPORT(MaxAbsFinite);
HWY_EXPORT(QuantizeInt8);
HWY_EXPORT(HalfToFloat);
HWY_EXPORT(Bf16ToFloat);
HWY_EXPORT(Int8ToFloat);
HWY_EXPORT(TargetName);
HWY_EXPORT(BitmapToColumns);
HWY_EXPORT(RowBitCounts);
HWY_EXPORT(ScatterBits);
HWY_EXPORT(ScatterInt8Row);
HWY_EXPORT(GatherBits);
HWY_EXPORT(PackMaskedRow);
HWY_EXPORT(UnpackMaskedRow);

bool MagnitudeKeys(const float* a, const float* w, size_t n, uint32_t* keys) {
  return HWY_DYNAMIC_DISPATCH(MagnitudeKeys)(a, w, n, keys);
}
bool MaxBelow(const uint32_t* keys, size_t n, uint32_t limit, uint32_t* out) {
  return HWY_DYNAMIC_DISPATCH(MaxBelow)(keys, n, limit, out);
}
bool MinAbove(const uint32_t* keys, size_t n, uint32_t limit, uint32_t* out) {
  return HWY_DYNAMIC_DISPATCH(MinAbove)(keys, n, limit, out);
}
size_t CountAbove(const uint32_t* keys, size_t n, uint32_t t) {
  return HWY_DYNAMIC_DISPATCH(CountAbove)(keys, n, t);
}
size_t FilterRange(const uint32_t* keys, size_t n, uint32_t lo, uint32_t hi, uint32_t* out,
                   size_t* above) {
  return HWY_DYNAMIC_DISPATCH(FilterRange)(keys, n, lo, hi, out, above);
}
void SampleRanks(const uint32_t* sample, size_t s, uint32_t* greater) {
  HWY_DYNAMIC_DISPATCH(SampleRanks)(sample, s, greater);
}
bool AllFinite(const float* a, size_t n) { return HWY_DYNAMIC_DISPATCH(AllFinite)(a, n); }
uint8_t MaxByte(const uint8_t* bytes, size_t n) { return HWY_DYNAMIC_DISPATCH(MaxByte)(bytes, n); }
uint64_t CountByte(const uint8_t* bytes, size_t n, uint8_t value) {
  return HWY_DYNAMIC_DISPATCH(CountByte)(bytes, n, value);
}
uint64_t GapVarintExtraBytes(const uint32_t* ids, size_t n) {
  return n < 2 ? 0 : HWY_DYNAMIC_DISPATCH(GapVarintExtraBytes)(ids, n);
}
void AddAbs(const float* x, size_t n, float* acc) { HWY_DYNAMIC_DISPATCH(AddAbs)(x, n, acc); }
void AddKeptCorrection(const uint32_t* ids, const float* a, const float* g, const float* s,
                       size_t n, float scale, float* acc) {
  HWY_DYNAMIC_DISPATCH(AddKeptCorrection)(ids, a, g, s, n, scale, acc);
}
void AddMagnitudes(const float* a, const float* b, size_t n, float* acc) {
  HWY_DYNAMIC_DISPATCH(AddMagnitudes)(a, b, n, acc);
}
bool AscendingBelow(const uint32_t* ids, size_t n, uint32_t limit) {
  return HWY_DYNAMIC_DISPATCH(AscendingBelow)(ids, n, limit);
}
uint64_t CountSetBits(const uint8_t* bytes, size_t n) {
  return HWY_DYNAMIC_DISPATCH(CountSetBits)(bytes, n);
}
uint32_t OrderStatistic(const uint32_t* sample, const uint32_t* greater, size_t s, size_t rank) {
  return HWY_DYNAMIC_DISPATCH(OrderStatistic)(sample, greater, s, rank);
}
size_t TieEnd(const uint32_t* keys, size_t n, uint32_t t, size_t q) {
  return HWY_DYNAMIC_DISPATCH(TieEnd)(keys, n, t, q);
}
size_t EmitKept(const uint32_t* keys, const float* a, size_t n, uint32_t t, size_t tie_end,
                uint32_t* ids, float* values, uint8_t* bits) {
  return HWY_DYNAMIC_DISPATCH(EmitKept)(keys, a, n, t, tie_end, ids, values, bits);
}
bool ThresholdEmit(const float* a, const float* w, size_t n, uint32_t t, uint32_t* ids,
                   float* values, uint8_t* bits, size_t* count) {
  return HWY_DYNAMIC_DISPATCH(ThresholdEmit)(a, w, n, t, ids, values, bits, count);
}
size_t CandidateKeys(const uint32_t* ids, const float* values, size_t m, const float* w,
                     uint32_t* keys, uint32_t at) {
  return HWY_DYNAMIC_DISPATCH(CandidateKeys)(ids, values, m, w, keys, at);
}
size_t KeepCut(uint32_t* keys, const uint32_t* ids, const float* values, size_t m, uint32_t t,
               size_t tie_end, bool compact_keys, uint32_t* out_ids, float* out_values,
               uint32_t* dropped, size_t* num_dropped) {
  return HWY_DYNAMIC_DISPATCH(KeepCut)(keys, ids, values, m, t, tie_end, compact_keys, out_ids,
                                       out_values, dropped, num_dropped);
}
void FloatToHalf(const float* in, size_t n, uint16_t* out) {
  HWY_DYNAMIC_DISPATCH(FloatToHalf)(in, n, out);
}
void FloatToBf16(const float* in, size_t n, uint16_t* out) {
  HWY_DYNAMIC_DISPATCH(FloatToBf16)(in, n, out);
}
float MaxAbsFinite(const float* in, size_t n) { return HWY_DYNAMIC_DISPATCH(MaxAbsFinite)(in, n); }
void QuantizeInt8(const float* in, size_t n, float scale, int8_t* out) {
  HWY_DYNAMIC_DISPATCH(QuantizeInt8)(in, n, scale, out);
}
bool HalfToFloat(const uint16_t* in, size_t n, float* out) {
  return HWY_DYNAMIC_DISPATCH(HalfToFloat)(in, n, out);
}
bool Bf16ToFloat(const uint16_t* in, size_t n, float* out) {
  return HWY_DYNAMIC_DISPATCH(Bf16ToFloat)(in, n, out);
}
bool Int8ToFloat(const int8_t* in, size_t n, float scale, float* out) {
  return HWY_DYNAMIC_DISPATCH(Int8ToFloat)(in, n, scale, out);
}
const char* TargetName() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }
bool CapTargets(const char* name) {
  const std::string_view cap = name;
  hwy::DisableTargets(0);  // lift an earlier cap first
  int64_t wanted = 0;
  if (cap == "avx2") {
    wanted = HWY_AVX2;
  } else if (cap == "sse4") {
    wanted = HWY_SSE4;
  } else {
    return cap == "best";
  }
  // The capped set must be both compiled (HWY_TARGETS) and run by this CPU.
  if ((hwy::SupportedTargets() & HWY_TARGETS & wanted) == 0) return false;
  hwy::DisableTargets(wanted - 1);  // every better target has a lower bit
  return true;
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
