// RoutedBoundaries against plain LibTorch references: the forward is the masked activation,
// the backward is the masked gradient (exact with fp32 codecs), and the bytes are real.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>

#include "sparselink/torch/routed_boundary.hpp"

namespace sparselink::torch_adapter {
namespace {

RoutedBoundaryOptions Lossless(RoutingPolicy policy, double keep) {
  return {.policy = policy,
          .keep = keep,
          .keep_full = 1.0,
          .full_codec = ValueCodec::kFp32,
          .lossy_codec = ValueCodec::kFp32,
          .gradient_codec = ValueCodec::kFp32};
}

// Top-k by |a| per row, ties to the lower column: the reference mask.
torch::Tensor MagnitudeMask(const torch::Tensor& a, int64_t k) {
  torch::Tensor mask = torch::zeros_like(a);
  for (int64_t r = 0; r < a.size(0); ++r) {
    std::vector<std::pair<float, int64_t>> scored;
    for (int64_t c = 0; c < a.size(1); ++c)
      scored.push_back({-std::fabs(a[r][c].item<float>()), c});
    std::sort(scored.begin(), scored.end());
    for (int64_t i = 0; i < k; ++i) mask[r][scored[i].second] = 1.0f;
  }
  return mask;
}

TEST(RoutedBoundary, KeepAllIsTheIdentityBothWays) {
  torch::manual_seed(1);
  auto hook = RoutedBoundaries::Create(Lossless(RoutingPolicy::kMagnitude, 1.0), nullptr);
  ASSERT_TRUE(hook.ok()) << hook.status().ToString();
  torch::Tensor x = torch::randn({8, 33}, torch::requires_grad());
  torch::Tensor w = torch::randn({8, 33});
  torch::Tensor y = (*hook)->Forward(0, x, true);
  EXPECT_TRUE(torch::equal(y, x.detach()));
  (y * w).sum().backward();
  EXPECT_TRUE(torch::equal(x.grad(), w));
}

TEST(RoutedBoundary, ForwardIsMaskedAndBackwardIsTheMaskedGradient) {
  torch::manual_seed(2);
  auto hook = RoutedBoundaries::Create(Lossless(RoutingPolicy::kMagnitude, 0.1), nullptr);
  ASSERT_TRUE(hook.ok());
  torch::Tensor x = torch::randn({16, 100}, torch::requires_grad());
  torch::Tensor w = torch::randn({16, 100});
  torch::Tensor y = (*hook)->Forward(0, x, true);
  const torch::Tensor mask = MagnitudeMask(x.detach(), 10);
  EXPECT_TRUE(torch::equal(y, x.detach() * mask));
  (y * w).sum().backward();
  EXPECT_TRUE(torch::equal(x.grad(), w * mask));

  const BoundaryReport report = (*hook)->Report().at(0);
  EXPECT_EQ(report.dense_fp32_bytes, 2u * 16 * 100 * 4);
  EXPECT_GT(report.forward_wire_bytes, 16u * 10 * 4);       // values + indices + header
  EXPECT_LT(report.forward_wire_bytes, 16u * 100 * 4 / 4);  // far below dense
  EXPECT_GT(report.backward_wire_bytes, 16u * 10 * 4);      // gradient values + a summary
  EXPECT_EQ(report.packets, 3u);                            // activation, summary, gradient
}

// The sender's Taylor score of one step from dense tensors, by its definition: per column,
// mean over rows of |a| * |g| where the entry was kept and |a| * s_j (the receiver summary,
// mean |g_j| of a summary step, sent as bf16) where it was dropped, over its maximum.
torch::Tensor TaylorBatch(const torch::Tensor& a, const torch::Tensor& g, const torch::Tensor& kept,
                          const torch::Tensor& summary) {
  const torch::Tensor s = summary.to(torch::kBFloat16).to(torch::kFloat).unsqueeze(0);
  const torch::Tensor score = (a.abs() * (kept * g.abs() + (1 - kept) * s)).mean(0);
  return score / score.max();
}

void ExpectMap(const RoutedBoundaries& hook, const torch::Tensor& want) {
  const std::vector<float> map = hook.Report().at(0).sensitivity;
  ASSERT_EQ(static_cast<int64_t>(map.size()), want.size(0));
  for (int64_t j = 0; j < want.size(0); ++j) {
    EXPECT_NEAR(map[j], want[j].item<float>(), 1e-5) << j;
  }
}

// The sender's map against its definition over two steps: the map is the EMA (decay 0.9,
// from zero) of each step's normalized score, over its maximum; the second step is not a
// summary step, so the first step's summary stands in for its dropped entries.
TEST(RoutedBoundary, SenderMapIsTheTaylorScoreWithTheSummaryForDroppedEntries) {
  torch::manual_seed(9);
  auto hook = RoutedBoundaries::Create(Lossless(RoutingPolicy::kMagnitude, 0.1), nullptr);
  ASSERT_TRUE(hook.ok());
  torch::Tensor ema;
  torch::Tensor summary;
  for (int step = 0; step < 2; ++step) {
    torch::Tensor x = torch::randn({16, 100}, torch::requires_grad());
    torch::Tensor w = torch::randn({16, 100});
    torch::Tensor y = (*hook)->Forward(0, x, true);
    (y * w).sum().backward();
    if (step == 0) summary = w.abs().mean(0);
    const torch::Tensor kept = (y != 0).to(torch::kFloat);
    ASSERT_EQ(kept.sum().item<int64_t>(), 16 * 10);
    const torch::Tensor batch = TaylorBatch(x.detach(), w, kept, summary);
    ema = step == 0 ? 0.1 * batch : 0.9 * ema + 0.1 * batch;
    (*hook)->OnStepEnd(step);  // the sender's map takes the step's gradients at its end
    ExpectMap(**hook, ema / ema.max());
  }
}

// A map frozen during the forward and thawed before the backward still updates from this
// step's activation (the forward took no column sums then).
TEST(RoutedBoundary, MapThawedBetweenForwardAndBackwardUsesThisStepsActivation) {
  torch::manual_seed(10);
  auto hook = RoutedBoundaries::Create(Lossless(RoutingPolicy::kMagnitude, 0.1), nullptr);
  ASSERT_TRUE(hook.ok());
  torch::Tensor x = torch::randn({16, 100}, torch::requires_grad());
  torch::Tensor w = torch::randn({16, 100});
  (*hook)->Forward(0, torch::randn({16, 100}), false);  // sizes the boundary
  (*hook)->SetFrozen(true);
  torch::Tensor y = (*hook)->Forward(0, x, true);
  (*hook)->SetFrozen(false);
  (y * w).sum().backward();
  const torch::Tensor kept = (y != 0).to(torch::kFloat);
  (*hook)->OnStepEnd(0);  // the sender's map takes the step's gradients at its end
  ExpectMap(**hook, TaylorBatch(x.detach(), w, kept, w.abs().mean(0)));
}

// Structured routing keeps whole columns; the map update runs over the shared column set.
TEST(RoutedBoundary, StructuredMapUpdateUsesTheSharedColumns) {
  torch::manual_seed(11);
  auto hook = RoutedBoundaries::Create(Lossless(RoutingPolicy::kStructured, 0.1), nullptr);
  ASSERT_TRUE(hook.ok());
  torch::Tensor x = torch::randn({16, 100}, torch::requires_grad());
  torch::Tensor w = torch::randn({16, 100});
  torch::Tensor y = (*hook)->Forward(0, x, true);
  (y * w).sum().backward();
  const torch::Tensor kept = (y != 0).to(torch::kFloat);
  ASSERT_TRUE(torch::equal(kept[0], kept[15]));  // the same columns in every row
  ASSERT_EQ(kept[0].sum().item<int64_t>(), 10);
  (*hook)->OnStepEnd(0);  // the sender's map takes the step's gradients at its end
  ExpectMap(**hook, TaylorBatch(x.detach(), w, kept, w.abs().mean(0)));
}

// A boundary on the OpenMP threads (parallel_min_entries = 1: every call, 130 rows, so the
// map's sums take three row blocks) gives what it gives on one thread, bit for bit: outputs,
// gradients, maps and wire bytes, over steps with and without a summary, for each policy and
// the int8 codecs of the default run.
TEST(RoutedBoundary, ParallelBoundaryEqualsOneThread) {
  for (RoutingPolicy policy :
       {RoutingPolicy::kSensitivity, RoutingPolicy::kMagnitude, RoutingPolicy::kStructured}) {
    std::vector<torch::Tensor> outputs[2], grads[2];
    std::vector<BoundaryReport> reports[2];
    for (int parallel = 0; parallel < 2; ++parallel) {
      torch::manual_seed(21);
      RoutedBoundaryOptions options{
          .policy = policy,
          .keep = 0.12,
          .summary_every = 2,
          .parallel_min_entries = parallel != 0 ? size_t{1} : kDefaultParallelMinEntries};
      auto hook = RoutedBoundaries::Create(options, nullptr);
      ASSERT_TRUE(hook.ok()) << hook.status().ToString();
      for (int64_t step = 0; step < 4; ++step) {
        torch::Tensor x = torch::relu(torch::randn({130, 200})).requires_grad_(true);
        torch::Tensor w = torch::randn({130, 200});
        torch::Tensor y = (*hook)->Forward(0, x, true);
        (y * w).sum().backward();
        (*hook)->OnStepEnd(step);
        outputs[parallel].push_back(y.detach().clone());
        grads[parallel].push_back(x.grad().clone());
      }
      reports[parallel] = (*hook)->Report();
    }
    for (size_t i = 0; i < outputs[0].size(); ++i) {
      EXPECT_TRUE(torch::equal(outputs[1][i], outputs[0][i])) << int(policy) << " step " << i;
      EXPECT_TRUE(torch::equal(grads[1][i], grads[0][i])) << int(policy) << " step " << i;
    }
    EXPECT_EQ(reports[1].at(0).sensitivity, reports[0].at(0).sensitivity) << int(policy);
    EXPECT_EQ(reports[1].at(0).receiver_sensitivity, reports[0].at(0).receiver_sensitivity);
    EXPECT_EQ(reports[1].at(0).forward_wire_bytes, reports[0].at(0).forward_wire_bytes);
    EXPECT_EQ(reports[1].at(0).backward_wire_bytes, reports[0].at(0).backward_wire_bytes);
  }
}

// An evaluation forward between a training forward and its backward (a validation batch
// run mid-step) routes on its own buffers: the backward still uses the training step's mask.
TEST(RoutedBoundary, EvaluationForwardBetweenForwardAndBackwardLeavesTheStepAlone) {
  torch::manual_seed(12);
  auto hook = RoutedBoundaries::Create(Lossless(RoutingPolicy::kMagnitude, 0.1), nullptr);
  ASSERT_TRUE(hook.ok());
  torch::Tensor x = torch::randn({16, 100}, torch::requires_grad());
  torch::Tensor w = torch::randn({16, 100});
  torch::Tensor y = (*hook)->Forward(0, x, true);
  const torch::Tensor z = torch::randn({16, 100});
  const torch::Tensor routed_z = (*hook)->Forward(0, z, false);
  EXPECT_TRUE(torch::equal(routed_z, z * MagnitudeMask(z, 10)));
  (y * w).sum().backward();
  const torch::Tensor mask = MagnitudeMask(x.detach(), 10);
  EXPECT_TRUE(torch::equal(x.grad(), w * mask));
  const torch::Tensor kept = (y != 0).to(torch::kFloat);
  (*hook)->OnStepEnd(0);  // the sender's map takes the step's gradients at its end
  ExpectMap(**hook, TaylorBatch(x.detach(), w, kept, w.abs().mean(0)));
  // The receiver's map (step 0 is a summary step): Taylor on what it received for x, with
  // its dense gradient, over its maximum.
  const torch::Tensor received = (x.detach() * kept).abs() * w.abs();
  const torch::Tensor want = received.mean(0) / received.mean(0).max();
  const std::vector<float> receiver = (*hook)->Report().at(0).receiver_sensitivity;
  ASSERT_EQ(receiver.size(), 100u);
  for (int64_t j = 0; j < 100; ++j) EXPECT_NEAR(receiver[j], want[j].item<float>(), 1e-5) << j;
}

TEST(RoutedBoundary, QuantizedCodecsStayCloseToTheExactGradient) {
  torch::manual_seed(3);
  RoutedBoundaryOptions options = Lossless(RoutingPolicy::kMagnitude, 0.25);
  options.keep_full = 0.0;
  options.lossy_codec = ValueCodec::kInt8;
  options.gradient_codec = ValueCodec::kInt8;
  auto hook = RoutedBoundaries::Create(options, nullptr);
  ASSERT_TRUE(hook.ok());
  torch::Tensor x = torch::randn({4, 64}, torch::requires_grad());
  torch::Tensor w = torch::randn({4, 64});
  torch::Tensor y = (*hook)->Forward(0, x, true);
  const torch::Tensor mask = MagnitudeMask(x.detach(), 16);
  const double tol = 0.5 / 127 * x.detach().abs().max().item<double>() + 1e-6;
  EXPECT_LE((y - x.detach() * mask).abs().max().item<double>(), tol);
  (y * w).sum().backward();
  const double gtol = 0.5 / 127 * w.abs().max().item<double>() + 1e-6;
  EXPECT_LE((x.grad() - w * mask).abs().max().item<double>(), gtol);
}

TEST(RoutedBoundary, ConvMapsUsePerChannelResolution) {
  torch::manual_seed(4);
  RoutedBoundaryOptions options = Lossless(RoutingPolicy::kStructured, 0.25);
  auto hook = RoutedBoundaries::Create(options, nullptr);
  ASSERT_TRUE(hook.ok());
  torch::Tensor x = torch::rand({2, 8, 3, 3}, torch::requires_grad());
  torch::Tensor y = (*hook)->Forward(0, x, true);
  ASSERT_EQ(y.sizes(), x.sizes());
  // Structured: whole channels kept, the same 2 of 8 in both samples.
  torch::Tensor kept = (y.abs().sum({2, 3}) > 0);
  EXPECT_EQ(kept.sum().item<int64_t>(), 4);
  EXPECT_TRUE(torch::equal(kept[0], kept[1]));
  y.sum().backward();
  EXPECT_EQ((*hook)->Report().at(0).block, 9u);
}

TEST(RoutedBoundary, ConvMapsCanUsePerNeuronResolution) {
  torch::manual_seed(4);
  RoutedBoundaryOptions options = Lossless(RoutingPolicy::kStructured, 0.25);
  options.per_channel_maps = false;
  auto hook = RoutedBoundaries::Create(options, nullptr);
  ASSERT_TRUE(hook.ok());
  torch::Tensor x = torch::rand({2, 8, 3, 3}, torch::requires_grad());
  torch::Tensor y = (*hook)->Forward(0, x, true);
  // Structured over single neurons: 18 of the 72 columns, the same ones in both samples, and
  // not whole channels (per-channel maps keep 0 or 9 entries of a channel).
  torch::Tensor kept = y.reshape({2, 72}) != 0;
  EXPECT_EQ(kept.sum().item<int64_t>(), 36);
  EXPECT_TRUE(torch::equal(kept[0], kept[1]));
  const torch::Tensor per_channel = kept[0].reshape({8, 9}).sum(1);
  EXPECT_TRUE(((per_channel > 0) & (per_channel < 9)).any().item<bool>()) << per_channel;
  y.sum().backward();
  EXPECT_EQ((*hook)->Report().at(0).block, 1u);
  EXPECT_EQ((*hook)->Report().at(0).sensitivity.size(), 72u);
}

TEST(RoutedBoundary, NegotiatesEveryKStepsAndRecordsHistory) {
  torch::manual_seed(5);
  RoutedBoundaryOptions options{.policy = RoutingPolicy::kSensitivity,
                                .negotiate_every = 2,
                                .summary_every = 1,
                                .initial_keep = 0.5};
  auto hook = RoutedBoundaries::Create(options, nullptr);
  ASSERT_TRUE(hook.ok());
  for (int64_t step = 0; step < 6; ++step) {
    torch::Tensor x = torch::rand({8, 64}, torch::requires_grad());
    // A few neurons matter: the gradient is large on the first 4 columns only.
    torch::Tensor w = torch::zeros({8, 64});
    w.slice(1, 0, 4).fill_(1.0);
    ((*hook)->Forward(0, x, true) * w).sum().backward();
    (*hook)->OnStepEnd(step);
  }
  const BoundaryReport report = (*hook)->Report().at(0);
  ASSERT_EQ(report.history.size(), 3u);
  EXPECT_LT(report.contract.keep, 0.5);  // the map concentrates on 4 of 64 neurons
  EXPECT_GE(report.contract.version, 1u);
}

// A link budget caps the bytes of an optimizer step however many micro-batches it crosses
// as: every packet's header, table, checksum and per-row scales are priced, and so is the
// receiver's summary, which crosses every other step here. Once a contract is negotiated each
// step's wire bytes stay within the budget, summary or not, with 1 micro-batch per step and
// with 4 (no zstd: the byte model is then the codec's, up to the varint gaps).
TEST(RoutedBoundary, LinkBudgetHoldsPerStepWithMicroBatches) {
  constexpr double kBudget = 6000;
  for (int64_t micro : {1, 4}) {
    torch::manual_seed(13);
    RoutedBoundaryOptions options{.policy = RoutingPolicy::kSensitivity,
                                  .negotiate_every = 1,
                                  .summary_every = 2,
                                  .initial_keep = 0.5,
                                  .link_budget_bytes_per_step = kBudget};
    auto hook = RoutedBoundaries::Create(options, nullptr);
    ASSERT_TRUE(hook.ok());
    uint64_t before = 0;
    for (int64_t step = 0; step < 8; ++step) {
      const torch::Tensor x = torch::rand({64, 256});
      const torch::Tensor w = torch::randn({64, 256});
      for (int64_t m = 0; m < micro; ++m) {
        const int64_t from = m * 64 / micro;
        const int64_t to = (m + 1) * 64 / micro;
        torch::Tensor part = x.slice(0, from, to).clone().requires_grad_(true);
        ((*hook)->Forward(0, part, true) * w.slice(0, from, to)).sum().backward();
      }
      (*hook)->OnStepEnd(step);
      const BoundaryReport report = (*hook)->Report().at(0);
      const uint64_t bytes = report.forward_wire_bytes + report.backward_wire_bytes;
      if (step > 0) {
        EXPECT_LE(static_cast<double>(bytes - before), kBudget) << micro << " " << step;
        EXPECT_GT(static_cast<double>(bytes - before), 0.8 * kBudget) << micro << " " << step;
      }
      before = bytes;
    }
  }
}

// SetFrozen before a boundary's first forward still freezes its maps: training steps then
// leave both maps as they were built.
TEST(RoutedBoundary, FrozenBeforeTheFirstForwardStaysFrozen) {
  RoutedBoundaryOptions options = Lossless(RoutingPolicy::kSensitivity, 0.5);
  options.summary_every = 1;
  for (bool freeze : {false, true}) {
    auto hook = RoutedBoundaries::Create(options, nullptr);
    ASSERT_TRUE(hook.ok());
    if (freeze) (*hook)->SetFrozen(true);
    for (int64_t step = 0; step < 3; ++step) {
      torch::Tensor x = torch::rand({4, 16}, torch::requires_grad());
      ((*hook)->Forward(0, x, true) * torch::randn({4, 16})).sum().backward();
      (*hook)->OnStepEnd(step);
    }
    const BoundaryReport report = (*hook)->Report().at(0);
    const auto moved = [](const std::vector<float>& map) {
      return std::any_of(map.begin(), map.end(), [&](float v) { return v != map[0]; });
    };
    EXPECT_EQ(moved(report.sensitivity), !freeze);
    EXPECT_EQ(moved(report.receiver_sensitivity), !freeze);
  }
}

// Options the boundaries only use on their first Forward are refused by Create, each named.
TEST(RoutedBoundary, CreateRefusesEveryBadOptionByName) {
  const auto refused = [](RoutedBoundaryOptions options, const char* field) {
    auto hook = RoutedBoundaries::Create(options, nullptr);
    ASSERT_FALSE(hook.ok()) << field;
    EXPECT_NE(hook.status().message().find(field), std::string::npos) << hook.status().ToString();
  };
  refused({.ema_decay = 1.0}, "ema_decay");
  refused({.sensitivity_alpha = 1.5}, "alpha");
  refused({.eps = -1.0}, "eps");
  refused({.negotiator = {.tau_send = 2.0}}, "tau_send");
  EXPECT_TRUE(RoutedBoundaries::Create({}, nullptr).ok());
}

// Structured routing of conv maps under a shared budget: per-channel units (32 channels of
// 4 x 4) are too coarse for the default 1 % floor to differ from twice the floor; the
// budget's byte line must still have a slope (it had none, and the first negotiation threw).
TEST(RoutedBoundary, StructuredConvMapsUnderASharedBudget) {
  RoutedBoundaryOptions options{.policy = RoutingPolicy::kStructured,
                                .negotiate_every = 1,
                                .initial_keep = 0.5,
                                .link_budget_bytes_per_step = 3000};
  auto hook = RoutedBoundaries::Create(options, nullptr);
  ASSERT_TRUE(hook.ok());
  torch::manual_seed(5);
  for (int64_t step = 0; step < 4; ++step) {
    torch::Tensor x = torch::rand({8, 32, 4, 4}, torch::requires_grad());
    ((*hook)->Forward(0, x, true) * torch::randn({8, 32, 4, 4})).sum().backward();
    ASSERT_NO_THROW((*hook)->OnStepEnd(step)) << step;
  }
  const BoundaryReport report = (*hook)->Report().at(0);
  EXPECT_EQ(report.contract.bound_by, BoundBy::kSharedBudget);
  EXPECT_LT(report.contract.keep, 0.5);
}

TEST(RoutedBoundary, EvaluationRoutesWithoutCounting) {
  auto hook = RoutedBoundaries::Create(Lossless(RoutingPolicy::kMagnitude, 0.5), nullptr);
  ASSERT_TRUE(hook.ok());
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::randn({4, 10});
  torch::Tensor y = (*hook)->Forward(0, x, false);
  EXPECT_EQ((y != 0).sum().item<int64_t>(), 20);
  EXPECT_EQ((*hook)->Report().at(0).forward_wire_bytes, 0u);
}

TEST(RoutedBoundary, NonFiniteActivationIsOneClearError) {
  auto hook = RoutedBoundaries::Create(Lossless(RoutingPolicy::kMagnitude, 0.5), nullptr);
  ASSERT_TRUE(hook.ok());
  torch::Tensor x = torch::randn({2, 5});
  x[1][3] = std::numeric_limits<float>::quiet_NaN();
  try {
    (*hook)->Forward(0, x.requires_grad_(), true);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("activation[1][3] = nan"), std::string::npos) << e.what();
  }
}

// A non-finite gradient at a dropped entry is named where it is on a summary step (the only
// steps that read dropped entries), not as the summary unit it would spoil, also when the
// maps are frozen and the receiver's map update (which names it too) does not run.
TEST(RoutedBoundary, NonFiniteGradientAtADroppedEntryIsNamed) {
  RoutedBoundaryOptions options = Lossless(RoutingPolicy::kMagnitude, 0.5);
  options.summary_every = 1;
  auto hook = RoutedBoundaries::Create(options, nullptr);
  ASSERT_TRUE(hook.ok());
  (*hook)->SetFrozen(true);
  torch::Tensor x = torch::rand({2, 8}) + 1.0;
  x.select(1, 5).fill_(1e-3);  // the smallest column: dropped at keep 0.5
  torch::Tensor w = torch::ones({2, 8});
  w[1][5] = std::numeric_limits<float>::infinity();
  torch::Tensor y = (*hook)->Forward(0, x.requires_grad_(), true);
  try {
    (y * w).sum().backward();
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("gradient[1][5] = inf: must be finite"), std::string::npos)
        << e.what();
  }
}

TEST(RoutedBoundary, ChangedWidthIsOneClearError) {
  auto hook = RoutedBoundaries::Create(Lossless(RoutingPolicy::kMagnitude, 0.5), nullptr);
  ASSERT_TRUE(hook.ok());
  (void)(*hook)->Forward(0, torch::randn({2, 5}), false);
  EXPECT_THROW((void)(*hook)->Forward(0, torch::randn({2, 6}), false), c10::Error);
}

TEST(RoutedBoundary, BadOptionsNameTheField) {
  auto bad_keep = RoutedBoundaries::Create({.keep = 1.5}, nullptr);
  ASSERT_FALSE(bad_keep.ok());
  EXPECT_NE(bad_keep.status().message().find("keep = 1.5"), std::string::npos);
  EXPECT_FALSE(RoutedBoundaries::Create({.negotiate_every = 0}, nullptr).ok());
  EXPECT_FALSE(RoutedBoundaries::Create({.link_budget_bytes_per_step = -1}, nullptr).ok());
  auto policy = ParseRoutingPolicy("smart");
  ASSERT_FALSE(policy.ok());
  EXPECT_NE(policy.status().message().find("policy = smart"), std::string::npos);
}

// ------------------------------------------------------------------------------ link faults

struct StepTrace {
  std::vector<torch::Tensor> outputs;
  std::vector<torch::Tensor> gradients;
  BoundaryReport report;
};

// `steps` training steps of one negotiated sensitivity boundary (summaries every 2 steps,
// negotiations every 5) on seeded random data; every forward output and input gradient kept.
StepTrace RunSteps(const LinkModel& link, int steps, int max_tries = 8) {
  RoutedBoundaryOptions options{
      .policy = RoutingPolicy::kSensitivity,
      .negotiate_every = 5,
      .summary_every = 2,
      .initial_keep = 0.3,
      .link = link,
      .retry = {.max_tries = max_tries, .recv_timeout = std::chrono::milliseconds(0)}};
  auto hook = RoutedBoundaries::Create(options, nullptr);
  EXPECT_TRUE(hook.ok()) << hook.status().ToString();
  torch::manual_seed(11);
  StepTrace trace;
  for (int64_t step = 0; step < steps; ++step) {
    torch::Tensor x = torch::randn({8, 48}, torch::requires_grad());
    torch::Tensor w = torch::randn({8, 48});
    torch::Tensor y = (*hook)->Forward(0, x, true);
    (y * w).sum().backward();
    (*hook)->OnStepEnd(step);
    trace.outputs.push_back(y.detach().clone());
    trace.gradients.push_back(x.grad().clone());
  }
  trace.report = (*hook)->Report().at(0);
  return trace;
}

void ExpectSameRun(const StepTrace& faulty, const StepTrace& clean) {
  ASSERT_EQ(faulty.outputs.size(), clean.outputs.size());
  for (size_t i = 0; i < clean.outputs.size(); ++i) {
    ASSERT_TRUE(torch::equal(faulty.outputs[i], clean.outputs[i])) << "forward of step " << i;
    ASSERT_TRUE(torch::equal(faulty.gradients[i], clean.gradients[i])) << "gradient of step " << i;
  }
  EXPECT_EQ(faulty.report.packets, clean.report.packets);
  EXPECT_EQ(faulty.report.dense_fp32_bytes, clean.report.dense_fp32_bytes);
  ASSERT_EQ(faulty.report.history.size(), clean.report.history.size());
  for (size_t i = 0; i < clean.report.history.size(); ++i) {
    EXPECT_EQ(faulty.report.history[i].contract.keep, clean.report.history[i].contract.keep);
  }
  // Retransmits are traffic: the faulty run's wire bytes are the clean run's plus theirs.
  EXPECT_EQ(faulty.report.forward_wire_bytes + faulty.report.backward_wire_bytes,
            clean.report.forward_wire_bytes + clean.report.backward_wire_bytes +
                faulty.report.retransmit_wire_bytes);
  EXPECT_EQ(clean.report.retransmits, 0u);
}

TEST(RoutedBoundaryFaults, CorruptedPacketsAreResentAndTheRunIsBitIdentical) {
  const StepTrace clean = RunSteps({}, 300);
  const StepTrace faulty = RunSteps({.corrupt_rate = 0.01}, 300);
  ExpectSameRun(faulty, clean);
  std::printf("[ faults ] corrupt 0.01: %llu of %llu packets re-sent\n",
              static_cast<unsigned long long>(faulty.report.retransmits),
              static_cast<unsigned long long>(faulty.report.packets));
  EXPECT_GT(faulty.report.retransmits, 0u);
  EXPECT_EQ(faulty.report.retransmits, faulty.report.corrupt_packets);
  EXPECT_EQ(faulty.report.lost_packets, 0u);
  EXPECT_GT(faulty.report.retransmit_wire_bytes, 0u);
}

TEST(RoutedBoundaryFaults, LostPacketsAreResentAndTheRunIsBitIdentical) {
  const StepTrace clean = RunSteps({}, 300);
  const StepTrace faulty = RunSteps({.loss_rate = 0.02, .corrupt_rate = 0.01}, 300);
  ExpectSameRun(faulty, clean);
  std::printf("[ faults ] loss 0.02 + corrupt 0.01: %llu lost, %llu corrupt of %llu packets\n",
              static_cast<unsigned long long>(faulty.report.lost_packets),
              static_cast<unsigned long long>(faulty.report.corrupt_packets),
              static_cast<unsigned long long>(faulty.report.packets));
  EXPECT_GT(faulty.report.lost_packets, 0u);
  EXPECT_GT(faulty.report.corrupt_packets, 0u);
  EXPECT_EQ(faulty.report.retransmits, faulty.report.lost_packets + faulty.report.corrupt_packets);
}

// Runs steps until the boundary raises; returns the message ("" if none did).
std::string FirstError(const LinkModel& link, int max_tries) {
  try {
    (void)RunSteps(link, 20, max_tries);
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

TEST(RoutedBoundaryFaults, TriesRunOutIntoOneErrorNamingBoundaryDirectionStepAndCause) {
  const std::string message = FirstError({.corrupt_rate = 1.0}, 8);
  for (const char* part : {"sparselink boundary 0: corrupt_packet: forward packet of step 0: "
                           "tries = 8: none arrived intact (8 corrupt, 0 lost)",
                           "last error: corrupt_packet: "}) {
    EXPECT_NE(message.find(part), std::string::npos) << message << "\nmissing: " << part;
  }
}

TEST(RoutedBoundaryFaults, LossUntilTheLastTryIsATimeoutError) {
  const std::string message = FirstError({.loss_rate = 0.99}, 3);
  EXPECT_NE(message.find("timeout: forward packet of step 0: tries = 3: none arrived intact "
                         "(0 corrupt, 3 lost); last error: timeout: link.recv_timeout_ms = 0"),
            std::string::npos)
      << message;
}

// An evaluation forward whose tries run out names itself, not the training step in flight.
TEST(RoutedBoundaryFaults, EvaluationPacketErrorSaysEvaluation) {
  RoutedBoundaryOptions options{.policy = RoutingPolicy::kMagnitude,
                                .keep = 0.5,
                                .link = {.corrupt_rate = 0.999},
                                .retry = {.max_tries = 2}};
  auto hook = RoutedBoundaries::Create(options, nullptr);
  ASSERT_TRUE(hook.ok());
  torch::NoGradGuard no_grad;
  try {
    (void)(*hook)->Forward(0, torch::randn({4, 16}), false);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    EXPECT_NE(message.find("evaluation forward packet: tries = 2"), std::string::npos) << message;
    EXPECT_EQ(message.find("of step"), std::string::npos) << message;
  }
}

// The dense policy counts traffic like a routed one: training forwards with autograd on only.
TEST(RoutedBoundary, DenseCountsOnlyTrainingForwardsWithAutograd) {
  auto hook = RoutedBoundaries::Create({.policy = RoutingPolicy::kDense}, nullptr);
  ASSERT_TRUE(hook.ok());
  {
    torch::NoGradGuard no_grad;
    (void)(*hook)->Forward(0, torch::randn({4, 16}), true);
  }
  EXPECT_EQ((*hook)->Report().at(0).dense_fp32_bytes, 0u);
  (void)(*hook)->Forward(0, torch::randn({4, 16}, torch::requires_grad()), true);
  EXPECT_EQ((*hook)->Report().at(0).dense_fp32_bytes, 2u * 4 * 16 * 4);
}

TEST(RoutedBoundaryFaults, OneTryAtAHighRateFailsNamingTheDirection) {
  // One try per packet at a high rate: some packet fails within 20 steps, and whichever it is,
  // the message names its direction and step.
  const std::string message = FirstError({.corrupt_rate = 0.3}, 1);
  ASSERT_FALSE(message.empty());
  EXPECT_TRUE(message.find("forward packet of step") != std::string::npos ||
              message.find("backward packet of step") != std::string::npos ||
              message.find("summary packet of step") != std::string::npos)
      << message;
  EXPECT_NE(message.find("tries = 1: none arrived intact (1 corrupt, 0 lost)"), std::string::npos)
      << message;
}

TEST(RoutedBoundaryFaults, BadRetryOptionsNameTheField) {
  auto tries = RoutedBoundaries::Create({.retry = {.max_tries = 0}}, nullptr);
  ASSERT_FALSE(tries.ok());
  EXPECT_NE(tries.status().message().find("retry.max_tries = 0"), std::string::npos);
  auto timeout =
      RoutedBoundaries::Create({.retry = {.recv_timeout = std::chrono::milliseconds(-1)}}, nullptr);
  ASSERT_FALSE(timeout.ok());
  EXPECT_NE(timeout.status().message().find("retry.recv_timeout_ms = -1"), std::string::npos);
  auto loss = RoutedBoundaries::Create({.link = {.loss_rate = 1.0}}, nullptr);
  ASSERT_FALSE(loss.ok());
  EXPECT_NE(loss.status().message().find("link.loss_rate = 1"), std::string::npos);
}

}  // namespace
}  // namespace sparselink::torch_adapter
