// Transports: how the ranks of a job reach each other. A pipeline puts one stage on each rank;
// a transport opens the links between neighbouring ranks (one-way channels named by boundary,
// direction and packet kind) and runs the one collective sparselink needs (an all-gather of a
// few bytes per rank, every negotiation period). Backends: in-process (ranks as threads of one
// process, for tests and the single-process trainer), torch's process group (Gloo; its own
// target, sparselink/torch/process_group_transport.hpp) and MPI (its own target,
// sparselink/mpi_transport.hpp). Callers get a transport from a backend's factory and then use
// only this interface.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "sparselink/link.hpp"
#include "sparselink/status.hpp"

namespace sparselink {

// What a channel carries, as its tag names it: one channel per boundary, direction and kind,
// so that a receiver can post its receives for one kind ahead of the others.
enum class ChannelKind : uint8_t {
  kActivation = 0,   // sender -> receiver: routed activations
  kGradient = 1,     // receiver -> sender: mask-routed gradients
  kSummary = 2,      // receiver -> sender: receiver summaries
  kNegotiation = 3,  // both ways: proposals, counters, agreed contracts and their acks
  kControl = 4,      // both ways: anything else a runner needs (tests, shutdown)
};
inline constexpr uint32_t kNumChannelKinds = 5;

enum class Direction : uint8_t { kForward = 0, kBackward = 1 };

// A channel's number, the same on both ranks: boundary, direction and kind. The backends turn
// it into their own tags (a process-group link uses a few consecutive tags per channel).
// Boundaries up to 2^20 fit.
inline constexpr uint32_t ChannelId(uint32_t boundary, Direction direction, ChannelKind kind) {
  return (boundary * 2 + static_cast<uint32_t>(direction)) * kNumChannelKinds +
         static_cast<uint32_t>(kind);
}
inline constexpr uint32_t kMaxChannelId =
    ChannelId((1u << 20) - 1, Direction::kBackward, ChannelKind::kControl);

// Thread-safety: OpenLink and the collectives are called from one thread per rank; the links
// it opens follow Link's own rules. A transport outlives the links it opened.
class Transport {
 public:
  virtual ~Transport() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string_view backend() const = 0;

  // The endpoint of `channel` between this rank and `peer` (!= rank()). A channel is one-way
  // by use: the rank that sends on it calls Send and the other Recv; both open it with the
  // same number. Errors: a bad peer or channel (kInvalidArgument), a channel already open to
  // that peer, the backend's own setup failures.
  virtual Result<std::unique_ptr<Link>> OpenLink(int peer, uint32_t channel,
                                                 const LinkOptions& options) = 0;

  // Every rank's `mine`, in rank order (sizes may differ). A collective: every rank calls it,
  // in the same order. kTimeout or kClosed names the wait when a rank does not come.
  virtual Result<std::vector<std::vector<uint8_t>>> AllGather(
      std::span<const uint8_t> mine, std::chrono::milliseconds timeout) = 0;
};

// The in-process backend: `world_size` ranks that are threads of this process, sharing one hub.
// Each rank gets its own Transport from the hub (MakeInProcessRank); their links are queues
// (InProcessLink, with its emulated link model). Thread-safe across the ranks.
class InProcessHub;
Result<std::shared_ptr<InProcessHub>> MakeInProcessHub(int world_size);
Result<std::unique_ptr<Transport>> MakeInProcessRank(std::shared_ptr<InProcessHub> hub, int rank);

}  // namespace sparselink
