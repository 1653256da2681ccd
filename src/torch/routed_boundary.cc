// RoutedBoundaries: see the header for the data flow. Both ends of each boundary
// (boundary_ends.hpp) run here, in the trainer's thread, over two in-process links with the
// emulated link model; this file moves their packets (with re-requests on a lost or corrupt
// one), counts the traffic, and puts the ends inside autograd: the forward runs
// sender -> link -> receiver with real packets, the backward receiver -> link -> sender with
// the mask-routed gradient (plus the receiver summary every `summary_every` steps), and every
// `negotiate_every` steps each boundary negotiates in packets.
#include "sparselink/torch/routed_boundary.hpp"

#include <chrono>
#include <cmath>
#include <span>
#include <string_view>
#include <type_traits>

#include "torch/boundary_ends.hpp"
#include "torch/state_bytes.hpp"

namespace sparselink::torch_adapter {

using internal::PhaseClock;
using internal::ThrowIfError;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {
constexpr auto kLinkTimeout = std::chrono::milliseconds(10000);

Status StatusOf(const Status& s) { return s; }
template <typename T>
Status StatusOf(const Result<T>& r) {
  return r.status();
}
}  // namespace

Result<RoutingPolicy> ParseRoutingPolicy(std::string_view name) {
  if (const auto* row = FindName(kRoutingPolicyNames, name)) return row->value;
  return FieldError(ErrorCode::kInvalidArgument, "policy", name,
                    "unknown policy (one of " + NameChoices(kRoutingPolicyNames) + ")");
}

struct RoutedBoundaries::State {
  internal::BoundarySpec spec;
  std::unique_ptr<internal::BoundarySender> sender;
  std::unique_ptr<internal::BoundaryReceiver> receiver;
  std::unique_ptr<Link> forward_link;   // activations, proposals, agreed contracts
  std::unique_ptr<Link> backward_link;  // gradients, summaries, counters, acknowledgements
  double link_cap_bytes = std::numeric_limits<double>::infinity();
  // Wire bytes every step's cap keeps room for: the receiver summary (its size depends only on
  // cols) and the four packets of a negotiation, which cross on one step in summary_every and
  // negotiate_every respectively, under caps that hold for many steps.
  double control_packet_bytes = 0;
  int64_t max_rows = 0;      // most rows a training step has sent: negotiations size steps by it
  int64_t step_rows = 0;     // rows of this step's training forwards so far (all micro-batches)
  int64_t step_packets = 0;  // training forwards of this step so far (its micro-batches)
  int64_t packets_per_step = 1;  // most training forwards a step has made
  uint32_t train_micro = 0;      // micro-batch of the training forward in flight
  uint64_t forwards = 0;         // training forwards so far; a backward must answer the last one
  int64_t step = 0;
  BoundaryReport report;

  torch::Tensor RouteForward(const torch::Tensor& input, bool count);
  torch::Tensor RouteBackward(const torch::Tensor& grad_output);
  // The negotiation in packets: proposal, counter, agreed contract, acknowledgement.
  void Negotiate(double link_bytes_per_step, BoundBy link_reason);
  template <typename Take>
  void Deliver(Link& link, const std::vector<uint8_t>& packet, std::string_view direction,
               uint64_t dense_bytes, bool count, uint64_t* wire_counter, const Take& take);
  // Rows of one of a step's packets: the step's rows over its micro-batches, rounded up.
  size_t PacketRows() const {
    return static_cast<size_t>((max_rows + packets_per_step - 1) / packets_per_step);
  }
};

// Moves `packet` across `link` and hands what arrived to `take(bytes)`, which decodes it into
// its end (a Status or a Result). The two ends of a boundary live in one process here (across
// processes the pipeline runner moves the packets), so the protocol is played out in one
// function: the sender sends its copy; the receiver waits up to retry.recv_timeout, and when
// nothing arrives (lost) or what arrived does not decode (corrupt, or another label), it
// re-requests and the sender sends the same bytes again, since it keeps `packet` until the
// receiver has a decoded copy. The bytes of a failed try never reach the model: `take` leaves
// its end as it was. After retry.max_tries sends the step fails with one error.
template <typename Take>
void RoutedBoundaries::State::Deliver(Link& link, const std::vector<uint8_t>& packet,
                                      std::string_view direction, uint64_t dense_bytes, bool count,
                                      uint64_t* wire_counter, const Take& take) {
  const LinkRetryOptions& retry = spec.options->retry;
  const LinkStats before = link.stats();
  uint64_t corrupt = 0;
  uint64_t lost = 0;
  Status last_error;
  for (int attempt = 1; attempt <= retry.max_tries; ++attempt) {
    ThrowIfError(link.Send(packet, attempt == 1 ? dense_bytes : 0, kLinkTimeout), spec.boundary);
    auto arrived = link.Recv(retry.recv_timeout);
    if (!arrived.ok()) {
      if (arrived.status().code() != ErrorCode::kTimeout) {
        ThrowIfError(arrived.status(), spec.boundary);
      }
      lost += 1;
      last_error = arrived.status();
      continue;
    }
    Status taken = StatusOf(take(std::span<const uint8_t>(*arrived)));
    if (!taken.ok()) {
      corrupt += 1;
      last_error = taken;
      continue;
    }
    if (count) {
      const LinkStats after = link.stats();
      *wire_counter += after.wire_bytes - before.wire_bytes;
      report.dense_fp32_bytes += dense_bytes;
      // Each try costs the packet's modelled time, priced here rather than read off the
      // link's running sum, whose differences would depend on the run's history (a resumed
      // run's links start from 0).
      report.modelled_link_seconds +=
          static_cast<double>(attempt) * ModelledTransferSeconds(spec.options->link, packet.size());
      report.packets += 1;
      report.retransmits += static_cast<uint64_t>(attempt - 1);
      report.retransmit_wire_bytes += static_cast<uint64_t>(attempt - 1) * packet.size();
      report.corrupt_packets += corrupt;
      report.lost_packets += lost;
    }
    return;
  }
  // An uncounted delivery is an evaluation (or no-grad) forward, which has no step of its own.
  const std::string field =
      count ? std::string(direction) + " packet of step " + std::to_string(step) + ": tries"
            : "evaluation " + std::string(direction) + " packet: tries";
  const std::string why = "none arrived intact (" + std::to_string(corrupt) + " corrupt, " +
                          std::to_string(lost) + " lost); last error: " + last_error.ToString();
  ThrowIfError(FieldError(last_error.code(), field, retry.max_tries, why), spec.boundary);
}

torch::Tensor RoutedBoundaries::State::RouteForward(const torch::Tensor& input, bool count) {
  PhaseClock clock;
  BoundaryTime time;
  const int64_t rows = input.size(0);
  const uint32_t micro = count ? train_micro : 0;
  ThrowIfError(sender->EncodeActivation(input, micro, count), spec.boundary);
  clock.Lap(&time.route_encode);
  torch::Tensor dense;
  const uint64_t dense_bytes = static_cast<uint64_t>(rows) * spec.cols * sizeof(float);
  Deliver(*forward_link, sender->packet(), "forward", dense_bytes, count,
          &report.forward_wire_bytes, [&](std::span<const uint8_t> bytes) -> Status {
            auto decoded = receiver->DecodeActivation(bytes, rows, micro, count);
            if (decoded.ok()) dense = *decoded;
            return decoded.status();
          });
  clock.Lap(&time.forward_link_decode);
  if (count) {
    report.time.Add(time);
    report.route_seconds += clock.Total();
  }
  return dense.reshape(input.sizes()).to(input.dtype());
}

torch::Tensor RoutedBoundaries::State::RouteBackward(const torch::Tensor& grad_output) {
  PhaseClock clock;
  BoundaryTime time;
  const int64_t rows = grad_output.size(0);
  torch::Tensor g =
      grad_output.to(torch::kFloat32).contiguous().reshape({rows, static_cast<int64_t>(spec.cols)});
  clock.Lap(&time.gradient_encode);
  const uint64_t dense_bytes = static_cast<uint64_t>(rows) * spec.cols * sizeof(float);
  if (receiver->SummaryDue(train_micro)) {
    ThrowIfError(receiver->EncodeSummary(g, train_micro), spec.boundary);
    // A summary has no dense counterpart: it adds wire bytes and no dense bytes.
    Deliver(*backward_link, receiver->packet(), "summary", 0, true, &report.backward_wire_bytes,
            [&](std::span<const uint8_t> bytes) { return sender->TakeSummary(bytes); });
  }
  clock.Lap(&time.summary);
  ThrowIfError(receiver->EncodeGradient(g, train_micro), spec.boundary);
  clock.Lap(&time.gradient_encode);
  torch::Tensor grad_input;
  Deliver(*backward_link, receiver->packet(), "backward", dense_bytes, true,
          &report.backward_wire_bytes, [&](std::span<const uint8_t> bytes) {
            return sender->TakeGradient(bytes, train_micro, &grad_input);
          });
  clock.Lap(&time.backward_link_decode);
  report.time.Add(time);
  report.route_seconds += clock.Total();
  return grad_input.reshape(grad_output.sizes()).to(grad_output.dtype());
}

void RoutedBoundaries::State::Negotiate(double link_bytes_per_step, BoundBy link_reason) {
  ThrowIfError(sender->EncodeProposal(link_bytes_per_step, link_reason, PacketRows()),
               spec.boundary);
  Deliver(*forward_link, sender->packet(), "proposal", 0, true, &report.forward_wire_bytes,
          [&](std::span<const uint8_t> bytes) { return receiver->Counter(bytes); });
  Deliver(*backward_link, receiver->packet(), "counter", 0, true, &report.backward_wire_bytes,
          [&](std::span<const uint8_t> bytes) { return sender->Settle(bytes); });
  Deliver(*forward_link, sender->packet(), "contract", 0, true, &report.forward_wire_bytes,
          [&](std::span<const uint8_t> bytes) { return receiver->Acknowledge(bytes); });
  Deliver(*backward_link, receiver->packet(), "acknowledgement", 0, true,
          &report.backward_wire_bytes,
          [&](std::span<const uint8_t> bytes) { return sender->CheckAcknowledgement(bytes); });
}

namespace {
class RouteFunction : public torch::autograd::Function<RouteFunction> {
 public:
  // The boundary keeps one forward in flight (its masks and activation), so a backward must
  // answer the latest training forward; micro-batches that each run forward then backward
  // are fine, but a second forward before the backward (interleaved micro-batches,
  // recomputation) is refused rather than paired with the wrong mask.
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor input, int64_t state_address) {
    auto* state = reinterpret_cast<RoutedBoundaries::State*>(state_address);
    state->forwards += 1;
    state->step_rows += input.size(0);
    state->max_rows = std::max(state->max_rows, state->step_rows);
    state->step_packets += 1;
    state->packets_per_step = std::max(state->packets_per_step, state->step_packets);
    state->train_micro = static_cast<uint32_t>(state->step_packets - 1);
    ctx->saved_data["state"] = state_address;
    ctx->saved_data["forward"] = static_cast<int64_t>(state->forwards);
    return state->RouteForward(input, /*count=*/true);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto* state = reinterpret_cast<RoutedBoundaries::State*>(ctx->saved_data["state"].toInt());
    TORCH_CHECK(
        static_cast<uint64_t>(ctx->saved_data["forward"].toInt()) == state->forwards,
        "sparselink boundary ", state->spec.boundary,
        ": backward of an older forward; one training forward per boundary may be in flight");
    return {state->RouteBackward(grad_outputs[0]), torch::Tensor()};
  }
};
}  // namespace

Result<std::unique_ptr<RoutedBoundaries>> RoutedBoundaries::Create(
    const RoutedBoundaryOptions& options, Stages* stages) {
  if (options.keep && (!std::isfinite(*options.keep) || *options.keep <= 0 || *options.keep > 1)) {
    return FieldError(ErrorCode::kInvalidArgument, "keep", *options.keep, "must be in (0, 1]");
  }
  if (!std::isfinite(options.initial_keep) || options.initial_keep <= 0 ||
      options.initial_keep > 1) {
    return FieldError(ErrorCode::kInvalidArgument, "initial_keep", options.initial_keep,
                      "must be in (0, 1]");
  }
  if (options.negotiate_every < 1) {
    return FieldError(ErrorCode::kInvalidArgument, "negotiate_every", options.negotiate_every,
                      "must be >= 1");
  }
  if (options.summary_every < 1) {
    return FieldError(ErrorCode::kInvalidArgument, "summary_every", options.summary_every,
                      "must be >= 1");
  }
  if (!std::isfinite(options.link_budget_bytes_per_step) ||
      options.link_budget_bytes_per_step < 0) {
    return FieldError(ErrorCode::kInvalidArgument, "link_budget",
                      options.link_budget_bytes_per_step, "must be >= 0 bytes per step");
  }
  if (options.retry.max_tries < 1) {
    return FieldError(ErrorCode::kInvalidArgument, "retry.max_tries", options.retry.max_tries,
                      "must be >= 1");
  }
  if (options.retry.recv_timeout.count() < 0) {
    return FieldError(ErrorCode::kInvalidArgument, "retry.recv_timeout_ms",
                      options.retry.recv_timeout.count(), "must be >= 0");
  }
  Contract probe{.keep = options.keep.value_or(options.initial_keep),
                 .keep_full = options.keep_full,
                 .full_codec = options.full_codec,
                 .lossy_codec = options.lossy_codec};
  SPARSELINK_RETURN_IF_ERROR(probe.Validate());
  // Everything a boundary builds on its first Forward is built once here, so that bad options
  // fail now rather than after a run's first (or, with --compare-dense, its whole baseline).
  SPARSELINK_ASSIGN_OR_RETURN(auto link_check, MakeLink({.model = options.link}));
  (void)link_check;
  SPARSELINK_RETURN_IF_ERROR(SensitivityMap::Create({.num_neurons = 1,
                                                     .mode = options.sensitivity_mode,
                                                     .alpha = options.sensitivity_alpha,
                                                     .ema_decay = options.ema_decay})
                                 .status());
  SPARSELINK_RETURN_IF_ERROR(Negotiator::Create(options.negotiator, probe).status());
  SPARSELINK_RETURN_IF_ERROR(
      Router::Create({.eps = options.eps, .parallel_min_entries = options.parallel_min_entries})
          .status());
  auto boundaries = std::unique_ptr<RoutedBoundaries>(new RoutedBoundaries());
  boundaries->options_ = options;
  boundaries->stages_ = stages;
  return boundaries;
}

RoutedBoundaries::~RoutedBoundaries() = default;

// Builds boundary b's state the first time an activation of `cols` neurons per sample crosses
// it (or from a checkpoint), with `block` neurons per unit of its maps.
static Result<std::unique_ptr<RoutedBoundaries::State>> MakeState(
    size_t boundary, size_t cols, size_t block, const RoutedBoundaryOptions& options) {
  auto state = std::make_unique<RoutedBoundaries::State>();
  state->spec = {.boundary = boundary, .cols = cols, .block = block, .options = &options};
  SPARSELINK_ASSIGN_OR_RETURN(state->sender, internal::BoundarySender::Create(state->spec));
  SPARSELINK_ASSIGN_OR_RETURN(state->receiver, internal::BoundaryReceiver::Create(state->spec));
  // Each link draws its faults from its own generator, seeded per boundary and direction.
  LinkOptions link_options{.model = options.link};
  const uint64_t fault_seed =
      options.link.fault_seed * 1000003 + options.seed * 1000 + 2 * boundary;
  link_options.model.fault_seed = fault_seed;
  SPARSELINK_ASSIGN_OR_RETURN(state->forward_link, MakeLink(link_options));
  link_options.model.fault_seed = fault_seed + 1;
  SPARSELINK_ASSIGN_OR_RETURN(state->backward_link, MakeLink(link_options));
  std::vector<uint8_t> probe;
  SPARSELINK_RETURN_IF_ERROR(EncodeSummary(std::vector<float>(state->spec.cols, 0.0f),
                                           {.boundary = static_cast<uint32_t>(boundary)}, &probe,
                                           internal::kSummaryCodec));
  state->control_packet_bytes = static_cast<double>(probe.size());
  // Proposal and counter, the agreed contract and its acknowledgement: fixed sizes.
  SPARSELINK_RETURN_IF_ERROR(EncodeProposal({.rows = 1, .cols = 1}, {}, &probe));
  state->control_packet_bytes += 2 * static_cast<double>(probe.size());
  SPARSELINK_RETURN_IF_ERROR(EncodeContract(internal::InitialContract(state->spec), {}, &probe));
  state->control_packet_bytes += 2 * static_cast<double>(probe.size());
  state->report.boundary = boundary;
  state->report.cols = state->spec.cols;
  state->report.block = state->spec.block;
  return state;
}

torch::Tensor RoutedBoundaries::Forward(size_t boundary, const torch::Tensor& activation,
                                        bool training) {
  TORCH_CHECK(activation.device().is_cpu(), "sparselink boundary ", boundary,
              ": activation must be on the CPU, got ", activation.device());
  TORCH_CHECK(activation.dim() >= 2 && activation.size(0) > 0, "sparselink boundary ", boundary,
              ": activation must be [N, ...] with N > 0, got ", activation.sizes());
  while (states_.size() <= boundary) states_.emplace_back();
  if (!states_[boundary]) {
    // Conv feature maps [N, C, H, W] get per-channel resolution (block = H*W) unless
    // options.per_channel_maps is off.
    const size_t block = activation.dim() == 4 && options_.per_channel_maps
                             ? static_cast<size_t>(activation.size(2) * activation.size(3))
                             : 1;
    auto state = MakeState(boundary, static_cast<size_t>(activation.numel() / activation.size(0)),
                           block, options_);
    ThrowIfError(state.status(), boundary);
    states_[boundary] = std::move(state).value();
    if (frozen_) {  // SetFrozen came before this boundary's first forward
      states_[boundary]->sender->map().Freeze();
      states_[boundary]->receiver->map().Freeze();
    }
  }
  State& state = *states_[boundary];
  const auto cols = static_cast<size_t>(activation.numel() / activation.size(0));
  TORCH_CHECK(cols == state.spec.cols, "sparselink boundary ", boundary, ": activation has ", cols,
              " values per sample, the boundary was built for ", state.spec.cols);

  if (options_.policy == RoutingPolicy::kDense) {
    // Counted like a routed training forward: training, with autograd on.
    if (training && torch::GradMode::is_enabled()) {
      const uint64_t bytes = static_cast<uint64_t>(activation.numel()) * sizeof(float);
      state.report.forward_wire_bytes += bytes;
      state.report.backward_wire_bytes += bytes;
      state.report.dense_fp32_bytes += 2 * bytes;
      state.report.modelled_link_seconds += 2 * ModelledTransferSeconds(options_.link, bytes);
    }
    return activation;
  }
  if (!training || !activation.requires_grad() || !torch::GradMode::is_enabled())
    return state.RouteForward(activation, /*count=*/false);
  return RouteFunction::apply(activation, reinterpret_cast<int64_t>(&state));
}

void RoutedBoundaries::OnStepEnd(int64_t step) {
  for (auto& state : states_) {
    if (!state) continue;
    // The sender's map from the step's gradients (deferred to here: boundary_ends.hpp).
    const double before = state->sender->time().map_update;
    ThrowIfError(state->sender->FinishStep(), state->spec.boundary);
    const double map_seconds = state->sender->time().map_update - before;
    state->report.time.map_update += map_seconds;
    state->report.route_seconds += map_seconds;
    state->step = step + 1;
    state->sender->step = step + 1;
    state->receiver->step = step + 1;
    state->step_rows = 0;
    state->step_packets = 0;
  }
  if (options_.keep || options_.policy == RoutingPolicy::kDense) return;
  if ((step + 1) % options_.negotiate_every != 0) return;
  if (options_.link_budget_bytes_per_step > 0) ShareBudget();
  for (auto& state : states_) {
    if (!state || state->max_rows == 0) continue;  // no training step has crossed it yet
    // The negotiator prices one packet pair; a step of M micro-batches gets 1/M of the cap,
    // less the summary's and the negotiation's room, for each of its M packets of the step's
    // rows / M.
    state->Negotiate(std::max(0.0, state->link_cap_bytes - state->control_packet_bytes) /
                         static_cast<double>(state->packets_per_step),
                     options_.link_budget_bytes_per_step > 0 ? BoundBy::kSharedBudget
                                                             : BoundBy::kSenderLinkBudget);
  }
}

// One shared budget: the allocator splits it by sensitivity per byte, and each share becomes
// that boundary's link cap in its negotiation. Both must price bytes the same way, so each
// boundary's cost is read off the negotiator's own model, EstimateStepBytes, as a line
// (FitStepCost): fixed (headers, section table, checksums, per-row scales) + per_entry * kept
// entries. The allocator splits what is left after the fixed parts; each cap is the share plus
// the fixed part.
void RoutedBoundaries::ShareBudget() {
  std::vector<BoundaryDemand> demands;
  std::vector<double> fixed_bytes;
  double fixed_total = 0;
  for (auto& state : states_) {
    if (!state || state->max_rows == 0) continue;
    const double floor_keep = options_.negotiator.keep_min;
    // A step of M micro-batches is M packets each way, each with its own header, table,
    // checksum and per-row scales: priced as M packets of the step's rows / M.
    const auto packets = static_cast<size_t>(state->packets_per_step);
    const size_t packet_rows = state->PacketRows();
    const StepCostLine line =
        FitStepCost(state->sender->contract(), packets, packet_rows, state->spec.cols, floor_keep,
                    options_.gradient_codec, state->spec.block);
    // Every step's cap keeps room for the summary and a negotiation (control_packet_bytes).
    const double fixed = line.fixed + state->control_packet_bytes;
    fixed_bytes.push_back(fixed);
    fixed_total += fixed;
    demands.push_back({.sensitivity = state->sender->map().values(),
                       .rows = packets * packet_rows,
                       .cols = state->spec.cols,
                       .bytes_per_entry = line.per_entry,
                       .keep_min = floor_keep});
  }
  if (demands.empty()) return;
  auto allocation =
      AllocateBudget(demands, std::max(0.0, options_.link_budget_bytes_per_step - fixed_total));
  TORCH_CHECK(allocation.ok(), "sparselink: shared link budget: ", allocation.status().ToString());
  size_t i = 0;
  for (auto& state : states_) {
    if (!state || state->max_rows == 0) continue;
    state->link_cap_bytes = allocation->bytes[i] + fixed_bytes[i];
    ++i;
  }
}

void RoutedBoundaries::SetFrozen(bool frozen) {
  frozen_ = frozen;
  for (auto& state : states_) {
    if (!state) continue;
    for (SensitivityMap* map : {&state->sender->map(), &state->receiver->map()}) {
      if (frozen) {
        map->Freeze();
      } else {
        map->Unfreeze();
      }
    }
  }
}

std::string RoutedBoundaries::CheckpointConfig() const {
  return internal::BoundaryConfig(options_);
}

// Per boundary that has been built: its shape, what the negotiations price a step by, the
// report's counters, then each end's own state (boundary_state.cc).
Result<std::vector<uint8_t>> RoutedBoundaries::SaveState() const {
  internal::StateWriter w;
  size_t built = 0;
  for (const auto& state : states_) built += state ? 1 : 0;
  w.U64(built);
  for (const auto& state : states_) {
    if (!state) continue;
    w.U64(state->spec.boundary);
    w.U64(state->spec.cols);
    w.U64(state->spec.block);
    w.F64(state->link_cap_bytes);
    w.I64(state->max_rows);
    w.I64(state->packets_per_step);
    w.U64(state->forwards);
    w.I64(state->step);
    internal::SaveReportCounters(state->report, w);
    SPARSELINK_RETURN_IF_ERROR(state->sender->SaveState(w));
    SPARSELINK_RETURN_IF_ERROR(state->receiver->SaveState(w));
  }
  return w.Take();
}

Status RoutedBoundaries::LoadState(std::span<const uint8_t> bytes) {
  if (!states_.empty()) {
    return FieldError(ErrorCode::kInvalidArgument, "boundaries built", states_.size(),
                      "a checkpoint loads into a RoutedBoundaries before its first Forward");
  }
  internal::StateReader r(bytes, "boundaries");
  std::vector<std::unique_ptr<State>> loaded;  // kept only when every boundary loads
  uint64_t built = 0;
  SPARSELINK_RETURN_IF_ERROR(r.U64("count", &built));
  constexpr uint64_t kMaxBoundaries = 4096;
  for (uint64_t i = 0; i < built; ++i) {
    uint64_t boundary = 0, cols = 0, block = 0;
    SPARSELINK_RETURN_IF_ERROR(r.U64("boundary", &boundary));
    SPARSELINK_RETURN_IF_ERROR(r.U64("cols", &cols));
    SPARSELINK_RETURN_IF_ERROR(r.U64("block", &block));
    if (boundary >= kMaxBoundaries || (boundary < loaded.size() && loaded[boundary]) || cols == 0 ||
        cols > kMaxSensitivityNeurons || block == 0 || block > cols) {
      return FieldError(ErrorCode::kCorruptPacket, "boundaries.boundary", boundary,
                        "repeated, or out of range with cols " + std::to_string(cols) +
                            " and block " + std::to_string(block));
    }
    SPARSELINK_ASSIGN_OR_RETURN(auto state, MakeState(boundary, cols, block, options_));
    SPARSELINK_RETURN_IF_ERROR(r.F64("link_cap_bytes", &state->link_cap_bytes));
    SPARSELINK_RETURN_IF_ERROR(r.I64("max_rows", &state->max_rows));
    SPARSELINK_RETURN_IF_ERROR(r.I64("packets_per_step", &state->packets_per_step));
    SPARSELINK_RETURN_IF_ERROR(r.U64("forwards", &state->forwards));
    SPARSELINK_RETURN_IF_ERROR(r.I64("step", &state->step));
    SPARSELINK_RETURN_IF_ERROR(internal::LoadReportCounters(r, &state->report));
    SPARSELINK_RETURN_IF_ERROR(state->sender->LoadState(r));
    SPARSELINK_RETURN_IF_ERROR(state->receiver->LoadState(r));
    if (state->packets_per_step < 1 || state->max_rows < 0) {
      return FieldError(ErrorCode::kCorruptPacket, "boundaries.packets_per_step",
                        state->packets_per_step, "must be >= 1");
    }
    while (loaded.size() <= boundary) loaded.emplace_back();
    loaded[boundary] = std::move(state);
  }
  SPARSELINK_RETURN_IF_ERROR(r.Done());
  states_ = std::move(loaded);
  return Status::Ok();
}

std::vector<BoundaryReport> RoutedBoundaries::Report() const {
  std::vector<BoundaryReport> reports;
  for (const auto& state : states_) {
    if (!state) continue;
    BoundaryReport r = state->report;
    r.history = state->sender->negotiator().history();
    r.contract = state->sender->contract();
    r.sensitivity.assign(state->sender->map().values().begin(),
                         state->sender->map().values().end());
    r.receiver_sensitivity.assign(state->receiver->map().values().begin(),
                                  state->receiver->map().values().end());
    reports.push_back(std::move(r));
  }
  return reports;
}

}  // namespace sparselink::torch_adapter
