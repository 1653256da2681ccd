#include "cli/train_flags.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>

#include "cli/files.hpp"
#include "cli/flags.hpp"
#include "sparselink/contract.hpp"
#include "sparselink/link.hpp"
#include "sparselink/torch/models.hpp"

namespace sparselink::cli {
namespace {

namespace ta = ::sparselink::torch_adapter;

// --keep: a percentage in (0, 100] (a trailing % allowed), or auto (nullopt).
Result<std::optional<double>> ParseKeepFlag(const std::string& value) {
  if (value == "auto") return std::optional<double>();
  char* end = nullptr;
  std::string text = value;
  if (!text.empty() && text.back() == '%') text.pop_back();
  const double percent = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size()) {
    return FieldError(ErrorCode::kInvalidArgument, "--keep", value,
                      "expected a percentage in (0, 100] or auto");
  }
  SPARSELINK_ASSIGN_OR_RETURN(const double fraction, KeepFromPercent(percent, "--keep"));
  return std::optional<double>(fraction);
}

// The emulated link's flags, and the faults a dense run cannot take (it sends no packets).
Status CheckLinkFlags(const TrainCliOptions& options, ta::RoutingPolicy policy) {
  for (const auto& [flag, rate] : {std::pair{"--link-loss", options.link_loss},
                                   std::pair{"--link-corrupt", options.link_corrupt}}) {
    if (!std::isfinite(rate) || rate < 0 || rate >= 1) {
      return FieldError(ErrorCode::kInvalidArgument, flag, rate,
                        "must be a probability per packet in [0, 1)");
    }
    if (policy == ta::RoutingPolicy::kDense && rate > 0) {
      return FieldError(ErrorCode::kInvalidArgument, flag, rate,
                        "the dense policy sends no packets through the emulated link (use it "
                        "with a routed policy, or --compare-dense)");
    }
  }
  if (options.link_tries < 1) {
    return FieldError(ErrorCode::kInvalidArgument, "--link-tries", options.link_tries,
                      "must be >= 1");
  }
  return CheckLinkBudgetFlag(options.link_budget_bytes);
}

// The schedule of the run: micro-batches, negotiation and summary periods.
Status CheckScheduleFlags(const TrainCliOptions& options) {
  if (options.micro_batches < 1 || options.micro_batches > options.batch) {
    return FieldError(ErrorCode::kInvalidArgument, "--micro-batches", options.micro_batches,
                      "must be in [1, --batch = " + std::to_string(options.batch) + "]");
  }
  for (const auto& [flag, every] : {std::pair{"--summary-every", options.summary_every},
                                    std::pair{"--negotiate-every", options.negotiate_every}}) {
    if (every < 1) return FieldError(ErrorCode::kInvalidArgument, flag, every, "must be >= 1");
  }
  return Status::Ok();
}

// The routing and sensitivity flags into `plan`.
Status PlanRouting(const TrainCliOptions& options, TrainPlan* plan) {
  SPARSELINK_ASSIGN_OR_RETURN(plan->policy, ta::ParseRoutingPolicy(options.policy));
  SPARSELINK_ASSIGN_OR_RETURN(plan->codec, ParseCodecFlag("--codec", options.codec));
  SPARSELINK_ASSIGN_OR_RETURN(plan->gradient_codec,
                              ParseCodecFlag("--gradient-codec", options.gradient_codec));
  SPARSELINK_ASSIGN_OR_RETURN(plan->keep, ParseKeepFlag(options.keep));
  SPARSELINK_ASSIGN_OR_RETURN(plan->keep_min,
                              KeepFromPercent(options.keep_min_percent, "--keep-min"));
  if (!(options.tau > 0 && options.tau <= 1)) {
    return FieldError(ErrorCode::kInvalidArgument, "--tau", options.tau, "must be in (0, 1]");
  }
  auto mode = ParseSensitivityMode(options.sensitivity);
  if (!mode.ok()) {
    return FieldError(ErrorCode::kInvalidArgument, "--sensitivity", options.sensitivity,
                      "unknown mode (one of " + NameChoices(kSensitivityModeNames) + ")");
  }
  plan->sensitivity_mode = *mode;
  if (options.map_resolution != "channel" && options.map_resolution != "neuron") {
    return FieldError(ErrorCode::kInvalidArgument, "--map-resolution", options.map_resolution,
                      "must be channel or neuron");
  }
  plan->eps = options.eps.value_or(DefaultEps(options.model));
  if (!(std::isfinite(plan->eps) && plan->eps >= 0)) {
    return FieldError(ErrorCode::kInvalidArgument, "--eps", plan->eps, "must be >= 0");
  }
  return Status::Ok();
}

// --checkpoint, --resume, --stop-after: the stop needs a checkpoint to leave, a resume a
// directory to read (each rank's own file in it is checked when the data is loaded); the
// checkpoint directory is created and must take a file.
Status CheckCheckpointFlags(const TrainCliOptions& options) {
  if (options.stop_after != 0 && (options.stop_after < 1 || options.stop_after > options.epochs)) {
    return FieldError(ErrorCode::kInvalidArgument, "--stop-after", options.stop_after,
                      "must be in [1, --epochs = " + std::to_string(options.epochs) + "]");
  }
  if (options.stop_after != 0 && options.checkpoint_dir.empty()) {
    return FieldError(ErrorCode::kInvalidArgument, "--stop-after", options.stop_after,
                      "needs --checkpoint DIR, to resume the stopped run from");
  }
  if (options.compare_dense && (!options.checkpoint_dir.empty() || !options.resume_dir.empty())) {
    return Status(ErrorCode::kInvalidArgument,
                  "--compare-dense: not with --checkpoint or --resume (the baseline is a run of "
                  "its own)");
  }
  if (!options.resume_dir.empty() && !std::filesystem::is_directory(options.resume_dir)) {
    return FieldError(ErrorCode::kIo, "--resume", options.resume_dir, "no such directory");
  }
  if (options.checkpoint_dir.empty()) return Status::Ok();
  std::error_code ec;
  std::filesystem::create_directories(options.checkpoint_dir, ec);
  if (ec || !std::filesystem::is_directory(options.checkpoint_dir)) {
    return FieldError(ErrorCode::kIo, "--checkpoint", options.checkpoint_dir,
                      ec ? ec.message() : std::string("is not a directory"));
  }
  // Each process probes a name of its own: the ranks of a job check the directory together.
  const std::filesystem::path probe = std::filesystem::path(options.checkpoint_dir) /
                                      (".write-probe-" + std::to_string(::getpid()));
  std::ofstream file(probe);
  const bool writable = static_cast<bool>(file);
  file.close();
  std::filesystem::remove(probe, ec);
  if (!writable) {
    return FieldError(ErrorCode::kIo, "--checkpoint", options.checkpoint_dir, "cannot be written");
  }
  return Status::Ok();
}

}  // namespace

CLI::App* AddTrainCommand(CLI::App& app, TrainCliOptions* options) {
  CLI::App* train = app.add_subcommand(
      "train", "Train a network split into stages on Fashion-MNIST with routed boundaries");
  train->add_option("--model", options->model, "mlp | cnn")->check(CLI::IsMember({"mlp", "cnn"}));
  train
      ->add_option("--policy", options->policy,
                   "dense | random | magnitude | sensitivity | structured")
      ->check(CLI::IsMember({"dense", "random", "magnitude", "sensitivity", "structured"}));
  train->add_option("--keep", options->keep, "share of entries kept, PERCENT in (0, 100], or auto");
  train
      ->add_option_function<std::string>(
          "--link-budget",
          [options](const std::string& text) {
            options->link_budget_auto = text == "auto";
            if (options->link_budget_auto) return;
            size_t used = 0;
            try {
              options->link_budget_bytes = std::stod(text, &used);
            } catch (const std::exception&) {
              used = 0;
            }
            if (used != text.size() || text.empty() || !(options->link_budget_bytes >= 0)) {
              throw CLI::ValidationError("--link-budget",
                                         text + ": must be bytes per step >= 0, or auto");
            }
          },
          "bytes per step shared by all boundaries (0 = none), split by sensitivity; or auto: "
          "each boundary's bytes follow its measured link rate (across ranks, gloo)")
      ->type_name("BYTES|auto");
  train
      ->add_option("--target-step-ms", options->target_step_ms,
                   "auto budget: each boundary's step time the link may fill a share of "
                   "(default: the ranks' compute per step summed, over the boundaries)")
      ->check(CLI::Range(0.0, 1e6));
  train
      ->add_option("--rate-change", options->rate_change,
                   "auto budget: relative move of the measured rate that changes a budget")
      ->check(CLI::Range(0.0, 9.99));
  train
      ->add_option("--link-fill", options->link_fill,
                   "auto budget: share of the target step time the link may add, (0, 1]")
      ->check(CLI::Range(0.01, 1.0));
  train->add_option("--codec", options->codec, "codec of kept values: fp32|fp16|bf16|int8|int4");
  train->add_option("--gradient-codec", options->gradient_codec, "codec of routed gradients");
  train->add_option("--stages", options->stages, "pipeline stages")->check(CLI::Range(1, 64));
  train->add_option("--epochs", options->epochs, "training epochs")->check(CLI::Range(1, 1000));
  train->add_option("--batch", options->batch, "samples per optimizer step")
      ->check(CLI::Range(1, 65536));
  train
      ->add_option("--micro-batches", options->micro_batches,
                   "each batch crosses the boundaries as this many micro-batches (forward and "
                   "backward each, gradients accumulated); <= --batch")
      ->check(CLI::Range(1, 65536));
  train->add_option("--seed", options->seed, "seed of init, shuffling and random routing");
  train->add_option("--threads", options->threads, "LibTorch/OpenBLAS threads")
      ->check(CLI::Range(1, 256));
  train->add_option("--link-bandwidth", options->link_bandwidth, "emulated link, e.g. 100Mbit");
  train->add_option("--link-loss", options->link_loss,
                    "emulated share of packets lost, [0, 1); lost packets are re-sent");
  train->add_option("--link-corrupt", options->link_corrupt,
                    "emulated share of packets with one flipped bit, [0, 1); re-sent");
  train->add_option("--link-tries", options->link_tries,
                    "sends of one packet before the run fails (default 8)");
  train->add_option("--negotiate-every", options->negotiate_every, "steps between negotiations")
      ->check(CLI::Range(1, 1000000));
  train->add_option("--tau", options->tau, "sensitivity coverage the contract must keep, (0, 1]");
  train->add_option("--sensitivity", options->sensitivity,
                    "how the map scores neurons: taylor | activation | gradient | weighted");
  train->add_option_function<double>(
      "--eps", [options](double eps) { options->eps = eps; },
      "routing score |a| * (eps + S_j), the floor of S (default: 0.001 for mlp, 1 for cnn)");
  train->add_option("--map-resolution", options->map_resolution,
                    "sensitivity units at conv boundaries: channel (one per channel) | neuron");
  train->add_option("--summary-every", options->summary_every, "steps between receiver summaries")
      ->check(CLI::Range(1, 1000000));
  train->add_flag("--zstd,!--no-zstd", options->zstd,
                  "zstd each packet section where it is smaller (default off)");
  train->add_option("--keep-min", options->keep_min_percent, "floor of negotiated keep, percent");
  train->add_option("--data", options->data_dir, "directory of the Fashion-MNIST idx.gz files");
  train->add_option("--report", options->report_path, "JSON report path");
  train->add_option("--plot", options->plot_dir,
                    "directory for PNG plots (needs python3-matplotlib)");
  train
      ->add_option("--max-train-samples", options->max_train_samples,
                   "train on the first N samples")
      ->check(CLI::NonNegativeNumber);
  train
      ->add_option("--simd", options->simd,
                   "cap the routing kernels' instruction set: best | avx2 | sse4 (default best)")
      ->check(CLI::IsMember({"best", "avx2", "sse4"}));
  train
      ->add_option("--transport", options->transport,
                   "inprocess (all stages here, links emulated) | gloo | mpi (one stage per "
                   "rank: launch with torchrun, mpirun or `sparselink launch`)")
      ->check(CLI::IsMember({"inprocess", "gloo", "mpi"}));
  train->add_option("--schedule", options->schedule,
                    "micro-batch schedule across ranks: gpipe | 1f1b");
  train->add_option("--timeout", options->timeout_seconds,
                    "seconds any wait on another rank may last before the run fails");
  train
      ->add_option("--checkpoint", options->checkpoint_dir,
                   "after every epoch, save the run to DIR/rank-R.ckpt (atomically)")
      ->type_name("DIR");
  train
      ->add_option("--resume", options->resume_dir,
                   "continue from DIR/rank-R.ckpt, written by a run with the same flags "
                   "(--epochs may be raised; add --checkpoint to keep saving); the report "
                   "holds the whole run")
      ->type_name("DIR");
  train
      ->add_option("--stop-after", options->stop_after,
                   "end after epoch N, its checkpoint written, as if killed there: resumed "
                   "with --resume, the run ends as one never stopped")
      ->type_name("N");
  train->add_flag("--compare-dense", options->compare_dense,
                  "train the dense baseline first, same seed, for the accuracy comparison");
  return train;
}

Result<TrainPlan> PlanTrain(const TrainCliOptions& options) {
  TrainPlan plan;
  SPARSELINK_RETURN_IF_ERROR(PlanRouting(options, &plan));
  SPARSELINK_RETURN_IF_ERROR(CheckLinkFlags(options, plan.policy));
  auto bandwidth = ParseBandwidth(options.link_bandwidth);
  if (!bandwidth.ok()) {
    return Status(bandwidth.status().code(), "--link-bandwidth: " + bandwidth.status().message());
  }
  plan.bandwidth_bits_per_s = *bandwidth;
  SPARSELINK_RETURN_IF_ERROR(CheckScheduleFlags(options));
  SPARSELINK_ASSIGN_OR_RETURN(plan.schedule, ta::ParseSchedule(options.schedule));
  if (!(options.timeout_seconds > 0 && options.timeout_seconds <= 86400)) {
    return FieldError(ErrorCode::kInvalidArgument, "--timeout", options.timeout_seconds,
                      "must be in (0, 86400] seconds");
  }
  if (options.link_budget_auto && options.transport != "gloo") {
    return FieldError(ErrorCode::kInvalidArgument, "--link-budget", "auto",
                      "needs --transport gloo, whose links time each packet's crossing (" +
                          options.transport + " has no measured link rate)");
  }
  if (options.transport != "inprocess" && (options.link_loss > 0 || options.link_corrupt > 0)) {
    return FieldError(ErrorCode::kInvalidArgument, "--transport", options.transport,
                      "emulated faults (--link-loss, --link-corrupt) exist in process only");
  }
  SPARSELINK_RETURN_IF_ERROR(ApplySimdFlag(options.simd));
  SPARSELINK_RETURN_IF_ERROR(ta::BuildModel(options.model, options.stages).status());
  // Last, as they create directories: the checkpoints', the report's and the plots'.
  SPARSELINK_RETURN_IF_ERROR(CheckCheckpointFlags(options));
  SPARSELINK_RETURN_IF_ERROR(CheckWritable(options.report_path, "--report"));
  if (!options.plot_dir.empty()) SPARSELINK_RETURN_IF_ERROR(CheckPlotting(options.plot_dir));
  plan.budget_applies = !plan.keep && plan.policy != ta::RoutingPolicy::kDense &&
                        (options.link_budget_bytes > 0 || options.link_budget_auto);
  return plan;
}

ta::CheckpointOptions CheckpointFlags(const TrainCliOptions& options) {
  // The model by name (the trainer checks its shapes) and the transport's family: a run in
  // one process and one across ranks keep different files.
  return {.dir = options.checkpoint_dir,
          .resume = options.resume_dir,
          .stop_after = options.stop_after,
          .config = "model=" + options.model + "\nstages=" + std::to_string(options.stages) +
                    "\nacross_ranks=" + (options.transport == "inprocess" ? "no" : "yes") + "\n"};
}

void PrintStop(const TrainCliOptions& options, std::ostream& out) {
  if (options.stop_after == 0) return;
  out << "stopped after epoch " << options.stop_after << " (--stop-after); checkpoint in "
      << options.checkpoint_dir << ": go on with --resume " << options.checkpoint_dir << "\n";
}

ta::RoutedBoundaryOptions BoundaryOptions(const TrainCliOptions& options, const TrainPlan& plan,
                                          size_t parallel_min_entries) {
  return {
      .policy = plan.policy,
      .keep = plan.keep,
      .keep_full = 0.0,
      .lossy_codec = plan.codec,
      .gradient_codec = plan.gradient_codec,
      .zstd = options.zstd,
      .eps = plan.eps,
      .per_channel_maps = options.map_resolution == "channel",
      .negotiate_every = options.negotiate_every,
      .summary_every = options.summary_every,
      .negotiator = {.tau_send = options.tau, .tau_recv = options.tau, .keep_min = plan.keep_min},
      .initial_keep = std::max(plan.keep_min, 0.1),
      .link_budget_bytes_per_step =
          plan.budget_applies && !options.link_budget_auto ? options.link_budget_bytes : 0.0,
      .link_budget_auto = plan.budget_applies && options.link_budget_auto,
      .link_rate = {.fill = options.link_fill, .rate_change = options.rate_change},
      .target_step_seconds = options.target_step_ms / 1000,
      .sensitivity_mode = plan.sensitivity_mode,
      .link = {.bandwidth_bits_per_s = plan.bandwidth_bits_per_s,
               .loss_rate = options.link_loss,
               .corrupt_rate = options.link_corrupt},
      .retry = {.max_tries = options.link_tries},
      .seed = options.seed,
      .parallel_min_entries = parallel_min_entries};
}

Status CheckPlotting(const std::string& plot_dir) {
  if (!std::filesystem::exists(kPlotScript)) {
    return FieldError(ErrorCode::kIo, "--plot", plot_dir,
                      std::string("the plotting script ") + kPlotScript + " is missing");
  }
  if (!Spawn({"/usr/bin/python3", "-c", "import matplotlib"}, /*quiet=*/true)) {
    return FieldError(
        ErrorCode::kIo, "--plot", plot_dir,
        "needs /usr/bin/python3 with matplotlib (apt-get install python3-matplotlib)");
  }
  std::error_code ec;
  std::filesystem::create_directories(plot_dir, ec);
  if (ec || !std::filesystem::is_directory(plot_dir)) {
    return FieldError(ErrorCode::kIo, "--plot", plot_dir,
                      ec ? ec.message() : std::string("is not a directory"));
  }
  return Status::Ok();
}

}  // namespace sparselink::cli
