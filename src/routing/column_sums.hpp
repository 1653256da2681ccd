// Column sums of |a| over a batch, taken row by row while the router has the rows in cache
// (private to src/routing; the public form is ColumnAbsSums in sparselink/routing.hpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "simd/kernels.hpp"

namespace sparselink::internal {

// RouteExtras::column_abs_sums and ColumnAbsSums: each block of kSumRows rows is summed row by
// row into a partial of its own by the thread that has the rows, and Finish adds the partials
// in block order, so the sums do not depend on the thread count. A block never straddles two
// threads: the routes hand out rows in chunks of kRowChunk or kApproxRowChunk, in order.
constexpr size_t kSumRows = 16;
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

}  // namespace sparselink::internal
