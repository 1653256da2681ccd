// InProcessLink. Send copies the packet into a bounded queue, after the emulated link has had
// its say: the loss model may make the packet vanish (counted, never delivered), the
// corruption model may flip one bit (counted, delivered: the packet checksum must catch it),
// and the modelled transfer time latency + bytes*8/bandwidth is added to the stats (and
// really waited when model.sleep is set). Fault draws use one seeded generator in send order,
// so a run with the same seed sees the same faults.
#include "transport/inprocess/inprocess_link.hpp"

#include <algorithm>
#include <thread>

namespace sparselink {

InProcessLink::InProcessLink(const LinkOptions& options)
    : options_(options), fault_rng_(options.model.fault_seed) {}

Status InProcessLink::Send(std::span<const uint8_t> packet, uint64_t dense_bytes,
                           std::chrono::milliseconds timeout) {
  if (packet.size() > options_.max_packet_bytes) {
    return FieldError(
        ErrorCode::kResourceExhausted, "packet.size", packet.size(),
        "exceeds link.max_packet_bytes = " + std::to_string(options_.max_packet_bytes));
  }
  if (options_.model.sleep) {
    std::this_thread::sleep_for(ModelledTransferTime(options_.model, packet.size()));
  }

  std::unique_lock lock(mutex_);
  if (!not_full_.wait_for(lock, std::min(timeout, kMaxLinkTimeout),
                          [&] { return closed_ || queue_.size() < options_.max_queued_packets; })) {
    return FieldError(ErrorCode::kTimeout, "link.send_timeout_ms", timeout.count(),
                      "queue stayed full (" + std::to_string(queue_.size()) + " packets)");
  }
  if (closed_) return Status(ErrorCode::kClosed, "link: send on a closed link");

  stats_.packets_sent += 1;
  stats_.wire_bytes += packet.size();
  stats_.dense_bytes += dense_bytes;
  stats_.modelled_time +=
      std::chrono::duration<double>(ModelledTransferSeconds(options_.model, packet.size()));

  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const bool lost = options_.model.loss_rate > 0 && unit(fault_rng_) < options_.model.loss_rate;
  if (lost) {
    stats_.packets_lost += 1;
    return Status::Ok();  // the sender cannot tell; the receiver times out
  }
  std::vector<uint8_t> copy(packet.begin(), packet.end());
  if (options_.model.corrupt_rate > 0 && unit(fault_rng_) < options_.model.corrupt_rate) {
    std::uniform_int_distribution<size_t> where(0, copy.size() - 1);
    std::uniform_int_distribution<int> bit(0, 7);
    copy[where(fault_rng_)] ^= static_cast<uint8_t>(1u << bit(fault_rng_));
    stats_.packets_corrupted += 1;
  }
  queue_.push_back(std::move(copy));
  lock.unlock();
  not_empty_.notify_one();
  return Status::Ok();
}

Result<std::vector<uint8_t>> InProcessLink::Recv(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!not_empty_.wait_for(lock, std::min(timeout, kMaxLinkTimeout),
                           [&] { return closed_ || !queue_.empty(); })) {
    return FieldError(ErrorCode::kTimeout, "link.recv_timeout_ms", timeout.count(),
                      "no packet arrived");
  }
  if (queue_.empty()) return Status(ErrorCode::kClosed, "link: closed and drained");
  std::vector<uint8_t> packet = std::move(queue_.front());
  queue_.pop_front();
  stats_.packets_received += 1;
  lock.unlock();
  not_full_.notify_one();
  return packet;
}

void InProcessLink::Close() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  not_empty_.notify_all();
  not_full_.notify_all();
}

LinkStats InProcessLink::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace sparselink
