// One rank of a pipeline (sparselink/torch/pipeline.hpp): its stage, the receiver end of the
// boundary before it and the sender end of the boundary after it, their channels, and the
// step's forwards and backwards. Private to the torch adapter.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sparselink/torch/pipeline.hpp"
#include "torch/boundary_ends.hpp"
#include "torch/run_state.hpp"

namespace sparselink::torch_adapter::internal {

// The channels of one end of a boundary, opened to the neighbouring rank.
struct EndChannels {
  int peer = -1;
  std::unique_ptr<Link> activation;        // forward
  std::unique_ptr<Link> gradient;          // backward
  std::unique_ptr<Link> summary;           // backward
  std::unique_ptr<Link> negotiation_out;   // forward: proposals, agreed contracts
  std::unique_ptr<Link> negotiation_back;  // backward: counters, acknowledgements
};

class PipelineRank {
 public:
  PipelineRank(Transport& transport, Stages& stages, const PipelineOptions& options)
      : transport_(transport), stages_(stages), options_(options) {}

  // Checks the world against the stages, finds every boundary's shape with a dry run of the
  // model on `sample` (one row of the data), builds this rank's ends and opens their channels.
  Status Setup(const torch::Tensor& sample);

  // One training step over the batch (images on rank 0, labels on the last rank; both ranks
  // know the rows): the schedule's forwards and backwards. On the last rank adds the loss to
  // *loss and the right answers to *correct.
  Status Step(const torch::Tensor& images, const torch::Tensor& labels, int64_t batch_rows,
              double* loss, int64_t* correct);
  // After the optimizer step of step `step`: the ends move to the next, and every
  // negotiate_every steps the boundaries negotiate (the shared budget split first).
  Status EndStep(int64_t step);
  // Right answers of one forward-only pass over `images` (uncounted; the last rank counts).
  Result<int64_t> EvaluateBatch(const torch::Tensor& images, const torch::Tensor& labels,
                                int64_t rows);

  // This rank's parameters (its stage's).
  std::vector<torch::Tensor> Parameters() const;
  void SetTraining(bool training) { stage()->train(training); }
  // This rank's half of its boundaries' reports: the sender end's bytes forward, history,
  // contract and map; the receiver end's bytes back and map.
  std::vector<BoundaryReport> LocalReports() const;
  // Checkpoints (pipeline_checkpoint.cc): between two steps, the rank's step counters, both
  // ends' state and their report counters; loaded into a rank after its Setup. Errors: a
  // micro-batch in flight (save); bytes of another rank's ends (load, naming the field).
  Status SaveState(StateWriter& w) const;
  Status LoadState(StateReader& r);
  double idle_seconds() const { return idle_seconds_; }
  // A training step's seconds and, of them, the seconds waiting (for --link-budget auto).
  void CountStepTime(double seconds, double idle);
  const std::vector<LinkRateRecord>& link_rate_history() const { return link_rate_history_; }
  // Every byte this rank handed to its links.
  uint64_t SentBytes() const;
  bool first() const { return rank_ == 0; }
  bool last() const { return rank_ == world_ - 1; }

 private:
  torch::nn::Sequential& stage() const { return stages_[static_cast<size_t>(rank_)]; }
  BoundarySpec SpecOf(size_t boundary) const;
  Status OpenChannels(size_t boundary, int peer, bool sender, EndChannels* channels);
  // Sends `packet` on `link`, counting it on `report` (forward or backward bytes).
  Status Send(Link& link, const std::vector<uint8_t>& packet, uint64_t dense_bytes, bool count,
              bool forward);
  // The next packet of `link`, or an error naming this rank, the boundary, the packet and the
  // peer; the wait counts as idle.
  Result<std::vector<uint8_t>> Receive(Link& link, size_t boundary, int peer,
                                       const std::string& what);
  Status Forward(int micro, const torch::Tensor& input, int64_t rows, double loss_share,
                 const torch::Tensor& labels, double* loss, int64_t* correct);
  Status Backward(int micro);
  Status ShareBudget(double* link_cap);
  // --link-budget auto (pipeline_link_rate.cc): the periods' rates and compute, all-gathered,
  // into every boundary's budget; this rank's sender takes its own as *link_cap.
  Status FollowLinkRate(double* link_cap);
  Status Negotiate(double link_cap);
  std::string Where(size_t boundary, const std::string& what, int peer) const;

  Transport& transport_;
  Stages& stages_;
  const PipelineOptions& options_;
  int rank_ = 0;
  int world_ = 1;
  int64_t step_ = 0;
  std::vector<std::vector<int64_t>> shapes_;    // per boundary: the activation's sizes, no batch
  std::unique_ptr<BoundarySender> sender_;      // of boundary rank_, unless last
  std::unique_ptr<BoundaryReceiver> receiver_;  // of boundary rank_ - 1, unless first
  EndChannels out_;                             // to rank_ + 1
  EndChannels in_;                              // from rank_ - 1
  BoundaryReport sender_report_;
  BoundaryReport receiver_report_;
  // The step's micro-batches in flight: this stage's input (rank > 0) and output.
  struct InFlight {
    torch::Tensor input;
    torch::Tensor output;
    torch::Tensor loss;  // last rank
  };
  std::map<int, InFlight> in_flight_;
  int64_t max_rows_ = 0;          // the most rows a step has sent over the boundary after this rank
  int64_t packets_per_step_ = 1;  // micro-batches of a step
  double control_packet_bytes_ = 0;  // room every step keeps for a summary and a negotiation
  double idle_seconds_ = 0;
  // --link-budget auto: the period's step times, the links' timed counters at its start, the
  // budgets (one per boundary, the same on every rank) and their history.
  struct Window {
    double step_seconds = 0;
    double idle_seconds = 0;
    int64_t steps = 0;
  } window_;
  LinkStats timed_in_;
  LinkStats timed_out_;
  std::vector<LinkRateBudget> rate_budgets_;
  std::vector<LinkRateRecord> link_rate_history_;
};

// A rank's checkpoint (pipeline_checkpoint.cc), its own file CheckpointPath(dir, rank): its
// stage, optimizer, generators and progress (run_state.hpp) and the section "rank"
// (PipelineRank::SaveState). SaveStage writes it after an epoch; ResumeStage reads every
// rank's own file, and the ranks then agree, by an all-gather, that each read one and all of
// the same epoch; otherwise every rank fails with the same line (the first refused file and
// why, or each rank's epoch).
Status SaveStage(const PipelineRank& rank, const PipelineOptions& options,
                 const std::string& config, const OwnStages& own,
                 const torch::optim::Optimizer& optimizer, const torch::Generator& shuffle,
                 const RunProgress& run, int rank_index, int world_size);
Status ResumeStage(Transport& transport, PipelineRank& rank, const PipelineOptions& options,
                   const std::string& config, const OwnStages& own,
                   torch::optim::Optimizer& optimizer, torch::Generator& shuffle, RunProgress* run);

}  // namespace sparselink::torch_adapter::internal
