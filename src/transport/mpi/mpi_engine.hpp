// MpiEngine: an MPI transport's communicator and the one progress thread that makes every MPI
// call on it once it is set up: the channels' sends, probes and receives, and the collectives
// (the all-gather, and the barrier that ends the transport). Shared by the transport and its
// links, so whichever goes last ends it. Private to the MPI target.
#pragma once

#include <mpi.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "sparselink/mpi_transport.hpp"
#include "transport/mpi/mpi_channel.hpp"

namespace sparselink::internal {

class MpiCollective;

class MpiEngine {
 public:
  // Takes `comm` (a duplicate made for the engine, with MPI_ERRORS_RETURN) and starts the
  // progress thread. `keep_alive` is released after the communicator is freed (the owner of an
  // MPI that the transport started, which finalizes it).
  MpiEngine(MPI_Comm comm, const MpiTransportOptions& options, std::shared_ptr<void> keep_alive);
  // Drains (up to options.drain_timeout: the queued sends, a pending all-gather, then a
  // barrier with the other ranks, so that no rank ends while another still sends to it), stops
  // the thread, abandons what MPI still holds, frees the communicator.
  ~MpiEngine();
  MpiEngine(const MpiEngine&) = delete;
  MpiEngine& operator=(const MpiEngine&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  const MpiTransportOptions& options() const { return options_; }

  // The one mutex of the transport: it guards every channel's `shared` state.
  std::mutex& mutex() { return mutex_; }
  // With the mutex held: the thread has work (a frame queued, room freed); it looks at once.
  void WakeLocked();
  // With the mutex held, around a caller's wait on the thread: while any caller waits the
  // thread polls MPI without pause.
  void BeginWaitLocked();
  void EndWaitLocked() { --waiters_; }

  // Adds a channel for the thread to serve (it stays until the engine ends).
  void Add(std::shared_ptr<MpiChannel> channel);

  // Every rank's bytes, in rank order (Transport::AllGather).
  Result<std::vector<std::vector<uint8_t>>> AllGather(std::span<const uint8_t> mine,
                                                      std::chrono::milliseconds timeout);

 private:
  // Passes until stopped: over the channels and the collective at the head of the queue, the
  // mutex released around the MPI calls.
  void Loop();
  // While draining: queues the closing barrier once nothing is left to send, and says whether
  // the drain is done.
  bool DrainStep();
  // Waits before the next pass when nothing moved (the mutex held).
  void Pause(std::unique_lock<std::mutex>& lock, bool moved);

  MPI_Comm comm_;
  const MpiTransportOptions options_;
  const std::shared_ptr<void> keep_alive_;
  int rank_ = 0;
  int world_size_ = 1;

  std::mutex mutex_;
  std::condition_variable wake_;       // the thread's pause
  std::condition_variable collected_;  // a collective finished, or the drain did
  bool work_pending_ = false;
  int waiters_ = 0;
  bool draining_ = false;
  bool barrier_queued_ = false;
  bool drained_ = false;
  bool stopping_ = false;
  std::vector<std::shared_ptr<MpiChannel>> channels_;
  std::deque<std::shared_ptr<MpiCollective>> collectives_;  // in the order every rank runs them

  // The thread's own: its pause between passes.
  std::chrono::steady_clock::time_point last_moved_;
  std::chrono::microseconds idle_sleep_{0};
  std::thread thread_;
};

}  // namespace sparselink::internal
