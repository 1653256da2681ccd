// Pipeline training across ranks: one stage of a stage-split model per rank, the boundaries
// between neighbouring ranks routed as in one process (the same sender and receiver ends, the
// same packets), over a Transport (torch's process group, MPI, or threads of one process).
//
// Each step's batch is cut into M micro-batches; a schedule orders each rank's forwards F(m)
// and backwards B(m):
//   GPipe: every forward, then every backward (in micro-batch order);
//   1F1B:  S - 1 - rank forwards first (at most M), then one forward and one backward in
//          turn, then the backwards left (PipeDream-Flush); fewer activations in flight.
// Both run the backwards in micro-batch order, so the gradients add up in the same order as in
// one process, and the optimizer steps once per batch on every rank. The bubble both leave is
// (S - 1) / (M + S - 1) of a step on every stage, for stages of equal cost.
//
// Every rank reads the whole dataset and draws the same shuffled order (the same seed), so
// only activations, gradients, summaries and negotiations cross: rank 0 feeds the images and
// the last rank owns the labels and the loss. Every `negotiate_every` steps each boundary
// negotiates in packets between its two ranks, after an all-gather of the ranks' maps splits a
// shared link budget (AllocateBudget, the same split on every rank). Every wait has a timeout:
// a rank that dies or stops answering ends every other rank's run with one error naming the
// rank, the boundary and what it waited for.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "sparselink/torch/models.hpp"
#include "sparselink/torch/routed_boundary.hpp"
#include "sparselink/torch/trainer.hpp"
#include "sparselink/transport.hpp"

namespace sparselink::torch_adapter {

enum class Schedule : uint8_t { kGPipe = 0, kOneFOneB = 1 };
inline constexpr std::array<NameRow<Schedule>, 2> kScheduleNames = {{
    {Schedule::kGPipe, "gpipe"},
    {Schedule::kOneFOneB, "1f1b"},
}};
static_assert(RowsInOrder(kScheduleNames));
inline constexpr std::string_view ScheduleName(Schedule s) { return EnumName(kScheduleNames, s); }
Result<Schedule> ParseSchedule(std::string_view name);

// One operation of a rank's step: the forward or the backward of a micro-batch.
struct PipelineOp {
  bool forward = true;
  int micro = 0;
};
// Rank `rank`'s operations for one step of `micro_batches` over `stages` ranks.
std::vector<PipelineOp> ScheduleOps(Schedule schedule, int stages, int rank, int micro_batches);
// The bubble the schedule leaves: (S - 1) / (M + S - 1) of a step.
double BubbleFraction(int stages, int micro_batches);

struct PipelineOptions {
  Schedule schedule = Schedule::kOneFOneB;
  RoutedBoundaryOptions boundary;  // the routing of every boundary (policy, contracts, codecs)
  TrainOptions train;              // epochs, batch, micro-batches, optimizer, seed
  // The longest any wait on another rank lasts before the run fails naming what it waited for.
  std::chrono::milliseconds timeout{60000};
  // Link options of the transport's channels (sizes; the model is ignored off one process).
  LinkOptions link;
};

// One negotiation under --link-budget auto; every rank computes the same.
struct LinkRateRecord {
  int64_t step = 0;
  double unix_seconds = 0;    // the system clock: to line runs up with outside events
  double step_seconds = 0;    // the slowest rank's mean step in the period before
  double target_seconds = 0;  // each boundary's share of the compute-bound step
  std::vector<double> measured_bytes_per_s;  // per boundary; 0: nothing timed in the period
  std::vector<double> rate_bytes_per_s;      // per boundary: in use (+inf: none measured yet)
  std::vector<double> budget_bytes;          // per boundary: link bytes per step
};

// What one rank measured, and (on every rank, after the run's last all-gather) the whole run.
struct PipelineReport {
  TrainReport train;                       // the epochs, as the last rank measured them
  std::vector<BoundaryReport> boundaries;  // every boundary, both ends merged
  // Per rank: seconds of the steps, and of them the seconds waiting on another rank.
  std::vector<double> step_seconds;
  std::vector<double> idle_seconds;
  // Per rank: CPU seconds inside the steps run by this invocation (a resumed run counts from
  // the resume): the whole process's where each rank has its own, else the rank's thread's.
  std::vector<double> cpu_seconds;
  // Per rank: every byte it handed to its links in this invocation (training, evaluation,
  // negotiation and summaries; retransmits included; a resumed run counts from the resume),
  // to hold against the interface's own counters.
  std::vector<uint64_t> sent_bytes;
  double predicted_bubble = 0;                    // BubbleFraction of this run
  std::vector<LinkRateRecord> link_rate_history;  // --link-budget auto, in step order
};

// Runs this rank's stage: `stages` is the whole model, built the same way (and seeded the
// same) on every rank; this rank trains stages[transport.rank()] only, and the world size must
// equal the number of stages. `progress` (may be null) gets rank 0's epoch lines. Errors: bad
// options or shapes, a failed or timed-out wait (naming the rank, boundary and packet), a
// non-finite loss. Blocking; one call per rank, all ranks at once.
// Checkpoints (options.train.checkpoint, checkpoint.hpp): each rank writes its own file,
// CheckpointPath(dir, rank), with its stage, optimizer, generators, the epochs' figures and its
// two boundary ends; a resume needs every rank's file of one epoch (the ranks compare what they
// read and all refuse otherwise, with the same error) and ends as the job never stopped.
Result<PipelineReport> TrainPipelineStage(Transport& transport, Stages& stages,
                                          const Dataset& train, const Dataset& test,
                                          const PipelineOptions& options, std::ostream* progress);

}  // namespace sparselink::torch_adapter
