// Rest tier kSign1: per row, over the entries not kept, one bit (v > 0) and two centroids
// (mean of the positive ones, mean of the others, 0 for an empty side, accumulated in double).
// Centroids are computed per row in parallel; the bits are packed across row boundaries, so
// neighbouring rows share bytes and the bits are written in a second, serial pass.
#include <span>

#include "routing/select.hpp"

namespace sparselink::internal {

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

}  // namespace sparselink::internal
