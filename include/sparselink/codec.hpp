// Wire format v1: encoding and decoding of packets. docs/wire-format.md is the authority on
// the bytes; this header is the API. Decoding never trusts a length: every field is checked
// against the buffer and the limits before anything is read or allocated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "sparselink/contract.hpp"
#include "sparselink/routing.hpp"
#include "sparselink/status.hpp"
#include "sparselink/types.hpp"

namespace sparselink {

inline constexpr uint32_t kPacketMagic = 0x4B4C5053;  // bytes "SPLK"
inline constexpr uint8_t kWireFormatVersion = 1;

enum class PacketKind : uint8_t {
  kActivation = 0,   // routed forward activation: indices + tiered values (+ rest tier)
  kGradient = 1,     // mask-routed gradient: values only, at the activation's kept positions
  kSummary = 2,      // receiver summary: per-unit mean |gradient|, fp16 or bf16
  kContract = 3,     // a contract announcement (an agreed contract, or its acknowledgement)
  kNegotiation = 4,  // a proposal or a counter of a contract negotiation between two ranks
};
inline constexpr size_t kNumPacketKinds = 5;
inline constexpr std::array<NameRow<PacketKind>, kNumPacketKinds> kPacketKindNames = {{
    {PacketKind::kActivation, "activation"},
    {PacketKind::kGradient, "gradient"},
    {PacketKind::kSummary, "summary"},
    {PacketKind::kContract, "contract"},
    {PacketKind::kNegotiation, "negotiation"},
}};
static_assert(RowsInOrder(kPacketKindNames));
inline constexpr std::string_view PacketKindName(PacketKind k) {
  return EnumName(kPacketKindNames, k);
}

// Section identifiers inside a packet (each appears at most once, in this order).
enum class SectionId : uint8_t {
  kIndex = 1,             // kept positions (bitmap, delta-varint or subset bitmap)
  kTierBits = 2,          // 1 bit per kept entry, 1 = lossy; present only when both tiers are used
  kFullValues = 3,        // full tier values (per-row scales first where the codec has them)
  kLossyValues = 4,       // lossy tier values (likewise)
  kRestBits = 5,          // kSign1: 1 bit per non-kept entry
  kRestCentroids = 6,     // kSign1: 2 fp32 per row
  kGradientValues = 7,    // gradient packet values
  kSummaryValues = 8,     // summary packet values (fp16 or bf16 per unit)
  kContractBody = 9,      // contract packet body
  kNegotiationBody = 10,  // negotiation packet body
};
inline constexpr std::array<NameRow<SectionId>, 10> kSectionIdNames = {{
    {SectionId::kIndex, "index"},
    {SectionId::kTierBits, "tier_bits"},
    {SectionId::kFullValues, "full_values"},
    {SectionId::kLossyValues, "lossy_values"},
    {SectionId::kRestBits, "rest_bits"},
    {SectionId::kRestCentroids, "rest_centroids"},
    {SectionId::kGradientValues, "gradient_values"},
    {SectionId::kSummaryValues, "summary_values"},
    {SectionId::kContractBody, "contract_body"},
    {SectionId::kNegotiationBody, "negotiation_body"},
}};
static_assert(RowsInOrder(kSectionIdNames, 1));
// "index", "tier_bits", ...; "unknown" for a value outside the enum.
inline constexpr std::string_view SectionIdName(SectionId id) {
  return EnumName(kSectionIdNames, id);
}

// Bytes of the kContractBody and kNegotiationBody sections (layout: docs/wire-format.md).
inline constexpr size_t kContractBodyBytes = 32;
inline constexpr size_t kNegotiationBodyBytes = 40;

struct EncodeOptions {
  IndexCodec index_codec = IndexCodec::kAuto;
  bool zstd = false;   // compress each section with zstd when that makes it smaller
  int zstd_level = 3;  // zstd's levels, negative ones included (literals are Huffman-coded always)
  // Value coding row by row (int8) and subset bitmap packing on the OpenMP threads from this
  // many rows x cols on (the same bytes for any thread count). Streams of 2^16 values or more
  // of the 16- and 32-bit codecs are split in chunks on the threads whatever this says.
  size_t parallel_min_entries = kDefaultParallelMinEntries;
};

// Refuse before allocation anything larger than these (docs/limits.md; the receiver's
// configuration, never on the wire).
struct DecodeLimits {
  uint64_t max_packet_bytes = 1ull << 30;
  uint64_t max_entries = 1ull << 31;  // rows * cols
  // The decode budget: what a decoder may allocate for one packet, the zstd sections' raw bytes
  // and the decoded arrays (PacketInfo::decoded_bytes, computed from the header and section
  // table), is at most max_expansion times the packet's size, or expansion_floor_bytes where
  // that is more (so that a small packet of near-constant data, which zstd shrinks far more than
  // real data, still decodes). Checked by every decoder and InspectPacket before any payload is
  // read (kResourceExhausted, "decoded bytes"). The dense output a caller passes in is the
  // caller's and not counted; the KeptMask's bits are. The defaults and the measurements behind
  // them: docs/limits.md.
  uint64_t max_expansion = 1024;
  uint64_t expansion_floor_bytes = 16ull << 20;
  // Not a limit: value decoding and dense writes row by row on the OpenMP threads from this
  // many rows x cols on (the same output for any thread count).
  size_t parallel_min_entries = kDefaultParallelMinEntries;
};

// The fixed header, as decoded. Field meanings: docs/wire-format.md.
struct PacketHeader {
  uint8_t version = kWireFormatVersion;
  PacketKind kind = PacketKind::kActivation;
  Granularity granularity = Granularity::kElement;
  IndexCodec index_codec = IndexCodec::kBitmap;
  ValueCodec full_codec = ValueCodec::kFp32;
  ValueCodec lossy_codec = ValueCodec::kInt8;
  RestCodec rest = RestCodec::kDrop;
  uint32_t boundary = 0;
  uint32_t contract_version = 0;
  uint64_t step = 0;
  uint32_t micro_batch = 0;  // the micro-batch of the step (0 when a step is one batch)
  uint32_t rows = 0;
  uint32_t cols = 0;
  uint64_t count_full = 0;   // kept entries in the full tier (gradient: values; summary: units)
  uint64_t count_lossy = 0;  // kept entries in the lossy tier
};

struct SectionInfo {
  SectionId id;
  bool zstd;
  uint64_t offset;  // of the stored bytes, from the start of the packet
  uint32_t stored_bytes;
  uint32_t raw_bytes;
};

// Everything `inspect` shows: header, sections, sizes, checksum status.
struct PacketInfo {
  PacketHeader header;
  std::vector<SectionInfo> sections;
  uint64_t wire_bytes = 0;
  uint64_t dense_bytes = 0;  // rows * cols * 4
  uint64_t checksum = 0;     // as stored
  bool checksum_ok = false;
  // What a decoder of this packet allocates at most (zstd sections' raw bytes plus the decoded
  // arrays; docs/wire-format.md, "Receiver limits"), once the section table checked out.
  uint64_t decoded_bytes = 0;
  // Set by InspectPacketPartial as far as it got (InspectPacket: both true on success).
  bool header_parsed = false;     // header holds the packet's fields (magic and version ok)
  bool checksum_checked = false;  // checksum_ok is meaningful (length field matched the buffer)
};

// Identification of the packet being encoded.
struct PacketLabel {
  uint32_t boundary = 0;
  uint32_t contract_version = 0;
  uint64_t step = 0;
  uint32_t micro_batch = 0;  // which of the step's micro-batches (0 for a step of one)
};

// Encoders append nothing to `out` on error; on success `out` holds exactly one packet.
// Each allocates `out` (reusing capacity). Thread-safe (no shared state).
Status EncodeActivation(const RoutedTensor& routed, const Contract& contract,
                        const PacketLabel& label, const EncodeOptions& options,
                        std::vector<uint8_t>* out);
// The sender's hot path in one call: router.Route(activation, map, contract, step) into
// `routed` (which the sender keeps as the mask of the backward pass), where step is
// label.step + label.micro_batch * 0x9E3779B97F4A7C15 (mod 2^64), so that random scoring
// draws afresh for each
// micro-batch of a step and as before for micro-batch 0; then the activation
// packet into `out`, byte for byte what EncodeActivation(*routed, ...) writes. Faster than the
// two calls: the bitmap index falls out of the selection (fast router, element granularity,
// cols % 8 == 0) and the router's own output is not validated again. With `column_abs_sums`,
// also the activation's column sums of |a| from the router's pass (RouteExtras). Errors:
// Route's and EncodeActivation's.
Status RouteAndEncode(const Router& router, ConstMatrix activation, const SensitivityMap* map,
                      const Contract& contract, const PacketLabel& label,
                      const EncodeOptions& options, RoutedTensor* routed, std::vector<uint8_t>* out,
                      std::vector<float>* column_abs_sums = nullptr);
// `values` are the gradient at the kept positions of `mask` (GatherAtMask order).
Status EncodeGradientValues(const RoutedTensor& mask, std::span<const float> values,
                            ValueCodec codec, const PacketLabel& label,
                            const EncodeOptions& options, std::vector<uint8_t>* out);
// The same packet from the receiver's KeptMask (the fused decoder's).
Status EncodeGradientValues(const KeptMask& mask, std::span<const float> values, ValueCodec codec,
                            const PacketLabel& label, const EncodeOptions& options,
                            std::vector<uint8_t>* out);
// GatherAtMask + EncodeGradientValues(KeptMask) in one call, checking the mask once: the gradient's
// values at the mask's kept entries (a non-finite one refused and named gradient[r][c]), the
// same packet byte for byte.
Status EncodeGradientFromDense(const KeptMask& mask, ConstMatrix gradient, ValueCodec codec,
                               const PacketLabel& label, const EncodeOptions& options,
                               std::vector<uint8_t>* out);
// Receiver summary: per-unit mean |g| (non-negative, finite), sent as fp16 or bf16 (`codec`;
// anything else is refused). Mean gradients are small: bf16 keeps fp32's range at 8
// significant bits, fp16 turns values below 6.1e-5 subnormal (fewer bits) and below 3e-8
// into 0. Training and the demo send bf16; fp16 is the format's original choice.
Status EncodeSummary(std::span<const float> unit_values, const PacketLabel& label,
                     std::vector<uint8_t>* out, ValueCodec codec = ValueCodec::kFp16);
Status EncodeContract(const Contract& contract, const PacketLabel& label,
                      std::vector<uint8_t>* out);
// A negotiation's proposal (sender -> receiver) and counter (receiver -> sender), as
// negotiation packets (kind 4). `label` names the boundary, the contract in force and the step;
// its micro_batch must be 0. Errors: values out of range (each named), as the decoders would
// refuse them.
Status EncodeProposal(const Proposal& proposal, const PacketLabel& label,
                      std::vector<uint8_t>* out);
Status EncodeCounter(const Counter& counter, const PacketLabel& label, std::vector<uint8_t>* out);

// Parses and checks header, section table, checksum and the decode budget (DecodeLimits); reads
// no section payload.
Result<PacketInfo> InspectPacket(std::span<const uint8_t> packet, const DecodeLimits& limits = {});

// Like InspectPacket, but on error `info` keeps whatever was read before the failing check:
// the header once magic and version parsed, the checksum once the length field matched the
// buffer, the sections once the table checked out. Used by `sparselink inspect`.
Status InspectPacketPartial(std::span<const uint8_t> packet, const DecodeLimits& limits,
                            PacketInfo* info);

// Full decoders. Each verifies kind, checksum and every length; the routed tensor comes back
// with values dequantized to fp32 and passes RoutedTensor::Validate.
Result<RoutedTensor> DecodeActivation(std::span<const uint8_t> packet,
                                      const DecodeLimits& limits = {}, PacketInfo* info = nullptr);
// DecodeActivation + Scatter in one call, bit for bit the same dense tensor (`out` must be
// rows x cols of the packet) and the same checks; fused (no index or value arrays in between)
// for element granularity, bitmap or subset-bitmap index, one tier and rest codec drop, the
// common case.
// Thread-safe; keeps a per-thread value buffer.
Status DecodeActivationToDense(std::span<const uint8_t> packet, MutableMatrix out,
                               const DecodeLimits& limits = {}, PacketInfo* info = nullptr);
// The same, and the packet's mask into `mask` (not null; capacity reused), which MaskOf of the
// decoded RoutedTensor would give: the receiver's copy for the gradient's way back
// (GatherAtMask, EncodeGradientValues). Neither is written before every check has passed.
Status DecodeActivationToDenseAndMask(std::span<const uint8_t> packet, MutableMatrix out,
                                      KeptMask* mask, const DecodeLimits& limits = {},
                                      PacketInfo* info = nullptr);
// `mask` is the receiver's own copy of the activation it sent; its shape and kept count must
// match the header.
Result<std::vector<float>> DecodeGradientValues(std::span<const uint8_t> packet,
                                                const RoutedTensor& mask,
                                                const DecodeLimits& limits = {},
                                                PacketInfo* info = nullptr);
// DecodeGradientValues + ScatterAtMask in one call, checking the mask once: the values, as
// DecodeGradientValues returns them, into `values`, and the sender's dense gradient (rows x cols,
// the values at the mask's positions, zeros elsewhere) into `out`. `out` is not written unless
// every check has passed; on error `values` holds nothing meaningful.
Status DecodeGradientToDense(std::span<const uint8_t> packet, const RoutedTensor& mask,
                             MutableMatrix out, std::vector<float>* values,
                             const DecodeLimits& limits = {}, PacketInfo* info = nullptr);
// Checks a gradient packet as far as that needs no mask (docs/wire-format.md, "Gradient
// packets"): InspectPacket's checks, the kind, the zstd frame, and the value stream: its size,
// every row's scale (finite, not negative), every int8 code (not -128) and int4 code (not -8),
// the int4 padding nibble, every fp32, fp16 and bf16 value finite, and at unit granularity every
// q * scale finite. Every gradient decoder refuses what this refuses (those that are given a
// mask agreeing with the header), naming the same field; what it accepts may still be refused
// for the mask, or at element granularity for a q * scale that overflows. For receivers that
// hold no mask (`sparselink inspect`). Allocates only the raw bytes of a zstd section; one pass
// over the stream, O(packet + raw bytes). Thread-safe.
Status CheckGradientValues(std::span<const uint8_t> packet, const DecodeLimits& limits = {},
                           PacketInfo* info = nullptr);
Result<std::vector<float>> DecodeSummary(std::span<const uint8_t> packet,
                                         const DecodeLimits& limits = {},
                                         PacketInfo* info = nullptr);
Result<Contract> DecodeContract(std::span<const uint8_t> packet, const DecodeLimits& limits = {});
// The negotiation packet's message; refuses the other stage, an unknown reason, a keep or cap
// outside [0, 1], non-zero reserved bytes, and (proposal) rows or cols 0 or above 2^32.
Result<Proposal> DecodeProposal(std::span<const uint8_t> packet, const DecodeLimits& limits = {},
                                PacketInfo* info = nullptr);
Result<Counter> DecodeCounter(std::span<const uint8_t> packet, const DecodeLimits& limits = {},
                              PacketInfo* info = nullptr);

// Value codecs on their own (used by the packet codec and by tests): encode `count` values
// split in rows by `row_counts` (sum == values.size()), per-row scales first where the codec
// has them; decode the inverse. Decode checks `bytes.size()` against the expected size.
// EncodeValues replaces `*out` with exactly ValueStreamBytes(codec, values.size(),
// row_counts.size()) bytes; a row_counts sum other than values.size() is a broken invariant
// (aborts). DecodeValues replaces `*values` (allocating only after the size check) and refuses
// a non-finite value, a negative or non-finite scale, int8 -128, int4 -8 and a non-zero int4
// padding nibble (kCorruptPacket). Both O(count), thread-safe.
void EncodeValues(ValueCodec codec, std::span<const float> values,
                  std::span<const uint32_t> row_counts, std::vector<uint8_t>* out);
Status DecodeValues(ValueCodec codec, std::span<const uint8_t> bytes,
                    std::span<const uint32_t> row_counts, std::vector<float>* values);

// XXH3-64 of `bytes`, seed 0: the packet trailer.
uint64_t PacketChecksum(std::span<const uint8_t> bytes);

}  // namespace sparselink
