// SensitivityMap (sensitivity.cc): names, normalization, ranking and coverage; Create; every
// mode's Update against a plain reference; block resolution; the EMA; bad input; Assign. The
// serialized form is tested in sensitivity_serialize_test.cc.
#include "sparselink/sensitivity.hpp"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "sensitivity_test_util.hpp"

namespace sparselink::sensitivity_test {
namespace {

// ---- plain reference ------------------------------------------------------------------

std::vector<double> Normalized(std::vector<double> v) {
  double m = 0;
  for (double x : v) m = std::max(m, x);
  for (double& x : v) x = m > 0 ? x / m : 0.0;
  return v;
}

// One batch's per-unit score, normalized, computed the obvious way.
std::vector<double> ReferenceBatch(const std::vector<float>& a, const std::vector<float>& g,
                                   size_t rows, size_t cols, size_t block, SensitivityMode mode,
                                   double alpha) {
  std::vector<double> act(cols, 0), grad(cols, 0), taylor(cols, 0);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) {
      const double av = std::fabs(double(a[r * cols + c]));
      const double gv = g.empty() ? 0.0 : std::fabs(double(g[r * cols + c]));
      act[c] += av / double(rows);
      grad[c] += gv / double(rows);
      taylor[c] += av * gv / double(rows);
    }
  }
  std::vector<double> per_neuron;
  switch (mode) {
    case SensitivityMode::kTaylor: per_neuron = taylor; break;
    case SensitivityMode::kActivation: per_neuron = act; break;
    case SensitivityMode::kGradient: per_neuron = grad; break;
    case SensitivityMode::kWeighted: {
      const auto na = Normalized(act), ng = Normalized(grad);
      per_neuron.resize(cols);
      for (size_t c = 0; c < cols; ++c) per_neuron[c] = alpha * na[c] + (1 - alpha) * ng[c];
      break;
    }
  }
  const size_t units = (cols + block - 1) / block;
  std::vector<double> unit(units, 0);
  for (size_t u = 0; u < units; ++u) {
    const size_t end = std::min(cols, (u + 1) * block);
    for (size_t c = u * block; c < end; ++c) unit[u] += per_neuron[c];
    unit[u] /= double(end - u * block);
  }
  return Normalized(unit);
}

void ExpectValuesNear(const SensitivityMap& map, const std::vector<double>& want,
                      double tol = 1e-6) {
  ASSERT_EQ(map.num_units(), want.size());
  for (size_t u = 0; u < want.size(); ++u)
    EXPECT_NEAR(map.values()[u], want[u], tol) << "unit " << u;
}

// ---- names, normalize, rank, coverage ---------------------------------------------------

TEST(SensitivityMode, NamesRoundTrip) {
  for (size_t i = 0; i < kNumSensitivityModes; ++i) {
    const auto m = static_cast<SensitivityMode>(i);
    auto parsed = ParseSensitivityMode(SensitivityModeName(m));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, m);
  }
  EXPECT_EQ(SensitivityModeName(SensitivityMode::kTaylor), "taylor");
}

TEST(SensitivityMode, ParseRejectsUnknownName) {
  auto parsed = ParseSensitivityMode("fisher");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(Contains(parsed.status(), "fisher"));
}

TEST(NormalizeByMax, DividesByMaxSoMaxIsExactlyOne) {
  std::vector<float> v = {0.3f, 1.7f, 0.0f, 0.85f};
  NormalizeByMax(v);
  EXPECT_EQ(v[1], 1.0f);
  EXPECT_FLOAT_EQ(v[0], 0.3f / 1.7f);
  EXPECT_EQ(v[2], 0.0f);
  EXPECT_FLOAT_EQ(v[3], 0.5f);
}

TEST(NormalizeByMax, AllZeroStaysZeroAndEmptyIsFine) {
  std::vector<float> v(5, 0.0f);
  NormalizeByMax(v);
  for (float x : v) EXPECT_EQ(x, 0.0f);
  std::vector<float> empty;
  NormalizeByMax(empty);
}

TEST(NormalizeByMax, AllEqualBecomesAllOne) {
  std::vector<float> v(7, 0.25f);
  NormalizeByMax(v);
  for (float x : v) EXPECT_EQ(x, 1.0f);
}

TEST(RankUnits, OrdersByDescendingValue) {
  const std::vector<float> v = {0.1f, 0.9f, 0.5f, 0.0f};
  EXPECT_EQ(RankUnits(v), (std::vector<uint32_t>{1, 2, 0, 3}));
}

TEST(RankUnits, TiesBreakByLowestUnitIndex) {
  const std::vector<float> v = {0.5f, 1.0f, 0.5f, 1.0f, 0.5f};
  EXPECT_EQ(RankUnits(v), (std::vector<uint32_t>{1, 3, 0, 2, 4}));
  const std::vector<float> zeros(6, 0.0f);
  EXPECT_EQ(RankUnits(zeros), (std::vector<uint32_t>{0, 1, 2, 3, 4, 5}));
}

TEST(RankUnits, EmptyGivesEmpty) { EXPECT_TRUE(RankUnits({}).empty()); }

TEST(Coverage, CountsUnitsUntilTauOfTotal) {
  const std::vector<float> v = {0.25f, 1.0f, 0.25f, 0.5f};  // total 2
  EXPECT_DOUBLE_EQ(Coverage(v, 0.5), 0.25);                 // {1.0}
  EXPECT_DOUBLE_EQ(Coverage(v, 0.75), 0.5);                 // {1.0, 0.5}
  EXPECT_DOUBLE_EQ(Coverage(v, 0.76), 0.75);
  EXPECT_DOUBLE_EQ(Coverage(v, 1.0), 1.0);
}

TEST(Coverage, TauZeroGivesSmallestNonEmptyShare) {
  const std::vector<float> v = {0.2f, 1.0f, 0.4f, 0.9f, 0.1f};
  EXPECT_DOUBLE_EQ(Coverage(v, 0.0), 0.2);
}

TEST(Coverage, TauOneSkipsZeroUnits) {
  const std::vector<float> v = {0.0f, 1.0f, 0.0f, 0.3f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  EXPECT_DOUBLE_EQ(Coverage(v, 1.0), 0.2);
}

TEST(Coverage, AllEqualTauOneIsEverythingWithoutRoundingLoss) {
  for (size_t n : {1u, 3u, 7u, 10u, 100u, 1000u}) {
    const std::vector<float> v(n, 0.1f);
    EXPECT_DOUBLE_EQ(Coverage(v, 1.0), 1.0) << n;
  }
}

TEST(Coverage, AllEqualTauPointThreeOfTenIsThree) {
  const std::vector<float> v(10, 1.0f);
  EXPECT_DOUBLE_EQ(Coverage(v, 0.3), 0.3);
  EXPECT_DOUBLE_EQ(Coverage(v, 0.31), 0.4);
}

TEST(Coverage, AllZeroGivesOneOverN) {
  const std::vector<float> v(8, 0.0f);
  EXPECT_DOUBLE_EQ(Coverage(v, 0.95), 1.0 / 8);
}

TEST(Coverage, SingleUnitIsAlwaysOne) {
  const std::vector<float> one = {0.7f};
  EXPECT_DOUBLE_EQ(Coverage(one, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(Coverage(one, 0.5), 1.0);
  EXPECT_DOUBLE_EQ(Coverage(one, 1.0), 1.0);
  const std::vector<float> zero = {0.0f};
  EXPECT_DOUBLE_EQ(Coverage(zero, 0.5), 1.0);
}

TEST(Coverage, TauOutsideRangeIsClamped) {
  const std::vector<float> v = {1.0f, 1.0f, 1.0f, 1.0f};
  EXPECT_DOUBLE_EQ(Coverage(v, -3.0), 0.25);
  EXPECT_DOUBLE_EQ(Coverage(v, 7.0), 1.0);
  EXPECT_DOUBLE_EQ(Coverage(v, std::nan("")), 1.0);
}

// ---- Create -----------------------------------------------------------------------------

TEST(SensitivityMap, CreateRejectsEachBadFieldByName) {
  struct Case {
    SensitivityOptions o;
    const char* field;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Case cases[] = {
      {{.num_neurons = 0}, "sensitivity.num_neurons = 0"},
      {{.num_neurons = kMaxSensitivityNeurons + 1}, "sensitivity.num_neurons"},
      {{.num_neurons = 8, .block = 0}, "sensitivity.block = 0"},
      {{.num_neurons = 8, .block = 9}, "sensitivity.block = 9"},
      {{.num_neurons = 8, .mode = static_cast<SensitivityMode>(7)}, "sensitivity.mode = 7"},
      {{.num_neurons = 8, .alpha = -0.1}, "sensitivity.alpha = -0.1"},
      {{.num_neurons = 8, .alpha = 1.5}, "sensitivity.alpha = 1.5"},
      {{.num_neurons = 8, .alpha = nan}, "sensitivity.alpha = nan"},
      {{.num_neurons = 8, .ema_decay = 1.0}, "sensitivity.ema_decay = 1"},
      {{.num_neurons = 8, .ema_decay = -0.5}, "sensitivity.ema_decay = -0.5"},
      {{.num_neurons = 8, .non_finite = static_cast<OnNonFinite>(9)}, "sensitivity.non_finite = 9"},
  };
  for (const Case& c : cases) {
    auto map = SensitivityMap::Create(c.o);
    ASSERT_FALSE(map.ok()) << c.field;
    EXPECT_EQ(map.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_TRUE(Contains(map.status(), c.field)) << map.status().message();
  }
}

TEST(SensitivityMap, NewMapIsAllZero) {
  auto map = MakeMap({.num_neurons = 10, .block = 3});
  EXPECT_EQ(map.num_units(), 4u);
  for (float v : map.values()) EXPECT_EQ(v, 0.0f);
  EXPECT_EQ(map.num_updates(), 0u);
}

// ---- modes against the reference ---------------------------------------------------------

class ModeTest : public ::testing::TestWithParam<SensitivityMode> {};

TEST_P(ModeTest, MatchesPlainReference) {
  const size_t rows = 5, cols = 13;
  const auto a = RandomMatrix(rows, cols, 1);
  const auto g = RandomMatrix(rows, cols, 2);
  const double alpha = 0.3;
  auto map = MakeMap({.num_neurons = cols, .mode = GetParam(), .alpha = alpha});
  ASSERT_TRUE(map.Update({a.data(), rows, cols}, {g.data(), rows, cols}).ok());
  ExpectValuesNear(map, ReferenceBatch(a, g, rows, cols, 1, GetParam(), alpha));
  float max_value = 0;
  for (float v : map.values()) max_value = std::max(max_value, v);
  EXPECT_EQ(max_value, 1.0f);
}

INSTANTIATE_TEST_SUITE_P(SensitivityAllModes, ModeTest,
                         ::testing::Values(SensitivityMode::kTaylor, SensitivityMode::kActivation,
                                           SensitivityMode::kGradient, SensitivityMode::kWeighted),
                         [](const auto& mode_info) {
                           return std::string(SensitivityModeName(mode_info.param));
                         });

TEST(SensitivityMap, TaylorHandCase) {
  // a = [[1, -2, 0], [3, 1, 2]], g = [[2, 1, 5], [0, -1, 1]]
  // |a*g| mean over rows: [1, 1.5, 1] -> normalized [2/3, 1, 2/3]
  const std::vector<float> a = {1, -2, 0, 3, 1, 2}, g = {2, 1, 5, 0, -1, 1};
  auto map = MakeMap({.num_neurons = 3});
  ASSERT_TRUE(map.Update({a.data(), 2, 3}, {g.data(), 2, 3}).ok());
  ExpectValuesNear(map, {2.0 / 3, 1.0, 2.0 / 3});
}

TEST(SensitivityMap, WeightedAlphaOneIsActivationAndZeroIsGradient) {
  const size_t rows = 4, cols = 9;
  const auto a = RandomMatrix(rows, cols, 3), g = RandomMatrix(rows, cols, 4);
  auto w1 = MakeMap({.num_neurons = cols, .mode = SensitivityMode::kWeighted, .alpha = 1.0});
  auto w0 = MakeMap({.num_neurons = cols, .mode = SensitivityMode::kWeighted, .alpha = 0.0});
  ASSERT_TRUE(w1.Update({a.data(), rows, cols}, {g.data(), rows, cols}).ok());
  ASSERT_TRUE(w0.Update({a.data(), rows, cols}, {g.data(), rows, cols}).ok());
  ExpectValuesNear(w1, ReferenceBatch(a, g, rows, cols, 1, SensitivityMode::kActivation, 0));
  ExpectValuesNear(w0, ReferenceBatch(a, g, rows, cols, 1, SensitivityMode::kGradient, 0));
}

TEST(SensitivityMap, ActivationModeAcceptsNoGradient) {
  const auto a = RandomMatrix(3, 6, 5);
  auto map = MakeMap({.num_neurons = 6, .mode = SensitivityMode::kActivation});
  ASSERT_TRUE(map.Update({a.data(), 3, 6}, ConstMatrix{}).ok());
  ExpectValuesNear(map, ReferenceBatch(a, {}, 3, 6, 1, SensitivityMode::kActivation, 0));
}

TEST(SensitivityMap, ModesThatNeedAGradientRejectNone) {
  const auto a = RandomMatrix(3, 6, 5);
  for (auto mode :
       {SensitivityMode::kTaylor, SensitivityMode::kGradient, SensitivityMode::kWeighted}) {
    auto map = MakeMap({.num_neurons = 6, .mode = mode});
    Status s = map.Update({a.data(), 3, 6}, ConstMatrix{});
    EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
    EXPECT_TRUE(Contains(s, "gradient")) << s.message();
  }
}

// ---- resolution ----------------------------------------------------------------------------

TEST(SensitivityMap, BlockAveragesNeuronsWithPartialLastBlock) {
  const size_t rows = 3, cols = 10, block = 4;  // units: [0,4) [4,8) [8,10)
  const auto a = RandomMatrix(rows, cols, 6), g = RandomMatrix(rows, cols, 7);
  auto map = MakeMap({.num_neurons = cols, .block = block});
  EXPECT_EQ(map.num_units(), 3u);
  ASSERT_TRUE(map.Update({a.data(), rows, cols}, {g.data(), rows, cols}).ok());
  ExpectValuesNear(map, ReferenceBatch(a, g, rows, cols, block, SensitivityMode::kTaylor, 0));
  EXPECT_EQ(map.UnitOf(9), 2u);
  EXPECT_EQ(map.NeuronValue(9), map.values()[2]);
  EXPECT_EQ(map.NeuronValue(3), map.values()[0]);
}

TEST(SensitivityMap, PartialLastBlockIsAMeanNotASum) {
  // Every neuron scores 1: each unit's mean is 1, so the short last unit is not penalized.
  const std::vector<float> ones(2 * 7, 1.0f);
  auto map = MakeMap({.num_neurons = 7, .block = 3});
  ASSERT_TRUE(map.Update({ones.data(), 2, 7}, {ones.data(), 2, 7}).ok());
  ExpectValuesNear(map, {1, 1, 1}, 0);
}

TEST(SensitivityMap, BlockEqualToNumNeuronsGivesOneUnit) {
  const auto a = RandomMatrix(2, 5, 8), g = RandomMatrix(2, 5, 9);
  auto map = MakeMap({.num_neurons = 5, .block = 5});
  EXPECT_EQ(map.num_units(), 1u);
  ASSERT_TRUE(map.Update({a.data(), 2, 5}, {g.data(), 2, 5}).ok());
  ExpectValuesNear(map, {1.0}, 0);
}

// ---- EMA -----------------------------------------------------------------------------------

TEST(SensitivityMap, EmaFollowsDecayFormula) {
  const double decay = 0.7;
  auto map = MakeMap({.num_neurons = 4, .ema_decay = decay});
  const std::vector<std::vector<float>> batches = {{4, 2, 0, 1}, {0, 1, 3, 1}, {1, 1, 1, 8}};
  std::vector<double> ema(4, 0.0);
  for (const auto& b : batches) {
    ASSERT_TRUE(map.UpdateUnitScores(b).ok());
    const auto nb = Normalized(std::vector<double>(b.begin(), b.end()));
    for (size_t u = 0; u < 4; ++u) ema[u] = decay * ema[u] + (1 - decay) * nb[u];
    ExpectValuesNear(map, Normalized(ema));
  }
  EXPECT_EQ(map.num_updates(), 3u);
}

TEST(SensitivityMap, EmaOverUpdateMatchesReference) {
  const size_t rows = 3, cols = 8;
  const double decay = 0.5;
  auto map = MakeMap({.num_neurons = cols, .block = 2, .ema_decay = decay});
  std::vector<double> ema(4, 0.0);
  for (uint32_t step = 0; step < 4; ++step) {
    const auto a = RandomMatrix(rows, cols, 10 + step), g = RandomMatrix(rows, cols, 20 + step);
    ASSERT_TRUE(map.Update({a.data(), rows, cols}, {g.data(), rows, cols}).ok());
    const auto nb = ReferenceBatch(a, g, rows, cols, 2, SensitivityMode::kTaylor, 0);
    for (size_t u = 0; u < 4; ++u) ema[u] = decay * ema[u] + (1 - decay) * nb[u];
    ExpectValuesNear(map, Normalized(ema), 1e-5);
  }
}

TEST(SensitivityMap, DecayZeroKeepsOnlyTheLastBatch) {
  auto map = MakeMap({.num_neurons = 3, .ema_decay = 0.0});
  ASSERT_TRUE(map.UpdateUnitScores(std::vector<float>{1, 0, 0}).ok());
  ASSERT_TRUE(map.UpdateUnitScores(std::vector<float>{0, 2, 1}).ok());
  ExpectValuesNear(map, {0, 1, 0.5}, 0);
}

TEST(SensitivityMap, BatchScaleDoesNotMatter) {
  auto small = MakeMap({.num_neurons = 3});
  auto large = MakeMap({.num_neurons = 3});
  ASSERT_TRUE(small.UpdateUnitScores(std::vector<float>{1e-6f, 2e-6f, 0}).ok());
  ASSERT_TRUE(large.UpdateUnitScores(std::vector<float>{1e6f, 2e6f, 0}).ok());
  for (size_t u = 0; u < 3; ++u) EXPECT_FLOAT_EQ(small.values()[u], large.values()[u]);
}

TEST(SensitivityMap, AllZeroBatchKeepsMapZero) {
  const std::vector<float> zeros(4 * 6, 0.0f);
  auto map = MakeMap({.num_neurons = 6});
  ASSERT_TRUE(map.Update({zeros.data(), 4, 6}, {zeros.data(), 4, 6}).ok());
  for (float v : map.values()) EXPECT_EQ(v, 0.0f);
  EXPECT_EQ(map.num_updates(), 1u);
}

TEST(SensitivityMap, AllEqualBatchGivesAllOne) {
  const std::vector<float> same(4 * 6, -0.5f);
  auto map = MakeMap({.num_neurons = 6});
  ASSERT_TRUE(map.Update({same.data(), 4, 6}, {same.data(), 4, 6}).ok());
  for (float v : map.values()) EXPECT_EQ(v, 1.0f);
}

TEST(SensitivityMap, HugeFiniteValuesDoNotOverflow) {
  const std::vector<float> big = {3e38f, 1e38f, -3e38f, 0.0f};
  auto map = MakeMap({.num_neurons = 2});
  ASSERT_TRUE(map.Update({big.data(), 2, 2}, {big.data(), 2, 2}).ok());
  for (float v : map.values()) EXPECT_TRUE(std::isfinite(v));
  EXPECT_EQ(map.values()[0], 1.0f);
}

// Tiny magnitudes keep their ratios: the float sums would underflow to 0 (1e-30 * 1e-20), so
// Update sums them in double.
TEST(SensitivityMap, TinyFiniteValuesKeepTheirRatios) {
  const std::vector<float> a = {1e-30f, 2e-30f};
  const std::vector<float> g = {1e-20f, 1e-20f};
  auto map = MakeMap({.num_neurons = 2});
  ASSERT_TRUE(map.Update({a.data(), 1, 2}, {g.data(), 1, 2}).ok());
  EXPECT_EQ(map.values()[1], 1.0f);
  EXPECT_FLOAT_EQ(map.values()[0], 0.5f);
}

TEST(SensitivityMap, UpdateReusesItsBuffers) {
  const auto a = RandomMatrix(3, 5, 30), g = RandomMatrix(3, 5, 31);
  auto map = MakeMap({.num_neurons = 5});
  const float* before = map.values().data();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(map.Update({a.data(), 3, 5}, {g.data(), 3, 5}).ok());
  EXPECT_EQ(map.values().data(), before);
}

// ---- bad input --------------------------------------------------------------------------------

TEST(SensitivityMap, RejectsNaNNamingRowAndCol) {
  auto a = RandomMatrix(3, 4, 11);
  const auto g = RandomMatrix(3, 4, 12);
  a[1 * 4 + 2] = std::numeric_limits<float>::quiet_NaN();
  auto map = MakeMap({.num_neurons = 4});
  Status s = map.Update({a.data(), 3, 4}, {g.data(), 3, 4});
  EXPECT_EQ(s.code(), ErrorCode::kNonFinite);
  EXPECT_TRUE(Contains(s, "activation[1][2]")) << s.message();
  EXPECT_EQ(map.num_updates(), 0u);
}

TEST(SensitivityMap, RejectsInfInGradientNamingRowAndCol) {
  const auto a = RandomMatrix(3, 4, 11);
  auto g = RandomMatrix(3, 4, 12);
  g[0 * 4 + 3] = -std::numeric_limits<float>::infinity();
  auto map = MakeMap({.num_neurons = 4});
  Status s = map.Update({a.data(), 3, 4}, {g.data(), 3, 4});
  EXPECT_EQ(s.code(), ErrorCode::kNonFinite);
  EXPECT_TRUE(Contains(s, "gradient[0][3]")) << s.message();
}

// Update's blocks of 64 rows on the OpenMP threads give the bits of one thread, in every mode,
// over several updates; a non-finite entry in a late block is named as it is serially, and the
// map is left as it was.
TEST(SensitivityMap, ParallelUpdateEqualsOneThread) {
  const int saved = omp_get_max_threads();
  const size_t rows = 200, cols = 37;
  for (SensitivityMode mode : {SensitivityMode::kTaylor, SensitivityMode::kActivation,
                               SensitivityMode::kGradient, SensitivityMode::kWeighted}) {
    const SensitivityOptions serial{.num_neurons = cols, .block = 3, .mode = mode};
    SensitivityOptions parallel = serial;
    parallel.parallel_min_entries = 1;
    for (int threads : {2, 3}) {
      omp_set_num_threads(threads);
      auto one = MakeMap(serial);
      auto many = MakeMap(parallel);
      for (uint32_t step = 0; step < 3; ++step) {
        const auto a = RandomMatrix(rows, cols, 100 + step);
        const auto g = RandomMatrix(rows, cols, 200 + step);
        ASSERT_TRUE(one.Update({a.data(), rows, cols}, {g.data(), rows, cols}).ok());
        ASSERT_TRUE(many.Update({a.data(), rows, cols}, {g.data(), rows, cols}).ok());
        ASSERT_EQ(many.values().size(), one.values().size());
        for (size_t u = 0; u < one.values().size(); ++u) {
          ASSERT_EQ(std::bit_cast<uint32_t>(many.values()[u]),
                    std::bit_cast<uint32_t>(one.values()[u]))
              << "mode " << int(mode) << " threads " << threads << " unit " << u;
        }
      }
      auto a = RandomMatrix(rows, cols, 300);
      auto g = RandomMatrix(rows, cols, 301);
      g[150 * cols + 7] = std::numeric_limits<float>::quiet_NaN();
      a[190 * cols + 1] = std::numeric_limits<float>::infinity();
      const std::vector<float> before(many.values().begin(), many.values().end());
      Status s = many.Update({a.data(), rows, cols}, {g.data(), rows, cols});
      EXPECT_EQ(s.code(), ErrorCode::kNonFinite);
      EXPECT_TRUE(Contains(s, "activation[190][1]")) << s.message();
      EXPECT_EQ(std::vector<float>(many.values().begin(), many.values().end()), before);
    }
  }
  omp_set_num_threads(saved);
}

// The activation's non-finite entry is named before any refusal of the gradient (its shape,
// or its absence), as when the activation was checked in full first.
TEST(SensitivityMap, NonFiniteActivationIsNamedBeforeTheGradientsShape) {
  auto a = RandomMatrix(3, 4, 21);
  const auto g = RandomMatrix(3, 4, 22);
  a[2 * 4 + 1] = std::numeric_limits<float>::infinity();
  auto map = MakeMap({.num_neurons = 4});
  for (Status s : {map.Update({a.data(), 3, 4}, {g.data(), 2, 4}),
                   map.Update({a.data(), 3, 4}, {g.data(), 3, 2}),
                   map.Update({a.data(), 3, 4}, ConstMatrix{})}) {
    EXPECT_EQ(s.code(), ErrorCode::kNonFinite);
    EXPECT_TRUE(Contains(s, "activation[2][1]")) << s.message();
  }
  a[2 * 4 + 1] = 0.5f;
  EXPECT_TRUE(Contains(map.Update({a.data(), 3, 4}, {g.data(), 2, 4}), "gradient.rows"));
  EXPECT_EQ(map.num_updates(), 0u);
}

TEST(SensitivityMap, TreatAsZeroScoresNonFiniteAsZero) {
  std::vector<float> a = {1, 1, std::numeric_limits<float>::quiet_NaN(), 1};
  const std::vector<float> g = {1, 1, 1, std::numeric_limits<float>::infinity()};
  auto map = MakeMap({.num_neurons = 2, .non_finite = OnNonFinite::kTreatAsZero});
  ASSERT_TRUE(map.Update({a.data(), 2, 2}, {g.data(), 2, 2}).ok());
  // col 0: (1*1 + 0)/2 = 0.5, col 1: (1*1 + 1*0)/2 = 0.5
  ExpectValuesNear(map, {1, 1}, 0);
}

TEST(SensitivityMap, RejectsShapeMismatch) {
  const auto a = RandomMatrix(3, 4, 13), g = RandomMatrix(3, 4, 14);
  auto map = MakeMap({.num_neurons = 4});
  Status cols = map.Update({a.data(), 4, 3}, {g.data(), 4, 3});
  EXPECT_EQ(cols.code(), ErrorCode::kShapeMismatch);
  EXPECT_TRUE(Contains(cols, "activation.cols = 3")) << cols.message();
  Status grad_rows = map.Update({a.data(), 3, 4}, {g.data(), 2, 4});
  EXPECT_EQ(grad_rows.code(), ErrorCode::kShapeMismatch);
  EXPECT_TRUE(Contains(grad_rows, "gradient.rows = 2")) << grad_rows.message();
  Status grad_cols = map.Update({a.data(), 3, 4}, {g.data(), 3, 2});
  EXPECT_EQ(grad_cols.code(), ErrorCode::kShapeMismatch);
  Status no_rows = map.Update({a.data(), 0, 4}, {g.data(), 0, 4});
  EXPECT_FALSE(no_rows.ok());
  EXPECT_EQ(map.num_updates(), 0u);
}

TEST(SensitivityMap, FrozenMapRefusesUpdates) {
  const auto a = RandomMatrix(2, 3, 15), g = RandomMatrix(2, 3, 16);
  auto map = MakeMap({.num_neurons = 3});
  ASSERT_TRUE(map.Update({a.data(), 2, 3}, {g.data(), 2, 3}).ok());
  const std::vector<float> before(map.values().begin(), map.values().end());
  map.Freeze();
  EXPECT_TRUE(map.frozen());
  Status s = map.Update({g.data(), 2, 3}, {a.data(), 2, 3});
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s, "frozen")) << s.message();
  EXPECT_FALSE(map.UpdateUnitScores(std::vector<float>{1, 2, 3}).ok());
  EXPECT_EQ(std::vector<float>(map.values().begin(), map.values().end()), before);
  map.Unfreeze();
  EXPECT_TRUE(map.Update({g.data(), 2, 3}, {a.data(), 2, 3}).ok());
}

TEST(SensitivityMap, UpdateUnitScoresRejectsBadInput) {
  auto map = MakeMap({.num_neurons = 6, .block = 2});
  Status size = map.UpdateUnitScores(std::vector<float>{1, 2});
  EXPECT_EQ(size.code(), ErrorCode::kShapeMismatch);
  EXPECT_TRUE(Contains(size, "unit_scores.size = 2")) << size.message();
  Status neg = map.UpdateUnitScores(std::vector<float>{1, -2, 0});
  EXPECT_EQ(neg.code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(Contains(neg, "unit_scores[1] = -2")) << neg.message();
  Status nan = map.UpdateUnitScores(std::vector<float>{1, 2, std::nanf("")});
  EXPECT_EQ(nan.code(), ErrorCode::kNonFinite);
  EXPECT_TRUE(Contains(nan, "unit_scores[2]")) << nan.message();
  EXPECT_EQ(map.num_updates(), 0u);
}

TEST(SensitivityMap, AssignSetsValuesExactly) {
  auto map = MakeMap({.num_neurons = 3});
  const std::vector<float> v = {0.2f, 0.5f, 0.0f};
  ASSERT_TRUE(map.Assign(v).ok());
  EXPECT_EQ(std::vector<float>(map.values().begin(), map.values().end()), v);
  map.Freeze();
  EXPECT_TRUE(map.Assign(v).ok());
}

TEST(SensitivityMap, AssignRejectsBadValues) {
  auto map = MakeMap({.num_neurons = 3});
  EXPECT_EQ(map.Assign(std::vector<float>{0.1f}).code(), ErrorCode::kShapeMismatch);
  Status high = map.Assign(std::vector<float>{0.1f, 1.5f, 0});
  EXPECT_EQ(high.code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(Contains(high, "values[1] = 1.5")) << high.message();
  EXPECT_EQ(map.Assign(std::vector<float>{0.1f, 0, std::nanf("")}).code(), ErrorCode::kNonFinite);
  EXPECT_EQ(map.Assign(std::vector<float>{-0.1f, 0, 0}).code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace sparselink::sensitivity_test
