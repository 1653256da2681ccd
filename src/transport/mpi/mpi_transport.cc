// The MPI transport: the factories (checks, the communicator's duplicate, the MPI that
// MakeMpiTransportFromWorld may start and end) and the Transport over an MpiEngine.
#include "sparselink/mpi_transport.hpp"

#include <array>
#include <climits>
#include <mutex>
#include <set>
#include <string>
#include <utility>

#include "transport/mpi/mpi_engine.hpp"
#include "transport/mpi/mpi_link.hpp"
#include "transport/open_channels.hpp"

namespace sparselink {
namespace {

using internal::MpiEngine;
using internal::MpiErrorText;

class MpiTransport final : public Transport {
 public:
  MpiTransport(std::shared_ptr<MpiEngine> engine, int tag_ub)
      : engine_(std::move(engine)), tag_ub_(tag_ub) {}

  int rank() const override { return engine_->rank(); }
  int world_size() const override { return engine_->world_size(); }
  std::string_view backend() const override { return "mpi"; }

  Result<std::unique_ptr<Link>> OpenLink(int peer, uint32_t channel,
                                         const LinkOptions& options) override {
    // The channel is the message tag; MPI promises tags up to 32767 only.
    if (channel <= kMaxChannelId && channel > static_cast<uint32_t>(tag_ub_)) {
      return FieldError(ErrorCode::kUnsupported, "channel", channel,
                        "above this MPI's MPI_TAG_UB = " + std::to_string(tag_ub_));
    }
    SPARSELINK_RETURN_IF_ERROR(opened_.Claim(rank(), world_size(), peer, channel, options));
    auto state = std::make_shared<internal::MpiChannel>(peer, channel, options,
                                                        engine_->options().message_bytes);
    engine_->Add(state);
    return std::unique_ptr<Link>(std::make_unique<internal::MpiLink>(engine_, std::move(state)));
  }

  Result<std::vector<std::vector<uint8_t>>> AllGather(std::span<const uint8_t> mine,
                                                      std::chrono::milliseconds timeout) override {
    return engine_->AllGather(mine, timeout);
  }

 private:
  const std::shared_ptr<MpiEngine> engine_;
  const int tag_ub_;
  internal::OpenChannels opened_;
};

constexpr std::array<std::pair<int, const char*>, 4> kThreadLevels = {{
    {MPI_THREAD_SINGLE, "MPI_THREAD_SINGLE"},
    {MPI_THREAD_FUNNELED, "MPI_THREAD_FUNNELED"},
    {MPI_THREAD_SERIALIZED, "MPI_THREAD_SERIALIZED"},
    {MPI_THREAD_MULTIPLE, "MPI_THREAD_MULTIPLE"},
}};

std::string ThreadLevelName(int level) {
  for (const auto& [value, name] : kThreadLevels) {
    if (value == level) return name;
  }
  return std::to_string(level);
}

Status ThreadLevelError(int level) {
  return FieldError(ErrorCode::kUnsupported, "mpi.thread_level", ThreadLevelName(level),
                    "must be MPI_THREAD_MULTIPLE: the transport's progress thread calls MPI "
                    "beside the caller's threads (start MPI with MPI_Init_thread(..., "
                    "MPI_THREAD_MULTIPLE, ...))");
}

Status CheckOptions(const MpiTransportOptions& options) {
  if (options.message_bytes <= internal::kFrameHeaderBytes || options.message_bytes > INT_MAX) {
    return FieldError(ErrorCode::kInvalidArgument, "message_bytes", options.message_bytes,
                      "must be in (16, INT_MAX]: above the frame header, within one MPI count");
  }
  if (options.max_messages_in_flight == 0) {
    return FieldError(ErrorCode::kInvalidArgument, "max_messages_in_flight", 0, "must be > 0");
  }
  if (options.drain_timeout.count() < 0) {
    return FieldError(ErrorCode::kInvalidArgument, "drain_timeout_ms",
                      options.drain_timeout.count(), "must be >= 0");
  }
  return Status::Ok();
}

Status CheckRunning() {
  int finalized = 0;
  int initialized = 0;
  MPI_Finalized(&finalized);
  MPI_Initialized(&initialized);
  if (finalized) return Status(ErrorCode::kUnsupported, "mpi: MPI is already finalized");
  if (!initialized) return Status(ErrorCode::kUnsupported, "mpi: MPI is not initialized");
  int level = MPI_THREAD_SINGLE;
  MPI_Query_thread(&level);
  if (level < MPI_THREAD_MULTIPLE) return ThreadLevelError(level);
  return Status::Ok();
}

// The transport over a duplicate of `comm`; `keep_alive` outlives its communicator.
Result<std::unique_ptr<Transport>> MakeOver(MPI_Comm comm, const MpiTransportOptions& options,
                                            std::shared_ptr<void> keep_alive) {
  SPARSELINK_RETURN_IF_ERROR(CheckOptions(options));
  SPARSELINK_RETURN_IF_ERROR(CheckRunning());
  if (comm == MPI_COMM_NULL) {
    return Status(ErrorCode::kInvalidArgument, "comm = MPI_COMM_NULL: no communicator given");
  }
  int inter = 0;
  int rc = MPI_Comm_test_inter(comm, &inter);
  if (rc != MPI_SUCCESS) return Status(ErrorCode::kIo, MpiErrorText("MPI_Comm_test_inter", rc));
  if (inter) {
    return Status(ErrorCode::kInvalidArgument,
                  "comm: an intercommunicator; the transport needs an intracommunicator");
  }
  // The duplicate keeps the transport's tags and collectives apart from the caller's traffic,
  // and its error handler returns errors to the transport instead of ending the job.
  MPI_Comm dup = MPI_COMM_NULL;
  rc = MPI_Comm_dup(comm, &dup);
  if (rc != MPI_SUCCESS) return Status(ErrorCode::kIo, MpiErrorText("MPI_Comm_dup", rc));
  rc = MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
  if (rc != MPI_SUCCESS) {
    MPI_Comm_free(&dup);
    return Status(ErrorCode::kIo, MpiErrorText("MPI_Comm_set_errhandler", rc));
  }
  // MPI_TAG_UB is an attribute of MPI_COMM_WORLD, the same for every communicator.
  int* tag_ub = nullptr;
  int found = 0;
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &found);
  const int tag_limit = found && tag_ub != nullptr ? *tag_ub : 32767;
  auto engine = std::make_shared<MpiEngine>(dup, options, std::move(keep_alive));
  return std::unique_ptr<Transport>(std::make_unique<MpiTransport>(std::move(engine), tag_limit));
}

// The MPI that MakeMpiTransportFromWorld uses: started here (then finalized when the last
// transport made over it goes) or found running (then left alone). Each such transport holds
// one user handle; the count changes, and MPI starts and ends, only under the mutex, so that a
// transport made while the last one goes never gets an MPI about to be finalized.
std::mutex world_mutex;
int world_users = 0;
bool world_started_here = false;

void ReleaseWorld(void*) {
  std::lock_guard lock(world_mutex);
  if (--world_users == 0 && world_started_here) {
    world_started_here = false;
    MPI_Finalize();
  }
}

Result<std::shared_ptr<void>> AcquireWorld() {
  std::lock_guard lock(world_mutex);
  if (world_users == 0) {
    int finalized = 0;
    int initialized = 0;
    MPI_Finalized(&finalized);
    MPI_Initialized(&initialized);
    if (finalized) {
      return Status(ErrorCode::kUnsupported,
                    "mpi: MPI was finalized (when the last transport over the world ended) and "
                    "cannot start again in this process");
    }
    if (!initialized) {
      int provided = MPI_THREAD_SINGLE;
      const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
      if (rc != MPI_SUCCESS) return Status(ErrorCode::kIo, MpiErrorText("MPI_Init_thread", rc));
      if (provided < MPI_THREAD_MULTIPLE) {
        MPI_Finalize();
        return ThreadLevelError(provided);
      }
    }
    world_started_here = !initialized;
  }
  ++world_users;
  return std::shared_ptr<void>(nullptr, ReleaseWorld);
}

}  // namespace

Result<std::unique_ptr<Transport>> MakeMpiTransport(MPI_Comm comm,
                                                    const MpiTransportOptions& options) {
  return MakeOver(comm, options, nullptr);
}

Result<std::unique_ptr<Transport>> MakeMpiTransportFromWorld(const MpiTransportOptions& options) {
  SPARSELINK_RETURN_IF_ERROR(CheckOptions(options));
  SPARSELINK_ASSIGN_OR_RETURN(std::shared_ptr<void> owner, AcquireWorld());
  return MakeOver(MPI_COMM_WORLD, options, std::move(owner));
}

}  // namespace sparselink
