// The packet codec of wire format v1. docs/wire-format.md is the authority on the bytes; this
// file follows it section by section.
//
// Encoding builds each section's raw bytes, optionally replaces a section by its zstd frame
// when that is strictly smaller, then writes header, section table, payloads in table order and
// the XXH3-64 trailer. Which sections a packet has, and the raw size of each, follow from the
// header alone (ExpectedSections), which is what lets the decoder check every length before it
// reads or allocates anything.
//
// Decoding runs the checks in an order where each relies only on the ones before it:
//   1. buffer size >= 72, magic, version (kUnsupported), buffer size <= limits;
//   2. the total-length field equals the buffer size, then the checksum over everything before
//      the trailer (a transmission error is reported as such, not as some field it damaged);
//   3. header fields: known enums (kUnsupported), reserved zero, per-kind rules, rows * cols
//      against the limits, tier counts against rows * cols;
//   4. the section table: count, ids in the expected order, flags, reserved, each raw size
//      equal to (or, for delta-varint and subset-bitmap, within the bounds of) what the header
//      implies, raw sizes of zstd sections against the limits, and the stored sizes tiling the
//      payload exactly;
//   5. payloads (decoders only): decompression to exactly raw_bytes, the index and value
//      streams with their own checks, and RoutedTensor::Validate on the result.
// Every allocation happens after step 4, so its size is bounded by the buffer (8 index bits or
// 2 int4 values per byte at most) or, for zstd sections, by limits.max_packet_bytes.
#include <xxhash.h>
#if defined(SPARSELINK_HAVE_XXH_DISPATCH)
#include <xxh_x86dispatch.h>
#endif
#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_c_literalCompressionMode
#include <zstd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <iomanip>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>

#include "codec/index_codecs.hpp"
#include "codec/own_mask.hpp"
#include "codec/value_codecs.hpp"
#include "core/parallel.hpp"
#include "routing/mask_ops.hpp"
#include "simd/kernels.hpp"
#include "sparselink/codec.hpp"

namespace sparselink {

namespace {
// One zstd context per thread, reused: ZSTD_compress/ZSTD_decompress would allocate and
// initialize a fresh context (hundreds of KiB) for every section of every packet.
struct CompressionContext {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ~CompressionContext() { ZSTD_freeCCtx(cctx); }
};
struct DecompressionContext {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  ~DecompressionContext() { ZSTD_freeDCtx(dctx); }
};
ZSTD_CCtx* ThreadCompressionContext() {
  thread_local CompressionContext context;
  return context.cctx;
}
ZSTD_DCtx* ThreadDecompressionContext() {
  thread_local DecompressionContext context;
  return context.dctx;
}
}  // namespace

std::string_view PacketKindName(PacketKind k) {
  switch (k) {
    case PacketKind::kActivation: return "activation";
    case PacketKind::kGradient: return "gradient";
    case PacketKind::kSummary: return "summary";
    case PacketKind::kContract: return "contract";
  }
  return "unknown";
}

std::string_view SectionIdName(SectionId id) {
  switch (id) {
    case SectionId::kIndex: return "index";
    case SectionId::kTierBits: return "tier_bits";
    case SectionId::kFullValues: return "full_values";
    case SectionId::kLossyValues: return "lossy_values";
    case SectionId::kRestBits: return "rest_bits";
    case SectionId::kRestCentroids: return "rest_centroids";
    case SectionId::kGradientValues: return "gradient_values";
    case SectionId::kSummaryValues: return "summary_values";
    case SectionId::kContractBody: return "contract_body";
  }
  return "unknown";
}

uint64_t PacketChecksum(std::span<const uint8_t> bytes) {
#if defined(SPARSELINK_HAVE_XXH_DISPATCH)
  // libxxhash's own runtime dispatch (SSE2 / AVX2 / AVX-512, the same bits): 0.39 us per 32 KiB
  // here against 1.69 for the plain entry point, which the library builds for SSE2 alone.
  return XXH3_64bits_dispatch(bytes.data(), bytes.size());
#else
  return XXH3_64bits(bytes.data(), bytes.size());
#endif
}

namespace {

using codec_internal::AppendBitmap;
using codec_internal::AppendDeltaVarint;
using codec_internal::AppendValues;
using codec_internal::BitmapBytes;
using codec_internal::ColumnMask;
using codec_internal::DeltaVarintBytes;
using codec_internal::EncodeValues;
using codec_internal::SubsetBitmapBytes;
using codec_internal::WriteSubsetBitmap;

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

std::string Hex(uint64_t v) {
  std::ostringstream out;
  out << "0x" << std::hex << std::setw(16) << std::setfill('0') << v;
  return out.str();
}

std::string SectionField(size_t i, std::string_view what) {
  return "section[" + std::to_string(i) + "]." + std::string(what);
}

Status Corrupt(std::string_view field, uint64_t value, std::string_view why) {
  return FieldError(ErrorCode::kCorruptPacket, field, value, why);
}

// --- What the header implies -------------------------------------------------------------

struct ExpectedSection {
  SectionId id;
  uint64_t raw_min;  // raw size bounds; equal except for a delta-varint or subset-bitmap index
  uint64_t raw_max;
};

bool IsUnit(const PacketHeader& h) { return h.granularity == Granularity::kUnit; }
uint64_t Entries(const PacketHeader& h) { return uint64_t{h.rows} * h.cols; }
uint64_t Kept(const PacketHeader& h) { return h.count_full + h.count_lossy; }
// Index rows and kept columns per index row set (unit granularity stores one shared set).
uint64_t IndexRows(const PacketHeader& h) { return IsUnit(h) ? 1 : h.rows; }
uint64_t IndexKept(const PacketHeader& h) { return IsUnit(h) ? Kept(h) / h.rows : Kept(h); }
bool HasTierBits(const PacketHeader& h) { return h.count_full > 0 && h.count_lossy > 0; }

// The sections a packet with header `h` carries, in order. `h` passed CheckHeader.
std::vector<ExpectedSection> ExpectedSections(const PacketHeader& h) {
  std::vector<ExpectedSection> out;
  auto exact = [&](SectionId id, uint64_t bytes) { out.push_back({id, bytes, bytes}); };
  switch (h.kind) {
    case PacketKind::kActivation: {
      const uint64_t index_rows = IndexRows(h);
      const uint64_t index_kept = IndexKept(h);
      if (h.index_codec == IndexCodec::kBitmap) {
        exact(SectionId::kIndex, BitmapBytes(index_rows, h.cols));
      } else if (h.index_codec == IndexCodec::kSubsetBitmap) {
        // The column mask, then index_rows x A bits: the A masked columns hold every row's kept
        // ones (index_rows * A >= kept) and each is kept somewhere (A <= kept, A <= cols).
        const uint64_t mask_bytes = (uint64_t{h.cols} + 7) / 8;
        out.push_back(
            {SectionId::kIndex, mask_bytes + (index_kept + 7) / 8,
             SubsetBitmapBytes(index_rows, h.cols, std::min<uint64_t>(h.cols, index_kept))});
      } else {
        out.push_back({SectionId::kIndex, index_rows + index_kept, 5 * (index_rows + index_kept)});
      }
      if (HasTierBits(h)) exact(SectionId::kTierBits, (index_kept + 7) / 8);
      if (h.count_full > 0)
        exact(SectionId::kFullValues, ValueStreamBytes(h.full_codec, h.count_full, h.rows));
      if (h.count_lossy > 0)
        exact(SectionId::kLossyValues, ValueStreamBytes(h.lossy_codec, h.count_lossy, h.rows));
      if (h.rest == RestPolicy::kSign1) {
        exact(SectionId::kRestBits, (Entries(h) - Kept(h) + 7) / 8);
        exact(SectionId::kRestCentroids, uint64_t{h.rows} * 2 * sizeof(float));
      }
      break;
    }
    case PacketKind::kGradient:
      exact(SectionId::kGradientValues, ValueStreamBytes(h.full_codec, h.count_full, h.rows));
      break;
    case PacketKind::kSummary:
      exact(SectionId::kSummaryValues, ValueStreamBytes(h.full_codec, h.count_full, 1));
      break;
    case PacketKind::kContract: exact(SectionId::kContractBody, kContractBodyBytes); break;
  }
  return out;
}

// --- Encoding ----------------------------------------------------------------------------

// A value stream still to be encoded: Assemble writes it straight into the packet (or, to
// compress it, into the section's own bytes first). The spans outlive the Assemble call and
// do not point into its output buffer (which Assemble resizes before it reads them).
struct PendingValues {
  ValueCodec codec;
  std::span<const float> values;
  std::span<const uint32_t> row_counts;
  uint64_t bytes() const { return ValueStreamBytes(codec, values.size(), row_counts.size()); }
};

// A section of `bytes` bytes that `write` writes where they go (the int8 gradient, gathered
// and coded row by row; the subset bitmap, packed row by row). `write` may read and write back
// unchanged the 8 bytes after them (a packet always has its checksum there).
struct PendingWrite {
  uint64_t bytes;
  std::function<void(uint8_t*)> write;
};

// A section before compression: its own bytes, or a view of bytes the caller keeps alive
// until Assemble returns (the router's bitmap, which would otherwise be copied once more), or
// a value stream encoded where it goes (the fp16 values of a routed activation would
// otherwise be written, zeroed first, into a buffer of their own and copied once more), or
// bytes a function writes where they go.
struct RawSection {
  SectionId id;
  std::vector<uint8_t> raw;
  std::span<const uint8_t> borrowed;
  std::optional<PendingValues> pending;
  std::optional<PendingWrite> writer;
  std::span<const uint8_t> bytes() const {
    return borrowed.empty() ? std::span<const uint8_t>(raw) : borrowed;
  }
  uint64_t size() const {
    return pending ? pending->bytes() : writer ? writer->bytes : bytes().size();
  }
  // The pending values or writes into `raw` (to compress them).
  void Materialize() {
    if (pending) {
      AppendValues(pending->codec, pending->values, pending->row_counts, &raw);
      pending.reset();
    }
    if (writer) {
      raw.resize(writer->bytes + 8);
      writer->write(raw.data());
      raw.resize(writer->bytes);
      writer.reset();
    }
  }
};

// A section of the given value stream, encoded by Assemble.
RawSection ValueSection(SectionId id, ValueCodec codec, std::span<const float> values,
                        std::span<const uint32_t> row_counts) {
  RawSection section{id, {}, {}, {}, {}};
  section.pending = PendingValues{codec, values, row_counts};
  return section;
}

// Writes header, table, payloads and trailer into *out. Sections are in final order.
Status Assemble(PacketHeader header, std::vector<RawSection>& sections,
                const EncodeOptions& options, std::vector<uint8_t>* out) {
  struct Stored {
    bool zstd = false;
    std::vector<uint8_t> frame;  // the zstd frame when zstd
  };
  std::vector<Stored> stored(sections.size());
  uint64_t total = kPacketHeaderBytes + kSectionEntryBytes * sections.size() + kChecksumBytes;
  for (size_t i = 0; i < sections.size(); ++i) {
    if (sections[i].size() > UINT32_MAX) {
      return FieldError(ErrorCode::kResourceExhausted, SectionField(i, "raw_bytes"),
                        sections[i].size(), "does not fit the 32-bit section size field");
    }
    if (options.zstd) sections[i].Materialize();
    const std::span<const uint8_t> raw = sections[i].bytes();
    if (options.zstd && !raw.empty()) {
      std::vector<uint8_t> frame(ZSTD_compressBound(raw.size()));
      // Literals are always Huffman-coded, even at the fast negative levels (which otherwise
      // store them raw): routed sections are mostly literals (bitmaps, quantized values), so
      // that is where the bytes are won. An experimental zstd parameter, stable in Debian 12's
      // libzstd 1.5.4; a library that refuses it just compresses without it.
      ZSTD_CCtx* cctx = ThreadCompressionContext();
      ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
      ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, options.zstd_level);
      ZSTD_CCtx_setParameter(cctx, ZSTD_c_literalCompressionMode, ZSTD_ps_enable);
      const size_t n = ZSTD_compress2(cctx, frame.data(), frame.size(), raw.data(), raw.size());
      if (!ZSTD_isError(n) && n < raw.size()) {
        frame.resize(n);
        stored[i] = {true, std::move(frame)};
      }
    }
    total += stored[i].zstd ? stored[i].frame.size() : sections[i].size();
  }

  // Every payload byte is written below, so only the header and the section table are
  // cleared (their reserved bytes must be 0); resize keeps whatever capacity `out` has.
  out->resize(total);
  uint8_t* p = out->data();
  std::memset(p, 0, kPacketHeaderBytes + kSectionEntryBytes * sections.size());
  Store<uint32_t>(p + kOffMagic, kPacketMagic);
  p[kOffVersion] = kWireFormatVersion;
  p[kOffKind] = static_cast<uint8_t>(header.kind);
  p[kOffGranularity] = static_cast<uint8_t>(header.granularity);
  p[kOffIndexCodec] = static_cast<uint8_t>(header.index_codec);
  p[kOffFullCodec] = static_cast<uint8_t>(header.full_codec);
  p[kOffLossyCodec] = static_cast<uint8_t>(header.lossy_codec);
  p[kOffRest] = static_cast<uint8_t>(header.rest);
  p[kOffSectionCount] = static_cast<uint8_t>(sections.size());
  Store<uint32_t>(p + kOffBoundary, header.boundary);
  Store<uint32_t>(p + kOffContractVersion, header.contract_version);
  Store<uint32_t>(p + kOffRows, header.rows);
  Store<uint32_t>(p + kOffCols, header.cols);
  Store<uint64_t>(p + kOffStep, header.step);
  Store<uint32_t>(p + kOffMicroBatch, header.micro_batch);
  Store<uint64_t>(p + kOffCountFull, header.count_full);
  Store<uint64_t>(p + kOffCountLossy, header.count_lossy);
  Store<uint64_t>(p + kOffPacketBytes, total);

  uint8_t* entry = p + kPacketHeaderBytes;
  uint8_t* payload = entry + kSectionEntryBytes * sections.size();
  for (size_t i = 0; i < sections.size(); ++i, entry += kSectionEntryBytes) {
    const RawSection& section = sections[i];
    const uint64_t raw_size = section.size();
    const uint64_t stored_size = stored[i].zstd ? stored[i].frame.size() : raw_size;
    entry[0] = static_cast<uint8_t>(section.id);
    entry[1] = stored[i].zstd ? kFlagZstd : 0;
    Store<uint32_t>(entry + 4, static_cast<uint32_t>(stored_size));
    Store<uint32_t>(entry + 8, static_cast<uint32_t>(raw_size));
    if (stored[i].zstd) {
      std::memcpy(payload, stored[i].frame.data(), stored_size);
    } else if (section.pending) {
      EncodeValues(section.pending->codec, section.pending->values, section.pending->row_counts,
                   payload, uint64_t{header.rows} * header.cols >= options.parallel_min_entries);
    } else if (section.writer) {
      section.writer->write(payload);
    } else if (raw_size > 0) {
      std::memcpy(payload, section.bytes().data(), raw_size);
    }
    payload += stored_size;
  }
  Store<uint64_t>(payload, PacketChecksum({p, total - kChecksumBytes}));
  return Status::Ok();
}

// Routed tensors are checked with the routing module's Validate, which speaks of decoded
// packets; on the encoder side the same failures are the caller's arguments.
Status AsArgument(Status s, std::string_view what) {
  if (s.ok()) return s;
  const ErrorCode code =
      s.code() == ErrorCode::kCorruptPacket ? ErrorCode::kInvalidArgument : s.code();
  return Status(code, std::string(what) + ": " + s.message());
}

// Entries [begin, end) of row r in kept order.
std::pair<size_t, size_t> RowRange(const RoutedTensor& t, size_t r) {
  if (t.granularity == Granularity::kUnit) {
    const size_t n = t.indices.size();
    return {r * n, (r + 1) * n};
  }
  return {t.row_offsets[r], t.row_offsets[r + 1]};
}

void PackBit(std::vector<uint8_t>& bits, uint64_t i) {
  bits[i / 8] = static_cast<uint8_t>(bits[i / 8] | (1u << (i % 8)));
}
bool GetBit(std::span<const uint8_t> bits, uint64_t i) { return (bits[i / 8] >> (i % 8)) & 1u; }

Status CheckPaddingZero(std::span<const uint8_t> bits, uint64_t used_bits, std::string_view field,
                        ErrorCode code) {
  if (used_bits % 8 == 0 || bits.empty()) return Status::Ok();
  const unsigned padding = bits.back() >> (used_bits % 8);
  if (padding != 0)
    return FieldError(code, field, padding, "padding bits after the last entry must be 0");
  return Status::Ok();
}

}  // namespace

namespace {

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
    return FieldError(ErrorCode::kInvalidArgument, "routed.rest", RestPolicyName(routed.rest),
                      "differs from the contract's " + std::string(RestPolicyName(contract.rest)));
  }
  if (static_cast<size_t>(options.index_codec) >= kNumIndexCodecs) {
    return FieldError(ErrorCode::kInvalidArgument, "options.index_codec", int(options.index_codec),
                      "unknown index codec");
  }
  const bool unit = routed.granularity == Granularity::kUnit;
  const size_t rows = routed.rows;
  const uint64_t entries = uint64_t{routed.rows} * routed.cols;
  const uint64_t kept = routed.num_kept();
  if (routed.rest == RestPolicy::kSign1) {
    SPARSELINK_RETURN_IF_ERROR(CheckPaddingZero(
        routed.rest_bits, entries - kept, "routed.rest_bits padding", ErrorCode::kInvalidArgument));
  }

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
  h.count_full = kept - h.count_lossy;

  // Index: element granularity writes one set per row; unit granularity the shared set once.
  const std::span<const uint32_t> offsets = routed.row_offsets;
  const uint64_t index_rows = unit ? 1 : rows;
  const uint64_t bitmap_bytes = BitmapBytes(index_rows, routed.cols);
  h.index_codec = options.index_codec;
  // The router's bitmap has its rows on byte boundaries (cols % 8 == 0): the subset bitmap
  // reads it as it is; the bitmap codec borrows it only when that is the wire layout anyway.
  const std::span<const uint8_t> row_bitmap = unit ? std::span<const uint8_t>() : bitmap;
  thread_local std::vector<uint64_t> column_mask;
  uint64_t active = 0;  // the subset bitmap's masked columns
  if (h.index_codec == IndexCodec::kAuto || h.index_codec == IndexCodec::kSubsetBitmap) {
    active = ColumnMask(offsets, routed.indices, routed.cols, row_bitmap, &column_mask);
    if (h.index_codec == IndexCodec::kAuto) {
      // The smallest in raw bytes; ties go to the bitmap, then the subset bitmap. Delta-varint
      // costs at least a byte per kept column and per index row, so past that it is not sized.
      const uint64_t subset_bytes = SubsetBitmapBytes(index_rows, routed.cols, active);
      const uint64_t best = std::min(bitmap_bytes, subset_bytes);
      const uint64_t delta_floor = routed.indices.size() + index_rows;
      h.index_codec = delta_floor < best && DeltaVarintBytes(offsets, routed.indices) < best
                          ? IndexCodec::kDeltaVarint
                      : subset_bytes < bitmap_bytes ? IndexCodec::kSubsetBitmap
                                                    : IndexCodec::kBitmap;
    }
  }
  std::vector<RawSection> sections;
  sections.push_back({SectionId::kIndex, {}});
  if (h.index_codec == IndexCodec::kBitmap && !bitmap.empty()) {
    sections.back().borrowed = bitmap;
  } else if (h.index_codec == IndexCodec::kBitmap) {
    AppendBitmap(offsets, routed.indices, routed.cols, &sections.back().raw);
  } else if (h.index_codec == IndexCodec::kSubsetBitmap) {
    // Packed where it goes in the packet (no buffer of its own to fill and copy).
    const bool parallel = uint64_t{routed.rows} * routed.cols >= options.parallel_min_entries;
    sections.back().writer =
        PendingWrite{SubsetBitmapBytes(index_rows, routed.cols, active), [&, parallel](uint8_t* p) {
                       WriteSubsetBitmap(offsets, routed.indices, routed.cols, row_bitmap,
                                         column_mask, p, parallel);
                     }};
  } else {
    AppendDeltaVarint(offsets, routed.indices, &sections.back().raw);
  }

  // Tier bits (1 = lossy), one per kept entry, or per kept column for unit granularity.
  if (HasTierBits(h)) {
    const size_t n = unit ? routed.indices.size() : kept;
    std::vector<uint8_t> bits((n + 7) / 8, 0);
    for (size_t i = 0; i < n; ++i) {
      if (routed.tiers[i] == Tier::kLossy) PackBit(bits, i);
    }
    sections.push_back({SectionId::kTierBits, std::move(bits)});
  }

  // Value streams: each tier's values in kept order, split in rows. With one tier (the common
  // case) that is routed.values as it is; with two, the values are split first.
  std::vector<uint32_t> row_counts(rows);
  for (size_t r = 0; r < rows; ++r) {
    const auto [begin, end] = RowRange(routed, r);
    row_counts[r] = static_cast<uint32_t>(end - begin);
  }
  if (h.count_lossy == 0 || h.count_full == 0) {
    const bool full = h.count_full > 0;
    if (kept > 0) {
      sections.push_back(ValueSection(full ? SectionId::kFullValues : SectionId::kLossyValues,
                                      full ? h.full_codec : h.lossy_codec, routed.values,
                                      row_counts));
    }
  } else {
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
    sections.push_back({SectionId::kFullValues, {}});
    AppendValues(h.full_codec, full_values, full_counts, &sections.back().raw);
    sections.push_back({SectionId::kLossyValues, {}});
    AppendValues(h.lossy_codec, lossy_values, lossy_counts, &sections.back().raw);
  }
  if (h.rest == RestPolicy::kSign1) {
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
  // The step keys the random policy's draws; the micro-batches of one step draw afresh, and
  // micro-batch 0 keeps the plain step (a one-batch step routes as it always has).
  const uint64_t draw = label.step + uint64_t{label.micro_batch} * 0x9E3779B97F4A7C15ull;
  SPARSELINK_RETURN_IF_ERROR(router.Route(activation, map, contract, draw, routed,
                                          {.bitmap = &bitmap, .column_abs_sums = column_abs_sums}));
  SPARSELINK_DCHECK(routed->Validate().ok());
  return EncodeValidActivation(*routed, bitmap, contract, label, options, out);
}

// A gradient packet's header: the mask's shape, how it was routed and its kept count.
static PacketHeader GradientHeader(uint32_t rows, uint32_t cols, Granularity granularity,
                                   uint64_t kept, ValueCodec codec, const PacketLabel& label) {
  PacketHeader h;
  h.kind = PacketKind::kGradient;
  h.granularity = granularity;
  h.index_codec = IndexCodec::kAuto;  // 0: no index on the wire
  h.full_codec = codec;
  h.lossy_codec = ValueCodec::kFp32;  // 0: unused
  h.rest = RestPolicy::kDrop;
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

// EncodeGradient on either form of the mask: its shape, how it was routed, and its kept
// entries per row (a valid mask's).
// `values_finite`: the caller has screened them already.
static Status EncodeGradientRows(uint32_t rows, uint32_t cols, Granularity granularity,
                                 std::span<const uint32_t> row_counts, uint64_t kept,
                                 std::span<const float> values, ValueCodec codec,
                                 const PacketLabel& label, const EncodeOptions& options,
                                 std::vector<uint8_t>* out, bool values_finite = false) {
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

Status EncodeGradient(const RoutedTensor& mask, std::span<const float> values, ValueCodec codec,
                      const PacketLabel& label, const EncodeOptions& options,
                      std::vector<uint8_t>* out) {
  SPARSELINK_RETURN_IF_ERROR(AsArgument(mask.ValidateMask(), "mask"));
  std::vector<uint32_t> row_counts(mask.rows);
  for (size_t r = 0; r < mask.rows; ++r)
    row_counts[r] = static_cast<uint32_t>(mask.num_kept_in_row(r));
  return EncodeGradientRows(mask.rows, mask.cols, mask.granularity, row_counts, mask.num_kept(),
                            values, codec, label, options, out);
}

Status EncodeGradient(const KeptMask& mask, std::span<const float> values, ValueCodec codec,
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

// EncodeGradientAt, the mask validated (check_mask) or vouched for (EncodeGradientAtOwnMask).
static Status EncodeGradientAtMask(const KeptMask& mask, ConstMatrix gradient, ValueCodec codec,
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
          codec_internal::EncodeInt8Row(row, n, dst + 4 * r, q);
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
      internal::GatherRowsAtMask(mask, gradient, &values, NonFinitePolicy::kReject, parallel));
  thread_local std::vector<uint32_t> row_counts;
  row_counts.resize(mask.rows);
  for (size_t r = 0; r < mask.rows; ++r)
    row_counts[r] = static_cast<uint32_t>(mask.num_kept_in_row(r));
  return EncodeGradientRows(mask.rows, mask.cols, mask.granularity, row_counts, mask.num_kept(),
                            values, codec, label, options, out, /*values_finite=*/true);
}

Status EncodeGradientAt(const KeptMask& mask, ConstMatrix gradient, ValueCodec codec,
                        const PacketLabel& label, const EncodeOptions& options,
                        std::vector<uint8_t>* out) {
  return EncodeGradientAtMask(mask, gradient, codec, label, options, out, /*check_mask=*/true);
}

Status codec_internal::EncodeGradientAtOwnMask(const KeptMask& mask, ConstMatrix gradient,
                                               ValueCodec codec, const PacketLabel& label,
                                               const EncodeOptions& options,
                                               std::vector<uint8_t>* out) {
  return EncodeGradientAtMask(mask, gradient, codec, label, options, out, /*check_mask=*/false);
}

// The header of a packet that carries no routed tensor (summary, contract): kind and label,
// every codec field at its neutral value.
static PacketHeader LabelledHeader(PacketKind kind, const PacketLabel& label) {
  PacketHeader h;
  h.kind = kind;
  h.granularity = Granularity::kElement;
  h.index_codec = IndexCodec::kAuto;
  h.full_codec = ValueCodec::kFp32;
  h.lossy_codec = ValueCodec::kFp32;
  h.rest = RestPolicy::kDrop;
  h.boundary = label.boundary;
  h.contract_version = label.contract_version;
  h.step = label.step;
  h.micro_batch = label.micro_batch;
  return h;
}

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

// --- Parsing -------------------------------------------------------------------------------

namespace {

Status Unsupported(std::string_view field, int value, std::string_view what) {
  return FieldError(ErrorCode::kUnsupported, field, value,
                    std::string("unknown ") + std::string(what) + " (format v1)");
}

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
  if (p[kOffRest] >= kNumRestPolicies)
    return Unsupported("header.rest", p[kOffRest], "rest policy");
  if (h.kind == PacketKind::kContract && h.micro_batch != 0) {
    return Corrupt("header.micro_batch", h.micro_batch, "must be 0 for a contract packet");
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
  h.rest = static_cast<RestPolicy>(p[kOffRest]);
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
  return CheckSections(packet, limits, info);
}

Result<PacketInfo> InspectPacket(std::span<const uint8_t> packet, const DecodeLimits& limits) {
  PacketInfo info;
  SPARSELINK_RETURN_IF_ERROR(InspectPacketPartial(packet, limits, &info));
  return info;
}

// --- Decoding ------------------------------------------------------------------------------

namespace {

// The raw bytes of one checked section: a view into the packet, or its decompressed copy.
class SectionBytes {
 public:
  Status Load(std::span<const uint8_t> packet, const SectionInfo& s, size_t index) {
    const std::span<const uint8_t> stored = packet.subspan(s.offset, s.stored_bytes);
    if (!s.zstd) {
      view_ = stored;
      return Status::Ok();
    }
    // One frame exactly, as the format says: trailing frames, or skippable ones, are refused.
    const size_t frame = ZSTD_findFrameCompressedSize(stored.data(), stored.size());
    if (ZSTD_isError(frame) || frame != stored.size()) {
      return FieldError(
          ErrorCode::kCorruptPacket, SectionField(index, "zstd"),
          ZSTD_isError(frame) ? std::string(ZSTD_getErrorName(frame))
                              : std::to_string(frame) + " bytes",
          "must be one zstd frame of stored_bytes = " + std::to_string(s.stored_bytes));
    }
    owned_.resize(s.raw_bytes);  // bounded by limits.max_packet_bytes in CheckSections
    const size_t n = ZSTD_decompressDCtx(ThreadDecompressionContext(), owned_.data(), owned_.size(),
                                         stored.data(), stored.size());
    if (ZSTD_isError(n)) {
      return FieldError(
          ErrorCode::kCorruptPacket, SectionField(index, "zstd"), ZSTD_getErrorName(n),
          "the frame does not decompress to raw_bytes = " + std::to_string(s.raw_bytes));
    }
    if (n != s.raw_bytes) {
      return Corrupt(SectionField(index, "zstd decompressed bytes"), n,
                     "must equal raw_bytes = " + std::to_string(s.raw_bytes));
    }
    view_ = owned_;
    return Status::Ok();
  }
  std::span<const uint8_t> bytes() const { return view_; }

 private:
  std::vector<uint8_t> owned_;
  std::span<const uint8_t> view_;
};

Status ParseAndCheckKind(std::span<const uint8_t> packet, const DecodeLimits& limits,
                         PacketKind want, PacketInfo* info) {
  SPARSELINK_RETURN_IF_ERROR(InspectPacketPartial(packet, limits, info));
  if (info->header.kind != want) {
    return FieldError(ErrorCode::kInvalidArgument, "header.kind", PacketKindName(info->header.kind),
                      "expected a " + std::string(PacketKindName(want)) + " packet");
  }
  return Status::Ok();
}

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
    SPARSELINK_RETURN_IF_ERROR(codec_internal::DecodeBitmap(index, index_rows, h.cols, index_kept,
                                                            &t->row_offsets, &t->indices));
  } else if (h.index_codec == IndexCodec::kSubsetBitmap) {
    SPARSELINK_RETURN_IF_ERROR(codec_internal::DecodeSubsetBitmap(
        index, index_rows, h.cols, index_kept, &t->row_offsets, &t->indices));
  } else {
    SPARSELINK_RETURN_IF_ERROR(codec_internal::DecodeDeltaVarint(
        index, index_rows, h.cols, index_kept, &t->row_offsets, &t->indices));
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
      Status s =
          codec_internal::DecodeValuesInto(full ? h.full_codec : h.lossy_codec, raw[next++].bytes(),
                                           row_counts, t->values, parallel);
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
    Status s = codec_internal::DecodeValuesInto(h.full_codec, raw[next++].bytes(), full_counts,
                                                full_values, parallel);
    if (!s.ok()) return Status(s.code(), "full_values: " + s.message());
    s = codec_internal::DecodeValuesInto(h.lossy_codec, raw[next++].bytes(), lossy_counts,
                                         lossy_values, parallel);
    if (!s.ok()) return Status(s.code(), "lossy_values: " + s.message());
    t->values.resize(kept);
    size_t fi = 0, li = 0;
    for (size_t i = 0; i < kept; ++i)
      t->values[i] = t->tiers[i] == Tier::kFull ? full_values[fi++] : lossy_values[li++];
  }

  // Rest tier.
  t->rest_bits.clear();
  t->rest_centroids.clear();
  if (h.rest == RestPolicy::kSign1) {
    const std::span<const uint8_t> bits = raw[next++].bytes();
    SPARSELINK_RETURN_IF_ERROR(
        CheckPaddingZero(bits, Entries(h) - kept, "rest_bits padding", ErrorCode::kCorruptPacket));
    t->rest_bits.assign(bits.begin(), bits.end());
    t->rest_centroids.resize(uint64_t{h.rows} * 2);
    Status s =
        codec_internal::DecodeValuesInto(ValueCodec::kFp32, raw[next++].bytes(),
                                         std::vector<uint32_t>(h.rows, 2), t->rest_centroids);
    if (!s.ok()) return Status(s.code(), "rest_centroids: " + s.message());
  }
  Status valid = t->Validate();
  if (!valid.ok())
    return Status(ErrorCode::kCorruptPacket, "decoded activation: " + valid.message());
  return Status::Ok();
}

}  // namespace

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

// Sets bits [first, first + count) of `dst` (zeroed from `first` on) from `src` (LSB first; its
// bits past count zero), `dst` holding `dst_bytes` bytes. The aligned copy also writes the rest
// of its last byte (zeros): callers write rows in ascending order into a zeroed buffer.
static void CopyBitsTo(const uint8_t* src, uint64_t count, uint8_t* dst, size_t dst_bytes,
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
static void StartMask(const PacketHeader& h, std::span<const uint32_t> row_counts, KeptMask* mask) {
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

static Status DecodeToDense(std::span<const uint8_t> packet, MutableMatrix out, KeptMask* mask,
                            const DecodeLimits& limits, PacketInfo* info);

// A dense decoder's output buffer: present and rows x cols (`whose` names the shape's source).
static Status CheckDenseOut(MutableMatrix out, uint32_t rows, uint32_t cols,
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

static Status DecodeToDense(std::span<const uint8_t> packet, MutableMatrix out, KeptMask* mask,
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
      !one_tier || h.rest != RestPolicy::kDrop) {
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
  thread_local codec_internal::SubsetBitmapReader reader;
  thread_local std::vector<uint32_t> row_counts;
  thread_local std::vector<float> values;
  row_counts.resize(h.rows);
  if (subset) {  // its rows' counts come with Start's check of them
    SPARSELINK_RETURN_IF_ERROR(reader.Start(bits, h.rows, h.cols, parallel, row_counts.data()));
  } else {
    SPARSELINK_RETURN_IF_ERROR(codec_internal::CheckBitmapShape(bits, h.rows, h.cols));
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
      codec_internal::Int8StreamPlainlyValid(stream.bytes(), h.rows);
  if (!int8_rows) values.resize(kept + simd::kSlack);  // ScatterBits reads whole vectors
  if (kept > 0 && !int8_rows) {
    Status s = codec_internal::DecodeValuesInto(codec, stream.bytes(), row_counts,
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
  const codec_internal::SubsetBitmapReader* rows_reader = &reader;
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

// DecodeGradient's work into `values` (resized to the kept count); the mask validated
// (check_mask) or vouched for by the caller.
// With `int8_rows`, a plainly valid int8 stream (Int8StreamPlainlyValid) is handed to it
// instead, `values` sized: it decodes the rows itself.
static Status DecodeGradientInto(
    std::span<const uint8_t> packet, const RoutedTensor& mask, const DecodeLimits& limits,
    PacketInfo* pi, std::vector<float>* values, bool check_mask = true,
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
      codec_internal::Int8StreamPlainlyValid(raw.bytes(), h.rows)) {
    int8_rows(raw.bytes());
    return Status::Ok();
  }
  Status s =
      codec_internal::DecodeValuesInto(h.full_codec, raw.bytes(), row_counts, *values,
                                       uint64_t{h.rows} * h.cols >= limits.parallel_min_entries);
  if (!s.ok()) return Status(s.code(), "gradient_values: " + s.message());
  return Status::Ok();
}

Result<std::vector<float>> DecodeGradient(std::span<const uint8_t> packet, const RoutedTensor& mask,
                                          const DecodeLimits& limits, PacketInfo* info) {
  PacketInfo local;
  std::vector<float> values;
  SPARSELINK_RETURN_IF_ERROR(
      DecodeGradientInto(packet, mask, limits, info != nullptr ? info : &local, &values));
  return values;
}

// DecodeGradientToDense, the mask validated (check_mask) or vouched for.
static Status DecodeGradientToDenseAt(std::span<const uint8_t> packet, const RoutedTensor& mask,
                                      MutableMatrix out, std::vector<float>* values,
                                      const DecodeLimits& limits, PacketInfo* info,
                                      bool check_mask) {
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

Status DecodeGradientToDense(std::span<const uint8_t> packet, const RoutedTensor& mask,
                             MutableMatrix out, std::vector<float>* values,
                             const DecodeLimits& limits, PacketInfo* info) {
  return DecodeGradientToDenseAt(packet, mask, out, values, limits, info, /*check_mask=*/true);
}

Status codec_internal::DecodeGradientToDenseOwnMask(std::span<const uint8_t> packet,
                                                    const RoutedTensor& mask, MutableMatrix out,
                                                    std::vector<float>* values,
                                                    const DecodeLimits& limits, PacketInfo* info) {
  return DecodeGradientToDenseAt(packet, mask, out, values, limits, info, /*check_mask=*/false);
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
  Status s =
      codec_internal::DecodeValuesInto(pi->header.full_codec, raw.bytes(), {&count, 1}, values);
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
  if (b[26] >= kNumRestPolicies) return Unsupported("contract_body.rest", b[26], "rest policy");
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
  c.rest = static_cast<RestPolicy>(b[26]);
  c.granularity = static_cast<Granularity>(b[27]);
  c.bound_by = static_cast<BoundBy>(b[28]);
  Status valid = c.Validate();
  if (!valid.ok()) return Status(ErrorCode::kCorruptPacket, "contract_body: " + valid.message());
  return c;
}

}  // namespace sparselink
