// RoutedBoundaries: the LibTorch adapter that puts the core library on every stage boundary.
//
// Forward (per boundary, per step, or per micro-batch when a step has several): the sender's
// activation [N, ...] is flattened to
// rows x cols, routed by the core Router under the boundary's contract, encoded into a real
// wire-format packet, sent over the boundary's forward Link, received, decoded and scattered
// into the dense tensor the receiver sees (zeros where dropped). Backward: the receiver's
// dense gradient is gathered at the kept positions (values only: both sides know the index
// set), encoded with the gradient codec, sent over the backward link, decoded and scattered
// into dL/dy. This is the exact gradient of the routed forward (d(m*y)/dy = m) up to the
// gradient codec's rounding. Every `summary_every` steps the receiver also sends its summary
// (per-neuron mean |g|, bf16; from the step's first micro-batch) so that dropped neurons keep
// being scored; the sender's map is updated after every backward from |a*g| on kept entries
// and |a|*summary on dropped ones. Every `negotiate_every` steps each boundary renegotiates its
// contract (auto keep), after the BudgetAllocator splits a shared link budget when one is set;
// both price a step as the packets it sent (one pair per micro-batch) plus room for the
// receiver's summary, so a budget caps the bytes of every step however it is split.
//
// Link faults (LinkModel.loss_rate / corrupt_rate): every packet carries an XXH3 checksum, so
// a flipped bit makes its decoder fail. The receiver never uses such a packet: it re-requests
// it, and the sender, which keeps each encoded packet until the receiver has decoded it, sends
// the same bytes again (LinkRetryOptions). Activation, gradient and summary packets alike.
// Retransmits count as traffic. Each link draws its faults from its own generator (seeded from
// link.fault_seed, seed, boundary and direction), so faults never shift the routing's or
// LibTorch's random streams: a run whose packets all get through in the end is bit-identical
// to the same run without faults.
//
// Wire bytes are the bytes of real packets; the dense baseline is rows*cols*4 per direction.
// Not thread-safe: the trainer calls it from one thread.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sparselink/codec.hpp"
#include "sparselink/contract.hpp"
#include "sparselink/link.hpp"
#include "sparselink/routing.hpp"
#include "sparselink/sensitivity.hpp"
#include "sparselink/torch/models.hpp"
#include "sparselink/torch/trainer.hpp"

namespace sparselink::torch_adapter {

enum class RoutingPolicy : uint8_t {
  kDense = 0,    // no routing; traffic is dense fp32 both ways (the baseline)
  kRandom,       // keep a random k per row
  kMagnitude,    // keep the k largest |a| per row
  kSensitivity,  // keep the k largest |a| * (eps + S_j) per row
  kStructured,   // keep the same units for the whole micro-batch, by summed sensitivity
};
inline constexpr size_t kNumRoutingPolicies = 5;
inline constexpr std::array<NameRow<RoutingPolicy>, kNumRoutingPolicies> kRoutingPolicyNames = {{
    {RoutingPolicy::kDense, "dense"},
    {RoutingPolicy::kRandom, "random"},
    {RoutingPolicy::kMagnitude, "magnitude"},
    {RoutingPolicy::kSensitivity, "sensitivity"},
    {RoutingPolicy::kStructured, "structured"},
}};
static_assert(RowsInOrder(kRoutingPolicyNames));
inline constexpr std::string_view RoutingPolicyName(RoutingPolicy p) {
  return EnumName(kRoutingPolicyNames, p);
}
Result<RoutingPolicy> ParseRoutingPolicy(std::string_view name);

// What a boundary does on a lost or bad packet. The receiver waits `recv_timeout` for a packet;
// when none comes (lost) or the one that came does not decode (corrupt: checksum, length or field
// check; or a label other than this boundary and step), it re-requests it and the sender sends
// its kept copy again. After `max_tries` sends of one packet the step fails with one error
// naming the boundary, the direction (forward, backward, summary), the step and the last
// decode error. The re-request itself is not modelled as a packet (a few bytes on the
// reverse link). The in-process link delivers inside Send, so `recv_timeout` is only ever
// waited out for a lost packet.
struct LinkRetryOptions {
  int max_tries = 8;                           // sends per packet, the first included; >= 1
  std::chrono::milliseconds recv_timeout{20};  // >= 0
};

struct RoutedBoundaryOptions {
  RoutingPolicy policy = RoutingPolicy::kSensitivity;
  std::optional<double> keep;  // fixed keep fraction; nullopt = negotiated ("auto")
  double keep_full = 0.0;      // share of the kept sent with full_codec
  ValueCodec full_codec = ValueCodec::kFp16;
  ValueCodec lossy_codec = ValueCodec::kInt8;  // the kept values' codec when keep_full = 0
  ValueCodec gradient_codec = ValueCodec::kInt8;
  IndexCodec index_codec = IndexCodec::kAuto;
  bool zstd = false;  // zstd per packet section, kept only where it is smaller
  // zstd's level: -5 with Huffman-coded literals compresses routed sections as well as level
  // 1 at about half the time (docs/perf-notes.md#zstd_level).
  int zstd_level = -5;
  double eps = 1e-3;
  // Conv feature maps [N, C, H, W]: one sensitivity unit per channel (block = H*W), or one per
  // neuron (block = 1). Dense layers always have one per neuron.
  bool per_channel_maps = true;
  int negotiate_every = 50;  // steps between negotiations (auto keep)
  int summary_every = 10;    // steps between receiver summaries
  NegotiatorOptions negotiator{
      .tau_send = 0.9, .tau_recv = 0.9, .keep_min = 0.01, .keep_max = 1.0, .hysteresis = 0.005};
  double initial_keep = 0.1;              // contract before the first negotiation (auto keep)
  double link_budget_bytes_per_step = 0;  // > 0: one budget shared by all boundaries
  // Across ranks only (--link-budget auto): each boundary's link bytes per step follow the
  // rate its packets crossed at in the last negotiation period, times link_rate.fill of the
  // target (target_step_seconds, or 0: the ranks' compute per step summed, over the number of
  // boundaries). Needs a transport whose links time their transfers (the process group's).
  bool link_budget_auto = false;
  LinkRateOptions link_rate;
  double target_step_seconds = 0;
  SensitivityMode sensitivity_mode = SensitivityMode::kTaylor;
  double sensitivity_alpha = 0.5;  // kWeighted: weight of the activation term
  double ema_decay = 0.9;
  LinkModel link;
  LinkRetryOptions retry;
  uint64_t seed = 1;
  // A boundary's routing, coding and scatters use the OpenMP threads from this many entries
  // of the activation on (>= 1; RouterOptions::parallel_min_entries). The default keeps a
  // 128 x 1024 boundary on one thread, right when the threads sleep between regions; when
  // they stay awake (OpenMpThreadsStayAwake, runtime.hpp) `sparselink train` lowers it to
  // 2^16, where both cores pay (docs/perf-notes.md#kdefaultparallelminentries).
  size_t parallel_min_entries = kDefaultParallelMinEntries;
};

// Where a boundary's route_seconds go, wall clock over the training steps; the parts add up
// to route_seconds. Forward: the sender routes and encodes, the packet crosses the link and the
// receiver decodes it straight into the dense tensor of the next stage (one fused pass, so no
// scatter phase of its own). Backward: the receiver's summary (every summary_every steps: its
// map update and the summary packet), the gradient (converted to contiguous fp32,) gathered at
// the mask and encoded, its link crossing and decode straight into the sender's dense gradient
// (fused likewise), and the sender's map update.
struct BoundaryTime {
  double route_encode = 0;
  double forward_link_decode = 0;
  double summary = 0;
  double gradient_encode = 0;
  double backward_link_decode = 0;
  double map_update = 0;

  // Every phase, with its name in the report, in the order above.
  struct Phase {
    const char* name;
    double BoundaryTime::*seconds;
  };
  static constexpr Phase kPhases[] = {{"route_encode", &BoundaryTime::route_encode},
                                      {"forward_link_decode", &BoundaryTime::forward_link_decode},
                                      {"summary", &BoundaryTime::summary},
                                      {"gradient_encode", &BoundaryTime::gradient_encode},
                                      {"backward_link_decode", &BoundaryTime::backward_link_decode},
                                      {"map_update", &BoundaryTime::map_update}};

  void Add(const BoundaryTime& t) {
    for (const Phase& p : kPhases) this->*p.seconds += t.*p.seconds;
  }
};

// One boundary's counters and history, for the report.
struct BoundaryReport {
  size_t boundary = 0;
  size_t cols = 0;
  size_t block = 1;
  uint64_t forward_wire_bytes = 0;
  uint64_t backward_wire_bytes = 0;  // gradients + summaries
  uint64_t dense_fp32_bytes = 0;     // forward + backward, as plain fp32
  uint64_t packets = 0;              // packets delivered (each once, however many tries it took)
  // Link faults (training steps only, like the bytes): packets sent again, their bytes (also
  // inside forward/backward_wire_bytes), and why: a packet that arrived but did not decode, or
  // one that never arrived.
  uint64_t retransmits = 0;
  uint64_t retransmit_wire_bytes = 0;
  uint64_t corrupt_packets = 0;
  uint64_t lost_packets = 0;
  double modelled_link_seconds = 0;  // retransmits included
  double route_seconds = 0;          // routing + coding + link, wall clock, both directions
  BoundaryTime time;                 // route_seconds by phase
  std::vector<NegotiationRecord> history;
  Contract contract;                        // in force at the end
  std::vector<float> sensitivity;           // the sender's map at the end
  std::vector<float> receiver_sensitivity;  // the receiver's map of its inputs at the end
};

class RoutedBoundaries final : public BoundaryHook {
 public:
  // Boundaries are sized lazily, on their first Forward. The receiver's view of its inputs is
  // its own Taylor map on what it received with its dense gradient (so it can only vouch for
  // entries that crossed; the sender's map, fed by the summaries, covers the dropped ones).
  // `stages` may be null; it is kept for adapters that read the model. Errors: bad options
  // (each named). Forward and the autograd backward raise c10::Error with one line when a
  // packet fails `retry.max_tries` times (see LinkRetryOptions).
  static Result<std::unique_ptr<RoutedBoundaries>> Create(const RoutedBoundaryOptions& options,
                                                          Stages* stages);
  ~RoutedBoundaries() override;

  torch::Tensor Forward(size_t boundary, const torch::Tensor& activation, bool training) override;
  void OnStepEnd(int64_t step) override;

  // Checkpoints: the options as "key=value" lines; between two steps, every boundary's state
  // (both ends' maps, contract, negotiation history and step, the receiver's last summary,
  // the report's counters and times); loaded into a fresh RoutedBoundaries (before its first
  // Forward) with the same options, the boundaries go on as if never stopped. With emulated
  // link faults the fault draws start again from their seeds, so retransmits differ from the
  // run never stopped (what arrives, hence every other figure, does not). Errors: a step in
  // flight (save); a hook already used, or bytes of other boundaries (load, naming the field).
  std::string CheckpointConfig() const override;
  Result<std::vector<uint8_t>> SaveState() const override;
  Status LoadState(std::span<const uint8_t> bytes) override;

  // Freezes or unfreezes every sensitivity map (inference), including those of boundaries
  // whose first Forward comes later.
  void SetFrozen(bool frozen);
  std::vector<BoundaryReport> Report() const;
  const RoutedBoundaryOptions& options() const { return options_; }

  struct State;  // one per boundary (defined in the .cc)

 private:
  void ShareBudget();  // OnStepEnd: the shared link budget split into the boundaries' caps
  RoutedBoundaryOptions options_;
  Stages* stages_;
  std::vector<std::unique_ptr<State>> states_;
  bool frozen_ = false;
};

}  // namespace sparselink::torch_adapter
