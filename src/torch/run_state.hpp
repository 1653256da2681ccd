// A run's checkpoint apart from its boundaries (sparselink/torch/checkpoint.hpp): the settings
// a resumed run must share, and the model, the optimizer, the random generators and the
// progress of the epochs, as sections of a Checkpoint. Shared by Train (every stage in one
// process) and TrainPipelineStage (one stage per rank). Private to the torch adapter.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "sparselink/torch/checkpoint.hpp"
#include "sparselink/torch/fashion_mnist.hpp"
#include "sparselink/torch/models.hpp"
#include "sparselink/torch/trainer.hpp"

namespace sparselink::torch_adapter::internal {

// Where a run stands between two epochs, besides its model, optimizer and boundaries.
struct RunProgress {
  int epoch = 0;               // epochs completed
  int64_t step = 0;            // optimizer steps completed
  double elapsed_seconds = 0;  // wall time of the run so far (for the ETA)
  double step_seconds = 0;     // across ranks: time inside training steps ...
  double idle_seconds = 0;     // ... and of it, waiting on another rank
  double cpu_seconds = 0;      // CPU time inside this process's steps (not resumed)
  std::vector<EpochStats> epochs;
};

// The stages this process trains, [first, end) of the model (all of them in one process, the
// rank's own across ranks).
struct OwnStages {
  Stages* stages = nullptr;
  size_t first = 0;
  size_t end = 0;
};

// The configuration lines of a checkpoint: the world size, the model's stage count and the
// shapes of the own stages' parameters and buffers (as a hash), a hash of the data the run
// reads (the first n training samples and the test set), the training options that shape the
// run (batch, micro-batches, optimizer, learning rate and its schedule, seed, samples; not the
// epochs), `boundary_lines` (the boundaries' settings) and options.checkpoint.config.
std::string RunConfig(const TrainOptions& options, const OwnStages& own, const Dataset& train,
                      const Dataset& test, int world_size, const std::string& boundary_lines);

// Adds the sections "stage-<s>" (each own stage's parameters and buffers), "optimizer",
// "rng" (the shuffle generator's and LibTorch's default CPU generator's states) and
// "progress" to `checkpoint`. LibTorch's errors come back as a Status.
Status SaveRun(const OwnStages& own, const torch::optim::Optimizer& optimizer,
               const torch::Generator& shuffle, const RunProgress& progress,
               Checkpoint* checkpoint);

// Restores what SaveRun saved, from the checkpoint read at `path` (named in every error): the
// stages' tensors in place (their shapes must not change), the optimizer's state, both
// generators and the progress. Errors also: a checkpoint of an epoch past options.epochs.
Status LoadRun(const Checkpoint& checkpoint, const std::filesystem::path& path,
               const TrainOptions& options, const OwnStages& own,
               torch::optim::Optimizer& optimizer, torch::Generator& shuffle,
               RunProgress* progress);

// options.checkpoint against the run: stop_after in [0, epochs], and only with a dir to leave
// its checkpoint in.
Status CheckCheckpointOptions(const TrainOptions& options);

// The section `name` of the checkpoint read at `path`, or an error naming both.
Result<const std::vector<uint8_t>*> Section(const Checkpoint& checkpoint,
                                            const std::filesystem::path& path,
                                            std::string_view name);

}  // namespace sparselink::torch_adapter::internal
