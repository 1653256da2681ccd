// `sparselink train`: the main job. A network split into stages, trained on Fashion-MNIST,
// with every boundary routed under negotiated contracts; a JSON report and plots.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

namespace sparselink::cli {

// The floor eps of the routing score |a| * (eps + S_j) when --eps is not given: 0.001 for the
// MLP, 1 for the CNN: on the MLP a small floor lets the map reorder the per-row top-k and beats
// magnitude-only routing; on the CNN's conv boundaries the map's spread over channels and
// positions swamps |a| with a small floor, while eps = 1 bounds its weight to [1, 2]
// (docs/perf-notes.md#defaulteps).
double DefaultEps(const std::string& model);

struct TrainCliOptions {
  std::string model = "mlp";
  std::string policy = "sensitivity";
  std::string keep = "auto";          // a percentage in (0, 100], or "auto"
  double link_budget_bytes = 150000;  // bytes per step shared by all boundaries; 0 = none
  bool link_budget_auto = false;      // --link-budget auto: follow the measured link rate
  double target_step_ms = 0;          // auto: the step time budgets aim at (0: slowest compute)
  double rate_change = 0.25;          // auto: relative rate move that changes a budget
  double link_fill = 0.2;             // auto: share of the target the link may take
  std::string codec = "int8";         // kept values
  std::string gradient_codec = "int8";
  int stages = 4;
  int epochs = 5;
  int batch = 128;
  int micro_batches = 1;  // each batch crosses the boundaries as this many micro-batches
  uint64_t seed = 1;
  int threads = 2;
  std::string link_bandwidth = "100Mbit";
  double link_loss = 0;     // emulated loss rate per packet, [0, 1)
  double link_corrupt = 0;  // emulated rate of packets with one flipped bit, [0, 1)
  int link_tries = 8;       // sends of one packet before the run fails, >= 1
  int negotiate_every = 50;
  double tau = 0.9;
  std::string sensitivity = "taylor";  // taylor | activation | gradient | weighted
  // Routing score |a| * (eps + S_j); unset: the model's default (DefaultEps).
  std::optional<double> eps;
  std::string map_resolution = "channel";  // conv maps: channel (block = H*W) | neuron
  int summary_every = 10;                  // steps between receiver summaries
  bool zstd = false;          // zstd per packet section where it is smaller (off: the subset-bitmap
                              // index already takes what zstd won, at a small part of its time)
  std::string simd = "best";  // best | avx2 | sse4: cap the routing kernels
  double keep_min_percent = 1.0;
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  std::string report_path = "out/train/report.json";
  std::string plot_dir;           // empty: no plots
  int64_t max_train_samples = 0;  // > 0: quick runs on the first N samples
  bool compare_dense = false;     // also train the dense baseline with the same seed
  // Where the stages run: "inprocess" (every stage in this process, the links emulated), or
  // one stage per rank over a real transport: "gloo" (torch's process group, rank and world
  // from the environment torchrun or mpirun sets) or "mpi".
  std::string transport = "inprocess";
  std::string schedule = "1f1b";  // gpipe | 1f1b (across ranks)
  double timeout_seconds = 60;    // the longest wait on another rank before the run fails
  // Checkpoints (sparselink/torch/checkpoint.hpp): after every epoch to DIR/rank-R.ckpt;
  // a resume from one (the same flags, --epochs may grow); a stop after epoch N, as if killed.
  std::string checkpoint_dir;
  std::string resume_dir;
  int stop_after = 0;  // 0: run every epoch
};

// Returns the process exit code (0, or 1 with one line on `err`). The report is written to
// `report_path` only when the run completes (through a temporary file and a rename).
int RunTrain(const TrainCliOptions& options, std::ostream& out, std::ostream& err);

}  // namespace sparselink::cli
