// The link conformance suite over torch's process group (Gloo): the two ranks are threads, each
// with its own ProcessGroupGloo over one in-memory c10d::HashStore, as gloo's own tests run
// ranks. The cases with a peer that dies fork a real second process and kill it.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "link_conformance.hpp"
#include "sparselink/torch/process_group_transport.hpp"

namespace sparselink::torch_adapter {
namespace {

using std::chrono::milliseconds;

c10::intrusive_ptr<c10d::ProcessGroup> GlooGroup(c10::intrusive_ptr<c10d::Store> store, int rank,
                                                 int size,
                                                 milliseconds timeout = milliseconds(60000)) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
}

void GlooRunner(const conformance::RankBody& body) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      auto transport = MakeProcessGroupTransport(GlooGroup(store, r, 2));
      ASSERT_TRUE(transport.ok()) << transport.status().ToString();
      body(**transport);
    });
  }
  for (auto& rank : ranks) rank.join();
}

SPARSELINK_LINK_CONFORMANCE(Gloo, GlooRunner)

// Sends `sizes` from rank 0 to rank 1 (each packet's bytes name its index) and returns the
// receiving end's stats once every packet arrived intact.
LinkStats StreamSizes(const std::vector<size_t>& sizes, const ProcessGroupTransportOptions& o) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  LinkStats received;
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      auto transport = MakeProcessGroupTransport(GlooGroup(store, r, 2), o);
      ASSERT_TRUE(transport.ok()) << transport.status().ToString();
      auto link = (*transport)->OpenLink(1 - r, 0, {});
      ASSERT_TRUE(link.ok()) << link.status().ToString();
      for (size_t i = 0; i < sizes.size(); ++i) {
        if (r == 0) {
          const std::vector<uint8_t> packet(sizes[i], static_cast<uint8_t>(i + 1));
          ASSERT_TRUE((*link)->Send(packet, 0, milliseconds(20000)).ok()) << i;
        } else {
          auto got = (*link)->Recv(milliseconds(20000));
          ASSERT_TRUE(got.ok()) << i << ": " << got.status().ToString();
          ASSERT_EQ(*got, std::vector<uint8_t>(sizes[i], static_cast<uint8_t>(i + 1))) << i;
        }
      }
      if (r == 1) received = (*link)->stats();
      (void)(*transport)->AllGather({}, milliseconds(20000));
    });
  }
  for (auto& rank : ranks) rank.join();
  return received;
}

// A link idle for longer than the group's own timeout still works: its posted receives must not
// time out inside Gloo, which would close the connection to the peer.
TEST(GlooIdle, OutlivesTheGroupTimeout) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      auto transport = MakeProcessGroupTransport(GlooGroup(store, r, 2, milliseconds(1000)));
      ASSERT_TRUE(transport.ok()) << transport.status().ToString();
      auto link = (*transport)->OpenLink(1 - r, 0, {});
      ASSERT_TRUE(link.ok()) << link.status().ToString();
      std::this_thread::sleep_for(milliseconds(2500));
      const std::vector<uint8_t> packet(100, static_cast<uint8_t>(r));
      ASSERT_TRUE((*link)->Send(packet, 0, milliseconds(5000)).ok());
      auto got = (*link)->Recv(milliseconds(5000));
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      EXPECT_EQ(*got, std::vector<uint8_t>(100, static_cast<uint8_t>(1 - r)));
    });
  }
  for (auto& rank : ranks) rank.join();
}

// Grown first messages: sizes that rise, fall, cross the posted size and come back deliver
// intact; a steady stream crosses as one message per packet from its third packet on, so only
// the first two have a rest to time.
TEST(GlooFirstMessage, GrowsToTheStreamAndStaysExact) {
  const std::vector<size_t> mixed = {10000,  10000, 10000, 50000, 50000, 3,     0,
                                     200000, 9000,  9000,  4080,  4081,  70000, 70000};
  for (const bool grow : {false, true}) {
    StreamSizes(mixed, {.message_bytes = 4096, .grow_first_message = grow});
  }
  const std::vector<size_t> steady(20, 10000);
  const uint64_t rest = 10000 - (4096 - 16);
  EXPECT_EQ(StreamSizes(steady, {.message_bytes = 4096, .grow_first_message = false}).timed_bytes,
            20 * rest);
  EXPECT_EQ(StreamSizes(steady, {.message_bytes = 4096, .grow_first_message = true}).timed_bytes,
            2 * rest);
}

// A port nobody listens on, for a test's own TCPStore.
int FreePort() { return 20000 + static_cast<int>(getpid() % 20000); }

// Rank 1 is a child process that connects, then dies with SIGKILL (mid-frame: after the first
// of a packet's messages); rank 0, waiting in Recv with a long timeout, hears of it at once:
// kClosed naming the rank, well before the timeout.
TEST(GlooPeer, DeathEndsAWaitingReceiveAtOnce) {
  const int port = FreePort();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    c10d::TCPStoreOptions store_options{.port = static_cast<uint16_t>(port),
                                        .isServer = false,
                                        .numWorkers = 2,
                                        .timeout = milliseconds(20000)};
    auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", store_options);
    auto transport = MakeProcessGroupTransport(GlooGroup(store, 1, 2), {.message_bytes = 4096});
    if (!transport.ok()) _exit(2);
    auto link = (*transport)->OpenLink(0, 0, {});
    if (!link.ok()) _exit(3);
    std::vector<uint8_t> big(64 * 1024, 7);
    (void)(*link)->Send(big, 0, milliseconds(10000));  // 17 messages; some get out
    kill(getpid(), SIGKILL);
  }
  c10d::TCPStoreOptions store_options{.port = static_cast<uint16_t>(port),
                                      .isServer = true,
                                      .numWorkers = 2,
                                      .timeout = milliseconds(20000)};
  auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", store_options);
  auto transport = MakeProcessGroupTransport(GlooGroup(store, 0, 2), {.message_bytes = 4096});
  ASSERT_TRUE(transport.ok()) << transport.status().ToString();
  auto link = (*transport)->OpenLink(1, 0, {});
  ASSERT_TRUE(link.ok());
  const auto start = std::chrono::steady_clock::now();
  Result<std::vector<uint8_t>> got = (*link)->Recv(milliseconds(30000));
  while (got.ok()) got = (*link)->Recv(milliseconds(30000));
  const auto waited = std::chrono::steady_clock::now() - start;
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status)) << "the child did not die as planned: " << status;
  EXPECT_EQ(got.status().code(), ErrorCode::kClosed) << got.status().ToString();
  EXPECT_NE(got.status().message().find("rank 1"), std::string::npos) << got.status().message();
  EXPECT_LT(waited, milliseconds(10000));
}

TEST(JobEnvironment, ReadsTorchrunThenMpirunVariables) {
  setenv("RANK", "2", 1);
  setenv("WORLD_SIZE", "4", 1);
  setenv("MASTER_ADDR", "10.0.0.1", 1);
  setenv("MASTER_PORT", "1234", 1);
  auto job = ReadJobEnvironment();
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(job->rank, 2);
  EXPECT_EQ(job->world_size, 4);
  EXPECT_EQ(job->master_addr, "10.0.0.1");
  EXPECT_EQ(job->master_port, 1234);
  EXPECT_EQ(job->source, "torchrun");
  unsetenv("RANK");
  unsetenv("WORLD_SIZE");
  unsetenv("MASTER_ADDR");
  unsetenv("MASTER_PORT");
  setenv("OMPI_COMM_WORLD_RANK", "1", 1);
  setenv("OMPI_COMM_WORLD_SIZE", "3", 1);
  job = ReadJobEnvironment();
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(job->rank, 1);
  EXPECT_EQ(job->world_size, 3);
  EXPECT_EQ(job->master_addr, "127.0.0.1");
  EXPECT_EQ(job->master_port, kDefaultMasterPort);
  EXPECT_EQ(job->source, "mpirun");
  unsetenv("OMPI_COMM_WORLD_RANK");
  unsetenv("OMPI_COMM_WORLD_SIZE");
}

TEST(JobEnvironment, NamesABadVariable) {
  setenv("RANK", "5", 1);
  setenv("WORLD_SIZE", "4", 1);
  auto job = ReadJobEnvironment();
  ASSERT_FALSE(job.ok());
  EXPECT_NE(job.status().message().find("RANK = 5"), std::string::npos) << job.status().message();
  setenv("RANK", "x", 1);
  job = ReadJobEnvironment();
  ASSERT_FALSE(job.ok());
  EXPECT_NE(job.status().message().find("RANK = x"), std::string::npos);
  unsetenv("RANK");
  job = ReadJobEnvironment();
  ASSERT_FALSE(job.ok());
  EXPECT_NE(job.status().message().find("WORLD_SIZE alone"), std::string::npos);
  unsetenv("WORLD_SIZE");
  setenv("MASTER_PORT", "70000", 1);
  job = ReadJobEnvironment();
  ASSERT_FALSE(job.ok());
  EXPECT_NE(job.status().message().find("MASTER_PORT = 70000"), std::string::npos);
  unsetenv("MASTER_PORT");
}

}  // namespace
}  // namespace sparselink::torch_adapter
