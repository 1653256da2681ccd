// The Router's options and Create, the scoring policies, Route's checks of its input and output,
// and its output for one thread and two. What it selects is in select_test.cc and the select_*
// tests; the helpers and the plain reference are in routing_test_util.hpp.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "routing_test_util.hpp"
#include "sparselink/routing.hpp"

namespace sparselink::routing_test {
namespace {

TEST(Scoring, NamesRoundTrip) {
  for (size_t i = 0; i < kNumScorings; ++i) {
    const auto p = static_cast<Scoring>(i);
    Result<Scoring> parsed = ParseScoring(ScoringName(p));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, p);
  }
  EXPECT_EQ(ScoringName(Scoring::kSensitivity), "sensitivity");
  EXPECT_EQ(ScoringName(Scoring::kMagnitude), "magnitude");
  EXPECT_EQ(ScoringName(Scoring::kRandom), "random");
}

TEST(Scoring, UnknownNameIsAnErrorNamingIt) {
  Result<Scoring> parsed = ParseScoring("loudest");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(parsed.status().message().find("loudest"), std::string::npos);
}

TEST(Router, CreateRejectsNegativeOrNonFiniteEps) {
  for (double eps : {-1e-9, -1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    Result<Router> router = Router::Create({.eps = eps});
    ASSERT_FALSE(router.ok()) << eps;
    EXPECT_EQ(router.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(router.status().message().find("router.eps"), std::string::npos);
  }
  EXPECT_TRUE(Router::Create({.eps = 0.0}).ok());
}

TEST(Router, CreateRejectsUnknownPolicy) {
  Result<Router> router = Router::Create({.scoring = static_cast<Scoring>(7)});
  ASSERT_FALSE(router.ok());
  EXPECT_NE(router.status().message().find("router.scoring"), std::string::npos);
}

TEST(Router, RefusesAZeroParallelThreshold) {
  auto router = Router::Create({.parallel_min_entries = 0});
  ASSERT_FALSE(router.ok());
  EXPECT_NE(router.status().message().find("router.parallel_min_entries"), std::string::npos);
}

TEST(Router, RandomPolicyIsDeterministicPerSeedAndStep) {
  const size_t rows = 4;
  const size_t cols = 200;
  const std::vector<float> a = RandomValues(rows, cols, 61);
  const Router router = MakeRouter(Scoring::kRandom, 1e-3, 1234);
  const Contract contract = MakeContract(0.1, 0.5);
  const RoutedTensor first = MustRoute(router, View(a, rows, cols), nullptr, contract, 7);
  const RoutedTensor again = MustRoute(router, View(a, rows, cols), nullptr, contract, 7);
  const RoutedTensor next_step = MustRoute(router, View(a, rows, cols), nullptr, contract, 8);
  const Router other_seed_router = MakeRouter(Scoring::kRandom, 1e-3, 4321);
  const RoutedTensor other_seed =
      MustRoute(other_seed_router, View(a, rows, cols), nullptr, contract, 7);
  EXPECT_EQ(first.indices, again.indices);
  EXPECT_EQ(first.tiers, again.tiers);
  EXPECT_NE(first.indices, next_step.indices);
  EXPECT_NE(first.indices, other_seed.indices);
  // Rows draw differently too.
  EXPECT_NE(ToVector(first.RowIndices(0)), ToVector(first.RowIndices(1)));
}

TEST(Router, RandomPolicyIgnoresTheActivationValues) {
  const std::vector<float> a = RandomValues(2, 50, 62);
  const std::vector<float> b = RandomValues(2, 50, 63);
  const Router router = MakeRouter(Scoring::kRandom, 1e-3, 5);
  const RoutedTensor ra = MustRoute(router, View(a, 2, 50), nullptr, MakeContract(0.2), 3);
  const RoutedTensor rb = MustRoute(router, View(b, 2, 50), nullptr, MakeContract(0.2), 3);
  EXPECT_EQ(ra.indices, rb.indices);
}

TEST(Router, MagnitudePolicyIgnoresTheMap) {
  const size_t rows = 3;
  const size_t cols = 30;
  const std::vector<float> a = RandomValues(rows, cols, 64);
  const SensitivityMap map = RandomMap(cols, 1, 65);
  const SensitivityMap narrow_map = RandomMap(5, 1, 66);  // wrong width: ignored too
  const Router router = MakeRouter(Scoring::kMagnitude);
  const Contract contract = MakeContract(0.2, 0.5);
  const RoutedTensor without = MustRoute(router, View(a, rows, cols), nullptr, contract);
  const RoutedTensor with = MustRoute(router, View(a, rows, cols), &map, contract);
  const RoutedTensor with_narrow = MustRoute(router, View(a, rows, cols), &narrow_map, contract);
  EXPECT_EQ(without.indices, with.indices);
  EXPECT_EQ(without.tiers, with.tiers);
  EXPECT_EQ(without.indices, with_narrow.indices);
}

TEST(Router, TreatAsZeroNeverSendsNonFiniteValues) {
  // Every entry of row 0 is non-finite and keep = 1 forces them all to be kept.
  std::vector<float> a = {kNaN, kInf, -kInf, kNaN, 1.0f, -2.0f, kNaN, 0.5f};
  const Router router = MakeRouter(Scoring::kMagnitude, 1e-3, 0, OnNonFinite::kTreatAsZero);
  const RoutedTensor all = MustRoute(router, View(a, 2, 4), nullptr, MakeContract(1.0));
  EXPECT_EQ(all.values, (std::vector<float>{0, 0, 0, 0, 1.0f, -2.0f, 0, 0.5f}));
  // With room to choose, non-finite entries score 0 and lose to the finite ones.
  const RoutedTensor half =
      MustRoute(router, View(a, 2, 4), nullptr,
                MakeContract(0.5, 1.0, Granularity::kElement, RestCodec::kSign1));
  EXPECT_EQ(ToVector(half.RowIndices(1)), (std::vector<uint32_t>{0, 1}));
  for (float v : half.values) EXPECT_TRUE(std::isfinite(v));
  for (float v : half.rest_centroids) EXPECT_TRUE(std::isfinite(v));
  const Router sensitive = MakeRouter(Scoring::kSensitivity, 1e-3, 0, OnNonFinite::kTreatAsZero);
  const SensitivityMap map = RandomMap(4, 1, 67);
  const RoutedTensor unit =
      MustRoute(sensitive, View(a, 2, 4), &map, MakeContract(0.5, 1.0, Granularity::kUnit));
  for (float v : unit.values) EXPECT_TRUE(std::isfinite(v));
}

// eps beyond the float range: the weight is clamped to FLT_MAX, so a zero activation scores 0
// (not 0 * inf = NaN) and the larger |a| wins, in both paths.
TEST(Router, HugeEpsKeepsScoresOrdered) {
  const std::vector<float> a = {1.0f, 0.0f, 0.5f, 0.0f};
  const SensitivityMap map = RandomMap(4, 1, 3);
  for (SelectMethod select : {SelectMethod::kFast, SelectMethod::kReference}) {
    auto router = Router::Create({.scoring = Scoring::kSensitivity, .eps = 1e39, .select = select});
    ASSERT_TRUE(router.ok());
    const RoutedTensor routed = MustRoute(*router, View(a, 1, 4), &map, MakeContract(0.5));
    EXPECT_EQ(routed.indices, (std::vector<uint32_t>{0, 2}));
  }
}

TEST(Router, RejectsNonFiniteActivationNamingRowAndColumn) {
  const Router router = MakeRouter(Scoring::kMagnitude);
  for (float bad : {kNaN, kInf, -kInf}) {
    std::vector<float> a = RandomValues(3, 5, 71);
    a[1 * 5 + 2] = bad;
    Result<RoutedTensor> routed = router.Route(View(a, 3, 5), nullptr, MakeContract(0.5), 0);
    ASSERT_FALSE(routed.ok());
    EXPECT_EQ(routed.status().code(), ErrorCode::kNonFinite);
    EXPECT_NE(routed.status().message().find("activation[1][2]"), std::string::npos)
        << routed.status().message();
  }
}

TEST(Router, RejectsEmptyOrNullActivation) {
  const Router router = MakeRouter(Scoring::kMagnitude);
  const std::vector<float> a(6, 1.0f);
  const struct {
    ConstMatrix m;
    const char* field;
  } cases[] = {
      {{a.data(), 0, 6}, "activation.rows"},
      {{a.data(), 1, 0}, "activation.cols"},
      {{nullptr, 1, 6}, "activation.data"},
  };
  for (const auto& c : cases) {
    Result<RoutedTensor> routed = router.Route(c.m, nullptr, MakeContract(0.5), 0);
    ASSERT_FALSE(routed.ok()) << c.field;
    EXPECT_EQ(routed.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(routed.status().message().find(c.field), std::string::npos)
        << routed.status().message();
  }
}

TEST(Router, RejectsMapOfTheWrongWidth) {
  const std::vector<float> a = RandomValues(2, 8, 72);
  const SensitivityMap map = RandomMap(9, 1, 73);
  const Router router = MakeRouter(Scoring::kSensitivity);
  Result<RoutedTensor> routed = router.Route(View(a, 2, 8), &map, MakeContract(0.5), 0);
  ASSERT_FALSE(routed.ok());
  EXPECT_EQ(routed.status().code(), ErrorCode::kShapeMismatch);
  EXPECT_NE(routed.status().message().find("map.num_neurons = 9"), std::string::npos)
      << routed.status().message();
}

TEST(Router, RejectsMissingMapUnderSensitivityPolicy) {
  const std::vector<float> a = RandomValues(2, 8, 74);
  const Router router = MakeRouter(Scoring::kSensitivity);
  Result<RoutedTensor> routed = router.Route(View(a, 2, 8), nullptr, MakeContract(0.5), 0);
  ASSERT_FALSE(routed.ok());
  EXPECT_EQ(routed.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(routed.status().message().find("map"), std::string::npos);
}

TEST(Router, RejectsInvalidContract) {
  const std::vector<float> a = RandomValues(2, 8, 75);
  const Router router = MakeRouter(Scoring::kMagnitude);
  for (double keep : {0.0, 1.5, std::nan(""), -0.5}) {
    Result<RoutedTensor> routed = router.Route(View(a, 2, 8), nullptr, MakeContract(keep), 0);
    ASSERT_FALSE(routed.ok()) << keep;
    EXPECT_EQ(routed.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(routed.status().message().find("contract.keep"), std::string::npos);
  }
  Result<RoutedTensor> routed = router.Route(View(a, 2, 8), nullptr, MakeContract(0.5, 2.0), 0);
  ASSERT_FALSE(routed.ok());
  EXPECT_NE(routed.status().message().find("contract.keep_full"), std::string::npos);
}

TEST(Router, ErrorLeavesOutputUntouched) {
  const std::vector<float> a = RandomValues(2, 8, 76);
  const Router router = MakeRouter(Scoring::kMagnitude);
  RoutedTensor out;
  ASSERT_TRUE(router.Route(View(a, 2, 8), nullptr, MakeContract(0.5), 0, &out).ok());
  const RoutedTensor before = out;
  EXPECT_FALSE(router.Route(View(a, 2, 8), nullptr, MakeContract(0.0), 0, &out).ok());
  EXPECT_EQ(out.indices, before.indices);
  EXPECT_EQ(out.values, before.values);
  EXPECT_FALSE(router.Route(View(a, 2, 8), nullptr, MakeContract(0.5), 0, nullptr).ok());
}

TEST(Router, RouteReusesOutputCapacity) {
  const std::vector<float> big = RandomValues(16, 256, 77);
  const std::vector<float> small = RandomValues(4, 16, 78);
  const Router router = MakeRouter(Scoring::kMagnitude);
  RoutedTensor out;
  ASSERT_TRUE(router
                  .Route(View(big, 16, 256), nullptr,
                         MakeContract(0.5, 0.5, Granularity::kElement, RestCodec::kSign1), 0, &out)
                  .ok());
  const float* values = out.values.data();
  const uint32_t* indices = out.indices.data();
  const uint8_t* bits = out.rest_bits.data();
  ASSERT_TRUE(router
                  .Route(View(small, 4, 16), nullptr,
                         MakeContract(0.5, 0.5, Granularity::kElement, RestCodec::kSign1), 0, &out)
                  .ok());
  EXPECT_EQ(out.values.data(), values);
  EXPECT_EQ(out.indices.data(), indices);
  EXPECT_EQ(out.rest_bits.data(), bits);
  EXPECT_TRUE(out.Validate().ok());
}

TEST(Router, OutputIsIdenticalForOneAndTwoThreads) {
  const size_t rows = 64;
  const size_t cols = 1031;  // above the parallel threshold, not a multiple of 64
  const std::vector<float> a = RandomValues(rows, cols, 101);
  const SensitivityMap map = RandomMap(cols, 8, 102);
  const int saved = omp_get_max_threads();
  const struct {
    Scoring scoring;
    Granularity granularity;
  } cases[] = {{Scoring::kSensitivity, Granularity::kElement},
               {Scoring::kSensitivity, Granularity::kUnit},
               {Scoring::kMagnitude, Granularity::kUnit},
               {Scoring::kRandom, Granularity::kElement}};
  for (const auto& c : cases) {
    const Router router = MakeRouter(c.scoring, 1e-3, 9);
    const Contract contract = MakeContract(0.1, 0.5, c.granularity, RestCodec::kSign1);
    omp_set_num_threads(1);
    const RoutedTensor one = MustRoute(router, View(a, rows, cols), &map, contract, 4);
    omp_set_num_threads(2);
    const RoutedTensor two = MustRoute(router, View(a, rows, cols), &map, contract, 4);
    EXPECT_EQ(one.row_offsets, two.row_offsets);
    EXPECT_EQ(one.indices, two.indices);
    EXPECT_EQ(one.values, two.values);
    EXPECT_EQ(one.tiers, two.tiers);
    EXPECT_EQ(one.rest_bits, two.rest_bits);
    EXPECT_EQ(one.rest_centroids, two.rest_centroids);
    std::vector<float> dense_one(rows * cols), dense_two(rows * cols);
    omp_set_num_threads(1);
    ASSERT_TRUE(Scatter(one, {dense_one.data(), rows, cols}).ok());
    omp_set_num_threads(2);
    ASSERT_TRUE(Scatter(two, {dense_two.data(), rows, cols}).ok());
    EXPECT_EQ(dense_one, dense_two);
  }
  omp_set_num_threads(saved);
}

}  // namespace
}  // namespace sparselink::routing_test
