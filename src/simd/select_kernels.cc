// Selection kernels of the router: keys, counts and cuts over a row's keys, the sample
// select's ranks, and the emit passes that write the kept columns, values and bitmap bits.
//
// Compiled once per x86 target by hwy/foreach_target.h (the file includes itself); the
// exported table and HWY_DYNAMIC_DISPATCH pick the best target at the first call. Every
// result is the same on every target (simd/kernels.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "simd/select_kernels.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>

#include "simd/kernels.hpp"
#include "simd/lanes-inl.hpp"

HWY_BEFORE_NAMESPACE();
namespace sparselink::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

uint32_t ScalarKey(float a, const float* w, size_t i) {
  const uint32_t abs = std::bit_cast<uint32_t>(a) & kAbsMask;
  if (abs >= kInfBits) return 0;
  if (w == nullptr) return abs;
  return std::bit_cast<uint32_t>(std::bit_cast<float>(abs) * w[i]) & kAbsMask;
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
// bitmap's bytes made the streaming pass a third slower: docs/perf-notes.md#emitlanes.)
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

// How far ahead of its reads ThresholdEmit prefetches (docs/perf-notes.md#kprefetchbytes).
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

}  // namespace HWY_NAMESPACE
}  // namespace sparselink::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace sparselink::simd {

HWY_EXPORT(MagnitudeKeys);
HWY_EXPORT(MaxBelow);
HWY_EXPORT(MinAbove);
HWY_EXPORT(CountAbove);
HWY_EXPORT(FilterRange);
HWY_EXPORT(SampleRanks);
HWY_EXPORT(OrderStatistic);
HWY_EXPORT(TieEnd);
HWY_EXPORT(EmitKept);
HWY_EXPORT(ThresholdEmit);
HWY_EXPORT(CandidateKeys);
HWY_EXPORT(KeepCut);

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

}  // namespace sparselink::simd
#endif  // HWY_ONCE
