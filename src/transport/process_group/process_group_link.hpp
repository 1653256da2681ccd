// ProcessGroupLink: one channel between this rank and a peer over a c10d::ProcessGroup
// (sparselink/torch/process_group_transport.hpp describes the framing). Private to the
// process-group target; callers open links through the transport.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "sparselink/torch/process_group_transport.hpp"
#include "transport/frame.hpp"

namespace sparselink::torch_adapter {

class ProcessGroupLink final : public Link {
 public:
  ProcessGroupLink(c10::intrusive_ptr<c10d::ProcessGroup> group, int peer, uint32_t channel,
                   const LinkOptions& link_options, const ProcessGroupTransportOptions& options);
  ~ProcessGroupLink() override;

  Status Send(std::span<const uint8_t> packet, uint64_t dense_bytes,
              std::chrono::milliseconds timeout) override;
  Result<std::vector<uint8_t>> Recv(std::chrono::milliseconds timeout) override;
  void Close() override;
  LinkStats stats() const override;
  std::string_view backend() const override { return "process_group"; }

 private:
  struct InFlight {
    at::Tensor message;
    c10::intrusive_ptr<c10d::Work> work;
  };
  // A frame's first message goes on the head tag, the rest of a long packet as one message on
  // the bulk tag.
  int HeadTag() const { return static_cast<int>(2 * channel_); }
  int BulkTag() const { return static_cast<int>(2 * channel_ + 1); }
  // Queues one message (a tensor of its own) for the peer; waits for room (kTimeout, kClosed).
  Status SendMessage(at::Tensor message, int tag, std::unique_lock<std::mutex>& lock,
                     std::chrono::steady_clock::time_point deadline);
  // Bytes of frame `frame`'s first message, from the length of frame `frame - 2` in `lengths`
  // (indexed by frame % 2): the receiver posts frame k's receive once frame k - 2 arrived.
  size_t FirstMessageBytes(uint64_t frame, const uint64_t lengths[2]) const;
  void SendLoop();     // completes the sends in flight, in order
  void ReceiveLoop();  // waits on the posted receives in turn and reassembles frames
  // Waits (without the lock) for `work`; false once the link stops or fails.
  bool AwaitReceive(const c10::intrusive_ptr<c10d::Work>& work, std::unique_lock<std::mutex>& lock);
  c10::intrusive_ptr<c10d::Work> PostReceive(at::Tensor& buffer, int tag);
  void StartReceiving();              // posts the two receives and starts the thread
  void Fail(const std::string& why);  // the peer or the group failed: every call refuses
  Status Failed() const;              // the failure, as the calls report it

  const c10::intrusive_ptr<c10d::ProcessGroup> group_;
  const int peer_;
  const uint32_t channel_;
  const LinkOptions link_options_;
  const ProcessGroupTransportOptions options_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  LinkStats stats_;
  bool closed_ = false;       // Close() was called here
  bool peer_closed_ = false;  // the peer's close frame arrived
  bool stopping_ = false;     // the destructor runs
  std::optional<std::string> failure_;

  // Sending end.
  uint64_t messages_sent_ = 0;
  uint64_t frames_sent_ = 0;
  uint64_t sent_lengths_[2] = {0, 0};
  std::deque<InFlight> in_flight_;
  std::thread send_thread_;

  // Receiving end.
  bool received_any_ = false;  // Recv was called
  at::Tensor buffers_[2];
  size_t posted_bytes_[2] = {0, 0};  // the first-message size each receive was posted for
  uint64_t received_lengths_[2] = {0, 0};
  c10::intrusive_ptr<c10d::Work> posted_[2];  // both on the head tag, matched in turn
  c10::intrusive_ptr<c10d::Work> bulk_;       // the rest of a long packet, when posted
  std::deque<std::vector<uint8_t>> arrived_;  // whole packets, in order
  std::thread receive_thread_;
};

}  // namespace sparselink::torch_adapter
