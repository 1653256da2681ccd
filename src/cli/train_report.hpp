// What `sparselink train` tells about a run: the JSON report (docs/report.md) and the tables
// and totals it prints.
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>
#include <vector>

#include "cli/train.hpp"
#include "cli/train_flags.hpp"
#include "sparselink/torch/routed_boundary.hpp"
#include "sparselink/torch/runtime.hpp"
#include "sparselink/torch/trainer.hpp"

namespace sparselink::cli {

// Per-epoch figures, as in the report's "epochs" (and the baseline's).
nlohmann::json EpochsJson(const torch_adapter::TrainReport& report);

// The report's "config": the flags as run, and the runtime that ran them.
nlohmann::json ConfigJson(const TrainCliOptions& options, const TrainPlan& plan,
                          const torch_adapter::TorchRuntimeInfo& runtime,
                          size_t boundary_parallel_min_entries);

// Adds the routed run to `report`: "epochs", "final", "traffic", "time" and "boundaries".
void AddRunToReport(const torch_adapter::TrainReport& trained,
                    const std::vector<torch_adapter::BoundaryReport>& boundaries,
                    double wall_seconds, double bandwidth_bits_per_s, nlohmann::json* report);

// The table per boundary and the totals, from a report AddRunToReport filled.
void PrintRunSummary(const nlohmann::json& report,
                     const std::vector<torch_adapter::BoundaryReport>& boundaries,
                     const TrainCliOptions& options, const TrainPlan& plan, std::ostream& out);

}  // namespace sparselink::cli
