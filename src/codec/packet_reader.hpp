// Reading a checked packet's sections (private to src/codec): the parse that every decoder
// starts with, the raw bytes of a section (decompressed where stored with zstd), and the check
// of a dense decoder's output buffer.
#pragma once

#include <zstd.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "codec/packet_layout.hpp"
#include "sparselink/codec.hpp"

namespace sparselink::internal {

// InspectPacketPartial, then the kind must be `want` (kInvalidArgument otherwise).
Status ParseAndCheckKind(std::span<const uint8_t> packet, const DecodeLimits& limits,
                         PacketKind want, PacketInfo* info);

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

// A dense decoder's output buffer: present and rows x cols (`whose` names the shape's source).
Status CheckDenseOut(MutableMatrix out, uint32_t rows, uint32_t cols, std::string_view whose);

}  // namespace sparselink::internal
