// `sparselink train`. Validates every flag before any work, loads the data, builds the model
// split into stages, trains it with a RoutedBoundaries hook on every boundary (optionally after
// a dense baseline with the same seed), prints a table per boundary, writes the JSON report
// (docs/report.md) atomically, and calls scripts/plot_report.py for the PNG plots.
#include "cli/train.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>
#include <vector>

#include "cli/flags.hpp"
#include "simd/kernels.hpp"
#include "sparselink/link.hpp"
#include "sparselink/torch/fashion_mnist.hpp"
#include "sparselink/torch/models.hpp"
#include "sparselink/torch/routed_boundary.hpp"
#include "sparselink/torch/runtime.hpp"
#include "sparselink/torch/trainer.hpp"

extern char** environ;

namespace sparselink::cli {
namespace {

namespace ta = ::sparselink::torch_adapter;
using nlohmann::json;

int Fail(std::ostream& err, const Status& s) {
  err << "sparselink train: " << s.ToString() << "\n";
  return 1;
}

json EpochsJson(const ta::TrainReport& report) {
  json epochs = json::array();
  for (const ta::EpochStats& e : report.epochs) {
    epochs.push_back({{"epoch", e.epoch},
                      {"seconds", e.seconds},
                      {"samples_per_s", e.samples_per_s},
                      {"loss", e.loss},
                      {"train_accuracy", e.train_accuracy},
                      {"test_accuracy", e.test_accuracy}});
  }
  return epochs;
}

json PhasesJson(const ta::BoundaryTime& t) {
  json phases = json::object();
  for (const auto& p : ta::BoundaryTime::kPhases) phases[p.name] = t.*p.seconds;
  return phases;
}

json ContractJson(const Contract& c) {
  return {{"version", c.version},
          {"keep", c.keep},
          {"keep_full", c.keep_full},
          {"full_codec", Traits(c.full_codec).name},
          {"lossy_codec", Traits(c.lossy_codec).name},
          {"granularity", GranularityName(c.granularity)},
          {"rest", RestCodecName(c.rest)},
          {"bound_by", BoundByName(c.bound_by)}};
}

// Checks that `path` can be written, by creating its directory and a temporary file beside it,
// before hours of training depend on it.
Status CheckWritable(const std::filesystem::path& path) {
  std::error_code ec;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
  if (ec) return FieldError(ErrorCode::kIo, "--report", path.string(), ec.message());
  if (std::filesystem::is_directory(path)) {
    return FieldError(ErrorCode::kIo, "--report", path.string(), "is a directory");
  }
  const std::filesystem::path probe = path.string() + ".partial";
  std::ofstream file(probe);
  if (!file) return FieldError(ErrorCode::kIo, "--report", path.string(), "cannot be written");
  file.close();
  std::filesystem::remove(probe, ec);
  return Status::Ok();
}

Status WriteAtomically(const std::filesystem::path& path, const std::string& text) {
  const std::filesystem::path partial = path.string() + ".partial";
  std::error_code ec;
  std::ofstream file(partial, std::ios::trunc);
  file << text;
  file.close();  // the final flush happens here; check after it
  if (file.fail()) {
    std::filesystem::remove(partial, ec);
    return FieldError(ErrorCode::kIo, "--report", path.string(), "write failed");
  }
  std::filesystem::rename(partial, path, ec);
  if (ec) return FieldError(ErrorCode::kIo, "--report", path.string(), ec.message());
  return Status::Ok();
}

std::string Megabytes(double bytes) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(bytes < 1e7 ? 2 : 1) << bytes / 1e6 << " MB";
  return s.str();
}

}  // namespace

double DefaultEps(const std::string& model) { return model == "cnn" ? 1.0 : 1e-3; }

// Runs `args` (argv[0] a full path; an argument vector, not a shell line, so paths with quotes
// or '$' stay paths) with its output dropped or kept; true when it exits 0.
bool Spawn(std::vector<std::string> args, bool quiet) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (quiet) {
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  }
  pid_t pid = 0;
  int status = 0;
  const bool ok = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ) == 0 &&
                  waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  posix_spawn_file_actions_destroy(&actions);
  return ok;
}

constexpr const char* kPlotScript = SPARSELINK_SOURCE_DIR "/scripts/plot_report.py";

// --plot needs python3 with matplotlib, the plotting script and a directory it can write:
// checked before training, so a run does not end in a failure it could have had at once.
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

int RunTrain(const TrainCliOptions& options, std::ostream& out, std::ostream& err) {
  // --- Every flag is checked before any work. ---
  auto policy = ta::ParseRoutingPolicy(options.policy);
  if (!policy.ok()) return Fail(err, policy.status());
  auto codec = ParseCodecFlag("--codec", options.codec);
  if (!codec.ok()) return Fail(err, codec.status());
  auto gradient_codec = ParseCodecFlag("--gradient-codec", options.gradient_codec);
  if (!gradient_codec.ok()) return Fail(err, gradient_codec.status());
  std::optional<double> keep;
  if (options.keep != "auto") {
    char* end = nullptr;
    std::string text = options.keep;
    if (!text.empty() && text.back() == '%') text.pop_back();
    const double percent = std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size()) {
      return Fail(err, FieldError(ErrorCode::kInvalidArgument, "--keep", options.keep,
                                  "expected a percentage in (0, 100] or auto"));
    }
    auto fraction = KeepFromPercent(percent, "--keep");
    if (!fraction.ok()) return Fail(err, fraction.status());
    keep = *fraction;
  }
  auto keep_min = KeepFromPercent(options.keep_min_percent, "--keep-min");
  if (!keep_min.ok()) return Fail(err, keep_min.status());
  if (!(options.tau > 0 && options.tau <= 1)) {
    return Fail(err,
                FieldError(ErrorCode::kInvalidArgument, "--tau", options.tau, "must be in (0, 1]"));
  }
  auto sensitivity_mode = ParseSensitivityMode(options.sensitivity);
  if (!sensitivity_mode.ok()) {
    return Fail(err, FieldError(ErrorCode::kInvalidArgument, "--sensitivity", options.sensitivity,
                                "unknown mode (one of taylor, activation, gradient, weighted)"));
  }
  if (Status s = CheckLinkBudgetFlag(options.link_budget_bytes); !s.ok()) return Fail(err, s);
  if (options.map_resolution != "channel" && options.map_resolution != "neuron") {
    return Fail(err, FieldError(ErrorCode::kInvalidArgument, "--map-resolution",
                                options.map_resolution, "must be channel or neuron"));
  }
  const double eps = options.eps.value_or(DefaultEps(options.model));
  if (!(std::isfinite(eps) && eps >= 0)) {
    return Fail(err, FieldError(ErrorCode::kInvalidArgument, "--eps", eps, "must be >= 0"));
  }
  auto bandwidth = ParseBandwidth(options.link_bandwidth);
  if (!bandwidth.ok()) {
    return Fail(err, Status(bandwidth.status().code(),
                            "--link-bandwidth: " + bandwidth.status().message()));
  }
  for (const auto& [flag, rate] : {std::pair{"--link-loss", options.link_loss},
                                   std::pair{"--link-corrupt", options.link_corrupt}}) {
    if (!std::isfinite(rate) || rate < 0 || rate >= 1) {
      return Fail(err, FieldError(ErrorCode::kInvalidArgument, flag, rate,
                                  "must be a probability per packet in [0, 1)"));
    }
  }
  if (options.link_tries < 1) {
    return Fail(err, FieldError(ErrorCode::kInvalidArgument, "--link-tries", options.link_tries,
                                "must be >= 1"));
  }
  if (options.micro_batches < 1 || options.micro_batches > options.batch) {
    return Fail(err,
                FieldError(ErrorCode::kInvalidArgument, "--micro-batches", options.micro_batches,
                           "must be in [1, --batch = " + std::to_string(options.batch) + "]"));
  }
  for (const auto& [flag, every] : {std::pair{"--summary-every", options.summary_every},
                                    std::pair{"--negotiate-every", options.negotiate_every}}) {
    if (every < 1) {
      return Fail(err, FieldError(ErrorCode::kInvalidArgument, flag, every, "must be >= 1"));
    }
  }
  // The dense policy models fp32 traffic without packets, so no emulated fault touches it.
  if (*policy == ta::RoutingPolicy::kDense) {
    for (const auto& [flag, rate] : {std::pair{"--link-loss", options.link_loss},
                                     std::pair{"--link-corrupt", options.link_corrupt}}) {
      if (rate > 0) {
        return Fail(err, FieldError(ErrorCode::kInvalidArgument, flag, rate,
                                    "the dense policy sends no packets through the emulated "
                                    "link (use it with a routed policy, or --compare-dense)"));
      }
    }
  }
  if (Status s = ApplySimdFlag(options.simd); !s.ok()) return Fail(err, s);
  auto probe_stages = ta::BuildModel(options.model, options.stages);
  if (!probe_stages.ok()) return Fail(err, probe_stages.status());
  // Last, as they create directories: the report's and the plots'.
  if (Status s = CheckWritable(options.report_path); !s.ok()) return Fail(err, s);
  if (!options.plot_dir.empty()) {
    if (Status s = CheckPlotting(options.plot_dir); !s.ok()) return Fail(err, s);
  }

  // The shared budget steers negotiated contracts; a fixed --keep (or dense) has none.
  const bool budget_applies =
      !keep && *policy != ta::RoutingPolicy::kDense && options.link_budget_bytes > 0;

  // --- Data and runtime. ---
  ta::SetNumThreads(options.threads);
  const ta::TorchRuntimeInfo runtime = ta::ProbeTorchRuntime();
  out << "runtime: " << runtime.num_threads << " threads, BLAS " << runtime.blas;
  if (!runtime.openblas_coretype.empty()) {
    out << " (kernels set by OPENBLAS_CORETYPE=" << runtime.openblas_coretype << ")";
  }
  // Boundaries go parallel where the OpenMP threads are awake to take the work at once.
  const bool threads_awake = ta::OpenMpThreadsStayAwake();
  const size_t boundary_parallel_min_entries = threads_awake ? size_t{1} << 16 : size_t{1} << 20;
  out << ", 1024^3 matmul " << std::fixed << std::setprecision(1) << runtime.matmul_1024_ms
      << " ms, " << simd::TargetName() << " routing kernels, boundaries parallel from "
      << boundary_parallel_min_entries << " entries ("
      << (threads_awake ? "one OpenMP pool, awake" : "OpenMP threads sleep between regions")
      << ")\n";
  auto data = ta::LoadFashionMnist(options.data_dir);
  if (!data.ok()) return Fail(err, data.status());

  const ta::TrainOptions train_options{.epochs = options.epochs,
                                       .batch_size = options.batch,
                                       .micro_batches = options.micro_batches,
                                       .seed = options.seed,
                                       .num_threads = options.threads,
                                       .max_train_samples = options.max_train_samples};
  json report;
  report["config"] = {
      {"model", options.model},
      {"policy", options.policy},
      {"keep", keep ? json(*keep) : json("auto")},
      {"link_budget_bytes_per_step",
       budget_applies ? json(options.link_budget_bytes) : json(nullptr)},
      {"codec", options.codec},
      {"gradient_codec", options.gradient_codec},
      {"stages", options.stages},
      {"epochs", options.epochs},
      {"batch", options.batch},
      {"micro_batches", options.micro_batches},
      {"seed", options.seed},
      {"threads", options.threads},
      {"link_bandwidth_bits_per_s", *bandwidth},
      {"link_loss", options.link_loss},
      {"link_corrupt", options.link_corrupt},
      {"link_tries", options.link_tries},
      {"negotiate_every", options.negotiate_every},
      {"tau", options.tau},
      {"sensitivity", options.sensitivity},
      {"eps", eps},
      {"map_resolution", options.map_resolution},
      {"summary_every", options.summary_every},
      {"zstd", options.zstd},
      {"keep_min", *keep_min},
      {"max_train_samples", options.max_train_samples},
      {"blas", runtime.blas},
      {"openblas_coretype",
       runtime.openblas_coretype.empty() ? json(nullptr) : json(runtime.openblas_coretype)},
      {"simd_target", simd::TargetName()},
      {"boundary_parallel_min_entries", boundary_parallel_min_entries}};

  ta::RoutedBoundaryOptions boundary_options{
      .policy = *policy,
      .keep = keep,
      .keep_full = 0.0,
      .lossy_codec = *codec,
      .gradient_codec = *gradient_codec,
      .zstd = options.zstd,
      .eps = eps,
      .per_channel_maps = options.map_resolution == "channel",
      .negotiate_every = options.negotiate_every,
      .summary_every = options.summary_every,
      .negotiator = {.tau_send = options.tau, .tau_recv = options.tau, .keep_min = *keep_min},
      .initial_keep = std::max(*keep_min, 0.1),
      .link_budget_bytes_per_step = budget_applies ? options.link_budget_bytes : 0.0,
      .sensitivity_mode = *sensitivity_mode,
      .link = {.bandwidth_bits_per_s = *bandwidth,
               .loss_rate = options.link_loss,
               .corrupt_rate = options.link_corrupt},
      .retry = {.max_tries = options.link_tries},
      .seed = options.seed,
      .parallel_min_entries = boundary_parallel_min_entries};
  if (auto check = ta::RoutedBoundaries::Create(boundary_options, nullptr); !check.ok()) {
    return Fail(err, check.status());
  }

  // --- Optional dense baseline, same seed. ---
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

  // --- The routed run. ---
  torch::manual_seed(options.seed);
  auto stages = ta::BuildModel(options.model, options.stages);
  if (!stages.ok()) return Fail(err, stages.status());
  auto hook = ta::RoutedBoundaries::Create(boundary_options, &*stages);
  if (!hook.ok()) return Fail(err, hook.status());
  ta::RoutedBoundaries& boundaries = **hook;
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
  ta::TrainReport trained;
  try {
    auto result = ta::Train(*stages, data->train, data->test, routed_options, &boundaries, &out);
    if (!result.ok()) return Fail(err, result.status());
    trained = std::move(result).value();
  } catch (const c10::Error& e) {
    err << "sparselink train: " << e.what_without_backtrace() << "\n";
    return 1;
  }
  const double wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // --- Report. ---
  double train_seconds = 0;
  for (const auto& e : trained.epochs) train_seconds += e.seconds;
  uint64_t wire = 0, dense = 0, forward_wire = 0, backward_wire = 0;
  uint64_t retransmits = 0, retransmit_wire = 0, corrupt_packets = 0, lost_packets = 0;
  double modelled = 0, route_seconds = 0;
  ta::BoundaryTime phases;  // summed over the boundaries
  json boundaries_json = json::array();
  const std::vector<ta::BoundaryReport> reports = boundaries.Report();
  for (const ta::BoundaryReport& b : reports) {
    forward_wire += b.forward_wire_bytes;
    backward_wire += b.backward_wire_bytes;
    dense += b.dense_fp32_bytes;
    retransmits += b.retransmits;
    retransmit_wire += b.retransmit_wire_bytes;
    corrupt_packets += b.corrupt_packets;
    lost_packets += b.lost_packets;
    modelled += b.modelled_link_seconds;
    route_seconds += b.route_seconds;
    phases.Add(b.time);
    json history = json::array();
    for (const NegotiationRecord& r : b.history) {
      json stages_json = json::array();
      for (const auto& st : r.stages) {
        stages_json.push_back({{"state", NegotiationStateName(st.state)},
                               {"keep", st.keep},
                               {"reason", BoundByName(st.reason)}});
      }
      history.push_back({{"step", r.step},
                         {"version", r.contract.version},
                         {"keep", r.contract.keep},
                         {"bound_by", BoundByName(r.contract.bound_by)},
                         {"changed", r.changed},
                         {"stages", stages_json}});
    }
    boundaries_json.push_back({{"boundary", b.boundary},
                               {"cols", b.cols},
                               {"block", b.block},
                               {"contract", ContractJson(b.contract)},
                               {"wire_bytes", b.forward_wire_bytes + b.backward_wire_bytes},
                               {"forward_wire_bytes", b.forward_wire_bytes},
                               {"backward_wire_bytes", b.backward_wire_bytes},
                               {"dense_fp32_bytes", b.dense_fp32_bytes},
                               {"packets", b.packets},
                               {"retransmits", b.retransmits},
                               {"retransmit_wire_bytes", b.retransmit_wire_bytes},
                               {"corrupt_packets", b.corrupt_packets},
                               {"lost_packets", b.lost_packets},
                               {"modelled_link_seconds", b.modelled_link_seconds},
                               {"route_seconds", b.route_seconds},
                               {"route_seconds_by_phase", PhasesJson(b.time)},
                               {"history", history},
                               {"sensitivity", b.sensitivity},
                               {"receiver_sensitivity", b.receiver_sensitivity}});
  }
  wire = forward_wire + backward_wire;
  const double dense_link_seconds =
      ModelledTransferSeconds({.bandwidth_bits_per_s = *bandwidth}, dense);
  report["epochs"] = EpochsJson(trained);
  report["final"] = {{"test_accuracy", trained.epochs.back().test_accuracy},
                     {"train_accuracy", trained.epochs.back().train_accuracy},
                     {"loss", trained.epochs.back().loss}};
  report["traffic"] = {{"wire_bytes", wire},
                       {"forward_wire_bytes", forward_wire},
                       {"backward_wire_bytes", backward_wire},
                       {"dense_fp32_bytes", dense},
                       {"ratio", wire > 0 ? double(dense) / double(wire) : 0.0},
                       {"retransmits", retransmits},
                       {"retransmit_wire_bytes", retransmit_wire},
                       {"corrupt_packets", corrupt_packets},
                       {"lost_packets", lost_packets}};
  report["time"] = {
      {"wall_seconds", wall_seconds},
      {"train_seconds", train_seconds},
      {"route_seconds", route_seconds},
      {"route_share_of_train", train_seconds > 0 ? route_seconds / train_seconds : 0.0},
      {"route_seconds_by_phase", PhasesJson(phases)},
      {"modelled_link_seconds", modelled},
      {"modelled_dense_link_seconds", dense_link_seconds}};
  report["boundaries"] = boundaries_json;

  out << "\nboundary   cols  contract  keep     values/gradients  bound by             wire        "
         "dense"
         "       ratio   retransmits (corrupt/lost)\n";
  for (const ta::BoundaryReport& b : reports) {
    const uint64_t b_wire = b.forward_wire_bytes + b.backward_wire_bytes;
    const double ratio = double(b.dense_fp32_bytes) / double(std::max<uint64_t>(1, b_wire));
    const std::string codecs = std::string(Traits(b.contract.keep_full > 0 ? b.contract.full_codec
                                                                           : b.contract.lossy_codec)
                                               .name) +
                               "/" + std::string(Traits(*gradient_codec).name);
    out << std::setw(8) << b.boundary << std::setw(7) << b.cols << "  v" << std::left
        << std::setw(7) << b.contract.version << std::right << std::fixed << std::setprecision(2)
        << std::setw(6) << b.contract.keep_percent() << "%  " << std::left << std::setw(17)
        << codecs << " " << std::setw(18) << BoundByName(b.contract.bound_by) << std::right
        << std::setw(10) << Megabytes(double(b_wire)) << std::setw(12)
        << Megabytes(double(b.dense_fp32_bytes)) << std::setw(9) << std::setprecision(1) << ratio
        << "x" << std::setw(14) << b.retransmits << " (" << b.corrupt_packets << "/"
        << b.lost_packets << ")\n";
  }
  out << std::setprecision(2) << "\ntest accuracy " << 100.0 * trained.epochs.back().test_accuracy
      << "%";
  if (report.contains("baseline")) {
    out << " (dense baseline " << 100.0 * report["baseline"]["test_accuracy"].get<double>() << "%)";
  }
  out << std::setprecision(1) << "\nwire " << Megabytes(double(wire)) << " vs dense fp32 "
      << Megabytes(double(dense)) << ": " << (wire ? double(dense) / double(wire) : 0.0)
      << "x smaller\n";
  if (retransmits > 0) {
    out << "link faults: " << corrupt_packets << " corrupt and " << lost_packets
        << " lost packets detected, " << retransmits << " retransmits ("
        << Megabytes(double(retransmit_wire)) << ", counted in the wire bytes)\n";
  }
  out << "routing + coding + link: " << std::setprecision(2) << route_seconds << " s of "
      << train_seconds << " s training (" << std::setprecision(1)
      << 100.0 * route_seconds / std::max(train_seconds, 1e-9) << "%)\n  route+encode "
      << std::setprecision(2) << phases.route_encode << " s, link+decode "
      << phases.forward_link_decode + phases.backward_link_decode
      << " s (decodes into the dense tensors), gradient gather+encode " << phases.gradient_encode
      << " s, maps and summaries " << phases.map_update + phases.summary << " s"
      << std::setprecision(1) << "\nmodelled link time at " << options.link_bandwidth << ": "
      << modelled << " s vs " << dense_link_seconds << " s dense\n";

  if (Status s = WriteAtomically(options.report_path, report.dump(1)); !s.ok()) return Fail(err, s);
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

}  // namespace sparselink::cli
