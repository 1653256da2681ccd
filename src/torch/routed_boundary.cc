// RoutedBoundaries: see the header for the data flow. The autograd function below is the
// only place where LibTorch meets the core: its forward runs sender -> link -> receiver with
// real packets, and its backward runs receiver -> link -> sender with the mask-routed
// gradient (plus the receiver summary every `summary_every` steps).
#include "sparselink/torch/routed_boundary.hpp"

#include <chrono>
#include <cmath>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>

#include "codec/own_mask.hpp"
#include "simd/kernels.hpp"

namespace sparselink::torch_adapter {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {
constexpr auto kLinkTimeout = std::chrono::milliseconds(10000);
// Summaries are mean |g| per neuron, mostly below fp16's smallest normal (6.1e-5) in the
// default MLP run: bf16 keeps them at 8 significant bits (docs/wire-format.md).
constexpr ValueCodec kSummaryCodec = ValueCodec::kBf16;

// Exceptions only at the edge: a core error inside autograd becomes one c10::Error line.
void ThrowIfError(const Status& s, size_t boundary) {
  TORCH_CHECK(s.ok(), "sparselink boundary ", boundary, ": ", s.ToString());
}

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Splits a stretch of wall time into phases: each Lap adds the time since the previous one
// (or since construction) to the phase it names.
class PhaseClock {
 public:
  void Lap(double* phase) {
    const auto now = std::chrono::steady_clock::now();
    *phase += Seconds(now - last_);
    last_ = now;
  }
  // From construction to the last Lap.
  double Total() const { return Seconds(last_ - start_); }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_ = start_;
};
}  // namespace

Result<RoutingPolicy> ParseRoutingPolicy(std::string_view name) {
  if (const auto* row = FindName(kRoutingPolicyNames, name)) return row->value;
  return FieldError(ErrorCode::kInvalidArgument, "policy", name,
                    "unknown policy (one of " + NameChoices(kRoutingPolicyNames) + ")");
}

struct RoutedBoundaries::State {
  size_t boundary = 0;
  size_t cols = 0;
  size_t block = 1;
  const RoutedBoundaryOptions* options = nullptr;
  std::optional<SensitivityMap> map;           // sender's view
  std::optional<SensitivityMap> receiver_map;  // receiver's view of its inputs
  std::optional<Negotiator> negotiator;
  std::optional<Router> router;
  std::unique_ptr<Link> forward_link;
  std::unique_ptr<Link> backward_link;
  Contract contract;
  double link_cap_bytes = std::numeric_limits<double>::infinity();
  // Wire bytes of this boundary's receiver summary (its size depends only on cols).
  double summary_packet_bytes = 0;

  // The step in flight: the sender's routed tensor, the receiver's mask of what arrived (the
  // fused decoder's, which the gradient is gathered at), and the activation the sender scored
  // (rows x cols, contiguous fp32).
  RoutedTensor sender_mask;
  KeptMask receiver_mask;
  torch::Tensor activation;
  torch::Tensor received;
  // An uncounted forward (evaluation, or no grad) routes into this instead, so one that comes
  // between a training forward and its backward leaves that step's masks alone.
  RoutedTensor eval_sender_mask;
  int64_t max_rows = 0;      // most rows a training step has sent: negotiations size steps by it
  int64_t step_rows = 0;     // rows of this step's training forwards so far (all micro-batches)
  int64_t step_packets = 0;  // training forwards of this step so far (its micro-batches)
  int64_t packets_per_step = 1;  // most training forwards a step has made
  uint32_t train_micro = 0;      // micro-batch of the training forward in flight
  uint64_t forwards = 0;         // training forwards so far; a backward must answer the last one
  std::vector<float> summary;    // per neuron, the receiver's last mean |g| (zeros before one)
  int64_t step = 0;

  std::vector<uint8_t> packet;  // the sender's encoded copy, kept until the receiver decodes it
  std::vector<float> kept_gradient;  // the sender's copy of it, decoded
  std::vector<float> act_sums;       // per neuron: sum over rows of |a|, taken in the forward
  uint64_t act_sums_forward = 0;     // the training forward act_sums belong to (0: none)
  std::vector<float> act_scores;     // per neuron, this step: mean |a|
  std::vector<float> grad_scores;    // per neuron, this step: mean |g| (kept) or summary
  std::vector<float> taylor_scores;  // per neuron, this step: mean |a*g| (same stand-in)
  std::vector<float> unit_scores;
  BoundaryReport report;

  torch::Tensor RouteForward(const torch::Tensor& input, bool count);
  torch::Tensor RouteBackward(const torch::Tensor& grad_output);
  // RouteBackward's parts: the receiver's map and summary (every summary_every steps), and the
  // sender's map from what came back.
  void SendSummary(const float* g_data, size_t num_rows, const PacketLabel& label);
  void UpdateSenderMap(size_t num_rows);
  template <typename Decode>
  auto Deliver(Link& link, std::string_view direction, const PacketLabel& label,
               uint64_t dense_bytes, bool count, uint64_t* wire_counter, const Decode& decode)
      -> std::invoke_result_t<Decode, std::span<const uint8_t>, PacketInfo*>;
  static Status CheckLabel(const PacketInfo& info, const PacketLabel& label);
  // Rows of one of a step's packets: the step's rows over its micro-batches, rounded up.
  size_t PacketRows() const {
    return static_cast<size_t>((max_rows + packets_per_step - 1) / packets_per_step);
  }
  // The map's per-kept sums over rows run in fixed blocks of rows, each into a partial sum of
  // its own, and the partials are added in block order: on the OpenMP threads each block reads
  // the rows its thread decoded (still in that core's cache), and the sums are the same for any
  // thread count. (Threads taking column ranges of every row instead read half their rows from
  // the other core, and lost to one thread: docs/perf-notes.md#krowblock.)
  static constexpr size_t kRowBlock = 64;
  std::vector<float> partials;  // row blocks x cols
  // Runs add(first_row, end_row, partial) for each block of `rows` (partial zeroed, cols
  // long), then adds the partials into `sums` in block order.
  template <typename AddRows>
  void SumOverRowBlocks(size_t rows, std::vector<float>& sums, const AddRows& add) {
    const size_t blocks = (rows + kRowBlock - 1) / kRowBlock;
    partials.resize(blocks * cols);
    float* p = partials.data();
#pragma omp parallel for schedule(static) if (rows * cols >= options->parallel_min_entries)
    for (size_t b = 0; b < blocks; ++b) {
      std::fill(p + b * cols, p + (b + 1) * cols, 0.0f);
      add(b * kRowBlock, std::min(rows, (b + 1) * kRowBlock), p + b * cols);
    }
    for (size_t b = 0; b < blocks; ++b) {
      for (size_t j = 0; j < cols; ++j) sums[j] += p[b * cols + j];
    }
  }
};

// Moves the encoded packet in `packet` across `link` and returns what `decode(bytes, &info)`
// makes of the bytes that arrived; a packet that decodes but carries another boundary, step or
// micro-batch than `label` (CheckLabel) counts as corrupt. The two ends of a boundary live in one
// process here (with MPI they are two ranks), so the protocol is played out in one function: the
// sender sends its copy; the receiver waits up to retry.recv_timeout, and when nothing arrives
// (lost) or what arrived does not decode (corrupt), it re-requests and the sender sends the same
// bytes again, since it keeps `packet` until the receiver has a decoded copy. The bytes of a failed
// try are dropped and never reach the model. After retry.max_tries sends the step fails with one
// error.
template <typename Decode>
auto RoutedBoundaries::State::Deliver(Link& link, std::string_view direction,
                                      const PacketLabel& label, uint64_t dense_bytes, bool count,
                                      uint64_t* wire_counter, const Decode& decode)
    -> std::invoke_result_t<Decode, std::span<const uint8_t>, PacketInfo*> {
  const LinkRetryOptions& retry = options->retry;
  const LinkStats before = link.stats();
  uint64_t corrupt = 0;
  uint64_t lost = 0;
  Status last_error;
  for (int attempt = 1; attempt <= retry.max_tries; ++attempt) {
    ThrowIfError(link.Send(packet, attempt == 1 ? dense_bytes : 0, kLinkTimeout), boundary);
    auto arrived = link.Recv(retry.recv_timeout);
    if (!arrived.ok()) {
      if (arrived.status().code() != ErrorCode::kTimeout) ThrowIfError(arrived.status(), boundary);
      lost += 1;
      last_error = arrived.status();
      continue;
    }
    PacketInfo info;
    auto decoded = decode(std::span<const uint8_t>(*arrived), &info);
    if (decoded.ok()) {
      if (Status mismatch = CheckLabel(info, label); !mismatch.ok()) decoded = std::move(mismatch);
    }
    if (!decoded.ok()) {
      corrupt += 1;
      last_error = decoded.status();
      continue;
    }
    if (count) {
      const LinkStats after = link.stats();
      const uint64_t sent_bytes = after.wire_bytes - before.wire_bytes;
      *wire_counter += sent_bytes;
      report.dense_fp32_bytes += dense_bytes;
      report.modelled_link_seconds += (after.modelled_time - before.modelled_time).count();
      report.packets += 1;
      report.retransmits += static_cast<uint64_t>(attempt - 1);
      report.retransmit_wire_bytes += static_cast<uint64_t>(attempt - 1) * packet.size();
      report.corrupt_packets += corrupt;
      report.lost_packets += lost;
    }
    return decoded;
  }
  // An uncounted delivery is an evaluation (or no-grad) forward, which has no step of its own.
  const std::string field =
      count ? std::string(direction) + " packet of step " + std::to_string(step) + ": tries"
            : "evaluation " + std::string(direction) + " packet: tries";
  const std::string why = "none arrived intact (" + std::to_string(corrupt) + " corrupt, " +
                          std::to_string(lost) + " lost); last error: " + last_error.ToString();
  ThrowIfError(FieldError(last_error.code(), field, retry.max_tries, why), boundary);
  return last_error;  // not reached: ThrowIfError threw
}

// A decoded packet must also carry this boundary's label: a stray packet of another boundary
// or step (a late duplicate, with a transport that can delay) is refused like a corrupt one.
Status RoutedBoundaries::State::CheckLabel(const PacketInfo& info, const PacketLabel& label) {
  if (info.header.boundary != label.boundary) {
    return FieldError(ErrorCode::kCorruptPacket, "packet.boundary", info.header.boundary,
                      "expected " + std::to_string(label.boundary));
  }
  if (info.header.step != label.step) {
    return FieldError(ErrorCode::kCorruptPacket, "packet.step", info.header.step,
                      "expected " + std::to_string(label.step));
  }
  if (info.header.micro_batch != label.micro_batch) {
    return FieldError(ErrorCode::kCorruptPacket, "packet.micro_batch", info.header.micro_batch,
                      "expected " + std::to_string(label.micro_batch));
  }
  return Status::Ok();
}

torch::Tensor RoutedBoundaries::State::RouteForward(const torch::Tensor& input, bool count) {
  PhaseClock clock;
  BoundaryTime time;
  const int64_t rows = input.size(0);
  RoutedTensor& sent = count ? sender_mask : eval_sender_mask;
  torch::Tensor scored =
      input.detach().to(torch::kFloat32).contiguous().reshape({rows, static_cast<int64_t>(cols)});
  if (count) activation = scored;
  const ConstMatrix a{scored.data_ptr<float>(), static_cast<size_t>(rows), cols};
  const bool use_map = options->policy == RoutingPolicy::kSensitivity ||
                       options->policy == RoutingPolicy::kStructured;
  const PacketLabel label{.boundary = static_cast<uint32_t>(boundary),
                          .contract_version = contract.version,
                          .step = static_cast<uint64_t>(step),
                          .micro_batch = count ? train_micro : 0};
  // The sender's map update (RouteBackward) needs the column sums of |a|: the router takes
  // them as it reads each row, rather than from memory after the later stages have run.
  const bool take_sums = count && !map->frozen();
  ThrowIfError(RouteAndEncode(*router, a, use_map ? &*map : nullptr, contract, label,
                              {.index_codec = options->index_codec,
                               .zstd = options->zstd,
                               .zstd_level = options->zstd_level,
                               .parallel_min_entries = options->parallel_min_entries},
                              &sent, &packet, take_sums ? &act_sums : nullptr),
               boundary);
  if (take_sums) act_sums_forward = forwards;
  clock.Lap(&time.route_encode);
  const uint64_t dense_bytes = static_cast<uint64_t>(rows) * cols * sizeof(float);
  // The receiver decodes straight into the dense rows the next stage reads (and, training, the
  // mask its gradient will be gathered at): one pass, no column list or value array between.
  // A packet that decodes but carries another label (Deliver's CheckLabel) has been written
  // into both by then: the retry that follows overwrites them, and a step whose tries all fail
  // ends in an error.
  torch::Tensor dense = torch::empty({rows, static_cast<int64_t>(cols)}, torch::kFloat32);
  const MutableMatrix out{dense.data_ptr<float>(), static_cast<size_t>(rows), cols};
  const DecodeLimits limits{.parallel_min_entries = options->parallel_min_entries};
  Deliver(*forward_link, "forward", label, dense_bytes, count, &report.forward_wire_bytes,
          [&](std::span<const uint8_t> bytes, PacketInfo* info) -> Result<bool> {
            SPARSELINK_RETURN_IF_ERROR(
                count ? DecodeActivationToDenseAndMask(bytes, out, &receiver_mask, limits, info)
                      : DecodeActivationToDense(bytes, out, limits, info));
            return true;
          })
      .value();
  clock.Lap(&time.forward_link_decode);
  if (count) {
    received = dense;
    report.time.Add(time);
    report.route_seconds += clock.Total();
  }
  return dense.reshape(input.sizes()).to(input.dtype());
}

torch::Tensor RoutedBoundaries::State::RouteBackward(const torch::Tensor& grad_output) {
  PhaseClock clock;
  BoundaryTime time;
  const int64_t rows = activation.size(0);
  const auto num_rows = static_cast<size_t>(rows);
  torch::Tensor g =
      grad_output.to(torch::kFloat32).contiguous().reshape({rows, static_cast<int64_t>(cols)});
  clock.Lap(&time.gradient_encode);
  const float* g_data = g.data_ptr<float>();
  const uint64_t dense_bytes = num_rows * cols * sizeof(float);
  const PacketLabel label{.boundary = static_cast<uint32_t>(boundary),
                          .contract_version = contract.version,
                          .step = static_cast<uint64_t>(step),
                          .micro_batch = train_micro};

  const bool summary_step = step % options->summary_every == 0 && train_micro == 0;
  if (summary_step) SendSummary(g_data, num_rows, label);
  clock.Lap(&time.summary);
  // Receiver -> sender: the gradient at the kept positions only. Both masks are this state's
  // own, made by the decoder and the router this step and never touched since: the calls skip
  // their validation (codec/own_mask.hpp).
  ThrowIfError(internal::EncodeGradientFromDenseTrustedMask(
                   receiver_mask, {g_data, num_rows, cols}, options->gradient_codec, label,
                   {.index_codec = options->index_codec,
                    .zstd = options->zstd,
                    .zstd_level = options->zstd_level,
                    .parallel_min_entries = options->parallel_min_entries},
                   &packet),
               boundary);
  clock.Lap(&time.gradient_encode);
  // The sender decodes straight into the dense gradient of its stage (and keeps the values in
  // mask order for its map). A packet that decodes but carries another label has been written
  // there by then, as in the forward: the retry overwrites it.
  torch::Tensor grad_input = torch::empty({rows, static_cast<int64_t>(cols)}, torch::kFloat32);
  const MutableMatrix gi{grad_input.data_ptr<float>(), num_rows, cols};
  Deliver(*backward_link, "backward", label, dense_bytes, true, &report.backward_wire_bytes,
          [&](std::span<const uint8_t> bytes, PacketInfo* info) -> Result<bool> {
            SPARSELINK_RETURN_IF_ERROR(internal::DecodeGradientToDenseTrustedMask(
                bytes, sender_mask, gi, &kept_gradient,
                {.parallel_min_entries = options->parallel_min_entries}, info));
            return true;
          })
      .value();
  clock.Lap(&time.backward_link_decode);

  UpdateSenderMap(num_rows);
  clock.Lap(&time.map_update);
  report.time.Add(time);
  report.route_seconds += clock.Total();
  return grad_input.reshape(grad_output.sizes()).to(grad_output.dtype());
}

// Receiver, every `summary_every` steps: its own view of its inputs (Taylor on what it
// received, with its dense gradient) and the summary for the sender. The receiver's map only
// matters at negotiations, so it is sampled at the summary cadence rather than every step;
// a step of several micro-batches samples its first, so a step sends one summary.
void RoutedBoundaries::State::SendSummary(const float* g_data, size_t num_rows,
                                          const PacketLabel& label) {
  // A summary step reads every entry of the gradient (other steps read the kept ones, which
  // the gradient encoder checks): a non-finite one is named where it is, rather than as the
  // summary unit it would spoil, by the map's update (which checks as it sums) or, with the map
  // frozen, when the column sums below come out non-finite.
  if (!receiver_map->frozen()) {
    ThrowIfError(receiver_map->Update({received.data_ptr<float>(), num_rows, cols},
                                      {g_data, num_rows, cols}),
                 boundary);
  }
  std::vector<float> mean_abs(cols, 0.0f);
  SumOverRowBlocks(num_rows, mean_abs, [&](size_t first, size_t end, float* partial) {
    for (size_t r = first; r < end; ++r) simd::AddAbs(g_data + r * cols, cols, partial);
  });
  if (!simd::AllFinite(mean_abs.data(), cols)) {
    const float* bad =
        std::find_if(g_data, g_data + num_rows * cols, [](float v) { return !std::isfinite(v); });
    if (bad != g_data + num_rows * cols) {  // else finite |g| summed past FLT_MAX
      const auto i = static_cast<size_t>(bad - g_data);
      ThrowIfError(
          FieldError(ErrorCode::kNonFinite,
                     "gradient[" + std::to_string(i / cols) + "][" + std::to_string(i % cols) + "]",
                     *bad, "must be finite"),
          boundary);
    }
  }
  for (float& v : mean_abs) v /= static_cast<float>(num_rows);
  ThrowIfError(EncodeSummary(mean_abs, label, &packet, kSummaryCodec), boundary);
  // A summary has no dense counterpart: it adds wire bytes and no dense bytes.
  summary = Deliver(*backward_link, "summary", label, 0, true, &report.backward_wire_bytes,
                    [](std::span<const uint8_t> bytes, PacketInfo* info) {
                      return DecodeSummary(bytes, {}, info);
                    })
                .value();
}

void RoutedBoundaries::State::UpdateSenderMap(size_t num_rows) {
  // Sender: score what it can see. The gradient of entry (r, j) is known where it was kept
  // (it just came back); where it was dropped the receiver's mean |g_j| stands in for it.
  //   taylor:     mean_r |a_rj| * |g_rj|        activation: mean_r |a_rj|
  //   gradient:   mean_r |g_rj|                 weighted: alpha*norm(activation) +
  //   (1-alpha)*norm(gradient)
  // With the gradient mode the routing score |a_rj| * (eps + S_j) is the expected Taylor
  // importance of the entry; with the Taylor mode it counts the activation twice.
  if (map->frozen()) return;
  const float inv_rows = 1.0f / static_cast<float>(num_rows);
  // Every entry first with the summary standing in for its gradient, which has a closed
  // form: mean_r |a_rj| * s_j = act_j * s_j. Only the column sums of |a| touch every entry;
  // RouteForward took them, unless the map was frozen then (or this is a second backward of
  // one forward, which finds them in place).
  // (summary holds zeros until the first one arrives.)
  if (act_sums_forward != forwards) {
    ThrowIfError(ColumnAbsSums({activation.data_ptr<float>(), num_rows, cols}, &act_sums,
                               options->parallel_min_entries),
                 boundary);
    act_sums_forward = forwards;
  }
  for (size_t j = 0; j < cols; ++j) {
    act_scores[j] = act_sums[j] * inv_rows;
    grad_scores[j] = summary[j];
    taylor_scores[j] = act_scores[j] * summary[j];
  }
  // Kept entries: replace the summary's stand-in by the real gradient, in the scores the mode
  // reads (activation reads none). Both sides' kept values run in mask order: a from the
  // sender's routed copy, g as it just came back.
  const SensitivityMode mode = options->sensitivity_mode;
  const bool taylor = mode == SensitivityMode::kTaylor;
  const bool gradient = mode == SensitivityMode::kGradient || mode == SensitivityMode::kWeighted;
  const float* s = summary.data();
  const bool unit = sender_mask.granularity == Granularity::kUnit;
  const auto add_kept = [&](size_t first, size_t end, float* partial) {
    for (size_t r = first; r < end; ++r) {
      const std::span<const uint32_t> ids = sender_mask.RowIndices(r);
      const size_t i = unit ? r * ids.size() : sender_mask.row_offsets[r];
      const float* kept_g = kept_gradient.data() + i;
      const float* kept_a = sender_mask.values.data() + i;
      // Distinct ids within a row: one vector scatter-add (docs/perf-notes.md#addkeptcorrection).
      simd::AddKeptCorrection(ids.data(), taylor ? kept_a : nullptr, kept_g, s, ids.size(),
                              inv_rows, partial);
    }
  };
  if (taylor) SumOverRowBlocks(num_rows, taylor_scores, add_kept);
  if (gradient) SumOverRowBlocks(num_rows, grad_scores, add_kept);
  const std::vector<float>* source = &taylor_scores;
  if (options->sensitivity_mode == SensitivityMode::kActivation) source = &act_scores;
  if (options->sensitivity_mode == SensitivityMode::kGradient) source = &grad_scores;
  if (options->sensitivity_mode == SensitivityMode::kWeighted) {
    NormalizeByMax(act_scores);
    for (float& v : grad_scores) v = std::max(v, 0.0f);
    NormalizeByMax(grad_scores);
    const auto alpha = static_cast<float>(options->sensitivity_alpha);
    for (size_t j = 0; j < cols; ++j)
      taylor_scores[j] = alpha * act_scores[j] + (1 - alpha) * grad_scores[j];
  }
  // Per unit: the sum over its block of neurons (one neuron each, at block 1).
  for (size_t u = 0, j = 0; u < unit_scores.size(); ++u) {
    float sum = 0.0f;
    for (const size_t end = std::min(j + block, cols); j < end; ++j)
      sum += std::max((*source)[j], 0.0f);
    unit_scores[u] = sum;
  }
  ThrowIfError(map->UpdateUnitScores(unit_scores), boundary);
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
        "sparselink boundary ", state->boundary,
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
// it. Conv feature maps [N, C, H, W] get per-channel resolution (block = H*W) unless
// options.per_channel_maps is off.
static Result<std::unique_ptr<RoutedBoundaries::State>> MakeState(
    size_t boundary, const torch::Tensor& activation, const RoutedBoundaryOptions& options) {
  auto state = std::make_unique<RoutedBoundaries::State>();
  state->boundary = boundary;
  state->options = &options;
  state->cols = static_cast<size_t>(activation.numel() / activation.size(0));
  state->block = activation.dim() == 4 && options.per_channel_maps
                     ? static_cast<size_t>(activation.size(2) * activation.size(3))
                     : 1;
  const SensitivityOptions map_options{.num_neurons = state->cols,
                                       .block = state->block,
                                       .mode = options.sensitivity_mode,
                                       .alpha = options.sensitivity_alpha,
                                       .ema_decay = options.ema_decay,
                                       .parallel_min_entries = options.parallel_min_entries};
  SPARSELINK_ASSIGN_OR_RETURN(SensitivityMap map, SensitivityMap::Create(map_options));
  SPARSELINK_ASSIGN_OR_RETURN(SensitivityMap receiver_map, SensitivityMap::Create(map_options));
  state->map.emplace(std::move(map));
  state->receiver_map.emplace(std::move(receiver_map));
  const bool structured = options.policy == RoutingPolicy::kStructured;
  state->contract = Contract{.boundary = static_cast<uint32_t>(boundary),
                             .keep = options.keep.value_or(options.initial_keep),
                             .keep_full = options.keep_full,
                             .full_codec = options.full_codec,
                             .lossy_codec = options.lossy_codec,
                             .granularity = structured ? Granularity::kUnit : Granularity::kElement,
                             .bound_by = options.keep ? BoundBy::kFixed : BoundBy::kSenderCoverage};
  SPARSELINK_ASSIGN_OR_RETURN(Negotiator negotiator,
                              Negotiator::Create(options.negotiator, state->contract));
  state->negotiator.emplace(std::move(negotiator));
  Scoring score = Scoring::kSensitivity;
  if (options.policy == RoutingPolicy::kRandom) score = Scoring::kRandom;
  if (options.policy == RoutingPolicy::kMagnitude) score = Scoring::kMagnitude;
  SPARSELINK_ASSIGN_OR_RETURN(
      Router router, Router::Create({.scoring = score,
                                     .eps = options.eps,
                                     .seed = options.seed + boundary,
                                     .parallel_min_entries = options.parallel_min_entries}));
  state->router.emplace(std::move(router));
  // Each link draws its faults from its own generator, seeded per boundary and direction.
  LinkOptions link_options{.model = options.link};
  const uint64_t fault_seed =
      options.link.fault_seed * 1000003 + options.seed * 1000 + 2 * boundary;
  link_options.model.fault_seed = fault_seed;
  SPARSELINK_ASSIGN_OR_RETURN(state->forward_link, MakeLink(link_options));
  link_options.model.fault_seed = fault_seed + 1;
  SPARSELINK_ASSIGN_OR_RETURN(state->backward_link, MakeLink(link_options));
  state->summary.assign(state->cols, 0.0f);
  {
    std::vector<uint8_t> probe;
    SPARSELINK_RETURN_IF_ERROR(EncodeSummary(
        state->summary, {.boundary = static_cast<uint32_t>(boundary)}, &probe, kSummaryCodec));
    state->summary_packet_bytes = static_cast<double>(probe.size());
  }
  state->act_sums.assign(state->cols, 0.0f);
  state->act_scores.assign(state->cols, 0.0f);
  state->grad_scores.assign(state->cols, 0.0f);
  state->taylor_scores.assign(state->cols, 0.0f);
  state->unit_scores.assign(state->map->num_units(), 0.0f);
  state->report.boundary = boundary;
  state->report.cols = state->cols;
  state->report.block = state->block;
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
    auto state = MakeState(boundary, activation, options_);
    ThrowIfError(state.status(), boundary);
    states_[boundary] = std::move(state).value();
    if (frozen_) {  // SetFrozen came before this boundary's first forward
      states_[boundary]->map->Freeze();
      states_[boundary]->receiver_map->Freeze();
    }
  }
  State& state = *states_[boundary];
  const auto cols = static_cast<size_t>(activation.numel() / activation.size(0));
  TORCH_CHECK(cols == state.cols, "sparselink boundary ", boundary, ": activation has ", cols,
              " values per sample, the boundary was built for ", state.cols);

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
    state->step = step + 1;
    state->step_rows = 0;
    state->step_packets = 0;
  }
  if (options_.keep || options_.policy == RoutingPolicy::kDense) return;
  if ((step + 1) % options_.negotiate_every != 0) return;

  // One shared budget: the allocator splits it by sensitivity per byte, and each share becomes
  // that boundary's link cap in its negotiation. Both must price bytes the same way, so each
  // boundary's cost is read off the negotiator's own model, EstimateStepBytes, as a line
  // (FitStepCost): fixed (headers, section table, checksums, per-row scales) + per_entry *
  // kept entries. The allocator splits what is left after the fixed parts; each cap is the
  // share plus the fixed part.
  if (options_.link_budget_bytes_per_step > 0) {
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
      const StepCostLine line = FitStepCost(state->contract, packets, packet_rows, state->cols,
                                            floor_keep, options_.gradient_codec, state->block);
      // The receiver's summary crosses on one step in summary_every, under a contract that
      // holds for many steps: every step's cap keeps room for it.
      const double fixed = line.fixed + state->summary_packet_bytes;
      fixed_bytes.push_back(fixed);
      fixed_total += fixed;
      demands.push_back({.sensitivity = state->map->values(),
                         .rows = packets * packet_rows,
                         .cols = state->cols,
                         .bytes_per_entry = line.per_entry,
                         .keep_min = floor_keep});
    }
    if (!demands.empty()) {
      auto allocation =
          AllocateBudget(demands, std::max(0.0, options_.link_budget_bytes_per_step - fixed_total));
      TORCH_CHECK(allocation.ok(),
                  "sparselink: shared link budget: ", allocation.status().ToString());
      size_t i = 0;
      for (auto& state : states_) {
        if (!state || state->max_rows == 0) continue;
        state->link_cap_bytes = allocation->bytes[i] + fixed_bytes[i];
        ++i;
      }
    }
  }
  for (auto& state : states_) {
    if (!state || state->max_rows == 0) continue;  // no training step has crossed it yet
    // The negotiator prices one packet pair; a step of M micro-batches gets 1/M of the cap,
    // less the summary's room, for each of its M packets of the step's rows / M.
    auto record = state->negotiator->Negotiate(
        {.map = &*state->map,
         .link_bytes_per_step = std::max(0.0, state->link_cap_bytes - state->summary_packet_bytes) /
                                static_cast<double>(state->packets_per_step),
         .gradient_codec = options_.gradient_codec,
         .link_budget_reason = options_.link_budget_bytes_per_step > 0
                                   ? BoundBy::kSharedBudget
                                   : BoundBy::kSenderLinkBudget},
        {.map = &*state->receiver_map}, state->PacketRows(), state->cols,
        static_cast<uint64_t>(step + 1));
    ThrowIfError(record.status(), state->boundary);
    state->contract = state->negotiator->contract();
  }
}

void RoutedBoundaries::SetFrozen(bool frozen) {
  frozen_ = frozen;
  for (auto& state : states_) {
    if (!state) continue;
    if (frozen) {
      state->map->Freeze();
      state->receiver_map->Freeze();
    } else {
      state->map->Unfreeze();
      state->receiver_map->Unfreeze();
    }
  }
}

std::vector<BoundaryReport> RoutedBoundaries::Report() const {
  std::vector<BoundaryReport> reports;
  for (const auto& state : states_) {
    if (!state) continue;
    BoundaryReport r = state->report;
    r.history = state->negotiator->history();
    r.contract = state->contract;
    r.sensitivity.assign(state->map->values().begin(), state->map->values().end());
    r.receiver_sensitivity.assign(state->receiver_map->values().begin(),
                                  state->receiver_map->values().end());
    reports.push_back(std::move(r));
  }
  return reports;
}

}  // namespace sparselink::torch_adapter
