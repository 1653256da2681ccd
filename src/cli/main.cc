// The sparselink command. Each subcommand lives in its own file and returns an exit code;
// this file only parses flags (CLI11) and turns every error into one line and a non-zero exit.
#include <CLI/CLI.hpp>
#include <iostream>
#include <string>
#include <string_view>

#include "cli/bench.hpp"
#include "cli/demo.hpp"
#include "cli/inspect.hpp"
#include "cli/launch.hpp"
#ifdef SPARSELINK_WITH_TORCH
#include <c10/util/Exception.h>

#include "cli/train.hpp"
#include "cli/train_flags.hpp"
#include "sparselink/torch/runtime.hpp"
#endif

int main(int argc, char** argv) {
#ifdef SPARSELINK_WITH_TORCH
  // Before any thread exists: in training, LibTorch's OpenMP pool must not spin against
  // OpenBLAS's own threads (none with OpenBLAS's OpenMP build). Only `train` runs GEMMs;
  // `bench` times the router's own OpenMP threads, which should not sleep between calls.
  if (argc > 1 && std::string_view(argv[1]) == "train") {
    sparselink::torch_adapter::ChooseOpenMpWait(argv);
  }
#endif
  CLI::App app{
      "sparselink: dynamic sparsity allocation with inter-layer communication.\n"
      "Routes the most sensitive entries across layer boundaries under negotiated contracts."};
  app.set_version_flag(
      "--version", std::string("sparselink ") + SPARSELINK_VERSION_STRING + " (wire format v1)");
  app.require_subcommand(1);

  std::string packet_path;
  bool inspect_json = false;
  CLI::App* inspect =
      app.add_subcommand("inspect", "Print a packet's header, tiers, sizes and checksum status");
  inspect->add_option("PACKET_FILE", packet_path, "a packet written by sparselink")->required();
  inspect->add_flag("--json", inspect_json, "print one JSON object instead of a table");

  sparselink::cli::BenchOptions bench_options;
  CLI::App* bench = app.add_subcommand(
      "bench", "Time the router against memcpy, torch::topk and nth_element on the same inputs");
  bench->add_option("WHAT", bench_options.what, "route | decode | all (default all)")
      ->check(CLI::IsMember({"route", "decode", "all"}));
  bench->add_option("--json", bench_options.json_path, "also write the results as JSON here");
  bench->add_option("--min-time", bench_options.min_seconds, "seconds per method and round")
      ->check(CLI::Range(0.001, 60.0));
  bench->add_option("--rounds", bench_options.rounds, "rounds per method (the median is kept)")
      ->check(CLI::Range(1, 100));
  bench->add_flag("--quick", bench_options.quick, "one small case, for a smoke test");
  bench->add_option("--case", bench_options.only_case,
                    "run only case N of the list (1 = 256x4096 keep 10% one thread)");
  bench
      ->add_option("--simd", bench_options.simd,
                   "cap the kernels' instruction set: best | avx2 | sse4 (default best), to see "
                   "what a machine without AVX-512 gets")
      ->check(CLI::IsMember({"best", "avx2", "sse4"}));
  bench
      ->add_option_function<size_t>(
          "--pool-mib", [&](size_t mib) { bench_options.pool_bytes = mib << 20; },
          "MiB of inputs each case rotates through, at least two inputs (default 64: twice the "
          "L3 here; 1: two inputs, which stay in L3)")
      ->check(CLI::Range(1, 4096));
  sparselink::cli::DemoOptions demo_options;
  CLI::App* demo = app.add_subcommand(
      "demo", "Route synthetic activations across 3 boundaries under negotiated contracts");
  demo->add_option("--steps", demo_options.steps, "training steps to emulate")
      ->check(CLI::Range(1, 100000));
  demo->add_option("--rows", demo_options.rows, "rows (samples) per micro-batch")
      ->check(CLI::Range(1, 65536));
  demo->add_option("--cols", demo_options.cols, "neurons per boundary")
      ->check(CLI::Range(1, 1 << 20));
  demo->add_option("--negotiate-every", demo_options.negotiate_every, "steps between negotiations")
      ->check(CLI::Range(1, 100000));
  demo->add_option("--link-budget", demo_options.link_budget_bytes,
                   "bytes per step shared by all boundaries (0 = no shared budget)")
      ->check(CLI::NonNegativeNumber);
  demo->add_option("--link-bandwidth", demo_options.link_bandwidth, "emulated link, e.g. 100Mbit");
  demo->add_option("--codec", demo_options.lossy_codec,
                   "lossy-tier codec: fp32|fp16|bf16|int8|int4");
  demo->add_option("--seed", demo_options.seed, "random seed");
  demo->add_option("--out", demo_options.out_dir,
                   "where the last packet of each boundary is written");

  sparselink::cli::LaunchOptions launch_options;
  CLI::App* launch = app.add_subcommand(
      "launch",
      "Start a sparselink command as N ranks on this host, with torchrun's variables set");
  launch->add_option("-n,--ranks", launch_options.ranks, "ranks to start")
      ->check(CLI::Range(1, 64));
  launch->add_option("--port", launch_options.port, "MASTER_PORT (default: a free port)")
      ->check(CLI::Range(0, 65535));
  launch
      ->add_option("--grace", launch_options.grace_seconds,
                   "seconds the other ranks get to end after one fails, before they are killed")
      ->check(CLI::Range(0.0, 3600.0));
  launch->add_option("COMMAND", launch_options.command, "after --: the sparselink subcommand")
      ->required();
  launch->positionals_at_end();

#ifdef SPARSELINK_WITH_TORCH
  sparselink::cli::TrainCliOptions train_options;
  CLI::App* train = sparselink::cli::AddTrainCommand(app, &train_options);
#endif

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (inspect->parsed())
    return sparselink::cli::RunInspect(packet_path, inspect_json, std::cout, std::cerr);
#ifdef SPARSELINK_WITH_TORCH
  if (train->parsed()) {
    try {
      return sparselink::cli::RunTrain(train_options, std::cout, std::cerr);
    } catch (const c10::Error& e) {
      // One write per line: ranks of one job share a terminal.
      std::cerr << ("sparselink train: " + std::string(e.what_without_backtrace()) + "\n");
    } catch (const std::exception& e) {
      std::cerr << ("sparselink train: " + std::string(e.what()) + "\n");
    }
    return 1;
  }
#endif
  if (launch->parsed()) return sparselink::cli::RunLaunch(launch_options, std::cout, std::cerr);
  if (demo->parsed()) return sparselink::cli::RunDemo(demo_options, std::cout, std::cerr);
  if (bench->parsed()) {
    sparselink::cli::TopkBaseline torch_topk;
#ifdef SPARSELINK_WITH_TORCH
    torch_topk = sparselink::torch_adapter::TopkGatherBaseline;
#endif
    return sparselink::cli::RunBench(bench_options, torch_topk, std::cout, std::cerr);
  }
  return 2;
}
