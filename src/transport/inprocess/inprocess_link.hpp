// InProcessLink: a bounded queue between two threads (or two steps of one thread) with an
// emulated physical link. Private to the transport module; callers use MakeLink.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>

#include "sparselink/link.hpp"

namespace sparselink {

class InProcessLink final : public Link {
 public:
  explicit InProcessLink(const LinkOptions& options);

  Status Send(std::span<const uint8_t> packet, uint64_t dense_bytes,
              std::chrono::milliseconds timeout) override;
  Result<std::vector<uint8_t>> Recv(std::chrono::milliseconds timeout) override;
  void Close() override;
  LinkStats stats() const override;
  std::string_view backend() const override { return "inprocess"; }

 private:
  const LinkOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::deque<std::vector<uint8_t>> queue_;
  bool closed_ = false;
  LinkStats stats_;
  std::mt19937_64 fault_rng_;  // guarded by mutex_; draws happen in send order
};

}  // namespace sparselink
