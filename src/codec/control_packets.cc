// The two packets that carry no routed tensor: the receiver's summary (per-unit mean |g|) and
// the contract announcement, both ways.
#include <bit>
#include <cmath>
#include <string>
#include <vector>

#include "codec/packet_layout.hpp"
#include "codec/packet_reader.hpp"
#include "codec/packet_writer.hpp"
#include "codec/value_codecs.hpp"
#include "sparselink/codec.hpp"

namespace sparselink {
namespace {

using internal::AppendValues;
using internal::Corrupt;
using internal::LabelledHeader;
using internal::Load;
using internal::ParseAndCheckKind;
using internal::RawSection;
using internal::SectionBytes;
using internal::Store;
using internal::Unsupported;

}  // namespace

Status EncodeSummary(std::span<const float> unit_values, const PacketLabel& label,
                     std::vector<uint8_t>* out, ValueCodec codec) {
  if (codec != ValueCodec::kFp16 && codec != ValueCodec::kBf16) {
    return FieldError(ErrorCode::kInvalidArgument, "summary codec", static_cast<int>(codec),
                      "must be fp16 (1) or bf16 (2)");
  }
  if (unit_values.empty())
    return FieldError(ErrorCode::kInvalidArgument, "unit_values.size()", 0, "must be > 0");
  if (unit_values.size() > UINT32_MAX) {
    return FieldError(ErrorCode::kInvalidArgument, "unit_values.size()", unit_values.size(),
                      "must fit in 32 bits");
  }
  for (size_t i = 0; i < unit_values.size(); ++i) {
    const std::string field = "unit_values[" + std::to_string(i) + "]";
    if (!std::isfinite(unit_values[i]))
      return FieldError(ErrorCode::kNonFinite, field, unit_values[i], "must be finite");
    if (unit_values[i] < 0)
      return FieldError(ErrorCode::kInvalidArgument, field, unit_values[i], "must be >= 0");
  }
  PacketHeader h = LabelledHeader(PacketKind::kSummary, label);
  h.full_codec = codec;
  h.rows = 1;
  h.cols = static_cast<uint32_t>(unit_values.size());
  h.count_full = unit_values.size();
  h.count_lossy = 0;
  std::vector<RawSection> sections(1);
  sections[0].id = SectionId::kSummaryValues;
  const uint32_t count = h.cols;
  AppendValues(codec, unit_values, {&count, 1}, &sections[0].raw);
  return Assemble(h, sections, EncodeOptions{.index_codec = IndexCodec::kAuto, .zstd = false}, out);
}

// Contract body, 32 bytes: u32 boundary, u32 version, f64 keep, f64 keep_full, u8 full codec,
// u8 lossy codec, u8 rest, u8 granularity, u8 bound_by, 3 reserved zero bytes.
Status EncodeContract(const Contract& contract, const PacketLabel& label,
                      std::vector<uint8_t>* out) {
  SPARSELINK_RETURN_IF_ERROR(contract.Validate());
  if (label.micro_batch != 0) {
    return FieldError(ErrorCode::kInvalidArgument, "label.micro_batch", label.micro_batch,
                      "must be 0 for a contract (a contract is per step)");
  }
  PacketHeader h = LabelledHeader(PacketKind::kContract, label);
  std::vector<RawSection> sections(1);
  sections[0].id = SectionId::kContractBody;
  std::vector<uint8_t>& b = sections[0].raw;
  b.assign(kContractBodyBytes, 0);
  Store<uint32_t>(&b[0], contract.boundary);
  Store<uint32_t>(&b[4], contract.version);
  Store<uint64_t>(&b[8], std::bit_cast<uint64_t>(contract.keep));
  Store<uint64_t>(&b[16], std::bit_cast<uint64_t>(contract.keep_full));
  b[24] = static_cast<uint8_t>(contract.full_codec);
  b[25] = static_cast<uint8_t>(contract.lossy_codec);
  b[26] = static_cast<uint8_t>(contract.rest);
  b[27] = static_cast<uint8_t>(contract.granularity);
  b[28] = static_cast<uint8_t>(contract.bound_by);
  return Assemble(h, sections, EncodeOptions{.index_codec = IndexCodec::kAuto, .zstd = false}, out);
}

Result<std::vector<float>> DecodeSummary(std::span<const uint8_t> packet,
                                         const DecodeLimits& limits, PacketInfo* info) {
  PacketInfo local;
  PacketInfo* pi = info != nullptr ? info : &local;
  SPARSELINK_RETURN_IF_ERROR(ParseAndCheckKind(packet, limits, PacketKind::kSummary, pi));
  SectionBytes raw;
  SPARSELINK_RETURN_IF_ERROR(raw.Load(packet, pi->sections[0], 0));
  const auto count = static_cast<uint32_t>(pi->header.count_full);
  std::vector<float> values(count);
  Status s = internal::DecodeValuesInto(pi->header.full_codec, raw.bytes(), {&count, 1}, values);
  if (!s.ok()) return Status(s.code(), "summary_values: " + s.message());
  for (size_t i = 0; i < values.size(); ++i) {
    if (std::signbit(values[i]) && values[i] != 0.0f) {
      return FieldError(ErrorCode::kCorruptPacket, "summary_values[" + std::to_string(i) + "]",
                        values[i], "must be >= 0");
    }
  }
  return values;
}

Result<Contract> DecodeContract(std::span<const uint8_t> packet, const DecodeLimits& limits) {
  PacketInfo info;
  SPARSELINK_RETURN_IF_ERROR(ParseAndCheckKind(packet, limits, PacketKind::kContract, &info));
  SectionBytes raw;
  SPARSELINK_RETURN_IF_ERROR(raw.Load(packet, info.sections[0], 0));
  const uint8_t* b = raw.bytes().data();
  for (size_t i = 29; i < kContractBodyBytes; ++i) {
    if (b[i] != 0)
      return Corrupt("contract_body.reserved[" + std::to_string(i - 29) + "]", b[i], "must be 0");
  }
  if (b[24] >= kNumValueCodecs)
    return Unsupported("contract_body.full_codec", b[24], "value codec");
  if (b[25] >= kNumValueCodecs)
    return Unsupported("contract_body.lossy_codec", b[25], "value codec");
  if (b[26] >= kNumRestCodecs) return Unsupported("contract_body.rest", b[26], "rest codec");
  if (b[27] >= kNumGranularities)
    return Unsupported("contract_body.granularity", b[27], "granularity");
  if (b[28] >= kNumBoundBy) return Unsupported("contract_body.bound_by", b[28], "reason");
  Contract c;
  c.boundary = Load<uint32_t>(b);
  c.version = Load<uint32_t>(b + 4);
  c.keep = std::bit_cast<double>(Load<uint64_t>(b + 8));
  c.keep_full = std::bit_cast<double>(Load<uint64_t>(b + 16));
  c.full_codec = static_cast<ValueCodec>(b[24]);
  c.lossy_codec = static_cast<ValueCodec>(b[25]);
  c.rest = static_cast<RestCodec>(b[26]);
  c.granularity = static_cast<Granularity>(b[27]);
  c.bound_by = static_cast<BoundBy>(b[28]);
  Status valid = c.Validate();
  if (!valid.ok()) return Status(ErrorCode::kCorruptPacket, "contract_body: " + valid.message());
  return c;
}

}  // namespace sparselink
