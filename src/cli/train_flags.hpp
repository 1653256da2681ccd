// The flags of `sparselink train`: their CLI11 registration, and every check of them, made
// before any work, into the typed plan the run follows.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/train.hpp"
#include "sparselink/sensitivity.hpp"
#include "sparselink/torch/pipeline.hpp"
#include "sparselink/torch/routed_boundary.hpp"

namespace sparselink::cli {

// The flags as typed values.
struct TrainPlan {
  torch_adapter::RoutingPolicy policy = torch_adapter::RoutingPolicy::kSensitivity;
  ValueCodec codec = ValueCodec::kInt8;
  ValueCodec gradient_codec = ValueCodec::kInt8;
  std::optional<double> keep;  // fraction; nullopt = negotiated
  double keep_min = 0.01;
  SensitivityMode sensitivity_mode = SensitivityMode::kTaylor;
  double eps = 1e-3;
  double bandwidth_bits_per_s = 0;
  // The shared budget steers negotiated contracts; a fixed --keep (or dense) has none.
  bool budget_applies = false;
  torch_adapter::Schedule schedule = torch_adapter::Schedule::kOneFOneB;
};

// Registers the train subcommand's flags, bound to `options` (which must outlive `app`).
CLI::App* AddTrainCommand(CLI::App& app, TrainCliOptions* options);

// Checks every flag (and applies --simd, probes the model split, creates the report's and the
// plots' directories): the first bad one is the error, naming the flag and its value.
Result<TrainPlan> PlanTrain(const TrainCliOptions& options);

// What the run does with checkpoints: --checkpoint, --resume and --stop-after, and the
// settings of this command a resumed run must share beyond those the trainer checks itself.
torch_adapter::CheckpointOptions CheckpointFlags(const TrainCliOptions& options);
// After a run that --stop-after ended: where its checkpoint is and how to go on.
void PrintStop(const TrainCliOptions& options, std::ostream& out);

// The boundaries' options for this plan; `parallel_min_entries` is where boundaries go parallel.
torch_adapter::RoutedBoundaryOptions BoundaryOptions(const TrainCliOptions& options,
                                                     const TrainPlan& plan,
                                                     size_t parallel_min_entries);

// One stage per rank over the transport --transport names (train_ranks.cc); the exit code.
int RunTrainAcrossRanks(const TrainCliOptions& options, const TrainPlan& plan, std::ostream& out,
                        std::ostream& err);
// The report written (atomically) and the plots drawn, as --report and --plot ask; the exit
// code.
int WriteReportAndPlots(const nlohmann::json& report, const TrainCliOptions& options,
                        std::ostream& out, std::ostream& err);

// The plotting script, and whether --plot can work here (python3 with matplotlib, the script,
// a directory it can write): checked before training.
inline constexpr const char* kPlotScript = SPARSELINK_SOURCE_DIR "/scripts/plot_report.py";
Status CheckPlotting(const std::string& plot_dir);

}  // namespace sparselink::cli
