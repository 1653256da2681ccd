// Parsing a packet: the checks InspectPacket runs, in an order where each relies only on the
// ones before it:
//   1. buffer size >= 72, magic, version (kUnsupported), buffer size <= limits;
//   2. the total-length field equals the buffer size, then the checksum over everything before
//      the trailer (a transmission error is reported as such, not as some field it damaged);
//   3. header fields: known enums (kUnsupported), reserved zero, per-kind rules, rows * cols
//      against the limits, tier counts against rows * cols;
//   4. the section table: count, ids in the expected order, flags, reserved, each raw size
//      equal to (or, for delta-varint and subset-bitmap, within the bounds of) what the header
//      implies, raw sizes of zstd sections against the limits, and the stored sizes tiling the
//      payload exactly; then what a decoder will allocate (zstd raw bytes plus decoded arrays)
//      against the decode budget, limits.max_expansion times the packet size;
//   5. payloads (decoders only): decompression to exactly raw_bytes, the index and value
//      streams with their own checks, and RoutedTensor::Validate on the result.
// Decoders run step 5 (decode_activation.cc, decode_gradient.cc, control_packets.cc). Every
// allocation happens after step 4, so its size is bounded by the decode budget, and besides by
// the buffer (8 index bits or 2 int4 values per byte at most) or, for zstd sections, by
// limits.max_packet_bytes.
#include <algorithm>
#include <cstdint>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "codec/packet_layout.hpp"
#include "codec/packet_reader.hpp"
#include "core/format.hpp"
#include "sparselink/codec.hpp"

namespace sparselink {
namespace {

using internal::Corrupt;
using internal::Entries;
using internal::ExpectedSection;
using internal::ExpectedSections;
using internal::Hex;
using internal::IsUnit;
using internal::kFlagZstd;
using internal::kMaxEntriesHard;
using internal::kMinPacketBytes;
using internal::Load;
using internal::SectionField;
using internal::Unsupported;
using enum internal::HeaderOffset;  // the header field offsets

Status MustBeZero(std::string_view field, uint64_t value, std::string_view kind) {
  if (value == 0) return Status::Ok();
  return Corrupt(field, value, "must be 0 in a " + std::string(kind) + " packet");
}

// Step 3: header fields. Raw bytes are at p (64 of them).
Status CheckHeader(const uint8_t* p, const PacketHeader& h, const DecodeLimits& limits) {
  if (p[kOffKind] >= kNumPacketKinds) return Unsupported("header.kind", p[kOffKind], "packet kind");
  if (p[kOffGranularity] >= kNumGranularities)
    return Unsupported("header.granularity", p[kOffGranularity], "granularity");
  if (p[kOffIndexCodec] >= kNumIndexCodecs)
    return Unsupported("header.index_codec", p[kOffIndexCodec], "index codec");
  if (p[kOffFullCodec] >= kNumValueCodecs)
    return Unsupported("header.full_codec", p[kOffFullCodec], "value codec");
  if (p[kOffLossyCodec] >= kNumValueCodecs)
    return Unsupported("header.lossy_codec", p[kOffLossyCodec], "value codec");
  if (p[kOffRest] >= kNumRestCodecs) return Unsupported("header.rest", p[kOffRest], "rest codec");
  if ((h.kind == PacketKind::kContract || h.kind == PacketKind::kNegotiation) &&
      h.micro_batch != 0) {
    return Corrupt("header.micro_batch", h.micro_batch,
                   "must be 0 for a contract or negotiation packet");
  }

  const std::string_view kind = PacketKindName(h.kind);
  const uint64_t entries = Entries(h);
  auto check_shape = [&]() -> Status {
    if (h.rows == 0) return Corrupt("header.rows", 0, "must be > 0");
    if (h.cols == 0) return Corrupt("header.cols", 0, "must be > 0");
    if (entries > limits.max_entries || entries > kMaxEntriesHard) {
      return FieldError(ErrorCode::kResourceExhausted, "header.rows*cols", entries,
                        "exceeds limits.max_entries = " +
                            std::to_string(std::min(limits.max_entries, kMaxEntriesHard)));
    }
    // A decoder keeps 4 bytes of row offsets per row, whatever the sections hold: a few
    // compressed bitmap bytes could otherwise stand for billions of one-column rows.
    if (4 * (uint64_t{h.rows} + 1) > limits.max_packet_bytes) {
      return FieldError(ErrorCode::kResourceExhausted, "header.rows", h.rows,
                        "its row offsets (4 bytes a row) exceed limits.max_packet_bytes = " +
                            std::to_string(limits.max_packet_bytes));
    }
    if (h.count_full > entries) {
      return Corrupt("header.count_full", h.count_full,
                     "exceeds rows * cols = " + std::to_string(entries));
    }
    if (h.count_lossy > entries - h.count_full) {
      return Corrupt("header.count_lossy", h.count_lossy,
                     "count_full + count_lossy exceeds rows * cols = " + std::to_string(entries));
    }
    if (IsUnit(h)) {
      if (h.count_full % h.rows != 0) {
        return Corrupt(
            "header.count_full", h.count_full,
            "must be a multiple of rows = " + std::to_string(h.rows) + " (unit granularity)");
      }
      if (h.count_lossy % h.rows != 0) {
        return Corrupt(
            "header.count_lossy", h.count_lossy,
            "must be a multiple of rows = " + std::to_string(h.rows) + " (unit granularity)");
      }
    }
    return Status::Ok();
  };

  switch (h.kind) {
    case PacketKind::kActivation:
      if (h.index_codec == IndexCodec::kAuto) {
        return Corrupt("header.index_codec", 0,
                       "must be bitmap (1), delta-varint (2) or subset-bitmap (3) in an "
                       "activation packet");
      }
      return check_shape();
    case PacketKind::kGradient:
      SPARSELINK_RETURN_IF_ERROR(MustBeZero("header.index_codec", p[kOffIndexCodec], kind));
      SPARSELINK_RETURN_IF_ERROR(MustBeZero("header.lossy_codec", p[kOffLossyCodec], kind));
      SPARSELINK_RETURN_IF_ERROR(MustBeZero("header.rest", p[kOffRest], kind));
      SPARSELINK_RETURN_IF_ERROR(MustBeZero("header.count_lossy", h.count_lossy, kind));
      return check_shape();
    case PacketKind::kSummary:
      SPARSELINK_RETURN_IF_ERROR(MustBeZero("header.granularity", p[kOffGranularity], kind));
      SPARSELINK_RETURN_IF_ERROR(MustBeZero("header.index_codec", p[kOffIndexCodec], kind));
      SPARSELINK_RETURN_IF_ERROR(MustBeZero("header.lossy_codec", p[kOffLossyCodec], kind));
      SPARSELINK_RETURN_IF_ERROR(MustBeZero("header.rest", p[kOffRest], kind));
      SPARSELINK_RETURN_IF_ERROR(MustBeZero("header.count_lossy", h.count_lossy, kind));
      if (h.full_codec != ValueCodec::kFp16 && h.full_codec != ValueCodec::kBf16)
        return Corrupt("header.full_codec", p[kOffFullCodec],
                       "must be fp16 (1) or bf16 (2) in a summary packet");
      if (h.rows != 1) return Corrupt("header.rows", h.rows, "must be 1 in a summary packet");
      SPARSELINK_RETURN_IF_ERROR(check_shape());
      if (h.count_full != h.cols)
        return Corrupt("header.count_full", h.count_full,
                       "must equal cols = " + std::to_string(h.cols) + " in a summary packet");
      return Status::Ok();
    case PacketKind::kContract:
    case PacketKind::kNegotiation:
      for (const auto& [field, off] : {std::pair{"header.granularity", kOffGranularity},
                                       {"header.index_codec", kOffIndexCodec},
                                       {"header.full_codec", kOffFullCodec},
                                       {"header.lossy_codec", kOffLossyCodec},
                                       {"header.rest", kOffRest}}) {
        SPARSELINK_RETURN_IF_ERROR(MustBeZero(field, p[off], kind));
      }
      SPARSELINK_RETURN_IF_ERROR(MustBeZero("header.rows", h.rows, kind));
      SPARSELINK_RETURN_IF_ERROR(MustBeZero("header.cols", h.cols, kind));
      SPARSELINK_RETURN_IF_ERROR(MustBeZero("header.count_full", h.count_full, kind));
      return MustBeZero("header.count_lossy", h.count_lossy, kind);
  }
  return Status::Ok();
}

// Step 4: the section table against what the header implies.
Status CheckSections(std::span<const uint8_t> packet, const DecodeLimits& limits,
                     PacketInfo* info) {
  const PacketHeader& h = info->header;
  const uint8_t* p = packet.data();
  const std::vector<ExpectedSection> expected = ExpectedSections(h);
  const size_t count = p[kOffSectionCount];
  if (count != expected.size()) {
    return Corrupt("header.section_count", count,
                   "this header implies " + std::to_string(expected.size()) + " sections");
  }
  const uint64_t payload_end = packet.size() - kChecksumBytes;
  uint64_t offset = kPacketHeaderBytes + kSectionEntryBytes * count;
  if (offset > payload_end) {
    return Corrupt("header.section_count", count, "the section table runs past the trailer");
  }
  std::vector<SectionInfo> sections;
  sections.reserve(count);
  uint64_t raw_total = 0;
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* e = p + kPacketHeaderBytes + kSectionEntryBytes * i;
    const ExpectedSection& want = expected[i];
    if (e[0] != static_cast<uint8_t>(want.id)) {
      return Corrupt(SectionField(i, "id"), e[0],
                     "expected " + std::to_string(int(want.id)) + " (" +
                         std::string(SectionIdName(want.id)) + ")");
    }
    if ((e[1] & ~kFlagZstd) != 0)
      return Corrupt(SectionField(i, "flags"), e[1], "only bit 0 (zstd) may be set");
    const uint16_t reserved = Load<uint16_t>(e + 2);
    if (reserved != 0) return Corrupt(SectionField(i, "reserved"), reserved, "must be 0");
    SectionInfo s{want.id, (e[1] & kFlagZstd) != 0, 0, Load<uint32_t>(e + 4),
                  Load<uint32_t>(e + 8)};
    if (s.raw_bytes < want.raw_min || s.raw_bytes > want.raw_max) {
      return Corrupt(SectionField(i, "raw_bytes"), s.raw_bytes,
                     want.raw_min == want.raw_max
                         ? "the header implies " + std::to_string(want.raw_min)
                         : "the header implies " + std::to_string(want.raw_min) + " to " +
                               std::to_string(want.raw_max));
    }
    raw_total += s.raw_bytes;
    if (raw_total > limits.max_packet_bytes) {
      return FieldError(ErrorCode::kResourceExhausted, SectionField(i, "raw_bytes"), s.raw_bytes,
                        "brings the sections' raw total past limits.max_packet_bytes = " +
                            std::to_string(limits.max_packet_bytes));
    }
    if (s.zstd) {
      if (s.stored_bytes >= s.raw_bytes) {
        return Corrupt(
            SectionField(i, "stored_bytes"), s.stored_bytes,
            "a zstd section must be smaller than its raw_bytes = " + std::to_string(s.raw_bytes));
      }
    } else if (s.stored_bytes != s.raw_bytes) {
      return Corrupt(SectionField(i, "stored_bytes"), s.stored_bytes,
                     "must equal raw_bytes = " + std::to_string(s.raw_bytes) + " without zstd");
    }
    if (s.stored_bytes > payload_end - offset) {
      return Corrupt(SectionField(i, "stored_bytes"), s.stored_bytes,
                     "runs past the trailer (offset " + std::to_string(offset) + ", trailer at " +
                         std::to_string(payload_end) + ")");
    }
    s.offset = offset;
    offset += s.stored_bytes;
    sections.push_back(s);
  }
  if (offset != payload_end) {
    return Corrupt("unclaimed bytes before the trailer", payload_end - offset,
                   "sections end at " + std::to_string(offset) + " but the trailer starts at " +
                       std::to_string(payload_end));
  }
  info->sections = std::move(sections);
  return Status::Ok();
}

// Step 4, last: what a decoder will allocate for the packet against the decode budget, before
// any decoder allocates it. A few KiB of zstd frames can stand for hundreds of MiB of raw bytes
// and decoded arrays, all within max_packet_bytes and max_entries.
Status CheckDecodeBudget(uint64_t packet_bytes, const DecodeLimits& limits, PacketInfo* info) {
  uint64_t raw = 0;
  for (const SectionInfo& s : info->sections) raw += s.zstd ? s.raw_bytes : 0;
  const uint64_t arrays = internal::DecodedArrayBytes(info->header);
  info->decoded_bytes = raw + arrays;
  const uint64_t scaled = limits.max_expansion > UINT64_MAX / packet_bytes
                              ? UINT64_MAX
                              : limits.max_expansion * packet_bytes;
  const uint64_t budget = std::max(scaled, limits.expansion_floor_bytes);
  if (info->decoded_bytes <= budget) return Status::Ok();
  return FieldError(
      ErrorCode::kResourceExhausted, "decoded bytes", info->decoded_bytes,
      "zstd sections' raw " + std::to_string(raw) + " + decoded arrays " + std::to_string(arrays) +
          " exceed the decode budget " + std::to_string(budget) + " = max(limits.max_expansion = " +
          std::to_string(limits.max_expansion) + " x packet size " + std::to_string(packet_bytes) +
          ", limits.expansion_floor_bytes = " + std::to_string(limits.expansion_floor_bytes) + ")");
}

}  // namespace

Status InspectPacketPartial(std::span<const uint8_t> packet, const DecodeLimits& limits,
                            PacketInfo* info) {
  *info = PacketInfo{};
  info->wire_bytes = packet.size();
  if (packet.size() < kMinPacketBytes) {
    return Corrupt("packet size", packet.size(),
                   "shorter than the 72-byte minimum (header + trailer)");
  }
  const uint8_t* p = packet.data();
  const uint32_t magic = Load<uint32_t>(p + kOffMagic);
  if (magic != kPacketMagic) {
    std::ostringstream v;
    v << "0x" << std::hex << std::setw(8) << std::setfill('0') << magic;
    return FieldError(ErrorCode::kCorruptPacket, "header.magic", v.str(),
                      "not a sparselink packet (expected 0x4b4c5053, \"SPLK\")");
  }
  if (p[kOffVersion] != kWireFormatVersion) {
    return FieldError(ErrorCode::kUnsupported, "header.version", int(p[kOffVersion]),
                      "this build reads format version 1 only");
  }
  PacketHeader& h = info->header;
  h.version = p[kOffVersion];
  h.kind = static_cast<PacketKind>(p[kOffKind]);
  h.granularity = static_cast<Granularity>(p[kOffGranularity]);
  h.index_codec = static_cast<IndexCodec>(p[kOffIndexCodec]);
  h.full_codec = static_cast<ValueCodec>(p[kOffFullCodec]);
  h.lossy_codec = static_cast<ValueCodec>(p[kOffLossyCodec]);
  h.rest = static_cast<RestCodec>(p[kOffRest]);
  h.boundary = Load<uint32_t>(p + kOffBoundary);
  h.contract_version = Load<uint32_t>(p + kOffContractVersion);
  h.step = Load<uint64_t>(p + kOffStep);
  h.micro_batch = Load<uint32_t>(p + kOffMicroBatch);
  h.rows = Load<uint32_t>(p + kOffRows);
  h.cols = Load<uint32_t>(p + kOffCols);
  h.count_full = Load<uint64_t>(p + kOffCountFull);
  h.count_lossy = Load<uint64_t>(p + kOffCountLossy);
  info->header_parsed = true;
  info->dense_bytes = uint64_t{h.rows} * h.cols * sizeof(float);
  info->checksum = Load<uint64_t>(p + packet.size() - kChecksumBytes);

  if (packet.size() > limits.max_packet_bytes) {
    return FieldError(
        ErrorCode::kResourceExhausted, "packet size", packet.size(),
        "exceeds limits.max_packet_bytes = " + std::to_string(limits.max_packet_bytes));
  }
  const uint64_t packet_bytes = Load<uint64_t>(p + kOffPacketBytes);
  if (packet_bytes != packet.size()) {
    return Corrupt("header.packet_bytes", packet_bytes,
                   "does not match the buffer size " + std::to_string(packet.size()) +
                       (packet_bytes < packet.size() ? " (trailing bytes?)" : " (truncated?)"));
  }
  const uint64_t computed = PacketChecksum(packet.first(packet.size() - kChecksumBytes));
  info->checksum_checked = true;
  info->checksum_ok = computed == info->checksum;
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
  // Fuzz builds only: let mutated packets reach the field checks behind the checksum.
  info->checksum_ok = true;
#endif
  if (!info->checksum_ok) {
    return FieldError(ErrorCode::kCorruptPacket, "checksum", Hex(info->checksum),
                      "does not match computed " + Hex(computed));
  }
  SPARSELINK_RETURN_IF_ERROR(CheckHeader(p, h, limits));
  SPARSELINK_RETURN_IF_ERROR(CheckSections(packet, limits, info));
  return CheckDecodeBudget(packet.size(), limits, info);
}

Result<PacketInfo> InspectPacket(std::span<const uint8_t> packet, const DecodeLimits& limits) {
  PacketInfo info;
  SPARSELINK_RETURN_IF_ERROR(InspectPacketPartial(packet, limits, &info));
  return info;
}

Status internal::ParseAndCheckKind(std::span<const uint8_t> packet, const DecodeLimits& limits,
                                   PacketKind want, PacketInfo* info) {
  SPARSELINK_RETURN_IF_ERROR(InspectPacketPartial(packet, limits, info));
  if (info->header.kind != want) {
    return FieldError(ErrorCode::kInvalidArgument, "header.kind", PacketKindName(info->header.kind),
                      "expected a " + std::string(PacketKindName(want)) + " packet");
  }
  return Status::Ok();
}

}  // namespace sparselink
