// The gradient packet's decoders: the values at the receiver's mask, or straight into the
// sender's dense gradient (an int8 stream that plainly decodes is decoded and scattered row by
// row in one pass), with the mask checked or, for the library's own masks, trusted.
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "codec/own_mask.hpp"
#include "codec/packet_layout.hpp"
#include "codec/packet_reader.hpp"
#include "codec/value_codecs.hpp"
#include "routing/mask_ops.hpp"
#include "simd/kernels.hpp"
#include "sparselink/codec.hpp"

namespace sparselink {
namespace {

using internal::AsArgument;
using internal::CheckDenseOut;
using internal::ParseAndCheckKind;
using internal::SectionBytes;

// DecodeGradientValues's work into `values` (resized to the kept count); the mask validated
// (check_mask) or vouched for by the caller.
// With `int8_rows`, a plainly valid int8 stream (Int8StreamPlainlyValid) is handed to it
// instead, `values` sized: it decodes the rows itself.
Status DecodeGradientInto(std::span<const uint8_t> packet, const RoutedTensor& mask,
                          const DecodeLimits& limits, PacketInfo* pi, std::vector<float>* values,
                          bool check_mask = true,
                          const std::function<void(std::span<const uint8_t>)>& int8_rows = {}) {
  SPARSELINK_RETURN_IF_ERROR(ParseAndCheckKind(packet, limits, PacketKind::kGradient, pi));
  if (check_mask) {
    SPARSELINK_RETURN_IF_ERROR(AsArgument(mask.ValidateMask(), "mask"));
  } else {
    SPARSELINK_DCHECK(mask.ValidateMask().ok());
  }
  const PacketHeader& h = pi->header;
  if (h.rows != mask.rows)
    return FieldError(ErrorCode::kShapeMismatch, "header.rows", h.rows,
                      "mask.rows = " + std::to_string(mask.rows));
  if (h.cols != mask.cols)
    return FieldError(ErrorCode::kShapeMismatch, "header.cols", h.cols,
                      "mask.cols = " + std::to_string(mask.cols));
  if (h.granularity != mask.granularity) {
    return FieldError(ErrorCode::kShapeMismatch, "header.granularity",
                      GranularityName(h.granularity),
                      "mask.granularity = " + std::string(GranularityName(mask.granularity)));
  }
  if (h.count_full != mask.num_kept()) {
    return FieldError(ErrorCode::kShapeMismatch, "header.count_full", h.count_full,
                      "mask kept count = " + std::to_string(mask.num_kept()));
  }
  SectionBytes raw;
  SPARSELINK_RETURN_IF_ERROR(raw.Load(packet, pi->sections[0], 0));
  thread_local std::vector<uint32_t> row_counts;
  row_counts.resize(mask.rows);
  for (size_t r = 0; r < mask.rows; ++r)
    row_counts[r] = static_cast<uint32_t>(mask.num_kept_in_row(r));
  values->resize(h.count_full);
  if (int8_rows && h.full_codec == ValueCodec::kInt8 &&
      raw.bytes().size() == ValueStreamBytes(ValueCodec::kInt8, h.count_full, h.rows) &&
      internal::Int8StreamPlainlyValid(raw.bytes(), h.rows)) {
    int8_rows(raw.bytes());
    return Status::Ok();
  }
  Status s = internal::DecodeValuesInto(h.full_codec, raw.bytes(), row_counts, *values,
                                        uint64_t{h.rows} * h.cols >= limits.parallel_min_entries);
  if (!s.ok()) return Status(s.code(), "gradient_values: " + s.message());
  return Status::Ok();
}

}  // namespace

Result<std::vector<float>> DecodeGradientValues(std::span<const uint8_t> packet,
                                                const RoutedTensor& mask,
                                                const DecodeLimits& limits, PacketInfo* info) {
  PacketInfo local;
  std::vector<float> values;
  SPARSELINK_RETURN_IF_ERROR(
      DecodeGradientInto(packet, mask, limits, info != nullptr ? info : &local, &values));
  return values;
}

Status CheckGradientValues(std::span<const uint8_t> packet, const DecodeLimits& limits,
                           PacketInfo* info) {
  PacketInfo local;
  PacketInfo* pi = info != nullptr ? info : &local;
  SPARSELINK_RETURN_IF_ERROR(ParseAndCheckKind(packet, limits, PacketKind::kGradient, pi));
  const PacketHeader& h = pi->header;
  SectionBytes raw;
  SPARSELINK_RETURN_IF_ERROR(raw.Load(packet, pi->sections[0], 0));
  // At unit granularity the split is the header's (count_full a multiple of rows, checked).
  const std::optional<uint64_t> per_row =
      h.granularity == Granularity::kUnit ? std::optional(h.count_full / h.rows) : std::nullopt;
  Status s =
      internal::CheckValuesWithoutSplit(h.full_codec, raw.bytes(), h.count_full, h.rows, per_row);
  if (!s.ok()) return Status(s.code(), "gradient_values: " + s.message());
  return Status::Ok();
}

namespace {

// DecodeGradientToDense, the mask validated (check_mask) or vouched for.
Status DecodeGradientToDenseAt(std::span<const uint8_t> packet, const RoutedTensor& mask,
                               MutableMatrix out, std::vector<float>* values,
                               const DecodeLimits& limits, PacketInfo* info, bool check_mask) {
  if (values == nullptr) {
    return Status(ErrorCode::kInvalidArgument, "values = null: no output given");
  }
  SPARSELINK_RETURN_IF_ERROR(CheckDenseOut(out, mask.rows, mask.cols, "the mask's"));
  PacketInfo local;
  const bool parallel = uint64_t{mask.rows} * mask.cols >= limits.parallel_min_entries;
  bool scattered = false;
  // An int8 stream that plainly decodes: each row decoded and scattered in one pass, while its
  // values are in cache (one parallel region instead of two).
  const auto int8_rows = [&](std::span<const uint8_t> stream) {
    const size_t rows = mask.rows;
    const size_t cols = mask.cols;
    const bool unit = mask.granularity == Granularity::kUnit;
    const uint8_t* q = stream.data() + 4 * rows;
    float* kept = values->data();
#pragma omp parallel for schedule(static) if (parallel)
    for (size_t r = 0; r < rows; ++r) {
      const std::span<const uint32_t> ids = mask.RowIndices(r);
      const size_t begin = unit ? r * ids.size() : mask.row_offsets[r];
      float scale;
      std::memcpy(&scale, stream.data() + 4 * r, sizeof scale);
      simd::Int8ToFloat(reinterpret_cast<const int8_t*>(q + begin), ids.size(), scale,
                        kept + begin);
      float* row = out.Row(r);
      std::fill(row, row + cols, 0.0f);
      for (size_t i = 0; i < ids.size(); ++i) row[ids[i]] = kept[begin + i];
    }
    scattered = true;
  };
  SPARSELINK_RETURN_IF_ERROR(DecodeGradientInto(
      packet, mask, limits, info != nullptr ? info : &local, values, check_mask, int8_rows));
  if (!scattered) internal::ScatterRowsAtMask(mask, values->data(), out, parallel);
  return Status::Ok();
}

}  // namespace

Status DecodeGradientToDense(std::span<const uint8_t> packet, const RoutedTensor& mask,
                             MutableMatrix out, std::vector<float>* values,
                             const DecodeLimits& limits, PacketInfo* info) {
  return DecodeGradientToDenseAt(packet, mask, out, values, limits, info, /*check_mask=*/true);
}

Status internal::DecodeGradientToDenseTrustedMask(std::span<const uint8_t> packet,
                                                  const RoutedTensor& mask, MutableMatrix out,
                                                  std::vector<float>* values,
                                                  const DecodeLimits& limits, PacketInfo* info) {
  return DecodeGradientToDenseAt(packet, mask, out, values, limits, info, /*check_mask=*/false);
}

}  // namespace sparselink
