// RoutedBoundaries against plain LibTorch references: the forward is the masked activation,
// the backward is the masked gradient (exact with fp32 codecs), and the bytes are real.
#include <gtest/gtest.h>
#include <torch/torch.h>

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

}  // namespace
}  // namespace sparselink::torch_adapter
