// Internals of the router's selection, shared by its files (private to src/routing):
//   select_reference.cc  the plain nth_element path, the oracle of the differential tests
//   select_units.cc      unit granularity: unit scores, and the exact top k of them
//   kth_largest.cc       the k-th largest key of a row (sample select, radix cut)
//   select_row_fast.cc   an element row in three passes: keys, the k-th largest, emit
//   select_one_pass.cc   an element row in one streaming pass and a cut among its candidates
//   route_elements.cc    element granularity: the rows, in parallel, by one of the two paths
//   rest_tier.cc         the kSign1 rest tier
//   column_sums.hpp/.cc  column sums of |a|, taken in the routing pass
//   mask_ops.cc          the receiver's scatter and the backward pass's gather and scatter
//
// Words used below:
//   score  - the importance of one entry: |a| * w_c for kSensitivity (w_c = eps + S_unit(col)
//            as a float, clamped to FLT_MAX; one float multiply), |a| for kMagnitude, a
//            24-bit hash fraction of (seed, step, row, col) for kRandom. Scores are floats,
//            handled as integer keys (their bits without the sign), and never NaN: a
//            non-finite activation is rejected up front or scored 0 (kTreatAsZero), and w_c is
//            finite and >= 0, so |a| * w_c is finite or +inf. Units sum them in double.
//   better - the strict total order on candidates: score descending, then id ascending.
//            Because it is total, "the top k" is exactly one set, whatever algorithm finds it.
//   k, nf  - k = KeptCount(n, keep) candidates are kept; the nf = FullCount(k, keep_full) best
//            of them go full, the other k - nf lossy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "routing/column_sums.hpp"
#include "routing/scoring.hpp"
#include "sparselink/routing.hpp"

namespace sparselink::internal {

// First level: the top 11 bits of the score rounded to float (8 exponent and 3 mantissa bits:
// 1/8-octave buckets over the whole float range, no anchoring pass needed). Rounding a double
// to float is monotone, so a higher bucket means a strictly higher score, and only the ties
// inside one bucket need the exact double keys.
constexpr int kCoarseShift = 20;
constexpr size_t kCoarseBuckets = 2048;

// Rows per chunk of RouteElements (the guess chain), and the first guess's relative width.
constexpr size_t kRowChunk = 16;
constexpr float kInitialGuessWidth = 1.0f / 16;
// The largest key of a finite score (+inf's bits).
constexpr uint32_t kInfKey = 0x7F800000u;

// Scratch of one thread, reused across rows and calls (resize only grows).
struct SelectScratch {
  std::vector<double> score;      // one row's scores
  std::vector<uint32_t> cand_id;  // candidates, id order
  std::vector<uint64_t> keys;     // keys of one coarse bucket, permuted by RankOfKeys
  std::vector<uint32_t> coarse = std::vector<uint32_t>(kCoarseBuckets);
  std::vector<uint32_t> order;  // reference path
  // Element rows (SelectRowFast):
  std::vector<uint32_t> row_keys;   // one row's keys
  std::vector<uint32_t> cand_keys;  // two buffers for the shrinking candidate set
  std::vector<uint32_t> emit_ids;   // staged output of EmitKept (+ simd::kSlack)
  std::vector<float> emit_values;   // likewise
  // The last row's cut, the first guess for the next row of the same width and k (rows of one
  // batch look alike), and the relative width of that guess, adapted to how often it hits.
  uint32_t last_key = 0;
  size_t last_n = 0;
  size_t last_k = 0;
  float guess_width = 1.0f / 16;  // kInitialGuessWidth
  // The one-pass rows (RowOnePass): the candidates' keys, the ids dropped from them, and the
  // model of the cut that the rows so far have taught.
  std::vector<uint32_t> approx_keys;
  std::vector<uint32_t> band_keys;  // an exact row's keys near its estimated cut
  std::vector<uint32_t> dropped;
  std::vector<uint32_t> kept_ids;  // an exact row's kept entries, staged (+ simd::kSlack)
  std::vector<float> kept_values;
  std::vector<uint32_t> moved_ids;  // a kApproximate region on its way down (3 threads or more)
  std::vector<float> moved_values;
  std::vector<Tier> moved_tiers;
  bool model_ready = false;
  double model_center = 0;   // the key with about aim = k + window / 2 keys at or above it
  double model_density = 0;  // keys per key unit near it, > 0
  // The binomial standard deviation of a row's count at its cut, for rows of spread_n columns
  // keeping spread_k.
  double spread = 0;
  size_t spread_n = 0;
  size_t spread_k = 0;
  double model_error = 0;  // running mean of |count at the predicted key - aim|
};

// The calling thread's scratch.
inline SelectScratch& ThreadScratch() {
  thread_local SelectScratch scratch;
  return scratch;
}

template <typename T>
void GrowTo(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// ---- select_reference.cc
// Writes the k best of the n candidates scored by `score` (ids 0..n-1) to `ids`, ascending,
// and their tiers to `tiers` (the nf best kFull). `order` is scratch. Requires nf <= k <= n.
void SelectTopReference(const double* score, size_t n, size_t k, size_t nf,
                        std::vector<uint32_t>& order, uint32_t* ids, Tier* tiers);

// ---- select_units.cc
// Unit granularity: selects once over units of `block` columns and writes the shared index set,
// the values and the tiers of every row.
void RouteUnits(ConstMatrix activation, const Scorer& scorer, const Contract& contract,
                size_t block, SelectMethod method, bool parallel, RoutedTensor* out);

// ---- kth_largest.cc

// The r-th largest (1 <= r <= h) of keys[0, h) and how many of them exceed it. Each level
// histograms the keys over [lo, hi] in at most 64 buckets, keeps the bucket holding rank r
// (compacting in place) and goes on; the range shrinks by 2^6 per level, or to one value.
// A few keys are finished by counting: T = the least key with fewer than r keys above it.
// Branch-free in the data except the loop trip counts. Permutes keys.
struct KeyCut {
  uint64_t key;
  size_t above;
};
KeyCut RankOfKeys(uint64_t* keys, size_t h, size_t r);

// The k-th largest key of a row, with the number of keys above it and equal to it.
struct KeyRank {
  uint32_t key = 0;
  size_t above = 0;
  size_t ties = 0;
  bool guess_hit = false;  // the guessed bracket held T
  // Approximate cut (stop_window > 0): nonzero when the search stopped early; then every key
  // >= key is kept, approx_count of them, and above / ties are not meaningful.
  size_t approx_count = 0;
};

// A first bracket [lo, hi] to try before sampling (from the previous row's cut).
struct Guess {
  bool valid = false;
  uint32_t lo = 0;
  uint32_t hi = 0;
};

// The exact k-th largest of keys[0, n), 1 <= k <= n.
// With stop_window > 0 it may stop early (KeyRank::approx_count): as soon as the bracket
// [lo, hi] holds T and at most stop_window keys, keeping every key >= lo is within
// stop_window of k and takes everything above T.
KeyRank KthLargestKey(const uint32_t* keys, size_t n, size_t k, const Guess& guess,
                      SelectScratch& scratch, size_t stop_window = 0);

// A cut as EmitKept (and KeepCut) apply it: keys > t, and keys == t before position tie_end;
// count of them. From KthLargestKey's answer over keys[0, n) for rank k: exact (the k best,
// ties to the lowest positions) or stopped early (every key >= its floor).
struct EmitCut {
  uint32_t t = 0;
  size_t tie_end = 0;
  size_t count = 0;
};
EmitCut EmitCutOf(const KeyRank& cut, const uint32_t* keys, size_t n, size_t k);

// ---- select_row_fast.cc

// Row selection on keys: writes the k kept columns ascending to ids, their values (0 where not
// finite) to values and their tiers (the nf best kFull) to tiers. Same output as SelectTop on
// the keys' scores.
// With `bitmap` not null (n a multiple of 8) the row's n / 8 bitmap bytes are written there.
// With window > 0 (kApproximate) the row may keep up to k + window entries instead (see
// KthLargestKey). Returns the number kept; the outputs need room for
// k + window entries (tiers: the FullCount(count, keep_full) best are kFull).
size_t SelectRowFast(const uint32_t* keys, const float* row, size_t n, size_t k, double keep_full,
                     size_t window, SelectScratch& scratch, uint32_t* ids, float* values,
                     Tier* tiers, uint8_t* bitmap);

// ---- select_one_pass.cc
// One row by the one-pass path when the model allows: exactly k entries with window == 0 (the
// same output as SelectRowFast's exact cut, bit for bit), else between k and k + window as
// SelectRowFast with `window`. Same outputs as SelectRowFast; `w` is the kSensitivity weights
// (or null) and `finite` gets whether the row's values were all finite.
size_t RowOnePass(const float* row, const float* w, size_t n, size_t k, double keep_full,
                  size_t window, SelectScratch& scratch, uint32_t* ids, float* values, Tier* tiers,
                  uint8_t* bitmap, bool* finite);

// ---- route_elements.cc
// Element granularity: each row's top k (kApproximate: k to k + window). Returns whether every
// activation was finite (the caller's non-finite check, fused into the scoring pass).
bool RouteElements(ConstMatrix activation, const Scorer& scorer, const Contract& contract,
                   SelectMethod method, double tolerance, bool parallel, RoutedTensor* out,
                   std::vector<uint8_t>* bitmap, AbsSumRows& sums);

// ---- rest_tier.cc
// Fills rest_bits and rest_centroids of `out` (whose index set is complete) from `activation`.
void FillSign1Rest(ConstMatrix activation, bool parallel, RoutedTensor* out);

}  // namespace sparselink::internal
