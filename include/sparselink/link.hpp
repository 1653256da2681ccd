// Links: one-way channels that carry packets between two stages. Callers get a backend from
// MakeLink and use only this interface; backends live in src/transport/<name>/.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sparselink/status.hpp"

namespace sparselink {

// Emulated physical link: every packet's modelled transfer time is
// latency + wire_bytes * 8 / bandwidth. bandwidth_bits_per_s = 0 means unlimited.
// The longest a link call waits: a longer timeout (milliseconds::max() for "forever") is cut
// to this, since the standard library's timed waits convert to nanoseconds and overflow.
inline constexpr std::chrono::milliseconds kMaxLinkTimeout{1'000'000'000};

struct LinkModel {
  double bandwidth_bits_per_s = 0;
  std::chrono::nanoseconds latency{0};
  double loss_rate = 0;     // probability a packet vanishes, [0, 1)
  double corrupt_rate = 0;  // probability one bit of a packet is flipped, [0, 1]
  uint64_t fault_seed = 1;  // seeds the loss/corruption draws (deterministic)
  bool sleep = false;       // really wait the modelled time in send (wall-clock emulation)
};

// Parses "100Mbit", "1Gbit", "250kbit", "12.5MB" (bytes), "1e8" (bits/s) into bits per second.
Result<double> ParseBandwidth(std::string_view text);

struct LinkStats {
  uint64_t packets_sent = 0;
  uint64_t packets_received = 0;
  uint64_t packets_lost = 0;       // dropped by the loss model
  uint64_t packets_corrupted = 0;  // altered by the corruption model
  uint64_t wire_bytes = 0;         // every byte handed to send
  uint64_t dense_bytes = 0;        // what the same tensors cost as plain fp32 (caller-declared)
  // Sum of modelled transfer times, in seconds (a double: a slow link's sum cannot overflow).
  std::chrono::duration<double> modelled_time{0};
  // Received packets whose crossing the link timed (the process-group link: the rest of a
  // packet longer than one message, from the arrival of its first message to its last byte),
  // their bytes and seconds: the rate the link delivered at. Zero on links that do not time.
  uint64_t timed_bytes = 0;
  double timed_seconds = 0;
};

// Thread-safety: one sender thread and one receiver thread may use a link concurrently;
// stats() may be read from either.
class Link {
 public:
  virtual ~Link() = default;

  // Queues one packet. `dense_bytes` is what the payload would cost dense (for the counters).
  // Errors: kClosed after Close(); kTimeout when the queue stays full past `timeout`;
  // kResourceExhausted for a packet above the link's max_packet_bytes. The link stays usable
  // after a timeout. Timeouts above kMaxLinkTimeout (about 11 days) wait that long.
  virtual Status Send(std::span<const uint8_t> packet, uint64_t dense_bytes,
                      std::chrono::milliseconds timeout) = 0;
  // Takes the next packet, waiting up to `timeout` (at most kMaxLinkTimeout). kTimeout leaves
  // the link usable; kClosed when closed and drained.
  virtual Result<std::vector<uint8_t>> Recv(std::chrono::milliseconds timeout) = 0;
  // Ends the link: pending Recv calls return kClosed once the queue is drained.
  virtual void Close() = 0;

  virtual LinkStats stats() const = 0;
  virtual std::string_view backend() const = 0;
};

struct LinkOptions {
  std::string backend = "inprocess";  // "inprocess" (MPI arrives with its own target)
  LinkModel model;
  size_t max_queued_packets = 64;
  uint64_t max_packet_bytes = 1ull << 30;  // larger packets are refused before copying
};

// The factory: the only place that names backends. Errors: unknown backend, bad model values
// (each named).
Result<std::unique_ptr<Link>> MakeLink(const LinkOptions& options);

// The modelled transfer time of `wire_bytes` over `model` (latency + serialization), in
// seconds: finite for any bandwidth > 0, however slow.
double ModelledTransferSeconds(const LinkModel& model, uint64_t wire_bytes);
// The same in nanoseconds, for waiting it out; saturates at nanoseconds::max().
std::chrono::nanoseconds ModelledTransferTime(const LinkModel& model, uint64_t wire_bytes);

}  // namespace sparselink
