// MpiChannel: one channel of an MPI transport, between this rank and a peer: the state its link's
// callers share with the transport's progress thread, and the MPI work the thread does for it.
// Private to the MPI target.
#pragma once

#include <mpi.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sparselink/link.hpp"
#include "transport/frame.hpp"

namespace sparselink::internal {

// "<call>: <MPI's text for rc>", for the messages of MPI failures.
std::string MpiErrorText(std::string_view call, int rc);

// A frame ready to go: its header, then the packet, in one buffer. Message k of the frame is
// bytes [k * message_bytes, (k + 1) * message_bytes) of it, which is exactly the framing of
// docs/wire-format.md ("Frames"): the first message holds the header and message_bytes - 16
// packet bytes.
using FrameBytes = std::shared_ptr<const std::vector<uint8_t>>;
inline size_t MessagesOf(const std::vector<uint8_t>& frame, size_t message_bytes) {
  return (frame.size() + message_bytes - 1) / message_bytes;
}

// Thread-safety: `shared` and `changed` are guarded by the transport's one mutex; the private
// state behind the progress steps belongs to the progress thread (Collect and Publish run with
// the mutex held, Progress without it, so MPI calls never hold up the link's callers).
class MpiChannel {
 public:
  MpiChannel(int peer, uint32_t id, const LinkOptions& link_options, size_t message_bytes);
  MpiChannel(const MpiChannel&) = delete;
  MpiChannel& operator=(const MpiChannel&) = delete;

  int peer() const { return peer_; }
  uint32_t id() const { return id_; }
  const LinkOptions& link_options() const { return link_options_; }

  struct Shared {
    std::deque<FrameBytes> queued;  // frames Send queued that the thread has not taken yet
    size_t backlog_messages = 0;    // messages queued or sent and not yet taken by the peer
    std::deque<std::vector<uint8_t>> arrived;  // whole packets, in order
    LinkStats stats;
    bool closed = false;        // Close() was called here
    bool peer_closed = false;   // the peer's close frame arrived
    bool detached = false;      // the link is gone: arrivals are taken and dropped
    bool sent_any = false;      // Send or Close queued a frame
    bool received_any = false;  // Recv was called
    bool sends_idle = true;     // nothing of this channel's is queued or sent and not yet taken
    bool receive_idle = true;   // no receive of this channel's is under way in MPI
    std::optional<std::string> failure;
  };
  Shared shared;
  std::condition_variable changed;  // the link's callers wait on it for `shared` to change

  // The progress thread's steps, in this order on every pass. Collect (mutex held) takes the
  // queued frames and notes how many packets may still arrive; Progress (no lock) makes the
  // MPI calls and says whether anything moved; Publish (mutex held) hands completions,
  // arrivals, the close and any failure to the callers.
  void Collect();
  bool Progress(MPI_Comm comm);
  void Publish();
  // Gives up what is still in MPI's hands once the thread has stopped: frees the requests and
  // moves every buffer MPI may still touch to `keep`, which the caller keeps alive.
  void Abandon(std::vector<std::shared_ptr<const void>>& keep);

 private:
  struct Sent {
    MPI_Request request;
    FrameBytes frame;  // keeps the message's bytes alive until the peer took them
  };
  bool PostSends(MPI_Comm comm);
  bool TestSends();
  bool Receive(MPI_Comm comm);
  // Starts receiving the next message if one has arrived; whether one was started.
  bool StartReceive(MPI_Comm comm);
  // Reassembles the message just received.
  void Take(int bytes);
  void Fail(std::string why);     // the callers see `why`
  void FailMpi(std::string why);  // the same, and MPI refused: stop receiving

  const int peer_;
  const uint32_t id_;
  const int tag_;
  const LinkOptions link_options_;
  const size_t message_bytes_;

  // The progress thread's own.
  std::deque<FrameBytes> to_post_;
  std::vector<Sent> sent_;
  MPI_Request receive_ = MPI_REQUEST_NULL;
  std::shared_ptr<uint8_t[]> receive_buffer_;  // message_bytes_, made at the first receive
  std::optional<std::string> oversized_;       // the message being received is too long
  FrameAssembler assembler_;
  size_t room_ = 0;              // packets that may still arrive before Recv takes some
  bool detached_ = false;        // copied from shared by Collect
  bool stop_receiving_ = false;  // the close frame came, or an MPI call failed
  // What the next Publish hands over.
  size_t sends_completed_ = 0;
  std::vector<std::vector<uint8_t>> packets_;
  bool close_seen_ = false;
  std::optional<std::string> failure_;
};

}  // namespace sparselink::internal
