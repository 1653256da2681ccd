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
// Unit granularity selects once per batch over units (blocks of map->block() columns under
// kSensitivity, single columns otherwise). A unit's score is the sum of its entries' scores
// over the batch, accumulated in double in one fixed order (per column over the rows
// ascending, then over the unit's columns ascending), so it too is independent of the thread
// count. The kept units' columns, ascending, form the one index set every row shares.
#include <omp.h>

#include <algorithm>
#include <array>
#include <bit>
#include <limits>
#include <vector>

#include "routing/select.hpp"

namespace sparselink::internal {
namespace {

// Columns per task when summing unit scores: a row's slice of a chunk is 256 contiguous bytes.
constexpr size_t kColumnChunk = 64;

// The cut of a ranking at rank k: the k-th best score and how many entries scoring exactly
// that are taken (the lowest ids first).
struct Cut {
  double score = std::numeric_limits<double>::infinity();
  size_t ties = 0;  // 0 with score = +inf: nothing is taken
};

// Order-preserving integer key of a score: its IEEE bits without the sign. Scores are >= 0 or
// -0, never NaN, so this maps -0 to +0 and is otherwise exactly the order of the doubles.
uint64_t ScoreKey(double s) { return std::bit_cast<uint64_t>(s) & ~(uint64_t{1} << 63); }

constexpr int kCoarseShift = 20;

// Same contract as SelectTopReference (same output, bit for bit), by the fast path described at the
// top.
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
    SelectTopReference(score, n, k, nf, scratch.order, ids, tiers);
  }
}

}  // namespace

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

}  // namespace sparselink::internal
