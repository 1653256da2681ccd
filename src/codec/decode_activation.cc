// The activation packet's decoders: to a RoutedTensor, and fused straight into the dense rows
// (and the receiver's KeptMask) for the common case: element granularity, a bitmap or subset
// bitmap index, one tier and rest codec drop.
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "codec/index_codecs.hpp"
#include "codec/packet_layout.hpp"
#include "codec/packet_reader.hpp"
#include "codec/value_codecs.hpp"
#include "core/parallel.hpp"
#include "simd/kernels.hpp"
#include "sparselink/codec.hpp"

namespace sparselink {
namespace {

using internal::CheckDenseOut;
using internal::CheckPaddingZero;
using internal::Corrupt;
using internal::Entries;
using internal::GetBit;
using internal::HasTierBits;
using internal::IndexKept;
using internal::IndexRows;
using internal::IsUnit;
using internal::Kept;
using internal::ParseAndCheckKind;
using internal::RowRange;
using internal::SectionBytes;

// `parallel`: the value streams may decode on the OpenMP threads.
Status DecodeActivationInto(std::span<const uint8_t> packet, const PacketInfo& info,
                            RoutedTensor* t, bool parallel) {
  const PacketHeader& h = info.header;
  const bool unit = IsUnit(h);
  std::vector<SectionBytes> raw(info.sections.size());
  for (size_t i = 0; i < info.sections.size(); ++i) {
    SPARSELINK_RETURN_IF_ERROR(raw[i].Load(packet, info.sections[i], i));
  }
  size_t next = 0;  // the sections come in the order ExpectedSections gives
  t->rows = h.rows;
  t->cols = h.cols;
  t->granularity = h.granularity;
  t->rest = h.rest;

  // Index.
  const uint64_t index_kept = IndexKept(h);
  const auto index_rows = static_cast<uint32_t>(IndexRows(h));
  const std::span<const uint8_t> index = raw[next++].bytes();
  if (h.index_codec == IndexCodec::kBitmap) {
    SPARSELINK_RETURN_IF_ERROR(internal::DecodeBitmap(index, index_rows, h.cols, index_kept,
                                                      &t->row_offsets, &t->indices));
  } else if (h.index_codec == IndexCodec::kSubsetBitmap) {
    SPARSELINK_RETURN_IF_ERROR(internal::DecodeSubsetBitmap(index, index_rows, h.cols, index_kept,
                                                            &t->row_offsets, &t->indices));
  } else {
    SPARSELINK_RETURN_IF_ERROR(internal::DecodeDeltaVarint(index, index_rows, h.cols, index_kept,
                                                           &t->row_offsets, &t->indices));
  }

  // Tiers: from the tier bits, or all one tier. Unit granularity repeats row 0's per row.
  const uint64_t kept = Kept(h);
  t->tiers.assign(kept, h.count_lossy > 0 ? Tier::kLossy : Tier::kFull);
  if (HasTierBits(h)) {
    const std::span<const uint8_t> bits = raw[next++].bytes();
    SPARSELINK_RETURN_IF_ERROR(
        CheckPaddingZero(bits, index_kept, "tier_bits padding", ErrorCode::kCorruptPacket));
    uint64_t lossy = 0;
    for (uint64_t i = 0; i < index_kept; ++i) {
      if (GetBit(bits, i)) {
        t->tiers[i] = Tier::kLossy;
        ++lossy;
      } else {
        t->tiers[i] = Tier::kFull;
      }
    }
    if (unit) {
      for (uint64_t i = index_kept; i < kept; ++i) t->tiers[i] = t->tiers[i % index_kept];
      lossy *= h.rows;
    }
    if (lossy != h.count_lossy) {
      return Corrupt("tier_bits lossy entries", lossy,
                     "header.count_lossy = " + std::to_string(h.count_lossy));
    }
  }

  // Values: each tier's stream holds its entries in kept order, split in rows.
  // Per-row arrays only when there are values: a unit-granularity packet with nothing kept
  // may claim many rows in a few bytes, and nothing else bounds them by the buffer.
  if (h.count_full == 0 || h.count_lossy == 0) {
    // One tier (the common case): its stream is the values in kept order.
    t->values.resize(kept);
    if (kept > 0) {
      std::vector<uint32_t> row_counts(h.rows);
      for (size_t r = 0; r < h.rows; ++r) {
        const auto [begin, end] = RowRange(*t, r);
        row_counts[r] = static_cast<uint32_t>(end - begin);
      }
      const bool full = h.count_full > 0;
      Status s = internal::DecodeValuesInto(full ? h.full_codec : h.lossy_codec,
                                            raw[next++].bytes(), row_counts, t->values, parallel);
      if (!s.ok())
        return Status(s.code(), (full ? "full_values: " : "lossy_values: ") + s.message());
    }
  } else {
    std::vector<uint32_t> full_counts(h.rows, 0), lossy_counts(h.rows, 0);
    for (size_t r = 0; r < h.rows; ++r) {
      const auto [begin, end] = RowRange(*t, r);
      for (size_t i = begin; i < end; ++i)
        ++(t->tiers[i] == Tier::kFull ? full_counts[r] : lossy_counts[r]);
    }
    std::vector<float> full_values(h.count_full), lossy_values(h.count_lossy);
    Status s = internal::DecodeValuesInto(h.full_codec, raw[next++].bytes(), full_counts,
                                          full_values, parallel);
    if (!s.ok()) return Status(s.code(), "full_values: " + s.message());
    s = internal::DecodeValuesInto(h.lossy_codec, raw[next++].bytes(), lossy_counts, lossy_values,
                                   parallel);
    if (!s.ok()) return Status(s.code(), "lossy_values: " + s.message());
    t->values.resize(kept);
    size_t fi = 0, li = 0;
    for (size_t i = 0; i < kept; ++i)
      t->values[i] = t->tiers[i] == Tier::kFull ? full_values[fi++] : lossy_values[li++];
  }

  // Rest tier.
  t->rest_bits.clear();
  t->rest_centroids.clear();
  if (h.rest == RestCodec::kSign1) {
    const std::span<const uint8_t> bits = raw[next++].bytes();
    SPARSELINK_RETURN_IF_ERROR(
        CheckPaddingZero(bits, Entries(h) - kept, "rest_bits padding", ErrorCode::kCorruptPacket));
    t->rest_bits.assign(bits.begin(), bits.end());
    t->rest_centroids.resize(uint64_t{h.rows} * 2);
    Status s = internal::DecodeValuesInto(ValueCodec::kFp32, raw[next++].bytes(),
                                          std::vector<uint32_t>(h.rows, 2), t->rest_centroids);
    if (!s.ok()) return Status(s.code(), "rest_centroids: " + s.message());
  }
  Status valid = t->Validate();
  if (!valid.ok())
    return Status(ErrorCode::kCorruptPacket, "decoded activation: " + valid.message());
  return Status::Ok();
}

// Sets bits [first, first + count) of `dst` (zeroed from `first` on) from `src` (LSB first; its
// bits past count zero), `dst` holding `dst_bytes` bytes. The aligned copy also writes the rest
// of its last byte (zeros): callers write rows in ascending order into a zeroed buffer.
void CopyBitsTo(const uint8_t* src, uint64_t count, uint8_t* dst, size_t dst_bytes,
                uint64_t first) {
  SPARSELINK_DCHECK((first + count + 7) / 8 <= dst_bytes);
  (void)dst_bytes;
  const size_t src_bytes = static_cast<size_t>((count + 7) / 8);
  if (first % 8 == 0) {
    std::memcpy(dst + first / 8, src, src_bytes);
    return;
  }
  const unsigned shift = first % 8;
  for (size_t i = 0; i < src_bytes; ++i) {
    const size_t at = static_cast<size_t>(first / 8) + i;
    dst[at] = static_cast<uint8_t>(dst[at] | (src[i] << shift));
    const auto high = static_cast<uint8_t>(src[i] >> (8 - shift));
    if (high != 0) dst[at + 1] = static_cast<uint8_t>(dst[at + 1] | high);  // a bit < first + count
  }
}

// The mask's shape and row offsets from the rows' kept counts (element granularity).
void StartMask(const PacketHeader& h, std::span<const uint32_t> row_counts, KeptMask* mask) {
  mask->rows = h.rows;
  mask->cols = h.cols;
  mask->granularity = h.granularity;
  mask->row_offsets.resize(size_t{h.rows} + 1);
  uint64_t kept = 0;
  for (size_t r = 0; r < h.rows; ++r) {
    mask->row_offsets[r] = kept;
    kept += row_counts[r];
  }
  mask->row_offsets[h.rows] = kept;
}

Status DecodeToDense(std::span<const uint8_t> packet, MutableMatrix out, KeptMask* mask,
                     const DecodeLimits& limits, PacketInfo* info) {
  PacketInfo local;
  PacketInfo* pi = info != nullptr ? info : &local;
  SPARSELINK_RETURN_IF_ERROR(ParseAndCheckKind(packet, limits, PacketKind::kActivation, pi));
  const PacketHeader& h = pi->header;
  SPARSELINK_RETURN_IF_ERROR(CheckDenseOut(out, h.rows, h.cols, "the packet's"));
  const bool one_tier = h.count_full == 0 || h.count_lossy == 0;
  const bool subset = h.index_codec == IndexCodec::kSubsetBitmap;
  const bool parallel = uint64_t{h.rows} * h.cols >= limits.parallel_min_entries;
  if (h.granularity != Granularity::kElement || (h.index_codec != IndexCodec::kBitmap && !subset) ||
      !one_tier || h.rest != RestCodec::kDrop) {
    RoutedTensor t;
    SPARSELINK_RETURN_IF_ERROR(DecodeActivationInto(packet, *pi, &t, parallel));
    SPARSELINK_RETURN_IF_ERROR(Scatter(t, out, limits.parallel_min_entries));
    return mask != nullptr ? MaskOf(t, mask) : Status::Ok();
  }
  // Fused: bitmap (or subset bitmap) + one value stream straight into the dense rows, with
  // DecodeActivation's checks (size, padding bits, set bits = kept, every value).
  SectionBytes index;
  SPARSELINK_RETURN_IF_ERROR(index.Load(packet, pi->sections[0], 0));
  const std::span<const uint8_t> bits = index.bytes();
  thread_local internal::SubsetBitmapReader reader;
  thread_local std::vector<uint32_t> row_counts;
  thread_local std::vector<float> values;
  row_counts.resize(h.rows);
  if (subset) {  // its rows' counts come with Start's check of them
    SPARSELINK_RETURN_IF_ERROR(reader.Start(bits, h.rows, h.cols, parallel, row_counts.data()));
  } else {
    SPARSELINK_RETURN_IF_ERROR(internal::CheckBitmapShape(bits, h.rows, h.cols));
    simd::RowBitCounts(bits.data(), bits.size(), h.rows, h.cols, row_counts.data());
  }
  const uint64_t kept = Kept(h);
  if (kept > UINT32_MAX) {  // what DecodeActivation's 32-bit row offsets can hold
    return FieldError(ErrorCode::kResourceExhausted, "kept entries", kept, "must fit in 32 bits");
  }
  const uint64_t set_bits = std::accumulate(row_counts.begin(), row_counts.end(), uint64_t{0});
  if (set_bits != kept) {
    return Corrupt("bitmap set bits", set_bits, "header says " + std::to_string(kept) + " kept");
  }
  const size_t cols = h.cols;
  const bool cols_aligned = cols % 8 == 0;  // bitmap rows on whole bytes
  // An int8 stream that plainly decodes (no refusal to name) is expanded straight into the
  // dense rows below, each row's bytes times its scale: no float values in between.
  SectionBytes stream;
  const bool full = h.count_full > 0;
  const ValueCodec codec = full ? h.full_codec : h.lossy_codec;
  if (kept > 0) SPARSELINK_RETURN_IF_ERROR(stream.Load(packet, pi->sections[1], 1));
  const bool int8_rows =
      kept > 0 && codec == ValueCodec::kInt8 && (subset || cols_aligned) &&
      stream.bytes().size() == ValueStreamBytes(ValueCodec::kInt8, kept, h.rows) &&
      internal::Int8StreamPlainlyValid(stream.bytes(), h.rows);
  if (!int8_rows) values.resize(kept + simd::kSlack);  // ScatterBits reads whole vectors
  if (kept > 0 && !int8_rows) {
    Status s = internal::DecodeValuesInto(codec, stream.bytes(), row_counts,
                                          std::span<float>(values.data(), kept), parallel);
    if (!s.ok()) return Status(s.code(), (full ? "full_values: " : "lossy_values: ") + s.message());
  }
  // Every check has passed: from here on only writes.
  if (mask != nullptr) StartMask(h, row_counts, mask);
  // Row ranges on the threads; each range's values start after the rows before it. Bitmap
  // rows are read where they lie; subset bitmap rows are unpacked first, each thread into a
  // buffer of its own. (Thread-local state is passed to the threads by pointer.)
  thread_local std::vector<uint64_t> offsets;
  offsets.resize(size_t{h.rows} + 1);
  std::exclusive_scan(row_counts.begin(), row_counts.end(), offsets.begin(), uint64_t{0});
  offsets[h.rows] = kept;
  const uint64_t* first_value = offsets.data();
  const float* source = values.data();
  const internal::SubsetBitmapReader* rows_reader = &reader;
  const size_t row_bytes = (cols + 7) / 8;
  if (mask != nullptr) {
    if (subset) {
      mask->bits.assign((uint64_t{h.rows} * cols + 7) / 8, 0);
    } else {
      mask->bits.assign(bits.begin(), bits.end());  // the same layout
    }
  }
  uint8_t* mask_bits = mask != nullptr ? mask->bits.data() : nullptr;
  // Ranges start on multiples of 8 rows, so on whole bytes of either bitmap.
  const uint8_t* int8_stream = int8_rows ? stream.bytes().data() : nullptr;
  const size_t rows_count = h.rows;
  // Row r from its bitmap bytes: the decoded floats, or the int8 bytes times the row's scale.
  const auto expand = [&](const uint8_t* row_bits, size_t r) {
    if (int8_stream == nullptr) {
      simd::ScatterBits(row_bits, row_bytes, 1, cols, source + first_value[r], out.Row(r),
                        out.cols);
      return;
    }
    float scale;
    std::memcpy(&scale, int8_stream + 4 * r, sizeof scale);
    simd::ScatterInt8Row(
        row_bits, cols,
        reinterpret_cast<const int8_t*>(int8_stream + 4 * rows_count + first_value[r]),
        first_value[r + 1] - first_value[r], scale, out.Row(r));
  };
  internal::ForRowRanges(h.rows, parallel, [&](size_t first, size_t end) {
    if (first == end) return;
    if (!subset && int8_stream == nullptr) {
      const uint64_t start = first * uint64_t{cols} / 8;
      simd::ScatterBits(bits.data() + start, bits.size() - start, end - first, cols,
                        source + first_value[first], out.Row(first), out.cols);
      return;
    }
    if (!subset) {  // rows on whole bytes (cols_aligned)
      for (size_t r = first; r < end; ++r) expand(bits.data() + r * row_bytes, r);
      return;
    }
    thread_local std::vector<uint8_t> row;
    row.resize(rows_reader->row_buffer_bytes());
    for (size_t r = first; r < end; ++r) {
      rows_reader->UnpackRow(r, row.data());
      expand(row.data(), r);
      if (mask_bits != nullptr) {
        CopyBitsTo(row.data(), cols, mask_bits, mask->bits.size(), r * uint64_t{cols});
      }
    }
  });
  return Status::Ok();
}

}  // namespace

// A dense decoder's output buffer: present and rows x cols (`whose` names the shape's source).
Status internal::CheckDenseOut(MutableMatrix out, uint32_t rows, uint32_t cols,
                               std::string_view whose) {
  if (out.data == nullptr) {
    return Status(ErrorCode::kInvalidArgument, "out.data = null: no buffer given");
  }
  if (out.rows != rows || out.cols != cols) {
    return FieldError(ErrorCode::kShapeMismatch, out.rows != rows ? "out.rows" : "out.cols",
                      out.rows != rows ? out.rows : out.cols,
                      "must equal " + std::string(whose) + " " + std::to_string(rows) + " x " +
                          std::to_string(cols));
  }
  return Status::Ok();
}

Result<RoutedTensor> DecodeActivation(std::span<const uint8_t> packet, const DecodeLimits& limits,
                                      PacketInfo* info) {
  PacketInfo local;
  PacketInfo* pi = info != nullptr ? info : &local;
  SPARSELINK_RETURN_IF_ERROR(ParseAndCheckKind(packet, limits, PacketKind::kActivation, pi));
  RoutedTensor t;
  SPARSELINK_RETURN_IF_ERROR(DecodeActivationInto(
      packet, *pi, &t, uint64_t{pi->header.rows} * pi->header.cols >= limits.parallel_min_entries));
  return t;
}

Status DecodeActivationToDense(std::span<const uint8_t> packet, MutableMatrix out,
                               const DecodeLimits& limits, PacketInfo* info) {
  return DecodeToDense(packet, out, nullptr, limits, info);
}

Status DecodeActivationToDenseAndMask(std::span<const uint8_t> packet, MutableMatrix out,
                                      KeptMask* mask, const DecodeLimits& limits,
                                      PacketInfo* info) {
  if (mask == nullptr) return Status(ErrorCode::kInvalidArgument, "mask = null: no output given");
  return DecodeToDense(packet, out, mask, limits, info);
}

}  // namespace sparselink
