// The gradient packet's encoders: from values gathered at a mask already, or from the dense
// gradient (gathered here; the int8 path gathers and codes each thread's rows in one pass),
// with the mask checked or, for the library's own masks, trusted (codec/own_mask.hpp).
#include <cmath>
#include <string>
#include <vector>

#include "codec/own_mask.hpp"
#include "codec/packet_layout.hpp"
#include "codec/packet_writer.hpp"
#include "codec/value_codecs.hpp"
#include "core/parallel.hpp"
#include "routing/mask_ops.hpp"
#include "simd/kernels.hpp"
#include "sparselink/codec.hpp"

namespace sparselink {
namespace {

using internal::AsArgument;
using internal::PendingWrite;
using internal::RawSection;
using internal::ValueSection;

// A gradient packet's header: the mask's shape, how it was routed and its kept count.
PacketHeader GradientHeader(uint32_t rows, uint32_t cols, Granularity granularity, uint64_t kept,
                            ValueCodec codec, const PacketLabel& label) {
  PacketHeader h;
  h.kind = PacketKind::kGradient;
  h.granularity = granularity;
  h.index_codec = IndexCodec::kAuto;  // 0: no index on the wire
  h.full_codec = codec;
  h.lossy_codec = ValueCodec::kFp32;  // 0: unused
  h.rest = RestCodec::kDrop;
  h.boundary = label.boundary;
  h.contract_version = label.contract_version;
  h.step = label.step;
  h.micro_batch = label.micro_batch;
  h.rows = rows;
  h.cols = cols;
  h.count_full = kept;
  h.count_lossy = 0;
  return h;
}

// EncodeGradientValues on either form of the mask: its shape, how it was routed, and its kept
// entries per row (a valid mask's).
// `values_finite`: the caller has screened them already.
Status EncodeGradientRows(uint32_t rows, uint32_t cols, Granularity granularity,
                          std::span<const uint32_t> row_counts, uint64_t kept,
                          std::span<const float> values, ValueCodec codec, const PacketLabel& label,
                          const EncodeOptions& options, std::vector<uint8_t>* out,
                          bool values_finite = false) {
  if (static_cast<size_t>(codec) >= kNumValueCodecs) {
    return FieldError(ErrorCode::kInvalidArgument, "codec", int(codec), "unknown value codec");
  }
  if (values.size() != kept) {
    return FieldError(ErrorCode::kShapeMismatch, "values.size()", values.size(),
                      "must equal the mask's kept count " + std::to_string(kept));
  }
  // One vector screen; the scalar walk only runs to name the first bad value.
  if (!values_finite && !simd::AllFinite(values.data(), values.size())) {
    for (size_t i = 0; i < values.size(); ++i) {
      if (!std::isfinite(values[i])) {
        return FieldError(ErrorCode::kNonFinite, "values[" + std::to_string(i) + "]", values[i],
                          "must be finite");
      }
    }
  }
  std::vector<RawSection> sections;
  sections.push_back(ValueSection(SectionId::kGradientValues, codec, values, row_counts));
  return Assemble(GradientHeader(rows, cols, granularity, kept, codec, label), sections, options,
                  out);
}

}  // namespace

Status EncodeGradientValues(const RoutedTensor& mask, std::span<const float> values,
                            ValueCodec codec, const PacketLabel& label,
                            const EncodeOptions& options, std::vector<uint8_t>* out) {
  SPARSELINK_RETURN_IF_ERROR(AsArgument(mask.ValidateMask(), "mask"));
  std::vector<uint32_t> row_counts(mask.rows);
  for (size_t r = 0; r < mask.rows; ++r)
    row_counts[r] = static_cast<uint32_t>(mask.num_kept_in_row(r));
  return EncodeGradientRows(mask.rows, mask.cols, mask.granularity, row_counts, mask.num_kept(),
                            values, codec, label, options, out);
}

Status EncodeGradientValues(const KeptMask& mask, std::span<const float> values, ValueCodec codec,
                            const PacketLabel& label, const EncodeOptions& options,
                            std::vector<uint8_t>* out) {
  SPARSELINK_RETURN_IF_ERROR(AsArgument(mask.Validate(), "mask"));
  thread_local std::vector<uint32_t> row_counts;
  row_counts.resize(mask.rows);
  for (size_t r = 0; r < mask.rows; ++r)
    row_counts[r] = static_cast<uint32_t>(mask.num_kept_in_row(r));
  return EncodeGradientRows(mask.rows, mask.cols, mask.granularity, row_counts, mask.num_kept(),
                            values, codec, label, options, out);
}

namespace {

// EncodeGradientFromDense, the mask validated (check_mask) or vouched for
// (EncodeGradientFromDenseTrustedMask).
Status EncodeGradientAtMask(const KeptMask& mask, ConstMatrix gradient, ValueCodec codec,
                            const PacketLabel& label, const EncodeOptions& options,
                            std::vector<uint8_t>* out, bool check_mask) {
  if (out == nullptr) return Status(ErrorCode::kInvalidArgument, "out = null: no output given");
  if (check_mask) {
    SPARSELINK_RETURN_IF_ERROR(AsArgument(mask.Validate(), "mask"));
  } else {
    SPARSELINK_DCHECK(mask.Validate().ok());
  }
  if (gradient.data == nullptr) {
    return Status(ErrorCode::kInvalidArgument, "gradient.data = null: no values given");
  }
  if (gradient.rows != mask.rows || gradient.cols != mask.cols) {
    const bool rows = gradient.rows != mask.rows;
    return FieldError(ErrorCode::kShapeMismatch, rows ? "gradient.rows" : "gradient.cols",
                      rows ? gradient.rows : gradient.cols,
                      "must equal mask." + std::string(rows ? "rows = " : "cols = ") +
                          std::to_string(rows ? mask.rows : mask.cols));
  }
  const bool parallel = uint64_t{mask.rows} * mask.cols >= options.parallel_min_entries;
  if (codec == ValueCodec::kInt8) {
    // Gathered and coded in one pass over the rows: each thread gathers its rows into a buffer
    // of its own (in its cache) and codes them from there straight into the packet, the bytes
    // EncodeInt8Rows writes from the gathered values. A non-finite kept entry goes the long way
    // below, which names it.
    const size_t rows = mask.rows;
    const size_t cols = mask.cols;
    bool finite = true;
    const auto write = [&](uint8_t* dst) {
      internal::ForRowRanges(rows, parallel, [&](size_t first, size_t end) {
        if (first == end) return;
        const uint64_t begin = mask.row_offsets[first];
        const uint64_t count = mask.row_offsets[end] - begin;
        thread_local std::vector<float> gathered;
        gathered.resize(count + simd::kSlack);              // GatherBits writes whole vectors
        const uint64_t start = first * uint64_t{cols} / 8;  // ranges start on whole bytes
        simd::GatherBits(mask.bits.data() + start, mask.bits.size() - start, end - first, cols,
                         gradient.Row(first), gradient.cols, gathered.data());
        if (!simd::AllFinite(gathered.data(), count)) {
#pragma omp atomic write
          finite = false;
          return;
        }
        uint8_t* q = dst + 4 * rows + begin;
        for (size_t r = first; r < end; ++r) {
          const float* row = gathered.data() + (mask.row_offsets[r] - begin);
          const auto n = static_cast<size_t>(mask.num_kept_in_row(r));
          internal::EncodeInt8Row(row, n, dst + 4 * r, q);
          q += n;
        }
      });
    };
    std::vector<RawSection> sections;
    sections.push_back({SectionId::kGradientValues,
                        {},
                        {},
                        {},
                        PendingWrite{ValueStreamBytes(codec, mask.num_kept(), rows), write}});
    // Assembled aside and swapped in, so that a refusal leaves `out` as it was.
    thread_local std::vector<uint8_t> staged;
    const Status assembled = Assemble(
        GradientHeader(mask.rows, mask.cols, mask.granularity, mask.num_kept(), codec, label),
        sections, options, &staged);
    if (finite) {  // else the long way names the non-finite entry first, as it always did
      if (!assembled.ok()) return assembled;
      out->swap(staged);
      return Status::Ok();
    }
  }
  thread_local std::vector<float> values;
  SPARSELINK_RETURN_IF_ERROR(
      internal::GatherRowsAtMask(mask, gradient, &values, OnNonFinite::kReject, parallel));
  thread_local std::vector<uint32_t> row_counts;
  row_counts.resize(mask.rows);
  for (size_t r = 0; r < mask.rows; ++r)
    row_counts[r] = static_cast<uint32_t>(mask.num_kept_in_row(r));
  return EncodeGradientRows(mask.rows, mask.cols, mask.granularity, row_counts, mask.num_kept(),
                            values, codec, label, options, out, /*values_finite=*/true);
}

}  // namespace

Status EncodeGradientFromDense(const KeptMask& mask, ConstMatrix gradient, ValueCodec codec,
                               const PacketLabel& label, const EncodeOptions& options,
                               std::vector<uint8_t>* out) {
  return EncodeGradientAtMask(mask, gradient, codec, label, options, out, /*check_mask=*/true);
}

Status internal::EncodeGradientFromDenseTrustedMask(const KeptMask& mask, ConstMatrix gradient,
                                                    ValueCodec codec, const PacketLabel& label,
                                                    const EncodeOptions& options,
                                                    std::vector<uint8_t>* out) {
  return EncodeGradientAtMask(mask, gradient, codec, label, options, out, /*check_mask=*/false);
}

}  // namespace sparselink
