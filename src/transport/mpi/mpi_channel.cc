// MpiChannel's MPI work. A channel is one tag (its ChannelId) between two ranks; MPI keeps the
// messages of one tag in order, so one tag suffices where the process-group link needs two.
//
// Sending: every message is an MPI_Issend, which completes only once the peer has matched it
// with a receive. A sender's backlog (messages not yet taken) is then exactly what it has to
// wait for, and a receiver that stops taking packets stops the sender: with MPI_Isend, short
// messages would complete as soon as MPI buffered them at the receiver, which would queue them
// without bound.
//
// Receiving: the thread asks MPI_Improbe whether the channel's next message has arrived and
// receives it with MPI_Imrecv into a buffer of message_bytes, rather than keeping receives
// posted ahead as the process-group link must (Gloo makes a sender wait for a posted receive;
// MPI queues an unmatched message, or its announcement, at the receiver). The probe tells the
// message's length before anything is received, so the frame is checked against exact
// lengths, a longer message than message_bytes is refused by name, a channel that only sends
// holds no receive buffer, and there is never a posted receive to cancel on a timeout or at
// the end (a receive under way is one MPI has matched, which completes). Backpressure is the
// queue of whole packets: the thread probes only while fewer than max_queued_packets wait for
// Recv, so the peer's Issends stay unmatched and its Send runs out of room.
#include "transport/mpi/mpi_channel.hpp"

#include <algorithm>
#include <utility>

namespace sparselink::internal {

std::string MpiErrorText(std::string_view call, int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS) {
    return std::string(call) + ": MPI error " + std::to_string(rc);
  }
  return std::string(call) + ": " + std::string(text, static_cast<size_t>(length));
}

MpiChannel::MpiChannel(int peer, uint32_t id, const LinkOptions& link_options, size_t message_bytes)
    : peer_(peer),
      id_(id),
      tag_(static_cast<int>(id)),
      link_options_(link_options),
      message_bytes_(message_bytes),
      assembler_(message_bytes, link_options.max_packet_bytes) {}

void MpiChannel::Fail(std::string why) {
  if (!failure_) failure_ = std::move(why);
}

void MpiChannel::FailMpi(std::string why) {
  Fail(std::move(why));
  stop_receiving_ = true;  // MPI itself refused: no more calls on this channel's receives
}

void MpiChannel::Collect() {
  while (!shared.queued.empty()) {
    to_post_.push_back(std::move(shared.queued.front()));
    shared.queued.pop_front();
  }
  detached_ = shared.detached;
  const size_t limit = link_options_.max_queued_packets;
  room_ = shared.arrived.size() < limit ? limit - shared.arrived.size() : 0;
  stop_receiving_ = stop_receiving_ || shared.peer_closed;
}

bool MpiChannel::Progress(MPI_Comm comm) {
  bool moved = false;
  if (!failure_) moved |= PostSends(comm);
  moved |= TestSends();  // a failed channel still lets its sends finish
  if (!stop_receiving_ || receive_ != MPI_REQUEST_NULL) moved |= Receive(comm);
  return moved;
}

bool MpiChannel::PostSends(MPI_Comm comm) {
  bool moved = false;
  while (!to_post_.empty() && !failure_) {
    FrameBytes frame = std::move(to_post_.front());
    to_post_.pop_front();
    for (size_t at = 0; at < frame->size(); at += message_bytes_) {
      const auto size = static_cast<int>(std::min(message_bytes_, frame->size() - at));
      MPI_Request request = MPI_REQUEST_NULL;
      const int rc = MPI_Issend(frame->data() + at, size, MPI_BYTE, peer_, tag_, comm, &request);
      if (rc != MPI_SUCCESS) {
        // The frame is cut short: the channel has lost its framing for good.
        FailMpi("sending to rank " + std::to_string(peer_) + " failed (" +
                MpiErrorText("MPI_Issend", rc) + ")");
        break;
      }
      sent_.push_back({request, frame});
      moved = true;
    }
  }
  return moved;
}

bool MpiChannel::TestSends() {
  size_t kept = 0;
  size_t taken = 0;
  for (size_t i = 0; i < sent_.size(); ++i) {
    int done = 0;
    const int rc = MPI_Test(&sent_[i].request, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      Fail("rank " + std::to_string(peer_) + " did not take a message (" +
           MpiErrorText("MPI_Test", rc) + ")");
      // A request that failed is over (MPI freed it); one that MPI still holds stays.
      done = sent_[i].request == MPI_REQUEST_NULL;
    } else if (done) {
      ++taken;
    }
    if (!done) sent_[kept++] = std::move(sent_[i]);
  }
  sent_.resize(kept);
  sends_completed_ += taken;
  return taken > 0;
}

bool MpiChannel::StartReceive(MPI_Comm comm) {
  int found = 0;
  MPI_Message message = MPI_MESSAGE_NULL;
  MPI_Status status;
  int rc = MPI_Improbe(peer_, tag_, comm, &found, &message, &status);
  if (rc != MPI_SUCCESS) {
    FailMpi("probing for rank " + std::to_string(peer_) + " failed (" +
            MpiErrorText("MPI_Improbe", rc) + ")");
    return false;
  }
  if (!found) return false;
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  if (count < 0 || static_cast<size_t>(count) > message_bytes_) {
    // The message is taken all the same (MPI reports it truncated): a matched message must be
    // received, and the channel fails once it is.
    oversized_ =
        FieldError(ErrorCode::kCorruptPacket, "frame.message_bytes", count,
                   "longer than this rank's message_bytes = " + std::to_string(message_bytes_) +
                       " (do the ranks agree?)")
            .message();
    count = static_cast<int>(message_bytes_);
  }
  if (!receive_buffer_) receive_buffer_ = std::make_shared<uint8_t[]>(message_bytes_);
  rc = MPI_Imrecv(receive_buffer_.get(), count, MPI_BYTE, &message, &receive_);
  if (rc != MPI_SUCCESS) {
    FailMpi("receiving from rank " + std::to_string(peer_) + " failed (" +
            MpiErrorText("MPI_Imrecv", rc) + ")");
    return false;
  }
  return true;
}

void MpiChannel::Take(int bytes) {
  // After a bad frame the channel's framing is lost: what follows is taken and dropped, so
  // that the peer's sends still complete and its transport can end.
  if (failure_) return;
  auto event = assembler_.Feed({receive_buffer_.get(), static_cast<size_t>(bytes)}, /*exact=*/true);
  if (!event.ok()) {
    Fail("rank " + std::to_string(peer_) + " sent a bad frame: " + event.status().ToString());
  } else if (*event == FrameAssembler::Event::kClose) {
    close_seen_ = true;
    stop_receiving_ = true;  // nothing follows a close frame
  } else if (*event == FrameAssembler::Event::kPacket) {
    std::vector<uint8_t> packet = assembler_.TakePacket();
    if (!detached_) packets_.push_back(std::move(packet));
  }
}

bool MpiChannel::Receive(MPI_Comm comm) {
  // At most kMessagesPerPass messages a pass: a channel whose peer sends without pause (one
  // that drops what arrives has no queue to fill) must not starve the others.
  constexpr int kMessagesPerPass = 64;
  bool moved = false;
  for (int taken = 0; taken < kMessagesPerPass; ++taken) {
    if (receive_ == MPI_REQUEST_NULL) {
      // A detached or failed channel takes and drops everything, so that the peer's sends (its
      // close frame among them) complete and its transport can end.
      const bool dropping = detached_ || failure_.has_value();
      if (stop_receiving_ || (!dropping && packets_.size() >= room_)) return moved;
      if (!StartReceive(comm)) return moved;
      moved = true;
    }
    int done = 0;
    MPI_Status status;
    const int rc = MPI_Test(&receive_, &done, &status);
    if (rc != MPI_SUCCESS && !oversized_) {
      receive_ = MPI_REQUEST_NULL;
      FailMpi("receiving from rank " + std::to_string(peer_) + " failed (" +
              MpiErrorText("MPI_Test", rc) + ")");
      return true;
    }
    if (!done && rc == MPI_SUCCESS) return moved;
    moved = true;
    receive_ = MPI_REQUEST_NULL;
    if (oversized_) {
      Fail("rank " + std::to_string(peer_) + " sent a bad frame: " + *oversized_);
      oversized_.reset();
      continue;
    }
    int bytes = 0;
    MPI_Get_count(&status, MPI_BYTE, &bytes);
    Take(bytes);
  }
  return moved;
}

void MpiChannel::Publish() {
  bool notify = false;
  if (sends_completed_ > 0) {
    shared.backlog_messages -= std::min(sends_completed_, shared.backlog_messages);
    sends_completed_ = 0;
    notify = true;
  }
  if (!packets_.empty()) {
    if (!shared.detached) {
      for (auto& packet : packets_) shared.arrived.push_back(std::move(packet));
    }
    packets_.clear();
    notify = true;
  }
  if (close_seen_ && !shared.peer_closed) {
    shared.peer_closed = true;
    notify = true;
  }
  if (failure_ && !shared.failure) {
    shared.failure = *failure_;
    notify = true;
  }
  shared.sends_idle = shared.queued.empty() && to_post_.empty() && sent_.empty();
  shared.receive_idle = receive_ == MPI_REQUEST_NULL;
  if (notify) changed.notify_all();
}

void MpiChannel::Abandon(std::vector<std::shared_ptr<const void>>& keep) {
  for (Sent& sent : sent_) {
    MPI_Request_free(&sent.request);
    keep.push_back(std::move(sent.frame));
  }
  sent_.clear();
  if (receive_ != MPI_REQUEST_NULL) {
    MPI_Request_free(&receive_);
    keep.push_back(std::move(receive_buffer_));
  }
}

}  // namespace sparselink::internal
