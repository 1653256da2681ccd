// Negotiation packets (kind 4): the proposal a sender makes and the counter its receiver
// answers with, when the two ends of a boundary negotiate a contract across processes. The
// body (docs/wire-format.md, "Negotiation packets"), 40 bytes:
//   u8 stage (0 proposal, 1 counter) | u8 reason | u8 cap reason | 5 reserved zero bytes |
//   f64 keep | f64 cap (proposal: the link cap; counter: the bound) | u64 rows | u64 cols
// rows and cols are the proposal's (one packet of the step as the sender prices it) and 0 in a
// counter.
#include <bit>
#include <cmath>
#include <string>
#include <vector>

#include "codec/packet_layout.hpp"
#include "codec/packet_reader.hpp"
#include "codec/packet_writer.hpp"
#include "sparselink/codec.hpp"

namespace sparselink {
namespace {

using internal::Assemble;
using internal::Corrupt;
using internal::LabelledHeader;
using internal::Load;
using internal::ParseAndCheckKind;
using internal::RawSection;
using internal::SectionBytes;
using internal::Store;
using internal::Unsupported;

enum class Stage : uint8_t { kProposal = 0, kCounter = 1 };

// The message, as the body holds it.
struct Message {
  Stage stage = Stage::kProposal;
  BoundBy reason = BoundBy::kSenderCoverage;
  BoundBy cap_reason = BoundBy::kSenderLinkBudget;
  double keep = 0;
  double cap = 1;
  uint64_t rows = 0;
  uint64_t cols = 0;
};

Status CheckMessage(const Message& m, ErrorCode code) {
  const auto fraction = [&](std::string_view field, double v) -> Status {
    if (v >= 0.0 && v <= 1.0) return Status::Ok();
    return FieldError(code, field, v, "must be in [0, 1]");
  };
  SPARSELINK_RETURN_IF_ERROR(fraction("negotiation_body.keep", m.keep));
  SPARSELINK_RETURN_IF_ERROR(fraction("negotiation_body.cap", m.cap));
  if (m.stage == Stage::kCounter) {
    if (m.rows != 0) return FieldError(code, "negotiation_body.rows", m.rows, "must be 0");
    if (m.cols != 0) return FieldError(code, "negotiation_body.cols", m.cols, "must be 0");
    return Status::Ok();
  }
  for (const auto& [field, v] :
       {std::pair{"negotiation_body.rows", m.rows}, std::pair{"negotiation_body.cols", m.cols}}) {
    if (v == 0 || v > UINT32_MAX) return FieldError(code, field, v, "must be in [1, 2^32)");
  }
  return Status::Ok();
}

Status EncodeMessage(const Message& m, const PacketLabel& label, std::vector<uint8_t>* out) {
  SPARSELINK_RETURN_IF_ERROR(CheckMessage(m, ErrorCode::kInvalidArgument));
  if (label.micro_batch != 0) {
    return FieldError(ErrorCode::kInvalidArgument, "label.micro_batch", label.micro_batch,
                      "must be 0 for a negotiation (a negotiation is per step)");
  }
  std::vector<RawSection> sections(1);
  sections[0].id = SectionId::kNegotiationBody;
  std::vector<uint8_t>& b = sections[0].raw;
  b.assign(kNegotiationBodyBytes, 0);
  b[0] = static_cast<uint8_t>(m.stage);
  b[1] = static_cast<uint8_t>(m.reason);
  b[2] = static_cast<uint8_t>(m.cap_reason);
  Store<uint64_t>(&b[8], std::bit_cast<uint64_t>(m.keep));
  Store<uint64_t>(&b[16], std::bit_cast<uint64_t>(m.cap));
  Store<uint64_t>(&b[24], m.rows);
  Store<uint64_t>(&b[32], m.cols);
  return Assemble(LabelledHeader(PacketKind::kNegotiation, label), sections,
                  EncodeOptions{.index_codec = IndexCodec::kAuto, .zstd = false}, out);
}

Result<Message> DecodeMessage(std::span<const uint8_t> packet, const DecodeLimits& limits,
                              Stage want, PacketInfo* info) {
  PacketInfo local;
  PacketInfo* pi = info != nullptr ? info : &local;
  SPARSELINK_RETURN_IF_ERROR(ParseAndCheckKind(packet, limits, PacketKind::kNegotiation, pi));
  SectionBytes raw;
  SPARSELINK_RETURN_IF_ERROR(raw.Load(packet, pi->sections[0], 0));
  const uint8_t* b = raw.bytes().data();
  if (b[0] > 1) return Unsupported("negotiation_body.stage", b[0], "negotiation stage");
  if (b[0] != static_cast<uint8_t>(want)) {
    return FieldError(
        ErrorCode::kInvalidArgument, "negotiation_body.stage", int(b[0]),
        want == Stage::kProposal ? "expected a proposal (0)" : "expected a counter (1)");
  }
  for (size_t i = 3; i < 8; ++i) {
    if (b[i] != 0) {
      return Corrupt("negotiation_body.reserved[" + std::to_string(i - 3) + "]", b[i], "must be 0");
    }
  }
  if (b[1] >= kNumBoundBy) return Unsupported("negotiation_body.reason", b[1], "reason");
  if (b[2] >= kNumBoundBy) return Unsupported("negotiation_body.cap_reason", b[2], "reason");
  const Message m{.stage = want,
                  .reason = static_cast<BoundBy>(b[1]),
                  .cap_reason = static_cast<BoundBy>(b[2]),
                  .keep = std::bit_cast<double>(Load<uint64_t>(b + 8)),
                  .cap = std::bit_cast<double>(Load<uint64_t>(b + 16)),
                  .rows = Load<uint64_t>(b + 24),
                  .cols = Load<uint64_t>(b + 32)};
  SPARSELINK_RETURN_IF_ERROR(CheckMessage(m, ErrorCode::kCorruptPacket));
  return m;
}

}  // namespace

Status EncodeProposal(const Proposal& p, const PacketLabel& label, std::vector<uint8_t>* out) {
  return EncodeMessage({.stage = Stage::kProposal,
                        .reason = p.reason,
                        .cap_reason = p.link_reason,
                        .keep = p.keep,
                        .cap = p.link_cap,
                        .rows = p.rows,
                        .cols = p.cols},
                       label, out);
}

Status EncodeCounter(const Counter& c, const PacketLabel& label, std::vector<uint8_t>* out) {
  return EncodeMessage({.stage = Stage::kCounter,
                        .reason = c.reason,
                        .cap_reason = c.bound_reason,
                        .keep = c.keep,
                        .cap = c.bound},
                       label, out);
}

Result<Proposal> DecodeProposal(std::span<const uint8_t> packet, const DecodeLimits& limits,
                                PacketInfo* info) {
  SPARSELINK_ASSIGN_OR_RETURN(const Message m,
                              DecodeMessage(packet, limits, Stage::kProposal, info));
  return Proposal{.keep = m.keep,
                  .reason = m.reason,
                  .link_cap = m.cap,
                  .link_reason = m.cap_reason,
                  .rows = m.rows,
                  .cols = m.cols};
}

Result<Counter> DecodeCounter(std::span<const uint8_t> packet, const DecodeLimits& limits,
                              PacketInfo* info) {
  SPARSELINK_ASSIGN_OR_RETURN(const Message m,
                              DecodeMessage(packet, limits, Stage::kCounter, info));
  return Counter{.keep = m.keep, .reason = m.reason, .bound = m.cap, .bound_reason = m.cap_reason};
}

}  // namespace sparselink
