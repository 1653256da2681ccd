// `sparselink demo`: the core library end to end on synthetic activations, without LibTorch.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

namespace sparselink::cli {

struct DemoOptions {
  int steps = 400;
  int rows = 64;
  int cols = 1024;
  int negotiate_every = 20;
  double link_budget_bytes = 0;  // 0: each boundary negotiates alone
  std::string link_bandwidth = "100Mbit";
  std::string lossy_codec = "int8";
  uint64_t seed = 1;
  std::string out_dir = "out/demo";
};

// Runs the demo; returns the process exit code (0, or 1 with one line on `err`).
int RunDemo(const DemoOptions& options, std::ostream& out, std::ostream& err);

}  // namespace sparselink::cli
