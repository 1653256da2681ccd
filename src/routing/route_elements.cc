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
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "routing/select.hpp"

namespace sparselink::internal {
namespace {

// Exact rows narrower than this take the three passes: the one pass's fixed cost per row (the
// bracket probes and the cut among the candidates) outweighs a pass saved below it, and rows of
// a few hundred columns sit in the cache anyway. On rows of normal values the one pass wins
// from about 640 columns on, but on the training boundaries (1024 columns of ReLU rows that
// differ from row to row) it lost over five epochs, so the limit stays above the training
// shape (docs/perf-notes.md#kexactonepassmincols).
constexpr size_t kExactOnePassMinCols = 2048;
// The one pass is for sparse rows: above a kept share of 1 / this, the work on the candidates
// (about as many as kept) outweighs the passes saved (docs/perf-notes.md#konepassmaxkeptshare).
constexpr size_t kOnePassMaxKeptShare = 4;
// kApproximate windows narrower than this go the three-pass way (a threshold rarely lands).
constexpr size_t kMinOnePassWindow = 2;
// Rows per chunk of the one-pass path: the chunk's first row takes the three passes that seed
// the model.
constexpr size_t kApproxRowChunk = 64;
static_assert(kRowChunk % kSumRows == 0 && kApproxRowChunk % kSumRows == 0);

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

}  // namespace

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
  if (approximate && scorer.scoring != Scoring::kRandom && window >= kMinOnePassWindow &&
      k * kOnePassMaxKeptShare <= cols) {
    const float* weight = scorer.scoring == Scoring::kSensitivity ? scorer.weight : nullptr;
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
  const bool one_pass = method == SelectMethod::kFast && scorer.scoring != Scoring::kRandom &&
                        cols >= kExactOnePassMinCols && k * kOnePassMaxKeptShare <= cols;
  const float* weight = scorer.scoring == Scoring::kSensitivity ? scorer.weight : nullptr;
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
        SelectTopReference(scratch.score.data(), cols, k, nf, scratch.order, ids, tiers);
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

}  // namespace sparselink::internal
