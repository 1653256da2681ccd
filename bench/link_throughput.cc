// What the process-group link costs over the engine under it: two processes on this host, one
// Gloo group, and a stream of packets of one size from rank 0 to rank 1, sent once through
// sparselink's link (framing, posted receives, waiter threads) and once through the group's
// own send/recv with the same window of sends in flight and two receives posted ahead. Rounds
// alternate the two and the median of each is kept; the ratio is link bytes/s over raw.
//
//   link_throughput [--sizes 1024,65536,1048576,16777216] [--mib 64] [--rounds 5] [--json F]
//
// Rank 1 is a fork of this process, made before any thread exists.
#include <signal.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "sparselink/torch/process_group_transport.hpp"

namespace {

using sparselink::Link;
using sparselink::Transport;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr size_t kWindow = 16;  // sends in flight, as the link's default
constexpr milliseconds kTimeout{120000};
// Raw tags lie above every tag the transport may use.
constexpr int kRawTag = 2 * (static_cast<int>(sparselink::kMaxChannelId) + 1);

struct Flags {
  std::vector<size_t> sizes = {1024, 64 << 10, 1 << 20, 16 << 20};
  size_t mib = 64;
  int rounds = 5;
  bool grow_first_message = true;
  std::string json_path;
};

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "link_throughput: " << what << "\n";
  std::exit(1);
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) Die(arg + ": needs a value");
    const std::string value = argv[++i];
    if (arg == "--sizes") {
      f.sizes.clear();
      std::stringstream list(value);
      for (std::string item; std::getline(list, item, ',');) f.sizes.push_back(std::stoull(item));
    } else if (arg == "--mib") {
      f.mib = std::stoull(value);
    } else if (arg == "--rounds") {
      f.rounds = std::stoi(value);
    } else if (arg == "--grow") {
      if (value != "on" && value != "off") Die("--grow: on or off, not " + value);
      f.grow_first_message = value == "on";
    } else if (arg == "--json") {
      f.json_path = value;
    } else {
      Die("unknown flag " + arg);
    }
  }
  if (f.sizes.empty() || f.mib == 0 || f.rounds < 1) Die("--sizes, --mib and --rounds must be > 0");
  return f;
}

void Check(const sparselink::Status& s, const char* what) {
  if (!s.ok()) Die(std::string(what) + ": " + s.ToString());
}

void Barrier(Transport& t) { Check(t.AllGather({}, kTimeout).status(), "barrier"); }

// Seconds rank 1 took to receive `count` packets of `size` bytes through the link.
double StreamLink(Transport& t, Link& link, size_t size, size_t count) {
  std::vector<uint8_t> packet(size, 0x5a);
  Barrier(t);
  const auto start = Clock::now();
  for (size_t i = 0; i < count; ++i) {
    if (t.rank() == 0) {
      Check(link.Send(packet, size, kTimeout), "link send");
    } else {
      auto got = link.Recv(kTimeout);
      Check(got.status(), "link recv");
      if (got->size() != size) Die("link delivered a packet of the wrong size");
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  Barrier(t);  // the sender's last sends are complete before the next stream
  return seconds;
}

// The same stream through the group's own send/recv: kWindow sends in flight, two receives
// posted ahead on two tags taken in turn (the link's own pattern).
// With `copies`, each send first copies a packet into a fresh tensor and each receive copies
// the message out into a vector of its own, as the link must (its caller owns the packet).
double StreamRaw(Transport& t, c10d::ProcessGroup& group, size_t size, size_t count, bool copies) {
  Barrier(t);
  const auto start = Clock::now();
  std::vector<std::vector<at::Tensor>> buffers;
  std::vector<c10::intrusive_ptr<c10d::Work>> work;
  const std::vector<uint8_t> packet(size, 0x5a);
  const size_t slots = t.rank() == 0 ? kWindow : 2;
  for (size_t s = 0; s < slots; ++s)
    buffers.push_back({torch::full({int64_t(size)}, 0x5a, torch::kUInt8)});
  const auto post = [&](size_t i) {
    auto& b = buffers[i % slots];
    const int tag = kRawTag + static_cast<int>(i % 2);
    if (t.rank() == 1) return group.recv(b, 0, tag);
    if (copies) {
      b[0] = at::empty({int64_t(size)}, at::kByte);
      std::memcpy(b[0].data_ptr<uint8_t>(), packet.data(), size);
    }
    return group.send(b, 1, tag);
  };
  for (size_t i = 0; i < std::min(slots, count); ++i) work.push_back(post(i));
  for (size_t i = 0; i < count; ++i) {
    if (!work[i]->wait(kTimeout)) Die("raw wait failed");
    if (copies && t.rank() == 1) {
      const auto* data = buffers[i % slots][0].data_ptr<uint8_t>();
      const std::vector<uint8_t> out(data, data + size);
      if (out[size - 1] != 0x5a) Die("raw delivered the wrong bytes");
    }
    if (i + slots < count) work.push_back(post(i + slots));
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  Barrier(t);
  return seconds;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int RunRank(int rank, int port, const Flags& flags) {
  sparselink::torch_adapter::JobEnvironment job{
      .rank = rank, .world_size = 2, .master_port = port, .source = "link_throughput"};
  auto group = sparselink::torch_adapter::MakeGlooProcessGroup(job, kTimeout);
  Check(group.status(), "process group");
  auto transport = sparselink::torch_adapter::MakeProcessGroupTransport(
      *group, {.grow_first_message = flags.grow_first_message});
  Check(transport.status(), "transport");
  Transport& t = **transport;
  nlohmann::json results = nlohmann::json::array();
  uint32_t channel = 0;
  for (const size_t size : flags.sizes) {
    const size_t count = std::max<size_t>(32, (flags.mib << 20) / std::max<size_t>(size, 1));
    auto link = t.OpenLink(1 - rank, channel++, {.max_packet_bytes = size + 64});
    Check(link.status(), "open link");
    std::vector<double> raw, copied, linked;
    for (int r = 0; r < flags.rounds; ++r) {
      raw.push_back(StreamRaw(t, **group, size, count, /*copies=*/false));
      copied.push_back(StreamRaw(t, **group, size, count, /*copies=*/true));
      linked.push_back(StreamLink(t, **link, size, count));
    }
    const double bytes = double(size) * double(count);
    const double raw_rate = bytes / Median(raw), link_rate = bytes / Median(linked);
    const double copied_rate = bytes / Median(copied);
    results.push_back({{"packet_bytes", size},
                       {"packets", count},
                       {"raw_mb_per_s", raw_rate / 1e6},
                       {"raw_copied_mb_per_s", copied_rate / 1e6},
                       {"link_mb_per_s", link_rate / 1e6},
                       {"link_over_raw", link_rate / raw_rate},
                       {"link_over_raw_copied", link_rate / copied_rate}});
    if (rank == 1) {
      std::printf(
          "%10zu B x %6zu   raw %8.1f MB/s   raw+copies %8.1f MB/s   link %8.1f MB/s   "
          "link/raw %.3f   link/(raw+copies) %.3f\n",
          size, count, raw_rate / 1e6, copied_rate / 1e6, link_rate / 1e6, link_rate / raw_rate,
          link_rate / copied_rate);
      std::fflush(stdout);
    }
  }
  if (rank == 1 && !flags.json_path.empty()) {
    std::ofstream(flags.json_path)
        << nlohmann::json{{"rounds", flags.rounds}, {"results", results}}.dump(2) << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Flags flags = ParseFlags(argc, argv);
  const int port = 20000 + static_cast<int>(getpid() % 20000);
  std::printf("2 ranks over Gloo on the loopback, %zu MiB per stream, median of %d rounds\n",
              flags.mib, flags.rounds);
  std::fflush(stdout);
  const pid_t child = fork();
  if (child < 0) Die("fork failed");
  if (child == 0) _exit(RunRank(1, port, flags));
  const int rc = RunRank(0, port, flags);
  int status = 0;
  waitpid(child, &status, 0);
  if (rc != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) Die("rank 1 failed");
  return 0;
}
