// Dense end-to-end trainer for stage-split models, with a hook at every stage boundary.
//
// One training step: for each of the batch's micro_batches parts (one by default):
// x_0 = images of the part; for s = 0..S-1: y_s = stage_s(x_s); if s < S-1,
// x_{s+1} = hook.Forward(s, y_s, training); loss = cross_entropy(y_{S-1}, labels) times the
// part's share of the batch; backward through the whole chain (hooks included). Then one
// optimizer step over every stage's parameters and hook.OnStepEnd(step).
//
// Defaults: SGD with momentum 0.9, lr 0.05, cosine decay to 0 over the run, batch 128: the one
// setting that reaches the targets for both models. Measured on Fashion-MNIST, 4 stages, 2
// threads, OMP_WAIT_POLICY=PASSIVE (see runtime.hpp; without it 2-10x slower), on a 2-core AMD
// EPYC shared with other jobs, OpenBLAS 0.3.21; test accuracy, seeds 1 / 2:
//   MLP 784-1024-1024-1024-10, ~5.5 s/epoch with SGD (~11000 samples/s), ~7 s with Adam:
//     SGD lr 0.05 cosine:   5 epochs 89.19 / 89.13   (4 epochs 88.99, seed 1)
//     Adam lr 1e-3 cosine:  5 epochs 89.47 / 89.22   (4 epochs 89.27, seed 1)
//     Adam lr 1e-3 constant: 5 epochs 87.96 (seed 1) — the decay is worth ~1.5 points.
//   CNN, ~11-17 s/epoch with SGD (3500-5800 samples/s):
//     SGD lr 0.05 cosine:   2 epochs 90.07 / 90.40,  3 epochs 91.08 (seed 1)
//     Adam lr 1e-3 cosine:  2 epochs 88.88,  3 epochs 90.12 / 89.92
// So: the CNN reaches 90% fastest with SGD (2 epochs); the MLP reaches 89% in 4-5 epochs with
// either, Adam a few tenths higher but each step ~25% slower.
#pragma once

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "sparselink/status.hpp"
#include "sparselink/torch/checkpoint.hpp"
#include "sparselink/torch/fashion_mnist.hpp"
#include "sparselink/torch/models.hpp"

namespace sparselink::torch_adapter {

// What sits on a boundary between two stages. The trainer calls Forward on the output of every
// stage but the last, in stage order, once per micro-batch (once per batch by default), each
// training Forward followed by its backward before the next; the result is the next stage's
// input.
//
// `activation` is an autograd tensor (requires_grad in training) of the sender's output, e.g.
// [N, 1024] for the MLP or [N, 32, 14, 14] for the CNN; the returned tensor must keep the
// autograd graph connected to it (a plain tensor op or a custom torch::autograd::Function), so
// that gradients flow back into the sender stage. `training` is false during evaluation, where
// the trainer runs under torch::NoGradGuard. Called from the training thread only.
class BoundaryHook {
 public:
  virtual ~BoundaryHook() = default;
  virtual torch::Tensor Forward(size_t boundary, const torch::Tensor& activation,
                                bool training) = 0;
  // After the optimizer step of training step `step` (counted from 0 over the whole run).
  virtual void OnStepEnd(int64_t step) { (void)step; }

  // Checkpoints (checkpoint.hpp), called between epochs: the hook's settings that a resumed
  // run must share, as "key=value" lines; its state in bytes; and that state loaded into a
  // fresh hook made with the same settings, after which the run goes on as if never stopped.
  // The defaults are those of a hook without state.
  virtual std::string CheckpointConfig() const { return {}; }
  virtual Result<std::vector<uint8_t>> SaveState() const { return std::vector<uint8_t>(); }
  virtual Status LoadState(std::span<const uint8_t> bytes) {
    if (bytes.empty()) return Status::Ok();
    return FieldError(ErrorCode::kInvalidArgument, "hook state bytes", bytes.size(),
                      "this hook keeps no state");
  }
};

// Passes every activation through unchanged: plain dense training.
class DenseBoundary final : public BoundaryHook {
 public:
  torch::Tensor Forward(size_t /*boundary*/, const torch::Tensor& activation,
                        bool /*training*/) override {
    return activation;
  }
};

enum class OptimizerKind { kSgdMomentum, kAdam };

// Learning rate over the run: constant, or cosine from learning_rate down to 0 at the last
// step (set before every step).
enum class LrSchedule { kConstant, kCosine };

struct TrainOptions {
  int epochs = 5;
  int64_t batch_size = 128;
  // Each batch crosses the stages (and their boundaries) as this many micro-batches of about
  // equal size, each with its own forward and backward; their gradients add up to the batch's
  // (each loss weighted by its share of the batch) and the optimizer steps once per batch.
  // In [1, batch_size].
  int64_t micro_batches = 1;
  OptimizerKind optimizer = OptimizerKind::kSgdMomentum;
  double learning_rate = 0.05;  // SGD with momentum: 0.05 for both models; Adam: 1e-3
  LrSchedule schedule = LrSchedule::kCosine;
  double momentum = 0.9;  // SGD only
  double weight_decay = 0.0;
  uint64_t seed = 1;    // shuffling order (the model init is seeded by the caller)
  int num_threads = 0;  // > 0: SetNumThreads(num_threads) before training
  int64_t eval_batch_size = 1000;
  int64_t max_train_samples = 0;  // > 0: train on the first N samples only (quick runs)
  // Appended to each epoch's progress line (e.g. "wire 12.3 MB"); may be empty.
  std::function<std::string()> progress_suffix;
  // Checkpoints after every epoch, a resume from one, a stop after an epoch (checkpoint.hpp).
  CheckpointOptions checkpoint;
};

struct EpochStats {
  int epoch = 0;                // 1-based
  double seconds = 0.0;         // training time of the epoch, evaluation excluded
  double samples_per_s = 0.0;   // training samples per second
  double loss = 0.0;            // mean cross-entropy over the epoch's batches
  double train_accuracy = 0.0;  // share of training samples right during the epoch, in [0,1]
  double test_accuracy = 0.0;   // after the epoch, in [0,1]
};

struct TrainReport {
  std::vector<EpochStats> epochs;
};

// Trains `stages` in place. `hook` may be null (dense). `progress`, if not null, gets one line
// per epoch: "epoch 2/5  41234 samples/s  eta 0:25  loss 0.3120  train 88.71%  test 87.90%".
// Errors: empty stages, epochs < 1, batch_size < 1, empty dataset, non-finite loss (kNonFinite,
// naming epoch and step). LibTorch exceptions (e.g. a hook returning a wrong shape) propagate.
// Cost: blocks for the whole run; uses LibTorch's intra-op threads.
// The optimizer of `options` (SGD with momentum or Adam) over `parameters`.
std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(std::vector<torch::Tensor> parameters,
                                                       const TrainOptions& options);
// The learning rate of step `step` of `total_steps` (cosine decay from options.learning_rate,
// or constant).
double LearningRate(const TrainOptions& options, int64_t step, int64_t total_steps);

// The progress line of an epoch: rate, time, ETA from `elapsed_seconds` of the run so far,
// loss and accuracies, and the options' progress_suffix; ends with a newline.
std::string EpochLine(const EpochStats& stats, const TrainOptions& options, double elapsed_seconds);

// Checkpoints (options.checkpoint): after every epoch (its evaluation included) the stages,
// the optimizer, the generators, the epochs' figures and the hook's state go to
// DIR/rank-0.ckpt; a resumed run loads them into stages and a hook built as the first run's
// were (same seed), continues with the next epoch, and reports every epoch of the run, so
// that it ends with the weights, figures and bytes of a run never stopped. Errors: a
// checkpoint refused by ReadCheckpoint or of an epoch past options.epochs, stop_after outside
// [0, epochs] or without a dir, a failed write (kIo).
Result<TrainReport> Train(Stages& stages, const Dataset& train, const Dataset& test,
                          const TrainOptions& options, BoundaryHook* hook = nullptr,
                          std::ostream* progress = nullptr);

// Share of `data` classified correctly, in [0,1] (0 for an empty set or batch_size < 1). Puts
// the stages in eval mode (and leaves them there) and runs without autograd. `hook` may be
// null (dense); it is called with training = false.
double Evaluate(Stages& stages, const Dataset& data, BoundaryHook* hook = nullptr,
                int64_t batch_size = 1000);

// Runs the stages (and hooks) on `input`, returning the last stage's output.
torch::Tensor ForwardStages(Stages& stages, const torch::Tensor& input, BoundaryHook* hook,
                            bool training);

}  // namespace sparselink::torch_adapter
