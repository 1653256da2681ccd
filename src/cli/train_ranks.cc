// `sparselink train --transport gloo|mpi`: one stage per rank. Every rank loads the data and
// builds the whole model from the seed (so the ranks start from the same weights, as one
// process would), then trains its stage (TrainPipelineStage); rank 0 prints the progress, the
// table and the report. A failure ends the rank with one line naming the rank, the boundary
// and what it waited for.
#include <chrono>
#include <iomanip>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/files.hpp"
#include "cli/train.hpp"
#include "cli/train_flags.hpp"
#include "cli/train_report.hpp"
#include "sparselink/torch/fashion_mnist.hpp"
#include "sparselink/torch/pipeline.hpp"
#include "sparselink/torch/process_group_transport.hpp"
#include "sparselink/torch/runtime.hpp"
#ifdef SPARSELINK_WITH_MPI
#include "sparselink/mpi_transport.hpp"
#endif

namespace sparselink::cli {
namespace {

namespace ta = ::sparselink::torch_adapter;
using nlohmann::json;

// The transport the flags name, with what it needs alive (the process group).
struct Job {
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  std::unique_ptr<Transport> transport;
  std::string where;  // "rank R of W (source)"
};

Result<Job> JoinJob(const TrainCliOptions& options, std::chrono::milliseconds timeout) {
  Job job;
  if (options.transport == "mpi") {
#ifdef SPARSELINK_WITH_MPI
    SPARSELINK_ASSIGN_OR_RETURN(job.transport, MakeMpiTransportFromWorld({}));
    job.where = "rank " + std::to_string(job.transport->rank()) + " of " +
                std::to_string(job.transport->world_size()) + " (MPI)";
    return job;
#else
    return FieldError(ErrorCode::kUnsupported, "--transport", options.transport,
                      "this build has no MPI (configure with SPARSELINK_WITH_MPI=ON)");
#endif
  }
  SPARSELINK_ASSIGN_OR_RETURN(const ta::JobEnvironment env, ta::ReadJobEnvironment());
  if (env.world_size != options.stages) {
    return FieldError(
        ErrorCode::kInvalidArgument, "world size", env.world_size,
        "must equal --stages = " + std::to_string(options.stages) + " (one stage per rank)");
  }
  SPARSELINK_ASSIGN_OR_RETURN(job.group, ta::MakeGlooProcessGroup(env, timeout));
  // An auto budget times each packet's rest after its first message: a small first message,
  // never grown, gives routed packets of a few kB a rest to time.
  ta::ProcessGroupTransportOptions transport_options;
  if (options.link_budget_auto) {
    transport_options.message_bytes = size_t{4} << 10;
    transport_options.grow_first_message = false;
  }
  SPARSELINK_ASSIGN_OR_RETURN(job.transport,
                              ta::MakeProcessGroupTransport(job.group, transport_options));
  job.where = "rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) + " (" +
              env.source + ", gloo)";
  return job;
}

// Rank 0's report section on the pipeline: schedule, the bubble the formula predicts, and each
// rank's measured idle share of its steps.
json PipelineJson(const TrainCliOptions& options, const ta::PipelineReport& run) {
  json idle = json::array();
  for (size_t r = 0; r < run.step_seconds.size(); ++r) {
    idle.push_back(run.step_seconds[r] > 0 ? run.idle_seconds[r] / run.step_seconds[r] : 0.0);
  }
  json link_rate = json::array();
  for (const ta::LinkRateRecord& r : run.link_rate_history) {
    link_rate.push_back({{"step", r.step},
                         {"unix_seconds", r.unix_seconds},
                         {"step_seconds", r.step_seconds},
                         {"target_seconds", r.target_seconds},
                         {"measured_bytes_per_s", r.measured_bytes_per_s},
                         {"rate_bytes_per_s", r.rate_bytes_per_s},
                         {"budget_bytes", r.budget_bytes}});
  }
  return {{"link_rate", link_rate},
          {"transport", options.transport},
          {"schedule", options.schedule},
          {"ranks", run.step_seconds.size()},
          {"micro_batches", options.micro_batches},
          {"predicted_bubble", run.predicted_bubble},
          {"step_seconds", run.step_seconds},
          {"idle_seconds", run.idle_seconds},
          {"cpu_seconds", run.cpu_seconds},
          {"sent_bytes", run.sent_bytes},
          {"idle_share", idle}};
}

void PrintPipeline(const json& p, std::ostream& out) {
  out << "pipeline: " << p["ranks"].get<size_t>() << " ranks over "
      << p["transport"].get<std::string>() << ", " << p["schedule"].get<std::string>() << " with "
      << p["micro_batches"].get<int>()
      << " micro-batches: the bubble formula (S-1)/(M+S-1) predicts " << std::fixed
      << std::setprecision(1) << 100 * p["predicted_bubble"].get<double>()
      << "% idle; measured idle share of the steps per rank:";
  for (const auto& share : p["idle_share"]) out << " " << 100 * share.get<double>() << "%";
  out << "\n";
}

Result<ta::PipelineReport> RunOnce(Transport& transport, const TrainCliOptions& options,
                                   ta::PipelineOptions pipeline, const ta::FashionMnist& data,
                                   std::ostream* progress) {
  torch::manual_seed(options.seed);
  SPARSELINK_ASSIGN_OR_RETURN(auto stages, ta::BuildModel(options.model, options.stages));
  return ta::TrainPipelineStage(transport, stages, data.train, data.test, pipeline, progress);
}

}  // namespace

int RunTrainAcrossRanks(const TrainCliOptions& options, const TrainPlan& plan, std::ostream& out,
                        std::ostream& err) {
  const auto timeout =
      std::chrono::milliseconds(static_cast<int64_t>(options.timeout_seconds * 1000));
  auto job = JoinJob(options, timeout);
  if (!job.ok()) return Fail(err, "train", job.status());
  const auto fail = [&](const Status& s) {
    return Fail(err, "train", Status(s.code(), job->where + ": " + s.message()));
  };
  const bool rank0 = job->transport->rank() == 0;
  std::ostream* progress = rank0 ? &out : nullptr;
  ta::SetNumThreads(options.threads);
  const ta::TorchRuntimeInfo runtime = ta::ProbeTorchRuntime();
  auto data = ta::LoadFashionMnist(options.data_dir);
  if (!data.ok()) return fail(data.status());
  ta::PipelineOptions pipeline;
  pipeline.schedule = plan.schedule;
  pipeline.boundary = BoundaryOptions(options, plan, size_t{1} << 20);
  pipeline.train.epochs = options.epochs;
  pipeline.train.batch_size = options.batch;
  pipeline.train.micro_batches = options.micro_batches;
  pipeline.train.seed = options.seed;
  pipeline.train.num_threads = options.threads;
  pipeline.train.max_train_samples = options.max_train_samples;
  pipeline.train.checkpoint = CheckpointFlags(options);
  pipeline.timeout = timeout;
  json report;
  report["config"] = ConfigJson(options, plan, runtime, pipeline.boundary.parallel_min_entries);
  if (options.compare_dense) {
    if (progress) out << "dense baseline (same seed), " << job->where << ":\n";
    ta::PipelineOptions dense = pipeline;
    dense.boundary.policy = ta::RoutingPolicy::kDense;
    auto run = RunOnce(*job->transport, options, dense, *data, progress);
    if (!run.ok()) return fail(run.status());
    report["baseline"] = {{"policy", "dense"},
                          {"epochs", EpochsJson(run->train)},
                          {"test_accuracy", run->train.epochs.back().test_accuracy}};
  }
  if (progress) {
    out << "routed: model " << options.model << ", " << options.stages << " stages on "
        << options.stages << " ranks, policy " << options.policy << ", keep " << options.keep
        << ", codec " << options.codec << "\n";
  }
  const auto start = std::chrono::steady_clock::now();
  auto run = RunOnce(*job->transport, options, pipeline, *data, progress);
  if (!run.ok()) return fail(run.status());
  const double wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!rank0) return 0;
  AddRunToReport(run->train, run->boundaries, wall_seconds, plan.bandwidth_bits_per_s, &report);
  report["pipeline"] = PipelineJson(options, *run);
  PrintRunSummary(report, run->boundaries, options, plan, out);
  PrintPipeline(report["pipeline"], out);
  PrintStop(options, out);
  return WriteReportAndPlots(report, options, out, err);
}

}  // namespace sparselink::cli
