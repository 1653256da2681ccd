// The link conformance suite over MPI, and the MPI transport's own cases. The binary runs as two
// processes under mpiexec -n 2 (the ctest entries mpi_link_test_shm and mpi_link_test_tcp, on
// OpenMPI's shared-memory and TCP transports): each runs every test, a case's body on its own
// rank, over a fresh transport on MPI_COMM_WORLD. main starts MPI; a failure on either rank
// makes that rank exit non-zero, and mpiexec with it.
//
// MpiPeer.DISABLED_KilledMidStream runs only from tests/mpi_peer_death_test.sh, which expects
// the job to die.
#include <mpi.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "link_conformance.hpp"
#include "sparselink/mpi_transport.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define SPARSELINK_TEST_LEAK_CHECK 1
// LeakSanitizer reports memory that OpenMPI allocates in MPI_Init and keeps where the checker
// does not look, and (at exit) that of the components MPI_Finalize unloads. The leak check runs
// before MPI_Finalize (main), and allocations made under OpenMPI's own libraries are left out
// by name, which needs whole stacks: the fast unwinder stops in libraries built without frame
// pointers.
extern "C" const char* __asan_default_options() { return "fast_unwind_on_malloc=0"; }
extern "C" const char* __lsan_default_suppressions() {
  return "leak:libmpi.so\nleak:libopen-rte.so\nleak:libopen-pal.so\nleak:libpmix.so\n"
         "leak:libhwloc.so\nleak:libevent\nleak:/openmpi/\n";
}
#endif

namespace sparselink {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

std::unique_ptr<Transport> Make(const MpiTransportOptions& options = {}) {
  auto transport = MakeMpiTransport(MPI_COMM_WORLD, options);
  EXPECT_TRUE(transport.ok()) << transport.status().ToString();
  return transport.ok() ? std::move(transport).value() : nullptr;
}

void MpiRunner(const conformance::RankBody& body) {
  std::unique_ptr<Transport> transport = Make();
  ASSERT_NE(transport, nullptr);
  body(*transport);
}

SPARSELINK_LINK_CONFORMANCE(Mpi, MpiRunner)

TEST(MpiTransport, NamesItselfAndItsRanks) {
  auto transport = Make();
  ASSERT_NE(transport, nullptr);
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  EXPECT_EQ(transport->rank(), rank);
  EXPECT_EQ(transport->world_size(), 2);
  EXPECT_EQ(transport->backend(), "mpi");
  auto link = conformance::Open(*transport, conformance::kData);
  ASSERT_NE(link, nullptr);
  EXPECT_EQ(link->backend(), "mpi");
}

TEST(MpiTransport, RefusesBadOptionsByName) {
  auto made = MakeMpiTransport(MPI_COMM_WORLD, {.message_bytes = 16});
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(made.status().message().find("message_bytes = 16"), std::string::npos)
      << made.status().message();
  made = MakeMpiTransport(MPI_COMM_WORLD, {.max_messages_in_flight = 0});
  ASSERT_FALSE(made.ok());
  EXPECT_NE(made.status().message().find("max_messages_in_flight = 0"), std::string::npos);
  made = MakeMpiTransport(MPI_COMM_NULL);
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(made.status().message().find("MPI_COMM_NULL"), std::string::npos);
}

// With messages of 17 bytes every packet but the smallest crosses as many messages: the frame
// header alone, then one packet byte per first message, then 17 per later one.
TEST(MpiLink, ReassemblesPacketsFromTinyMessages) {
  auto transport = Make({.message_bytes = 17, .max_messages_in_flight = 4});
  ASSERT_NE(transport, nullptr);
  auto link = conformance::Open(*transport, conformance::kData);
  ASSERT_NE(link, nullptr);
  const std::vector<size_t> sizes = {0, 1, 2, 17, 18, 34, 35, 100, 4099};
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (transport->rank() == 0) {
      ASSERT_TRUE(link->Send(conformance::Pattern(sizes[i], i), 0, milliseconds(20000)).ok());
    } else {
      auto got = link->Recv(milliseconds(20000));
      ASSERT_TRUE(got.ok()) << sizes[i] << ": " << got.status().ToString();
      ASSERT_EQ(*got, conformance::Pattern(sizes[i], i)) << "size " << sizes[i];
    }
  }
  conformance::Barrier(*transport);
}

// The ranks disagree on message_bytes: the receiver refuses the first longer message by name
// (kClosed, naming frame.message_bytes), and the sender's transport still ends promptly,
// since a failed channel goes on taking (and dropping) what arrives.
TEST(MpiLink, RefusesAMessageLongerThanItsMessageBytes) {
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  auto transport = Make({.message_bytes = rank == 0 ? size_t{4096} : size_t{1024},
                         .drain_timeout = milliseconds(10000)});
  ASSERT_NE(transport, nullptr);
  const auto start = Clock::now();
  {
    auto link = conformance::Open(*transport, conformance::kData);
    ASSERT_NE(link, nullptr);
    if (transport->rank() == 0) {
      for (int i = 0; i < 3; ++i) {
        ASSERT_TRUE(link->Send(conformance::Pattern(3000, i), 0, milliseconds(20000)).ok());
      }
    } else {
      auto got = link->Recv(milliseconds(20000));
      ASSERT_FALSE(got.ok());
      EXPECT_EQ(got.status().code(), ErrorCode::kClosed);
      EXPECT_NE(got.status().message().find("frame.message_bytes = 3016"), std::string::npos)
          << got.status().message();
    }
  }
  conformance::Barrier(*transport);
  transport = nullptr;
  EXPECT_LT(Clock::now() - start, milliseconds(5000));
}

// A rank whose all-gather timed out stays paired with the others: its next all-gather first
// completes the one that timed out (unread) and then runs its own.
TEST(MpiTransport, AllGatherAfterATimeoutStaysPaired) {
  auto transport = Make();
  ASSERT_NE(transport, nullptr);
  const auto bytes = [&](uint8_t round) {
    return std::vector<uint8_t>{static_cast<uint8_t>(transport->rank()), round};
  };
  if (transport->rank() == 0) {
    auto first = transport->AllGather(bytes(1), milliseconds(50));
    ASSERT_FALSE(first.ok());
    EXPECT_EQ(first.status().code(), ErrorCode::kTimeout);
    EXPECT_NE(first.status().message().find("allgather.timeout_ms = 50"), std::string::npos)
        << first.status().message();
  } else {
    std::this_thread::sleep_for(milliseconds(500));
    auto first = transport->AllGather(bytes(1), milliseconds(20000));
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    EXPECT_EQ((*first)[0], (std::vector<uint8_t>{0, 1}));
  }
  auto second = transport->AllGather(bytes(2), milliseconds(20000));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ((*second)[0], (std::vector<uint8_t>{0, 2}));
  EXPECT_EQ((*second)[1], (std::vector<uint8_t>{1, 2}));
}

// A receiver that drops its link unread does not hold up the sender: the sender's queued
// packets are taken (and dropped) by the receiver's transport, so the sender's transport ends
// well inside its drain_timeout.
TEST(MpiTransport, EndsPromptlyAfterTheReceiverDroppedItsLink) {
  auto transport = Make({.drain_timeout = milliseconds(20000)});
  ASSERT_NE(transport, nullptr);
  auto link = conformance::Open(*transport, conformance::kData);
  ASSERT_NE(link, nullptr);
  if (transport->rank() == 1) link = nullptr;
  conformance::Barrier(*transport);
  if (transport->rank() == 0) {
    for (int i = 0; i < 8; ++i) {
      ASSERT_TRUE(link->Send(conformance::Pattern(300000, i), 0, milliseconds(20000)).ok());
    }
    link->Close();
    link = nullptr;
  }
  const auto start = Clock::now();
  transport = nullptr;
  EXPECT_LT(Clock::now() - start, milliseconds(5000));
}

// Rank 1 sends two packets, then queues a third of 64 MiB (16384 messages of 4 KiB, each
// acknowledged) and kills itself with SIGKILL while that frame crosses; rank 0 waits in Recv
// with kLinkTimeout. Each rank says on stderr what it did and saw, for
// tests/mpi_peer_death_test.sh to check and show.
TEST(MpiPeer, DISABLED_KilledMidStream) {
  constexpr milliseconds kLinkTimeout(10000);
  auto transport = Make({.message_bytes = 4096, .max_messages_in_flight = 4});
  ASSERT_NE(transport, nullptr);
  auto link = conformance::Open(*transport, conformance::kData);
  ASSERT_NE(link, nullptr);
  if (transport->rank() == 1) {
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(link->Send(conformance::Pattern(10000, i), 0, kLinkTimeout).ok());
    }
    ASSERT_TRUE(link->Send(conformance::Pattern(64 << 20, 2), 0, kLinkTimeout).ok());
    std::this_thread::sleep_for(milliseconds(50));
    std::fprintf(stderr, "rank 1: killing itself with SIGKILL in the middle of a frame\n");
    kill(getpid(), SIGKILL);
  }
  const auto start = Clock::now();
  int packets = 0;
  Result<std::vector<uint8_t>> got = link->Recv(kLinkTimeout);
  for (; got.ok(); got = link->Recv(kLinkTimeout)) {
    std::fprintf(stderr, "rank 0: packet %d (%zu bytes)\n", ++packets, got->size());
  }
  const auto waited = std::chrono::duration<double>(Clock::now() - start).count();
  std::fprintf(stderr, "rank 0: Recv returned %s after %.1f s\n", got.status().ToString().c_str(),
               waited);
  // The peer is gone: MPI_Finalize would wait for it. End the job here, as mpirun would.
  MPI_Abort(MPI_COMM_WORLD, 3);
}

}  // namespace
}  // namespace sparselink

int main(int argc, char** argv) {
  int provided = MPI_THREAD_SINGLE;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  ::testing::InitGoogleTest(&argc, argv);
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size != 2) {
    std::fprintf(stderr, "mpi_link_test: run it as two ranks (mpiexec -n 2), not %d\n", size);
    MPI_Finalize();
    return 1;
  }
  const int failed = RUN_ALL_TESTS();
#ifdef SPARSELINK_TEST_LEAK_CHECK
  // MPI_Finalize unloads OpenMPI's components, whose allocations LeakSanitizer's check at exit
  // would then report without their code. Every transport is gone by now: check for leaks here,
  // while MPI's own memory is still reachable (this also turns the check at exit off).
  __lsan_do_leak_check();
#endif
  MPI_Finalize();
  return failed;  // mpiexec exits non-zero when either rank does
}
