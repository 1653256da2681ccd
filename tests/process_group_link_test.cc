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
                                                 int size) {
  auto options = c10d::ProcessGroupGloo::Options::create(milliseconds(60000));
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
