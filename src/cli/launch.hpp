// `sparselink launch -n S -- COMMAND ARGS...`: a one-line way to try a multi-rank job on this
// host. It starts `sparselink COMMAND ARGS...` S times with the variables torchrun sets (RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT a free port)
// and waits for all of them.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace sparselink::cli {

struct LaunchOptions {
  int ranks = 2;
  int port = 0;  // 0: a free port
  // After the first rank fails, how long the others get to end on their own (they should:
  // every wait on a dead rank fails) before they are killed.
  double grace_seconds = 90;
  std::vector<std::string> command;  // the sparselink subcommand and its arguments
};

// The exit code: 0 when every rank exited 0; else the first failure's code (128 + signal for
// a rank killed by a signal), with one line per failed rank on `err`.
int RunLaunch(const LaunchOptions& options, std::ostream& out, std::ostream& err);

}  // namespace sparselink::cli
