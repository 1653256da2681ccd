// The in-process transport: ranks are threads of one process. A channel between two ranks is
// one InProcessLink both endpoints hold, so Send on one and Recv on the other meet in its
// queue; the all-gather is a generation-counted rendezvous in the hub.
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <utility>

#include "sparselink/transport.hpp"
#include "transport/inprocess/inprocess_link.hpp"
#include "transport/open_channels.hpp"

namespace sparselink {

class InProcessHub {
 public:
  explicit InProcessHub(int world_size)
      : world_size_(world_size), slots_(static_cast<size_t>(world_size)) {}

  int world_size() const { return world_size_; }

  // The queue of `channel` between ranks a and b, made by whichever end opens it first.
  Result<std::shared_ptr<InProcessLink>> Channel(int a, int b, uint32_t channel,
                                                 const LinkOptions& options) {
    std::lock_guard lock(mutex_);
    const auto key = std::make_tuple(std::min(a, b), std::max(a, b), channel);
    auto it = links_.find(key);
    if (it != links_.end()) return it->second;
    SPARSELINK_ASSIGN_OR_RETURN(std::unique_ptr<Link> made, MakeLink(options));
    auto link = std::shared_ptr<InProcessLink>(static_cast<InProcessLink*>(made.release()));
    links_.emplace(key, link);
    return link;
  }

  Result<std::vector<std::vector<uint8_t>>> AllGather(int rank, std::span<const uint8_t> mine,
                                                      std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    const uint64_t generation = generation_;
    slots_[static_cast<size_t>(rank)].assign(mine.begin(), mine.end());
    if (++arrived_ == world_size_) {
      result_ = slots_;
      arrived_ = 0;
      ++generation_;
      all_arrived_.notify_all();
      return result_;
    }
    if (!all_arrived_.wait_for(lock, std::min(timeout, kMaxLinkTimeout),
                               [&] { return generation_ != generation; })) {
      return FieldError(
          ErrorCode::kTimeout, "allgather.timeout_ms", timeout.count(),
          std::to_string(arrived_) + " of " + std::to_string(world_size_) + " ranks arrived");
    }
    return result_;
  }

 private:
  const int world_size_;
  std::mutex mutex_;
  std::map<std::tuple<int, int, uint32_t>, std::shared_ptr<InProcessLink>> links_;
  std::condition_variable all_arrived_;
  std::vector<std::vector<uint8_t>> slots_;
  std::vector<std::vector<uint8_t>> result_;  // the last completed gather
  int arrived_ = 0;
  uint64_t generation_ = 0;
};

namespace {

// One rank's endpoint of a shared queue.
class SharedLinkEnd final : public Link {
 public:
  explicit SharedLinkEnd(std::shared_ptr<InProcessLink> link) : link_(std::move(link)) {}
  Status Send(std::span<const uint8_t> packet, uint64_t dense_bytes,
              std::chrono::milliseconds timeout) override {
    return link_->Send(packet, dense_bytes, timeout);
  }
  Result<std::vector<uint8_t>> Recv(std::chrono::milliseconds timeout) override {
    return link_->Recv(timeout);
  }
  void Close() override { link_->Close(); }
  LinkStats stats() const override { return link_->stats(); }
  std::string_view backend() const override { return "inprocess"; }

 private:
  std::shared_ptr<InProcessLink> link_;
};

class InProcessTransport final : public Transport {
 public:
  InProcessTransport(std::shared_ptr<InProcessHub> hub, int rank)
      : hub_(std::move(hub)), rank_(rank) {}

  int rank() const override { return rank_; }
  int world_size() const override { return hub_->world_size(); }
  std::string_view backend() const override { return "inprocess"; }

  Result<std::unique_ptr<Link>> OpenLink(int peer, uint32_t channel,
                                         const LinkOptions& options) override {
    SPARSELINK_RETURN_IF_ERROR(opened_.Claim(rank_, world_size(), peer, channel, options));
    LinkOptions shared = options;
    shared.backend = "inprocess";
    SPARSELINK_ASSIGN_OR_RETURN(std::shared_ptr<InProcessLink> link,
                                hub_->Channel(rank_, peer, channel, shared));
    return std::unique_ptr<Link>(std::make_unique<SharedLinkEnd>(std::move(link)));
  }

  Result<std::vector<std::vector<uint8_t>>> AllGather(std::span<const uint8_t> mine,
                                                      std::chrono::milliseconds timeout) override {
    return hub_->AllGather(rank_, mine, timeout);
  }

 private:
  std::shared_ptr<InProcessHub> hub_;
  int rank_;
  internal::OpenChannels opened_;
};

}  // namespace

Result<std::shared_ptr<InProcessHub>> MakeInProcessHub(int world_size) {
  if (world_size < 1) {
    return FieldError(ErrorCode::kInvalidArgument, "world_size", world_size, "must be >= 1");
  }
  return std::make_shared<InProcessHub>(world_size);
}

Result<std::unique_ptr<Transport>> MakeInProcessRank(std::shared_ptr<InProcessHub> hub, int rank) {
  if (hub == nullptr) return Status(ErrorCode::kInvalidArgument, "hub = null: no hub given");
  if (rank < 0 || rank >= hub->world_size()) {
    return FieldError(ErrorCode::kInvalidArgument, "rank", rank,
                      "must be in [0, " + std::to_string(hub->world_size()) + ")");
  }
  return std::unique_ptr<Transport>(std::make_unique<InProcessTransport>(std::move(hub), rank));
}

}  // namespace sparselink
