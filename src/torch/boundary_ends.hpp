// The two ends of a routed boundary, each of which only ever talks to the other through links:
// the sender end on the stage before the boundary (it routes, sends the activation, takes the
// gradient and the receiver's summaries back, keeps the sender's map and leads negotiations),
// and the receiver end on the stage after it (it decodes the activation into the next stage's
// input, sends the gradient and the summaries, keeps the receiver's map and answers
// negotiations). In one process (RoutedBoundaries) both ends run in the trainer's thread over
// in-process links; across processes (the pipeline runner) each lives on its own rank over a
// transport's links. The same code either way, so both give the same contracts, bytes and
// maps. Private to the torch adapter.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "sparselink/codec.hpp"
#include "sparselink/contract.hpp"
#include "sparselink/link.hpp"
#include "sparselink/routing.hpp"
#include "sparselink/sensitivity.hpp"
#include "sparselink/torch/routed_boundary.hpp"

namespace sparselink::torch_adapter::internal {

// Summaries are mean |g| per neuron, mostly below fp16's smallest normal (6.1e-5) in the
// default MLP run: bf16 keeps them at 8 significant bits (docs/wire-format.md).
inline constexpr ValueCodec kSummaryCodec = ValueCodec::kBf16;

// Exceptions only at the edge: a core error inside autograd becomes one c10::Error line.
inline void ThrowIfError(const Status& s, size_t boundary) {
  TORCH_CHECK(s.ok(), "sparselink boundary ", boundary, ": ", s.ToString());
}

// Splits a stretch of wall time into phases: each Lap adds the time since the previous one (or
// since construction) to the phase it names.
class PhaseClock {
 public:
  void Lap(double* phase) {
    const auto now = std::chrono::steady_clock::now();
    *phase += std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }
  double Total() const { return std::chrono::duration<double>(last_ - start_).count(); }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_ = start_;
};

class StateWriter;  // state_bytes.hpp
class StateReader;

// What both ends of a boundary are built from.
struct BoundarySpec {
  size_t boundary = 0;
  size_t cols = 0;   // values per sample
  size_t block = 1;  // neurons per sensitivity unit
  const RoutedBoundaryOptions* options = nullptr;
};

// The label of a packet of this boundary at `step`, micro-batch `micro`.
PacketLabel LabelOf(size_t boundary, const Contract& contract, int64_t step, uint32_t micro);

// A decoded packet must also carry the label expected: a stray packet of another boundary,
// step or micro-batch (a late duplicate, with a transport that can delay) is refused like a
// corrupt one.
Status CheckLabel(const PacketInfo& info, const PacketLabel& label);

// Sums over rows in fixed blocks of kRowBlock rows, each into a partial of its own, the
// partials added in block order: on the OpenMP threads each block reads the rows its thread
// decoded (still in that core's cache), and the sums are the same for any thread count.
// (Threads taking column ranges of every row instead read half their rows from the other
// core, and lost to one thread: docs/perf-notes.md#krowblock.)
class RowBlockSums {
 public:
  static constexpr size_t kRowBlock = 64;
  // Runs add(first_row, end_row, partial) for each block of `rows` (partial zeroed, cols
  // long), then adds the partials into `sums` in block order.
  template <typename AddRows>
  void Sum(size_t rows, size_t cols, size_t parallel_min_entries, std::vector<float>& sums,
           const AddRows& add) {
    const size_t blocks = (rows + kRowBlock - 1) / kRowBlock;
    partials_.resize(blocks * cols);
    float* p = partials_.data();
#pragma omp parallel for schedule(static) if (rows * cols >= parallel_min_entries)
    for (size_t b = 0; b < blocks; ++b) {
      std::fill(p + b * cols, p + (b + 1) * cols, 0.0f);
      add(b * kRowBlock, std::min(rows, (b + 1) * kRowBlock), p + b * cols);
    }
    for (size_t b = 0; b < blocks; ++b) {
      for (size_t j = 0; j < cols; ++j) sums[j] += p[b * cols + j];
    }
  }

 private:
  std::vector<float> partials_;  // row blocks x cols
};

// The ends make and take packets; moving them (a link, retries, counting the bytes) is the
// caller's. Each call that takes a packet returns the packet's own error (corrupt, another
// label) for the caller to re-request or give up, and leaves the end as it was. The times of
// the phases an end does itself go to its time() (BoundaryTime).

// The sender end.
class BoundarySender {
 public:
  static Result<std::unique_ptr<BoundarySender>> Create(const BoundarySpec& spec);

  // Routes `input` ([N, ...], cols values per sample) under the contract into the activation
  // packet (packet()). A counted (training) forward of micro-batch `micro` keeps its mask,
  // activation and column sums for that micro-batch's backward; an uncounted one (evaluation)
  // keeps nothing. Errors: the router's and the codec's (bad input, non-finite values).
  Status EncodeActivation(const torch::Tensor& input, uint32_t micro, bool count);
  // The receiver's summary of this step (it comes before micro-batch 0's gradient on a summary
  // step): kept for the map updates.
  Status TakeSummary(std::span<const uint8_t> bytes);
  // Micro-batch `micro`'s gradient packet, decoded into `out` (rows x cols fp32, the sent
  // activation's rows); its kept values wait for FinishStep.
  Status TakeGradient(std::span<const uint8_t> bytes, uint32_t micro, torch::Tensor* out);
  // At a step's end: the sender's map updated from each micro-batch's gradient, in
  // micro-batch order, and their state released. Deferred to the step's end so that every
  // micro-batch of a step routes with the same map, whatever order a pipeline schedule runs
  // them in (in one process each micro-batch's backward comes before the next forward; across
  // ranks the next forwards may come first).
  Status FinishStep();

  // Negotiation, sender side: the proposal packet (from its map and the link bytes per step
  // its share allows; `packet_rows` rows per packet), then, from the receiver's counter, the
  // settled contract as a contract packet (packet() both times); CheckAcknowledgement then
  // compares the receiver's echo with it and switches to the contract.
  Status EncodeProposal(double link_bytes_per_step, BoundBy link_reason, size_t packet_rows);
  Status Settle(std::span<const uint8_t> counter);
  Status CheckAcknowledgement(std::span<const uint8_t> ack);

  // Checkpoints (boundary_state.cc): the end's state between two steps (its map, contract,
  // negotiation history, the receiver's last summary, the step and its times), and that state
  // loaded into a fresh end of the same boundary. Errors: a step or negotiation in flight
  // (save); bytes of another boundary's or shape (load, naming the field).
  Status SaveState(StateWriter& w) const;
  Status LoadState(StateReader& r);

  const std::vector<uint8_t>& packet() const { return packet_; }
  const Contract& contract() const { return contract_; }
  SensitivityMap& map() { return *map_; }
  const Negotiator& negotiator() const { return *negotiator_; }
  BoundaryTime& time() { return time_; }
  size_t cols() const { return spec_.cols; }
  // The step in flight (advanced by the caller at each step's end).
  int64_t step = 0;

 private:
  explicit BoundarySender(const BoundarySpec& spec) : spec_(spec) {}
  struct InFlight {
    RoutedTensor mask;
    torch::Tensor activation;     // rows x cols, contiguous fp32
    std::vector<float> act_sums;  // per neuron: sum over rows of |a|
    bool sums_taken = false;
    std::vector<float> kept_gradient;  // decoded, in mask order (empty until it came back)
    bool gradient_taken = false;
  };
  void UpdateMap(InFlight& sent, size_t rows);

  BoundarySpec spec_;
  std::optional<SensitivityMap> map_;
  std::optional<Negotiator> negotiator_;
  std::optional<Router> router_;
  Contract contract_;
  std::optional<Proposal> proposal_;   // the negotiation in flight
  std::optional<Contract> announced_;  // settled, waiting for its acknowledgement
  std::map<uint32_t, InFlight> in_flight_;
  RoutedTensor eval_mask_;
  std::vector<uint8_t> packet_;  // the last packet made, kept until the receiver decoded it
  std::vector<float> summary_;   // per neuron, the receiver's last mean |g| (zeros before one)
  std::vector<float> kept_gradient_;
  std::vector<float> act_scores_, grad_scores_, taylor_scores_, unit_scores_;
  RowBlockSums sums_;
  BoundaryTime time_;
};

// The receiver end.
class BoundaryReceiver {
 public:
  static Result<std::unique_ptr<BoundaryReceiver>> Create(const BoundarySpec& spec);

  // Micro-batch `micro`'s activation packet decoded into a dense [rows, cols] tensor (and,
  // counted, the mask its gradient will be gathered at).
  Result<torch::Tensor> DecodeActivation(std::span<const uint8_t> bytes, int64_t rows,
                                         uint32_t micro, bool count);
  // Whether micro-batch `micro`'s backward sends a summary first (a summary step's first).
  bool SummaryDue(uint32_t micro) const;
  // The summary packet (packet()): the receiver's map updated from what it received and its
  // dense gradient `grad` (dL/dx of micro-batch `micro`), and per neuron the mean |g|.
  Status EncodeSummary(const torch::Tensor& grad, uint32_t micro);
  // Micro-batch `micro`'s gradient packet (packet()): `grad` gathered at the mask of what
  // arrived. The micro-batch's state is released.
  Status EncodeGradient(const torch::Tensor& grad, uint32_t micro);

  // Negotiation, receiver side: the counter (packet()) to the sender's proposal, from the
  // receiver's own map; then the acknowledgement (packet(), the same contract packet) of the
  // settled contract, which the receiver takes from then on.
  Status Counter(std::span<const uint8_t> proposal);
  Status Acknowledge(std::span<const uint8_t> announced);

  // Checkpoints (boundary_state.cc): its map, contract, step and times, as the sender's.
  Status SaveState(StateWriter& w) const;
  Status LoadState(StateReader& r);

  const std::vector<uint8_t>& packet() const { return packet_; }
  const Contract& contract() const { return contract_; }
  SensitivityMap& map() { return *map_; }
  BoundaryTime& time() { return time_; }
  int64_t step = 0;

 private:
  explicit BoundaryReceiver(const BoundarySpec& spec) : spec_(spec) {}
  struct InFlight {
    KeptMask mask;
    torch::Tensor received;  // rows x cols, as decoded
  };

  BoundarySpec spec_;
  std::optional<SensitivityMap> map_;
  Contract contract_;
  std::map<uint32_t, InFlight> in_flight_;
  std::vector<uint8_t> packet_;
  RowBlockSums sums_;
  BoundaryTime time_;
};

// Checkpoints (boundary_state.cc): the settings of the boundaries that a resumed run must
// share, as "key=value" lines (not parallel_min_entries, which never changes a bit); and a
// boundary report's counters and times (not its history, contract or maps, which the ends
// hold).
std::string BoundaryConfig(const RoutedBoundaryOptions& options);
void SaveReportCounters(const BoundaryReport& report, StateWriter& w);
Status LoadReportCounters(StateReader& r, BoundaryReport* report);

// The contract a boundary starts with, the same at both ends.
Contract InitialContract(const BoundarySpec& spec);
// An empty sensitivity map over the boundary's columns, made the same way at both ends.
Result<SensitivityMap> MakeBoundaryMap(const BoundarySpec& spec);

}  // namespace sparselink::torch_adapter::internal
