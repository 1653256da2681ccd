// RoutedTensor accessors and its structural check.
//
// Validate runs on decoded, untrusted input before anything indexes with it, so it checks
// each size relation in an order where every check only relies on the ones before it:
// shape, enums, row_offsets (size, start, monotone, end), indices (ascending, < cols), then
// the arrays that run parallel to the kept entries (values, tiers), then the rest tier. The
// first broken relation is reported, naming the field, its value and what it must be. The
// per-entry checks run first as branch-free screens; the naming walk runs only after one fails.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

#include "core/format.hpp"
#include "simd/kernels.hpp"
#include "sparselink/routing.hpp"

namespace sparselink {

namespace {

using internal::MustEqual;

std::string Indexed(std::string_view field, size_t i) {
  std::ostringstream name;
  name << field << "[" << i << "]";
  return name.str();
}

// Branch-free screens of the per-entry checks below: each answers "all fine?" in one pass the
// compiler can vectorize; only when one says no does Validate walk the entries again to name
// the first offender. Requires the row_offsets checks to have passed.
bool IndicesLookValid(const std::vector<uint32_t>& row_offsets,
                      const std::vector<uint32_t>& indices, uint32_t cols) {
  bool ok = true;
  for (size_t r = 0; r + 1 < row_offsets.size(); ++r) {
    ok = simd::AscendingBelow(indices.data() + row_offsets[r], row_offsets[r + 1] - row_offsets[r],
                              cols) &&
         ok;
  }
  return ok;
}

bool ValuesAndTiersLookValid(const std::vector<float>& values, const std::vector<Tier>& tiers) {
  const bool finite = simd::AllFinite(values.data(), values.size());
  static_assert(sizeof(Tier) == 1);
  const uint8_t all_tiers =
      simd::MaxByte(reinterpret_cast<const uint8_t*>(tiers.data()), tiers.size());
  static_assert(static_cast<uint8_t>(Tier::kFull) == 0 && static_cast<uint8_t>(Tier::kLossy) == 1);
  return finite && all_tiers <= 1;
}

}  // namespace

size_t RoutedTensor::num_kept_in_row(size_t r) const {
  if (granularity == Granularity::kUnit) return indices.size();
  return row_offsets[r + 1] - row_offsets[r];
}

std::span<const uint32_t> RoutedTensor::RowIndices(size_t r) const {
  if (granularity == Granularity::kUnit) return indices;
  return std::span<const uint32_t>(indices).subspan(row_offsets[r],
                                                    row_offsets[r + 1] - row_offsets[r]);
}

size_t RoutedTensor::CountTier(Tier t) const {
  if (t == Tier::kDropped) return size_t{rows} * cols - num_kept();
  static_assert(sizeof(Tier) == 1);
  return simd::CountByte(reinterpret_cast<const uint8_t*>(tiers.data()), tiers.size(),
                         static_cast<uint8_t>(t));
}

Status RoutedTensor::ValidateMask() const {
  constexpr ErrorCode kBad = ErrorCode::kCorruptPacket;
  if (rows == 0) return FieldError(kBad, "routed.rows", rows, "must be > 0");
  if (cols == 0) return FieldError(kBad, "routed.cols", cols, "must be > 0");
  if (static_cast<size_t>(granularity) >= kNumGranularities) {
    return FieldError(kBad, "routed.granularity", int(granularity), "unknown granularity");
  }
  if (static_cast<size_t>(rest) >= kNumRestCodecs) {
    return FieldError(kBad, "routed.rest", int(rest), "unknown rest codec");
  }
  const bool unit = granularity == Granularity::kUnit;

  // row_offsets: element has one per row plus the end; unit stores the shared set once.
  const size_t want_offsets = unit ? 2 : size_t{rows} + 1;
  if (row_offsets.size() != want_offsets) {
    return FieldError(kBad, "routed.row_offsets.size()", row_offsets.size(),
                      MustEqual(unit ? "2 (unit granularity)" : "rows + 1", want_offsets));
  }
  if (row_offsets[0] != 0) {
    return FieldError(kBad, "routed.row_offsets[0]", row_offsets[0], "must be 0");
  }
  for (size_t r = 1; r < row_offsets.size(); ++r) {
    if (row_offsets[r] < row_offsets[r - 1]) {
      return FieldError(
          kBad, Indexed("routed.row_offsets", r), row_offsets[r],
          MustEqual("at least row_offsets[" + std::to_string(r - 1) + "]", row_offsets[r - 1]));
    }
  }
  if (row_offsets.back() != indices.size()) {
    return FieldError(kBad, Indexed("routed.row_offsets", row_offsets.size() - 1),
                      row_offsets.back(), MustEqual("indices.size()", indices.size()));
  }

  // indices: strictly ascending within each row, every one a column.
  const bool indices_ok = IndicesLookValid(row_offsets, indices, cols);
  for (size_t r = 0; !indices_ok && r + 1 < row_offsets.size(); ++r) {
    for (size_t i = row_offsets[r]; i < row_offsets[r + 1]; ++i) {
      if (indices[i] >= cols) {
        return FieldError(kBad, Indexed("routed.indices", i), indices[i],
                          MustEqual("less than cols", cols));
      }
      if (i > row_offsets[r] && indices[i] <= indices[i - 1]) {
        return FieldError(kBad, Indexed("routed.indices", i), indices[i],
                          "must be greater than the previous index of its row, " +
                              std::to_string(indices[i - 1]));
      }
    }
  }

  // values and tiers run parallel to the kept entries.
  const uint64_t kept = unit ? uint64_t{rows} * indices.size() : indices.size();
  if (values.size() != kept) {
    return FieldError(kBad, "routed.values.size()", values.size(),
                      MustEqual(unit ? "rows * indices.size()" : "indices.size()", kept));
  }
  return Status::Ok();
}

Status RoutedTensor::Validate() const {
  constexpr ErrorCode kBad = ErrorCode::kCorruptPacket;
  SPARSELINK_RETURN_IF_ERROR(ValidateMask());
  const bool unit = granularity == Granularity::kUnit;
  const uint64_t kept = values.size();  // ValidateMask checked it against the indices
  if (tiers.size() != kept) {
    return FieldError(kBad, "routed.tiers.size()", tiers.size(), MustEqual("values.size()", kept));
  }
  const bool entries_ok = ValuesAndTiersLookValid(values, tiers);
  for (size_t i = 0; !entries_ok && i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return FieldError(ErrorCode::kNonFinite, Indexed("routed.values", i), values[i],
                        "must be finite");
    }
    if (tiers[i] != Tier::kFull && tiers[i] != Tier::kLossy) {
      return FieldError(kBad, Indexed("routed.tiers", i), int(tiers[i]),
                        "must be full (0) or lossy (1)");
    }
  }
  if (unit) {
    // A unit's tier is a property of its columns, the same in every row.
    const size_t n = indices.size();
    for (size_t row_begin = n; row_begin < tiers.size(); row_begin += n) {
      if (std::equal(tiers.begin(), tiers.begin() + n, tiers.begin() + row_begin)) continue;
      for (size_t j = 0; j < n; ++j) {
        if (tiers[row_begin + j] != tiers[j]) {
          return FieldError(kBad, Indexed("routed.tiers", row_begin + j), int(tiers[row_begin + j]),
                            "must equal the tier of the same column in row 0, " +
                                std::to_string(int(tiers[j])) + " (unit granularity)");
        }
      }
    }
  }

  // The rest tier.
  if (rest == RestCodec::kSign1) {
    const uint64_t rest_entries = uint64_t{rows} * cols - kept;
    const uint64_t want_bytes = (rest_entries + 7) / 8;
    if (rest_bits.size() != want_bytes) {
      return FieldError(kBad, "routed.rest_bits.size()", rest_bits.size(),
                        MustEqual("ceil((rows * cols - kept) / 8)", want_bytes));
    }
    if (rest_centroids.size() != uint64_t{rows} * 2) {
      return FieldError(kBad, "routed.rest_centroids.size()", rest_centroids.size(),
                        MustEqual("2 * rows", uint64_t{rows} * 2));
    }
    for (size_t i = 0; i < rest_centroids.size(); ++i) {
      if (!std::isfinite(rest_centroids[i])) {
        return FieldError(ErrorCode::kNonFinite, Indexed("routed.rest_centroids", i),
                          rest_centroids[i], "must be finite");
      }
    }
  } else {
    if (!rest_bits.empty()) {
      return FieldError(kBad, "routed.rest_bits.size()", rest_bits.size(),
                        "must be 0 under rest codec drop");
    }
    if (!rest_centroids.empty()) {
      return FieldError(kBad, "routed.rest_centroids.size()", rest_centroids.size(),
                        "must be 0 under rest codec drop");
    }
  }
  return Status::Ok();
}

Status KeptMask::Validate() const {
  constexpr ErrorCode kBad = ErrorCode::kCorruptPacket;
  if (rows == 0) return FieldError(kBad, "mask.rows", rows, "must be > 0");
  if (cols == 0) return FieldError(kBad, "mask.cols", cols, "must be > 0");
  if (static_cast<size_t>(granularity) >= kNumGranularities) {
    return FieldError(kBad, "mask.granularity", int(granularity), "unknown granularity");
  }
  const uint64_t entries = uint64_t{rows} * cols;
  if (bits.size() != (entries + 7) / 8) {
    return FieldError(kBad, "mask.bits.size()", bits.size(),
                      MustEqual("ceil(rows * cols / 8)", (entries + 7) / 8));
  }
  if (entries % 8 != 0 && (bits.back() >> (entries % 8)) != 0) {
    return FieldError(kBad, "mask.bits padding", int(bits.back() >> (entries % 8)), "must be 0");
  }
  if (row_offsets.size() != size_t{rows} + 1) {
    return FieldError(kBad, "mask.row_offsets.size()", row_offsets.size(),
                      MustEqual("rows + 1", size_t{rows} + 1));
  }
  if (row_offsets[0] != 0) {
    return FieldError(kBad, "mask.row_offsets[0]", row_offsets[0], "must be 0");
  }
  thread_local std::vector<uint32_t> counts;
  counts.resize(rows);
  simd::RowBitCounts(bits.data(), bits.size(), rows, cols, counts.data());
  for (size_t r = 0; r < rows; ++r) {
    if (row_offsets[r + 1] < row_offsets[r] || row_offsets[r + 1] - row_offsets[r] != counts[r]) {
      return FieldError(kBad, Indexed("mask.row_offsets", r + 1), row_offsets[r + 1],
                        MustEqual("row_offsets[" + std::to_string(r) + "] + the row's set bits",
                                  row_offsets[r] + counts[r]));
    }
  }
  if (granularity == Granularity::kUnit) {
    // One set of columns shared by every row: each row's bits equal row 0's.
    const auto bit = [&](uint64_t i) { return (bits[i / 8] >> (i % 8)) & 1u; };
    for (size_t r = 1; r < rows; ++r) {
      for (size_t c = 0; c < cols; ++c) {
        if (bit(r * uint64_t{cols} + c) != bit(c)) {
          return FieldError(kBad, "mask.bits[" + std::to_string(r) + "][" + std::to_string(c) + "]",
                            int(bit(r * uint64_t{cols} + c)),
                            "must equal row 0's, " + std::to_string(bit(c)) +
                                " (unit granularity: one set of columns for every row)");
        }
      }
    }
  }
  return Status::Ok();
}

Status MaskOf(const RoutedTensor& routed, KeptMask* out) {
  if (out == nullptr) return Status(ErrorCode::kInvalidArgument, "mask = null: no output given");
  SPARSELINK_RETURN_IF_ERROR(routed.ValidateMask());
  out->rows = routed.rows;
  out->cols = routed.cols;
  out->granularity = routed.granularity;
  const uint64_t entries = uint64_t{routed.rows} * routed.cols;
  out->bits.assign((entries + 7) / 8, 0);
  out->row_offsets.resize(size_t{routed.rows} + 1);
  uint64_t kept = 0;
  for (size_t r = 0; r < routed.rows; ++r) {
    out->row_offsets[r] = kept;
    const uint64_t first = r * uint64_t{routed.cols};
    for (uint32_t c : routed.RowIndices(r)) {
      const uint64_t b = first + c;
      out->bits[b / 8] = static_cast<uint8_t>(out->bits[b / 8] | (1u << (b % 8)));
    }
    kept += routed.num_kept_in_row(r);
  }
  out->row_offsets[routed.rows] = kept;
  return Status::Ok();
}

}  // namespace sparselink
