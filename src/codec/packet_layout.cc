// The packet layout's shared pieces (codec/packet_layout.hpp), the names of packet kinds and
// sections, and the checksum.
#include "codec/packet_layout.hpp"

#include <xxhash.h>
#if defined(SPARSELINK_HAVE_XXH_DISPATCH)
#include <xxh_x86dispatch.h>
#endif

#include <algorithm>

#include "codec/index_codecs.hpp"
#include "simd/kernels.hpp"

namespace sparselink {
namespace {

struct CompressionContext {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ~CompressionContext() { ZSTD_freeCCtx(cctx); }
};
struct DecompressionContext {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  ~DecompressionContext() { ZSTD_freeDCtx(dctx); }
};

}  // namespace

uint64_t PacketChecksum(std::span<const uint8_t> bytes) {
#if defined(SPARSELINK_HAVE_XXH_DISPATCH)
  // libxxhash's own runtime dispatch (SSE2 / AVX2 / AVX-512, the same bits): several times the
  // plain entry point, which the library builds for SSE2 alone
  // (docs/perf-notes.md#xxh3_64bits_dispatch).
  return XXH3_64bits_dispatch(bytes.data(), bytes.size());
#else
  return XXH3_64bits(bytes.data(), bytes.size());
#endif
}

namespace internal {

ZSTD_CCtx* ThreadCompressionContext() {
  thread_local CompressionContext context;
  return context.cctx;
}
ZSTD_DCtx* ThreadDecompressionContext() {
  thread_local DecompressionContext context;
  return context.dctx;
}

std::string SectionField(size_t i, std::string_view what) {
  return "section[" + std::to_string(i) + "]." + std::string(what);
}

Status Corrupt(std::string_view field, uint64_t value, std::string_view why) {
  return FieldError(ErrorCode::kCorruptPacket, field, value, why);
}

Status Unsupported(std::string_view field, int value, std::string_view what) {
  return FieldError(ErrorCode::kUnsupported, field, value,
                    std::string("unknown ") + std::string(what) + " (format v1)");
}

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
      if (h.rest == RestCodec::kSign1) {
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
    case PacketKind::kNegotiation: exact(SectionId::kNegotiationBody, kNegotiationBodyBytes); break;
  }
  return out;
}

// Counted per decoder path and summed where paths differ, so that one figure bounds them all:
// the activation's row bookkeeping is DecodeActivation's row offsets and per-row counts (4 + 8
// bytes a row), or the fused decoder's counts and value starts (4 + 8), plus the KeptMask's
// offsets (8); its arrays per kept entry an index, a tier and a value, and with both tiers each
// tier's values before they interleave. The KeptMask's bits (1 per entry) are
// DecodeActivationToDenseAndMask's alone, counted for every activation decoder so that all three
// accept the same packets. The vector kernels' slack past an array is a constant.
uint64_t DecodedArrayBytes(const PacketHeader& h) {
  constexpr uint64_t kSlackBytes = 2 * simd::kSlack * sizeof(float);
  const uint64_t rows = h.rows;
  switch (h.kind) {
    case PacketKind::kActivation: {
      const uint64_t kept = Kept(h);
      uint64_t bytes = 24 * (rows + 1) + 4 * IndexKept(h) + 9 * kept + (Entries(h) + 7) / 8;
      if (HasTierBits(h)) bytes += 4 * kept;
      if (h.index_codec == IndexCodec::kSubsetBitmap) {
        bytes += 3 * ((uint64_t{h.cols} + 63) / 64 * 8);  // the reader's column mask, union, row
      }
      if (h.rest == RestCodec::kSign1) bytes += (Entries(h) - kept + 7) / 8 + 12 * rows;
      return bytes + kSlackBytes;
    }
    case PacketKind::kGradient:
      // The values, the rows' counts and (row-parallel int8) the rows' starts.
      return 4 * h.count_full + 12 * (rows + 1) + kSlackBytes;
    case PacketKind::kSummary: return 4 * uint64_t{h.cols};
    case PacketKind::kContract: return 0;
    case PacketKind::kNegotiation: return 0;
  }
  return 0;
}

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

Status CheckPaddingZero(std::span<const uint8_t> bits, uint64_t used_bits, std::string_view field,
                        ErrorCode code) {
  if (used_bits % 8 == 0 || bits.empty()) return Status::Ok();
  const unsigned padding = bits.back() >> (used_bits % 8);
  if (padding != 0)
    return FieldError(code, field, padding, "padding bits after the last entry must be 0");
  return Status::Ok();
}

}  // namespace internal
}  // namespace sparselink
