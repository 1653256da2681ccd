// The process-group transport: links are ProcessGroupLinks; the all-gather is two c10d
// all-gathers (the sizes, then the bytes padded to the largest); the job's environment is read
// as torchrun and mpirun set it, and a Gloo group is made over a c10d::TCPStore.
#include "sparselink/torch/process_group_transport.hpp"

#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <utility>

#include "transport/open_channels.hpp"
#include "transport/process_group/process_group_link.hpp"

namespace sparselink::torch_adapter {
namespace {

class ProcessGroupTransport final : public Transport {
 public:
  ProcessGroupTransport(c10::intrusive_ptr<c10d::ProcessGroup> group,
                        const ProcessGroupTransportOptions& options)
      : group_(std::move(group)), options_(options) {}

  int rank() const override { return group_->getRank(); }
  int world_size() const override { return group_->getSize(); }
  std::string_view backend() const override { return "process_group"; }

  Result<std::unique_ptr<Link>> OpenLink(int peer, uint32_t channel,
                                         const LinkOptions& options) override {
    SPARSELINK_RETURN_IF_ERROR(opened_.Claim(rank(), world_size(), peer, channel, options));
    return std::unique_ptr<Link>(
        std::make_unique<ProcessGroupLink>(group_, peer, channel, options, options_));
  }

  Result<std::vector<std::vector<uint8_t>>> AllGather(std::span<const uint8_t> mine,
                                                      std::chrono::milliseconds timeout) override {
    const int n = world_size();
    try {
      std::vector<at::Tensor> size_in{at::full({1}, static_cast<int64_t>(mine.size()), at::kLong)};
      std::vector<std::vector<at::Tensor>> size_out(1);
      for (int r = 0; r < n; ++r) size_out[0].push_back(at::empty({1}, at::kLong));
      if (!group_->allgather(size_out, size_in)->wait(timeout)) {
        return Status(ErrorCode::kTimeout, "allgather: sizes not gathered in time");
      }
      int64_t longest = 1;
      for (const auto& t : size_out[0]) longest = std::max(longest, t.item<int64_t>());
      std::vector<at::Tensor> bytes_in{at::zeros({longest}, at::kByte)};
      if (!mine.empty()) std::memcpy(bytes_in[0].data_ptr<uint8_t>(), mine.data(), mine.size());
      std::vector<std::vector<at::Tensor>> bytes_out(1);
      for (int r = 0; r < n; ++r) bytes_out[0].push_back(at::empty({longest}, at::kByte));
      if (!group_->allgather(bytes_out, bytes_in)->wait(timeout)) {
        return Status(ErrorCode::kTimeout, "allgather: bytes not gathered in time");
      }
      std::vector<std::vector<uint8_t>> all(static_cast<size_t>(n));
      for (int r = 0; r < n; ++r) {
        const int64_t size = size_out[0][static_cast<size_t>(r)].item<int64_t>();
        if (size < 0 || size > longest) {
          return FieldError(ErrorCode::kCorruptPacket, "allgather.size", size,
                            "rank " + std::to_string(r) + " sent an impossible size");
        }
        const uint8_t* p = bytes_out[0][static_cast<size_t>(r)].data_ptr<uint8_t>();
        all[static_cast<size_t>(r)].assign(p, p + size);
      }
      return all;
    } catch (const std::exception& e) {
      return Status(ErrorCode::kClosed, std::string("allgather failed: a rank is gone or timed "
                                                    "out (") +
                                            e.what() + ")");
    }
  }

 private:
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  ProcessGroupTransportOptions options_;
  internal::OpenChannels opened_;
};

// An integer environment variable; unset gives `fallback`.
Result<int> IntFromEnvironment(const char* name, int fallback, int lo, int hi, bool* found) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  *found = true;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (*end != '\0' || value < lo || value > hi) {
    return FieldError(
        ErrorCode::kInvalidArgument, name, text,
        "must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return static_cast<int>(value);
}

}  // namespace

Result<std::unique_ptr<Transport>> MakeProcessGroupTransport(
    c10::intrusive_ptr<c10d::ProcessGroup> group, const ProcessGroupTransportOptions& options) {
  if (!group) return Status(ErrorCode::kInvalidArgument, "group = null: no process group given");
  if (options.message_bytes <= internal::kFrameHeaderBytes) {
    return FieldError(ErrorCode::kInvalidArgument, "message_bytes", options.message_bytes,
                      "must be > 16 (the frame header)");
  }
  if (options.max_messages_in_flight == 0) {
    return FieldError(ErrorCode::kInvalidArgument, "max_messages_in_flight", 0, "must be > 0");
  }
  return std::unique_ptr<Transport>(
      std::make_unique<ProcessGroupTransport>(std::move(group), options));
}

Result<JobEnvironment> ReadJobEnvironment() {
  JobEnvironment job;
  bool torchrun = false;
  bool mpirun = false;
  SPARSELINK_ASSIGN_OR_RETURN(job.world_size,
                              IntFromEnvironment("WORLD_SIZE", 0, 1, 1 << 20, &torchrun));
  SPARSELINK_ASSIGN_OR_RETURN(job.rank, IntFromEnvironment("RANK", -1, 0, 1 << 20, &torchrun));
  if (!torchrun) {
    SPARSELINK_ASSIGN_OR_RETURN(job.world_size,
                                IntFromEnvironment("OMPI_COMM_WORLD_SIZE", 1, 1, 1 << 20, &mpirun));
    SPARSELINK_ASSIGN_OR_RETURN(job.rank,
                                IntFromEnvironment("OMPI_COMM_WORLD_RANK", 0, 0, 1 << 20, &mpirun));
  }
  if (torchrun && (job.world_size == 0 || job.rank < 0)) {
    return Status(ErrorCode::kInvalidArgument,
                  std::string("RANK and WORLD_SIZE: set both (torchrun does), got ") +
                      (job.rank < 0 ? "WORLD_SIZE alone" : "RANK alone"));
  }
  if (job.rank >= job.world_size) {
    return FieldError(ErrorCode::kInvalidArgument, torchrun ? "RANK" : "OMPI_COMM_WORLD_RANK",
                      job.rank, "must be < the world size " + std::to_string(job.world_size));
  }
  if (const char* addr = std::getenv("MASTER_ADDR"); addr != nullptr && *addr != '\0') {
    job.master_addr = addr;
  }
  bool port_found = false;
  SPARSELINK_ASSIGN_OR_RETURN(job.master_port, IntFromEnvironment("MASTER_PORT", kDefaultMasterPort,
                                                                  1, 65535, &port_found));
  job.source = torchrun ? "torchrun" : mpirun ? "mpirun" : "defaults";
  return job;
}

Result<c10::intrusive_ptr<c10d::ProcessGroup>> MakeGlooProcessGroup(
    const JobEnvironment& job, std::chrono::milliseconds timeout) {
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(job.master_port);
    store_options.isServer = job.rank == 0;
    store_options.numWorkers = job.world_size;
    store_options.waitWorkers = true;
    store_options.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(job.master_addr, store_options);
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname != nullptr && *ifname) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (job.master_addr == "127.0.0.1" || job.master_addr == "localhost") {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    return c10::intrusive_ptr<c10d::ProcessGroup>(
        c10::make_intrusive<c10d::ProcessGroupGloo>(store, job.rank, job.world_size, options));
  } catch (const std::exception& e) {
    // One line: c10's errors carry a backtrace after the first.
    const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
    std::string what = c10_error ? c10_error->what_without_backtrace() : e.what();
    what = what.substr(0, what.find('\n'));
    return Status(ErrorCode::kIo, "gloo process group at " + job.master_addr + ":" +
                                      std::to_string(job.master_port) + " (rank " +
                                      std::to_string(job.rank) + " of " +
                                      std::to_string(job.world_size) + "): " + what);
  }
}

}  // namespace sparselink::torch_adapter
