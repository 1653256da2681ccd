// `sparselink launch` (launch.hpp): the ranks are children of this process, each a copy of
// this executable with the rank's environment.
#include "cli/launch.hpp"

#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

extern char** environ;

namespace sparselink::cli {
namespace {

// A port no one listens on now: bind to port 0 and read what the kernel gave.
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 29517;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 29517;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

// The environment of rank `rank`: this process's, with the job's variables replaced.
std::vector<std::string> RankEnvironment(int rank, int ranks, int port) {
  const std::vector<std::pair<std::string, std::string>> job = {
      {"RANK", std::to_string(rank)},       {"WORLD_SIZE", std::to_string(ranks)},
      {"LOCAL_RANK", std::to_string(rank)}, {"LOCAL_WORLD_SIZE", std::to_string(ranks)},
      {"MASTER_ADDR", "127.0.0.1"},         {"MASTER_PORT", std::to_string(port)}};
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    bool replaced = false;
    for (const auto& [name, value] : job) replaced = replaced || entry.rfind(name + "=", 0) == 0;
    if (!replaced) env.push_back(entry);
  }
  for (const auto& [name, value] : job) env.push_back(name + "=" + value);
  return env;
}

pid_t SpawnRank(const std::vector<std::string>& command, std::vector<std::string> env) {
  std::vector<std::string> args = {"/proc/self/exe"};
  args.insert(args.end(), command.begin(), command.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return -1;
  self[n] = '\0';
  pid_t pid = -1;
  if (posix_spawn(&pid, self, nullptr, nullptr, argv.data(), envp.data()) != 0) return -1;
  return pid;
}

int ExitCode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

int RunLaunch(const LaunchOptions& options, std::ostream& out, std::ostream& err) {
  (void)out;
  if (options.ranks < 1 || options.ranks > 256) {
    err << "sparselink launch: -n = " << options.ranks << ": must be in [1, 256]\n";
    return 2;
  }
  if (options.command.empty()) {
    err << "sparselink launch: no command after --: e.g. launch -n 4 -- train --transport gloo\n";
    return 2;
  }
  const int port = options.port > 0 ? options.port : FreePort();
  std::vector<pid_t> pids;
  for (int r = 0; r < options.ranks; ++r) {
    const pid_t pid = SpawnRank(options.command, RankEnvironment(r, options.ranks, port));
    if (pid < 0) {
      err << "sparselink launch: rank " << r << ": could not start: " << std::strerror(errno)
          << "\n";
      for (pid_t p : pids) kill(p, SIGKILL);
      return 1;
    }
    pids.push_back(pid);
  }
  // Wait for every rank; after the first failure the others get grace_seconds to end on
  // their own, then are killed.
  int first_failure = 0;
  std::vector<bool> done(pids.size(), false);
  size_t left = pids.size();
  auto deadline = std::chrono::steady_clock::time_point::max();
  while (left > 0) {
    for (size_t r = 0; r < pids.size(); ++r) {
      int status = 0;
      if (done[r] || waitpid(pids[r], &status, WNOHANG) != pids[r]) continue;
      done[r] = true;
      --left;
      const int code = ExitCode(status);
      if (code != 0) {
        err << "sparselink launch: rank " << r << " exited with code " << code << "\n";
        if (first_failure == 0) {
          first_failure = code;
          deadline = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(options.grace_seconds * 1000));
        }
      }
    }
    if (left > 0 && std::chrono::steady_clock::now() > deadline) {
      for (size_t r = 0; r < pids.size(); ++r) {
        if (!done[r]) {
          err << "sparselink launch: rank " << r << " still running " << options.grace_seconds
              << " s after the first failure: killed\n";
          kill(pids[r], SIGKILL);
        }
      }
      deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return first_failure;
}

}  // namespace sparselink::cli
