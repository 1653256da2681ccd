// Checkpoints (sparselink/torch/checkpoint.hpp): the file round-trips and is written
// atomically; a missing, foreign, truncated or corrupt one is refused with one error naming
// the file and what is wrong; and a run stopped after an epoch and resumed ends as the run
// never stopped, bit for bit (weights, figures, contracts, maps, bytes), in one process.
// Across ranks: tests/pipeline_test.cc.
#include "sparselink/torch/checkpoint.hpp"

#include <gtest/gtest.h>
#include <torch/torch.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <filesystem>
#include <fstream>

#include "sparselink/torch/routed_boundary.hpp"
#include "sparselink/torch/runtime.hpp"
#include "sparselink/torch/trainer.hpp"

namespace sparselink::torch_adapter {
namespace {

namespace fs = std::filesystem;

bool Contains(const Status& s, std::string_view text) {
  return s.message().find(text) != std::string::npos;
}

// A fresh directory under the test's temporary directory.
fs::path TempDir(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("sparselink_checkpoint_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

Checkpoint Sample() {
  Checkpoint c{.rank = 1, .world_size = 2, .epoch = 3, .config = "a=1\nb=two\n"};
  c.Add("first", {1, 2, 3});
  c.Add("empty", {});
  return c;
}

void WriteBytes(const fs::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// The header's own checksum recomputed, as a writer of a changed header would.
void ResealHeader(std::vector<uint8_t>& bytes) {
  const uint64_t sum = XXH3_64bits(bytes.data(), 48);
  for (int i = 0; i < 8; ++i)
    bytes[48 + static_cast<size_t>(i)] = static_cast<uint8_t>(sum >> (8 * i));
}

TEST(CheckpointFile, RoundTripsEveryField) {
  const Checkpoint c = Sample();
  const std::vector<uint8_t> bytes = EncodeCheckpoint(c);
  EXPECT_EQ(bytes[0], 'S');
  auto back = DecodeCheckpoint(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->rank, 1u);
  EXPECT_EQ(back->world_size, 2u);
  EXPECT_EQ(back->epoch, 3u);
  EXPECT_EQ(back->config, c.config);
  ASSERT_EQ(back->sections.size(), 2u);
  EXPECT_EQ(*back->Find("first"), (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_TRUE(back->Find("empty")->empty());
  EXPECT_EQ(back->Find("absent"), nullptr);
  EXPECT_EQ(CheckpointPath("d", 3), fs::path("d/rank-3.ckpt"));
}

TEST(CheckpointFile, WriteReplacesTheFileAndLeavesNoPartial) {
  const fs::path dir = TempDir("write") / "nested";
  const fs::path path = CheckpointPath(dir, 1);
  Checkpoint c = Sample();
  ASSERT_TRUE(WriteCheckpoint(path, c).ok());
  c.epoch = 4;
  ASSERT_TRUE(WriteCheckpoint(path, c).ok());
  auto read = ReadCheckpoint(path, 1, 2, c.config);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->epoch, 4u);
  EXPECT_FALSE(fs::exists(path.string() + ".partial"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
}

TEST(CheckpointFile, UnwritableDirectoryIsAnIoErrorNamingTheFile) {
  const Status s = WriteCheckpoint("/proc/nope/rank-0.ckpt", Sample());
  EXPECT_EQ(s.code(), ErrorCode::kIo);
  EXPECT_TRUE(Contains(s, "checkpoint = /proc/nope/rank-0.ckpt")) << s.message();
}

// Every refusal: one error naming the file and what is wrong.
struct BadCase {
  const char* name;
  ErrorCode code;
  const char* text;
};

class BadCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    path_ = CheckpointPath(dir_, 1);
    good_ = EncodeCheckpoint(Sample());
  }
  void Expect(const std::vector<uint8_t>& bytes, ErrorCode code, const std::string& text,
              uint32_t rank = 1, uint32_t world = 2, const std::string& config = "a=1\nb=two\n") {
    WriteBytes(path_, bytes);
    auto read = ReadCheckpoint(path_, rank, world, config);
    ASSERT_FALSE(read.ok()) << text;
    EXPECT_EQ(read.status().code(), code) << read.status().ToString();
    EXPECT_TRUE(Contains(read.status(), "checkpoint = " + path_.string() + ": "))
        << read.status().message();
    EXPECT_TRUE(Contains(read.status(), text)) << read.status().message();
    EXPECT_EQ(read.status().message().find('\n'), std::string::npos);
  }
  fs::path dir_, path_;
  std::vector<uint8_t> good_;
};

TEST_F(BadCheckpoint, MissingFileIsNamed) {
  auto read = ReadCheckpoint(dir_ / "rank-7.ckpt", 7, 8, "");
  EXPECT_EQ(read.status().code(), ErrorCode::kIo);
  EXPECT_TRUE(Contains(read.status(), "rank-7.ckpt: missing")) << read.status().message();
  auto directory = ReadCheckpoint(dir_, 0, 1, "");
  EXPECT_TRUE(Contains(directory.status(), "is a directory")) << directory.status().message();
}

TEST_F(BadCheckpoint, ForeignFilesSayTheyAreNotCheckpoints) {
  Expect({}, ErrorCode::kInvalidArgument, "empty: not a sparselink checkpoint");
  Expect({'{', '"', 'a'}, ErrorCode::kInvalidArgument, "not a sparselink checkpoint");
  std::vector<uint8_t> json(200, ' ');
  json[0] = '{';
  Expect(json, ErrorCode::kInvalidArgument, "not a sparselink checkpoint (it starts with 7b 20");
}

TEST_F(BadCheckpoint, TruncatedFilesSaySo) {
  Expect({'S', 'L'}, ErrorCode::kCorruptPacket, "truncated: 2 bytes, less than the 56-byte");
  Expect(std::vector<uint8_t>(good_.begin(), good_.begin() + 60), ErrorCode::kCorruptPacket,
         "truncated: 4 bytes of payload, the header declares");
  Expect(std::vector<uint8_t>(good_.begin(), good_.end() - 1), ErrorCode::kCorruptPacket,
         "truncated");
  std::vector<uint8_t> longer = good_;
  longer.push_back(0);
  Expect(longer, ErrorCode::kCorruptPacket, "1 bytes after the payload");
}

TEST_F(BadCheckpoint, FlippedBitsAreCaughtByTheChecksums) {
  for (size_t at : {size_t{8}, size_t{20}, size_t{40}}) {
    std::vector<uint8_t> bad = good_;
    bad[at] ^= 0x10;
    Expect(bad, ErrorCode::kCorruptPacket, "header checksum");
  }
  for (size_t at = kCheckpointHeaderBytes; at < good_.size(); ++at) {
    std::vector<uint8_t> bad = good_;
    bad[at] ^= 0x01;
    Expect(bad, ErrorCode::kCorruptPacket, "payload checksum");
  }
}

TEST_F(BadCheckpoint, AnotherFormatVersionIsUnsupported) {
  std::vector<uint8_t> bad = good_;
  bad[4] = 9;
  ResealHeader(bad);
  Expect(bad, ErrorCode::kUnsupported, "format version = 9: this build reads version 1");
}

TEST_F(BadCheckpoint, AnotherRanksFileIsRefused) {
  Expect(good_, ErrorCode::kInvalidArgument, "written by rank 1 of 2, this is rank 0 of 2", 0, 2);
  Expect(good_, ErrorCode::kInvalidArgument, "written by rank 1 of 2, this is rank 1 of 4", 1, 4);
}

TEST_F(BadCheckpoint, AnotherConfigurationNamesTheFirstSettingThatDiffers) {
  Expect(good_, ErrorCode::kInvalidArgument,
         "written by another configuration: b = three here, two there", 1, 2, "a=1\nb=three\n");
  Expect(good_, ErrorCode::kInvalidArgument, "c = 5 here, absent from the checkpoint", 1, 2,
         "a=1\nb=two\nc=5\n");
  Expect(good_, ErrorCode::kInvalidArgument, "b = two there, absent here", 1, 2, "a=1\n");
}

// The section count is capped (4096) and every count is checked against the bytes left: a
// payload claiming more sections, or a section longer than the file, is refused by name.
TEST_F(BadCheckpoint, CountsPastTheLimitOrTheBytesLeftAreRefused) {
  Checkpoint empty{.config = "a=1\n"};
  std::vector<uint8_t> bytes = EncodeCheckpoint(empty);
  const size_t count_at = kCheckpointHeaderBytes + 8 + 4;  // after the config's length and text
  const auto reseal = [&](std::vector<uint8_t>& b) {
    const uint64_t payload =
        XXH3_64bits(b.data() + kCheckpointHeaderBytes, b.size() - kCheckpointHeaderBytes);
    for (int i = 0; i < 8; ++i)
      b[40 + static_cast<size_t>(i)] = static_cast<uint8_t>(payload >> (8 * i));
    ResealHeader(b);
  };
  bytes[count_at] = 0x01;  // 4097 sections
  bytes[count_at + 1] = 0x10;
  reseal(bytes);
  auto many = DecodeCheckpoint(bytes);
  EXPECT_TRUE(Contains(many.status(), "payload.sections = 4097: more than 4096"))
      << many.status().message();
  std::vector<uint8_t> one = EncodeCheckpoint([] {
    Checkpoint c{.config = "a=1\n"};
    c.Add("s", {7});
    return c;
  }());
  one[one.size() - 9] = 0xff;  // the section's length: 255 bytes where 1 is left
  reseal(one);
  auto long_section = DecodeCheckpoint(one);
  EXPECT_EQ(long_section.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(long_section.status(), "payload.section s count = 255: more than the 1"))
      << long_section.status().message();
}

// ---------------------------------------------------------------------------------------
// A run stopped and resumed against the run never stopped, in one process.

Dataset MakeData(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  Dataset d;
  d.labels = torch::randint(0, 10, {n}, torch::kInt64);
  d.images = torch::randn({n, 1, 28, 28}) * 0.5;
  for (int64_t i = 0; i < n; ++i) d.images[i][0][d.labels[i].item<int64_t>()] += 2.0;
  return d;
}

struct RunSetup {
  std::string model = "mlp";
  OptimizerKind optimizer = OptimizerKind::kSgdMomentum;
  int64_t micro_batches = 1;
};

Stages MakeModel(const RunSetup& setup) {
  torch::manual_seed(11);
  auto stages = setup.model == "cnn" ? SplitCnn(4) : SplitMlp({784, 96, 80, 64, 10}, 4);
  EXPECT_TRUE(stages.ok());
  return *stages;
}

RoutedBoundaryOptions Routing() {
  return {.policy = RoutingPolicy::kSensitivity,
          .negotiate_every = 4,
          .summary_every = 3,
          .link_budget_bytes_per_step = 20000,
          .link = {.bandwidth_bits_per_s = 1e8}};  // modelled link seconds to compare
}

TrainOptions Training(const RunSetup& setup, CheckpointOptions checkpoint = {}) {
  return {.epochs = 3,
          .batch_size = 32,
          .micro_batches = setup.micro_batches,
          .optimizer = setup.optimizer,
          .learning_rate = setup.optimizer == OptimizerKind::kAdam ? 1e-3 : 0.05,
          .seed = 5,
          .num_threads = 1,
          .eval_batch_size = 100,
          .checkpoint = std::move(checkpoint)};
}

struct RunResult {
  Stages stages;
  std::vector<EpochStats> epochs;
  std::vector<BoundaryReport> boundaries;
  Status status;
};

RunResult TrainOnce(const RunSetup& setup, const Dataset& train, const Dataset& test,
                    CheckpointOptions checkpoint = {}) {
  RunResult run{.stages = MakeModel(setup)};
  auto hook = RoutedBoundaries::Create(Routing(), &run.stages);
  EXPECT_TRUE(hook.ok());
  auto report = Train(run.stages, train, test, Training(setup, std::move(checkpoint)), hook->get());
  run.status = report.status();
  if (report.ok()) run.epochs = report->epochs;
  run.boundaries = (*hook)->Report();
  return run;
}

void ExpectSameRun(const RunResult& a, const RunResult& b) {
  ASSERT_TRUE(a.status.ok()) << a.status.ToString();
  ASSERT_TRUE(b.status.ok()) << b.status.ToString();
  ASSERT_EQ(a.epochs.size(), b.epochs.size());
  for (size_t e = 0; e < a.epochs.size(); ++e) {
    EXPECT_EQ(a.epochs[e].epoch, b.epochs[e].epoch);
    EXPECT_EQ(a.epochs[e].loss, b.epochs[e].loss) << "epoch " << e;
    EXPECT_EQ(a.epochs[e].train_accuracy, b.epochs[e].train_accuracy) << "epoch " << e;
    EXPECT_EQ(a.epochs[e].test_accuracy, b.epochs[e].test_accuracy) << "epoch " << e;
  }
  ASSERT_EQ(a.boundaries.size(), b.boundaries.size());
  for (size_t i = 0; i < a.boundaries.size(); ++i) {
    const BoundaryReport& x = a.boundaries[i];
    const BoundaryReport& y = b.boundaries[i];
    EXPECT_EQ(x.forward_wire_bytes, y.forward_wire_bytes) << "boundary " << i;
    EXPECT_EQ(x.backward_wire_bytes, y.backward_wire_bytes) << "boundary " << i;
    EXPECT_EQ(x.dense_fp32_bytes, y.dense_fp32_bytes) << "boundary " << i;
    EXPECT_EQ(x.packets, y.packets) << "boundary " << i;
    EXPECT_EQ(x.modelled_link_seconds, y.modelled_link_seconds) << "boundary " << i;
    EXPECT_EQ(x.contract.version, y.contract.version) << "boundary " << i;
    EXPECT_EQ(x.contract.keep, y.contract.keep) << "boundary " << i;
    ASSERT_EQ(x.history.size(), y.history.size()) << "boundary " << i;
    for (size_t h = 0; h < x.history.size(); ++h) {
      EXPECT_EQ(x.history[h].step, y.history[h].step);
      EXPECT_EQ(x.history[h].contract.keep, y.history[h].contract.keep);
    }
    EXPECT_EQ(x.sensitivity, y.sensitivity) << "boundary " << i;
    EXPECT_EQ(x.receiver_sensitivity, y.receiver_sensitivity) << "boundary " << i;
  }
  for (size_t s = 0; s < a.stages.size(); ++s) {
    const auto x = a.stages[s]->parameters();
    const auto y = b.stages[s]->parameters();
    ASSERT_EQ(x.size(), y.size());
    for (size_t p = 0; p < x.size(); ++p) {
      EXPECT_TRUE(torch::equal(x[p], y[p])) << "stage " << s << " parameter " << p;
    }
  }
}

class TrainResume : public ::testing::TestWithParam<RunSetup> {};

// Stopped after epoch 1 (as if killed), resumed: the run never stopped, bit for bit.
TEST_P(TrainResume, StoppedAndResumedEqualsTheRunNeverStopped) {
  SetNumThreads(1);
  const RunSetup setup = GetParam();
  const Dataset train = MakeData(setup.model == "cnn" ? 160 : 320, 1);
  const Dataset test = MakeData(100, 2);
  const RunResult whole = TrainOnce(setup, train, test);
  const fs::path dir = TempDir("resume_" + setup.model + std::to_string(setup.micro_batches) +
                               std::to_string(int(setup.optimizer)));
  const RunResult stopped = TrainOnce(setup, train, test, {.dir = dir, .stop_after = 1});
  ASSERT_TRUE(stopped.status.ok()) << stopped.status.ToString();
  ASSERT_EQ(stopped.epochs.size(), 1u);
  const RunResult resumed = TrainOnce(setup, train, test, {.dir = dir, .resume = dir});
  ExpectSameRun(whole, resumed);
  EXPECT_GT(whole.boundaries.at(0).history.size(), 2u);  // negotiations on both sides of it
  auto last = ReadCheckpoint(CheckpointPath(dir, 0), 0, 1, "");
  EXPECT_TRUE(Contains(last.status(), "another configuration")) << last.status().message();
}

INSTANTIATE_TEST_SUITE_P(
    Runs, TrainResume,
    ::testing::Values(RunSetup{}, RunSetup{.optimizer = OptimizerKind::kAdam, .micro_batches = 2},
                      RunSetup{.model = "cnn"}),
    [](const ::testing::TestParamInfo<RunSetup>& param_info) {
      const RunSetup& p = param_info.param;
      return p.model + (p.optimizer == OptimizerKind::kAdam ? "Adam" : "Sgd") +
             std::to_string(p.micro_batches) + "MicroBatches";
    });

TEST(TrainResumeRefusal, AnotherSeedOrAPastEpochOrAStopWithoutADir) {
  SetNumThreads(1);
  const Dataset train = MakeData(64, 1);
  const Dataset test = MakeData(50, 2);
  const fs::path dir = TempDir("refusal");
  ASSERT_TRUE(TrainOnce({}, train, test, {.dir = dir, .stop_after = 2}).status.ok());

  Stages stages = MakeModel({});
  TrainOptions other_seed = Training({}, {.resume = dir});
  other_seed.seed = 6;
  auto hook = RoutedBoundaries::Create(Routing(), &stages);
  const auto seed = Train(stages, train, test, other_seed, hook->get());
  EXPECT_TRUE(Contains(seed.status(), "another configuration: train.seed = 6 here, 5 there"))
      << seed.status().message();

  TrainOptions fewer = Training({}, {.resume = dir});
  fewer.epochs = 1;
  auto fresh = RoutedBoundaries::Create(Routing(), &stages);
  const auto past = Train(stages, train, test, fewer, fresh->get());
  EXPECT_TRUE(Contains(past.status(), "epoch = 2: past the run's epochs = 1"))
      << past.status().message();

  const auto no_dir = Train(stages, train, test, Training({}, {.stop_after = 1}), nullptr);
  EXPECT_TRUE(Contains(no_dir.status(), "stop_after = 1: needs a checkpoint directory"));
  const auto too_late = Train(stages, train, test, Training({}, {.dir = dir, .stop_after = 4}));
  EXPECT_TRUE(Contains(too_late.status(), "stop_after = 4: must be in [1, epochs = 3]"));

  // A dense run's file (no hook state) is another configuration for a routed run.
  const fs::path dense_dir = TempDir("dense");
  ASSERT_TRUE(Train(stages, train, test, Training({}, {.dir = dense_dir, .stop_after = 1})).ok());
  auto routed = RoutedBoundaries::Create(Routing(), &stages);
  const auto mixed = Train(stages, train, test, Training({}, {.resume = dense_dir}), routed->get());
  EXPECT_TRUE(Contains(mixed.status(), "boundary.policy = sensitivity here, absent"))
      << mixed.status().message();
}

TEST(TrainResumeRefusal, ARunCanBeExtendedBeyondItsEpochs) {
  SetNumThreads(1);
  const Dataset train = MakeData(64, 1);
  const Dataset test = MakeData(50, 2);
  const fs::path dir = TempDir("extend");
  Stages stages = MakeModel({});
  TrainOptions two = Training({}, {.dir = dir});
  two.epochs = 2;
  ASSERT_TRUE(Train(stages, train, test, two).ok());
  Stages more = MakeModel({});
  const auto four = [&] {
    TrainOptions o = Training({}, {.resume = dir});
    o.epochs = 4;
    return o;
  }();
  auto extended = Train(more, train, test, four);
  ASSERT_TRUE(extended.ok()) << extended.status().ToString();
  ASSERT_EQ(extended->epochs.size(), 4u);
  EXPECT_EQ(extended->epochs[3].epoch, 4);
  for (size_t p = 0; p < stages[0]->parameters().size(); ++p) {
    EXPECT_FALSE(torch::equal(stages[0]->parameters()[p], more[0]->parameters()[p]));
  }
}

TEST(RoutedBoundaryState, LoadsOnlyIntoAFreshHookAndRefusesOtherBytes) {
  SetNumThreads(1);
  auto used = RoutedBoundaries::Create(Routing(), nullptr);
  torch::Tensor x = torch::rand({8, 40}, torch::requires_grad());
  (*used)->Forward(0, x, true).sum().backward();
  (*used)->OnStepEnd(0);
  auto saved = (*used)->SaveState();
  ASSERT_TRUE(saved.ok()) << saved.status().ToString();
  auto fresh = RoutedBoundaries::Create(Routing(), nullptr);
  ASSERT_TRUE((*fresh)->LoadState(*saved).ok());
  EXPECT_EQ((*fresh)->Report().at(0).sensitivity, (*used)->Report().at(0).sensitivity);
  EXPECT_TRUE(Contains((*used)->LoadState(*saved), "before its first Forward"));
  auto other = RoutedBoundaries::Create(Routing(), nullptr);
  std::vector<uint8_t> cut(saved->begin(), saved->end() - 3);
  const Status short_state = (*other)->LoadState(cut);
  EXPECT_EQ(short_state.code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE((*other)->Report().empty());  // nothing half-loaded
  EXPECT_TRUE(Contains(DenseBoundary().LoadState(*saved), "this hook keeps no state"));
}

}  // namespace
}  // namespace sparselink::torch_adapter
