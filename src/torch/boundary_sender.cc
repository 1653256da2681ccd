// The sender end of a boundary (boundary_ends.hpp): routing into activation packets, the
// gradient and the summaries back into dL/dy and the sender's map, and the sender's moves of a
// negotiation.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>
#include <string>

#include "codec/own_mask.hpp"
#include "simd/kernels.hpp"
#include "torch/boundary_ends.hpp"

namespace sparselink::torch_adapter::internal {

PacketLabel LabelOf(size_t boundary, const Contract& contract, int64_t step, uint32_t micro) {
  return {.boundary = static_cast<uint32_t>(boundary),
          .contract_version = contract.version,
          .step = static_cast<uint64_t>(step),
          .micro_batch = micro};
}

Status CheckLabel(const PacketInfo& info, const PacketLabel& label) {
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

Result<SensitivityMap> MakeBoundaryMap(const BoundarySpec& spec) {
  const RoutedBoundaryOptions& o = *spec.options;
  return SensitivityMap::Create({.num_neurons = spec.cols,
                                 .block = spec.block,
                                 .mode = o.sensitivity_mode,
                                 .alpha = o.sensitivity_alpha,
                                 .ema_decay = o.ema_decay,
                                 .parallel_min_entries = o.parallel_min_entries});
}

Contract InitialContract(const BoundarySpec& spec) {
  const RoutedBoundaryOptions& o = *spec.options;
  return Contract{.boundary = static_cast<uint32_t>(spec.boundary),
                  .keep = o.keep.value_or(o.initial_keep),
                  .keep_full = o.keep_full,
                  .full_codec = o.full_codec,
                  .lossy_codec = o.lossy_codec,
                  .granularity = o.policy == RoutingPolicy::kStructured ? Granularity::kUnit
                                                                        : Granularity::kElement,
                  .bound_by = o.keep ? BoundBy::kFixed : BoundBy::kSenderCoverage};
}

Result<std::unique_ptr<BoundarySender>> BoundarySender::Create(const BoundarySpec& spec) {
  const RoutedBoundaryOptions& o = *spec.options;
  auto end = std::unique_ptr<BoundarySender>(new BoundarySender(spec));
  SPARSELINK_ASSIGN_OR_RETURN(SensitivityMap map, MakeBoundaryMap(spec));
  end->map_.emplace(std::move(map));
  end->contract_ = InitialContract(spec);
  SPARSELINK_ASSIGN_OR_RETURN(Negotiator negotiator,
                              Negotiator::Create(o.negotiator, end->contract_));
  end->negotiator_.emplace(std::move(negotiator));
  Scoring scoring = Scoring::kSensitivity;
  if (o.policy == RoutingPolicy::kRandom) scoring = Scoring::kRandom;
  if (o.policy == RoutingPolicy::kMagnitude) scoring = Scoring::kMagnitude;
  SPARSELINK_ASSIGN_OR_RETURN(Router router,
                              Router::Create({.scoring = scoring,
                                              .eps = o.eps,
                                              .seed = o.seed + spec.boundary,
                                              .parallel_min_entries = o.parallel_min_entries}));
  end->router_.emplace(std::move(router));
  end->summary_.assign(spec.cols, 0.0f);
  for (auto* v : {&end->act_scores_, &end->grad_scores_, &end->taylor_scores_}) {
    v->assign(spec.cols, 0.0f);
  }
  end->unit_scores_.assign(end->map_->num_units(), 0.0f);
  return end;
}

Status BoundarySender::EncodeActivation(const torch::Tensor& input, uint32_t micro, bool count) {
  PhaseClock clock;
  const RoutedBoundaryOptions& o = *spec_.options;
  const int64_t rows = input.size(0);
  InFlight* sent = nullptr;
  if (count) {
    sent = &in_flight_[micro];
    sent->sums_taken = false;
    sent->gradient_taken = false;
  }
  torch::Tensor scored = input.detach()
                             .to(torch::kFloat32)
                             .contiguous()
                             .reshape({rows, static_cast<int64_t>(spec_.cols)});
  if (count) sent->activation = scored;
  const ConstMatrix a{scored.data_ptr<float>(), static_cast<size_t>(rows), spec_.cols};
  const bool use_map =
      o.policy == RoutingPolicy::kSensitivity || o.policy == RoutingPolicy::kStructured;
  // The sender's map update needs the column sums of |a|: the router takes them as it reads
  // each row, rather than from memory after the later stages have run.
  const bool take_sums = count && !map_->frozen();
  SPARSELINK_RETURN_IF_ERROR(RouteAndEncode(
      *router_, a, use_map ? &*map_ : nullptr, contract_,
      LabelOf(spec_.boundary, contract_, step, count ? micro : 0),
      {.index_codec = o.index_codec,
       .zstd = o.zstd,
       .zstd_level = o.zstd_level,
       .parallel_min_entries = o.parallel_min_entries},
      count ? &sent->mask : &eval_mask_, &packet_, take_sums ? &sent->act_sums : nullptr));
  if (take_sums) sent->sums_taken = true;
  clock.Lap(&time_.route_encode);
  return Status::Ok();
}

Status BoundarySender::TakeSummary(std::span<const uint8_t> bytes) {
  PacketInfo info;
  SPARSELINK_ASSIGN_OR_RETURN(std::vector<float> summary, DecodeSummary(bytes, {}, &info));
  SPARSELINK_RETURN_IF_ERROR(CheckLabel(info, LabelOf(spec_.boundary, contract_, step, 0)));
  if (summary.size() != spec_.cols) {
    return FieldError(ErrorCode::kShapeMismatch, "summary units", summary.size(),
                      "must equal cols = " + std::to_string(spec_.cols));
  }
  summary_ = std::move(summary);
  return Status::Ok();
}

Status BoundarySender::TakeGradient(std::span<const uint8_t> bytes, uint32_t micro,
                                    torch::Tensor* out) {
  PhaseClock clock;
  auto it = in_flight_.find(micro);
  if (it == in_flight_.end()) {
    return FieldError(ErrorCode::kInvalidArgument, "micro_batch", micro,
                      "no training forward of it is in flight");
  }
  InFlight& sent = it->second;
  const size_t rows = sent.mask.rows;
  *out =
      torch::empty({static_cast<int64_t>(rows), static_cast<int64_t>(spec_.cols)}, torch::kFloat32);
  const MutableMatrix gi{out->data_ptr<float>(), rows, spec_.cols};
  // The mask is this end's own, made by the router for this micro-batch and never touched
  // since: the decoder skips its validation (codec/own_mask.hpp). A packet that decodes but
  // carries another label has been written into `out` by then: the caller's retry rewrites it.
  PacketInfo info;
  SPARSELINK_RETURN_IF_ERROR(sparselink::internal::DecodeGradientToDenseTrustedMask(
      bytes, sent.mask, gi, &kept_gradient_,
      {.parallel_min_entries = spec_.options->parallel_min_entries}, &info));
  SPARSELINK_RETURN_IF_ERROR(CheckLabel(info, LabelOf(spec_.boundary, contract_, step, micro)));
  sent.kept_gradient.swap(kept_gradient_);
  sent.gradient_taken = true;
  clock.Lap(&time_.backward_link_decode);
  return Status::Ok();
}

Status BoundarySender::FinishStep() {
  PhaseClock clock;
  for (auto& [micro, sent] : in_flight_) {
    if (!sent.gradient_taken) {
      return FieldError(ErrorCode::kInvalidArgument, "micro_batch", micro,
                        "its gradient did not come back before the step's end");
    }
    UpdateMap(sent, sent.mask.rows);
  }
  in_flight_.clear();
  clock.Lap(&time_.map_update);
  return Status::Ok();
}

// The sender scores what it can see. The gradient of entry (r, j) is known where it was kept
// (it just came back); where it was dropped the receiver's mean |g_j| stands in for it.
//   taylor:     mean_r |a_rj| * |g_rj|        activation: mean_r |a_rj|
//   gradient:   mean_r |g_rj|                 weighted: alpha*norm(activation) +
//   (1-alpha)*norm(gradient)
// With the gradient mode the routing score |a_rj| * (eps + S_j) is the expected Taylor
// importance of the entry; with the Taylor mode it counts the activation twice.
void BoundarySender::UpdateMap(InFlight& sent, size_t rows) {
  if (map_->frozen()) return;
  const RoutedBoundaryOptions& o = *spec_.options;
  const size_t cols = spec_.cols;
  const float inv_rows = 1.0f / static_cast<float>(rows);
  // Every entry first with the summary standing in for its gradient, which has a closed form:
  // mean_r |a_rj| * s_j = act_j * s_j. Only the column sums of |a| touch every entry: the
  // forward took them, unless the map was frozen then. (summary holds zeros until the first
  // one arrives.)
  if (!sent.sums_taken) {
    ThrowIfError(ColumnAbsSums({sent.activation.data_ptr<float>(), rows, cols}, &sent.act_sums,
                               o.parallel_min_entries),
                 spec_.boundary);
  }
  for (size_t j = 0; j < cols; ++j) {
    act_scores_[j] = sent.act_sums[j] * inv_rows;
    grad_scores_[j] = summary_[j];
    taylor_scores_[j] = act_scores_[j] * summary_[j];
  }
  // Kept entries: replace the summary's stand-in by the real gradient, in the scores the mode
  // reads (activation reads none). Both sides' kept values run in mask order: a from the
  // sender's routed copy, g as it just came back.
  const bool taylor = o.sensitivity_mode == SensitivityMode::kTaylor;
  const bool gradient = o.sensitivity_mode == SensitivityMode::kGradient ||
                        o.sensitivity_mode == SensitivityMode::kWeighted;
  const float* s = summary_.data();
  const RoutedTensor& mask = sent.mask;
  const bool unit = mask.granularity == Granularity::kUnit;
  const auto add_kept = [&](size_t first, size_t end, float* partial) {
    for (size_t r = first; r < end; ++r) {
      const std::span<const uint32_t> ids = mask.RowIndices(r);
      const size_t i = unit ? r * ids.size() : mask.row_offsets[r];
      // Distinct ids within a row: one vector scatter-add (docs/perf-notes.md#addkeptcorrection).
      simd::AddKeptCorrection(ids.data(), taylor ? mask.values.data() + i : nullptr,
                              sent.kept_gradient.data() + i, s, ids.size(), inv_rows, partial);
    }
  };
  if (taylor) sums_.Sum(rows, cols, o.parallel_min_entries, taylor_scores_, add_kept);
  if (gradient) sums_.Sum(rows, cols, o.parallel_min_entries, grad_scores_, add_kept);
  const std::vector<float>* source = &taylor_scores_;
  if (o.sensitivity_mode == SensitivityMode::kActivation) source = &act_scores_;
  if (o.sensitivity_mode == SensitivityMode::kGradient) source = &grad_scores_;
  if (o.sensitivity_mode == SensitivityMode::kWeighted) {
    NormalizeByMax(act_scores_);
    for (float& v : grad_scores_) v = std::max(v, 0.0f);
    NormalizeByMax(grad_scores_);
    const auto alpha = static_cast<float>(o.sensitivity_alpha);
    for (size_t j = 0; j < cols; ++j)
      taylor_scores_[j] = alpha * act_scores_[j] + (1 - alpha) * grad_scores_[j];
  }
  // Per unit: the sum over its block of neurons (one neuron each, at block 1).
  for (size_t u = 0, j = 0; u < unit_scores_.size(); ++u) {
    float sum = 0.0f;
    for (const size_t end = std::min(j + spec_.block, cols); j < end; ++j)
      sum += std::max((*source)[j], 0.0f);
    unit_scores_[u] = sum;
  }
  ThrowIfError(map_->UpdateUnitScores(unit_scores_), spec_.boundary);
}

Status BoundarySender::EncodeProposal(double link_bytes_per_step, BoundBy link_reason,
                                      size_t packet_rows) {
  SPARSELINK_ASSIGN_OR_RETURN(Proposal proposal,
                              negotiator_->Propose({.map = &*map_,
                                                    .link_bytes_per_step = link_bytes_per_step,
                                                    .gradient_codec = spec_.options->gradient_codec,
                                                    .link_budget_reason = link_reason},
                                                   packet_rows, spec_.cols));
  // Under --link-budget auto the measured link decides: a link with room for more than the
  // sender's coverage asks for gets it used (up to keep_max), so that routing gives back to
  // accuracy what a fast link does not need saved. The budget is a share (link_rate.fill) of
  // the step's compute time, so the link still adds at most that share.
  const RoutedBoundaryOptions& o = *spec_.options;
  if (o.link_budget_auto && std::isfinite(link_bytes_per_step) &&
      proposal.keep < proposal.link_cap) {
    proposal.keep = std::min(proposal.link_cap, o.negotiator.keep_max);
    proposal.reason = link_reason;
  }
  SPARSELINK_RETURN_IF_ERROR(
      sparselink::EncodeProposal(proposal, LabelOf(spec_.boundary, contract_, step, 0), &packet_));
  proposal_ = proposal;
  return Status::Ok();
}

Status BoundarySender::Settle(std::span<const uint8_t> bytes) {
  if (!proposal_) return Status(ErrorCode::kInvalidArgument, "settle: no proposal in flight");
  PacketInfo info;
  SPARSELINK_ASSIGN_OR_RETURN(const Counter counter, DecodeCounter(bytes, {}, &info));
  SPARSELINK_RETURN_IF_ERROR(CheckLabel(info, LabelOf(spec_.boundary, contract_, step, 0)));
  const NegotiationRecord record =
      negotiator_->Settle(*proposal_, counter, static_cast<uint64_t>(step));
  proposal_.reset();
  SPARSELINK_RETURN_IF_ERROR(sparselink::EncodeContract(
      record.contract, LabelOf(spec_.boundary, contract_, step, 0), &packet_));
  announced_ = record.contract;
  return Status::Ok();
}

Status BoundarySender::CheckAcknowledgement(std::span<const uint8_t> bytes) {
  if (!announced_) return Status(ErrorCode::kInvalidArgument, "acknowledgement: none expected");
  SPARSELINK_ASSIGN_OR_RETURN(const Contract echoed, DecodeContract(bytes));
  if (echoed.version != announced_->version || echoed.keep != announced_->keep ||
      echoed.bound_by != announced_->bound_by || echoed.granularity != announced_->granularity) {
    return FieldError(ErrorCode::kCorruptPacket, "acknowledged contract", echoed.ToString(),
                      "differs from the one announced, " + announced_->ToString());
  }
  contract_ = *announced_;
  announced_.reset();
  return Status::Ok();
}

}  // namespace sparselink::torch_adapter::internal
