// Pipeline training across ranks (sparselink/torch/pipeline.hpp) against training in one
// process: with the same seed, model, data and options, every rank's run over the in-process
// transport (ranks as threads) gives the same contracts, wire bytes and accuracy as
// Train with RoutedBoundaries, bit for bit, for both schedules and for micro-batches; and a
// job stopped and resumed from its ranks' checkpoints ends as the job never stopped.
#include "sparselink/torch/pipeline.hpp"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <thread>

#include "sparselink/torch/runtime.hpp"

namespace sparselink::torch_adapter {
namespace {

bool Contains(const Status& s, std::string_view text) {
  return s.message().find(text) != std::string::npos;
}

// A small separable problem in the model's input shape (1 x 28 x 28 images, 10 classes).
Dataset MakeData(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  Dataset d;
  d.labels = torch::randint(0, 10, {n}, torch::kInt64);
  d.images = torch::randn({n, 1, 28, 28}) * 0.5;
  for (int64_t i = 0; i < n; ++i) {
    d.images[i][0][d.labels[i].item<int64_t>()] += 2.0;  // a row per class
  }
  return d;
}

RoutedBoundaryOptions Routing() {
  return {.policy = RoutingPolicy::kSensitivity,
          .lossy_codec = ValueCodec::kInt8,
          .gradient_codec = ValueCodec::kInt8,
          .negotiate_every = 4,
          .summary_every = 3,
          .link_budget_bytes_per_step = 60000};
}

TrainOptions Training(int micro_batches) {
  return {.epochs = 2,
          .batch_size = 32,
          .micro_batches = micro_batches,
          .seed = 5,
          .num_threads = 1,
          .eval_batch_size = 100};
}

struct RunResult {
  std::vector<EpochStats> epochs;
  std::vector<BoundaryReport> boundaries;
};

RunResult InOneProcess(const Dataset& train, const Dataset& test,
                       const RoutedBoundaryOptions& routing, const TrainOptions& training) {
  torch::manual_seed(11);
  auto stages = BuildModel("mlp", 4);
  EXPECT_TRUE(stages.ok());
  auto hook = RoutedBoundaries::Create(routing, &*stages);
  EXPECT_TRUE(hook.ok());
  auto report = Train(*stages, train, test, training, hook->get());
  EXPECT_TRUE(report.ok()) << report.status().ToString();
  return {report->epochs, (*hook)->Report()};
}

// Every rank's result and model, the ranks run as threads over an in-process hub.
struct RanksRun {
  std::vector<Result<PipelineReport>> results;
  std::vector<Stages> models;
};

RanksRun RunRanks(const Dataset& train, const Dataset& test, const PipelineOptions& options) {
  auto hub = MakeInProcessHub(4);
  EXPECT_TRUE(hub.ok());
  RanksRun run;
  run.results.assign(4, Status(ErrorCode::kIo, "not run"));
  // Every rank builds the whole model from the same seed, as separate processes would.
  for (int r = 0; r < 4; ++r) {
    torch::manual_seed(11);
    run.models.push_back(*BuildModel("mlp", 4));
  }
  std::vector<std::thread> ranks;
  for (int r = 0; r < 4; ++r) {
    ranks.emplace_back([&, r] {
      auto transport = MakeInProcessRank(*hub, r);
      ASSERT_TRUE(transport.ok());
      run.results[static_cast<size_t>(r)] = TrainPipelineStage(
          **transport, run.models[static_cast<size_t>(r)], train, test, options, nullptr);
    });
  }
  for (auto& rank : ranks) rank.join();
  return run;
}

RunResult AcrossRanks(const Dataset& train, const Dataset& test, const PipelineOptions& options) {
  const RanksRun run = RunRanks(train, test, options);
  for (const auto& r : run.results) EXPECT_TRUE(r.ok()) << r.status().ToString();
  return {run.results[0]->train.epochs, run.results[0]->boundaries};
}

void ExpectSameRun(const RunResult& one, const RunResult& many) {
  ASSERT_EQ(one.epochs.size(), many.epochs.size());
  for (size_t e = 0; e < one.epochs.size(); ++e) {
    EXPECT_EQ(one.epochs[e].test_accuracy, many.epochs[e].test_accuracy) << "epoch " << e;
    EXPECT_EQ(one.epochs[e].train_accuracy, many.epochs[e].train_accuracy) << "epoch " << e;
    EXPECT_EQ(one.epochs[e].loss, many.epochs[e].loss) << "epoch " << e;
  }
  ASSERT_EQ(one.boundaries.size(), many.boundaries.size());
  for (size_t b = 0; b < one.boundaries.size(); ++b) {
    const BoundaryReport& x = one.boundaries[b];
    const BoundaryReport& y = many.boundaries[b];
    EXPECT_EQ(x.forward_wire_bytes, y.forward_wire_bytes) << "boundary " << b;
    EXPECT_EQ(x.backward_wire_bytes, y.backward_wire_bytes) << "boundary " << b;
    EXPECT_EQ(x.dense_fp32_bytes, y.dense_fp32_bytes) << "boundary " << b;
    EXPECT_EQ(x.packets, y.packets) << "boundary " << b;
    EXPECT_EQ(x.contract.version, y.contract.version) << "boundary " << b;
    EXPECT_EQ(x.contract.keep, y.contract.keep) << "boundary " << b;
    ASSERT_EQ(x.history.size(), y.history.size()) << "boundary " << b;
    for (size_t h = 0; h < x.history.size(); ++h) {
      EXPECT_EQ(x.history[h].contract.keep, y.history[h].contract.keep);
      EXPECT_EQ(x.history[h].contract.bound_by, y.history[h].contract.bound_by);
    }
    EXPECT_EQ(x.sensitivity, y.sensitivity) << "boundary " << b;
    EXPECT_EQ(x.receiver_sensitivity, y.receiver_sensitivity) << "boundary " << b;
  }
}

class PipelineEquivalence : public ::testing::TestWithParam<std::tuple<Schedule, int>> {};

TEST_P(PipelineEquivalence, AcrossRanksEqualsOneProcess) {
  SetNumThreads(1);
  const auto [schedule, micro_batches] = GetParam();
  const Dataset train = MakeData(320, 1);
  const Dataset test = MakeData(200, 2);
  const RunResult one = InOneProcess(train, test, Routing(), Training(micro_batches));
  const RunResult many = AcrossRanks(train, test,
                                     {.schedule = schedule,
                                      .boundary = Routing(),
                                      .train = Training(micro_batches),
                                      .timeout = std::chrono::milliseconds(30000)});
  ExpectSameRun(one, many);
  EXPECT_GT(one.boundaries.at(0).history.size(), 2u);  // the run did negotiate
}

INSTANTIATE_TEST_SUITE_P(Schedules, PipelineEquivalence,
                         ::testing::Values(std::tuple{Schedule::kGPipe, 1},
                                           std::tuple{Schedule::kOneFOneB, 1},
                                           std::tuple{Schedule::kGPipe, 4},
                                           std::tuple{Schedule::kOneFOneB, 4}));

// A job stopped after epoch 1 (every rank leaves its file, as if killed there) and resumed
// ends as the job never stopped: the same figures, contracts, maps and bytes, and every rank's
// stage bit for bit.
TEST(PipelineResume, StoppedAndResumedEqualsTheJobNeverStopped) {
  SetNumThreads(1);
  const Dataset train = MakeData(320, 1);
  const Dataset test = MakeData(200, 2);
  PipelineOptions options{.schedule = Schedule::kOneFOneB,
                          .boundary = Routing(),
                          .train = Training(2),
                          .timeout = std::chrono::milliseconds(30000)};
  options.train.epochs = 3;
  const RanksRun whole = RunRanks(train, test, options);
  const auto dir = std::filesystem::path(::testing::TempDir()) / "sparselink_pipeline_resume";
  std::filesystem::remove_all(dir);
  PipelineOptions stop = options;
  stop.train.checkpoint = {.dir = dir, .stop_after = 1};
  const RanksRun stopped = RunRanks(train, test, stop);
  for (const auto& r : stopped.results) ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(stopped.results[0]->train.epochs.size(), 1u);
  PipelineOptions resume = options;
  resume.train.checkpoint = {.resume = dir};
  const RanksRun resumed = RunRanks(train, test, resume);
  for (const auto& r : resumed.results) ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectSameRun({whole.results[0]->train.epochs, whole.results[0]->boundaries},
                {resumed.results[0]->train.epochs, resumed.results[0]->boundaries});
  for (size_t r = 0; r < 4; ++r) {
    const auto x = whole.models[r][r]->parameters();
    const auto y = resumed.models[r][r]->parameters();
    for (size_t p = 0; p < x.size(); ++p) {
      EXPECT_TRUE(torch::equal(x[p], y[p])) << "rank " << r << " parameter " << p;
    }
  }
}

// Resume needs every rank's file of one epoch: a missing one, or files of two epochs, stop
// every rank with the same line.
TEST(PipelineResume, EveryRankRefusesAMissingFileOrFilesOfTwoEpochs) {
  SetNumThreads(1);
  const Dataset train = MakeData(64, 1);
  const Dataset test = MakeData(50, 2);
  const auto dir = std::filesystem::path(::testing::TempDir()) / "sparselink_pipeline_refuse";
  std::filesystem::remove_all(dir);
  PipelineOptions options{
      .boundary = Routing(), .train = Training(1), .timeout = std::chrono::milliseconds(30000)};
  options.train.checkpoint = {.dir = dir, .stop_after = 1};
  for (const auto& r : RunRanks(train, test, options).results) ASSERT_TRUE(r.ok());
  const auto epoch1 = dir / "epoch1-rank-2.ckpt";
  std::filesystem::copy_file(CheckpointPath(dir, 2), epoch1);
  options.train.checkpoint = {.dir = dir, .resume = dir};
  for (const auto& r : RunRanks(train, test, options).results) ASSERT_TRUE(r.ok());

  std::filesystem::rename(epoch1, CheckpointPath(dir, 2));  // rank 2 still at epoch 1
  options.train.checkpoint = {.resume = dir};
  for (const auto& r : RunRanks(train, test, options).results) {
    EXPECT_TRUE(Contains(r.status(),
                         "rank 0 after epoch 2, rank 1 after epoch 2, rank 2 after "
                         "epoch 1, rank 3 after epoch 2"))
        << r.status().message();
  }
  std::filesystem::remove(CheckpointPath(dir, 1));
  for (const auto& r : RunRanks(train, test, options).results) {
    EXPECT_EQ(r.status().code(), ErrorCode::kIo);
    EXPECT_TRUE(Contains(r.status(), "rank-1.ckpt: missing")) << r.status().message();
  }
}

TEST(PipelineSchedule, OneFOneBWarmsUpThenAlternates) {
  const auto ops = ScheduleOps(Schedule::kOneFOneB, 4, 1, 4);
  std::string order;
  for (const PipelineOp& op : ops) {
    order += op.forward ? 'F' : 'B';
    order += std::to_string(op.micro);
  }
  EXPECT_EQ(order, "F0F1F2B0F3B1B2B3");
  EXPECT_EQ(ScheduleOps(Schedule::kOneFOneB, 4, 3, 2).front().forward, true);
  EXPECT_EQ(ScheduleOps(Schedule::kGPipe, 4, 0, 2).size(), 4u);
  EXPECT_DOUBLE_EQ(BubbleFraction(4, 4), 3.0 / 7.0);
  EXPECT_EQ(ParseSchedule("1f1b").value(), Schedule::kOneFOneB);
  EXPECT_NE(ParseSchedule("zigzag").status().message().find("--schedule = zigzag"),
            std::string::npos);
}

TEST(PipelineRun, RefusesAWorldOtherThanTheStages) {
  auto hub = MakeInProcessHub(1);
  auto transport = MakeInProcessRank(*hub, 0);
  auto stages = BuildModel("mlp", 2);
  ASSERT_TRUE(stages.ok());
  const Dataset data = MakeData(32, 3);
  auto run = TrainPipelineStage(**transport, *stages, data, data, {}, nullptr);
  ASSERT_FALSE(run.ok());
  EXPECT_NE(run.status().message().find("world size = 1"), std::string::npos)
      << run.status().message();
}

}  // namespace
}  // namespace sparselink::torch_adapter
