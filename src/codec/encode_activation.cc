// The activation packet's encoders: EncodeActivation, and RouteAndEncode, the sender's hot
// path (the router's bitmap borrowed as the index where it is the wire layout already).
#include <algorithm>
#include <string>
#include <vector>

#include "codec/index_codecs.hpp"
#include "codec/packet_layout.hpp"
#include "codec/packet_writer.hpp"
#include "codec/value_codecs.hpp"
#include "sparselink/codec.hpp"

namespace sparselink {
namespace {

using internal::AppendBitmap;
using internal::AppendDeltaVarint;
using internal::AppendValues;
using internal::AsArgument;
using internal::Assemble;
using internal::BitmapBytes;
using internal::CheckPaddingZero;
using internal::ColumnMask;
using internal::DeltaVarintBytes;
using internal::HasTierBits;
using internal::PackBit;
using internal::PendingWrite;
using internal::RawSection;
using internal::RowRange;
using internal::SubsetBitmapBytes;
using internal::ValueSection;
using internal::WriteSubsetBitmap;

// The activation header: the routed tensor's shape and tiers, the contract's codecs, the label.
// The index codec is chosen later (IndexSection).
PacketHeader ActivationHeader(const RoutedTensor& routed, const Contract& contract,
                              const PacketLabel& label) {
  PacketHeader h;
  h.kind = PacketKind::kActivation;
  h.granularity = routed.granularity;
  h.full_codec = contract.full_codec;
  h.lossy_codec = contract.lossy_codec;
  h.rest = routed.rest;
  h.boundary = label.boundary;
  h.contract_version = label.contract_version;
  h.step = label.step;
  h.micro_batch = label.micro_batch;
  h.rows = routed.rows;
  h.cols = routed.cols;
  h.count_lossy = routed.CountTier(Tier::kLossy);
  h.count_full = routed.num_kept() - h.count_lossy;
  return h;
}

// The index section, in the codec the options ask for or (kAuto) the smallest, which goes to
// h->index_codec. Element granularity writes one set per row; unit granularity the shared set
// once. `bitmap` as for EncodeValidActivation; it and `routed` outlive the section.
RawSection IndexSection(const RoutedTensor& routed, std::span<const uint8_t> bitmap,
                        const EncodeOptions& options, PacketHeader* h) {
  const bool unit = routed.granularity == Granularity::kUnit;
  const std::span<const uint32_t> offsets = routed.row_offsets;
  const uint64_t index_rows = unit ? 1 : routed.rows;
  const uint64_t bitmap_bytes = BitmapBytes(index_rows, routed.cols);
  h->index_codec = options.index_codec;
  // The router's bitmap has its rows on byte boundaries (cols % 8 == 0): the subset bitmap
  // reads it as it is; the bitmap codec borrows it only when that is the wire layout anyway.
  const std::span<const uint8_t> row_bitmap = unit ? std::span<const uint8_t>() : bitmap;
  thread_local std::vector<uint64_t> column_mask;
  uint64_t active = 0;  // the subset bitmap's masked columns
  if (h->index_codec == IndexCodec::kAuto || h->index_codec == IndexCodec::kSubsetBitmap) {
    active = ColumnMask(offsets, routed.indices, routed.cols, row_bitmap, &column_mask);
    if (h->index_codec == IndexCodec::kAuto) {
      // The smallest in raw bytes; ties go to the bitmap, then the subset bitmap. Delta-varint
      // costs at least a byte per kept column and per index row, so past that it is not sized.
      const uint64_t subset_bytes = SubsetBitmapBytes(index_rows, routed.cols, active);
      const uint64_t best = std::min(bitmap_bytes, subset_bytes);
      const uint64_t delta_floor = routed.indices.size() + index_rows;
      h->index_codec = delta_floor < best && DeltaVarintBytes(offsets, routed.indices) < best
                           ? IndexCodec::kDeltaVarint
                       : subset_bytes < bitmap_bytes ? IndexCodec::kSubsetBitmap
                                                     : IndexCodec::kBitmap;
    }
  }
  RawSection section{SectionId::kIndex, {}};
  if (h->index_codec == IndexCodec::kBitmap && !bitmap.empty()) {
    section.borrowed = bitmap;
  } else if (h->index_codec == IndexCodec::kBitmap) {
    AppendBitmap(offsets, routed.indices, routed.cols, &section.raw);
  } else if (h->index_codec == IndexCodec::kSubsetBitmap) {
    // Packed where it goes in the packet (no buffer of its own to fill and copy).
    const bool parallel = uint64_t{routed.rows} * routed.cols >= options.parallel_min_entries;
    section.writer = PendingWrite{SubsetBitmapBytes(index_rows, routed.cols, active),
                                  [&routed, offsets, row_bitmap, parallel](uint8_t* p) {
                                    WriteSubsetBitmap(offsets, routed.indices, routed.cols,
                                                      row_bitmap, column_mask, p, parallel);
                                  }};
  } else {
    AppendDeltaVarint(offsets, routed.indices, &section.raw);
  }
  return section;
}

// Tier bits (1 = lossy), one per kept entry, or per kept column for unit granularity.
RawSection TierBitsSection(const RoutedTensor& routed) {
  const size_t n =
      routed.granularity == Granularity::kUnit ? routed.indices.size() : routed.num_kept();
  std::vector<uint8_t> bits((n + 7) / 8, 0);
  for (size_t i = 0; i < n; ++i) {
    if (routed.tiers[i] == Tier::kLossy) PackBit(bits, i);
  }
  return {SectionId::kTierBits, std::move(bits)};
}

// Value streams: each tier's values in kept order, split in rows. With one tier (the common
// case) that is routed.values as it is; with two, the values are split first. `row_counts`
// (the kept entries per row) outlives the sections.
void AppendValueSections(const RoutedTensor& routed, const PacketHeader& h,
                         const std::vector<uint32_t>& row_counts,
                         std::vector<RawSection>* sections) {
  const size_t rows = routed.rows;
  if (h.count_lossy == 0 || h.count_full == 0) {
    const bool full = h.count_full > 0;
    if (routed.num_kept() > 0) {
      sections->push_back(ValueSection(full ? SectionId::kFullValues : SectionId::kLossyValues,
                                       full ? h.full_codec : h.lossy_codec, routed.values,
                                       row_counts));
    }
    return;
  }
  std::vector<float> full_values, lossy_values;
  full_values.reserve(h.count_full);
  lossy_values.reserve(h.count_lossy);
  std::vector<uint32_t> full_counts(rows), lossy_counts(rows);
  for (size_t r = 0; r < rows; ++r) {
    const auto [begin, end] = RowRange(routed, r);
    for (size_t i = begin; i < end; ++i) {
      const bool is_full = routed.tiers[i] == Tier::kFull;
      (is_full ? full_values : lossy_values).push_back(routed.values[i]);
      ++(is_full ? full_counts : lossy_counts)[r];
    }
  }
  sections->push_back({SectionId::kFullValues, {}});
  AppendValues(h.full_codec, full_values, full_counts, &sections->back().raw);
  sections->push_back({SectionId::kLossyValues, {}});
  AppendValues(h.lossy_codec, lossy_values, lossy_counts, &sections->back().raw);
}

// EncodeActivation after the routed tensor was validated (or made by the router in the same
// call). `bitmap`, when not empty, is the routed set as the wire's bitmap.
Status EncodeValidActivation(const RoutedTensor& routed, std::span<const uint8_t> bitmap,
                             const Contract& contract, const PacketLabel& label,
                             const EncodeOptions& options, std::vector<uint8_t>* out) {
  if (routed.granularity != contract.granularity) {
    return FieldError(
        ErrorCode::kInvalidArgument, "routed.granularity", GranularityName(routed.granularity),
        "differs from the contract's " + std::string(GranularityName(contract.granularity)));
  }
  if (routed.rest != contract.rest) {
    return FieldError(ErrorCode::kInvalidArgument, "routed.rest", RestCodecName(routed.rest),
                      "differs from the contract's " + std::string(RestCodecName(contract.rest)));
  }
  if (static_cast<size_t>(options.index_codec) >= kNumIndexCodecs) {
    return FieldError(ErrorCode::kInvalidArgument, "options.index_codec", int(options.index_codec),
                      "unknown index codec");
  }
  const size_t rows = routed.rows;
  const uint64_t entries = uint64_t{routed.rows} * routed.cols;
  if (routed.rest == RestCodec::kSign1) {
    SPARSELINK_RETURN_IF_ERROR(CheckPaddingZero(routed.rest_bits, entries - routed.num_kept(),
                                                "routed.rest_bits padding",
                                                ErrorCode::kInvalidArgument));
  }
  PacketHeader h = ActivationHeader(routed, contract, label);
  std::vector<RawSection> sections;
  sections.push_back(IndexSection(routed, bitmap, options, &h));
  if (HasTierBits(h)) sections.push_back(TierBitsSection(routed));
  std::vector<uint32_t> row_counts(rows);
  for (size_t r = 0; r < rows; ++r) {
    const auto [begin, end] = RowRange(routed, r);
    row_counts[r] = static_cast<uint32_t>(end - begin);
  }
  AppendValueSections(routed, h, row_counts, &sections);
  if (h.rest == RestCodec::kSign1) {
    sections.push_back({SectionId::kRestBits, routed.rest_bits});
    sections.push_back({SectionId::kRestCentroids, {}});
    AppendValues(ValueCodec::kFp32, routed.rest_centroids, std::vector<uint32_t>(rows, 2),
                 &sections.back().raw);
  }
  return Assemble(h, sections, options, out);
}

}  // namespace

Status EncodeActivation(const RoutedTensor& routed, const Contract& contract,
                        const PacketLabel& label, const EncodeOptions& options,
                        std::vector<uint8_t>* out) {
  SPARSELINK_RETURN_IF_ERROR(contract.Validate());
  SPARSELINK_RETURN_IF_ERROR(AsArgument(routed.Validate(), "routed"));
  return EncodeValidActivation(routed, {}, contract, label, options, out);
}

Status RouteAndEncode(const Router& router, ConstMatrix activation, const SensitivityMap* map,
                      const Contract& contract, const PacketLabel& label,
                      const EncodeOptions& options, RoutedTensor* routed, std::vector<uint8_t>* out,
                      std::vector<float>* column_abs_sums) {
  if (routed == nullptr || out == nullptr) {
    return Status(ErrorCode::kInvalidArgument, "routed/out = null: no output given");
  }
  thread_local std::vector<uint8_t> bitmap;
  // The step keys random scoring's draws; the micro-batches of one step draw afresh, and
  // micro-batch 0 keeps the plain step (a one-batch step routes as it always has).
  const uint64_t draw = label.step + uint64_t{label.micro_batch} * 0x9E3779B97F4A7C15ull;
  SPARSELINK_RETURN_IF_ERROR(router.Route(activation, map, contract, draw, routed,
                                          {.bitmap = &bitmap, .column_abs_sums = column_abs_sums}));
  SPARSELINK_DCHECK(routed->Validate().ok());
  return EncodeValidActivation(*routed, bitmap, contract, label, options, out);
}

}  // namespace sparselink
