// The layout of a wire format v1 packet as the packet codec's files share it (private to
// src/codec): header field offsets, little-endian stores and loads, the sections a header
// implies, and the small checks and messages every encoder and decoder uses.
// docs/wire-format.md is the authority on the bytes.
#pragma once

#include <zstd.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sparselink/codec.hpp"

namespace sparselink::internal {

constexpr size_t kMinPacketBytes = kPacketHeaderBytes + kChecksumBytes;
// Whatever the limits say, rows * cols above this is refused, so that every size computed
// from the header (at most 32 bits per entry) stays far inside 64-bit arithmetic.
constexpr uint64_t kMaxEntriesHard = 1ull << 56;
constexpr uint8_t kFlagZstd = 0x01;

// Header field offsets (docs/wire-format.md, "Header").
enum HeaderOffset : size_t {
  kOffMagic = 0,
  kOffVersion = 4,
  kOffKind = 5,
  kOffGranularity = 6,
  kOffIndexCodec = 7,
  kOffFullCodec = 8,
  kOffLossyCodec = 9,
  kOffRest = 10,
  kOffSectionCount = 11,
  kOffBoundary = 12,
  kOffContractVersion = 16,
  kOffRows = 20,
  kOffCols = 24,
  kOffMicroBatch = 28,
  kOffStep = 32,
  kOffCountFull = 40,
  kOffCountLossy = 48,
  kOffPacketBytes = 56,
};

template <typename T>
void Store(uint8_t* p, T v) {
  for (size_t i = 0; i < sizeof(T); ++i)
    p[i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
}
template <typename T>
T Load(const uint8_t* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return static_cast<T>(v);
}

// "section[i].what": the name of a section table field.
std::string SectionField(size_t i, std::string_view what);
// A kCorruptPacket error naming the field and its value.
Status Corrupt(std::string_view field, uint64_t value, std::string_view why);
// A kUnsupported error: a value outside format v1's enum for the field.
Status Unsupported(std::string_view field, int value, std::string_view what);

// --- What the header implies ---

struct ExpectedSection {
  SectionId id;
  uint64_t raw_min;  // raw size bounds; equal except for a delta-varint or subset-bitmap index
  uint64_t raw_max;
};

inline bool IsUnit(const PacketHeader& h) { return h.granularity == Granularity::kUnit; }
inline uint64_t Entries(const PacketHeader& h) { return uint64_t{h.rows} * h.cols; }
inline uint64_t Kept(const PacketHeader& h) { return h.count_full + h.count_lossy; }
// Index rows and kept columns per index row set (unit granularity stores one shared set).
inline uint64_t IndexRows(const PacketHeader& h) { return IsUnit(h) ? 1 : h.rows; }
inline uint64_t IndexKept(const PacketHeader& h) { return IsUnit(h) ? Kept(h) / h.rows : Kept(h); }
inline bool HasTierBits(const PacketHeader& h) { return h.count_full > 0 && h.count_lossy > 0; }

// The sections a packet with header `h` carries, in order. `h` passed CheckHeader.
std::vector<ExpectedSection> ExpectedSections(const PacketHeader& h);

// What a decoder of a packet with header `h` (checked) allocates besides the zstd sections' raw
// copies: an upper bound over the decoders of its kind, O(1) (docs/wire-format.md, "Receiver
// limits"). Per-thread scratch of one row (the subset bitmap's, the dense int8 expansion's) is
// not counted.
uint64_t DecodedArrayBytes(const PacketHeader& h);

// The calling thread's zstd contexts, reused: ZSTD_compress/ZSTD_decompress would allocate and
// initialize a fresh context (hundreds of KiB) for every section of every packet.
ZSTD_CCtx* ThreadCompressionContext();
ZSTD_DCtx* ThreadDecompressionContext();

// Routed tensors are checked with the routing module's Validate, which speaks of decoded
// packets; on the encoder side the same failures are the caller's arguments.
Status AsArgument(Status s, std::string_view what);

// Entries [begin, end) of row r in kept order.
std::pair<size_t, size_t> RowRange(const RoutedTensor& t, size_t r);

inline void PackBit(std::vector<uint8_t>& bits, uint64_t i) {
  bits[i / 8] = static_cast<uint8_t>(bits[i / 8] | (1u << (i % 8)));
}
inline bool GetBit(std::span<const uint8_t> bits, uint64_t i) {
  return (bits[i / 8] >> (i % 8)) & 1u;
}
// The bits of the last byte past `used_bits` must be zero; `code` is the error's.
Status CheckPaddingZero(std::span<const uint8_t> bits, uint64_t used_bits, std::string_view field,
                        ErrorCode code);

}  // namespace sparselink::internal
