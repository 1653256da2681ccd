// MpiLink: the callers' side of an MPI channel. Send builds the packet's frame (a copy, made
// before taking the transport's mutex so that a large packet does not hold up the progress
// thread) and queues it whole once the backlog has room for its first message, so a Send that
// times out has queued nothing and a frame is never cut short. Recv takes whole packets that
// the progress thread reassembled. Both wait on the channel's condition variable with their
// own timeouts, and count as waiters meanwhile (the thread then polls MPI without pause).
#include "transport/mpi/mpi_link.hpp"

#include <algorithm>
#include <string>
#include <utility>

namespace sparselink::internal {

using Clock = std::chrono::steady_clock;

namespace {

FrameBytes MakeFrame(FrameType type, std::span<const uint8_t> packet) {
  auto frame = std::make_shared<std::vector<uint8_t>>();
  frame->reserve(kFrameHeaderBytes + packet.size());
  frame->resize(kFrameHeaderBytes);
  WriteFrameHeader(type, packet.size(), frame->data());
  frame->insert(frame->end(), packet.begin(), packet.end());
  return frame;
}

}  // namespace

MpiLink::MpiLink(std::shared_ptr<MpiEngine> engine, std::shared_ptr<MpiChannel> channel)
    : engine_(std::move(engine)), channel_(std::move(channel)) {}

MpiLink::~MpiLink() {
  std::lock_guard lock(engine_->mutex());
  channel_->shared.detached = true;
  channel_->shared.arrived.clear();
  engine_->WakeLocked();
}

Status MpiLink::Failed() const {
  return Status(ErrorCode::kClosed, "link to rank " + std::to_string(channel_->peer()) +
                                        " (channel " + std::to_string(channel_->id()) +
                                        "): " + *channel_->shared.failure);
}

Status MpiLink::Queue(FrameBytes frame, std::unique_lock<std::mutex>& lock,
                      Clock::time_point deadline, std::chrono::milliseconds timeout) {
  MpiChannel::Shared& shared = channel_->shared;
  const size_t limit = engine_->options().max_messages_in_flight;
  engine_->BeginWaitLocked();
  const bool room = channel_->changed.wait_until(
      lock, deadline, [&] { return shared.failure || shared.backlog_messages < limit; });
  engine_->EndWaitLocked();
  if (!room) {
    return FieldError(ErrorCode::kTimeout, "link.send_timeout_ms", timeout.count(),
                      std::to_string(shared.backlog_messages) + " messages to rank " +
                          std::to_string(channel_->peer()) + " (channel " +
                          std::to_string(channel_->id()) + ") are not yet taken");
  }
  if (shared.failure) return Failed();
  shared.backlog_messages += MessagesOf(*frame, engine_->options().message_bytes);
  shared.queued.push_back(std::move(frame));
  shared.sent_any = true;
  engine_->WakeLocked();
  return Status::Ok();
}

Status MpiLink::Send(std::span<const uint8_t> packet, uint64_t dense_bytes,
                     std::chrono::milliseconds timeout) {
  const uint64_t limit = channel_->link_options().max_packet_bytes;
  if (packet.size() > limit) {
    return FieldError(ErrorCode::kResourceExhausted, "packet.size", packet.size(),
                      "exceeds link.max_packet_bytes = " + std::to_string(limit));
  }
  const Clock::time_point deadline = Clock::now() + std::min(timeout, kMaxLinkTimeout);
  FrameBytes frame = MakeFrame(FrameType::kPacket, packet);
  std::unique_lock lock(engine_->mutex());
  MpiChannel::Shared& shared = channel_->shared;
  if (shared.failure) return Failed();
  if (shared.closed) return Status(ErrorCode::kClosed, "link: send on a closed link");
  SPARSELINK_RETURN_IF_ERROR(Queue(std::move(frame), lock, deadline, timeout));
  shared.stats.packets_sent += 1;
  shared.stats.wire_bytes += packet.size();
  shared.stats.dense_bytes += dense_bytes;
  return Status::Ok();
}

Result<std::vector<uint8_t>> MpiLink::Recv(std::chrono::milliseconds timeout) {
  std::unique_lock lock(engine_->mutex());
  MpiChannel::Shared& shared = channel_->shared;
  shared.received_any = true;
  const auto ready = [&] {
    return !shared.arrived.empty() || shared.failure || shared.closed || shared.peer_closed;
  };
  if (!ready()) {
    engine_->BeginWaitLocked();
    const bool arrived =
        channel_->changed.wait_for(lock, std::min(timeout, kMaxLinkTimeout), ready);
    engine_->EndWaitLocked();
    if (!arrived) {
      return FieldError(ErrorCode::kTimeout, "link.recv_timeout_ms", timeout.count(),
                        "no packet arrived from rank " + std::to_string(channel_->peer()) +
                            " (channel " + std::to_string(channel_->id()) + ")");
    }
  }
  if (!shared.arrived.empty()) {
    std::vector<uint8_t> packet = std::move(shared.arrived.front());
    shared.arrived.pop_front();
    shared.stats.packets_received += 1;
    engine_->WakeLocked();  // room for one more: the thread may take the next message
    return packet;
  }
  if (shared.failure) return Failed();
  return Status(ErrorCode::kClosed,
                shared.peer_closed ? "link: the peer closed it and it is drained" : "link: closed");
}

void MpiLink::Close() {
  std::unique_lock lock(engine_->mutex());
  MpiChannel::Shared& shared = channel_->shared;
  if (shared.closed) return;
  shared.closed = true;
  // A sending end tells the peer, which sees kClosed once it has read everything before; a
  // receiving end (one that has received and never sent) only stops taking packets.
  if ((shared.sent_any || !shared.received_any) && !shared.failure) {
    const auto timeout = std::chrono::milliseconds(1000);
    (void)Queue(MakeFrame(FrameType::kClose, {}), lock, Clock::now() + timeout, timeout);
  }
  channel_->changed.notify_all();
}

LinkStats MpiLink::stats() const {
  std::lock_guard lock(engine_->mutex());
  return channel_->shared.stats;
}

}  // namespace sparselink::internal
