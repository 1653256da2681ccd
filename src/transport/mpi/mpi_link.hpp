// MpiLink: one channel between this rank and a peer over an MPI transport
// (sparselink/mpi_transport.hpp describes the design). Private to the MPI target; callers open
// links through the transport.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

#include "sparselink/link.hpp"
#include "transport/mpi/mpi_channel.hpp"
#include "transport/mpi/mpi_engine.hpp"

namespace sparselink::internal {

class MpiLink final : public Link {
 public:
  // `channel` is already added to `engine`.
  MpiLink(std::shared_ptr<MpiEngine> engine, std::shared_ptr<MpiChannel> channel);
  // Detaches the channel: the engine keeps taking (and dropping) what the peer sends on it,
  // and finishes sending what Send and Close queued.
  ~MpiLink() override;

  Status Send(std::span<const uint8_t> packet, uint64_t dense_bytes,
              std::chrono::milliseconds timeout) override;
  Result<std::vector<uint8_t>> Recv(std::chrono::milliseconds timeout) override;
  void Close() override;
  LinkStats stats() const override;
  std::string_view backend() const override { return "mpi"; }

 private:
  // Queues a whole frame once the backlog has room for its first message (kTimeout past
  // `deadline`, naming `timeout`).
  Status Queue(FrameBytes frame, std::unique_lock<std::mutex>& lock,
               std::chrono::steady_clock::time_point deadline, std::chrono::milliseconds timeout);
  Status Failed() const;  // the channel's failure, as the calls report it

  const std::shared_ptr<MpiEngine> engine_;
  const std::shared_ptr<MpiChannel> channel_;
};

}  // namespace sparselink::internal
