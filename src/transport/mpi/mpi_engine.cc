// MpiEngine. The progress thread runs passes: under the mutex it collects what the links' callers
// queued, then without it makes the MPI calls (each channel's sends, tests, probes and receives;
// the collective at the head of the queue), then under the mutex again publishes what
// completed and wakes the callers. Callers never call MPI: they queue work and wait on
// condition variables with their own timeouts.
//
// Why one thread: OpenMPI's point-to-point engine (ob1) moves a message only while some thread
// of the process is inside an MPI call (it has no progress thread of its own), so a stage that
// sends and then computes would hold its own transfer until its next call; the thread keeps the
// transfers moving meanwhile. Polling costs a core, so the thread polls without pause only
// while a caller waits on it or for kSpinWindow after something last moved (long enough for a
// peer asleep in its own pause to answer a handshake), and otherwise sleeps between passes in
// doubling steps from kMinIdleSleep to kMaxIdleSleep; a caller who queues work or starts to wait
// wakes it at once.
//
// Collectives run one at a time in the order they were asked for, the same on every rank: an
// all-gather is two of them (MPI_Iallgather of the sizes, then MPI_Iallgatherv of the bytes),
// and the second cannot be posted before the first is done. A caller that times out leaves its
// all-gather in the queue (MPI has no way to cancel a collective), so the ranks stay paired:
// it completes, unread, before the next one starts.
#include "transport/mpi/mpi_engine.hpp"

#include <algorithm>
#include <climits>
#include <string>
#include <utility>

namespace sparselink::internal {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kSpinWindow{5};
constexpr std::chrono::microseconds kMinIdleSleep{20};
constexpr std::chrono::microseconds kMaxIdleSleep{1000};

// A collective of the engine: the all-gather, or the barrier that ends the transport. Its
// progress belongs to the thread; `done`, `status` and `result` are published under the mutex.
class MpiCollective {
 public:
  enum class Kind { kAllGather, kBarrier };
  MpiCollective(Kind kind, std::span<const uint8_t> mine)
      : kind_(kind), mine_(mine.begin(), mine.end()) {}

  // Starts or tests the collective; whether anything moved.
  bool Progress(MPI_Comm comm, int world_size);
  bool finished() const { return phase_ == Phase::kDone; }
  // With the mutex held, once finished: publishes the outcome.
  void Publish() {
    status = std::move(outcome_);
    result = std::move(gathered_);
    done = true;
  }

  bool done = false;
  Status status;
  std::vector<std::vector<uint8_t>> result;

 private:
  enum class Phase { kNew, kSizes, kBytes, kDone };
  bool Start(MPI_Comm comm, int world_size);
  // The sizes are in: checks them and posts the all-gather of the bytes.
  void StartBytes(MPI_Comm comm, int world_size);
  void Finish(Status outcome) {
    outcome_ = std::move(outcome);
    phase_ = Phase::kDone;
  }
  void FailMpi(std::string_view call, int rc) {
    Finish(Status(ErrorCode::kClosed, "allgather failed: a rank is gone or MPI failed (" +
                                          MpiErrorText(call, rc) + ")"));
  }

  const Kind kind_;
  const std::vector<uint8_t> mine_;
  Phase phase_ = Phase::kNew;
  MPI_Request request_ = MPI_REQUEST_NULL;
  int64_t my_size_ = 0;
  std::vector<int64_t> sizes_;
  std::vector<int> counts_;
  std::vector<int> offsets_;
  std::vector<uint8_t> bytes_;
  Status outcome_;
  std::vector<std::vector<uint8_t>> gathered_;
};

bool MpiCollective::Start(MPI_Comm comm, int world_size) {
  int rc = MPI_SUCCESS;
  if (kind_ == Kind::kBarrier) {
    rc = MPI_Ibarrier(comm, &request_);
  } else {
    my_size_ = static_cast<int64_t>(mine_.size());
    sizes_.assign(static_cast<size_t>(world_size), 0);
    rc = MPI_Iallgather(&my_size_, 1, MPI_INT64_T, sizes_.data(), 1, MPI_INT64_T, comm, &request_);
  }
  if (rc != MPI_SUCCESS) {
    FailMpi(kind_ == Kind::kBarrier ? "MPI_Ibarrier" : "MPI_Iallgather", rc);
  } else {
    phase_ = kind_ == Kind::kBarrier ? Phase::kBytes : Phase::kSizes;
  }
  return true;
}

void MpiCollective::StartBytes(MPI_Comm comm, int world_size) {
  // Every rank sees the same sizes and so takes the same branch: none posts the second
  // collective alone.
  int64_t total = 0;
  for (int r = 0; r < world_size; ++r) {
    const int64_t size = sizes_[static_cast<size_t>(r)];
    if (size < 0) {
      return Finish(FieldError(ErrorCode::kCorruptPacket, "allgather.size", size,
                               "rank " + std::to_string(r) + " sent an impossible size"));
    }
    total += std::min<int64_t>(size, INT_MAX);
    if (total > INT_MAX) {
      return Finish(FieldError(ErrorCode::kResourceExhausted, "allgather.total_bytes", total,
                               "above INT_MAX, the largest count of one MPI call"));
    }
  }
  counts_.resize(static_cast<size_t>(world_size));
  offsets_.resize(static_cast<size_t>(world_size));
  int at = 0;
  for (size_t r = 0; r < counts_.size(); ++r) {
    counts_[r] = static_cast<int>(sizes_[r]);
    offsets_[r] = at;
    at += counts_[r];
  }
  bytes_.resize(static_cast<size_t>(total));
  const int rc = MPI_Iallgatherv(mine_.data(), static_cast<int>(my_size_), MPI_BYTE, bytes_.data(),
                                 counts_.data(), offsets_.data(), MPI_BYTE, comm, &request_);
  if (rc != MPI_SUCCESS) return FailMpi("MPI_Iallgatherv", rc);
  phase_ = Phase::kBytes;
}

bool MpiCollective::Progress(MPI_Comm comm, int world_size) {
  if (phase_ == Phase::kDone) return false;
  if (phase_ == Phase::kNew) return Start(comm, world_size);
  int completed = 0;
  const int rc = MPI_Test(&request_, &completed, MPI_STATUS_IGNORE);
  if (rc != MPI_SUCCESS) {
    FailMpi("MPI_Test", rc);
    return true;
  }
  if (!completed) return false;
  if (phase_ == Phase::kSizes) {
    StartBytes(comm, world_size);
    return true;
  }
  if (kind_ == Kind::kAllGather) {
    gathered_.resize(counts_.size());
    for (size_t r = 0; r < counts_.size(); ++r) {
      const auto* from = bytes_.data() + offsets_[r];
      gathered_[r].assign(from, from + counts_[r]);
    }
  }
  Finish(Status::Ok());
  return true;
}

namespace {

// Buffers MPI may still read or write after the transport ended (a send the peer never took,
// a collective that never finished): kept for the rest of the process, never freed.
void KeepForever(std::vector<std::shared_ptr<const void>> keep) {
  if (keep.empty()) return;
  static std::mutex mutex;
  static auto* kept = new std::vector<std::shared_ptr<const void>>();
  std::lock_guard lock(mutex);
  for (auto& item : keep) kept->push_back(std::move(item));
}

}  // namespace

MpiEngine::MpiEngine(MPI_Comm comm, const MpiTransportOptions& options,
                     std::shared_ptr<void> keep_alive)
    : comm_(comm), options_(options), keep_alive_(std::move(keep_alive)) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &world_size_);
  thread_ = std::thread([this] { Loop(); });
}

MpiEngine::~MpiEngine() {
  {
    std::unique_lock lock(mutex_);
    draining_ = true;
    BeginWaitLocked();
    collected_.wait_for(lock, options_.drain_timeout, [&] { return drained_; });
    EndWaitLocked();
    stopping_ = true;
    wake_.notify_all();
  }
  thread_.join();
  std::vector<std::shared_ptr<const void>> keep;
  for (auto& channel : channels_) channel->Abandon(keep);
  // MPI forbids freeing the request of a nonblocking collective: one that never finished keeps
  // its buffers, request included, for the rest of the process.
  for (auto& collective : collectives_) keep.push_back(collective);
  KeepForever(std::move(keep));
  MPI_Comm_free(&comm_);
}

void MpiEngine::WakeLocked() {
  work_pending_ = true;
  wake_.notify_one();
}

void MpiEngine::BeginWaitLocked() {
  ++waiters_;
  wake_.notify_one();
}

void MpiEngine::Add(std::shared_ptr<MpiChannel> channel) {
  std::lock_guard lock(mutex_);
  channels_.push_back(std::move(channel));
  WakeLocked();
}

Result<std::vector<std::vector<uint8_t>>> MpiEngine::AllGather(std::span<const uint8_t> mine,
                                                               std::chrono::milliseconds timeout) {
  auto collective = std::make_shared<MpiCollective>(MpiCollective::Kind::kAllGather, mine);
  std::unique_lock lock(mutex_);
  collectives_.push_back(collective);
  BeginWaitLocked();
  const bool done = collected_.wait_for(lock, std::min(timeout, kMaxLinkTimeout),
                                        [&] { return collective->done; });
  EndWaitLocked();
  if (!done) {
    return FieldError(ErrorCode::kTimeout, "allgather.timeout_ms", timeout.count(),
                      "not all " + std::to_string(world_size_) +
                          " ranks came; the all-gather stays posted and completes, unread, "
                          "before the next one");
  }
  if (!collective->status.ok()) return collective->status;
  return std::move(collective->result);
}

void MpiEngine::Loop() {
  std::unique_lock lock(mutex_);
  last_moved_ = Clock::now();
  idle_sleep_ = kMinIdleSleep;
  std::vector<std::shared_ptr<MpiChannel>> channels;
  while (!stopping_) {
    work_pending_ = false;
    channels.assign(channels_.begin(), channels_.end());
    for (auto& channel : channels) channel->Collect();
    std::shared_ptr<MpiCollective> head = collectives_.empty() ? nullptr : collectives_.front();
    lock.unlock();
    bool moved = false;
    for (auto& channel : channels) moved |= channel->Progress(comm_);
    if (head) moved |= head->Progress(comm_, world_size_);
    lock.lock();
    for (auto& channel : channels) channel->Publish();
    if (head && head->finished()) {
      head->Publish();
      collectives_.pop_front();
      collected_.notify_all();
    }
    if (draining_ && !drained_ && DrainStep()) {
      drained_ = true;
      collected_.notify_all();
    }
    Pause(lock, moved);
  }
}

bool MpiEngine::DrainStep() {
  const auto settled = [](const MpiChannel& c, bool MpiChannel::Shared::*idle) {
    return c.shared.failure.has_value() || c.shared.*idle;
  };
  for (const auto& channel : channels_) {
    if (!settled(*channel, &MpiChannel::Shared::sends_idle)) return false;
  }
  // Everything this rank sent has been taken. The barrier tells it when every other rank's
  // has too; until then the thread goes on taking (and, on a detached channel, dropping)
  // what they send.
  if (!barrier_queued_) {
    collectives_.push_back(
        std::make_shared<MpiCollective>(MpiCollective::Kind::kBarrier, std::span<const uint8_t>()));
    barrier_queued_ = true;
    return false;
  }
  if (!collectives_.empty()) return false;
  for (const auto& channel : channels_) {
    if (!settled(*channel, &MpiChannel::Shared::receive_idle)) return false;
  }
  return true;
}

void MpiEngine::Pause(std::unique_lock<std::mutex>& lock, bool moved) {
  const auto now = Clock::now();
  if (moved) {
    last_moved_ = now;
    idle_sleep_ = kMinIdleSleep;
    return;
  }
  if (work_pending_) return;
  if (waiters_ > 0 || now - last_moved_ < kSpinWindow) {
    lock.unlock();
    std::this_thread::yield();
    lock.lock();
    return;
  }
  wake_.wait_for(lock, idle_sleep_, [&] { return work_pending_ || waiters_ > 0 || stopping_; });
  idle_sleep_ = std::min(idle_sleep_ * 2, std::chrono::microseconds(kMaxIdleSleep));
}

}  // namespace sparselink::internal
