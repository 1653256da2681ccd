// The framing of packets over message transports (a process group, MPI): a 16-byte frame
// header, then the packet, cut into messages of at most `message_bytes` each. Private to the
// transport backends; docs/wire-format.md ("Frames") is the authority on the bytes.
//
//   u32 magic "SLFR" | u8 version = 1 | u8 type (1 packet, 2 close) | u16 reserved = 0 |
//   u64 packet length
//
// The first message holds the header and the packet's first message_bytes - 16 bytes; each
// later one the next message_bytes (the last one what is left). A close frame has length 0.
// The receiver may not know a message's length (Gloo delivers a short message into a longer
// posted buffer without saying so): the frame header tells it how much of each buffer is the
// packet's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "sparselink/status.hpp"

namespace sparselink::internal {

inline constexpr size_t kFrameHeaderBytes = 16;
inline constexpr uint32_t kFrameMagic = 0x52464C53;  // bytes "SLFR"
inline constexpr uint8_t kFrameVersion = 1;
enum class FrameType : uint8_t { kPacket = 1, kClose = 2 };

// The frame header of a packet of `length` bytes (or a close frame).
void WriteFrameHeader(FrameType type, uint64_t length, uint8_t out[kFrameHeaderBytes]);

// Messages a packet of `length` bytes takes at `message_bytes` per message (> 16).
uint64_t FrameMessages(uint64_t length, size_t message_bytes);

// Reassembles frames from the messages of one channel, in order. Allocates a packet only after
// its header checked out, never more than max_packet_bytes, and only as its bytes arrive (a
// header alone cannot make it reserve the length it claims). Not thread-safe.
class FrameAssembler {
 public:
  FrameAssembler(size_t message_bytes, uint64_t max_packet_bytes)
      : message_bytes_(message_bytes), max_packet_bytes_(max_packet_bytes) {}

  enum class Event { kNeedMore, kPacket, kClose };
  // Takes the next message from `buffer`: the posted buffer it arrived in (its first bytes are
  // the message; with `exact`, the buffer is the message itself and its size must be the one
  // the frame implies). Errors (kCorruptPacket) name the field: magic, version, type,
  // reserved, a length above max_packet_bytes, a short message. After an error the assembler
  // is unusable (the channel has lost its framing).
  Result<Event> Feed(std::span<const uint8_t> buffer, bool exact);
  // The packet that kPacket announced.
  std::vector<uint8_t> TakePacket() { return std::move(packet_); }
  // After a first message left a frame incomplete (kNeedMore): room for all the rest at once,
  // for a transport that receives the rest as one message straight into it. The length was
  // checked against max_packet_bytes; the packet is TakePacket's once the rest has arrived.
  std::span<uint8_t> RoomForRest();
  // The first message of the next frame holds up to `bytes` (> 16) instead of message_bytes:
  // for a transport whose ends agree on a size per frame (ProcessGroupLink's grown heads).
  void SetFirstMessageBytes(size_t bytes) { first_message_bytes_ = bytes; }
  // The length the last frame header announced.
  uint64_t frame_length() const { return frame_length_; }

 private:
  const size_t message_bytes_;
  size_t first_message_bytes_ = message_bytes_;
  uint64_t frame_length_ = 0;
  const uint64_t max_packet_bytes_;
  bool in_frame_ = false;
  uint64_t remaining_ = 0;  // packet bytes still to come in later messages
  std::vector<uint8_t> packet_;
  bool broken_ = false;
};

}  // namespace sparselink::internal
