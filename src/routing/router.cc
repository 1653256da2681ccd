// Router: scoring, exact top-k selection (the reference path), tiers, the rest tier, and the
// scatter/gather of the receiver and of the backward pass.
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
//
// Selection of the top k of n candidates (SelectTop): std::nth_element moves the k best ids
// to the front, a second nth_element moves the nf best of those to the very front, each
// group is sorted by id, and a merge of the two groups emits the kept ids ascending, each
// tagged with its tier. O(n) expected plus O(k log k).
//
// Unit selection, fast (SelectTopFast, SelectMethod::kFast; element rows use SelectRowFast,
// described further down) finds the same set without ordering ids. Because `better` is a total
// order, the top k is "every candidate scoring above T, plus the lowest-id candidates scoring
// exactly T while the tie quota q lasts", where T is the k-th largest score (as a multiset of
// doubles) and q = k - #(score > T). So it suffices to find T and q, then stream the candidates in
// id order. Steps, all without data-dependent branches in the per-entry loops:
//   1. coarse histogram: bucket = the top 11 bits of the score rounded to float (1/8 octave).
//      Rounding to float is monotone, so a higher bucket means a strictly higher score; a
//      scan from the top bucket finds the buckets holding rank k and rank nf;
//   2. filter: compact, in id order, the ids whose score can lie in the rank-k bucket or above
//      (score > the largest float below that bucket): every score >= T is among them;
//   3. exact cut: the keys (IEEE bits, sign cleared so -0 == +0) of the candidates in the
//      rank-k bucket go through a few 64-bucket radix levels (RankOfKeys) to the exact T
//      and q; likewise Tf and qf for the nf best (the nf best of the top k are the nf best
//      overall). Two doubles that round to the same float stay distinct here, so the float
//      step never changes the result;
//   4. emit: one pass over the candidates in id order applies both cuts.
// Scratch is thread-local, so no allocation after a thread's first call at a given width.
// Cost: about five streaming passes over the row's n scores plus O(k) work, against the
// reference's pointer-chasing nth_element and sorts.
//
// Element granularity selects in each row over its columns, by one of two paths: the three
// passes of SelectRowFast (keys, sample select, emit), or one streaming pass and work on the
// few candidates it leaves (RowOnePass: scores |a| or |a| * w, at most a quarter kept, under
// kApproximate and for exact rows of at least kExactOnePassMinCols = 2048 columns). Exact
// selection keeps the same k in every row, so row r's entries sit at [r*k, (r+1)*k) of the
// output: rows run in parallel, each straight into its final slot, and the result does not
// depend on the thread count.
// kApproximate rows keep between k and k + window: on the one-pass path each thread writes its
// rows back to back and the threads' regions are closed up afterwards
// (RouteElementsOnePass); on the three-pass path (kRandom, narrow windows) each row fills a slot
// of k + window entries, and one serial pass closes the gaps.
//
// Unit granularity selects once per batch over units (blocks of map->block() columns under
// kSensitivity, single columns otherwise). A unit's score is the sum of its entries' scores
// over the batch, accumulated in double in one fixed order (per column over the rows
// ascending, then over the unit's columns ascending), so it too is independent of the thread
// count. The kept units' columns, ascending, form the one index set every row shares.
//
// Rest tier kSign1: per row, over the entries not kept, one bit (v > 0) and two centroids
// (mean of the positive ones, mean of the others, 0 for an empty side, accumulated in double).
// Centroids are computed per row in parallel; the bits are packed across row boundaries, so
// neighbouring rows share bytes and the bits are written in a second, serial pass.
#include <omp.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <sstream>
#include <string>

#include "core/parallel.hpp"
#include "routing/mask_ops.hpp"
#include "simd/kernels.hpp"
#include "sparselink/routing.hpp"

namespace sparselink {

namespace {

constexpr std::array<std::string_view, kNumScorePolicies> kScorePolicyNames = {
    "sensitivity",  // ScorePolicy::kSensitivity
    "magnitude",    // ScorePolicy::kMagnitude
    "random",       // ScorePolicy::kRandom
};
static_assert(static_cast<size_t>(ScorePolicy::kSensitivity) == 0);
static_assert(static_cast<size_t>(ScorePolicy::kMagnitude) == 1);
static_assert(static_cast<size_t>(ScorePolicy::kRandom) == 2);

// Columns per task when summing unit scores: a row's slice of a chunk is 256 contiguous bytes.
constexpr size_t kColumnChunk = 64;

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The value an entry is sent (and summarized) as: non-finite ones only get this far under
// NonFinitePolicy::kTreatAsZero, and then they are 0.
float SafeValue(float a) { return std::isfinite(a) ? a : 0.0f; }

// Everything scoring needs, fixed for one Route call. An entry's score is a float: |a| for
// kMagnitude, |a| * w_c for kSensitivity (w_c = eps + S_unit(c) rounded to float, one IEEE
// multiply), a 24-bit hash fraction for kRandom; a non-finite activation scores 0. Scores are
// handled as keys (simd/kernels.hpp: the float's bits without the sign), which order exactly
// like the scores.
struct Scorer {
  ScorePolicy policy = ScorePolicy::kMagnitude;
  uint64_t seed = 0;
  uint64_t step = 0;
  const float* weight = nullptr;  // kSensitivity: w_c per column

  // Keys of columns [c0, c1) of row r (values `row`) into key[c - c0]. Returns whether all
  // those values were finite.
  bool KeyRange(const float* row, size_t r, size_t c0, size_t c1, uint32_t* key) const {
    if (policy == ScorePolicy::kRandom) {
      const uint64_t row_hash = SplitMix64(SplitMix64(SplitMix64(seed) ^ step) ^ r);
      bool all_finite = true;
      for (size_t c = c0; c < c1; ++c) {
        const float u = static_cast<float>(SplitMix64(row_hash ^ c) >> 40) * 0x1p-24f;
        const bool finite = std::isfinite(row[c]);
        all_finite = all_finite && finite;
        key[c - c0] = finite ? std::bit_cast<uint32_t>(u) : 0u;
      }
      return all_finite;
    }
    const float* w = policy == ScorePolicy::kSensitivity ? weight + c0 : nullptr;
    return simd::MagnitudeKeys(row + c0, w, c1 - c0, key);
  }
};

// The score a key stands for.
double KeyScore(uint32_t key) { return static_cast<double>(std::bit_cast<float>(key)); }

// Writes the k best of the n candidates scored by `score` (ids 0..n-1) to `ids`, ascending,
// and their tiers to `tiers` (the nf best kFull). `order` is scratch. Requires nf <= k <= n.
void SelectTop(const double* score, size_t n, size_t k, size_t nf, std::vector<uint32_t>& order,
               uint32_t* ids, Tier* tiers) {
  const auto better = [score](uint32_t a, uint32_t b) {
    return score[a] > score[b] || (score[a] == score[b] && a < b);
  };
  order.resize(n);
  std::iota(order.begin(), order.end(), uint32_t{0});
  const auto first = order.begin();
  const auto kept_end = first + static_cast<std::ptrdiff_t>(k);
  const auto full_end = first + static_cast<std::ptrdiff_t>(nf);
  std::nth_element(first, kept_end, order.end(), better);
  std::nth_element(first, full_end, kept_end, better);
  std::sort(first, full_end);
  std::sort(full_end, kept_end);
  size_t f = 0;
  size_t l = nf;
  for (size_t i = 0; i < k; ++i) {
    const bool take_full = l == k || (f < nf && order[f] < order[l]);
    ids[i] = take_full ? order[f++] : order[l++];
    tiers[i] = take_full ? Tier::kFull : Tier::kLossy;
  }
}

// The cut of a ranking at rank k: the k-th best score and how many entries scoring exactly
// that are taken (the lowest ids first).
struct Cut {
  double score = std::numeric_limits<double>::infinity();
  size_t ties = 0;  // 0 with score = +inf: nothing is taken
};

// Order-preserving integer key of a score: its IEEE bits without the sign. Scores are >= 0 or
// -0, never NaN, so this maps -0 to +0 and is otherwise exactly the order of the doubles.
uint64_t ScoreKey(double s) { return std::bit_cast<uint64_t>(s) & ~(uint64_t{1} << 63); }

// First level: the top 11 bits of the score rounded to float (8 exponent and 3 mantissa bits:
// 1/8-octave buckets over the whole float range, no anchoring pass needed). Rounding a double
// to float is monotone, so a higher bucket means a strictly higher score, and only the ties
// inside one bucket need the exact double keys.
constexpr int kCoarseShift = 20;
constexpr size_t kCoarseBuckets = 2048;
// Later levels: up to 64 linear buckets over the remaining key range; at most this many keys
// are finished by counting instead.
constexpr int kFineBits = 6;
constexpr size_t kCountingMaxKeys = 12;

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

SelectScratch& ThreadScratch() {
  thread_local SelectScratch scratch;
  return scratch;
}

template <typename T>
void GrowTo(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// The r-th largest (1 <= r <= h) of keys[0, h) and how many of them exceed it. Each level
// histograms the keys over [lo, hi] in at most 64 buckets, keeps the bucket holding rank r
// (compacting in place) and goes on; the range shrinks by 2^6 per level, or to one value.
// A few keys are finished by counting: T = the least key with fewer than r keys above it.
// Branch-free in the data except the loop trip counts. Permutes keys.
struct KeyCut {
  uint64_t key;
  size_t above;
};
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

// Same contract as SelectTop (same output, bit for bit), by the fast path described at the top.
void SelectTopFast(const double* score, size_t n, size_t k, size_t nf, SelectScratch& scratch,
                   uint32_t* ids, Tier* tiers) {
  if (k == 0) return;
  GrowTo(scratch.cand_id, n);
  GrowTo(scratch.keys, n);

  // Coarse histogram.
  const auto bucket = [](double s) {
    return std::bit_cast<uint32_t>(static_cast<float>(s)) << 1 >> (kCoarseShift + 1);
  };
  uint32_t* hist = scratch.coarse.data();
  std::fill(hist, hist + kCoarseBuckets, 0u);
  uint32_t top = 0;
  for (size_t c = 0; c < n; ++c) {
    const uint32_t b = bucket(score[c]);
    ++hist[b];
    top = std::max(top, b);
  }

  // Buckets holding rank nf and rank k, and the counts above them.
  size_t b = top;
  size_t cum = 0;
  size_t full_bucket = 0, above_full = 0;
  if (nf > 0) {
    while (cum + hist[b] < nf) cum += hist[b--];
    full_bucket = b;
    above_full = cum;
  }
  while (cum + hist[b] < k) cum += hist[b--];
  const size_t kept_bucket = b;
  const size_t above_kept = cum;

  // Candidates: every entry in the kept bucket or above, in id order (branch-free compaction).
  // A score whose float lands in kept_bucket or above exceeds the largest float below that
  // bucket (monotone rounding), so `s > floor` admits all of them, plus perhaps a few from the
  // bucket below, which are never taken and are skipped by cut_in_bucket.
  const double floor =
      kept_bucket == 0
          ? -std::numeric_limits<double>::infinity()
          : std::bit_cast<float>(static_cast<uint32_t>(kept_bucket << kCoarseShift) - 1);
  uint32_t* cand_id = scratch.cand_id.data();
  size_t m = 0;
  for (size_t c = 0; c < n; ++c) {
    cand_id[m] = static_cast<uint32_t>(c);
    m += score[c] > floor ? 1 : 0;
  }

  // The exact cut inside one coarse bucket, from the candidates' keys.
  const auto cut_in_bucket = [&](size_t target, size_t rank, size_t above) {
    uint64_t* keys = scratch.keys.data();
    size_t h = 0;
    for (size_t i = 0; i < m; ++i) {
      const double s = score[cand_id[i]];
      keys[h] = ScoreKey(s);
      h += bucket(s) == target ? 1 : 0;
    }
    const KeyCut cut = RankOfKeys(keys, h, rank - above);
    return Cut{std::bit_cast<double>(cut.key), rank - above - cut.above};
  };
  const Cut kept = cut_in_bucket(kept_bucket, k, above_kept);
  const Cut full = nf == 0 ? Cut{} : nf == k ? kept : cut_in_bucket(full_bucket, nf, above_full);

  // Emit: exactly k candidates are taken, so stopping at pos == k never writes past ids[k-1].
  size_t kept_ties = kept.ties;
  size_t full_ties = full.ties;
  size_t pos = 0;
  for (size_t i = 0; pos < k; ++i) {
    const double s = score[cand_id[i]];
    const bool kept_tie = s == kept.score;
    const bool take = (s > kept.score) | (kept_tie & (kept_ties != 0));
    kept_ties -= (kept_tie & take) ? 1 : 0;
    const bool full_tie = s == full.score;
    const bool is_full = (s > full.score) | (full_tie & (full_ties != 0));
    full_ties -= (full_tie & is_full) ? 1 : 0;
    ids[pos] = cand_id[i];
    tiers[pos] = is_full ? Tier::kFull : Tier::kLossy;
    pos += take ? 1 : 0;
  }
}

void Select(SelectMethod method, const double* score, size_t n, size_t k, size_t nf,
            SelectScratch& scratch, uint32_t* ids, Tier* tiers) {
  if (method != SelectMethod::kReference) {  // units are selected exactly by kApproximate too
    SelectTopFast(score, n, k, nf, scratch, ids, tiers);
  } else {
    SelectTop(score, n, k, nf, scratch.order, ids, tiers);
  }
}

// --- Element rows: selection on float keys (SelectRowFast) ---
//
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

constexpr size_t kSampleSize = 64;
// Rows per chunk of RouteElements (the guess chain), and the first guess's relative width.
constexpr size_t kRowChunk = 16;
constexpr float kInitialGuessWidth = 1.0f / 16;
// Exact rows narrower than this take the three passes: the one pass's fixed cost per row (the
// bracket probes and the cut among the candidates) outweighs a pass saved below it, and rows of
// a few hundred columns sit in the cache anyway. On rows of normal values the one pass wins
// from 640 columns on (one thread, 4 MiB, GB/s, three passes against one pass, 2026-11-28: 512
// columns 5.70-5.81 against 5.48-5.57; 768 6.14-6.74 against 7.43-7.70; 1024 6.26-6.76 against
// 9.11-9.43), and on the first epoch of the default training run too; but over its five epochs
// the training boundaries' route + encode (1024 columns, ReLU rows that differ from row to row)
// took 92.0, 107.7, 94.1 us per boundary and step with the limit at 640, against 80.6, 91.8,
// 83.8 at 2048 (seeds 1-3, interleaved). So the limit stays where the training shape is
// not affected (docs/RESULTS.md, "Two threads, measured side by side").
constexpr size_t kExactOnePassMinCols = 2048;
// The one pass is for sparse rows: above a kept share of 1 / this, the work on the candidates
// (about as many as kept) outweighs the passes saved (keep 50 %: 5.5 GB/s against 5.9).
constexpr size_t kOnePassMaxKeptShare = 4;
// kApproximate windows narrower than this go the three-pass way (a threshold rarely lands).
constexpr size_t kMinOnePassWindow = 2;
// One-pass exact rows with at most this many candidates take the exact step on them all.
constexpr double kExactBracket = 16;
// The one-pass exact cut's bracket around its estimate of T, in counts either side.
constexpr double kExactBand = 12;
// Single probes of a one-pass kApproximate row's search before the exact step finishes it
// instead (also after two probes that did not split the bracket's count: ties or a gap at the
// cut). Exact rows take no probes: their band (kExactBand) leads to the exact step directly.
constexpr int kMaxProbes = 8;
// Rows per chunk of the one-pass path: the chunk's first row takes the three passes that seed
// the model.
constexpr size_t kApproxRowChunk = 64;
// The largest key of a finite score (+inf's bits).
constexpr uint32_t kInfKey = 0x7F800000u;
// Each level shrinks its set to about a quarter or less; this many levels cover 2^32 keys.
constexpr int kMaxSampleLevels = 16;

// RouteExtras::column_abs_sums and ColumnAbsSums: each block of kSumRows rows is summed row by
// row into a partial of its own by the thread that has the rows, and Finish adds the partials
// in block order, so the sums do not depend on the thread count. A block never straddles two
// threads: the routes hand out rows in chunks of kRowChunk or kApproxRowChunk, in order.
constexpr size_t kSumRows = 16;
static_assert(kRowChunk % kSumRows == 0 && kApproxRowChunk % kSumRows == 0);
// Columns per piece of Finish's work (four cache lines of each partial).
constexpr size_t kSumStripe = 64;
class AbsSumRows {
 public:
  // Takes nothing when `sums` is null; `partials` is scratch the caller keeps.
  AbsSumRows(std::vector<float>* sums, size_t rows, size_t cols, std::vector<float>& partials)
      : sums_(sums), cols_(cols), blocks_((rows + kSumRows - 1) / kSumRows), partials_(partials) {
    if (sums_ == nullptr) return;
    sums_->resize(cols);
    partials_.resize(blocks_ * cols);
  }
  // Row r, on the thread that added the rows of its block before it.
  void Add(size_t r, const float* row) {
    if (sums_ == nullptr) return;
    float* partial = partials_.data() + r / kSumRows * cols_;
    if (r % kSumRows == 0) std::fill_n(partial, cols_, 0.0f);
    simd::AddAbs(row, cols_, partial);
  }
  // After every row was added: called by every thread of the parallel region that added them
  // (its loop is shared among them), or outside any.
  void Finish() {
    if (sums_ == nullptr || blocks_ == 0) return;
    float* sums = sums_->data();
    const float* p = partials_.data();
    const size_t cols = cols_;
#pragma omp for schedule(static)
    for (size_t j0 = 0; j0 < cols; j0 += kSumStripe) {
      const size_t j1 = std::min(cols, j0 + kSumStripe);
      std::copy(p + j0, p + j1, sums + j0);
      for (size_t b = 1; b < blocks_; ++b) {
        for (size_t j = j0; j < j1; ++j) sums[j] += p[b * cols + j];
      }
    }
  }

 private:
  std::vector<float>* sums_;
  size_t cols_;
  size_t blocks_;
  std::vector<float>& partials_;
};

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
                      SelectScratch& scratch, size_t stop_window = 0) {
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

// A cut as EmitKept (and KeepCut) apply it: keys > t, and keys == t before position tie_end;
// count of them. From KthLargestKey's answer over keys[0, n) for rank k: exact (the k best,
// ties to the lowest positions) or stopped early (every key >= its floor).
struct EmitCut {
  uint32_t t = 0;
  size_t tie_end = 0;
  size_t count = 0;
};
EmitCut EmitCutOf(const KeyRank& cut, const uint32_t* keys, size_t n, size_t k) {
  if (cut.approx_count != 0) {  // every key >= cut.key: all above key - 1, no ties
    return cut.key == 0 ? EmitCut{0, n, cut.approx_count}
                        : EmitCut{cut.key - 1, 0, cut.approx_count};
  }
  const size_t taken_ties = k - cut.above;
  return {cut.key, cut.ties == taken_ties ? n : simd::TieEnd(keys, n, cut.key, taken_ties), k};
}

// Row selection on keys: writes the k kept columns ascending to ids, their values (0 where not
// finite) to values and their tiers (the nf best kFull) to tiers. Same output as SelectTop on
// the keys' scores.
// With `bitmap` not null (n a multiple of 8) the row's n / 8 bitmap bytes are written there.
// With window > 0 (kApproximate) the row may keep up to k + window entries instead (see
// KthLargestKey). Returns the number kept; the outputs need room for
// k + window entries (tiers: the FullCount(count, keep_full) best are kFull).
size_t SelectRowFast(const uint32_t* keys, const float* row, size_t n, size_t k, double keep_full,
                     size_t window, SelectScratch& scratch, uint32_t* ids, float* values,
                     Tier* tiers, uint8_t* bitmap) {
  if (k == 0) {
    if (bitmap != nullptr) std::fill_n(bitmap, n / 8, uint8_t{0});
    return 0;
  }
  Guess guess;
  if (scratch.last_n == n && scratch.last_k == k) {
    const float last = std::bit_cast<float>(scratch.last_key);
    const auto key_of = [](float f) { return std::bit_cast<uint32_t>(f) & 0x7FFFFFFFu; };
    guess = {true, key_of(last * (1.0f - scratch.guess_width)),
             std::min(key_of(last * (1.0f + scratch.guess_width)), 0x7F800000u)};
  }
  const KeyRank cut = KthLargestKey(keys, n, k, guess, scratch, window);
  if (guess.valid) {
    scratch.guess_width = cut.guess_hit ? std::max(scratch.guess_width * 0.9f, 0x1p-8f)
                                        : std::min(scratch.guess_width * 2.0f, 0.5f);
  }
  scratch.last_key = cut.key;
  scratch.last_n = n;
  scratch.last_k = k;
  const EmitCut emit = EmitCutOf(cut, keys, n, k);
  const uint32_t t = emit.t;
  const size_t tie_end = emit.tie_end;
  const size_t count = emit.count;
  GrowTo(scratch.emit_ids, count + simd::kSlack);
  GrowTo(scratch.emit_values, count + simd::kSlack);
  [[maybe_unused]] const size_t kept = simd::EmitKept(
      keys, row, n, t, tie_end, scratch.emit_ids.data(), scratch.emit_values.data(), bitmap);
  SPARSELINK_DCHECK(kept == count);
  std::copy_n(scratch.emit_ids.data(), count, ids);
  std::copy_n(scratch.emit_values.data(), count, values);
  const size_t nf = FullCount(count, keep_full);
  if (nf == count || nf == 0) {
    std::fill_n(tiers, count, nf == 0 ? Tier::kLossy : Tier::kFull);
    return count;
  }
  // The nf best of the kept are the nf best of the row: one more cut, applied in column order.
  const KeyRank full = KthLargestKey(keys, n, nf, Guess{}, scratch);
  const uint32_t tf = full.key;
  size_t full_ties = nf - full.above;
  for (size_t i = 0; i < count; ++i) {
    const uint32_t key = keys[ids[i]];
    const bool tie = key == tf && full_ties != 0;
    full_ties -= tie ? 1 : 0;
    tiers[i] = key > tf || tie ? Tier::kFull : Tier::kLossy;
  }
  return count;
}

// --- Element rows: one streaming pass (RowOnePass) ---
//
// Rows of one batch look alike, so the rows before predict where a row's cut lies (the model:
// the key with about `aim` keys at or above it, aim = k exact or k + window / 2
// approximate; the density of keys there; and how far the prediction has been off lately).
// One pass over the row (simd::ThresholdEmit) computes the keys in registers and compacts the
// ids, values and bitmap bits of every entry at or above a floor t0, a margin below the
// prediction (at least two binomial standard deviations of the count, more when the
// prediction has been missing). If that took at least k entries, every key at or above the
// row's exact k-th largest T is among these ~k candidates, and the rest of the work runs on them
// alone, from the cache: their keys are recomputed from the values (simd::CandidateKeys), then
//  - exact: one count at the prediction (taken as CandidateKeys writes the keys) corrects it,
//    the keys of a band of kExactBand counts either side of the corrected estimate are
//    filtered out (simd::FilterRange), and when T is among them the exact step (KthLargestKey)
//    runs on the band alone; a band that missed hands the exact step the bracket its counts
//    verify. Either way it gives T and its tie quota: the same cut as SelectRowFast, bit for
//    bit;
//  - kApproximate: a false-position search on counts (simd::CountAbove) stops at any t with
//    k <= #(key >= t) <= k + window, and the row keeps every key >= t: exactly its top count,
//    everything above T among them.
// The candidates outside the cut are dropped (simd::KeepCut) and their bitmap bits cleared.
// An approximate search the probes do not finish within kMaxProbes (many ties at the cut, or
// ties straddling the window) ends in the exact step on the candidates, with the window as its
// early stop. The first row (of a thread's rows, exact; of a fixed chunk of rows, approximate) and
// a pass that took fewer than k (the margin missed) or met a non-finite value take
// SelectRowFast's three passes instead, which also re-seed the model. Exact rows give the same
// output on either path; approximate ones depend on the rows of their chunk alone, never on the
// thread count.

// Clears the bits of the ascending ids[0, count) in the bitmap `bits` (n columns). A few (the
// usual few dozen dropped candidates) go one by one; many (a tie group dropped) are gathered
// per byte first, so that each byte is written once.
void ClearBits(const uint32_t* ids, size_t count, size_t n, uint8_t* bits) {
  if (count * 32 <= n) {
    for (size_t i = 0; i < count; ++i)
      bits[ids[i] / 8] &= static_cast<uint8_t>(~(1u << (ids[i] % 8)));
    return;
  }
  size_t i = 0;
  while (i < count) {
    const size_t byte = ids[i] / 8;
    unsigned mask = 0;
    for (; i < count && ids[i] / 8 == byte; ++i) mask |= 1u << (ids[i] % 8);
    bits[byte] &= static_cast<uint8_t>(~mask);
  }
}

// A key position of the model, within the keys' range (a far-off estimate from a row of ties
// or a tiny density would not fit a key).
double ClampKey(double key) { return std::clamp(key, 0.0, static_cast<double>(kInfKey)); }

// The model from a row routed by SelectRowFast: its keys and the cut key it found (`cut`,
// with count(>= cut) = kept).
void SeedModel(const uint32_t* keys, size_t n, uint32_t cut, double aim, SelectScratch& scratch) {
  const auto count_at_least = [&](uint32_t t) {
    return t == 0 ? n : simd::CountAbove(keys, n, t - 1);
  };
  if (scratch.model_ready) {  // the missed prediction still teaches the error
    const auto center = static_cast<uint32_t>(scratch.model_center);
    const double miss = std::fabs(static_cast<double>(count_at_least(center)) - aim);
    scratch.model_error = 0.7 * scratch.model_error + 0.3 * miss;
  }
  // The density: widen [cut - delta, cut) until it holds a few keys (a 256th of an octave first;
  // keys are float bits, so 2^23 key units make an octave).
  const size_t at_cut = count_at_least(cut);
  double density = 0;
  for (uint32_t delta = 1u << 15;; delta <<= 2) {
    const uint32_t lo = cut > delta ? cut - delta : 0;
    const size_t gained = count_at_least(lo) - at_cut;
    if (gained >= 8 || lo == 0 || delta >= (1u << 25)) {
      density = static_cast<double>(std::max<size_t>(gained, 1)) / std::max(1.0, double(cut - lo));
      break;
    }
  }
  // Ties at the cut: the cut itself is where the count passes aim.
  const size_t above_cut = cut == kInfKey ? 0 : count_at_least(cut + 1);
  const bool aim_in_ties =
      static_cast<double>(above_cut) <= aim && aim <= static_cast<double>(at_cut);
  scratch.model_center = ClampKey(
      aim_in_ties ? cut : static_cast<double>(cut) + (static_cast<double>(at_cut) - aim) / density);
  scratch.model_density = density;
  if (!scratch.model_ready) scratch.model_error = 0;
  scratch.model_ready = true;
}

// One row by the one-pass path when the model allows (see above): exactly k entries with
// window == 0 (the same output as SelectRowFast's exact cut, bit for bit), else between k and
// k + window as SelectRowFast with `window`. Same outputs as SelectRowFast; `w` is the
// kSensitivity weights (or null) and `finite` gets whether the row's values were all finite.
size_t RowOnePass(const float* row, const float* w, size_t n, size_t k, double keep_full,
                  size_t window, SelectScratch& scratch, uint32_t* ids, float* values, Tier* tiers,
                  uint8_t* bitmap, bool* finite) {
  const bool exact = window == 0;
  const double aim = static_cast<double>(k) + static_cast<double>(window) / 2.0;
  const auto three_pass = [&] {
    GrowTo(scratch.row_keys, n);
    uint32_t* keys = scratch.row_keys.data();
    *finite = simd::MagnitudeKeys(row, w, n, keys);
    const size_t count =
        SelectRowFast(keys, row, n, k, keep_full, window, scratch, ids, values, tiers, bitmap);
    // SelectRowFast's cut key (the k-th largest, or where an approximate search stopped).
    if (k > 0) SeedModel(keys, n, scratch.last_key, aim, scratch);
    return count;
  };
  if (!scratch.model_ready || k == 0) return three_pass();

  // The pass: everything at or above t0, a safe margin below the prediction (in counts: at
  // least two binomial standard deviations, kept for the rows of one n and k).
  if (scratch.spread_n != n || scratch.spread_k != k) {
    const double kd = static_cast<double>(k);
    scratch.spread = std::sqrt(kd * (1.0 - kd / static_cast<double>(n)));
    scratch.spread_n = n;
    scratch.spread_k = k;
  }
  const double margin = std::max(2.0 * scratch.spread, 3.75 * scratch.model_error) + 2.0;
  const double per_count = 1.0 / scratch.model_density;  // key units per key near the cut
  const double t0_key = scratch.model_center - margin * per_count;
  const uint32_t t0 = t0_key <= 0 ? 0u : static_cast<uint32_t>(std::min(t0_key, double(kInfKey)));
  GrowTo(scratch.emit_ids, n + simd::kSlack);
  GrowTo(scratch.emit_values, n + simd::kSlack);
  // The candidates go to the thread's scratch (in L1 for rows up to a few thousand columns),
  // and only the kept ones to the output.
  const uint32_t* cand_ids = scratch.emit_ids.data();
  const float* cand_values = scratch.emit_values.data();
  size_t m = 0;
  *finite = simd::ThresholdEmit(row, w, n, t0, scratch.emit_ids.data(), scratch.emit_values.data(),
                                bitmap, &m);
  // Fewer than k at or above t0: the k-th largest key is below t0, the margin missed. A row
  // with a non-finite value (rejected by the caller, or scored 0 under kTreatAsZero) is
  // left to the three passes, which score it.
  if (m < k || !*finite) return three_pass();

  GrowTo(scratch.approx_keys, n + simd::kSlack);
  uint32_t* keys = scratch.approx_keys.data();
  // The search's first count is at the prediction, counted as the keys are written.
  const double first_key = std::clamp(std::floor(scratch.model_center + 0.5),
                                      std::min(double(t0) + 1, double(kInfKey)), double(kInfKey));
  const size_t first_count =
      simd::CandidateKeys(cand_ids, cand_values, m, w, keys, static_cast<uint32_t>(first_key));
  // The cut among the candidates, as EmitKept applies it: keys > t, and keys == t before
  // candidate tie_end. Every key >= t0 is a candidate, so counts among them are counts in the
  // row from t0 up.
  // kApproximate: a false-position search on counts among the candidates (each probe one short
  // vector count) ends at a key t with k <= count(>= t) <= k + window. Exact: one count, then the
  // exact step (KthLargestKey) from a bracket around the corrected estimate (below); at most
  // kExactBracket candidates go to the exact step whole.
  const auto count_at_least = [&](uint32_t key) {
    if (key == static_cast<uint32_t>(first_key)) return first_count;
    return key == 0 ? m : simd::CountAbove(keys, m, key - 1);
  };
  const double target = exact ? static_cast<double>(k) - 0.5 : aim;
  // lo side: count(>= lo_t) = lo_c, above the window (exact: >= k); hi side: below k.
  double lo_t = t0, lo_c = static_cast<double>(m);
  double hi_t = static_cast<double>(kInfKey) + 1.0, hi_c = 0;
  bool hi_bounded = false;
  uint32_t found_at = t0;  // kApproximate: the key found
  size_t c = m;
  bool found = exact ? static_cast<double>(m) <= kExactBracket : m <= k + window;
  // A probe's count moves one end of the bracket (side +1: the lower end, -1: the upper), or
  // ends the search.
  const auto take_probe = [&](double key, size_t count) {
    if (!exact && count >= k && count <= k + window) {
      if (!found || std::fabs(double(count) - aim) < std::fabs(double(c) - aim)) {
        found_at = static_cast<uint32_t>(key);
        c = count;
      }
      found = true;
      return 0;
    }
    if (exact ? count >= k : count > k + window) {
      if (key > lo_t) {
        lo_t = key;
        lo_c = static_cast<double>(count);
      }
      return 1;
    }
    if (key < hi_t) {
      hi_t = key;
      hi_c = static_cast<double>(count);
      hi_bounded = true;
    }
    return -1;
  };
  // The exact cut: one count at the prediction puts T near center + (count - target) *
  // per_count; the keys of a band of about kExactBand counts either side of that are filtered
  // out, and when T is among them (the counts above and in the band say so), the exact step
  // runs on the band alone. A band that missed (a tie group at the cut, or a density that
  // changed) still bounds T from one side: below it, the first key below the band is tried
  // (on rows of ties it is T); otherwise the exact step starts from the bracket so verified.
  KeyRank band_cut;
  bool band_hit = false;
  if (!found && exact && lo_t + 1 <= kInfKey) {
    const double center = first_key;  // the prediction, at or above lo_t + 1 = t0 + 1
    const size_t count = first_count;
    const double count_d = static_cast<double>(count);
    scratch.model_error = 0.7 * scratch.model_error + 0.3 * std::fabs(count_d - target);
    take_probe(center, count);
    const double estimate = center + (count_d - target) * per_count;
    const double half = kExactBand * per_count;
    const double top = std::min(hi_t - 1, static_cast<double>(kInfKey));
    const auto band_lo = static_cast<uint32_t>(std::clamp(std::floor(estimate - half), lo_t, top));
    const auto band_hi = static_cast<uint32_t>(std::clamp(std::ceil(estimate + half), lo_t, top));
    GrowTo(scratch.band_keys, m + simd::kSlack);
    size_t over = 0;  // keys above the band
    const size_t in_band =
        simd::FilterRange(keys, m, band_lo, band_hi, scratch.band_keys.data(), &over);
    if (over < k && k <= over + in_band) {
      band_cut = KthLargestKey(scratch.band_keys.data(), in_band, k - over, Guess{}, scratch);
      band_cut.above += over;  // every key equal to T is in the band: its ties are the row's
      band_hit = true;
      found = true;
    } else {
      // The exact step from the bracket these counts verify (more single probes first cost
      // more on rows of ties: BM_RouteTies/2/1 1.72 against 1.44 ms).
      take_probe(static_cast<double>(band_hi) + 1, over);
      take_probe(band_lo, over + in_band);
      // On rows of ties T is often the first key beyond the band: below it (count(>= band_lo)
      // < k), the largest key below band_lo when its count reaches k; above it (count(>
      // band_hi) >= k), the smallest key above band_hi when the count above that key stays
      // under k. Either way no key lies between that key and the band, so two counts give T,
      // the keys above it and its ties.
      const size_t at_lo = over + in_band;
      uint32_t next = 0;
      if (at_lo < k && simd::MaxBelow(keys, m, band_lo, &next)) {
        const size_t at_next = count_at_least(next);
        if (at_next >= k) {
          band_cut = KeyRank{.key = next, .above = at_lo, .ties = at_next - at_lo};
          band_hit = true;
        } else {
          take_probe(next, at_next);
        }
      } else if (over >= k && simd::MinAbove(keys, m, band_hi, &next)) {
        const size_t past_next = next == kInfKey ? 0 : count_at_least(next + 1);
        if (past_next < k) {
          band_cut = KeyRank{.key = next, .above = past_next, .ties = over - past_next};
          band_hit = true;
        } else {
          take_probe(static_cast<double>(next) + 1, past_next);
        }
      }
      found = true;
    }
  }
  int last_side = 0;  // which end the last probe moved
  int run = 0;        // how many probes in a row moved it (two: bisect, false position stalls)
  int stalls = 0;     // probes whose count equalled an end's: a tie group or a gap spans it
  for (int probe = 0; !found && probe < kMaxProbes && stalls < 2; ++probe) {
    if (hi_t - lo_t < 2) {  // no key strictly between lo and hi
      found = exact;        // exact: T = lo_t; approximate: ties straddle the window
      break;
    }
    double next;
    if (probe == 0 && !exact) {
      next = scratch.model_center;
    } else if (!hi_bounded || run >= 2) {
      next = hi_bounded ? (lo_t + hi_t) / 2 : lo_t + (lo_c - target) * per_count;
    } else {
      next = lo_t + (lo_c - target) / (lo_c - hi_c) * (hi_t - lo_t);
    }
    next = std::clamp(std::floor(next + 0.5), lo_t + 1, hi_t - 1);
    const size_t count = count_at_least(static_cast<uint32_t>(next));
    const auto count_d = static_cast<double>(count);
    stalls += hi_bounded && (count_d == lo_c || count_d == hi_c) ? 1 : 0;
    if (probe == 0 && !exact) {
      scratch.model_error =
          0.7 * scratch.model_error + 0.3 * std::fabs(static_cast<double>(count) - target);
    }
    const int side = take_probe(next, count);
    run = side == last_side ? run + 1 : 1;
    last_side = side;
  }
  // The cut among the candidates, as EmitKept applies it: keys > t, and keys == t before
  // candidate tie_end; `edge` is the least key kept.
  uint32_t t = 0;
  size_t tie_end = 0;
  uint32_t edge = 0;
  if (found && !exact) {
    // Every key >= found_at: above found_at - 1 with no ties (found_at = 0: everything).
    t = found_at == 0 ? 0 : found_at - 1;
    tie_end = found_at == 0 ? m : 0;
    edge = found_at;
  } else {
    // The exact step (done on the band already when it held T): from [lo_t, hi_t - 1], which
    // holds T (hi unbounded: up to the largest key). It also ends an approximate search the
    // probes did not finish (many ties at the cut, or ties straddling the window): with the
    // window it may stop early, keeping every key >= its floor (between k and k + window - 1
    // of them).
    const Guess bracket{true, static_cast<uint32_t>(lo_t),
                        static_cast<uint32_t>(std::min(hi_t - 1, double(kInfKey)))};
    const KeyRank cut = band_hit ? band_cut : KthLargestKey(keys, m, k, bracket, scratch, window);
    const EmitCut emit = EmitCutOf(cut, keys, m, k);
    t = emit.t;
    tie_end = emit.tie_end;
    c = emit.count;
    edge = cut.key;
  }

  // The model for the next row: the key where this row's count would be aim, with the density
  // between t0 and that key (a wide base, so a steady estimate).
  if (edge > t0 && m > c) {
    const double density = static_cast<double>(m - c) / static_cast<double>(edge - t0);
    scratch.model_density = 0.5 * scratch.model_density + 0.5 * density;
  }
  const double estimate =
      ClampKey(static_cast<double>(edge) + (static_cast<double>(c) - aim) / scratch.model_density);
  scratch.model_center = 0.5 * scratch.model_center + 0.5 * estimate;

  const size_t nf = FullCount(c, keep_full);
  const bool tiered = nf != c && nf != 0;  // the kept keys are needed for the second cut
  // The kept candidates to the output, and the bitmap bits of the others cleared.
  GrowTo(scratch.dropped, m + simd::kSlack);
  size_t num_dropped = 0;
  [[maybe_unused]] const size_t kept =
      simd::KeepCut(keys, cand_ids, cand_values, m, t, tie_end, tiered, ids, values,
                    scratch.dropped.data(), &num_dropped);
  SPARSELINK_DCHECK(kept == c);
  if (bitmap != nullptr) ClearBits(scratch.dropped.data(), num_dropped, n, bitmap);
  if (!tiered) {
    std::fill_n(tiers, c, nf == 0 ? Tier::kLossy : Tier::kFull);
    return c;
  }
  // The nf best of the kept are the nf best of the row, found among the kept keys.
  const KeyRank full = KthLargestKey(keys, c, nf, Guess{}, scratch);
  size_t full_ties = nf - full.above;
  for (size_t i = 0; i < c; ++i) {
    const bool tie = keys[i] == full.key && full_ties != 0;
    full_ties -= tie ? 1 : 0;
    tiers[i] = keys[i] > full.key || tie ? Tier::kFull : Tier::kLossy;
  }
  return c;
}

// Fills rest_bits and rest_centroids of `out` (whose index set is complete) from `activation`.
void FillSign1Rest(ConstMatrix activation, bool parallel, RoutedTensor* out) {
  const size_t rows = activation.rows;
  const size_t cols = activation.cols;
  out->rest_centroids.resize(2 * rows);
#pragma omp parallel for schedule(static) if (parallel)
  for (size_t r = 0; r < rows; ++r) {
    const float* row = activation.Row(r);
    const std::span<const uint32_t> kept = out->RowIndices(r);
    double positive_sum = 0;
    double other_sum = 0;
    size_t positive_count = 0;
    size_t other_count = 0;
    size_t next = 0;
    for (size_t c = 0; c < cols; ++c) {
      if (next < kept.size() && kept[next] == c) {
        ++next;
        continue;
      }
      const float v = SafeValue(row[c]);
      if (v > 0) {
        positive_sum += v;
        ++positive_count;
      } else {
        other_sum += v;
        ++other_count;
      }
    }
    out->rest_centroids[2 * r] =
        positive_count ? static_cast<float>(positive_sum / static_cast<double>(positive_count))
                       : 0.0f;
    out->rest_centroids[2 * r + 1] =
        other_count ? static_cast<float>(other_sum / static_cast<double>(other_count)) : 0.0f;
  }

  const size_t rest_entries = rows * cols - out->num_kept();
  out->rest_bits.assign((rest_entries + 7) / 8, 0);
  size_t bit = 0;
  for (size_t r = 0; r < rows; ++r) {
    const float* row = activation.Row(r);
    const std::span<const uint32_t> kept = out->RowIndices(r);
    size_t next = 0;
    for (size_t c = 0; c < cols; ++c) {
      if (next < kept.size() && kept[next] == c) {
        ++next;
        continue;
      }
      if (SafeValue(row[c]) > 0) out->rest_bits[bit / 8] |= static_cast<uint8_t>(1u << (bit % 8));
      ++bit;
    }
  }
}

// kApproximate by the one-pass path (RowOnePass). Rows go in fixed chunks of
// kApproxRowChunk (the model starts afresh in each), and each thread takes a contiguous run of
// chunks and writes its rows back to back from the start of its own region of the output; a
// region has room for its rows at k + window entries each plus the slack of the last one's
// whole-vector stores.
// After a barrier each region moves down to its final place (the first one is there already;
// see the comment at the move), so a single thread moves nothing, and the output does not
// depend on the thread count.
// Returns whether every activation was finite.
bool RouteElementsOnePass(ConstMatrix activation, const float* weight, const Contract& contract,
                          size_t window, bool parallel, RoutedTensor* out,
                          std::vector<uint8_t>* bitmap, AbsSumRows& sums) {
  const size_t rows = activation.rows;
  const size_t cols = activation.cols;
  const size_t k = KeptCount(cols, contract.keep);
  const size_t slot = k + window;
  const size_t spare = simd::kSlack;  // what a row may write past its kept entries
  const size_t max_threads = parallel ? static_cast<size_t>(std::max(1, omp_get_max_threads())) : 1;
  const size_t capacity = rows * slot + max_threads * spare;
  out->indices.resize(capacity);
  out->values.resize(capacity);
  out->tiers.resize(capacity);
  out->row_offsets.resize(rows + 1);
  const bool with_bitmap = bitmap != nullptr && cols % 8 == 0;
  if (bitmap != nullptr) bitmap->resize(with_bitmap ? rows * cols / 8 : 0);
  const size_t num_chunks = (rows + kApproxRowChunk - 1) / kApproxRowChunk;
  std::vector<size_t> region_start(max_threads + 1, 0);  // where each region was written
  std::vector<size_t> region_size(max_threads, 0);       // entries it holds
  bool all_finite = true;
#pragma omp parallel if (parallel) reduction(&& : all_finite)
  {
    const auto threads = static_cast<size_t>(omp_get_num_threads());
    const auto me = static_cast<size_t>(omp_get_thread_num());
    const size_t row_begin = std::min(rows, me * num_chunks / threads * kApproxRowChunk);
    const size_t row_end = std::min(rows, (me + 1) * num_chunks / threads * kApproxRowChunk);
    const size_t base = row_begin * slot + me * spare;
    SelectScratch& scratch = ThreadScratch();
    size_t cursor = base;
    for (size_t r = row_begin; r < row_end; ++r) {
      if ((r - row_begin) % kApproxRowChunk == 0) {  // a chunk starts: a fresh model
        scratch.last_n = 0;
        scratch.guess_width = kInitialGuessWidth;
        scratch.model_ready = false;
      }
      sums.Add(r, activation.Row(r));
      bool finite = true;
      const size_t count = RowOnePass(
          activation.Row(r), weight, cols, k, contract.keep_full, window, scratch,
          out->indices.data() + cursor, out->values.data() + cursor, out->tiers.data() + cursor,
          with_bitmap ? bitmap->data() + r * cols / 8 : nullptr, &finite);
      all_finite = finite && all_finite;
      out->row_offsets[r] = static_cast<uint32_t>(count);  // the count, until the barrier
      cursor += count;
    }
    region_start[me] = base;
    region_size[me] = cursor - base;
#pragma omp barrier
    // Region j goes to the sum of the sizes before it. It may move down in place, in parallel
    // with the others, when its destination starts past the end of region j - 1's source (the
    // only source it could overlap; always so for the second region, never for later ones,
    // whose destinations fall behind by at least a region's slack each); the other regions are
    // first copied out to their thread's scratch and, after a barrier, copied in.
    std::vector<size_t> offset(threads + 1, 0);
    for (size_t j = 0; j < threads; ++j) offset[j + 1] = offset[j] + region_size[j];
    const size_t from = region_start[me];
    const size_t to = offset[me];
    const size_t n = region_size[me];
    const bool in_place = me == 0 || to >= region_start[me - 1] + region_size[me - 1];
    const bool moves = n != 0 && to != from;
    size_t pos = to;
    for (size_t r = row_begin; r < row_end; ++r) {
      const size_t count = out->row_offsets[r];
      out->row_offsets[r] = static_cast<uint32_t>(pos);
      pos += count;
    }
    const auto copy = [n](const auto* source, auto* destination) {
      std::copy(source, source + n, destination);  // downwards or disjoint
    };
    if (moves && in_place) {
      copy(out->indices.data() + from, out->indices.data() + to);
      copy(out->values.data() + from, out->values.data() + to);
      copy(out->tiers.data() + from, out->tiers.data() + to);
    } else if (moves) {
      GrowTo(scratch.moved_ids, n);
      GrowTo(scratch.moved_values, n);
      GrowTo(scratch.moved_tiers, n);
      copy(out->indices.data() + from, scratch.moved_ids.data());
      copy(out->values.data() + from, scratch.moved_values.data());
      copy(out->tiers.data() + from, scratch.moved_tiers.data());
    }
#pragma omp barrier
    if (moves && !in_place) {
      copy(scratch.moved_ids.data(), out->indices.data() + to);
      copy(scratch.moved_values.data(), out->values.data() + to);
      copy(scratch.moved_tiers.data(), out->tiers.data() + to);
    }
    if (me == 0) out->row_offsets[rows] = static_cast<uint32_t>(offset[threads]);
    sums.Finish();
  }
  const size_t total = out->row_offsets[rows];
  out->indices.resize(total);
  out->values.resize(total);
  out->tiers.resize(total);
  return all_finite;
}

// Returns whether every activation was finite (the caller's non-finite check, fused into the
// scoring pass).
bool RouteElements(ConstMatrix activation, const Scorer& scorer, const Contract& contract,
                   SelectMethod method, double tolerance, bool parallel, RoutedTensor* out,
                   std::vector<uint8_t>* bitmap, AbsSumRows& sums) {
  const size_t rows = activation.rows;
  const size_t cols = activation.cols;
  const size_t k = KeptCount(cols, contract.keep);
  const size_t nf = FullCount(k, contract.keep_full);
  // kApproximate rows keep up to k + window entries: each row fills a slot of that size, and
  // the slots are closed up after the parallel loop.
  const bool approximate = method == SelectMethod::kApproximate;
  const size_t window = approximate ? static_cast<size_t>(std::floor(tolerance * double(k))) : 0;
  // The one-pass path needs keys it can compute in registers (not kRandom's hashes) and a
  // window wide enough for a threshold to land in.
  if (approximate && scorer.policy != ScorePolicy::kRandom && window >= kMinOnePassWindow &&
      k * kOnePassMaxKeptShare <= cols) {
    const float* weight = scorer.policy == ScorePolicy::kSensitivity ? scorer.weight : nullptr;
    return RouteElementsOnePass(activation, weight, contract, window, parallel, out, bitmap, sums);
  }
  const size_t slot = k + window;
  std::vector<uint32_t> counts(approximate ? rows : 0);
  out->row_offsets.resize(rows + 1);
  for (size_t r = 0; r <= rows; ++r) out->row_offsets[r] = static_cast<uint32_t>(r * k);
  out->indices.resize(rows * slot);
  out->values.resize(rows * slot);
  out->tiers.resize(rows * slot);
  // Rows start on byte boundaries when cols % 8 == 0: then each writes its own bitmap bytes.
  const bool with_bitmap = bitmap != nullptr && method != SelectMethod::kReference && cols % 8 == 0;
  if (bitmap != nullptr) bitmap->resize(with_bitmap ? rows * cols / 8 : 0);
  bool all_finite = true;
  // Rows go in fixed chunks; within a chunk each row's search starts from the previous row's
  // cut (SelectRowFast's guess), and every chunk starts afresh, so that where an approximate
  // search stops depends on the rows alone, never on which thread ran the chunk before.
  const size_t num_chunks = (rows + kRowChunk - 1) / kRowChunk;
  // Exact rows under |a|-based scores take the one-pass path; its model is carried over all of a
  // thread's rows, as it only changes what a row costs, never what it keeps.
  const bool one_pass = method == SelectMethod::kFast && scorer.policy != ScorePolicy::kRandom &&
                        cols >= kExactOnePassMinCols && k * kOnePassMaxKeptShare <= cols;
  const float* weight = scorer.policy == ScorePolicy::kSensitivity ? scorer.weight : nullptr;
#pragma omp parallel if (parallel) reduction(&& : all_finite)
  {
    SelectScratch& scratch = ThreadScratch();
    scratch.model_ready = false;
    if (one_pass) {
      GrowTo(scratch.kept_ids, k + simd::kSlack);
      GrowTo(scratch.kept_values, k + simd::kSlack);
    }
#pragma omp for schedule(static)
    for (size_t chunk = 0; chunk < num_chunks; ++chunk) {
      GrowTo(scratch.row_keys, cols);
      scratch.last_n = 0;  // no guess for the chunk's first row
      scratch.guess_width = kInitialGuessWidth;
      for (size_t r = chunk * kRowChunk; r < std::min(rows, (chunk + 1) * kRowChunk); ++r) {
        const float* row = activation.Row(r);
        sums.Add(r, row);
        uint32_t* ids = out->indices.data() + r * slot;
        float* values = out->values.data() + r * slot;
        Tier* tiers = out->tiers.data() + r * slot;
        if (one_pass) {
          // Whole vectors are stored past a row's k entries (up to simd::kSlack), into the next
          // rows' slots: harmless while this thread writes those rows next (same chunk); a row
          // closer to its chunk's end is staged.
          const size_t chunk_end = std::min(rows, (chunk + 1) * kRowChunk);
          const bool staged = (chunk_end - r - 1) * k < simd::kSlack;
          bool finite = true;
          RowOnePass(row, weight, cols, k, contract.keep_full, 0, scratch,
                     staged ? scratch.kept_ids.data() : ids,
                     staged ? scratch.kept_values.data() : values, tiers,
                     with_bitmap ? bitmap->data() + r * cols / 8 : nullptr, &finite);
          if (staged) {
            std::copy_n(scratch.kept_ids.data(), k, ids);
            std::copy_n(scratch.kept_values.data(), k, values);
          }
          all_finite = finite && all_finite;
          continue;
        }
        uint32_t* keys = scratch.row_keys.data();
        all_finite = scorer.KeyRange(row, r, 0, cols, keys) && all_finite;
        if (method != SelectMethod::kReference) {
          const size_t count =
              SelectRowFast(keys, row, cols, k, contract.keep_full, window, scratch, ids, values,
                            tiers, with_bitmap ? bitmap->data() + r * cols / 8 : nullptr);
          if (approximate) counts[r] = static_cast<uint32_t>(count);
          continue;
        }
        GrowTo(scratch.score, cols);
        for (size_t c = 0; c < cols; ++c) scratch.score[c] = KeyScore(keys[c]);
        SelectTop(scratch.score.data(), cols, k, nf, scratch.order, ids, tiers);
        for (size_t i = 0; i < k; ++i) values[i] = SafeValue(row[ids[i]]);
      }
    }
    sums.Finish();
  }
  if (approximate) {  // close up the slots (row r moves down, never past its own slot)
    size_t pos = 0;
    for (size_t r = 0; r < rows; ++r) {
      out->row_offsets[r] = static_cast<uint32_t>(pos);
      const size_t from = r * slot;
      if (pos != from) {  // pos < from: std::copy may move down over its own source
        std::copy_n(out->indices.begin() + from, counts[r], out->indices.begin() + pos);
        std::copy_n(out->values.begin() + from, counts[r], out->values.begin() + pos);
        std::copy_n(out->tiers.begin() + from, counts[r], out->tiers.begin() + pos);
      }
      pos += counts[r];
    }
    out->row_offsets[rows] = static_cast<uint32_t>(pos);
    out->indices.resize(pos);
    out->values.resize(pos);
    out->tiers.resize(pos);
  }
  return all_finite;
}

void RouteUnits(ConstMatrix activation, const Scorer& scorer, const Contract& contract,
                size_t block, SelectMethod method, bool parallel, RoutedTensor* out) {
  const size_t rows = activation.rows;
  const size_t cols = activation.cols;
  const size_t num_units = (cols + block - 1) / block;

  std::vector<double> column_sum(cols, 0.0);
  const size_t num_chunks = (cols + kColumnChunk - 1) / kColumnChunk;
#pragma omp parallel if (parallel)
  {
    std::array<uint32_t, kColumnChunk> key{};
#pragma omp for schedule(static)
    for (size_t chunk = 0; chunk < num_chunks; ++chunk) {
      const size_t c0 = chunk * kColumnChunk;
      const size_t c1 = std::min(cols, c0 + kColumnChunk);
      for (size_t r = 0; r < rows; ++r) {
        scorer.KeyRange(activation.Row(r), r, c0, c1, key.data());
        for (size_t c = c0; c < c1; ++c) column_sum[c] += KeyScore(key[c - c0]);
      }
    }
  }
  std::vector<double> unit_score(num_units, 0.0);
  for (size_t c = 0; c < cols; ++c) unit_score[c / block] += column_sum[c];

  const size_t k = KeptCount(num_units, contract.keep);
  const size_t nf = FullCount(k, contract.keep_full);
  std::vector<uint32_t> units(k);
  std::vector<Tier> unit_tiers(k);
  Select(method, unit_score.data(), num_units, k, nf, ThreadScratch(), units.data(),
         unit_tiers.data());

  out->indices.clear();
  std::vector<Tier> column_tiers;
  for (size_t i = 0; i < k; ++i) {
    const size_t c_end = std::min(cols, (size_t{units[i]} + 1) * block);
    for (size_t c = size_t{units[i]} * block; c < c_end; ++c) {
      out->indices.push_back(static_cast<uint32_t>(c));
      column_tiers.push_back(unit_tiers[i]);
    }
  }
  const size_t n = out->indices.size();
  out->row_offsets.assign({0u, static_cast<uint32_t>(n)});
  out->values.resize(rows * n);
  out->tiers.resize(rows * n);
#pragma omp parallel for schedule(static) if (parallel)
  for (size_t r = 0; r < rows; ++r) {
    const float* row = activation.Row(r);
    for (size_t i = 0; i < n; ++i) {
      out->values[r * n + i] = SafeValue(row[out->indices[i]]);
      out->tiers[r * n + i] = column_tiers[i];
    }
  }
}

std::string MustEqual(std::string_view what, uint64_t value) {
  std::ostringstream why;
  why << "must equal " << what << " = " << value;
  return why.str();
}

// Checks that the buffer named `field` (rows x cols, has_data) matches the shape of `want` (a
// RoutedTensor or a KeptMask), named `want_name` in the error.
template <typename Shape>
Status CheckShape(std::string_view field, size_t rows, size_t cols, bool has_data,
                  const Shape& want, std::string_view want_name) {
  const std::string f(field);
  const std::string wn(want_name);
  if (!has_data) {
    return Status(ErrorCode::kInvalidArgument, f + ".data = null: no buffer given");
  }
  if (rows != want.rows) {
    return FieldError(ErrorCode::kShapeMismatch, f + ".rows", rows,
                      MustEqual(wn + ".rows", want.rows));
  }
  if (cols != want.cols) {
    return FieldError(ErrorCode::kShapeMismatch, f + ".cols", cols,
                      MustEqual(wn + ".cols", want.cols));
  }
  return Status::Ok();
}

// Position in `values` of row r's first kept entry, and of its first rest bit.
size_t KeptBeforeRow(const RoutedTensor& t, size_t r) {
  return t.granularity == Granularity::kUnit ? r * t.indices.size() : t.row_offsets[r];
}

}  // namespace

std::string_view SelectMethodName(SelectMethod m) {
  switch (m) {
    case SelectMethod::kReference: return "reference";
    case SelectMethod::kFast: return "fast";
    case SelectMethod::kApproximate: return "approximate";
  }
  return "?";
}

std::string_view ScorePolicyName(ScorePolicy p) {
  const auto i = static_cast<size_t>(p);
  return i < kNumScorePolicies ? kScorePolicyNames[i] : "?";
}

Result<ScorePolicy> ParseScorePolicy(std::string_view name) {
  for (size_t i = 0; i < kNumScorePolicies; ++i) {
    if (kScorePolicyNames[i] == name) return static_cast<ScorePolicy>(i);
  }
  return FieldError(ErrorCode::kInvalidArgument, "score_policy", name,
                    "unknown score policy (one of sensitivity, magnitude, random)");
}

Result<Router> Router::Create(const RouterOptions& options) {
  if (!std::isfinite(options.eps) || options.eps < 0.0) {
    return FieldError(ErrorCode::kInvalidArgument, "router.eps", options.eps,
                      "must be finite and >= 0");
  }
  if (static_cast<size_t>(options.policy) >= kNumScorePolicies) {
    return FieldError(ErrorCode::kInvalidArgument, "router.policy", int(options.policy),
                      "unknown score policy");
  }
  if (options.non_finite != NonFinitePolicy::kReject &&
      options.non_finite != NonFinitePolicy::kTreatAsZero) {
    return FieldError(ErrorCode::kInvalidArgument, "router.non_finite", int(options.non_finite),
                      "unknown non-finite policy");
  }
  if (static_cast<size_t>(options.select) >= kNumSelectMethods) {
    return FieldError(ErrorCode::kInvalidArgument, "router.select", int(options.select),
                      "unknown select method");
  }
  if (options.parallel_min_entries == 0) {
    return FieldError(ErrorCode::kInvalidArgument, "router.parallel_min_entries", 0,
                      "must be >= 1");
  }
  if (!(options.approx_tolerance > 0.0 && options.approx_tolerance <= 1.0)) {
    return FieldError(ErrorCode::kInvalidArgument, "router.approx_tolerance",
                      options.approx_tolerance, "must be in (0, 1]");
  }
  return Router(options);
}

Status ColumnAbsSums(ConstMatrix a, std::vector<float>* sums, size_t parallel_min_entries) {
  if (sums == nullptr) return Status(ErrorCode::kInvalidArgument, "sums = null: no output given");
  SPARSELINK_RETURN_IF_ERROR(ValidateMatrix(a, "a", NonFinitePolicy::kTreatAsZero));
  thread_local std::vector<float> partials;
  AbsSumRows rows(sums, a.rows, a.cols, partials);
  const size_t blocks = (a.rows + kSumRows - 1) / kSumRows;
#pragma omp parallel if (a.size() >= parallel_min_entries)
  {
#pragma omp for schedule(static)
    for (size_t b = 0; b < blocks; ++b) {
      for (size_t r = b * kSumRows; r < std::min(a.rows, (b + 1) * kSumRows); ++r) {
        rows.Add(r, a.Row(r));
      }
    }
    rows.Finish();
  }
  return Status::Ok();
}

Status Router::Route(ConstMatrix activation, const SensitivityMap* map, const Contract& contract,
                     uint64_t step, RoutedTensor* out) const {
  return Route(activation, map, contract, step, out, RouteExtras{});
}

Status Router::Route(ConstMatrix activation, const SensitivityMap* map, const Contract& contract,
                     uint64_t step, RoutedTensor* out, const RouteExtras& extras) const {
  if (out == nullptr) return Status(ErrorCode::kInvalidArgument, "out = null: no output given");
  SPARSELINK_RETURN_IF_ERROR(contract.Validate());
  // The element rows check finiteness while they score (one pass less over the input); a
  // failure is then named by ValidateMatrix below.
  const bool unit = contract.granularity == Granularity::kUnit;
  const bool check_while_scoring = !unit && options_.non_finite == NonFinitePolicy::kReject;
  SPARSELINK_RETURN_IF_ERROR(
      ValidateMatrix(activation, "activation",
                     check_while_scoring ? NonFinitePolicy::kTreatAsZero : options_.non_finite));
  constexpr size_t kMaxDim = std::numeric_limits<uint32_t>::max();
  if (activation.rows > kMaxDim) {
    return FieldError(ErrorCode::kResourceExhausted, "activation.rows", activation.rows,
                      "must fit in 32 bits");
  }
  if (activation.cols > kMaxDim) {
    return FieldError(ErrorCode::kResourceExhausted, "activation.cols", activation.cols,
                      "must fit in 32 bits");
  }
  const bool sensitivity = options_.policy == ScorePolicy::kSensitivity;
  if (sensitivity) {
    if (map == nullptr) {
      return Status(ErrorCode::kInvalidArgument,
                    "map = null: score policy sensitivity needs a sensitivity map");
    }
    if (map->num_neurons() != activation.cols) {
      return FieldError(ErrorCode::kShapeMismatch, "map.num_neurons", map->num_neurons(),
                        MustEqual("activation.cols", activation.cols));
    }
  }
  if (!unit) {
    const size_t k = KeptCount(activation.cols, contract.keep);
    const size_t extra = options_.select == SelectMethod::kApproximate
                             ? static_cast<size_t>(options_.approx_tolerance * double(k))
                             : 0;
    const uint64_t kept = uint64_t{activation.rows} * (k + extra);
    if (kept > kMaxDim) {
      return FieldError(ErrorCode::kResourceExhausted, "kept entries", kept,
                        "must fit in 32 bits (row_offsets); route fewer rows at a time");
    }
  }

  // The caller's thread keeps the weights' buffer (one allocation per thread, not per call).
  thread_local std::vector<float> weight;
  if (sensitivity) {
    weight.resize(activation.cols);
    // Unit by unit (NeuronValue's division per column cost more than the rest of the loop).
    const std::span<const float> units = map->values();
    const size_t block = map->block();
    for (size_t u = 0, c = 0; u < units.size(); ++u) {
      // Clamped to FLT_MAX: an infinite weight would make 0 * w a NaN key.
      const auto w =
          static_cast<float>(std::min(options_.eps + static_cast<double>(units[u]),
                                      static_cast<double>(std::numeric_limits<float>::max())));
      for (const size_t end = std::min(c + block, activation.cols); c < end; ++c) weight[c] = w;
    }
  }
  const Scorer scorer{
      .policy = options_.policy, .seed = options_.seed, .step = step, .weight = weight.data()};
  const bool parallel = activation.size() >= options_.parallel_min_entries;

  out->rows = static_cast<uint32_t>(activation.rows);
  out->cols = static_cast<uint32_t>(activation.cols);
  out->granularity = contract.granularity;
  out->rest = contract.rest;
  // The element paths size the bitmap and write every byte of it (no zero fill needed); unit
  // granularity has none.
  std::vector<uint8_t>* bitmap = extras.bitmap;
  if (bitmap != nullptr && unit) bitmap->clear();
  thread_local std::vector<float> sum_partials;
  // Element rows take the sums as they go; unit granularity reads its columns in stripes, so it
  // takes them after (ColumnAbsSums, the same bits).
  AbsSumRows sums(unit ? nullptr : extras.column_abs_sums, activation.rows, activation.cols,
                  sum_partials);
  if (unit) {
    RouteUnits(activation, scorer, contract, sensitivity ? map->block() : 1, options_.select,
               parallel, out);
    if (extras.column_abs_sums != nullptr) {
      SPARSELINK_RETURN_IF_ERROR(
          ColumnAbsSums(activation, extras.column_abs_sums, options_.parallel_min_entries));
    }
  } else if (!RouteElements(activation, scorer, contract, options_.select,
                            options_.approx_tolerance, parallel, out, bitmap, sums) &&
             check_while_scoring) {
    const Status named = ValidateMatrix(activation, "activation", NonFinitePolicy::kReject);
    SPARSELINK_CHECK(!named.ok());
    return named;
  }
  if (contract.rest == RestPolicy::kSign1) {
    FillSign1Rest(activation, parallel, out);
  } else {
    out->rest_bits.clear();
    out->rest_centroids.clear();
  }
  return Status::Ok();
}

Result<RoutedTensor> Router::Route(ConstMatrix activation, const SensitivityMap* map,
                                   const Contract& contract, uint64_t step) const {
  RoutedTensor routed;
  SPARSELINK_RETURN_IF_ERROR(Route(activation, map, contract, step, &routed));
  return routed;
}

// Each row of `out` is rebuilt on its own. Without a rest tier: zero the row, then store the
// kept values at their columns. With kSign1: walk the gaps between kept columns; each gap
// column takes the centroid its rest bit names. Row r's rest bits start after the rest
// entries of the rows before it. No branch per column on the data.
Status Scatter(const RoutedTensor& routed, MutableMatrix out, size_t parallel_min_entries) {
  SPARSELINK_RETURN_IF_ERROR(routed.Validate());
  SPARSELINK_RETURN_IF_ERROR(
      CheckShape("out", out.rows, out.cols, out.data != nullptr, routed, "routed"));
  const size_t rows = routed.rows;
  const size_t cols = routed.cols;
  const bool sign1 = routed.rest == RestPolicy::kSign1;
#pragma omp parallel for schedule(static) if (rows * cols >= parallel_min_entries)
  for (size_t r = 0; r < rows; ++r) {
    float* row = out.Row(r);
    const std::span<const uint32_t> kept = routed.RowIndices(r);
    const float* values = routed.values.data() + KeptBeforeRow(routed, r);
    if (!sign1) {
      std::fill(row, row + cols, 0.0f);
      for (size_t i = 0; i < kept.size(); ++i) row[kept[i]] = values[i];
      continue;
    }
    const uint8_t* bits = routed.rest_bits.data();
    size_t bit = r * cols - KeptBeforeRow(routed, r);
    const float centroid[2] = {routed.rest_centroids[2 * r + 1], routed.rest_centroids[2 * r]};
    size_t c = 0;
    for (size_t i = 0; i <= kept.size(); ++i) {
      const size_t gap_end = i < kept.size() ? kept[i] : cols;
      for (; c < gap_end; ++c, ++bit) row[c] = centroid[(bits[bit / 8] >> (bit % 8)) & 1u];
      if (i < kept.size()) row[c++] = values[i];
    }
  }
  return Status::Ok();
}

// Names the first non-finite value of a gather (row r, column column(r, i) for the i-th kept
// entry of row r) under kReject, clearing `values`; else replaces each by 0.
template <typename Column>
Status ScreenGathered(size_t rows, std::span<const uint64_t> row_offsets, Column column,
                      NonFinitePolicy non_finite, std::vector<float>* values) {
  if (simd::AllFinite(values->data(), values->size())) return Status::Ok();
  for (size_t r = 0; r < rows; ++r) {
    for (uint64_t i = row_offsets[r]; i < row_offsets[r + 1]; ++i) {
      float& v = (*values)[i];
      if (std::isfinite(v)) continue;
      if (non_finite == NonFinitePolicy::kReject) {
        const float bad = v;
        values->clear();
        std::ostringstream name;
        name << "gradient[" << r << "][" << column(r, i - row_offsets[r]) << "]";
        return FieldError(ErrorCode::kNonFinite, name.str(), bad,
                          "must be finite (policy: reject)");
      }
      v = SafeValue(v);
    }
  }
  return Status::Ok();
}

Status GatherAtMask(const RoutedTensor& mask, ConstMatrix gradient, std::vector<float>* values,
                    NonFinitePolicy non_finite, size_t parallel_min_entries) {
  if (values == nullptr)
    return Status(ErrorCode::kInvalidArgument, "values = null: no output given");
  SPARSELINK_RETURN_IF_ERROR(mask.ValidateMask());
  SPARSELINK_RETURN_IF_ERROR(
      CheckShape("gradient", gradient.rows, gradient.cols, gradient.data != nullptr, mask, "mask"));
  values->resize(mask.num_kept());
  const size_t rows = mask.rows;
#pragma omp parallel for schedule(static) if (rows * mask.cols >= parallel_min_entries)
  for (size_t r = 0; r < rows; ++r) {
    const float* row = gradient.Row(r);
    float* out = values->data() + KeptBeforeRow(mask, r);
    const std::span<const uint32_t> kept = mask.RowIndices(r);
    for (size_t i = 0; i < kept.size(); ++i) out[i] = row[kept[i]];
  }
  if (simd::AllFinite(values->data(), values->size())) return Status::Ok();
  std::vector<uint64_t> offsets(rows + 1);
  for (size_t r = 0; r <= rows; ++r)
    offsets[r] = r < rows ? KeptBeforeRow(mask, r) : mask.num_kept();
  return ScreenGathered(
      rows, offsets, [&](size_t r, size_t i) { return mask.RowIndices(r)[i]; }, non_finite, values);
}

Status ScatterAtMask(const RoutedTensor& mask, std::span<const float> values, MutableMatrix out,
                     size_t parallel_min_entries) {
  SPARSELINK_RETURN_IF_ERROR(mask.ValidateMask());
  if (values.size() != mask.num_kept()) {
    return FieldError(ErrorCode::kShapeMismatch, "values.size()", values.size(),
                      MustEqual("mask.num_kept()", mask.num_kept()));
  }
  SPARSELINK_RETURN_IF_ERROR(
      CheckShape("out", out.rows, out.cols, out.data != nullptr, mask, "mask"));
  internal::ScatterRowsAtMask(mask, values.data(), out,
                              size_t{mask.rows} * mask.cols >= parallel_min_entries);
  return Status::Ok();
}

void internal::ScatterRowsAtMask(const RoutedTensor& mask, const float* values, MutableMatrix out,
                                 bool parallel) {
  const size_t rows = mask.rows;
  const size_t cols = mask.cols;
#pragma omp parallel for schedule(static) if (parallel)
  for (size_t r = 0; r < rows; ++r) {
    float* row = out.Row(r);
    std::fill(row, row + cols, 0.0f);
    const float* row_values = values + KeptBeforeRow(mask, r);
    const std::span<const uint32_t> kept = mask.RowIndices(r);
    for (size_t i = 0; i < kept.size(); ++i) row[kept[i]] = row_values[i];
  }
}

Status GatherAtMask(const KeptMask& mask, ConstMatrix gradient, std::vector<float>* values,
                    NonFinitePolicy non_finite, size_t parallel_min_entries) {
  if (values == nullptr)
    return Status(ErrorCode::kInvalidArgument, "values = null: no output given");
  SPARSELINK_RETURN_IF_ERROR(mask.Validate());
  SPARSELINK_RETURN_IF_ERROR(
      CheckShape("gradient", gradient.rows, gradient.cols, gradient.data != nullptr, mask, "mask"));
  return internal::GatherRowsAtMask(mask, gradient, values, non_finite,
                                    uint64_t{mask.rows} * mask.cols >= parallel_min_entries);
}

Status internal::GatherRowsAtMask(const KeptMask& mask, ConstMatrix gradient,
                                  std::vector<float>* values, NonFinitePolicy non_finite,
                                  bool parallel) {
  const uint64_t kept = mask.num_kept();
  const size_t rows = mask.rows;
  const size_t cols = mask.cols;
  values->resize(kept + simd::kSlack);  // GatherBits writes whole vectors
  // Each thread gathers its rows in place, but its last ones into a buffer of its own: whole
  // vectors written past a range's end would land on the next thread's first entries. (Ranges
  // end on multiples of 8 rows, except the last; 8 rows start on a whole bitmap byte.)
  internal::ForRowRanges(rows, parallel, [&](size_t first, size_t end) {
    if (first == end) return;
    const auto gather = [&](size_t from, size_t to, float* out) {
      const uint64_t start = from * uint64_t{cols} / 8;
      simd::GatherBits(mask.bits.data() + start, mask.bits.size() - start, to - from, cols,
                       gradient.Row(from), gradient.cols, out);
    };
    float* out = values->data();
    if (end == rows) {
      gather(first, end, out + mask.row_offsets[first]);
      return;
    }
    // The staged rows must hold at least kSlack entries, so that the direct part's spill
    // lands on them (rewritten from the buffer after): whole groups of 8 rows from the end.
    size_t staged = end - 8;
    while (staged > first && mask.row_offsets[end] - mask.row_offsets[staged] < simd::kSlack) {
      staged -= 8;
    }
    gather(first, staged, out + mask.row_offsets[first]);
    const uint64_t tail = mask.row_offsets[end] - mask.row_offsets[staged];
    thread_local std::vector<float> last;
    last.resize(tail + simd::kSlack);
    gather(staged, end, last.data());
    std::copy_n(last.data(), tail, out + mask.row_offsets[staged]);
  });
  values->resize(kept);
  // Name the first non-finite entry by its row and column, as the column-list form does.
  const auto column = [&](size_t r, size_t i) {
    for (size_t c = 0, seen = 0; c < cols; ++c) {
      const uint64_t b = r * uint64_t{cols} + c;
      if (((mask.bits[b / 8] >> (b % 8)) & 1u) != 0 && seen++ == i) return c;
    }
    return cols;  // not reached: row r has more than i set bits
  };
  return ScreenGathered(rows, mask.row_offsets, column, non_finite, values);
}

Status ScatterAtMask(const KeptMask& mask, std::span<const float> values, MutableMatrix out,
                     size_t parallel_min_entries) {
  SPARSELINK_RETURN_IF_ERROR(mask.Validate());
  if (values.size() != mask.num_kept()) {
    return FieldError(ErrorCode::kShapeMismatch, "values.size()", values.size(),
                      MustEqual("mask.num_kept()", mask.num_kept()));
  }
  SPARSELINK_RETURN_IF_ERROR(
      CheckShape("out", out.rows, out.cols, out.data != nullptr, mask, "mask"));
  // ScatterBits reads whole vectors of values: a copy with room after it.
  thread_local std::vector<float> padded;
  padded.resize(values.size() + simd::kSlack);
  std::copy(values.begin(), values.end(), padded.begin());
  const float* source = padded.data();  // the calling thread's copy, for every thread
  const size_t rows = mask.rows;
  const size_t cols = mask.cols;
  internal::ForRowRanges(rows, rows * cols >= parallel_min_entries, [&](size_t first, size_t end) {
    if (first == end) return;
    const uint64_t start = first * uint64_t{cols} / 8;
    simd::ScatterBits(mask.bits.data() + start, mask.bits.size() - start, end - first, cols,
                      source + mask.row_offsets[first], out.Row(first), out.cols);
  });
  return Status::Ok();
}

}  // namespace sparselink
