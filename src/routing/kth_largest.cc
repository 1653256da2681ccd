// The k-th largest key T of a row by sample select: take 64 keys spread over the candidate
// set, rank them against each other (simd::SampleRanks), and read off two sample keys lo <= hi
// that bracket rank k with a margin of about 1.5 binomial standard deviations; one vector pass
// (simd::FilterRange) counts the keys above hi and compacts those in [lo, hi]. If T is there,
// the next level works on those; if the bracket missed, one more pass compacts the side T is
// on (keys > hi, or keys < lo), so a miss costs a pass, never a restart. Every set holds all
// the keys equal to T, so the final exact step (a set of at most 64 keys, ranked against
// itself) also yields how many keys tie with T and how many lie above it. Ties: a bracket of
// one key is T itself with all the set tied to it; a level that does not shrink its set (a few
// distinct values) splits off the keys equal to its lower end, one vector count and at most
// one pass (T is that key, or the rest goes on). A 16th level ends in the radix cut
// (RankOfKeys), so the cost is bounded.
// Then the cut is applied in column order (simd::EmitKept): everything above T and the first
// q = k - #(key > T) keys equal to T.

//
// RankOfKeys, the radix cut, finishes a set that sampling did not shrink, and the unit
// selection's coarse buckets (select_units.cc).
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>

#include "routing/select.hpp"

namespace sparselink::internal {
namespace {

// Later levels: up to 64 linear buckets over the remaining key range; at most this many keys
// are finished by counting instead.
constexpr int kFineBits = 6;
constexpr size_t kCountingMaxKeys = 12;
constexpr size_t kSampleSize = 64;
// Each level shrinks its set to about a quarter or less; this many levels cover 2^32 keys.
constexpr int kMaxSampleLevels = 16;

}  // namespace

KeyCut RankOfKeys(uint64_t* keys, size_t h, size_t r) {
  size_t above = 0;
  while (h > kCountingMaxKeys) {
    uint64_t lo = keys[0];
    uint64_t hi = keys[0];
    for (size_t i = 1; i < h; ++i) {
      lo = std::min(lo, keys[i]);
      hi = std::max(hi, keys[i]);
    }
    if (lo == hi) return {lo, above};
    const int shift = std::max(0, static_cast<int>(std::bit_width(hi - lo)) - kFineBits);
    std::array<uint32_t, size_t{1} << kFineBits> hist{};
    for (size_t i = 0; i < h; ++i) ++hist[(keys[i] - lo) >> shift];
    size_t b = (hi - lo) >> shift;
    size_t cum = 0;
    while (cum + hist[b] < r) cum += hist[b--];
    above += cum;
    r -= cum;
    size_t kept = 0;
    for (size_t i = 0; i < h; ++i) {
      const uint64_t key = keys[i];
      keys[kept] = key;
      kept += ((key - lo) >> shift) == b ? 1 : 0;
    }
    h = kept;
  }
  uint64_t t = ~uint64_t{0};
  for (size_t i = 0; i < h; ++i) {
    size_t greater = 0;
    for (size_t j = 0; j < h; ++j) greater += keys[j] > keys[i] ? 1 : 0;
    t = greater < r ? std::min(t, keys[i]) : t;
  }
  for (size_t i = 0; i < h; ++i) above += keys[i] > t ? 1 : 0;
  return {t, above};
}

// stop_window of k and takes everything above T.
KeyRank KthLargestKey(const uint32_t* keys, size_t n, size_t k, const Guess& guess,
                      SelectScratch& scratch, size_t stop_window) {
  // Two buffers in turn: each level reads one and writes the other.
  GrowTo(scratch.cand_keys, 2 * (n + simd::kSlack));
  uint32_t* buffers[2] = {scratch.cand_keys.data(), scratch.cand_keys.data() + n + simd::kSlack};
  const uint32_t* set = keys;
  size_t h = n;
  size_t r = k;
  size_t above = 0;    // keys of the row above the current set
  uint32_t floor = 0;  // no key of the current set is below it; all the row's keys in
                       // [floor, max of the set] are in the set
  std::array<uint32_t, kSampleSize> sample;
  std::array<uint32_t, kSampleSize> greater;
  bool guess_hit = false;
  for (int level = 0;; ++level) {
    uint32_t* cand = buffers[level % 2];
    const bool guessed = level == 0 && guess.valid;
    if (h <= kSampleSize && !guessed) {
      std::copy(set, set + h, sample.begin());
      simd::SampleRanks(sample.data(), h, greater.data());
      const uint32_t t = simd::OrderStatistic(sample.data(), greater.data(), h, r);
      // Counted with the vector kernel: a scalar loop here branches on random keys.
      const size_t set_above = simd::CountAbove(sample.data(), h, t);
      const size_t ties = (t == 0 ? h : simd::CountAbove(sample.data(), h, t - 1)) - set_above;
      return {t, above + set_above, ties, guess_hit};
    }
    uint32_t lo = guess.lo;
    uint32_t hi = guess.hi;
    if (!guessed) {
      for (size_t i = 0; i < kSampleSize; ++i) {
        sample[i] = set[(2 * i + 1) * h / (2 * kSampleSize)];
      }
      simd::SampleRanks(sample.data(), kSampleSize, greater.data());
      const double p = static_cast<double>(r) / static_cast<double>(h);
      const double center = p * kSampleSize;
      const double margin = 1.5 * std::sqrt(kSampleSize * p * (1.0 - p)) + 1.0;
      const double hi_rank = std::floor(center - margin);
      const double lo_rank = std::ceil(center + margin);
      hi = hi_rank >= 1 ? simd::OrderStatistic(sample.data(), greater.data(), kSampleSize,
                                               static_cast<size_t>(hi_rank))
                        : std::numeric_limits<uint32_t>::max();
      lo = lo_rank <= kSampleSize ? simd::OrderStatistic(sample.data(), greater.data(), kSampleSize,
                                                         static_cast<size_t>(lo_rank))
                                  : 0u;
    }
    size_t over = 0;
    size_t m = simd::FilterRange(set, h, lo, hi, cand, &over);
    if (over >= r) {  // T > hi: the keys above hi
      size_t none = 0;
      m = simd::FilterRange(set, h, hi + 1, std::numeric_limits<uint32_t>::max(), cand, &none);
      floor = hi + 1;
    } else if (over + m < r) {  // T < lo: the keys below lo
      size_t skipped = 0;
      r -= over + m;
      above += over + m;
      m = simd::FilterRange(set, h, 0, lo - 1, cand, &skipped);
    } else {
      r -= over;
      above += over;
      guess_hit = guess_hit || guessed;
      floor = std::max(floor, lo);
      if (m <= stop_window) {
        return {.key = floor, .guess_hit = guess_hit, .approx_count = above + m};
      }
      // A bracket of one key (a tie group): T is that key, and all m of the set tie with it.
      if (lo == hi) return {lo, above, m, guess_hit};
    }
    if (m == h && !guessed && level < kMaxSampleLevels) {
      // Not shrunk: every key of the set lies in [lo, hi] (lo < hi: one key returned above), a
      // few distinct values with many ties. Split off the keys equal to lo: either T is lo, or
      // the next level works on the keys above it.
      const size_t above_lo = simd::CountAbove(cand, m, lo);
      if (above_lo < r) return {lo, above + above_lo, m - above_lo, guess_hit};
      size_t none = 0;
      m = simd::FilterRange(cand, m, lo + 1, hi, cand, &none);
      floor = lo + 1;
      set = cand;
      h = m;
      continue;
    }
    if (level == kMaxSampleLevels) {
      // Unlucky: the radix cut of the new set, then its ties counted.
      GrowTo(scratch.keys, m);
      std::copy(cand, cand + m, scratch.keys.begin());
      const KeyCut cut = RankOfKeys(scratch.keys.data(), m, r);
      const auto t = static_cast<uint32_t>(cut.key);
      const size_t ties = static_cast<size_t>(std::count(cand, cand + m, t));
      return {t, above + cut.above, ties, guess_hit};
    }
    set = cand;
    h = m;
  }
}

EmitCut EmitCutOf(const KeyRank& cut, const uint32_t* keys, size_t n, size_t k) {
  if (cut.approx_count != 0) {  // every key >= cut.key: all above key - 1, no ties
    return cut.key == 0 ? EmitCut{0, n, cut.approx_count}
                        : EmitCut{cut.key - 1, 0, cut.approx_count};
  }
  const size_t taken_ties = k - cut.above;
  return {cut.key, cut.ties == taken_ties ? n : simd::TieEnd(keys, n, cut.key, taken_ties), k};
}

}  // namespace sparselink::internal
