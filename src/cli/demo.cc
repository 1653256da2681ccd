// `sparselink demo` runs the framework-free core on a synthetic three-boundary pipeline.
//
// Each boundary b carries a rows x cols activation whose neurons differ in importance the way
// trained layers do: neuron j has an activation scale and a gradient scale drawn from a
// heavy-tailed (log-normal) law, so a few neurons carry most of |a * dL/da|. Every step, for
// every boundary, the sender routes its activation under the current contract, encodes it,
// sends it over an emulated link, and the receiver decodes and scatters it; the gradient
// comes back mask-routed (values only) in fp16. The sender's sensitivity map learns from the
// gradient at the kept positions; every `negotiate_every` steps the boundaries negotiate new
// contracts, and with a shared link budget the BudgetAllocator first splits the bytes.
// The report compares wire bytes (both directions, everything counted) with dense fp32 and
// measures what the routing lost: the share of Taylor importance carried across and the
// relative L2 error of the reconstructed activation.
#include "cli/demo.hpp"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <random>
#include <vector>

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

int Fail(std::ostream& err, const Status& s) {
  err << "sparselink demo: " << s.ToString() << "\n";
  return 1;
}

}  // namespace

int RunDemo(const DemoOptions& options, std::ostream& out, std::ostream& err) {
  auto bandwidth = ParseBandwidth(options.link_bandwidth);
  if (!bandwidth.ok()) {
    return Fail(err, Status(bandwidth.status().code(),
                            "--link-bandwidth: " + bandwidth.status().message()));
  }
  auto lossy_codec = ParseCodecFlag("--codec", options.lossy_codec);
  if (!lossy_codec.ok()) return Fail(err, lossy_codec.status());
  if (Status s = CheckLinkBudgetFlag(options.link_budget_bytes); !s.ok()) return Fail(err, s);
  const auto rows = static_cast<size_t>(options.rows);
  const auto cols = static_cast<size_t>(options.cols);
  // Each boundary holds four rows x cols float buffers: 64 MiB each at this limit.
  constexpr size_t kMaxEntries = size_t{1} << 24;
  if (rows * cols > kMaxEntries) {
    return Fail(err, FieldError(ErrorCode::kResourceExhausted, "--rows * --cols", rows * cols,
                                "must be <= " + std::to_string(kMaxEntries) +
                                    " (each boundary holds four rows x cols float buffers)"));
  }
  // The packets are written at the end: the directory is made and tried now.
  {
    std::error_code ec;
    std::filesystem::create_directories(options.out_dir, ec);
    const std::filesystem::path probe =
        std::filesystem::path(options.out_dir) / (".sparselink-probe-" + std::to_string(getpid()));
    std::ofstream file(probe);
    if (ec || !file) {
      return Fail(err, FieldError(ErrorCode::kIo, "--out", options.out_dir,
                                  ec ? ec.message() : std::string("cannot be written")));
    }
    file.close();
    std::filesystem::remove(probe, ec);
  }

  const LinkOptions link_options{.model = {.bandwidth_bits_per_s = *bandwidth}};
  auto forward = MakeLink(link_options);
  if (!forward.ok()) return Fail(err, forward.status());
  auto backward = MakeLink(link_options);
  if (!backward.ok()) return Fail(err, backward.status());
  auto router = Router::Create({.scoring = Scoring::kSensitivity});
  if (!router.ok()) return Fail(err, router.status());

  // The summary's size depends only on cols.
  double summary_packet_bytes = 0;
  {
    std::vector<uint8_t> probe;
    const Status s = EncodeSummary(std::vector<float>(cols, 0.0f), {}, &probe, kSummaryCodec);
    if (!s.ok()) return Fail(err, s);
    summary_packet_bytes = static_cast<double>(probe.size());
  }

  std::mt19937_64 rng(options.seed);
  std::vector<Boundary> boundaries;
  for (int b = 0; b < kBoundaries; ++b) {
    auto map = SensitivityMap::Create({.num_neurons = cols, .ema_decay = 0.8});
    if (!map.ok()) return Fail(err, map.status());
    const Contract initial{.boundary = static_cast<uint32_t>(b),
                           .keep = 0.25,
                           .keep_full = 0.5,
                           .full_codec = ValueCodec::kFp16,
                           .lossy_codec = *lossy_codec,
                           .bound_by = BoundBy::kFixed};
    auto negotiator =
        Negotiator::Create({.tau_send = 0.9, .tau_recv = 0.8, .keep_min = kKeepMin}, initial);
    if (!negotiator.ok()) return Fail(err, negotiator.status());
    Boundary boundary{.map = std::move(map).value(), .negotiator = std::move(negotiator).value()};
    // Deeper boundaries concentrate importance more (larger sigma), as later layers of a
    // trained network tend to.
    const double sigma = 0.8 + 0.4 * b;
    for (size_t j = 0; j < cols; ++j) {
      boundary.activation_scale.push_back(static_cast<float>(LogNormal(rng, sigma)));
      boundary.gradient_scale.push_back(static_cast<float>(LogNormal(rng, sigma)));
    }
    boundary.activation.resize(rows * cols);
    boundary.gradient.resize(rows * cols);
    boundary.received.resize(rows * cols);
    boundary.gradient_at_sender.resize(rows * cols);
    boundary.summary.assign(cols, 0.0f);
    boundary.unit_scores.resize(cols);
    boundaries.push_back(std::move(boundary));
  }

  std::exponential_distribution<float> magnitude(1.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::bernoulli_distribution active(0.5);
  std::vector<float> gradient_values;
  std::vector<uint8_t> gradient_packet;
  const auto start = std::chrono::steady_clock::now();
  const double dense_step_bytes = static_cast<double>(rows * cols * sizeof(float));

  for (int step = 0; step < options.steps; ++step) {
    if (step > 0 && step % options.negotiate_every == 0) {
      // The shared budget is split as in training (RoutedBoundaries::OnStepEnd): each boundary
      // priced by the negotiator's own byte model as a line (FitStepCost), every step keeping
      // room for the summary, which crosses on negotiation steps.
      std::vector<double> caps(kBoundaries, std::numeric_limits<double>::infinity());
      if (options.link_budget_bytes > 0) {
        std::vector<BoundaryDemand> demands;
        std::vector<double> fixed(kBoundaries);
        double fixed_total = 0;
        for (int b = 0; b < kBoundaries; ++b) {
          const StepCostLine line = FitStepCost(boundaries[b].negotiator.contract(), 1, rows, cols,
                                                kKeepMin, kGradientCodec);
          fixed[b] = line.fixed + summary_packet_bytes;
          fixed_total += fixed[b];
          demands.push_back({.sensitivity = boundaries[b].map.values(),
                             .rows = rows,
                             .cols = cols,
                             .bytes_per_entry = line.per_entry,
                             .keep_min = kKeepMin});
        }
        auto allocation =
            AllocateBudget(demands, std::max(0.0, options.link_budget_bytes - fixed_total));
        if (!allocation.ok()) return Fail(err, allocation.status());
        for (int b = 0; b < kBoundaries; ++b) caps[b] = allocation->bytes[b] + fixed[b];
      }
      for (int b = 0; b < kBoundaries; ++b) {
        Boundary& bd = boundaries[b];
        auto record = bd.negotiator.Negotiate(
            {.map = &bd.map,
             .link_bytes_per_step = std::max(0.0, caps[b] - summary_packet_bytes),
             .gradient_codec = kGradientCodec,
             .link_budget_reason = BoundBy::kSharedBudget},
            {.map = &bd.map}, rows, cols, static_cast<uint64_t>(step));
        if (!record.ok()) return Fail(err, record.status());
        if (record->stages.back().state == NegotiationState::kRefused) ++bd.refusals;
      }
    }

    for (int b = 0; b < kBoundaries; ++b) {
      Boundary& bd = boundaries[b];
      for (size_t r = 0; r < rows; ++r) {
        for (size_t j = 0; j < cols; ++j) {
          const size_t i = r * cols + j;
          bd.activation[i] = active(rng) ? magnitude(rng) * bd.activation_scale[j] : 0.0f;
          bd.gradient[i] = normal(rng) * bd.gradient_scale[j];
        }
      }
      const Contract& contract = bd.negotiator.contract();
      const ConstMatrix activation{bd.activation.data(), rows, cols};
      Status s =
          router->Route(activation, &bd.map, contract, static_cast<uint64_t>(step), &bd.routed);
      if (!s.ok()) return Fail(err, s);
      const PacketLabel label{.boundary = contract.boundary,
                              .contract_version = contract.version,
                              .step = static_cast<uint64_t>(step)};
      s = EncodeActivation(bd.routed, contract, label, {}, &bd.packet);
      if (!s.ok()) return Fail(err, s);
      s = (*forward)->Send(bd.packet, static_cast<uint64_t>(dense_step_bytes), kTimeout);
      if (!s.ok()) return Fail(err, s);

      // Receiver: decode, scatter, and measure what crossed.
      auto packet = (*forward)->Recv(kTimeout);
      if (!packet.ok()) return Fail(err, packet.status());
      auto decoded = DecodeActivation(*packet);
      if (!decoded.ok()) return Fail(err, decoded.status());
      s = Scatter(*decoded, {bd.received.data(), rows, cols});
      if (!s.ok()) return Fail(err, s);
      for (size_t i = 0; i < rows * cols; ++i) {
        const double importance = std::fabs(double(bd.activation[i]) * bd.gradient[i]);
        bd.importance_total += importance;
        if (bd.received[i] != 0.0f) bd.importance_carried += importance;
        const double diff = double(bd.received[i]) - bd.activation[i];
        bd.error_sq += diff * diff;
        bd.norm_sq += double(bd.activation[i]) * bd.activation[i];
      }

      // Backward: the gradient at the kept positions, fp16, values only.
      s = GatherAtMask(*decoded, {bd.gradient.data(), rows, cols}, &gradient_values);
      if (!s.ok()) return Fail(err, s);
      s = EncodeGradientValues(*decoded, gradient_values, kGradientCodec, label, {},
                               &gradient_packet);
      if (!s.ok()) return Fail(err, s);
      s = (*backward)->Send(gradient_packet, static_cast<uint64_t>(dense_step_bytes), kTimeout);
      if (!s.ok()) return Fail(err, s);
      auto gradient_back = (*backward)->Recv(kTimeout);
      if (!gradient_back.ok()) return Fail(err, gradient_back.status());
      auto values = DecodeGradientValues(*gradient_back, bd.routed);
      if (!values.ok()) return Fail(err, values.status());
      s = ScatterAtMask(bd.routed, *values, {bd.gradient_at_sender.data(), rows, cols});
      if (!s.ok()) return Fail(err, s);
      // Every K steps the receiver also sends its summary: per-neuron mean |g| over the
      // batch, fp16, so that dropped neurons keep being scored and can come back.
      if (step % options.negotiate_every == 0) {
        std::vector<float> mean_abs_gradient(cols, 0.0f);
        for (size_t r = 0; r < rows; ++r) {
          for (size_t j = 0; j < cols; ++j)
            mean_abs_gradient[j] += std::fabs(bd.gradient[r * cols + j]) / float(rows);
        }
        std::vector<uint8_t> summary_packet;
        s = EncodeSummary(mean_abs_gradient, label, &summary_packet, kSummaryCodec);
        if (!s.ok()) return Fail(err, s);
        s = (*backward)->Send(summary_packet, cols * sizeof(float), kTimeout);
        if (!s.ok()) return Fail(err, s);
        auto summary_back = (*backward)->Recv(kTimeout);
        if (!summary_back.ok()) return Fail(err, summary_back.status());
        auto summary = DecodeSummary(*summary_back);
        if (!summary.ok()) return Fail(err, summary.status());
        bd.summary = std::move(summary).value();
      }
      // The sender scores what it can see: |a * dL/da| where the entry was kept, and
      // |a| * (receiver's mean |g|) where it was dropped.
      std::fill(bd.unit_scores.begin(), bd.unit_scores.end(), 0.0f);
      for (size_t r = 0; r < rows; ++r) {
        for (size_t j = 0; j < cols; ++j) {
          const size_t i = r * cols + j;
          const float g = bd.gradient_at_sender[i] != 0.0f ? std::fabs(bd.gradient_at_sender[i])
                                                           : bd.summary[j];
          bd.unit_scores[j] += std::fabs(bd.activation[i]) * g / float(rows);
        }
      }
      s = bd.map.UpdateUnitScores(bd.unit_scores);
      if (!s.ok()) return Fail(err, s);
      if (step == options.steps - 1) bd.last_packet = bd.packet;
    }

    if ((step + 1) % 100 == 0 || step + 1 == options.steps) {
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double rate = (step + 1) / elapsed;
      out << "step " << (step + 1) << "/" << options.steps << "  " << std::fixed
          << std::setprecision(0) << rate << " steps/s  ETA " << std::setprecision(1)
          << (options.steps - step - 1) / rate << " s  wire " << std::setprecision(2)
          << double((*forward)->stats().wire_bytes + (*backward)->stats().wire_bytes) / 1e6
          << " MB\n";
    }
  }

  const LinkStats fwd = (*forward)->stats();
  const LinkStats bwd = (*backward)->stats();
  out << "\nboundary  contract                                              importance  "
         "rel.error\n";
  for (int b = 0; b < kBoundaries; ++b) {
    const Boundary& bd = boundaries[b];
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
        std::filesystem::path(options.out_dir) / ("boundary" + std::to_string(b) + ".packet");
    std::ofstream file(path, std::ios::binary);
    file.write(reinterpret_cast<const char*>(bd.last_packet.data()),
               static_cast<std::streamsize>(bd.last_packet.size()));
    file.close();  // the final flush happens here; check after it
    if (file.fail())
      return Fail(err, FieldError(ErrorCode::kIo, "packet path", path.string(), "cannot write"));
  }
  const double wire = double(fwd.wire_bytes + bwd.wire_bytes);
  const double dense = double(fwd.dense_bytes + bwd.dense_bytes);
  const double dense_time =
      2.0 * options.steps * kBoundaries *
      ModelledTransferSeconds(link_options.model, static_cast<uint64_t>(dense_step_bytes));
  const double routed_time =
      std::chrono::duration<double>(fwd.modelled_time + bwd.modelled_time).count();
  out << std::setprecision(2) << "\nwire bytes (both directions, all overhead): " << wire / 1e6
      << " MB   dense fp32: " << dense / 1e6 << " MB   ratio " << std::setprecision(1)
      << dense / wire << "x\n"
      << std::setprecision(2) << "modelled link time at " << options.link_bandwidth << ": "
      << routed_time << " s routed vs " << dense_time << " s dense\n"
      << "contract negotiations: ";
  for (int b = 0; b < kBoundaries; ++b) {
    out << (b ? ", " : "") << "b" << b << " " << boundaries[b].negotiator.history().size() << " (v"
        << boundaries[b].negotiator.contract().version << ")";
  }
  out << "\nlast packets written to " << options.out_dir
      << "/boundary*.packet (see: sparselink inspect " << options.out_dir << "/boundary0.packet)\n";
  return 0;
}

}  // namespace sparselink::cli
