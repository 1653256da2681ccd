// Link tests run over every built backend (TEST_P over kBackends), as gloo's BaseTest does;
// the emulated-link model is specific to the in-process backend and tested separately.
#include "sparselink/link.hpp"

#include <gtest/gtest.h>

#include <numeric>
#include <thread>

namespace sparselink {
namespace {

using std::chrono::milliseconds;

const char* const kBackends[] = {"inprocess"};

std::vector<uint8_t> Bytes(size_t n, uint8_t first) {
  std::vector<uint8_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

class LinkTest : public ::testing::TestWithParam<const char*> {
 protected:
  std::unique_ptr<Link> Make(LinkModel model = {}, size_t max_queued = 64) {
    auto link = MakeLink({.backend = GetParam(), .model = model, .max_queued_packets = max_queued});
    EXPECT_TRUE(link.ok()) << link.status().ToString();
    return std::move(link).value();
  }
};

TEST_P(LinkTest, DeliversPacketsInOrder) {
  auto link = Make();
  for (uint8_t i = 0; i < 10; ++i)
    ASSERT_TRUE(link->Send(Bytes(100 + i, i), 400, milliseconds(100)).ok());
  for (uint8_t i = 0; i < 10; ++i) {
    auto got = link->Recv(milliseconds(100));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, Bytes(100 + i, i));
  }
  const LinkStats stats = link->stats();
  EXPECT_EQ(stats.packets_sent, 10u);
  EXPECT_EQ(stats.packets_received, 10u);
  EXPECT_EQ(stats.wire_bytes, 10u * 100 + 45);
  EXPECT_EQ(stats.dense_bytes, 4000u);
}

TEST_P(LinkTest, RecvTimesOutAndStaysUsable) {
  auto link = Make();
  auto got = link->Recv(milliseconds(5));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), ErrorCode::kTimeout);
  EXPECT_NE(got.status().message().find("link.recv_timeout_ms = 5"), std::string::npos);
  ASSERT_TRUE(link->Send(Bytes(3, 1), 12, milliseconds(5)).ok());
  EXPECT_TRUE(link->Recv(milliseconds(5)).ok());
}

TEST_P(LinkTest, SendTimesOutWhenQueueIsFull) {
  auto link = Make({}, 2);
  ASSERT_TRUE(link->Send(Bytes(3, 1), 12, milliseconds(5)).ok());
  ASSERT_TRUE(link->Send(Bytes(3, 1), 12, milliseconds(5)).ok());
  Status s = link->Send(Bytes(3, 1), 12, milliseconds(5));
  EXPECT_EQ(s.code(), ErrorCode::kTimeout);
  ASSERT_TRUE(link->Recv(milliseconds(5)).ok());
  EXPECT_TRUE(link->Send(Bytes(3, 1), 12, milliseconds(5)).ok());
}

TEST_P(LinkTest, CloseDrainsThenReportsClosed) {
  auto link = Make();
  ASSERT_TRUE(link->Send(Bytes(3, 7), 12, milliseconds(5)).ok());
  link->Close();
  EXPECT_EQ(link->Send(Bytes(3, 7), 12, milliseconds(5)).code(), ErrorCode::kClosed);
  EXPECT_TRUE(link->Recv(milliseconds(5)).ok());
  auto got = link->Recv(milliseconds(5));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), ErrorCode::kClosed);
}

TEST_P(LinkTest, CloseWakesABlockedReceiver) {
  auto link = Make();
  std::thread closer([&] {
    std::this_thread::sleep_for(milliseconds(20));
    link->Close();
  });
  auto got = link->Recv(milliseconds(5000));
  closer.join();
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), ErrorCode::kClosed);
}

TEST_P(LinkTest, SenderAndReceiverThreadsExchangeEverything) {
  auto link = Make({}, 4);
  constexpr int kPackets = 500;
  std::thread sender([&] {
    for (int i = 0; i < kPackets; ++i) {
      ASSERT_TRUE(
          link->Send(Bytes(1 + i % 50, static_cast<uint8_t>(i)), 0, milliseconds(2000)).ok());
    }
  });
  for (int i = 0; i < kPackets; ++i) {
    auto got = link->Recv(milliseconds(2000));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, Bytes(1 + i % 50, static_cast<uint8_t>(i)));
  }
  sender.join();
}

TEST_P(LinkTest, CarriesAnEmptyPacketAndRefusesAnOversizedOne) {
  auto made = MakeLink({.backend = GetParam(), .max_packet_bytes = 16});
  ASSERT_TRUE(made.ok());
  auto& link = *made;
  ASSERT_TRUE(link->Send({}, 0, milliseconds(5)).ok());
  auto empty = link->Recv(milliseconds(5));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  Status s = link->Send(Bytes(17, 0), 0, milliseconds(5));
  EXPECT_EQ(s.code(), ErrorCode::kResourceExhausted);
  EXPECT_NE(s.message().find("packet.size = 17"), std::string::npos) << s.message();
}

INSTANTIATE_TEST_SUITE_P(AllBackends, LinkTest, ::testing::ValuesIn(kBackends));

TEST(MakeLink, RejectsUnknownBackendAndBadModel) {
  auto bad = MakeLink({.backend = "carrier-pigeon"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), ErrorCode::kUnsupported);
  EXPECT_NE(bad.status().message().find("carrier-pigeon"), std::string::npos);
  EXPECT_FALSE(MakeLink({.model = {.bandwidth_bits_per_s = -1}}).ok());
  EXPECT_FALSE(MakeLink({.model = {.loss_rate = 1.0}}).ok());
  EXPECT_FALSE(MakeLink({.model = {.corrupt_rate = 1.5}}).ok());
  EXPECT_FALSE(MakeLink({.model = {.latency = std::chrono::nanoseconds(-1)}}).ok());
  EXPECT_FALSE(MakeLink({.max_queued_packets = 0}).ok());
}

// milliseconds::max() means "wait as long as it takes": cut to kMaxLinkTimeout, it waits for a
// packet sent later instead of overflowing into an immediate timeout.
TEST(LinkModel, LongestTimeoutWaits) {
  auto link = MakeLink({});
  ASSERT_TRUE(link.ok());
  std::thread sender([&] {
    std::this_thread::sleep_for(milliseconds(20));
    EXPECT_TRUE((*link)->Send(Bytes(10, 1), 0, milliseconds::max()).ok());
  });
  auto got = (*link)->Recv(milliseconds::max());
  sender.join();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->size(), 10u);
}

TEST(LinkModel, ModelsLatencyPlusSerialization) {
  const LinkModel model{.bandwidth_bits_per_s = 100e6, .latency = std::chrono::microseconds(50)};
  // 1,250,000 bytes = 10 Mbit -> 100 ms at 100 Mbit/s, plus 50 us.
  EXPECT_EQ(ModelledTransferTime(model, 1'250'000), std::chrono::nanoseconds(100'050'000));
  EXPECT_EQ(ModelledTransferTime(LinkModel{}, 1'000'000), std::chrono::nanoseconds(0));
  auto link = MakeLink({.model = model});
  ASSERT_TRUE(link.ok());
  ASSERT_TRUE((*link)->Send(Bytes(125, 0), 0, milliseconds(5)).ok());  // 1000 bit -> 10 us
  EXPECT_DOUBLE_EQ((*link)->stats().modelled_time.count(), 60e-6);
}

// However slow the link, modelled times stay finite: seconds as doubles, nanoseconds
// saturated (a packet of 1 GB at 1e-6 bit/s is 8e15 s, past int64 nanoseconds).
TEST(LinkModel, SlowLinksDoNotOverflow) {
  const LinkModel slow{.bandwidth_bits_per_s = 1e-6};
  EXPECT_DOUBLE_EQ(ModelledTransferSeconds(slow, 1'000'000'000), 8e15);
  EXPECT_EQ(ModelledTransferTime(slow, 1'000'000'000), std::chrono::nanoseconds::max());
  EXPECT_EQ(ModelledTransferTime(slow, 0), std::chrono::nanoseconds(0));
  auto link = MakeLink({.model = slow});
  ASSERT_TRUE(link.ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE((*link)->Send(Bytes(1000, 0), 0, milliseconds(5)).ok());
    ASSERT_TRUE((*link)->Recv(milliseconds(5)).ok());
  }
  EXPECT_DOUBLE_EQ((*link)->stats().modelled_time.count(), 3 * 8e9);
}

TEST(LinkModel, LossAndCorruptionAreCountedAndDeterministic) {
  auto run = [](uint64_t seed) {
    auto link = MakeLink({.model = {.loss_rate = 0.2, .corrupt_rate = 0.3, .fault_seed = seed},
                          .max_queued_packets = 1000});
    EXPECT_TRUE(link.ok());
    const std::vector<uint8_t> packet(64, 0xAA);
    std::vector<std::vector<uint8_t>> received;
    for (int i = 0; i < 400; ++i) EXPECT_TRUE((*link)->Send(packet, 0, milliseconds(5)).ok());
    while (true) {
      auto got = (*link)->Recv(milliseconds(1));
      if (!got.ok()) break;
      received.push_back(*got);
    }
    const LinkStats stats = (*link)->stats();
    EXPECT_EQ(stats.packets_received + stats.packets_lost, 400u);
    size_t altered = 0;
    for (const auto& p : received) altered += (p != packet);
    EXPECT_EQ(altered, stats.packets_corrupted);
    EXPECT_GT(stats.packets_lost, 40u);
    EXPECT_LT(stats.packets_lost, 120u);
    EXPECT_GT(stats.packets_corrupted, 60u);
    return received;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

TEST(ParseBandwidth, ReadsTcStyleUnits) {
  EXPECT_DOUBLE_EQ(*ParseBandwidth("100Mbit"), 100e6);
  EXPECT_DOUBLE_EQ(*ParseBandwidth("1Gbit"), 1e9);
  EXPECT_DOUBLE_EQ(*ParseBandwidth("250kbit"), 250e3);
  EXPECT_DOUBLE_EQ(*ParseBandwidth("12.5MB"), 100e6);
  EXPECT_DOUBLE_EQ(*ParseBandwidth("1e8"), 1e8);
}

TEST(ParseBandwidth, RejectsGarbageNamingTheValue) {
  for (const char* bad : {"", "fast", "100Mbits", "-5Mbit", "0", "nan", "1e400Gbit"}) {
    auto got = ParseBandwidth(bad);
    ASSERT_FALSE(got.ok()) << bad;
    EXPECT_EQ(got.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(got.status().message().find("bandwidth = "), std::string::npos);
  }
}

}  // namespace
}  // namespace sparselink
