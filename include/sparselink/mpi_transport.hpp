// The transport over MPI, for jobs launched with mpirun/mpiexec that do not use torch's process
// groups. Its own target (sparselink::mpi, CMake option SPARSELINK_WITH_MPI); the core never
// includes mpi.h.
//
// The transport works on its own duplicate of the caller's communicator (MPI_Comm_dup, with
// MPI_ERRORS_RETURN), so its messages never meet the caller's. A channel is one MPI tag (the
// ChannelId itself); a packet travels as a frame (docs/wire-format.md, "Frames") cut into
// messages of at most `message_bytes`, each sent with MPI_Issend, so that a send completes only
// once the receiving end has taken the message: the sender's backlog, not the receiver's
// memory, is what fills up when a receiver stops taking packets.
//
// Progress: one thread per transport makes every MPI call of the transport after it is set up
// (posting sends, testing them, probing for and receiving messages, the all-gather's
// non-blocking collectives). Send, Recv and AllGather hand work to it and wait on a condition
// variable with their own timeouts; a timed-out call leaves everything posted. The thread polls
// without pause while a caller waits or traffic is moving, and otherwise sleeps in growing
// steps (woken at once when a caller queues work). Because it calls MPI concurrently with the
// caller's own threads, MPI must run at MPI_THREAD_MULTIPLE.
//
// Ending: the transport ends when it and all its links are destroyed, and that is collective
// over its communicator, like MPI_Comm_free: it finishes sending what its links queued (the
// channel of a destroyed link takes and drops what still arrives on it), then meets the other
// ranks in a barrier, so that no rank stops taking messages while another still sends to it;
// then it frees its communicator. Destroying it blocks for that, up to drain_timeout. A rank
// that dies is left to the MPI runtime: OpenMPI's mpirun ends the job.
//
// Thread-safety: as Transport and Link say; links may be used from any threads within Link's
// rules, the transport from one thread per rank.
#pragma once

#include <mpi.h>

#include <chrono>
#include <cstddef>
#include <memory>

#include "sparselink/transport.hpp"

namespace sparselink {

struct MpiTransportOptions {
  // Bytes of one message: a packet longer than this less the 16-byte frame header crosses as
  // several. The same on every rank; at most INT_MAX (an MPI count).
  size_t message_bytes = size_t{1} << 20;
  // Messages a link may have queued or unacknowledged before its Send waits for room. A packet
  // is queued whole once there is room for its first message, so a link holds at most this
  // many messages plus one packet.
  size_t max_messages_in_flight = 16;
  // How long destroying the transport may wait for its links' queued sends (close frames
  // included), a still-pending all-gather and the closing barrier with the other ranks before
  // it abandons them (their buffers are then kept for the rest of the process).
  std::chrono::milliseconds drain_timeout{2000};
};

// A transport over the caller's communicator `comm` (MPI_COMM_WORLD or any intracommunicator),
// on a duplicate of it made here. The caller initialized MPI, at MPI_THREAD_MULTIPLE, and
// finalizes it after the transport (and its links) are gone. Collective over `comm`: every rank
// calls it, in the same order as its other collectives on `comm` (MPI_Comm_dup blocks until all
// have). Errors: MPI not initialized or already finalized, a thread level below
// MPI_THREAD_MULTIPLE (kUnsupported, naming the level), a bad option (kInvalidArgument), an MPI
// failure (kIo, with MPI's own text).
Result<std::unique_ptr<Transport>> MakeMpiTransport(MPI_Comm comm,
                                                    const MpiTransportOptions& options = {});

// The same over MPI_COMM_WORLD, initializing MPI (MPI_Init_thread at MPI_THREAD_MULTIPLE) if
// nobody has. MPI started here is finalized when the last transport made by this call is
// destroyed (MPI_Finalize: collective, and by MPI's rules on the thread that started MPI), and
// MPI cannot start twice in one process: a call after that returns kUnsupported. If MPI was
// already running, it is used as it is (and must be at MPI_THREAD_MULTIPLE) and left running.
Result<std::unique_ptr<Transport>> MakeMpiTransportFromWorld(
    const MpiTransportOptions& options = {});

}  // namespace sparselink
