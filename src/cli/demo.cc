// `sparselink demo` runs the framework-free core on a synthetic three-boundary pipeline.
//
// Each boundary b carries a rows x cols activation whose neurons differ in importance the way
// trained layers do: neuron j has an activation scale and a gradient scale drawn from a
// heavy-tailed (log-normal) law, so a few neurons carry most of |a * dL/da|. Every step, for
// every boundary, the sender routes its activation under the current contract, encodes it,
// sends it over an emulated link, and the receiver decodes and scatters it; the gradient
// comes back mask-routed (values only) in fp16, and every K steps the receiver summary in bf16. The
// sender's sensitivity map learns from the gradient at the kept positions; every `negotiate_every`
// steps the boundaries negotiate new contracts, and with a shared link budget the BudgetAllocator
// first splits the bytes. The report compares wire bytes (both directions, everything counted) with
// dense fp32 and measures what the routing lost: the share of Taylor importance carried across and
// the relative L2 error of the reconstructed activation.
#include "cli/demo.hpp"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "cli/files.hpp"
#include "cli/flags.hpp"
#include "sparselink/codec.hpp"
#include "sparselink/contract.hpp"
#include "sparselink/link.hpp"
#include "sparselink/routing.hpp"
#include "sparselink/sensitivity.hpp"

namespace sparselink::cli {
namespace {

constexpr int kBoundaries = 3;
constexpr auto kTimeout = std::chrono::milliseconds(1000);
constexpr double kKeepMin = 0.02;
constexpr ValueCodec kGradientCodec = ValueCodec::kFp16;
constexpr ValueCodec kSummaryCodec = ValueCodec::kBf16;  // as in training

struct Boundary {
  std::vector<float> activation_scale;  // per neuron
  std::vector<float> gradient_scale;    // per neuron
  std::vector<float> activation;        // rows x cols, this step
  std::vector<float> gradient;          // rows x cols, this step
  std::vector<float> received;          // rows x cols, after decode + scatter
  std::vector<float> gradient_at_sender;
  std::vector<float> summary;      // receiver's per-neuron mean |g|, as last received
  std::vector<float> unit_scores;  // this step's raw score per neuron
  SensitivityMap map;
  Negotiator negotiator;
  RoutedTensor routed;
  std::vector<uint8_t> packet;
  std::vector<uint8_t> last_packet;
  double importance_carried = 0;
  double importance_total = 0;
  double error_sq = 0;
  double norm_sq = 0;
  int refusals = 0;  // negotiations refused: the budget's share below the floor
};

double LogNormal(std::mt19937_64& rng, double sigma) {
  std::normal_distribution<double> n(0.0, sigma);
  return std::exp(n(rng));
}

int Fail(std::ostream& err, const Status& s) { return cli::Fail(err, "demo", s); }

// The run: its checked flags, links, router and boundaries, and one method per phase.
class DemoRun {
 public:
  explicit DemoRun(const DemoOptions& options)
      : options_(options),
        rows_(static_cast<size_t>(options.rows)),
        cols_(static_cast<size_t>(options.cols)),
        dense_step_bytes_(static_cast<double>(rows_ * cols_ * sizeof(float))),
        rng_(options.seed) {}

  // Every flag checked, the output directory tried, links, router and boundaries made.
  Status Setup();
  // Every negotiate_every steps: contracts renegotiated, under the shared budget if any.
  Status Negotiate(int step);
  // One boundary's step: forward packet, decode, gradient back, summary, map update.
  Status StepBoundary(int b, int step);
  void PrintProgress(int step, std::ostream& out) const;
  // The table per boundary, the last packets written, the totals.
  Status Finish(std::ostream& out) const;

 private:
  void FillBatch(Boundary& bd);
  void MeasureCrossing(Boundary& bd) const;
  Status SendSummary(Boundary& bd, const PacketLabel& label);
  void UpdateMap(Boundary& bd);

  const DemoOptions& options_;
  size_t rows_;
  size_t cols_;
  double dense_step_bytes_;
  std::mt19937_64 rng_;
  ValueCodec lossy_codec_ = ValueCodec::kInt8;
  LinkOptions link_options_;
  std::unique_ptr<Link> forward_;
  std::unique_ptr<Link> backward_;
  std::optional<Router> router_;
  double summary_packet_bytes_ = 0;  // its size depends only on cols
  std::vector<Boundary> boundaries_;
  std::exponential_distribution<float> magnitude_{1.0f};
  std::normal_distribution<float> normal_{0.0f, 1.0f};
  std::bernoulli_distribution active_{0.5};
  std::vector<float> gradient_values_;
  std::vector<uint8_t> gradient_packet_;
  std::chrono::steady_clock::time_point start_;  // when the steps began
};

Status DemoRun::Setup() {
  auto bandwidth = ParseBandwidth(options_.link_bandwidth);
  if (!bandwidth.ok()) {
    return Status(bandwidth.status().code(), "--link-bandwidth: " + bandwidth.status().message());
  }
  SPARSELINK_ASSIGN_OR_RETURN(lossy_codec_, ParseCodecFlag("--codec", options_.lossy_codec));
  SPARSELINK_RETURN_IF_ERROR(CheckLinkBudgetFlag(options_.link_budget_bytes));
  // Each boundary holds four rows x cols float buffers: 64 MiB each at this limit.
  constexpr size_t kMaxEntries = size_t{1} << 24;
  if (rows_ * cols_ > kMaxEntries) {
    return FieldError(ErrorCode::kResourceExhausted, "--rows * --cols", rows_ * cols_,
                      "must be <= " + std::to_string(kMaxEntries) +
                          " (each boundary holds four rows x cols float buffers)");
  }
  // The packets are written at the end: the directory is made and tried now.
  {
    std::error_code ec;
    std::filesystem::create_directories(options_.out_dir, ec);
    const std::filesystem::path probe =
        std::filesystem::path(options_.out_dir) / (".sparselink-probe-" + std::to_string(getpid()));
    std::ofstream file(probe);
    if (ec || !file) {
      return FieldError(ErrorCode::kIo, "--out", options_.out_dir,
                        ec ? ec.message() : std::string("cannot be written"));
    }
    file.close();
    std::filesystem::remove(probe, ec);
  }
  link_options_ = {.model = {.bandwidth_bits_per_s = *bandwidth}};
  SPARSELINK_ASSIGN_OR_RETURN(forward_, MakeLink(link_options_));
  SPARSELINK_ASSIGN_OR_RETURN(backward_, MakeLink(link_options_));
  SPARSELINK_ASSIGN_OR_RETURN(Router router, Router::Create({.scoring = Scoring::kSensitivity}));
  router_.emplace(std::move(router));
  std::vector<uint8_t> probe;
  SPARSELINK_RETURN_IF_ERROR(
      EncodeSummary(std::vector<float>(cols_, 0.0f), {}, &probe, kSummaryCodec));
  summary_packet_bytes_ = static_cast<double>(probe.size());

  for (int b = 0; b < kBoundaries; ++b) {
    SPARSELINK_ASSIGN_OR_RETURN(auto map,
                                SensitivityMap::Create({.num_neurons = cols_, .ema_decay = 0.8}));
    const Contract initial{.boundary = static_cast<uint32_t>(b),
                           .keep = 0.25,
                           .keep_full = 0.5,
                           .full_codec = ValueCodec::kFp16,
                           .lossy_codec = lossy_codec_,
                           .bound_by = BoundBy::kFixed};
    SPARSELINK_ASSIGN_OR_RETURN(
        auto negotiator,
        Negotiator::Create({.tau_send = 0.9, .tau_recv = 0.8, .keep_min = kKeepMin}, initial));
    Boundary boundary{.map = std::move(map), .negotiator = std::move(negotiator)};
    // Deeper boundaries concentrate importance more (larger sigma), as later layers of a
    // trained network tend to.
    const double sigma = 0.8 + 0.4 * b;
    for (size_t j = 0; j < cols_; ++j) {
      boundary.activation_scale.push_back(static_cast<float>(LogNormal(rng_, sigma)));
      boundary.gradient_scale.push_back(static_cast<float>(LogNormal(rng_, sigma)));
    }
    boundary.activation.resize(rows_ * cols_);
    boundary.gradient.resize(rows_ * cols_);
    boundary.received.resize(rows_ * cols_);
    boundary.gradient_at_sender.resize(rows_ * cols_);
    boundary.summary.assign(cols_, 0.0f);
    boundary.unit_scores.resize(cols_);
    boundaries_.push_back(std::move(boundary));
  }
  start_ = std::chrono::steady_clock::now();
  return Status::Ok();
}

Status DemoRun::Negotiate(int step) {
  // The shared budget is split as in training (RoutedBoundaries::OnStepEnd): each boundary
  // priced by the negotiator's own byte model as a line (FitStepCost), every step keeping
  // room for the summary, which crosses on negotiation steps.
  std::vector<double> caps(kBoundaries, std::numeric_limits<double>::infinity());
  if (options_.link_budget_bytes > 0) {
    std::vector<BoundaryDemand> demands;
    std::vector<double> fixed(kBoundaries);
    double fixed_total = 0;
    for (int b = 0; b < kBoundaries; ++b) {
      const StepCostLine line = FitStepCost(boundaries_[b].negotiator.contract(), 1, rows_, cols_,
                                            kKeepMin, kGradientCodec);
      fixed[b] = line.fixed + summary_packet_bytes_;
      fixed_total += fixed[b];
      demands.push_back({.sensitivity = boundaries_[b].map.values(),
                         .rows = rows_,
                         .cols = cols_,
                         .bytes_per_entry = line.per_entry,
                         .keep_min = kKeepMin});
    }
    SPARSELINK_ASSIGN_OR_RETURN(
        const Allocation allocation,
        AllocateBudget(demands, std::max(0.0, options_.link_budget_bytes - fixed_total)));
    for (int b = 0; b < kBoundaries; ++b) caps[b] = allocation.bytes[b] + fixed[b];
  }
  for (int b = 0; b < kBoundaries; ++b) {
    Boundary& bd = boundaries_[b];
    SPARSELINK_ASSIGN_OR_RETURN(
        const NegotiationRecord record,
        bd.negotiator.Negotiate(
            {.map = &bd.map,
             .link_bytes_per_step = std::max(0.0, caps[b] - summary_packet_bytes_),
             .gradient_codec = kGradientCodec,
             .link_budget_reason = BoundBy::kSharedBudget},
            {.map = &bd.map}, rows_, cols_, static_cast<uint64_t>(step)));
    if (record.stages.back().state == NegotiationState::kRefused) ++bd.refusals;
  }
  return Status::Ok();
}

void DemoRun::FillBatch(Boundary& bd) {
  for (size_t r = 0; r < rows_; ++r) {
    for (size_t j = 0; j < cols_; ++j) {
      const size_t i = r * cols_ + j;
      bd.activation[i] = active_(rng_) ? magnitude_(rng_) * bd.activation_scale[j] : 0.0f;
      bd.gradient[i] = normal_(rng_) * bd.gradient_scale[j];
    }
  }
}

// What crossed: the share of Taylor importance carried and the reconstruction error.
void DemoRun::MeasureCrossing(Boundary& bd) const {
  for (size_t i = 0; i < rows_ * cols_; ++i) {
    const double importance = std::fabs(double(bd.activation[i]) * bd.gradient[i]);
    bd.importance_total += importance;
    if (bd.received[i] != 0.0f) bd.importance_carried += importance;
    const double diff = double(bd.received[i]) - bd.activation[i];
    bd.error_sq += diff * diff;
    bd.norm_sq += double(bd.activation[i]) * bd.activation[i];
  }
}

// The receiver's summary: per-neuron mean |g| over the batch, bf16, so that dropped neurons
// keep being scored and can come back.
Status DemoRun::SendSummary(Boundary& bd, const PacketLabel& label) {
  std::vector<float> mean_abs_gradient(cols_, 0.0f);
  for (size_t r = 0; r < rows_; ++r) {
    for (size_t j = 0; j < cols_; ++j)
      mean_abs_gradient[j] += std::fabs(bd.gradient[r * cols_ + j]) / float(rows_);
  }
  std::vector<uint8_t> summary_packet;
  SPARSELINK_RETURN_IF_ERROR(
      EncodeSummary(mean_abs_gradient, label, &summary_packet, kSummaryCodec));
  SPARSELINK_RETURN_IF_ERROR(backward_->Send(summary_packet, cols_ * sizeof(float), kTimeout));
  SPARSELINK_ASSIGN_OR_RETURN(const std::vector<uint8_t> summary_back, backward_->Recv(kTimeout));
  SPARSELINK_ASSIGN_OR_RETURN(bd.summary, DecodeSummary(summary_back));
  return Status::Ok();
}

// The sender scores what it can see: |a * dL/da| where the entry was kept, and |a| *
// (receiver's mean |g|) where it was dropped.
void DemoRun::UpdateMap(Boundary& bd) {
  std::fill(bd.unit_scores.begin(), bd.unit_scores.end(), 0.0f);
  for (size_t r = 0; r < rows_; ++r) {
    for (size_t j = 0; j < cols_; ++j) {
      const size_t i = r * cols_ + j;
      const float g =
          bd.gradient_at_sender[i] != 0.0f ? std::fabs(bd.gradient_at_sender[i]) : bd.summary[j];
      bd.unit_scores[j] += std::fabs(bd.activation[i]) * g / float(rows_);
    }
  }
}

Status DemoRun::StepBoundary(int b, int step) {
  Boundary& bd = boundaries_[b];
  FillBatch(bd);
  const Contract& contract = bd.negotiator.contract();
  const ConstMatrix activation{bd.activation.data(), rows_, cols_};
  SPARSELINK_RETURN_IF_ERROR(
      router_->Route(activation, &bd.map, contract, static_cast<uint64_t>(step), &bd.routed));
  const PacketLabel label{.boundary = contract.boundary,
                          .contract_version = contract.version,
                          .step = static_cast<uint64_t>(step)};
  SPARSELINK_RETURN_IF_ERROR(EncodeActivation(bd.routed, contract, label, {}, &bd.packet));
  SPARSELINK_RETURN_IF_ERROR(
      forward_->Send(bd.packet, static_cast<uint64_t>(dense_step_bytes_), kTimeout));

  // Receiver: decode, scatter, and measure what crossed.
  SPARSELINK_ASSIGN_OR_RETURN(const std::vector<uint8_t> packet, forward_->Recv(kTimeout));
  SPARSELINK_ASSIGN_OR_RETURN(const RoutedTensor decoded, DecodeActivation(packet));
  SPARSELINK_RETURN_IF_ERROR(Scatter(decoded, {bd.received.data(), rows_, cols_}));
  MeasureCrossing(bd);

  // Backward: the gradient at the kept positions, fp16, values only.
  SPARSELINK_RETURN_IF_ERROR(
      GatherAtMask(decoded, {bd.gradient.data(), rows_, cols_}, &gradient_values_));
  SPARSELINK_RETURN_IF_ERROR(EncodeGradientValues(decoded, gradient_values_, kGradientCodec, label,
                                                  {}, &gradient_packet_));
  SPARSELINK_RETURN_IF_ERROR(
      backward_->Send(gradient_packet_, static_cast<uint64_t>(dense_step_bytes_), kTimeout));
  SPARSELINK_ASSIGN_OR_RETURN(const std::vector<uint8_t> gradient_back, backward_->Recv(kTimeout));
  SPARSELINK_ASSIGN_OR_RETURN(const std::vector<float> values,
                              DecodeGradientValues(gradient_back, bd.routed));
  SPARSELINK_RETURN_IF_ERROR(
      ScatterAtMask(bd.routed, values, {bd.gradient_at_sender.data(), rows_, cols_}));
  if (step % options_.negotiate_every == 0) SPARSELINK_RETURN_IF_ERROR(SendSummary(bd, label));
  UpdateMap(bd);
  SPARSELINK_RETURN_IF_ERROR(bd.map.UpdateUnitScores(bd.unit_scores));
  if (step == options_.steps - 1) bd.last_packet = bd.packet;
  return Status::Ok();
}

void DemoRun::PrintProgress(int step, std::ostream& out) const {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = (step + 1) / elapsed;
  out << "step " << (step + 1) << "/" << options_.steps << "  " << std::fixed
      << std::setprecision(0) << rate << " steps/s  ETA " << std::setprecision(1)
      << (options_.steps - step - 1) / rate << " s  wire " << std::setprecision(2)
      << double(forward_->stats().wire_bytes + backward_->stats().wire_bytes) / 1e6 << " MB\n";
}

Status DemoRun::Finish(std::ostream& out) const {
  const LinkStats fwd = forward_->stats();
  const LinkStats bwd = backward_->stats();
  out << "\nboundary  contract                                              importance  "
         "rel.error\n";
  for (int b = 0; b < kBoundaries; ++b) {
    const Boundary& bd = boundaries_[b];
    out << std::setw(8) << b << "  " << std::left << std::setw(54)
        << bd.negotiator.contract().ToString() << std::right << std::fixed;
    // No importance or no activation at all (a tiny run): nothing to carry, no error to scale.
    if (bd.importance_total > 0) {
      out << std::setprecision(1) << std::setw(9)
          << 100.0 * bd.importance_carried / bd.importance_total << "%";
    } else {
      out << std::setw(10) << "-";
    }
    if (bd.norm_sq > 0) {
      out << std::setprecision(3) << std::setw(11) << std::sqrt(bd.error_sq / bd.norm_sq);
    } else {
      out << std::setw(11) << "-";
    }
    if (bd.refusals > 0) {
      out << "  (" << bd.refusals << " negotiations refused: the budget is below the floor of "
          << std::defaultfloat << 100 * kKeepMin << " %)";
    }
    out << "\n";
    const std::filesystem::path path =
        std::filesystem::path(options_.out_dir) / ("boundary" + std::to_string(b) + ".packet");
    std::ofstream file(path, std::ios::binary);
    file.write(reinterpret_cast<const char*>(bd.last_packet.data()),
               static_cast<std::streamsize>(bd.last_packet.size()));
    file.close();  // the final flush happens here; check after it
    if (file.fail()) {
      return FieldError(ErrorCode::kIo, "packet path", path.string(), "cannot write");
    }
  }
  const double wire = double(fwd.wire_bytes + bwd.wire_bytes);
  const double dense = double(fwd.dense_bytes + bwd.dense_bytes);
  const double dense_time =
      2.0 * options_.steps * kBoundaries *
      ModelledTransferSeconds(link_options_.model, static_cast<uint64_t>(dense_step_bytes_));
  const double routed_time =
      std::chrono::duration<double>(fwd.modelled_time + bwd.modelled_time).count();
  out << std::setprecision(2) << "\nwire bytes (both directions, all overhead): " << wire / 1e6
      << " MB   dense fp32: " << dense / 1e6 << " MB   ratio " << std::setprecision(1)
      << dense / wire << "x\n"
      << std::setprecision(2) << "modelled link time at " << options_.link_bandwidth << ": "
      << routed_time << " s routed vs " << dense_time << " s dense\n"
      << "contract negotiations: ";
  for (int b = 0; b < kBoundaries; ++b) {
    out << (b ? ", " : "") << "b" << b << " " << boundaries_[b].negotiator.history().size() << " (v"
        << boundaries_[b].negotiator.contract().version << ")";
  }
  out << "\nlast packets written to " << options_.out_dir
      << "/boundary*.packet (see: sparselink inspect " << options_.out_dir
      << "/boundary0.packet)\n";
  return Status::Ok();
}

}  // namespace

int RunDemo(const DemoOptions& options, std::ostream& out, std::ostream& err) {
  DemoRun run(options);
  if (Status s = run.Setup(); !s.ok()) return Fail(err, s);
  for (int step = 0; step < options.steps; ++step) {
    if (step > 0 && step % options.negotiate_every == 0) {
      if (Status s = run.Negotiate(step); !s.ok()) return Fail(err, s);
    }
    for (int b = 0; b < kBoundaries; ++b) {
      if (Status s = run.StepBoundary(b, step); !s.ok()) return Fail(err, s);
    }
    if ((step + 1) % 100 == 0 || step + 1 == options.steps) run.PrintProgress(step, out);
  }
  if (Status s = run.Finish(out); !s.ok()) return Fail(err, s);
  return 0;
}

}  // namespace sparselink::cli
