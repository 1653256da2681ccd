// The sparselink command. Each subcommand lives in its own file and returns an exit code;
// this file only parses flags (CLI11) and turns every error into one line and a non-zero exit.
#include <CLI/CLI.hpp>
#include <iostream>
#include <string_view>

#include "cli/bench.hpp"
#include "cli/demo.hpp"
#include "cli/inspect.hpp"
#ifdef SPARSELINK_WITH_TORCH
#include <c10/util/Exception.h>

#include "cli/train.hpp"
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

#ifdef SPARSELINK_WITH_TORCH
  sparselink::cli::TrainCliOptions train_options;
  CLI::App* train = app.add_subcommand(
      "train", "Train a network split into stages on Fashion-MNIST with routed boundaries");
  train->add_option("--model", train_options.model, "mlp | cnn")
      ->check(CLI::IsMember({"mlp", "cnn"}));
  train
      ->add_option("--policy", train_options.policy,
                   "dense | random | magnitude | sensitivity | structured")
      ->check(CLI::IsMember({"dense", "random", "magnitude", "sensitivity", "structured"}));
  train->add_option("--keep", train_options.keep,
                    "share of entries kept, PERCENT in (0, 100], or auto");
  train
      ->add_option("--link-budget", train_options.link_budget_bytes,
                   "bytes per step shared by all boundaries (0 = none), split by sensitivity")
      ->check(CLI::NonNegativeNumber);
  train->add_option("--codec", train_options.codec,
                    "codec of kept values: fp32|fp16|bf16|int8|int4");
  train->add_option("--gradient-codec", train_options.gradient_codec, "codec of routed gradients");
  train->add_option("--stages", train_options.stages, "pipeline stages")->check(CLI::Range(1, 64));
  train->add_option("--epochs", train_options.epochs, "training epochs")
      ->check(CLI::Range(1, 1000));
  train->add_option("--batch", train_options.batch, "samples per optimizer step")
      ->check(CLI::Range(1, 65536));
  train
      ->add_option("--micro-batches", train_options.micro_batches,
                   "each batch crosses the boundaries as this many micro-batches (forward and "
                   "backward each, gradients accumulated); <= --batch")
      ->check(CLI::Range(1, 65536));
  train->add_option("--seed", train_options.seed, "seed of init, shuffling and random routing");
  train->add_option("--threads", train_options.threads, "LibTorch/OpenBLAS threads")
      ->check(CLI::Range(1, 256));
  train->add_option("--link-bandwidth", train_options.link_bandwidth,
                    "emulated link, e.g. 100Mbit");
  train->add_option("--link-loss", train_options.link_loss,
                    "emulated share of packets lost, [0, 1); lost packets are re-sent");
  train->add_option("--link-corrupt", train_options.link_corrupt,
                    "emulated share of packets with one flipped bit, [0, 1); re-sent");
  train->add_option("--link-tries", train_options.link_tries,
                    "sends of one packet before the run fails (default 8)");
  train
      ->add_option("--negotiate-every", train_options.negotiate_every, "steps between negotiations")
      ->check(CLI::Range(1, 1000000));
  train->add_option("--tau", train_options.tau,
                    "sensitivity coverage the contract must keep, (0, 1]");
  train->add_option("--sensitivity", train_options.sensitivity,
                    "how the map scores neurons: taylor | activation | gradient | weighted");
  train->add_option_function<double>(
      "--eps", [&](double eps) { train_options.eps = eps; },
      "routing score |a| * (eps + S_j), the floor of S (default: 0.001 for mlp, 1 for cnn)");
  train->add_option("--map-resolution", train_options.map_resolution,
                    "sensitivity units at conv boundaries: channel (one per channel) | neuron");
  train
      ->add_option("--summary-every", train_options.summary_every,
                   "steps between receiver summaries")
      ->check(CLI::Range(1, 1000000));
  train->add_flag("--zstd,!--no-zstd", train_options.zstd,
                  "zstd each packet section where it is smaller (default off)");
  train->add_option("--keep-min", train_options.keep_min_percent,
                    "floor of negotiated keep, percent");
  train->add_option("--data", train_options.data_dir,
                    "directory of the Fashion-MNIST idx.gz files");
  train->add_option("--report", train_options.report_path, "JSON report path");
  train->add_option("--plot", train_options.plot_dir,
                    "directory for PNG plots (needs python3-matplotlib)");
  train
      ->add_option("--max-train-samples", train_options.max_train_samples,
                   "train on the first N samples")
      ->check(CLI::NonNegativeNumber);
  train
      ->add_option("--simd", train_options.simd,
                   "cap the routing kernels' instruction set: best | avx2 | sse4 (default best)")
      ->check(CLI::IsMember({"best", "avx2", "sse4"}));
  train->add_flag("--compare-dense", train_options.compare_dense,
                  "train the dense baseline first, same seed, for the accuracy comparison");
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
      std::cerr << "sparselink train: " << e.what_without_backtrace() << "\n";
    } catch (const std::exception& e) {
      std::cerr << "sparselink train: " << e.what() << "\n";
    }
    return 1;
  }
#endif
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
