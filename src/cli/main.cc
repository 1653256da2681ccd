// The sparselink command. Each subcommand lives in its own file and returns an exit code;
// this file only parses flags (CLI11) and turns every error into one line and a non-zero exit.
#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/demo.hpp"
#include "cli/inspect.hpp"

int main(int argc, char** argv) {
  CLI::App app{
      "sparselink: dynamic sparsity allocation with inter-layer communication.\n"
      "Routes the most sensitive entries across layer boundaries under negotiated contracts."};
  app.set_version_flag("--version", std::string("sparselink ") + SPARSELINK_VERSION_STRING +
                                        " (wire format v1)");
  app.require_subcommand(1);

  std::string packet_path;
  bool inspect_json = false;
  CLI::App* inspect = app.add_subcommand("inspect", "Print a packet's header, tiers, sizes and checksum status");
  inspect->add_option("PACKET_FILE", packet_path, "a packet written by sparselink")->required();
  inspect->add_flag("--json", inspect_json, "print one JSON object instead of a table");

  sparselink::cli::DemoOptions demo_options;
  CLI::App* demo = app.add_subcommand(
      "demo", "Route synthetic activations across 3 boundaries under negotiated contracts");
  demo->add_option("--steps", demo_options.steps, "training steps to emulate")->check(CLI::Range(1, 100000));
  demo->add_option("--rows", demo_options.rows, "rows (samples) per micro-batch")->check(CLI::Range(1, 65536));
  demo->add_option("--cols", demo_options.cols, "neurons per boundary")->check(CLI::Range(1, 1 << 20));
  demo->add_option("--negotiate-every", demo_options.negotiate_every, "steps between negotiations")
      ->check(CLI::Range(1, 100000));
  demo->add_option("--link-budget", demo_options.link_budget_bytes,
                   "bytes per step shared by all boundaries (0 = no shared budget)")
      ->check(CLI::NonNegativeNumber);
  demo->add_option("--link-bandwidth", demo_options.link_bandwidth, "emulated link, e.g. 100Mbit");
  demo->add_option("--codec", demo_options.lossy_codec, "lossy-tier codec: fp32|fp16|bf16|int8|int4");
  demo->add_option("--seed", demo_options.seed, "random seed");
  demo->add_option("--out", demo_options.out_dir, "where the last packet of each boundary is written");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (inspect->parsed()) return sparselink::cli::RunInspect(packet_path, inspect_json, std::cout, std::cerr);
  if (demo->parsed()) return sparselink::cli::RunDemo(demo_options, std::cout, std::cerr);
  return 2;
}
