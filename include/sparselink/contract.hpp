// Sparsity contracts and their negotiation.
//
// A Contract is the agreement for one boundary: what share of the entries cross (keep), how
// many of those at full precision (keep_full), with which codecs, at which granularity, under
// which version, and which constraint decided it (bound_by). Fractions inside, percent for
// people: KeepFromPercent / Contract::keep_percent convert at the edge.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sparselink/sensitivity.hpp"
#include "sparselink/status.hpp"
#include "sparselink/types.hpp"

namespace sparselink {

// The one catalogue of reasons a keep value is what it is. Every proposal, counter, cap and
// refusal carries one, so "why is this boundary at 7%?" always has a printable answer.
enum class BoundBy : uint8_t {
  kFixed = 0,         // set by the user, never negotiated
  kSenderCoverage,    // sender's sensitivity coverage of tau_send
  kReceiverCoverage,  // receiver's sensitivity coverage of tau_recv (raised the sender's)
  kFloor,             // options.keep_min
  kCeiling,           // options.keep_max
  kSenderLinkBudget,  // sender's link bytes per step
  kReceiverCompute,   // receiver's compute budget (entries per step)
  kReceiverBuffer,    // receiver's buffer bytes
  kHysteresis,        // change smaller than options.hysteresis: previous contract kept
  kSharedBudget,      // BudgetAllocator's share of a link budget shared by boundaries
  kBudgetBelowFloor,  // refusal: the caps leave less than keep_min; the contract falls to it
};
inline constexpr size_t kNumBoundBy = 11;
inline constexpr std::array<NameRow<BoundBy>, kNumBoundBy> kBoundByNames = {{
    {BoundBy::kFixed, "fixed"},
    {BoundBy::kSenderCoverage, "sender_coverage"},
    {BoundBy::kReceiverCoverage, "receiver_coverage"},
    {BoundBy::kFloor, "floor"},
    {BoundBy::kCeiling, "ceiling"},
    {BoundBy::kSenderLinkBudget, "sender_link_budget"},
    {BoundBy::kReceiverCompute, "receiver_compute"},
    {BoundBy::kReceiverBuffer, "receiver_buffer"},
    {BoundBy::kHysteresis, "hysteresis"},
    {BoundBy::kSharedBudget, "shared_budget"},
    {BoundBy::kBudgetBelowFloor, "budget_below_floor"},
}};
static_assert(RowsInOrder(kBoundByNames));
inline constexpr std::string_view BoundByName(BoundBy b) { return EnumName(kBoundByNames, b); }

// Converts a user-facing percentage in (0, 100] to a fraction. Error names `field`.
Result<double> KeepFromPercent(double percent, std::string_view field = "keep_percent");

struct Contract {
  uint32_t boundary = 0;
  uint32_t version = 0;    // bumps by one on every change; packets carry it
  double keep = 1.0;       // share of entries that cross, in (0, 1]
  double keep_full = 1.0;  // of the kept, share at full precision, in [0, 1]
  ValueCodec full_codec = ValueCodec::kFp32;
  ValueCodec lossy_codec = ValueCodec::kInt8;
  RestCodec rest = RestCodec::kDrop;
  Granularity granularity = Granularity::kElement;
  BoundBy bound_by = BoundBy::kFixed;

  double keep_percent() const { return keep * 100.0; }
  // Every field in range; errors name the field ("contract.keep = 0: must be in (0, 1]").
  Status Validate() const;
  // "b0 v3 keep=7.50% full=50% fp32/int8 element drop (sender_coverage)".
  std::string ToString() const;
};

// Entries kept out of n under `keep`: floor(n * keep), computed so that binary rounding of
// keep never loses one (0.3 * 10 is 3, not 2). The seed's `int(n * contract / 100)`.
size_t KeptCount(size_t n, double keep);
// Of `kept` entries, how many go at full precision: floor(kept * keep_full), same care.
size_t FullCount(size_t kept, double keep_full);

// Wire bytes one step of `rows x cols` activations costs under `contract` (forward packet,
// with the smaller of the bitmap and delta-varint index, header and checksum included; the
// subset bitmap, which depends on the columns the rows share, is only picked when smaller, so
// for it this is an upper bound), plus the mask-routed gradient
// in `gradient_codec` when `with_gradient`. A model, not a measurement: value, tier and
// bitmap bytes are exact; delta-varint indices are estimated from the expected LEB128 size
// of a gap between randomly placed columns, so for rows that keep scattered columns the
// total is within a few percent of the codec's output (tests check it); regularly spaced
// gaps just above 127 cost more than that model says. With unit granularity the router keeps
// KeptCount(units, keep) whole units of `block` columns (units = ceil(cols / block)); they are
// priced as full units, an upper bound when the partial last unit is among them. Does not
// allocate.
double EstimateStepBytes(const Contract& contract, size_t rows, size_t cols, bool with_gradient,
                         ValueCodec gradient_codec = ValueCodec::kFp32, size_t block = 1);

// One boundary's wire bytes per step as a line in its kept entries, for splitting a shared
// budget with AllocateBudget: bytes ~= fixed + per_entry * entries. Fitted to
// EstimateStepBytes (gradient included, in `gradient_codec`) at keep_min and min(1,
// 2 * keep_min), or one unit (column) more where that keeps no more; per_entry > 0 always,
// for a step of `packets` packet pairs of `packet_rows` rows each (every packet pays its own
// header, section table, checksum and per-row scales). `entries` counts kept entries over all
// packet_rows * packets rows. A boundary whose share of a budget is B then gets a link cap of
// B + fixed, and its negotiator (which prices one packet pair) B / packets + fixed / packets.
struct StepCostLine {
  double fixed = 0;
  double per_entry = 0;
};
StepCostLine FitStepCost(const Contract& contract, size_t packets, size_t packet_rows, size_t cols,
                         double keep_min, ValueCodec gradient_codec, size_t block = 1);

struct NegotiatorOptions {
  double tau_send = 0.95;     // sender keeps the units covering this share of its sensitivity
  double tau_recv = 0.95;     // receiver asks for the units covering this share of its own
  double keep_min = 0.01;     // floor, in (0, 1]
  double keep_max = 1.0;      // ceiling, in [keep_min, 1]
  double hysteresis = 0.005;  // |new - old| keep below this keeps the old contract
};

// What the sender brings to a negotiation.
struct SenderView {
  const SensitivityMap* map = nullptr;  // required; its values() are used
  // Bytes per step the link gives this boundary, both directions (activation + gradient).
  double link_bytes_per_step = std::numeric_limits<double>::infinity();
  ValueCodec gradient_codec = ValueCodec::kFp32;  // how the gradient comes back (for the cost)
  // The reason recorded when the link budget caps the keep: kSenderLinkBudget for the
  // sender's own budget, kSharedBudget when it is this boundary's share of a shared one.
  BoundBy link_budget_reason = BoundBy::kSenderLinkBudget;
};

// What the receiver brings. Its map is its own view of the importance of its inputs (e.g.
// weight column norms times its own output sensitivity); null means "no opinion".
struct ReceiverView {
  // Any size: only the share of its units that covers tau_recv counts, so a coarse map of
  // U units asks for keeps in steps of 1/U.
  const SensitivityMap* map = nullptr;
  double compute_entries_per_step = std::numeric_limits<double>::infinity();
  double buffer_bytes = std::numeric_limits<double>::infinity();
};

enum class NegotiationState : uint8_t { kProposed = 0, kCountered, kAgreed, kRefused };
inline constexpr size_t kNumNegotiationStates = 4;
inline constexpr std::array<NameRow<NegotiationState>, kNumNegotiationStates>
    kNegotiationStateNames = {{
        {NegotiationState::kProposed, "proposed"},
        {NegotiationState::kCountered, "countered"},
        {NegotiationState::kAgreed, "agreed"},
        {NegotiationState::kRefused, "refused"},
    }};
static_assert(RowsInOrder(kNegotiationStateNames));
inline constexpr std::string_view NegotiationStateName(NegotiationState s) {
  return EnumName(kNegotiationStateNames, s);
}

// One negotiation, as it went: each state it passed through, in order, with the keep and
// reason at that point, and the contract in force afterwards.
struct NegotiationRecord {
  struct Stage {
    NegotiationState state;
    double keep;
    BoundBy reason;
  };
  uint64_t step = 0;
  std::vector<Stage> stages;  // Proposed, Countered, then Agreed or Refused
  Contract contract;          // in force after this negotiation
  bool changed = false;       // contract.version moved
};

// The sender's opening move (the Proposed stage): its coverage keep, lowered to its link cap.
// It crosses to the receiver as a negotiation packet (codec.hpp, EncodeNegotiation).
struct Proposal {
  double keep = 0;
  BoundBy reason = BoundBy::kSenderCoverage;  // kSenderCoverage or the link's reason
  double link_cap = 1;                        // the largest keep the sender's link allows
  BoundBy link_reason = BoundBy::kSenderLinkBudget;
  uint64_t rows = 0;  // rows of one step's packet, as the sender prices it
  uint64_t cols = 0;
};

// The receiver's answer (the Countered stage): the proposal raised to the receiver's own
// coverage, then lowered to the bound, the least of the sender's link cap and the receiver's
// compute and buffer caps (ties: link, then compute, then buffer).
struct Counter {
  double keep = 0;
  BoundBy reason = BoundBy::kSenderCoverage;
  double bound = 1;
  BoundBy bound_reason = BoundBy::kSenderLinkBudget;
};

// The receiver's side of a negotiation: it has no Negotiator, only the options both sides
// share, the contract in force and the block of its inputs' map. Errors: a proposal out of
// range (kInvalidArgument naming the field: a peer's message is untrusted), a NaN or negative
// budget. O(log cols) cost-model evaluations plus the Coverage sort.
Result<Counter> CounterProposal(const Proposal& proposal, const ReceiverView& receiver,
                                const NegotiatorOptions& options, const Contract& current,
                                size_t block);

// Negotiates the contract of one boundary. Not thread-safe.
class Negotiator {
 public:
  // `initial` gives the codecs, granularity and starting keep; its version is kept.
  static Result<Negotiator> Create(const NegotiatorOptions& options, const Contract& initial);
  // Continues a negotiator saved earlier (a resumed run, sparselink/torch/checkpoint.hpp):
  // `current` is the contract in force and `history` the negotiations so far, as contract()
  // and history() gave them; the next negotiation goes on from there. Errors as Create's.
  static Result<Negotiator> Resume(const NegotiatorOptions& options, const Contract& current,
                                   std::vector<NegotiationRecord> history);

  // Runs Proposed -> Countered -> Agreed/Refused once, through this one function:
  //  1. proposal: keep_s = Coverage(sender map, tau_send), capped by the link budget
  //     (largest keep whose EstimateStepBytes fits), reason kSenderCoverage or kSenderLinkBudget;
  //  2. counter: keep = max(keep_s, Coverage(receiver map, tau_recv)), then capped by the
  //     receiver's compute (entries) and buffer (bytes) budgets;
  //  3. agreement: clamp to [keep_min, keep_max]; refused when the caps are below keep_min,
  //     and the contract falls to keep_min if it was above (reason kBudgetBelowFloor; an old
  //     keep at or below keep_min stays); hysteresis keeps the old contract
  //     when the change is below options.hysteresis. A change bumps the version.
  // `rows` and `cols` are the shape of one step's activation. Appends to history().
  // A refusal is an outcome, not an error: the record's last stage is kRefused. Errors (the
  // negotiator is left untouched): null sender map, rows or cols 0, sender map num_neurons !=
  // cols, a NaN or negative budget (+inf means no limit). Allocates the record; O(log cols)
  // cost-model evaluations plus the Coverage sorts.
  Result<NegotiationRecord> Negotiate(const SenderView& sender, const ReceiverView& receiver,
                                      size_t rows, size_t cols, uint64_t step);

  // The same negotiation in the three moves two processes make (Negotiate is exactly
  // Settle(Propose, CounterProposal), so both give the same contracts):
  //  - Propose, on the sender: step 1. Errors as Negotiate's for the sender's arguments; the
  //    negotiator is not changed.
  //  - CounterProposal (a free function), on the receiver: step 2.
  //  - Settle, on the sender: step 3 with the counter that came back; appends to history().
  Result<Proposal> Propose(const SenderView& sender, size_t rows, size_t cols) const;
  NegotiationRecord Settle(const Proposal& proposal, const Counter& counter, uint64_t step);

  const Contract& contract() const { return contract_; }
  const std::vector<NegotiationRecord>& history() const { return history_; }
  const NegotiatorOptions& options() const { return options_; }

 private:
  Negotiator(const NegotiatorOptions& options, const Contract& initial)
      : options_(options), contract_(initial) {}
  NegotiatorOptions options_;
  Contract contract_;
  std::vector<NegotiationRecord> history_;
};

// Splits one link budget (bytes per step) across several boundaries by the greatest marginal
// sensitivity covered per byte: greedy water-filling over each boundary's coverage curve.
struct BoundaryDemand {
  std::span<const float> sensitivity;  // the boundary's map values (one per unit)
  size_t rows = 0;                     // rows per step
  size_t cols = 0;                     // neurons (cols) of the activation
  double bytes_per_entry = 0;          // wire bytes of one kept entry (values + index share)
  double keep_min = 0.01;              // floor for this boundary
};

struct Allocation {
  std::vector<double> keep;       // per boundary, in [keep_min, 1]
  std::vector<double> bytes;      // per boundary, modelled bytes per step at that keep
  std::vector<BoundBy> bound_by;  // kSharedBudget, kFloor (budget below the floors), kCeiling
  double total_bytes = 0;
};

// Each boundary first gets its floor; the rest of the budget goes unit by unit to the unit
// with the highest (normalized sensitivity share) / (bytes of that unit), ties to the lower
// boundary index then the lower unit index; units are taken up to the first that does not
// fit, so more budget never lowers a keep. Zero-sensitivity units only get what is left after
// every positive unit, round-robin over boundaries. A unit's bytes are rows * (its neurons) *
// bytes_per_entry; the floor is ceil(keep_min * cols) neurons. Budget below the floors: every
// boundary at its floor with kFloor, total_bytes above the budget. Deterministic.
// O(U log U) in the total units U.
// Errors: empty demands, bad sizes, negative or non-finite budget.
Result<Allocation> AllocateBudget(std::span<const BoundaryDemand> demands, double budget_bytes);

// A link budget that follows the link (--link-budget auto): each negotiation period the two
// ends of a boundary report the rate at which its packets crossed, and the boundary may send
// what that rate moves in the target step time. The rate in use changes only when a
// measurement moves away from it by more than `rate_change` (relative), so noise does not
// renegotiate every period; a period with nothing timed keeps it.
struct LinkRateOptions {
  double fill = 0.2;                 // share of the target step time the boundary's bytes may take
  double rate_change = 0.25;         // relative move of the measured rate that changes the budget
  double min_target_seconds = 1e-3;  // a target step time below this counts as this
};

class LinkRateBudget {
 public:
  // Errors: fill outside (0, 1], rate_change outside [0, 10), min_target_seconds <= 0
  // (each named).
  static Result<LinkRateBudget> Create(const LinkRateOptions& options);
  // One period's measured rate in bytes per second; 0, negative or non-finite means nothing
  // was timed. True when the rate in use changed.
  bool Observe(double measured_bytes_per_s);
  // The rate in use: +infinity until the first measurement.
  double rate() const { return rate_; }
  // Bytes per step, both directions of the boundary together (each rank's interface carries
  // one boundary's activations and the other's gradients each way, so the two directions of
  // one boundary share one direction's rate): rate * fill * target. +infinity before the
  // first measurement; a non-finite or non-positive target counts as min_target_seconds.
  double BytesPerStep(double target_seconds) const;

 private:
  explicit LinkRateBudget(const LinkRateOptions& options) : options_(options) {}
  LinkRateOptions options_;
  double rate_ = std::numeric_limits<double>::infinity();
};

}  // namespace sparselink
