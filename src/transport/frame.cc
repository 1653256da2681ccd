#include "transport/frame.hpp"

#include <algorithm>
#include <cstring>
#include <string>

namespace sparselink::internal {
namespace {

template <typename T>
T LoadLe(const uint8_t* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return static_cast<T>(v);
}

Status Corrupt(std::string_view field, uint64_t value, std::string_view why) {
  return FieldError(ErrorCode::kCorruptPacket, field, value, why);
}

}  // namespace

void WriteFrameHeader(FrameType type, uint64_t length, uint8_t out[kFrameHeaderBytes]) {
  for (size_t i = 0; i < 4; ++i) out[i] = static_cast<uint8_t>(kFrameMagic >> (8 * i));
  out[4] = kFrameVersion;
  out[5] = static_cast<uint8_t>(type);
  out[6] = 0;
  out[7] = 0;
  for (size_t i = 0; i < 8; ++i) out[8 + i] = static_cast<uint8_t>(length >> (8 * i));
}

uint64_t FrameMessages(uint64_t length, size_t message_bytes) {
  const uint64_t first = message_bytes - kFrameHeaderBytes;
  if (length <= first) return 1;
  return 1 + (length - first + message_bytes - 1) / message_bytes;
}

Result<FrameAssembler::Event> FrameAssembler::Feed(std::span<const uint8_t> buffer, bool exact) {
  if (broken_) return Status(ErrorCode::kCorruptPacket, "frame: the channel lost its framing");
  broken_ = true;  // until this message checks out
  if (!in_frame_) {
    if (buffer.size() < kFrameHeaderBytes) {
      return Corrupt("frame.message_bytes", buffer.size(), "shorter than the 16-byte header");
    }
    const uint8_t* h = buffer.data();
    const auto magic = LoadLe<uint32_t>(h);
    if (magic != kFrameMagic) return Corrupt("frame.magic", magic, "not a sparselink frame");
    if (h[4] != kFrameVersion) return Corrupt("frame.version", h[4], "this build reads 1");
    if (h[5] != static_cast<uint8_t>(FrameType::kPacket) &&
        h[5] != static_cast<uint8_t>(FrameType::kClose)) {
      return Corrupt("frame.type", h[5], "must be 1 (packet) or 2 (close)");
    }
    const auto reserved = LoadLe<uint16_t>(h + 6);
    if (reserved != 0) return Corrupt("frame.reserved", reserved, "must be 0");
    const auto length = LoadLe<uint64_t>(h + 8);
    if (h[5] == static_cast<uint8_t>(FrameType::kClose)) {
      if (length != 0) return Corrupt("frame.length", length, "must be 0 in a close frame");
      if (exact && buffer.size() != kFrameHeaderBytes) {
        return Corrupt("frame.message_bytes", buffer.size(), "a close frame is 16 bytes");
      }
      broken_ = false;
      return Event::kClose;
    }
    if (length > max_packet_bytes_) {
      return Corrupt("frame.length", length,
                     "exceeds link.max_packet_bytes = " + std::to_string(max_packet_bytes_));
    }
    const uint64_t here = std::min<uint64_t>(length, first_message_bytes_ - kFrameHeaderBytes);
    if (buffer.size() < kFrameHeaderBytes + here ||
        (exact && buffer.size() != kFrameHeaderBytes + here)) {
      return Corrupt("frame.message_bytes", buffer.size(),
                     "the frame's first message is " + std::to_string(kFrameHeaderBytes + here));
    }
    frame_length_ = length;
    packet_.assign(h + kFrameHeaderBytes, h + kFrameHeaderBytes + here);
    remaining_ = length - here;
    in_frame_ = true;
  } else {
    const uint64_t here = std::min<uint64_t>(remaining_, message_bytes_);
    if (buffer.size() < here || (exact && buffer.size() != here)) {
      return Corrupt("frame.message_bytes", buffer.size(),
                     "the frame's next message is " + std::to_string(here));
    }
    packet_.insert(packet_.end(), buffer.begin(), buffer.begin() + static_cast<ptrdiff_t>(here));
    remaining_ -= here;
  }
  broken_ = false;
  if (remaining_ > 0) return Event::kNeedMore;
  in_frame_ = false;
  return Event::kPacket;
}

std::span<uint8_t> FrameAssembler::RoomForRest() {
  const size_t have = packet_.size();
  packet_.resize(have + remaining_);
  const std::span<uint8_t> rest(packet_.data() + have, remaining_);
  remaining_ = 0;
  in_frame_ = false;
  return rest;
}

}  // namespace sparselink::internal
