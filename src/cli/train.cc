// `sparselink train`. Checks every flag before any work (train_flags.cc), loads the data,
// builds the model split into stages, trains it with a RoutedBoundaries hook on every boundary
// (optionally after a dense baseline with the same seed), prints a table per boundary, writes
// the JSON report (docs/report.md, train_report.cc) atomically, and calls
// scripts/plot_report.py for the PNG plots.
#include "cli/train.hpp"

#include <chrono>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "cli/files.hpp"
#include "cli/train_flags.hpp"
#include "cli/train_report.hpp"
#include "simd/kernels.hpp"
#include "sparselink/torch/fashion_mnist.hpp"
#include "sparselink/torch/models.hpp"
#include "sparselink/torch/routed_boundary.hpp"
#include "sparselink/torch/runtime.hpp"
#include "sparselink/torch/trainer.hpp"

namespace sparselink::cli {
namespace {

namespace ta = ::sparselink::torch_adapter;
using nlohmann::json;

int Fail(std::ostream& err, const Status& s) { return cli::Fail(err, "train", s); }

// The threads, the BLAS and the kernels, in one line; returns where boundaries go parallel:
// where the OpenMP threads stay awake to take the work at once.
size_t PrintRuntime(const ta::TorchRuntimeInfo& runtime, std::ostream& out) {
  out << "runtime: " << runtime.num_threads << " threads, BLAS " << runtime.blas;
  if (!runtime.openblas_coretype.empty()) {
    out << " (kernels set by OPENBLAS_CORETYPE=" << runtime.openblas_coretype << ")";
  }
  const bool threads_awake = ta::OpenMpThreadsStayAwake();
  const size_t parallel_min_entries = threads_awake ? size_t{1} << 16 : size_t{1} << 20;
  out << ", 1024^3 matmul " << std::fixed << std::setprecision(1) << runtime.matmul_1024_ms
      << " ms, " << simd::TargetName() << " routing kernels, boundaries parallel from "
      << parallel_min_entries << " entries ("
      << (threads_awake ? "one OpenMP pool, awake" : "OpenMP threads sleep between regions")
      << ")\n";
  return parallel_min_entries;
}

// The routed run from a fresh model with the seed: its report entries into `report`.
Status RunRouted(const TrainCliOptions& options, const TrainPlan& plan,
                 const ta::RoutedBoundaryOptions& boundary_options, const ta::FashionMnist& data,
                 const ta::TrainOptions& train_options, json* report, std::ostream& out) {
  torch::manual_seed(options.seed);
  SPARSELINK_ASSIGN_OR_RETURN(auto stages, ta::BuildModel(options.model, options.stages));
  SPARSELINK_ASSIGN_OR_RETURN(auto hook, ta::RoutedBoundaries::Create(boundary_options, &stages));
  ta::RoutedBoundaries& boundaries = *hook;
  ta::TrainOptions routed_options = train_options;
  routed_options.progress_suffix = [&boundaries] {
    double wire = 0;
    for (const auto& b : boundaries.Report())
      wire += double(b.forward_wire_bytes + b.backward_wire_bytes);
    return "wire " + Megabytes(wire);
  };
  out << "routed: model " << options.model << ", " << options.stages << " stages, policy "
      << options.policy << ", keep " << options.keep << ", codec " << options.codec << "\n";
  const auto start = std::chrono::steady_clock::now();
  // A boundary's refusal inside autograd comes as c10::Error; main() prints it.
  SPARSELINK_ASSIGN_OR_RETURN(
      const ta::TrainReport trained,
      ta::Train(stages, data.train, data.test, routed_options, &boundaries, &out));
  const double wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::vector<ta::BoundaryReport> reports = boundaries.Report();
  AddRunToReport(trained, reports, wall_seconds, plan.bandwidth_bits_per_s, report);
  PrintRunSummary(*report, reports, options, plan, out);
  PrintStop(options, out);
  return Status::Ok();
}

}  // namespace

double DefaultEps(const std::string& model) { return model == "cnn" ? 1.0 : 1e-3; }

int WriteReportAndPlots(const json& report, const TrainCliOptions& options, std::ostream& out,
                        std::ostream& err) {
  if (Status s = WriteAtomically(options.report_path, report.dump(1), "--report"); !s.ok()) {
    return Fail(err, s);
  }
  out << "report: " << options.report_path << "\n";
  if (!options.plot_dir.empty()) {
    if (!Spawn({"/usr/bin/python3", kPlotScript, options.report_path, options.plot_dir},
               /*quiet=*/false)) {
      err << "sparselink train: plots failed: /usr/bin/python3 " << kPlotScript << " "
          << options.report_path << " " << options.plot_dir << " (needs python3-matplotlib)\n";
      return 1;
    }
    out << "plots: " << options.plot_dir << "/\n";
  }
  return 0;
}

int RunTrain(const TrainCliOptions& options, std::ostream& out, std::ostream& err) {
  auto plan = PlanTrain(options);
  if (!plan.ok()) return Fail(err, plan.status());
  if (options.transport != "inprocess") return RunTrainAcrossRanks(options, *plan, out, err);

  ta::SetNumThreads(options.threads);
  const ta::TorchRuntimeInfo runtime = ta::ProbeTorchRuntime();
  const size_t parallel_min_entries = PrintRuntime(runtime, out);
  auto data = ta::LoadFashionMnist(options.data_dir);
  if (!data.ok()) return Fail(err, data.status());
  const ta::TrainOptions train_options{.epochs = options.epochs,
                                       .batch_size = options.batch,
                                       .micro_batches = options.micro_batches,
                                       .seed = options.seed,
                                       .num_threads = options.threads,
                                       .max_train_samples = options.max_train_samples,
                                       .checkpoint = CheckpointFlags(options)};
  json report;
  report["config"] = ConfigJson(options, *plan, runtime, parallel_min_entries);
  const ta::RoutedBoundaryOptions boundary_options =
      BoundaryOptions(options, *plan, parallel_min_entries);
  if (auto check = ta::RoutedBoundaries::Create(boundary_options, nullptr); !check.ok()) {
    return Fail(err, check.status());
  }

  if (options.compare_dense) {
    out << "dense baseline (same seed):\n";
    torch::manual_seed(options.seed);
    auto stages = ta::BuildModel(options.model, options.stages);
    if (!stages.ok()) return Fail(err, stages.status());
    auto dense = ta::Train(*stages, data->train, data->test, train_options, nullptr, &out);
    if (!dense.ok()) return Fail(err, dense.status());
    report["baseline"] = {{"policy", "dense"},
                          {"epochs", EpochsJson(*dense)},
                          {"test_accuracy", dense->epochs.back().test_accuracy}};
  }
  if (Status s = RunRouted(options, *plan, boundary_options, *data, train_options, &report, out);
      !s.ok()) {
    return Fail(err, s);
  }

  return WriteReportAndPlots(report, options, out, err);
}

}  // namespace sparselink::cli
