// Stage-split models and the dense trainer: shapes for every split, post-ReLU boundaries,
// refused splits, deterministic init, the boundary hook contract, and a short training run on
// a synthetic separable dataset.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "sparselink/torch/models.hpp"
#include "sparselink/torch/runtime.hpp"
#include "sparselink/torch/trainer.hpp"

namespace sparselink::torch_adapter {
namespace {

using Shape = std::vector<int64_t>;

// Runs `stages` on `input` and returns every stage's output shape; checks each boundary
// activation (every output but the last) is non-negative.
std::vector<Shape> StageShapes(Stages& stages, const torch::Tensor& input) {
  torch::NoGradGuard no_grad;
  std::vector<Shape> shapes;
  torch::Tensor x = input;
  for (size_t s = 0; s < stages.size(); ++s) {
    x = stages[s]->forward(x);
    shapes.push_back(x.sizes().vec());
    if (s + 1 < stages.size()) {
      EXPECT_GE(x.min().item<float>(), 0.0f) << "boundary " << s << " is not post-ReLU";
      EXPECT_GT(x.max().item<float>(), 0.0f) << "boundary " << s << " is all zero";
    }
  }
  return shapes;
}

TEST(SplitMlp, StageShapesForEveryStageCount) {
  const torch::Tensor input = torch::randn({5, 1, 28, 28});
  const std::vector<std::vector<Shape>> expected = {
      {{5, 10}},
      {{5, 1024}, {5, 10}},
      {{5, 1024}, {5, 1024}, {5, 10}},
      {{5, 1024}, {5, 1024}, {5, 1024}, {5, 10}},
  };
  for (int s = 1; s <= 4; ++s) {
    torch::manual_seed(1);
    auto stages = SplitMlp(kDefaultMlpWidths, s);
    ASSERT_TRUE(stages.ok()) << stages.status().ToString();
    ASSERT_EQ(stages->size(), static_cast<size_t>(s));
    EXPECT_EQ(StageShapes(*stages, input), expected[static_cast<size_t>(s - 1)]) << "stages " << s;
    EXPECT_EQ(CountParameters(*stages),
              784 * 1024 + 1024 + 2 * (1024 * 1024 + 1024) + 1024 * 10 + 10);
  }
}

TEST(SplitMlp, OddWidthsSplitEvenly) {
  torch::manual_seed(1);
  auto stages = SplitMlp({784, 33, 17, 65, 9, 10}, 3);  // 5 blocks -> 1 + 2 + 2
  ASSERT_TRUE(stages.ok()) << stages.status().ToString();
  EXPECT_EQ(StageShapes(*stages, torch::randn({3, 1, 28, 28})),
            (std::vector<Shape>{{3, 33}, {3, 65}, {3, 10}}));
}

TEST(SplitCnn, StageShapesForEveryStageCount) {
  const torch::Tensor input = torch::randn({4, 1, 28, 28});
  const std::vector<std::vector<Shape>> expected = {
      {{4, 10}},
      {{4, 64, 7, 7}, {4, 10}},
      {{4, 32, 14, 14}, {4, 64, 7, 7}, {4, 10}},
      {{4, 32, 14, 14}, {4, 64, 7, 7}, {4, 128}, {4, 10}},
  };
  for (int s = 1; s <= 4; ++s) {
    torch::manual_seed(1);
    auto stages = SplitCnn(s);
    ASSERT_TRUE(stages.ok()) << stages.status().ToString();
    EXPECT_EQ(StageShapes(*stages, input), expected[static_cast<size_t>(s - 1)]) << "stages " << s;
  }
}

TEST(SplitModels, RejectsTooManyStages) {
  auto mlp = SplitMlp(kDefaultMlpWidths, 9);
  ASSERT_FALSE(mlp.ok());
  EXPECT_EQ(mlp.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(mlp.status().message(), "stages = 9: the mlp has at most 4 stages");
  auto cnn = SplitCnn(5);
  ASSERT_FALSE(cnn.ok());
  EXPECT_EQ(cnn.status().message(), "stages = 5: the cnn has at most 4 stages");
  EXPECT_FALSE(SplitMlp(kDefaultMlpWidths, 0).ok());
  EXPECT_FALSE(SplitCnn(0).ok());
  EXPECT_FALSE(SplitMlp({784}, 1).ok());
  EXPECT_FALSE(SplitMlp({784, 0, 10}, 1).ok());
  EXPECT_FALSE(BuildModel("transformer", 1).ok());
}

TEST(SplitModels, InitIsDeterministicGivenTheSeed) {
  auto parameters = [](uint64_t seed) {
    torch::manual_seed(seed);
    auto stages = BuildModel("cnn", 2);
    EXPECT_TRUE(stages.ok());
    return torch::cat([&] {
      std::vector<torch::Tensor> flat;
      for (const auto& p : StageParameters(*stages)) flat.push_back(p.detach().flatten());
      return flat;
    }());
  };
  EXPECT_TRUE(torch::equal(parameters(3), parameters(3)));
  EXPECT_FALSE(torch::equal(parameters(3), parameters(4)));
}

// Ten classes, each a fixed random +-1 pattern plus noise: linearly separable.
Dataset SeparableDataset(int64_t n, uint64_t seed) {
  torch::Generator generator = at::detail::createCPUGenerator(seed);
  const torch::Tensor patterns =
      torch::randint(0, 2, {kNumClasses, 1, 28, 28}, at::detail::createCPUGenerator(99),
                     torch::kFloat32) *
          2 -
      1;
  const torch::Tensor labels = torch::randint(0, kNumClasses, {n}, generator, torch::kInt64);
  const torch::Tensor noise = torch::randn({n, 1, 28, 28}, generator);
  return Dataset{.images = patterns.index_select(0, labels) + 1.5 * noise, .labels = labels};
}

// Counts calls and checks the trainer's side of the hook contract.
class RecordingHook final : public BoundaryHook {
 public:
  torch::Tensor Forward(size_t boundary, const torch::Tensor& activation, bool training) override {
    if (boundary >= calls.size()) calls.resize(boundary + 1);
    ++calls[boundary];
    if (training) {
      EXPECT_TRUE(activation.requires_grad());
      ++training_calls;
    }
    EXPECT_GE(activation.min().item<float>(), 0.0f);
    return activation;
  }
  void OnStepEnd(int64_t step) override {
    EXPECT_EQ(step, steps);
    ++steps;
  }

  std::vector<int64_t> calls;
  int64_t training_calls = 0;
  int64_t steps = 0;
};

TEST(Trainer, ReachesHighAccuracyOnSeparableData) {
  SetNumThreads(2);
  const Dataset train = SeparableDataset(2000, 1);
  const Dataset test = SeparableDataset(500, 2);
  torch::manual_seed(1);
  auto stages = SplitMlp({784, 64, 32, 10}, 3);
  ASSERT_TRUE(stages.ok());
  RecordingHook hook;
  std::ostringstream progress;
  const TrainOptions options{.epochs = 3, .batch_size = 64, .seed = 1, .eval_batch_size = 250};
  auto report = Train(*stages, train, test, options, &hook, &progress);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_EQ(report->epochs.size(), 3u);
  EXPECT_GT(report->epochs.back().test_accuracy, 0.9);
  EXPECT_LT(report->epochs.back().loss, report->epochs.front().loss);

  // 32 batches per epoch, 3 epochs; 2 test batches per epoch at both boundaries.
  EXPECT_EQ(hook.steps, 96);
  EXPECT_EQ(hook.training_calls, 2 * 96);
  EXPECT_EQ(hook.calls, (std::vector<int64_t>{96 + 6, 96 + 6}));
  EXPECT_NE(progress.str().find("epoch 3/3"), std::string::npos) << progress.str();
  EXPECT_NE(progress.str().find("samples/s"), std::string::npos);
  EXPECT_NE(progress.str().find("test "), std::string::npos);
}

TEST(Trainer, AdamAlsoLearns) {
  const Dataset train = SeparableDataset(1000, 3);
  const Dataset test = SeparableDataset(300, 4);
  torch::manual_seed(2);
  auto stages = SplitMlp({784, 32, 10}, 2);
  ASSERT_TRUE(stages.ok());
  const TrainOptions options{.epochs = 2,
                             .batch_size = 32,
                             .optimizer = OptimizerKind::kAdam,
                             .learning_rate = 1e-3,
                             .schedule = LrSchedule::kConstant};
  auto report = Train(*stages, train, test, options);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_GT(report->epochs.back().test_accuracy, 0.9);
}

// A hook that zeroes the boundary: gradients must reach the sender through it (as zeros), so
// the hook really sits inside the autograd graph.
class ZeroHook final : public BoundaryHook {
 public:
  torch::Tensor Forward(size_t, const torch::Tensor& activation, bool) override {
    return activation * 0.0f;
  }
};

TEST(Trainer, GradientsFlowThroughTheHook) {
  torch::manual_seed(1);
  auto stages = SplitMlp({784, 16, 10}, 2);
  ASSERT_TRUE(stages.ok());
  const Dataset data = SeparableDataset(8, 5);
  ZeroHook zero;
  torch::nn::functional::cross_entropy(ForwardStages(*stages, data.images, &zero, true),
                                       data.labels)
      .backward();
  for (const auto& p : (*stages)[0]->parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().abs().max().item<float>(), 0.0f);
  }
  for (auto& stage : *stages) stage->zero_grad();
  DenseBoundary dense;
  torch::nn::functional::cross_entropy(ForwardStages(*stages, data.images, &dense, true),
                                       data.labels)
      .backward();
  EXPECT_GT((*stages)[0]->parameters()[0].grad().abs().max().item<float>(), 0.0f);
}

// Micro-batches: each batch crosses the hook as M forwards and backwards, the gradients add up
// to the whole batch's (each part's loss weighted by its share), and the optimizer steps once
// per batch; so the trained weights match the run without micro-batches up to float rounding.
// Cases: even parts; very unequal parts (5 rows as 1 + 1 + 1 + 2, where weighting each part
// by 1/M instead of its share would move the weights at first order); and a last batch of 2
// rows, fewer than M.
TEST(Trainer, MicroBatchesAccumulateToTheBatchGradient) {
  struct Case {
    int64_t samples, batch, micro_batches, steps;
  };
  for (const Case c : {Case{512, 64, 4, 8}, Case{5, 5, 4, 1}, Case{130, 64, 3, 3}}) {
    const Dataset train = SeparableDataset(c.samples, 7);
    const Dataset test = SeparableDataset(100, 8);
    auto trained = [&](int64_t micro_batches, RecordingHook* hook) {
      torch::manual_seed(3);
      auto stages = SplitMlp({784, 32, 16, 10}, 3);
      EXPECT_TRUE(stages.ok());
      const TrainOptions options{.epochs = 1,
                                 .batch_size = c.batch,
                                 .micro_batches = micro_batches,
                                 .learning_rate = 0.5,
                                 .schedule = LrSchedule::kConstant,
                                 .eval_batch_size = 100};
      EXPECT_TRUE(Train(*stages, train, test, options, hook).ok());
      std::vector<torch::Tensor> flat;
      for (const auto& p : StageParameters(*stages)) flat.push_back(p.detach().flatten());
      return torch::cat(flat);
    };
    torch::manual_seed(3);
    auto init = SplitMlp({784, 32, 16, 10}, 3);
    ASSERT_TRUE(init.ok());
    std::vector<torch::Tensor> flat;
    for (const auto& p : StageParameters(*init)) flat.push_back(p.detach().flatten());
    const torch::Tensor start = torch::cat(flat);
    RecordingHook whole, split;
    const torch::Tensor a = trained(1, &whole);
    const torch::Tensor b = trained(c.micro_batches, &split);
    SCOPED_TRACE(::testing::Message()
                 << c.samples << " samples, batch " << c.batch << ", M " << c.micro_batches);
    // Float rounding differs with the summation order; a wrong weighting moves the weights by
    // a tenth of their step or more.
    const float moved = (a - start).abs().max().item<float>();
    EXPECT_GT(moved, 1e-2f);
    EXPECT_LT((a - b).abs().max().item<float>(), 1e-3f * moved);
    EXPECT_EQ(whole.steps, c.steps);
    EXPECT_EQ(split.steps, c.steps);  // one optimizer step per batch
    EXPECT_EQ(whole.training_calls, 2 * c.steps);
    int64_t crossings = 0;
    for (int64_t begin = 0; begin < c.samples; begin += c.batch) {
      crossings += std::min(c.micro_batches, std::min(c.batch, c.samples - begin));
    }
    EXPECT_EQ(split.training_calls, 2 * crossings);  // each part crosses both boundaries
  }
}

TEST(Trainer, RejectsBadOptions) {
  torch::manual_seed(1);
  auto stages = SplitMlp({784, 8, 10}, 1);
  ASSERT_TRUE(stages.ok());
  const Dataset data = SeparableDataset(16, 6);
  EXPECT_FALSE(Train(*stages, data, data, TrainOptions{.epochs = 0}).ok());
  EXPECT_FALSE(Train(*stages, data, data, TrainOptions{.batch_size = 0}).ok());
  EXPECT_FALSE(Train(*stages, data, data, TrainOptions{.learning_rate = -1.0}).ok());
  for (int64_t micro_batches : {int64_t{0}, int64_t{129}}) {
    const auto bad = Train(*stages, data, data, TrainOptions{.micro_batches = micro_batches});
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find("micro_batches"), std::string::npos)
        << bad.status().ToString();
  }
  Stages none;
  EXPECT_FALSE(Train(none, data, data, TrainOptions{}).ok());
  EXPECT_FALSE(Train(*stages, Dataset{}, data, TrainOptions{}).ok());
}

TEST(Runtime, ReportsThreadsAndBlas) {
  SetNumThreads(2);
  const TorchRuntimeInfo info = ProbeTorchRuntime();
  EXPECT_EQ(info.num_threads, 2);
  EXPECT_FALSE(info.blas.empty());
  EXPECT_GT(info.matmul_1024_ms, 0.0);
  std::printf("blas: %s  threads %d  matmul 1024^3: %.1f ms\n", info.blas.c_str(), info.num_threads,
              info.matmul_1024_ms);
}

}  // namespace
}  // namespace sparselink::torch_adapter
