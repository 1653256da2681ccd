// Negotiator: one boundary's contract, renegotiated every K steps.
//
// Words used below:
//   cap    the largest keep a resource allows, on the discrete grid k/cols (k = 0..cols).
//          0 means not even one entry per row fits.
//   bound  min(all caps): no agreed keep may exceed it, whatever the maps want.
//
// One call walks the states forward only, Proposed -> Countered -> Agreed | Refused:
//   Proposed   keep = Coverage(sender map, tau_send) (kSenderCoverage), lowered to the link
//              cap when above it (kSenderLinkBudget).
//   Countered  keep = max(proposal, Coverage(receiver map, tau_recv)) (kReceiverCoverage when
//              the receiver raised it), then lowered to the bound when above it; the reason is
//              the tightest cap (ties: link, then compute, then buffer).
//   Refused    bound < keep_min: no keep meets both the caps and the floor. The stage records
//              the bound, so the report shows how far below the floor the caps were, and the
//              contract falls to the floor (kBudgetBelowFloor, a new version) when it was above
//              it: of the keeps the receiver accepts, the floor is the nearest to the caps. An
//              old contract at or below the floor stays (keeping it whatever it was could hold
//              a keep far above a hard cap indefinitely).
//   Agreed     keep raised to keep_min (kFloor) or lowered to keep_max (kCeiling); then a
//              change of |keep - old| < hysteresis keeps the old contract (kHysteresis), but only
//              when the old keep still lies within [keep_min, min(keep_max, bound)] — a cap is a
//              hard limit and hysteresis never holds a contract above it. Any change of keep
//              bumps the version by one.
//
// The byte caps search k with a binary search on EstimateStepBytes. The cost is
// non-decreasing in k except for dips of a few bytes where the estimated delta-varint gap
// crosses a LEB128 boundary; the search only ever returns a k it has checked to fit, so at
// worst it misses a slightly larger keep, never exceeds the budget.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "sparselink/contract.hpp"

namespace sparselink {

namespace {

Status CheckFraction(std::string_view field, double v, double lo, bool lo_open, double hi) {
  const bool bad = !std::isfinite(v) || v > hi || (lo_open ? v <= lo : v < lo);
  if (!bad) return Status::Ok();
  std::string range = std::string(lo_open ? "(" : "[") + (lo == 0 ? "0" : std::to_string(lo)) +
                      ", " + (hi == 1 ? "1" : std::to_string(hi)) + "]";
  return FieldError(ErrorCode::kInvalidArgument, field, v, "must be in " + range);
}

// A budget may be +inf (no limit) but never NaN or negative.
Status CheckBudget(std::string_view field, double v) {
  if (std::isnan(v) || v < 0) {
    return FieldError(ErrorCode::kInvalidArgument, field, v, "must be >= 0 (inf for no limit)");
  }
  return Status::Ok();
}

// Largest k in [0, cols] with bytes(k / cols) <= budget, as a keep; 0 when k = 1 does not fit.
template <typename Bytes>
double LargestFittingKeep(size_t cols, double budget, Bytes bytes) {
  if (std::isinf(budget)) return 1.0;
  const auto keep_of = [cols](size_t k) {
    return static_cast<double>(k) / static_cast<double>(cols);
  };
  if (bytes(keep_of(cols)) <= budget) return 1.0;
  if (bytes(keep_of(1)) > budget) return 0.0;
  size_t lo = 1, hi = cols;  // bytes(lo) fits, bytes(hi) does not
  while (hi - lo > 1) {
    const size_t mid = lo + (hi - lo) / 2;
    if (bytes(keep_of(mid)) <= budget) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return keep_of(lo);
}

}  // namespace

Result<Negotiator> Negotiator::Create(const NegotiatorOptions& options, const Contract& initial) {
  SPARSELINK_RETURN_IF_ERROR(CheckFraction("negotiator.tau_send", options.tau_send, 0, false, 1));
  SPARSELINK_RETURN_IF_ERROR(CheckFraction("negotiator.tau_recv", options.tau_recv, 0, false, 1));
  SPARSELINK_RETURN_IF_ERROR(CheckFraction("negotiator.keep_min", options.keep_min, 0, true, 1));
  if (!std::isfinite(options.keep_max) || options.keep_max < options.keep_min ||
      options.keep_max > 1.0) {
    return FieldError(ErrorCode::kInvalidArgument, "negotiator.keep_max", options.keep_max,
                      "must be in [keep_min = " + std::to_string(options.keep_min) + ", 1]");
  }
  if (!std::isfinite(options.hysteresis) || options.hysteresis < 0.0 || options.hysteresis >= 1.0) {
    return FieldError(ErrorCode::kInvalidArgument, "negotiator.hysteresis", options.hysteresis,
                      "must be in [0, 1)");
  }
  SPARSELINK_RETURN_IF_ERROR(initial.Validate());
  return Negotiator(options, initial);
}

Result<Negotiator> Negotiator::Resume(const NegotiatorOptions& options, const Contract& current,
                                      std::vector<NegotiationRecord> history) {
  SPARSELINK_ASSIGN_OR_RETURN(Negotiator negotiator, Create(options, current));
  negotiator.history_ = std::move(history);
  return negotiator;
}

Result<Proposal> Negotiator::Propose(const SenderView& sender, size_t rows, size_t cols) const {
  if (sender.map == nullptr) {
    return FieldError(ErrorCode::kInvalidArgument, "sender.map", "null",
                      "the sender must bring its map");
  }
  if (rows == 0) return FieldError(ErrorCode::kInvalidArgument, "rows", rows, "must be > 0");
  if (cols == 0) return FieldError(ErrorCode::kInvalidArgument, "cols", cols, "must be > 0");
  if (sender.map->num_neurons() != cols) {
    return FieldError(ErrorCode::kShapeMismatch, "sender.map.num_neurons",
                      sender.map->num_neurons(), "must equal cols = " + std::to_string(cols));
  }
  SPARSELINK_RETURN_IF_ERROR(CheckBudget("sender.link_bytes_per_step", sender.link_bytes_per_step));
  Contract probe = contract_;
  Proposal proposal{.link_reason = sender.link_budget_reason, .rows = rows, .cols = cols};
  proposal.link_cap = LargestFittingKeep(cols, sender.link_bytes_per_step, [&](double keep) {
    probe.keep = keep;
    return EstimateStepBytes(probe, rows, cols, /*with_gradient=*/true, sender.gradient_codec,
                             sender.map->block());
  });
  proposal.keep = Coverage(sender.map->values(), options_.tau_send);
  proposal.reason = BoundBy::kSenderCoverage;
  if (proposal.keep > proposal.link_cap) {
    proposal.keep = proposal.link_cap;
    proposal.reason = sender.link_budget_reason;
  }
  return proposal;
}

Result<Counter> CounterProposal(const Proposal& proposal, const ReceiverView& receiver,
                                const NegotiatorOptions& options, const Contract& current,
                                size_t block) {
  const size_t rows = proposal.rows;
  const size_t cols = proposal.cols;
  if (rows == 0) return FieldError(ErrorCode::kInvalidArgument, "proposal.rows", 0, "must be > 0");
  if (cols == 0) return FieldError(ErrorCode::kInvalidArgument, "proposal.cols", 0, "must be > 0");
  for (const auto& [field, v] : {std::pair{"proposal.keep", proposal.keep},
                                 std::pair{"proposal.link_cap", proposal.link_cap}}) {
    if (!(v >= 0.0 && v <= 1.0)) {
      return FieldError(ErrorCode::kInvalidArgument, field, v, "must be in [0, 1]");
    }
  }
  SPARSELINK_RETURN_IF_ERROR(
      CheckBudget("receiver.compute_entries_per_step", receiver.compute_entries_per_step));
  SPARSELINK_RETURN_IF_ERROR(CheckBudget("receiver.buffer_bytes", receiver.buffer_bytes));
  // The bound: the least of the sender's link cap and the receiver's compute and buffer caps,
  // the reason of the tightest (ties: link, then compute, then buffer).
  Counter counter{.bound = proposal.link_cap, .bound_reason = proposal.link_reason};
  if (!std::isinf(receiver.compute_entries_per_step)) {
    const double per_row =
        std::floor(receiver.compute_entries_per_step / static_cast<double>(rows));
    const double compute_cap =
        std::min(per_row, static_cast<double>(cols)) / static_cast<double>(cols);
    if (compute_cap < counter.bound)
      counter = {.bound = compute_cap, .bound_reason = BoundBy::kReceiverCompute};
  }
  Contract probe = current;
  const double buffer_cap = LargestFittingKeep(cols, receiver.buffer_bytes, [&](double keep) {
    probe.keep = keep;
    return EstimateStepBytes(probe, rows, cols, /*with_gradient=*/false, ValueCodec::kFp32, block);
  });
  if (buffer_cap < counter.bound)
    counter = {.bound = buffer_cap, .bound_reason = BoundBy::kReceiverBuffer};
  counter.keep = proposal.keep;
  counter.reason = proposal.reason;
  if (receiver.map != nullptr) {
    const double keep_r = Coverage(receiver.map->values(), options.tau_recv);
    if (keep_r > counter.keep) {
      counter.keep = keep_r;
      counter.reason = BoundBy::kReceiverCoverage;
    }
  }
  if (counter.keep > counter.bound) {
    counter.keep = counter.bound;
    counter.reason = counter.bound_reason;
  }
  return counter;
}

NegotiationRecord Negotiator::Settle(const Proposal& proposal, const Counter& counter,
                                     uint64_t step) {
  NegotiationRecord record;
  record.step = step;
  record.stages.push_back({NegotiationState::kProposed, proposal.keep, proposal.reason});
  record.stages.push_back({NegotiationState::kCountered, counter.keep, counter.reason});
  if (counter.bound < options_.keep_min) {
    record.stages.push_back(
        {NegotiationState::kRefused, counter.bound, BoundBy::kBudgetBelowFloor});
    record.changed = contract_.keep > options_.keep_min;
    if (record.changed) {
      contract_.keep = options_.keep_min;
      contract_.bound_by = BoundBy::kBudgetBelowFloor;
      contract_.version += 1;
    }
    record.contract = contract_;
    history_.push_back(record);
    return record;
  }
  double keep = counter.keep;
  BoundBy reason = counter.reason;
  const double upper = std::min(options_.keep_max, counter.bound);
  if (keep < options_.keep_min) {
    keep = options_.keep_min;
    reason = BoundBy::kFloor;
  } else if (keep > options_.keep_max) {
    keep = options_.keep_max;
    reason = BoundBy::kCeiling;
  }
  const double old_keep = contract_.keep;
  const bool old_fits = old_keep >= options_.keep_min && old_keep <= upper;
  const double change = std::fabs(keep - old_keep);
  if (change == 0.0) {
    record.changed = false;
  } else if (change < options_.hysteresis && old_fits) {
    keep = old_keep;
    reason = BoundBy::kHysteresis;
    record.changed = false;
  } else {
    contract_.keep = keep;
    contract_.bound_by = reason;
    contract_.version += 1;
    record.changed = true;
  }
  record.stages.push_back({NegotiationState::kAgreed, keep, reason});
  record.contract = contract_;
  history_.push_back(record);
  return record;
}

Result<NegotiationRecord> Negotiator::Negotiate(const SenderView& sender,
                                                const ReceiverView& receiver, size_t rows,
                                                size_t cols, uint64_t step) {
  SPARSELINK_ASSIGN_OR_RETURN(const Proposal proposal, Propose(sender, rows, cols));
  SPARSELINK_ASSIGN_OR_RETURN(
      const Counter counter,
      CounterProposal(proposal, receiver, options_, contract_, sender.map->block()));
  return Settle(proposal, counter, step);
}

}  // namespace sparselink
