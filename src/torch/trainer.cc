// Dense trainer over stage-split models. The stages run one after the other in this thread;
// the hook between two stages is where a routed boundary will sit, so the trainer never looks
// inside it: it hands over the sender's autograd tensor and feeds whatever comes back into the
// receiver, and a single backward pass then runs through stages and hooks alike.
//
// Train accuracy is counted on the fly from the training batches' logits (the model changes
// during the epoch), which costs nothing extra; test accuracy is a full pass after each epoch.
//
// A checkpoint is taken after an epoch's evaluation, between two steps, where the hook holds
// no micro-batch in flight; a resumed run starts at the next epoch's shuffle with the
// generator, optimizer, weights and hook as they were (run_state.cc).
#include "sparselink/torch/trainer.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

#include "sparselink/torch/runtime.hpp"
#include "torch/run_state.hpp"

namespace sparselink::torch_adapter {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(std::vector<torch::Tensor> parameters,
                                                       const TrainOptions& options) {
  if (options.optimizer == OptimizerKind::kAdam) {
    return std::make_unique<torch::optim::Adam>(
        parameters,
        torch::optim::AdamOptions(options.learning_rate).weight_decay(options.weight_decay));
  }
  return std::make_unique<torch::optim::SGD>(parameters,
                                             torch::optim::SGDOptions(options.learning_rate)
                                                 .momentum(options.momentum)
                                                 .weight_decay(options.weight_decay));
}

double LearningRate(const TrainOptions& options, int64_t step, int64_t total_steps) {
  if (options.schedule != LrSchedule::kCosine) return options.learning_rate;
  constexpr double kPi = 3.14159265358979323846;
  const double progress_share = static_cast<double>(step) / static_cast<double>(total_steps);
  return 0.5 * options.learning_rate * (1.0 + std::cos(kPi * progress_share));
}

namespace {

void SetTraining(Stages& stages, bool training) {
  for (auto& stage : stages) stage->train(training);
}

std::string FormatDuration(double seconds) {
  const auto total = static_cast<long long>(std::llround(std::max(0.0, seconds)));
  char text[32];
  if (total >= 3600) {
    std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", total / 3600, total / 60 % 60,
                  total % 60);
  } else {
    std::snprintf(text, sizeof text, "%lld:%02lld", total / 60, total % 60);
  }
  return text;
}

Status CheckOptions(const Stages& stages, const Dataset& train, const Dataset& test,
                    const TrainOptions& options) {
  if (stages.empty()) {
    return FieldError(ErrorCode::kInvalidArgument, "stages", 0, "need at least one stage");
  }
  if (options.epochs < 1) {
    return FieldError(ErrorCode::kInvalidArgument, "epochs", options.epochs, "must be >= 1");
  }
  if (options.batch_size < 1) {
    return FieldError(ErrorCode::kInvalidArgument, "batch_size", options.batch_size,
                      "must be >= 1");
  }
  if (options.micro_batches < 1 || options.micro_batches > options.batch_size) {
    return FieldError(ErrorCode::kInvalidArgument, "micro_batches", options.micro_batches,
                      "must be in [1, batch_size = " + std::to_string(options.batch_size) + "]");
  }
  if (options.eval_batch_size < 1) {
    return FieldError(ErrorCode::kInvalidArgument, "eval_batch_size", options.eval_batch_size,
                      "must be >= 1");
  }
  if (!(options.learning_rate > 0.0) || !std::isfinite(options.learning_rate)) {
    return FieldError(ErrorCode::kInvalidArgument, "learning_rate", options.learning_rate,
                      "must be finite and > 0");
  }
  if (train.size() == 0) {
    return FieldError(ErrorCode::kInvalidArgument, "train samples", 0, "training set is empty");
  }
  if (test.size() == 0) {
    return FieldError(ErrorCode::kInvalidArgument, "test samples", 0, "test set is empty");
  }
  return Status::Ok();
}

}  // namespace

std::string EpochLine(const EpochStats& stats, const TrainOptions& options,
                      double elapsed_seconds) {
  // Wall time so far (evaluation included) per epoch, times the epochs left.
  const double eta = elapsed_seconds / stats.epoch * (options.epochs - stats.epoch);
  char line[160];
  std::snprintf(line, sizeof line,
                "epoch %d/%d  %.0f samples/s  %.1f s  eta %s  loss %.4f  train %.2f%%  "
                "test %.2f%%",
                stats.epoch, options.epochs, stats.samples_per_s, stats.seconds,
                FormatDuration(eta).c_str(), stats.loss, 100.0 * stats.train_accuracy,
                100.0 * stats.test_accuracy);
  std::string text = line;
  if (options.progress_suffix) text += "  " + options.progress_suffix();
  return text + "\n";
}

torch::Tensor ForwardStages(Stages& stages, const torch::Tensor& input, BoundaryHook* hook,
                            bool training) {
  torch::Tensor x = input;
  for (size_t s = 0; s < stages.size(); ++s) {
    x = stages[s]->forward(x);
    if (s + 1 < stages.size() && hook != nullptr) x = hook->Forward(s, x, training);
  }
  return x;
}

double Evaluate(Stages& stages, const Dataset& data, BoundaryHook* hook, int64_t batch_size) {
  const int64_t n = data.size();
  if (n == 0 || batch_size < 1) return 0.0;
  torch::NoGradGuard no_grad;
  SetTraining(stages, false);
  int64_t correct = 0;
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t end = std::min(n, begin + batch_size);
    const torch::Tensor logits =
        ForwardStages(stages, data.images.slice(0, begin, end), hook, /*training=*/false);
    correct += logits.argmax(1).eq(data.labels.slice(0, begin, end)).sum().item<int64_t>();
  }
  return static_cast<double>(correct) / static_cast<double>(n);
}

namespace {

// One epoch's training steps: the shuffled batches, each crossing as its micro-batches,
// forward and backward each, then one optimizer step. Fills *stats but its test accuracy.
Status TrainEpoch(Stages& stages, const Dataset& train, const TrainOptions& options,
                  BoundaryHook* hook, torch::optim::Optimizer& optimizer, torch::Generator& shuffle,
                  int epoch, int64_t* step, EpochStats* stats) {
  const int64_t n = options.max_train_samples > 0
                        ? std::min(options.max_train_samples, train.size())
                        : train.size();
  const int64_t batches_per_epoch = (n + options.batch_size - 1) / options.batch_size;
  const int64_t total_steps = batches_per_epoch * options.epochs;
  SetTraining(stages, true);
  const auto start = Clock::now();
  const torch::Tensor order = torch::randperm(n, shuffle, torch::kInt64);
  double loss_sum = 0.0;
  int64_t correct = 0;
  for (int64_t b = 0; b < batches_per_epoch; ++b) {
    const int64_t begin = b * options.batch_size;
    const torch::Tensor index = order.slice(0, begin, std::min(n, begin + options.batch_size));
    const torch::Tensor images = train.images.index_select(0, index);
    const torch::Tensor labels = train.labels.index_select(0, index);

    if (options.schedule == LrSchedule::kCosine) {
      const double lr = LearningRate(options, *step, total_steps);
      for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
    }
    optimizer.zero_grad();
    // Micro-batches: rows [m * size / M, (m + 1) * size / M) of the batch, forward and
    // backward each; the losses are weighted by their share so the gradients add up to
    // the whole batch's mean loss.
    const int64_t size = images.size(0);
    const int64_t parts = std::min(options.micro_batches, size);
    double batch_loss = 0.0;
    for (int64_t m = 0; m < parts; ++m) {
      const int64_t from = m * size / parts;
      const int64_t to = (m + 1) * size / parts;
      const torch::Tensor part_labels = labels.slice(0, from, to);
      const torch::Tensor logits =
          ForwardStages(stages, images.slice(0, from, to), hook, /*training=*/true);
      torch::Tensor loss = torch::nn::functional::cross_entropy(logits, part_labels);
      if (parts > 1) loss = loss * (static_cast<double>(to - from) / static_cast<double>(size));
      const double loss_value = loss.item<double>();
      if (!std::isfinite(loss_value)) {
        return FieldError(ErrorCode::kNonFinite, "loss", loss_value,
                          "at epoch " + std::to_string(epoch) + " step " + std::to_string(*step));
      }
      loss.backward();
      batch_loss += loss_value;
      correct += logits.detach().argmax(1).eq(part_labels).sum().item<int64_t>();
    }
    optimizer.step();
    hook->OnStepEnd(*step);
    ++*step;
    loss_sum += batch_loss;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  stats->epoch = epoch;
  stats->seconds = seconds;
  stats->samples_per_s = seconds > 0.0 ? static_cast<double>(n) / seconds : 0.0;
  stats->loss = loss_sum / static_cast<double>(batches_per_epoch);
  stats->train_accuracy = static_cast<double>(correct) / static_cast<double>(n);
  return Status::Ok();
}

// In one process the run is rank 0 of 1: every stage in one file, the hook's state in its
// section "hook".
Status SaveEpoch(const TrainOptions& options, const std::string& config,
                 const internal::OwnStages& own, const torch::optim::Optimizer& optimizer,
                 const torch::Generator& shuffle, const BoundaryHook& hook,
                 const internal::RunProgress& run) {
  Checkpoint checkpoint{.epoch = static_cast<uint32_t>(run.epoch), .config = config};
  SPARSELINK_RETURN_IF_ERROR(internal::SaveRun(own, optimizer, shuffle, run, &checkpoint));
  SPARSELINK_ASSIGN_OR_RETURN(std::vector<uint8_t> state, hook.SaveState());
  checkpoint.Add("hook", std::move(state));
  return WriteCheckpoint(CheckpointPath(options.checkpoint.dir, 0), checkpoint);
}

Status Resume(const TrainOptions& options, const std::string& config,
              const internal::OwnStages& own, torch::optim::Optimizer& optimizer,
              torch::Generator& shuffle, BoundaryHook& hook, internal::RunProgress* run) {
  const std::filesystem::path path = CheckpointPath(options.checkpoint.resume, 0);
  SPARSELINK_ASSIGN_OR_RETURN(const Checkpoint checkpoint, ReadCheckpoint(path, 0, 1, config));
  SPARSELINK_RETURN_IF_ERROR(
      internal::LoadRun(checkpoint, path, options, own, optimizer, shuffle, run));
  SPARSELINK_ASSIGN_OR_RETURN(const std::vector<uint8_t>* state,
                              internal::Section(checkpoint, path, "hook"));
  if (Status loaded = hook.LoadState(*state); !loaded.ok()) {
    return FieldError(loaded.code(), "checkpoint", path.string(), loaded.message());
  }
  return Status::Ok();
}

}  // namespace

Result<TrainReport> Train(Stages& stages, const Dataset& train, const Dataset& test,
                          const TrainOptions& options, BoundaryHook* hook, std::ostream* progress) {
  SPARSELINK_RETURN_IF_ERROR(CheckOptions(stages, train, test, options));
  SPARSELINK_RETURN_IF_ERROR(internal::CheckCheckpointOptions(options));
  SetNumThreads(options.num_threads);
  DenseBoundary dense;
  if (hook == nullptr) hook = &dense;
  std::unique_ptr<torch::optim::Optimizer> optimizer =
      MakeOptimizer(StageParameters(stages), options);
  torch::Generator shuffle = at::detail::createCPUGenerator(options.seed);

  const CheckpointOptions& checkpoints = options.checkpoint;
  const internal::OwnStages own{&stages, 0, stages.size()};
  std::string config;
  if (!checkpoints.dir.empty() || !checkpoints.resume.empty()) {
    config = internal::RunConfig(options, own, train, test, 1, hook->CheckpointConfig());
  }
  internal::RunProgress run;
  if (!checkpoints.resume.empty()) {
    SPARSELINK_RETURN_IF_ERROR(Resume(options, config, own, *optimizer, shuffle, *hook, &run));
  }
  TrainReport report{.epochs = run.epochs};
  const double elapsed_before = run.elapsed_seconds;
  const auto run_start = Clock::now();
  const int last_epoch = checkpoints.stop_after > 0 ? checkpoints.stop_after : options.epochs;
  for (int epoch = run.epoch + 1; epoch <= last_epoch; ++epoch) {
    EpochStats stats;
    SPARSELINK_RETURN_IF_ERROR(
        TrainEpoch(stages, train, options, hook, *optimizer, shuffle, epoch, &run.step, &stats));
    stats.test_accuracy = Evaluate(stages, test, hook, options.eval_batch_size);
    report.epochs.push_back(stats);
    const double elapsed =
        elapsed_before + std::chrono::duration<double>(Clock::now() - run_start).count();
    if (progress != nullptr) *progress << EpochLine(stats, options, elapsed) << std::flush;
    if (!checkpoints.dir.empty()) {
      run.epoch = epoch;
      run.elapsed_seconds = elapsed;
      run.epochs = report.epochs;
      SPARSELINK_RETURN_IF_ERROR(SaveEpoch(options, config, own, *optimizer, shuffle, *hook, run));
    }
  }
  SetTraining(stages, true);
  return report;
}

}  // namespace sparselink::torch_adapter
