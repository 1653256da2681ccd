// The transport over torch's c10d::ProcessGroup (Gloo in Debian's libtorch; the same interface
// drives NCCL in a CUDA build of torch): the primary backend for jobs launched with torchrun or
// mpirun. sparselink adds a framing of its own packets on top and nothing else: no sockets, no
// rendezvous of its own.
//
// A link is a channel between this rank and one peer, on two c10d tags. A packet crosses behind
// a 16-byte frame header that gives its length (Gloo delivers a short message into a longer
// posted buffer without reporting the length): the header and the packet's first bytes in one
// message on the first tag, where the receiving end keeps two receives posted (a receive posted
// late makes Gloo's sender wait for it); the rest of a longer packet as one message on the
// second tag, received straight into the packet. A background thread per direction waits on
// the c10d work items, so Send and Recv wait with their own timeouts and a timed-out call
// leaves the posted receives in place.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "sparselink/transport.hpp"

namespace sparselink::torch_adapter {

struct ProcessGroupTransportOptions {
  // Bytes of each of the two receives a link keeps posted: a packet longer than this less the
  // 16-byte frame header crosses as two messages, the second of exactly the rest.
  size_t message_bytes = size_t{1} << 20;
  // Grow a frame's first message to fit the packet two frames before it (both ends know that
  // length), up to 64 MiB, so that a stream of like-sized long packets crosses as one message
  // each. Off, every long packet has a rest, whose crossing times the link
  // (LinkStats::timed_bytes): `--link-budget auto` needs that.
  bool grow_first_message = true;
  // Messages a sending end may have in flight before Send waits.
  size_t max_messages_in_flight = 16;
};

// A transport over `group`, which the caller made and keeps alive while the transport lives
// (torch.distributed's default group, or one made with MakeGlooProcessGroupFromEnvironment).
// Tags [0, 2 * (kMaxChannelId + 1)) of the group are sparselink's: no other user of the group
// may send or receive with them while the transport lives.
Result<std::unique_ptr<Transport>> MakeProcessGroupTransport(
    c10::intrusive_ptr<c10d::ProcessGroup> group, const ProcessGroupTransportOptions& options = {});

// Where this process stands in a job, read from the environment as torchrun sets it (RANK,
// WORLD_SIZE, MASTER_ADDR, MASTER_PORT) or, under mpirun, from OpenMPI's OMPI_COMM_WORLD_RANK
// and OMPI_COMM_WORLD_SIZE. MASTER_ADDR defaults to 127.0.0.1 and MASTER_PORT to
// kDefaultMasterPort when unset.
inline constexpr int kDefaultMasterPort = 29517;
struct JobEnvironment {
  int rank = 0;
  int world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = kDefaultMasterPort;
  std::string source;  // "torchrun", "mpirun" or "defaults": which variables were read
};
// Errors name the variable and its value (not a number, out of range, RANK >= WORLD_SIZE).
Result<JobEnvironment> ReadJobEnvironment();

// A Gloo process group for `job`: rendezvous through a c10d::TCPStore at
// master_addr:master_port (rank 0 serves it), waiting up to `timeout` for every rank. Gloo
// binds to the interface GLOO_SOCKET_IFNAME names when set, else to the address this host's
// name resolves to, or to the loopback when the job runs on this host alone. `timeout` is also
// the group's own timeout for its collectives.
Result<c10::intrusive_ptr<c10d::ProcessGroup>> MakeGlooProcessGroup(
    const JobEnvironment& job, std::chrono::milliseconds timeout);

}  // namespace sparselink::torch_adapter
