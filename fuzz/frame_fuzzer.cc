// libFuzzer target: the receive path of the message transports (process group, MPI), which
// reassemble packets from the messages a peer sends (src/transport/frame.hpp). The input is
// cut into messages (its first byte picks the message size); each goes to the assembler as a
// posted buffer of that size would hold it (Gloo) and as an exact message (MPI). The assembler
// may refuse, but never crash, read past a message, allocate past max_packet_bytes, or hand
// back a packet of another length than its header said. Then a packet made of the input is
// framed and must come back whole.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "transport/frame.hpp"

namespace {

using sparselink::internal::FrameAssembler;

void FeedMessages(std::span<const uint8_t> bytes, size_t message_bytes, bool exact) {
  constexpr uint64_t kMaxPacket = 1 << 16;
  FrameAssembler assembler(message_bytes, kMaxPacket);
  std::vector<uint8_t> posted(message_bytes);
  for (size_t at = 0; at < bytes.size(); at += message_bytes) {
    const size_t n = std::min(message_bytes, bytes.size() - at);
    std::span<const uint8_t> message = bytes.subspan(at, n);
    if (!exact) {  // a posted buffer: the message, then whatever the buffer held before
      std::copy(message.begin(), message.end(), posted.begin());
      message = posted;
    }
    auto event = assembler.Feed(message, exact);
    if (!event.ok()) return;
    if (*event == FrameAssembler::Event::kPacket) {
      SPARSELINK_CHECK(assembler.TakePacket().size() <= kMaxPacket);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparselink::internal;
  if (size == 0) return 0;
  const size_t message_bytes = kFrameHeaderBytes + 1 + data[0] % 64;
  const std::span<const uint8_t> rest(data + 1, size - 1);
  FeedMessages(rest, message_bytes, /*exact=*/false);
  FeedMessages(rest, message_bytes, /*exact=*/true);

  // Round trip: the rest of the input as a packet, framed and cut as a sender cuts it.
  std::vector<uint8_t> stream(kFrameHeaderBytes + rest.size());
  WriteFrameHeader(FrameType::kPacket, rest.size(), stream.data());
  std::copy(rest.begin(), rest.end(), stream.begin() + kFrameHeaderBytes);
  FrameAssembler assembler(message_bytes, 1 << 20);
  uint64_t messages = 0;
  for (size_t at = 0; at < stream.size(); at += message_bytes, ++messages) {
    const size_t n = std::min(message_bytes, stream.size() - at);
    auto event = assembler.Feed({stream.data() + at, n}, /*exact=*/true);
    SPARSELINK_CHECK(event.ok());
    if (*event == FrameAssembler::Event::kPacket) {
      const std::vector<uint8_t> packet = assembler.TakePacket();
      SPARSELINK_CHECK(packet.size() == rest.size());
      SPARSELINK_CHECK(std::equal(packet.begin(), packet.end(), rest.begin()));
      SPARSELINK_CHECK(at + n == stream.size());
    }
  }
  SPARSELINK_CHECK(messages == FrameMessages(rest.size(), message_bytes));
  return 0;
}
