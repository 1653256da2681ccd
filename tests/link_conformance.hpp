// The conformance suite every transport backend passes: order, sizes from 0 bytes to 64 MiB,
// timeouts, close, counters, both directions at once and the all-gather. Each case is a body
// run by every rank of a two-rank job; a backend's test file supplies how ranks are made (threads
// of this process, or processes under mpiexec) and instantiates the suite with
// SPARSELINK_LINK_CONFORMANCE(Backend, runner). The peer-that-dies cases need real processes
// and live in the backends' own files.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "sparselink/transport.hpp"

namespace sparselink::conformance {

using std::chrono::milliseconds;
using RankBody = std::function<void(Transport& transport)>;
// Runs `body` on each of two ranks at once and returns when both are done.
using Runner = std::function<void(const RankBody& body)>;

inline std::vector<uint8_t> Pattern(size_t n, size_t seed) {
  std::vector<uint8_t> v(n);
  auto x = static_cast<uint32_t>(seed * 2654435761u + 1);
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<uint8_t>(x);
  }
  return v;
}

inline std::unique_ptr<Link> Open(Transport& t, uint32_t channel, LinkOptions options = {}) {
  auto link = t.OpenLink(1 - t.rank(), channel, options);
  EXPECT_TRUE(link.ok()) << link.status().ToString();
  return link.ok() ? std::move(link).value() : nullptr;
}

// Both ranks wait for each other (an all-gather of nothing).
inline void Barrier(Transport& t) {
  auto all = t.AllGather({}, milliseconds(20000));
  EXPECT_TRUE(all.ok()) << all.status().ToString();
}

inline const uint32_t kData = ChannelId(0, Direction::kForward, ChannelKind::kControl);
inline const uint32_t kBack = ChannelId(0, Direction::kBackward, ChannelKind::kControl);

inline void DeliversInOrder(Transport& t) {
  auto link = Open(t, kData);
  ASSERT_NE(link, nullptr);
  constexpr int kPackets = 200;
  if (t.rank() == 0) {
    for (int i = 0; i < kPackets; ++i) {
      ASSERT_TRUE(link->Send(Pattern(1 + i * 37 % 3000, i), 100, milliseconds(20000)).ok());
    }
  } else {
    for (int i = 0; i < kPackets; ++i) {
      auto got = link->Recv(milliseconds(20000));
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      ASSERT_EQ(*got, Pattern(1 + i * 37 % 3000, i)) << "packet " << i;
    }
  }
  Barrier(t);
}

// Every size from nothing to 64 MiB, including those around a process-group message's
// boundaries (its 16-byte frame header, one message, two).
inline void CarriesEverySize(Transport& t) {
  auto link = Open(t, kData);
  ASSERT_NE(link, nullptr);
  const size_t m = size_t{1} << 20;
  const std::vector<size_t> sizes = {0, 1,     15,        16,   17, m - 17, m - 16,          m - 15,
                                     m, m + 1, 3 * m + 5, 5000, 0,  7,      size_t{64} << 20};
  if (t.rank() == 0) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      ASSERT_TRUE(link->Send(Pattern(sizes[i], i), 0, milliseconds(60000)).ok()) << sizes[i];
    }
  } else {
    for (size_t i = 0; i < sizes.size(); ++i) {
      auto got = link->Recv(milliseconds(60000));
      ASSERT_TRUE(got.ok()) << sizes[i] << ": " << got.status().ToString();
      ASSERT_EQ(got->size(), sizes[i]);
      ASSERT_TRUE(*got == Pattern(sizes[i], i)) << "size " << sizes[i];
    }
  }
  Barrier(t);
}

// A receive that times out leaves the link usable: the packet sent afterwards arrives.
inline void RecvTimesOutAndStaysUsable(Transport& t) {
  auto link = Open(t, kData);
  ASSERT_NE(link, nullptr);
  if (t.rank() == 1) {
    const auto start = std::chrono::steady_clock::now();
    auto got = link->Recv(milliseconds(50));
    const auto waited = std::chrono::steady_clock::now() - start;
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), ErrorCode::kTimeout);
    EXPECT_NE(got.status().message().find("link.recv_timeout_ms = 50"), std::string::npos)
        << got.status().message();
    EXPECT_GE(waited, milliseconds(45));
    EXPECT_LT(waited, milliseconds(5000));
  }
  Barrier(t);
  if (t.rank() == 0) {
    ASSERT_TRUE(link->Send(Pattern(3000, 9), 0, milliseconds(20000)).ok());
  } else {
    auto got = link->Recv(milliseconds(20000));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, Pattern(3000, 9));
  }
  Barrier(t);
}

// A sender whose receiver takes nothing is held back: Send times out within a bounded number
// of packets instead of queueing without end, and the link stays usable.
inline void SendTimesOutWhenTheReceiverTakesNothing(Transport& t) {
  auto link = Open(t, kData, {.max_queued_packets = 4});
  ASSERT_NE(link, nullptr);
  int sent = 0;
  if (t.rank() == 0) {
    Status s;
    while (sent < 200 && (s = link->Send(Pattern(2 << 20, sent), 0, milliseconds(300))).ok()) {
      ++sent;
    }
    EXPECT_EQ(s.code(), ErrorCode::kTimeout) << s.ToString();
    EXPECT_LT(sent, 200);
  }
  Barrier(t);
  // A cut-short frame makes a process-group link unusable (it says so); queue-based links
  // still deliver. Either way nothing is delivered that was not sent whole.
  if (t.rank() == 1) {
    for (int i = 0;; ++i) {
      auto got = link->Recv(milliseconds(500));
      if (!got.ok()) break;
      ASSERT_EQ(*got, Pattern(2 << 20, i)) << "packet " << i;
    }
  }
  Barrier(t);
}

// Close on the sending end: the receiver reads what came before, then kClosed; sends fail.
inline void CloseDrainsThenReportsClosed(Transport& t) {
  auto link = Open(t, kData);
  ASSERT_NE(link, nullptr);
  if (t.rank() == 0) {
    ASSERT_TRUE(link->Send(Pattern(10, 1), 0, milliseconds(20000)).ok());
    ASSERT_TRUE(link->Send(Pattern(2 << 20, 2), 0, milliseconds(20000)).ok());
    link->Close();
    EXPECT_EQ(link->Send(Pattern(10, 3), 0, milliseconds(100)).code(), ErrorCode::kClosed);
  } else {
    auto first = link->Recv(milliseconds(20000));
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    EXPECT_EQ(*first, Pattern(10, 1));
    auto second = link->Recv(milliseconds(20000));
    ASSERT_TRUE(second.ok()) << second.status().ToString();
    EXPECT_EQ(*second, Pattern(2 << 20, 2));
    auto end = link->Recv(milliseconds(20000));
    ASSERT_FALSE(end.ok());
    EXPECT_EQ(end.status().code(), ErrorCode::kClosed) << end.status().ToString();
  }
  Barrier(t);
}

// The counters: what each end sent and received, the bytes, the caller's dense bytes.
inline void CountsPacketsAndBytes(Transport& t) {
  auto link = Open(t, kData);
  ASSERT_NE(link, nullptr);
  uint64_t bytes = 0;
  for (int i = 0; i < 20; ++i) bytes += static_cast<uint64_t>(i) * 1000;
  if (t.rank() == 0) {
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE(
          link->Send(Pattern(static_cast<size_t>(i) * 1000, i), 7, milliseconds(20000)).ok());
    }
    const LinkStats stats = link->stats();
    EXPECT_EQ(stats.packets_sent, 20u);
    EXPECT_EQ(stats.wire_bytes, bytes);
    EXPECT_EQ(stats.dense_bytes, 140u);
  } else {
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(link->Recv(milliseconds(20000)).ok());
    EXPECT_EQ(link->stats().packets_received, 20u);
  }
  Barrier(t);
}

// Both directions at once, large packets each way: nothing deadlocks when both ranks send
// before either receives (receives are posted ahead).
inline void BothDirectionsAtOnce(Transport& t) {
  auto forward = Open(t, kData);
  auto backward = Open(t, kBack);
  ASSERT_TRUE(forward && backward);
  Link& out = t.rank() == 0 ? *forward : *backward;
  Link& in = t.rank() == 0 ? *backward : *forward;
  constexpr int kPackets = 6;
  for (int i = 0; i < kPackets; ++i) {
    ASSERT_TRUE(out.Send(Pattern(3 << 20, 10 * t.rank() + i), 0, milliseconds(20000)).ok());
  }
  for (int i = 0; i < kPackets; ++i) {
    auto got = in.Recv(milliseconds(20000));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_EQ(*got, Pattern(3 << 20, 10 * (1 - t.rank()) + i));
  }
  Barrier(t);
}

// The all-gather gives every rank's bytes in rank order, sizes differing, empty included.
inline void AllGathersInRankOrder(Transport& t) {
  for (int round = 0; round < 3; ++round) {
    const std::vector<uint8_t> mine = Pattern(t.rank() == 0 ? 0 : 100 + round, round + t.rank());
    auto all = t.AllGather(mine, milliseconds(20000));
    ASSERT_TRUE(all.ok()) << all.status().ToString();
    ASSERT_EQ(all->size(), 2u);
    EXPECT_TRUE((*all)[0].empty());
    EXPECT_EQ((*all)[1], Pattern(100 + round, round + 1));
  }
}

// Refusals: a bad peer, a channel opened twice, a packet over the link's limit.
inline void RefusesBadArguments(Transport& t) {
  EXPECT_EQ(t.OpenLink(t.rank(), kData, {}).status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(t.OpenLink(7, kData, {}).status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(t.OpenLink(1 - t.rank(), kMaxChannelId + 1, {}).status().code(),
            ErrorCode::kInvalidArgument);
  auto link = Open(t, kData, {.max_packet_bytes = 16});
  ASSERT_NE(link, nullptr);
  EXPECT_EQ(t.OpenLink(1 - t.rank(), kData, {}).status().code(), ErrorCode::kInvalidArgument);
  if (t.rank() == 0) {
    const Status s = link->Send(Pattern(17, 0), 0, milliseconds(100));
    EXPECT_EQ(s.code(), ErrorCode::kResourceExhausted);
    EXPECT_NE(s.message().find("packet.size = 17"), std::string::npos) << s.message();
  }
  Barrier(t);
}

}  // namespace sparselink::conformance

// Instantiates every case for a backend: `runner` is an expression of type Runner.
#define SPARSELINK_LINK_CONFORMANCE(Backend, runner)                              \
  TEST(Backend##Conformance, DeliversInOrder) {                                   \
    (runner)(::sparselink::conformance::DeliversInOrder);                         \
  }                                                                               \
  TEST(Backend##Conformance, CarriesEverySize) {                                  \
    (runner)(::sparselink::conformance::CarriesEverySize);                        \
  }                                                                               \
  TEST(Backend##Conformance, RecvTimesOutAndStaysUsable) {                        \
    (runner)(::sparselink::conformance::RecvTimesOutAndStaysUsable);              \
  }                                                                               \
  TEST(Backend##Conformance, SendTimesOutWhenTheReceiverTakesNothing) {           \
    (runner)(::sparselink::conformance::SendTimesOutWhenTheReceiverTakesNothing); \
  }                                                                               \
  TEST(Backend##Conformance, CloseDrainsThenReportsClosed) {                      \
    (runner)(::sparselink::conformance::CloseDrainsThenReportsClosed);            \
  }                                                                               \
  TEST(Backend##Conformance, CountsPacketsAndBytes) {                             \
    (runner)(::sparselink::conformance::CountsPacketsAndBytes);                   \
  }                                                                               \
  TEST(Backend##Conformance, BothDirectionsAtOnce) {                              \
    (runner)(::sparselink::conformance::BothDirectionsAtOnce);                    \
  }                                                                               \
  TEST(Backend##Conformance, AllGathersInRankOrder) {                             \
    (runner)(::sparselink::conformance::AllGathersInRankOrder);                   \
  }                                                                               \
  TEST(Backend##Conformance, RefusesBadArguments) {                               \
    (runner)(::sparselink::conformance::RefusesBadArguments);                     \
  }
