#include "cli/train_report.hpp"

#include <algorithm>
#include <iomanip>
#include <string>

#include "cli/files.hpp"
#include "simd/kernels.hpp"
#include "sparselink/link.hpp"

namespace sparselink::cli {
namespace {

namespace ta = ::sparselink::torch_adapter;
using nlohmann::json;

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

json HistoryJson(const std::vector<NegotiationRecord>& records) {
  json history = json::array();
  for (const NegotiationRecord& r : records) {
    json stages = json::array();
    for (const auto& st : r.stages) {
      stages.push_back({{"state", NegotiationStateName(st.state)},
                        {"keep", st.keep},
                        {"reason", BoundByName(st.reason)}});
    }
    history.push_back({{"step", r.step},
                       {"version", r.contract.version},
                       {"keep", r.contract.keep},
                       {"bound_by", BoundByName(r.contract.bound_by)},
                       {"changed", r.changed},
                       {"stages", stages}});
  }
  return history;
}

json BoundaryJson(const ta::BoundaryReport& b) {
  return {{"boundary", b.boundary},
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
          {"history", HistoryJson(b.history)},
          {"sensitivity", b.sensitivity},
          {"receiver_sensitivity", b.receiver_sensitivity}};
}

void PrintBoundaryTable(const std::vector<ta::BoundaryReport>& boundaries,
                        ValueCodec gradient_codec, std::ostream& out) {
  out << "\nboundary   cols  contract  keep     values/gradients  bound by             wire        "
         "dense       ratio   retransmits (corrupt/lost)\n";
  for (const ta::BoundaryReport& b : boundaries) {
    const uint64_t b_wire = b.forward_wire_bytes + b.backward_wire_bytes;
    const double ratio = double(b.dense_fp32_bytes) / double(std::max<uint64_t>(1, b_wire));
    const ValueCodec values =
        b.contract.keep_full > 0 ? b.contract.full_codec : b.contract.lossy_codec;
    const std::string codecs =
        std::string(Traits(values).name) + "/" + std::string(Traits(gradient_codec).name);
    out << std::setw(8) << b.boundary << std::setw(7) << b.cols << "  v" << std::left
        << std::setw(7) << b.contract.version << std::right << std::fixed << std::setprecision(2)
        << std::setw(6) << b.contract.keep_percent() << "%  " << std::left << std::setw(17)
        << codecs << " " << std::setw(18) << BoundByName(b.contract.bound_by) << std::right
        << std::setw(10) << Megabytes(double(b_wire)) << std::setw(12)
        << Megabytes(double(b.dense_fp32_bytes)) << std::setw(9) << std::setprecision(1) << ratio
        << "x" << std::setw(14) << b.retransmits << " (" << b.corrupt_packets << "/"
        << b.lost_packets << ")\n";
  }
}

}  // namespace

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

json ConfigJson(const TrainCliOptions& options, const TrainPlan& plan,
                const ta::TorchRuntimeInfo& runtime, size_t boundary_parallel_min_entries) {
  return {
      {"model", options.model},
      {"policy", options.policy},
      {"keep", plan.keep ? json(*plan.keep) : json("auto")},
      {"link_budget_bytes_per_step", !plan.budget_applies       ? json(nullptr)
                                     : options.link_budget_auto ? json("auto")
                                                                : json(options.link_budget_bytes)},
      {"codec", options.codec},
      {"gradient_codec", options.gradient_codec},
      {"stages", options.stages},
      {"epochs", options.epochs},
      {"batch", options.batch},
      {"micro_batches", options.micro_batches},
      {"seed", options.seed},
      {"threads", options.threads},
      {"link_bandwidth_bits_per_s", plan.bandwidth_bits_per_s},
      {"link_loss", options.link_loss},
      {"link_corrupt", options.link_corrupt},
      {"link_tries", options.link_tries},
      {"negotiate_every", options.negotiate_every},
      {"tau", options.tau},
      {"sensitivity", options.sensitivity},
      {"eps", plan.eps},
      {"map_resolution", options.map_resolution},
      {"summary_every", options.summary_every},
      {"zstd", options.zstd},
      {"keep_min", plan.keep_min},
      {"max_train_samples", options.max_train_samples},
      {"stop_after", options.stop_after > 0 ? json(options.stop_after) : json(nullptr)},
      {"blas", runtime.blas},
      {"openblas_coretype",
       runtime.openblas_coretype.empty() ? json(nullptr) : json(runtime.openblas_coretype)},
      {"simd_target", simd::TargetName()},
      {"boundary_parallel_min_entries", boundary_parallel_min_entries}};
}

void AddRunToReport(const ta::TrainReport& trained,
                    const std::vector<ta::BoundaryReport>& boundaries, double wall_seconds,
                    double bandwidth_bits_per_s, json* report) {
  double train_seconds = 0;
  for (const auto& e : trained.epochs) train_seconds += e.seconds;
  uint64_t dense = 0, forward_wire = 0, backward_wire = 0;
  uint64_t retransmits = 0, retransmit_wire = 0, corrupt_packets = 0, lost_packets = 0;
  double modelled = 0, route_seconds = 0;
  ta::BoundaryTime phases;  // summed over the boundaries
  json boundaries_json = json::array();
  for (const ta::BoundaryReport& b : boundaries) {
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
    boundaries_json.push_back(BoundaryJson(b));
  }
  const uint64_t wire = forward_wire + backward_wire;
  json& r = *report;
  r["epochs"] = EpochsJson(trained);
  r["final"] = {{"test_accuracy", trained.epochs.back().test_accuracy},
                {"train_accuracy", trained.epochs.back().train_accuracy},
                {"loss", trained.epochs.back().loss}};
  r["traffic"] = {{"wire_bytes", wire},
                  {"forward_wire_bytes", forward_wire},
                  {"backward_wire_bytes", backward_wire},
                  {"dense_fp32_bytes", dense},
                  {"ratio", wire > 0 ? double(dense) / double(wire) : 0.0},
                  {"retransmits", retransmits},
                  {"retransmit_wire_bytes", retransmit_wire},
                  {"corrupt_packets", corrupt_packets},
                  {"lost_packets", lost_packets}};
  r["time"] = {{"wall_seconds", wall_seconds},
               {"train_seconds", train_seconds},
               {"route_seconds", route_seconds},
               {"route_share_of_train", train_seconds > 0 ? route_seconds / train_seconds : 0.0},
               {"route_seconds_by_phase", PhasesJson(phases)},
               {"modelled_link_seconds", modelled},
               {"modelled_dense_link_seconds",
                ModelledTransferSeconds({.bandwidth_bits_per_s = bandwidth_bits_per_s}, dense)}};
  r["boundaries"] = boundaries_json;
}

void PrintRunSummary(const json& report, const std::vector<ta::BoundaryReport>& boundaries,
                     const TrainCliOptions& options, const TrainPlan& plan, std::ostream& out) {
  PrintBoundaryTable(boundaries, plan.gradient_codec, out);
  const json& traffic = report["traffic"];
  const json& time = report["time"];
  const json& phases = time["route_seconds_by_phase"];
  const auto wire = traffic["wire_bytes"].get<double>();
  const auto dense = traffic["dense_fp32_bytes"].get<double>();
  out << std::setprecision(2) << "\ntest accuracy "
      << 100.0 * report["final"]["test_accuracy"].get<double>() << "%";
  if (report.contains("baseline")) {
    out << " (dense baseline " << 100.0 * report["baseline"]["test_accuracy"].get<double>() << "%)";
  }
  out << std::setprecision(1) << "\nwire " << Megabytes(wire) << " vs dense fp32 "
      << Megabytes(dense) << ": " << (wire > 0 ? dense / wire : 0.0) << "x smaller\n";
  if (traffic["retransmits"].get<uint64_t>() > 0) {
    out << "link faults: " << traffic["corrupt_packets"] << " corrupt and "
        << traffic["lost_packets"] << " lost packets detected, " << traffic["retransmits"]
        << " retransmits (" << Megabytes(traffic["retransmit_wire_bytes"].get<double>())
        << ", counted in the wire bytes)\n";
  }
  const auto route_seconds = time["route_seconds"].get<double>();
  const auto train_seconds = time["train_seconds"].get<double>();
  const auto phase = [&](const char* name) { return phases[name].get<double>(); };
  out << "routing + coding + link: " << std::setprecision(2) << route_seconds << " s of "
      << train_seconds << " s training (" << std::setprecision(1)
      << 100.0 * route_seconds / std::max(train_seconds, 1e-9) << "%)\n  route+encode "
      << std::setprecision(2) << phase("route_encode") << " s, link+decode "
      << phase("forward_link_decode") + phase("backward_link_decode")
      << " s (decodes into the dense tensors), gradient gather+encode " << phase("gradient_encode")
      << " s, maps and summaries " << phase("map_update") + phase("summary") << " s"
      << std::setprecision(1) << "\nmodelled link time at " << options.link_bandwidth << ": "
      << time["modelled_link_seconds"].get<double>() << " s vs "
      << time["modelled_dense_link_seconds"].get<double>() << " s dense\n";
}

}  // namespace sparselink::cli
