// ProcessGroupLink. The sending end copies each message of a frame into a tensor of its own and
// hands it to group->send; a thread completes those sends in order, so that Send waits only
// for room (at most max_messages_in_flight in flight) and a failed send shows on the next call.
// A frame crosses as at most two messages: its header with the packet's first bytes on the
// channel's head tag, and the rest of a long packet as one message on its bulk tag. The first
// message of frame k may be grown to fit frame k - 2 (FirstMessageBytes), so that a steady
// stream of long packets pays one message and one posted receive per packet. The
// receiving end keeps two receives posted on the head tag; a thread waits on them in turn,
// copies each message out, posts the receive again at once, and for a long packet then posts
// one receive of exactly the rest, straight into the packet (one round trip per packet, not
// one per message_bytes), and queues whole packets for Recv. Recv and Send wait on a condition
// variable with their own timeouts, never on a c10d work item: a c10d wait that times out ends
// its work item, and the message it was posted for would then land in a receive nobody reads.
#include "transport/process_group/process_group_link.hpp"

#include <algorithm>
#include <cstring>
#include <exception>
#include <string>
#include <utility>
#include <vector>

namespace sparselink::torch_adapter {

using Clock = std::chrono::steady_clock;
constexpr size_t kMinTimedBytes = 2048;
// The threads wait on work items with an explicit, practically endless timeout: without one,
// Gloo applies the group's own timeout, and a wait that times out closes every connection of
// the group, so a link idle for that long (an evaluation pass, a slow peer) would break.
// Send and Recv keep their own timeouts; a dead peer ends these waits when its socket closes.
constexpr std::chrono::milliseconds kWaitOnWork = std::chrono::hours(24 * 365);

ProcessGroupLink::ProcessGroupLink(c10::intrusive_ptr<c10d::ProcessGroup> group, int peer,
                                   uint32_t channel, const LinkOptions& link_options,
                                   const ProcessGroupTransportOptions& options)
    : group_(std::move(group)),
      peer_(peer),
      channel_(channel),
      link_options_(link_options),
      options_(options) {
  // Receives are posted as the link opens, whichever way it will be used: a peer that sends
  // before this end first calls Recv finds them waiting, and cannot stall on a send that waits
  // for its receive (as two ranks that both send before they receive would).
  std::lock_guard lock(mutex_);
  StartReceiving();
}

ProcessGroupLink::~ProcessGroupLink() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    // Aborting makes a thread blocked on a work item return; the items are not reused.
    for (auto& work : posted_) {
      if (work) work->abort();
    }
    if (bulk_) bulk_->abort();
    for (auto& sent : in_flight_) sent.work->abort();
  }
  changed_.notify_all();
  if (receive_thread_.joinable()) receive_thread_.join();
  if (send_thread_.joinable()) send_thread_.join();
}

void ProcessGroupLink::Fail(const std::string& why) {
  {
    std::lock_guard lock(mutex_);
    if (!failure_) failure_ = why;
  }
  changed_.notify_all();
}

Status ProcessGroupLink::Failed() const {
  return Status(ErrorCode::kClosed, "link to rank " + std::to_string(peer_) + " (channel " +
                                        std::to_string(channel_) + "): " + *failure_);
}

size_t ProcessGroupLink::FirstMessageBytes(uint64_t frame, const uint64_t lengths[2]) const {
  constexpr uint64_t kMaxFirstMessage = uint64_t{64} << 20;
  constexpr uint64_t kRound = 4096;
  if (!options_.grow_first_message || frame < 2) return options_.message_bytes;
  // An eighth of slack, so that packets that vary a little from step to step still fit.
  const uint64_t length = lengths[frame % 2];
  const uint64_t want =
      (length + length / 8 + internal::kFrameHeaderBytes + kRound - 1) / kRound * kRound;
  return std::max<size_t>(options_.message_bytes, std::min(want, kMaxFirstMessage));
}

Status ProcessGroupLink::SendMessage(at::Tensor message, int tag,
                                     std::unique_lock<std::mutex>& lock,
                                     Clock::time_point deadline) {
  if (!changed_.wait_until(lock, deadline, [&] {
        return failure_ || stopping_ || in_flight_.size() < options_.max_messages_in_flight;
      })) {
    return Status(ErrorCode::kTimeout, "link.send: " + std::to_string(in_flight_.size()) +
                                           " messages to rank " + std::to_string(peer_) +
                                           " still in flight");
  }
  if (failure_) return Failed();
  if (stopping_) return Status(ErrorCode::kClosed, "link: shutting down");
  std::vector<at::Tensor> tensors{message};
  c10::intrusive_ptr<c10d::Work> work;
  try {
    work = group_->send(tensors, peer_, tag);
  } catch (const std::exception& e) {
    failure_ = std::string("send failed: ") + e.what();
    return Failed();
  }
  messages_sent_ += 1;
  in_flight_.push_back({std::move(message), std::move(work)});
  if (!send_thread_.joinable()) send_thread_ = std::thread([this] { SendLoop(); });
  changed_.notify_all();
  return Status::Ok();
}

void ProcessGroupLink::SendLoop() {
  std::unique_lock lock(mutex_);
  while (true) {
    changed_.wait(lock, [&] { return stopping_ || !in_flight_.empty(); });
    if (stopping_) return;
    c10::intrusive_ptr<c10d::Work> work = in_flight_.front().work;
    lock.unlock();
    std::string error;
    try {
      work->wait(kWaitOnWork);
    } catch (const std::exception& e) {
      error = e.what();
    }
    lock.lock();
    if (stopping_) return;
    if (!error.empty()) {
      if (!failure_) failure_ = "rank " + std::to_string(peer_) + " is gone (send: " + error + ")";
      changed_.notify_all();
      return;
    }
    in_flight_.pop_front();
    changed_.notify_all();
  }
}

Status ProcessGroupLink::Send(std::span<const uint8_t> packet, uint64_t dense_bytes,
                              std::chrono::milliseconds timeout) {
  if (packet.size() > link_options_.max_packet_bytes) {
    return FieldError(
        ErrorCode::kResourceExhausted, "packet.size", packet.size(),
        "exceeds link.max_packet_bytes = " + std::to_string(link_options_.max_packet_bytes));
  }
  const Clock::time_point deadline = Clock::now() + std::min(timeout, kMaxLinkTimeout);
  std::unique_lock lock(mutex_);
  if (failure_) return Failed();
  if (closed_) return Status(ErrorCode::kClosed, "link: send on a closed link");
  // The first message: the header and as much of the packet as fits; then the rest.
  const size_t first = std::min(
      packet.size(), FirstMessageBytes(frames_sent_, sent_lengths_) - internal::kFrameHeaderBytes);
  at::Tensor head =
      at::empty({static_cast<int64_t>(internal::kFrameHeaderBytes + first)}, at::kByte);
  internal::WriteFrameHeader(internal::FrameType::kPacket, packet.size(), head.data_ptr<uint8_t>());
  if (first > 0) {
    std::memcpy(head.data_ptr<uint8_t>() + internal::kFrameHeaderBytes, packet.data(), first);
  }
  SPARSELINK_RETURN_IF_ERROR(SendMessage(std::move(head), HeadTag(), lock, deadline));
  sent_lengths_[frames_sent_ % 2] = packet.size();
  frames_sent_ += 1;
  if (first < packet.size()) {
    at::Tensor rest = at::empty({static_cast<int64_t>(packet.size() - first)}, at::kByte);
    std::memcpy(rest.data_ptr<uint8_t>(), packet.data() + first, packet.size() - first);
    // A timeout here would leave half a frame on the channel: the link stops being usable.
    if (Status s = SendMessage(std::move(rest), BulkTag(), lock, deadline); !s.ok()) {
      if (!failure_) failure_ = "a frame was cut short: " + s.ToString();
      return s;
    }
  }
  stats_.packets_sent += 1;
  stats_.wire_bytes += packet.size();
  stats_.dense_bytes += dense_bytes;
  return Status::Ok();
}

c10::intrusive_ptr<c10d::Work> ProcessGroupLink::PostReceive(at::Tensor& buffer, int tag) {
  std::vector<at::Tensor> tensors{buffer};
  return group_->recv(tensors, peer_, tag);
}

void ProcessGroupLink::StartReceiving() {
  try {
    for (uint64_t i = 0; i < 2; ++i) {
      posted_bytes_[i] = FirstMessageBytes(i, received_lengths_);
      buffers_[i] = at::empty({static_cast<int64_t>(posted_bytes_[i])}, at::kByte);
      posted_[i] = PostReceive(buffers_[i], HeadTag());
    }
  } catch (const std::exception& e) {
    failure_ = std::string("receive failed: ") + e.what();
    return;
  }
  receive_thread_ = std::thread([this] { ReceiveLoop(); });
}

bool ProcessGroupLink::AwaitReceive(const c10::intrusive_ptr<c10d::Work>& work,
                                    std::unique_lock<std::mutex>& lock) {
  lock.unlock();
  std::string error;
  bool completed = false;
  try {
    completed = work->wait(kWaitOnWork);
  } catch (const std::exception& e) {
    error = e.what();
  }
  lock.lock();
  if (stopping_) return false;
  if (!error.empty() || !completed) {
    if (!failure_) {
      failure_ = "rank " + std::to_string(peer_) +
                 " is gone (receive: " + (error.empty() ? std::string("aborted") : error) + ")";
    }
    changed_.notify_all();
    return false;
  }
  return true;
}

void ProcessGroupLink::ReceiveLoop() {
  internal::FrameAssembler assembler(options_.message_bytes, link_options_.max_packet_bytes);
  std::unique_lock lock(mutex_);
  for (uint64_t message = 0;; ++message) {
    const size_t slot = message % 2;
    // Backpressure: a full queue leaves the receive unposted, and the peer's send waits.
    changed_.wait(lock,
                  [&] { return stopping_ || arrived_.size() < link_options_.max_queued_packets; });
    if (stopping_) return;
    const c10::intrusive_ptr<c10d::Work> head = posted_[slot];
    if (!AwaitReceive(head, lock)) return;
    const Clock::time_point head_arrived = Clock::now();
    const auto* data = buffers_[slot].data_ptr<uint8_t>();
    assembler.SetFirstMessageBytes(posted_bytes_[slot]);
    auto event = assembler.Feed({data, posted_bytes_[slot]}, /*exact=*/false);
    if (!event.ok()) {
      failure_ =
          "rank " + std::to_string(peer_) + " sent a bad frame: " + event.status().ToString();
      changed_.notify_all();
      return;
    }
    if (*event == internal::FrameAssembler::Event::kClose) {
      peer_closed_ = true;
      changed_.notify_all();
      return;  // nothing follows a close frame
    }
    try {
      // The buffer was copied out: post it again for the frame after next, sized from this
      // one; then the rest of a long packet, straight into its place.
      received_lengths_[slot] = assembler.frame_length();
      posted_bytes_[slot] = FirstMessageBytes(message + 2, received_lengths_);
      const auto have = static_cast<size_t>(buffers_[slot].numel());
      if (have < posted_bytes_[slot] || have > 4 * posted_bytes_[slot]) {
        buffers_[slot] = at::empty({static_cast<int64_t>(posted_bytes_[slot])}, at::kByte);
      }
      posted_[slot] = PostReceive(buffers_[slot], HeadTag());
      if (*event == internal::FrameAssembler::Event::kNeedMore) {
        const std::span<uint8_t> rest = assembler.RoomForRest();
        at::Tensor into =
            at::from_blob(rest.data(), {static_cast<int64_t>(rest.size())}, at::kByte);
        bulk_ = PostReceive(into, BulkTag());
        const c10::intrusive_ptr<c10d::Work> bulk = bulk_;
        if (!AwaitReceive(bulk, lock)) return;
        bulk_.reset();
        // The rest left the sender right after the first message: its crossing times the
        // link (a short rest would time mostly the round trip and the thread's wake-up).
        if (rest.size() >= kMinTimedBytes) {
          stats_.timed_bytes += rest.size();
          stats_.timed_seconds +=
              std::chrono::duration<double>(Clock::now() - head_arrived).count();
        }
      }
    } catch (const std::exception& e) {
      if (!failure_) failure_ = std::string("receive failed: ") + e.what();
      changed_.notify_all();
      return;
    }
    arrived_.push_back(assembler.TakePacket());
    changed_.notify_all();
  }
}

Result<std::vector<uint8_t>> ProcessGroupLink::Recv(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  received_any_ = true;
  const auto ready = [&] { return !arrived_.empty() || failure_ || closed_ || peer_closed_; };
  if (!changed_.wait_for(lock, std::min(timeout, kMaxLinkTimeout), ready)) {
    return FieldError(ErrorCode::kTimeout, "link.recv_timeout_ms", timeout.count(),
                      "no packet arrived from rank " + std::to_string(peer_) + " (channel " +
                          std::to_string(channel_) + ")");
  }
  if (!arrived_.empty()) {
    std::vector<uint8_t> packet = std::move(arrived_.front());
    arrived_.pop_front();
    stats_.packets_received += 1;
    changed_.notify_all();
    return packet;
  }
  if (failure_) return Failed();
  return Status(ErrorCode::kClosed,
                peer_closed_ ? "link: the peer closed it and it is drained" : "link: closed");
}

void ProcessGroupLink::Close() {
  std::unique_lock lock(mutex_);
  if (closed_) return;
  closed_ = true;
  // A sending end tells the peer, which sees kClosed once it has read everything before; a
  // receiving end (one that has received and never sent) only stops taking packets.
  if ((messages_sent_ > 0 || !received_any_) && !failure_) {
    at::Tensor header = at::empty({int64_t{internal::kFrameHeaderBytes}}, at::kByte);
    internal::WriteFrameHeader(internal::FrameType::kClose, 0, header.data_ptr<uint8_t>());
    (void)SendMessage(std::move(header), HeadTag(), lock,
                      Clock::now() + std::chrono::milliseconds(1000));
  }
  changed_.notify_all();
}

LinkStats ProcessGroupLink::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace sparselink::torch_adapter
