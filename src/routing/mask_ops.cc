// The receiver's scatter of a routed tensor, and the backward pass's gather and scatter at a
// mask (a RoutedTensor's column lists or a KeptMask's bitmap), with their argument checks; the
// unchecked forms (routing/mask_ops.hpp) serve callers that checked already.
#include "routing/mask_ops.hpp"

#include <algorithm>
#include <span>
#include <sstream>
#include <string>

#include "core/format.hpp"
#include "core/parallel.hpp"
#include "routing/scoring.hpp"
#include "simd/kernels.hpp"
#include "sparselink/routing.hpp"

namespace sparselink {
namespace {

using internal::MustEqual;
using internal::SafeValue;

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
  const bool sign1 = routed.rest == RestCodec::kSign1;
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
                      OnNonFinite non_finite, std::vector<float>* values) {
  if (simd::AllFinite(values->data(), values->size())) return Status::Ok();
  for (size_t r = 0; r < rows; ++r) {
    for (uint64_t i = row_offsets[r]; i < row_offsets[r + 1]; ++i) {
      float& v = (*values)[i];
      if (std::isfinite(v)) continue;
      if (non_finite == OnNonFinite::kReject) {
        const float bad = v;
        values->clear();
        std::ostringstream name;
        name << "gradient[" << r << "][" << column(r, i - row_offsets[r]) << "]";
        return FieldError(ErrorCode::kNonFinite, name.str(), bad,
                          "must be finite (on_non_finite: reject)");
      }
      v = SafeValue(v);
    }
  }
  return Status::Ok();
}

Status GatherAtMask(const RoutedTensor& mask, ConstMatrix gradient, std::vector<float>* values,
                    OnNonFinite non_finite, size_t parallel_min_entries) {
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
                    OnNonFinite non_finite, size_t parallel_min_entries) {
  if (values == nullptr)
    return Status(ErrorCode::kInvalidArgument, "values = null: no output given");
  SPARSELINK_RETURN_IF_ERROR(mask.Validate());
  SPARSELINK_RETURN_IF_ERROR(
      CheckShape("gradient", gradient.rows, gradient.cols, gradient.data != nullptr, mask, "mask"));
  return internal::GatherRowsAtMask(mask, gradient, values, non_finite,
                                    uint64_t{mask.rows} * mask.cols >= parallel_min_entries);
}

Status internal::GatherRowsAtMask(const KeptMask& mask, ConstMatrix gradient,
                                  std::vector<float>* values, OnNonFinite non_finite,
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
