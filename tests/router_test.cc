// Router, RoutedTensor, Scatter and the mask gather/scatter of the backward pass.
//
// Most tests compare the router against a plain reference written here from the semantics in
// routing.hpp (full sort, plain loops), on random inputs, quantized inputs (many ties) and
// the edge sizes k = 0, 1, n.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "sparselink/contract.hpp"
#include "sparselink/routing.hpp"
#include "sparselink/sensitivity.hpp"

namespace sparselink {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// rows x cols values: uniform in [-1, 1], or (quantized) small integers with many ties.
std::vector<float> RandomValues(size_t rows, size_t cols, uint32_t seed, bool quantized = false) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::uniform_int_distribution<int> small(-3, 3);
  std::vector<float> v(rows * cols);
  for (float& x : v) x = quantized ? static_cast<float>(small(rng)) : uniform(rng);
  return v;
}

ConstMatrix View(const std::vector<float>& v, size_t rows, size_t cols) {
  return {v.data(), rows, cols};
}

SensitivityMap MakeMap(size_t cols, size_t block, const std::vector<float>& values) {
  Result<SensitivityMap> map = SensitivityMap::Create({.num_neurons = cols, .block = block});
  EXPECT_TRUE(map.ok()) << map.status().ToString();
  const Status assigned = map->Assign(values);
  EXPECT_TRUE(assigned.ok()) << assigned.ToString();
  return std::move(map).value();
}

// A map with random unit values in [0,1], a few of them exactly 0.
SensitivityMap RandomMap(size_t cols, size_t block, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> values((cols + block - 1) / block);
  for (size_t u = 0; u < values.size(); ++u) values[u] = (u % 5 == 3) ? 0.0f : uniform(rng);
  return MakeMap(cols, block, values);
}

Contract MakeContract(double keep, double keep_full = 1.0,
                      Granularity granularity = Granularity::kElement,
                      RestCodec rest = RestCodec::kDrop) {
  Contract c;
  c.keep = keep;
  c.keep_full = keep_full;
  c.granularity = granularity;
  c.rest = rest;
  return c;
}

Router MakeRouter(Scoring scoring, double eps = 1e-3, uint64_t seed = 0,
                  OnNonFinite non_finite = OnNonFinite::kReject) {
  Result<Router> router =
      Router::Create({.scoring = scoring,
                      .eps = eps,
                      .seed = seed,
                      .non_finite = non_finite,
                      .parallel_min_entries = 1});  // small inputs take the parallel path
  EXPECT_TRUE(router.ok()) << router.status().ToString();
  return std::move(router).value();
}

RoutedTensor MustRoute(const Router& router, ConstMatrix a, const SensitivityMap* map,
                       const Contract& contract, uint64_t step = 0) {
  Result<RoutedTensor> routed = router.Route(a, map, contract, step);
  EXPECT_TRUE(routed.ok()) << routed.status().ToString();
  if (!routed.ok()) return {};
  const Status valid = routed->Validate();
  EXPECT_TRUE(valid.ok()) << valid.ToString();
  return std::move(routed).value();
}

// The reference score of routing.hpp, for kSensitivity (map given) or kMagnitude (no map):
// float arithmetic, |a| * w with w = eps + S rounded to float; non-finite a scores 0.
double RefScore(float a, size_t col, const SensitivityMap* map, double eps) {
  if (!std::isfinite(a)) return 0.0;
  const float magnitude = std::fabs(a);
  if (map == nullptr) return magnitude;
  const auto w = static_cast<float>(eps + static_cast<double>(map->NeuronValue(col)));
  return std::fabs(magnitude * w);
}

// Candidates ids 0..n-1 in the reference order: score descending, then id ascending.
std::vector<uint32_t> RefOrder(const std::vector<double>& score) {
  std::vector<uint32_t> order(score.size());
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return score[a] > score[b] || (score[a] == score[b] && a < b);
  });
  return order;
}

struct RefRow {
  std::vector<uint32_t> indices;  // ascending
  std::vector<Tier> tiers;
};

// Element mode by full sort: the first k of the order are kept, the first nf of those full.
RefRow RefSelectRow(const std::vector<double>& score, size_t k, size_t nf) {
  const std::vector<uint32_t> order = RefOrder(score);
  std::vector<Tier> tier_of(score.size(), Tier::kDropped);
  for (size_t i = 0; i < k; ++i) tier_of[order[i]] = i < nf ? Tier::kFull : Tier::kLossy;
  RefRow row;
  for (uint32_t c = 0; c < score.size(); ++c) {
    if (tier_of[c] != Tier::kDropped) {
      row.indices.push_back(c);
      row.tiers.push_back(tier_of[c]);
    }
  }
  return row;
}

// The seed's routeData, literally: sort the indices by importance (descending), keep the
// first int(n * contract / 100). std::stable_sort leaves equal scores in index order.
std::vector<uint32_t> SeedRouteData(const std::vector<double>& importance,
                                    double contract_percent) {
  const size_t num_connections = importance.size();
  const auto num_to_maintain =
      static_cast<size_t>(static_cast<double>(num_connections) * (contract_percent / 100));
  std::vector<uint32_t> sorted_indices(num_connections);
  std::iota(sorted_indices.begin(), sorted_indices.end(), 0u);
  std::stable_sort(sorted_indices.begin(), sorted_indices.end(),
                   [&](uint32_t a, uint32_t b) { return importance[a] > importance[b]; });
  return {sorted_indices.begin(),
          sorted_indices.begin() + static_cast<std::ptrdiff_t>(num_to_maintain)};
}

std::vector<uint32_t> ToVector(std::span<const uint32_t> s) { return {s.begin(), s.end()}; }

// ----------------------------------------------------------------------------- names

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

// ----------------------------------------------------------------------------- create

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

// ----------------------------------------------------------------------------- seed semantics

TEST(Router, SeedPseudocodeKeepsIntNTimesContractOver100) {
  // One row is the seed's layerAOutput; importance is the sensitivity score.
  for (size_t n : {1u, 8u, 10u, 64u, 100u, 1000u}) {
    for (double percent : {1.0, 5.0, 10.0, 12.5, 25.0, 50.0, 75.0, 100.0}) {
      for (uint32_t seed : {1u, 2u}) {
        SCOPED_TRACE("n=" + std::to_string(n) + " percent=" + std::to_string(percent) +
                     " seed=" + std::to_string(seed));
        const std::vector<float> a = RandomValues(1, n, seed, seed == 2);
        const SensitivityMap map = RandomMap(n, 1, seed + 10);
        const Router router = MakeRouter(Scoring::kSensitivity, 1e-3);
        const RoutedTensor routed =
            MustRoute(router, View(a, 1, n), &map, MakeContract(percent / 100));

        std::vector<double> importance(n);
        for (size_t c = 0; c < n; ++c) importance[c] = RefScore(a[c], c, &map, 1e-3);
        std::vector<uint32_t> selected = SeedRouteData(importance, percent);
        std::sort(selected.begin(), selected.end());
        EXPECT_EQ(ToVector(routed.RowIndices(0)), selected);
        ASSERT_EQ(routed.values.size(), selected.size());
        for (size_t i = 0; i < selected.size(); ++i) EXPECT_EQ(routed.values[i], a[selected[i]]);
      }
    }
  }
}

TEST(Router, SeedPseudocodeAppliesToEachRowInElementMode) {
  const size_t rows = 6;
  const size_t cols = 50;
  const std::vector<float> a = RandomValues(rows, cols, 5);
  const SensitivityMap map = RandomMap(cols, 1, 6);
  const Router router = MakeRouter(Scoring::kSensitivity, 1e-3);
  const RoutedTensor routed = MustRoute(router, View(a, rows, cols), &map, MakeContract(0.2));
  for (size_t r = 0; r < rows; ++r) {
    std::vector<double> importance(cols);
    for (size_t c = 0; c < cols; ++c) importance[c] = RefScore(a[r * cols + c], c, &map, 1e-3);
    std::vector<uint32_t> selected = SeedRouteData(importance, 20.0);
    std::sort(selected.begin(), selected.end());
    EXPECT_EQ(ToVector(routed.RowIndices(r)), selected) << "row " << r;
  }
}

// ----------------------------------------------------------------------------- exact top-k

// keep values that give k = 0, 1, a middle k and n out of n columns.
std::vector<std::pair<double, size_t>> KeepsForEdgeKs(size_t n) {
  std::vector<std::pair<double, size_t>> keeps;
  keeps.push_back({0.5 / static_cast<double>(n), 0});
  if (n >= 2) keeps.push_back({1.5 / static_cast<double>(n), 1});
  keeps.push_back({0.3, KeptCount(n, 0.3)});
  keeps.push_back({1.0, n});
  return keeps;
}

TEST(Router, ExactTopKEqualsFullSortReference) {
  for (size_t cols : {1u, 7u, 33u, 64u, 4097u}) {
    for (const auto& [keep, k] : KeepsForEdgeKs(cols)) {
      for (uint32_t seed : {1u, 2u, 3u, 4u}) {
        const size_t rows = cols > 1000 ? 3 : 5;
        const bool quantized = seed % 2 == 0;
        SCOPED_TRACE("cols=" + std::to_string(cols) + " k=" + std::to_string(k) +
                     " seed=" + std::to_string(seed));
        ASSERT_EQ(KeptCount(cols, keep), k);
        const std::vector<float> a = RandomValues(rows, cols, seed, quantized);
        const SensitivityMap map = RandomMap(cols, 1, seed * 7);
        const Router router = MakeRouter(Scoring::kSensitivity, 0.01);
        const double keep_full = 0.5;
        const RoutedTensor routed =
            MustRoute(router, View(a, rows, cols), &map, MakeContract(keep, keep_full));
        ASSERT_EQ(routed.num_kept(), rows * k);
        for (size_t r = 0; r < rows; ++r) {
          std::vector<double> score(cols);
          for (size_t c = 0; c < cols; ++c) score[c] = RefScore(a[r * cols + c], c, &map, 0.01);
          const RefRow ref = RefSelectRow(score, k, FullCount(k, keep_full));
          ASSERT_EQ(ToVector(routed.RowIndices(r)), ref.indices) << "row " << r;
          const size_t base = routed.row_offsets[r];
          for (size_t i = 0; i < k; ++i) {
            EXPECT_EQ(routed.tiers[base + i], ref.tiers[i]);
            EXPECT_EQ(routed.values[base + i], a[r * cols + ref.indices[i]]);
          }
        }
      }
    }
  }
}

TEST(Router, KeepBelowOneEntryKeepsNothingAndScattersZeros) {
  const std::vector<float> a = RandomValues(2, 7, 3);
  const Router router = MakeRouter(Scoring::kMagnitude);
  const RoutedTensor routed = MustRoute(router, View(a, 2, 7), nullptr, MakeContract(0.1));
  EXPECT_EQ(routed.num_kept(), 0u);
  EXPECT_EQ(routed.row_offsets, (std::vector<uint32_t>{0, 0, 0}));
  std::vector<float> dense(14, 5.0f);
  ASSERT_TRUE(Scatter(routed, {dense.data(), 2, 7}).ok());
  EXPECT_EQ(dense, std::vector<float>(14, 0.0f));
}

// ----------------------------------------------------------------------------- ties

TEST(Router, AllEqualActivationsKeepTheLowestColumns) {
  const size_t rows = 3;
  const size_t cols = 20;
  const std::vector<float> a(rows * cols, 0.5f);
  const Router router = MakeRouter(Scoring::kMagnitude);
  const RoutedTensor routed =
      MustRoute(router, View(a, rows, cols), nullptr, MakeContract(0.25, 0.4));
  std::vector<uint32_t> lowest(5);
  std::iota(lowest.begin(), lowest.end(), 0u);
  for (size_t r = 0; r < rows; ++r) {
    EXPECT_EQ(ToVector(routed.RowIndices(r)), lowest);
    // Among equal scores the lower columns are "better", so they take the full tier.
    const size_t base = routed.row_offsets[r];
    EXPECT_EQ(routed.tiers[base + 0], Tier::kFull);
    EXPECT_EQ(routed.tiers[base + 1], Tier::kFull);
    for (size_t i = 2; i < 5; ++i) EXPECT_EQ(routed.tiers[base + i], Tier::kLossy);
  }
}

TEST(Router, AllZeroMapStillRoutesByMagnitudeTimesEps) {
  const size_t rows = 4;
  const size_t cols = 33;
  const std::vector<float> a = RandomValues(rows, cols, 11);
  const SensitivityMap zero_map = MakeMap(cols, 1, std::vector<float>(cols, 0.0f));
  const Router by_sensitivity = MakeRouter(Scoring::kSensitivity, 1e-3);
  const Router by_magnitude = MakeRouter(Scoring::kMagnitude);
  const Contract contract = MakeContract(0.3, 0.5);
  const RoutedTensor s = MustRoute(by_sensitivity, View(a, rows, cols), &zero_map, contract);
  const RoutedTensor m = MustRoute(by_magnitude, View(a, rows, cols), nullptr, contract);
  EXPECT_EQ(s.indices, m.indices);
  EXPECT_EQ(s.tiers, m.tiers);
  EXPECT_EQ(s.values, m.values);
}

TEST(Router, AllZeroMapWithZeroEpsKeepsTheLowestColumns) {
  const std::vector<float> a = RandomValues(2, 10, 4);
  const SensitivityMap zero_map = MakeMap(10, 1, std::vector<float>(10, 0.0f));
  const Router router = MakeRouter(Scoring::kSensitivity, 0.0);
  const RoutedTensor routed = MustRoute(router, View(a, 2, 10), &zero_map, MakeContract(0.3));
  EXPECT_EQ(ToVector(routed.RowIndices(1)), (std::vector<uint32_t>{0, 1, 2}));
}

// ----------------------------------------------------------------------------- tiers

TEST(Router, TierCountsFollowKeepFull) {
  const size_t rows = 5;
  const size_t cols = 64;
  const std::vector<float> a = RandomValues(rows, cols, 21);
  const Router router = MakeRouter(Scoring::kMagnitude);
  for (double keep_full : {0.0, 0.3, 0.5, 1.0}) {
    const Contract contract = MakeContract(0.25, keep_full);
    const RoutedTensor routed = MustRoute(router, View(a, rows, cols), nullptr, contract);
    const size_t k = KeptCount(cols, 0.25);
    const size_t nf = FullCount(k, keep_full);
    EXPECT_EQ(routed.CountTier(Tier::kFull), rows * nf) << keep_full;
    EXPECT_EQ(routed.CountTier(Tier::kLossy), rows * (k - nf)) << keep_full;
    EXPECT_EQ(routed.CountTier(Tier::kDropped), rows * (cols - k)) << keep_full;
  }
}

TEST(Router, FullTierScoresAreAtLeastLossyTierScores) {
  const size_t rows = 8;
  const size_t cols = 100;
  const std::vector<float> a = RandomValues(rows, cols, 22);
  const SensitivityMap map = RandomMap(cols, 1, 23);
  const Router router = MakeRouter(Scoring::kSensitivity, 0.05);
  const RoutedTensor routed = MustRoute(router, View(a, rows, cols), &map, MakeContract(0.4, 0.3));
  for (size_t r = 0; r < rows; ++r) {
    double min_full = std::numeric_limits<double>::infinity();
    double max_lossy = -1;
    double max_dropped = -1;
    double min_kept = std::numeric_limits<double>::infinity();
    const std::span<const uint32_t> kept = routed.RowIndices(r);
    std::vector<bool> is_kept(cols, false);
    for (size_t i = 0; i < kept.size(); ++i) {
      const double s = RefScore(a[r * cols + kept[i]], kept[i], &map, 0.05);
      is_kept[kept[i]] = true;
      min_kept = std::min(min_kept, s);
      if (routed.tiers[routed.row_offsets[r] + i] == Tier::kFull) {
        min_full = std::min(min_full, s);
      } else {
        max_lossy = std::max(max_lossy, s);
      }
    }
    for (size_t c = 0; c < cols; ++c) {
      if (!is_kept[c])
        max_dropped = std::max(max_dropped, RefScore(a[r * cols + c], c, &map, 0.05));
    }
    EXPECT_GE(min_full, max_lossy) << "row " << r;
    EXPECT_GE(min_kept, max_dropped) << "row " << r;
  }
}

// ----------------------------------------------------------------------------- unit granularity

// Unit mode by plain loops: unit score = sum over rows, then columns of the unit, of the entry
// scores; the first k units of the reference order are kept, the first nf of those full.
struct RefUnits {
  std::vector<uint32_t> columns;
  std::vector<Tier> tiers;
};
RefUnits RefUnitSelect(const std::vector<float>& a, size_t rows, size_t cols, size_t block,
                       const SensitivityMap* map, double eps, double keep, double keep_full) {
  const size_t num_units = (cols + block - 1) / block;
  std::vector<double> column_sum(cols, 0.0);
  for (size_t c = 0; c < cols; ++c) {
    for (size_t r = 0; r < rows; ++r) column_sum[c] += RefScore(a[r * cols + c], c, map, eps);
  }
  std::vector<double> unit_score(num_units, 0.0);
  for (size_t c = 0; c < cols; ++c) unit_score[c / block] += column_sum[c];
  const size_t k = KeptCount(num_units, keep);
  const RefRow units = RefSelectRow(unit_score, k, FullCount(k, keep_full));
  RefUnits ref;
  for (size_t i = 0; i < units.indices.size(); ++i) {
    for (size_t c = units.indices[i] * block; c < std::min(cols, (units.indices[i] + 1) * block);
         ++c) {
      ref.columns.push_back(static_cast<uint32_t>(c));
      ref.tiers.push_back(units.tiers[i]);
    }
  }
  return ref;
}

TEST(Router, UnitGranularityMatchesPlainReference) {
  const size_t rows = 6;
  for (size_t cols : {10u, 33u, 64u}) {
    for (size_t block : {1u, 4u}) {  // block 4 of 10 or 33 columns: a partial last block
      for (double keep : {0.1, 0.34, 0.5, 1.0}) {
        for (uint32_t seed : {1u, 2u}) {
          SCOPED_TRACE("cols=" + std::to_string(cols) + " block=" + std::to_string(block) +
                       " keep=" + std::to_string(keep) + " seed=" + std::to_string(seed));
          const std::vector<float> a = RandomValues(rows, cols, seed, seed == 2);
          const SensitivityMap map = RandomMap(cols, block, seed + 3);
          const Router router = MakeRouter(Scoring::kSensitivity, 0.02);
          const RoutedTensor routed = MustRoute(router, View(a, rows, cols), &map,
                                                MakeContract(keep, 0.5, Granularity::kUnit));
          const RefUnits ref = RefUnitSelect(a, rows, cols, block, &map, 0.02, keep, 0.5);
          ASSERT_EQ(routed.granularity, Granularity::kUnit);
          ASSERT_EQ(routed.row_offsets, (std::vector<uint32_t>{0, uint32_t(ref.columns.size())}));
          ASSERT_EQ(routed.indices, ref.columns);
          const size_t n = ref.columns.size();
          ASSERT_EQ(routed.values.size(), rows * n);
          for (size_t r = 0; r < rows; ++r) {
            EXPECT_EQ(ToVector(routed.RowIndices(r)), ref.columns);
            EXPECT_EQ(routed.num_kept_in_row(r), n);
            for (size_t i = 0; i < n; ++i) {
              EXPECT_EQ(routed.values[r * n + i], a[r * cols + ref.columns[i]]);
              EXPECT_EQ(routed.tiers[r * n + i], ref.tiers[i]);
            }
          }
        }
      }
    }
  }
}

TEST(Router, UnitGranularityKeepsWholeBlocksIncludingThePartialLast) {
  // 10 columns, block 4: units {0..3}, {4..7}, {8,9}. Only the last unit matters to the map.
  const size_t rows = 2;
  const size_t cols = 10;
  const std::vector<float> a(rows * cols, 1.0f);
  const SensitivityMap map = MakeMap(cols, 4, {0.0f, 0.1f, 1.0f});
  const Router router = MakeRouter(Scoring::kSensitivity, 0.0);
  const RoutedTensor routed =
      MustRoute(router, View(a, rows, cols), &map, MakeContract(0.34, 1.0, Granularity::kUnit));
  EXPECT_EQ(routed.indices, (std::vector<uint32_t>{8, 9}));
  const RoutedTensor two =
      MustRoute(router, View(a, rows, cols), &map, MakeContract(0.67, 0.5, Granularity::kUnit));
  EXPECT_EQ(two.indices, (std::vector<uint32_t>{4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(two.tiers, (std::vector<Tier>{Tier::kLossy, Tier::kLossy, Tier::kLossy, Tier::kLossy,
                                          Tier::kFull, Tier::kFull, Tier::kLossy, Tier::kLossy,
                                          Tier::kLossy, Tier::kLossy, Tier::kFull, Tier::kFull}));
}

TEST(Router, UnitGranularityWithoutSensitivityUsesSingleColumns) {
  const size_t rows = 3;
  const size_t cols = 12;
  const std::vector<float> a = RandomValues(rows, cols, 31);
  const SensitivityMap map = RandomMap(cols, 4, 32);
  const Router router = MakeRouter(Scoring::kMagnitude);
  const RoutedTensor routed =
      MustRoute(router, View(a, rows, cols), &map, MakeContract(0.25, 1.0, Granularity::kUnit));
  const RefUnits ref = RefUnitSelect(a, rows, cols, 1, nullptr, 0.0, 0.25, 1.0);
  EXPECT_EQ(routed.indices, ref.columns);
  EXPECT_EQ(routed.indices.size(), 3u);
}

// ----------------------------------------------------------------------------- rest tier

// kSign1 by plain loops over the non-kept entries of each row, in row-major order.
void ExpectSign1MatchesReference(const RoutedTensor& routed, const std::vector<float>& a) {
  const size_t rows = routed.rows;
  const size_t cols = routed.cols;
  std::vector<uint8_t> bits;
  std::vector<float> centroids;
  size_t bit = 0;
  for (size_t r = 0; r < rows; ++r) {
    const std::span<const uint32_t> kept = routed.RowIndices(r);
    double positive_sum = 0, other_sum = 0;
    size_t positive_count = 0, other_count = 0;
    for (size_t c = 0; c < cols; ++c) {
      if (std::find(kept.begin(), kept.end(), c) != kept.end()) continue;
      const float v = a[r * cols + c];
      if (bit % 8 == 0) bits.push_back(0);
      if (v > 0) {
        bits.back() = static_cast<uint8_t>(bits.back() | (1u << (bit % 8)));
        positive_sum += v;
        ++positive_count;
      } else {
        other_sum += v;
        ++other_count;
      }
      ++bit;
    }
    centroids.push_back(positive_count ? static_cast<float>(positive_sum / double(positive_count))
                                       : 0.0f);
    centroids.push_back(other_count ? static_cast<float>(other_sum / double(other_count)) : 0.0f);
  }
  EXPECT_EQ(routed.rest_bits, bits);
  EXPECT_EQ(routed.rest_centroids, centroids);

  // Scatter: kept values in place, the centroid of the entry's side elsewhere.
  std::vector<float> dense(rows * cols, 99.0f);
  ASSERT_TRUE(Scatter(routed, {dense.data(), rows, cols}).ok());
  for (size_t r = 0; r < rows; ++r) {
    const std::span<const uint32_t> kept = routed.RowIndices(r);
    for (size_t c = 0; c < cols; ++c) {
      const float v = a[r * cols + c];
      const bool is_kept = std::find(kept.begin(), kept.end(), c) != kept.end();
      const float want = is_kept ? v : (v > 0 ? centroids[2 * r] : centroids[2 * r + 1]);
      EXPECT_EQ(dense[r * cols + c], want) << "[" << r << "][" << c << "]";
    }
  }
}

TEST(Router, Sign1RestMatchesReferenceInElementMode) {
  for (size_t cols : {1u, 7u, 33u}) {
    for (double keep : {0.1, 0.5, 1.0}) {
      SCOPED_TRACE("cols=" + std::to_string(cols) + " keep=" + std::to_string(keep));
      const size_t rows = 5;
      const std::vector<float> a = RandomValues(rows, cols, 41, cols == 7);
      const Router router = MakeRouter(Scoring::kMagnitude);
      const RoutedTensor routed =
          MustRoute(router, View(a, rows, cols), nullptr,
                    MakeContract(keep, 0.5, Granularity::kElement, RestCodec::kSign1));
      ExpectSign1MatchesReference(routed, a);
    }
  }
}

TEST(Router, Sign1RestMatchesReferenceInUnitMode) {
  const size_t rows = 4;
  const size_t cols = 10;
  const std::vector<float> a = RandomValues(rows, cols, 42);
  const SensitivityMap map = RandomMap(cols, 4, 43);
  const Router router = MakeRouter(Scoring::kSensitivity);
  const RoutedTensor routed =
      MustRoute(router, View(a, rows, cols), &map,
                MakeContract(0.34, 1.0, Granularity::kUnit, RestCodec::kSign1));
  ExpectSign1MatchesReference(routed, a);
}

TEST(Router, Sign1CentroidOfAnEmptySideIsZero) {
  const std::vector<float> a = {3, 1, 2, 4};  // the rest is all positive
  const Router router = MakeRouter(Scoring::kMagnitude);
  const RoutedTensor routed =
      MustRoute(router, View(a, 1, 4), nullptr,
                MakeContract(0.5, 1.0, Granularity::kElement, RestCodec::kSign1));
  EXPECT_EQ(routed.indices, (std::vector<uint32_t>{0, 3}));
  EXPECT_EQ(routed.rest_centroids, (std::vector<float>{1.5f, 0.0f}));
  EXPECT_EQ(routed.rest_bits, (std::vector<uint8_t>{0b11}));
}

TEST(Router, DropRestLeavesRestFieldsEmpty) {
  const std::vector<float> a = RandomValues(3, 9, 44);
  const Router router = MakeRouter(Scoring::kMagnitude);
  RoutedTensor out;
  ASSERT_TRUE(router
                  .Route(View(a, 3, 9), nullptr,
                         MakeContract(0.5, 1.0, Granularity::kElement, RestCodec::kSign1), 0, &out)
                  .ok());
  ASSERT_FALSE(out.rest_bits.empty());
  ASSERT_TRUE(router.Route(View(a, 3, 9), nullptr, MakeContract(0.5), 0, &out).ok());
  EXPECT_TRUE(out.rest_bits.empty());
  EXPECT_TRUE(out.rest_centroids.empty());
  EXPECT_TRUE(out.Validate().ok());
}

// ----------------------------------------------------------------------------- scatter / gather

TEST(Scatter, PutsValuesBackAndZerosElsewhere) {
  const size_t rows = 4;
  const size_t cols = 33;
  const std::vector<float> a = RandomValues(rows, cols, 51);
  const Router router = MakeRouter(Scoring::kMagnitude);
  for (Granularity g : {Granularity::kElement, Granularity::kUnit}) {
    const RoutedTensor routed =
        MustRoute(router, View(a, rows, cols), nullptr, MakeContract(0.3, 0.5, g));
    std::vector<float> dense(rows * cols, -7.0f);
    ASSERT_TRUE(Scatter(routed, {dense.data(), rows, cols}).ok());
    for (size_t r = 0; r < rows; ++r) {
      const std::span<const uint32_t> kept = routed.RowIndices(r);
      for (size_t c = 0; c < cols; ++c) {
        const bool is_kept = std::find(kept.begin(), kept.end(), c) != kept.end();
        EXPECT_EQ(dense[r * cols + c], is_kept ? a[r * cols + c] : 0.0f);
      }
    }
  }
}

TEST(Scatter, FullKeepReconstructsTheActivationExactly) {
  const std::vector<float> a = RandomValues(3, 17, 52);
  const Router router = MakeRouter(Scoring::kMagnitude);
  const RoutedTensor routed = MustRoute(router, View(a, 3, 17), nullptr, MakeContract(1.0, 0.5));
  std::vector<float> dense(a.size());
  ASSERT_TRUE(Scatter(routed, {dense.data(), 3, 17}).ok());
  EXPECT_EQ(dense, a);
}

TEST(GatherAtMask, RoundTripsThroughScatterAtMask) {
  const size_t rows = 5;
  const size_t cols = 40;
  const std::vector<float> a = RandomValues(rows, cols, 53);
  const std::vector<float> g = RandomValues(rows, cols, 54);
  const Router router = MakeRouter(Scoring::kMagnitude);
  for (Granularity gran : {Granularity::kElement, Granularity::kUnit}) {
    const RoutedTensor mask =
        MustRoute(router, View(a, rows, cols), nullptr, MakeContract(0.2, 1.0, gran));
    std::vector<float> values;
    ASSERT_TRUE(GatherAtMask(mask, View(g, rows, cols), &values).ok());
    ASSERT_EQ(values.size(), mask.num_kept());
    size_t i = 0;
    for (size_t r = 0; r < rows; ++r) {
      for (uint32_t c : mask.RowIndices(r)) EXPECT_EQ(values[i++], g[r * cols + c]);
    }
    std::vector<float> dense(rows * cols, 3.0f);
    ASSERT_TRUE(ScatterAtMask(mask, values, {dense.data(), rows, cols}).ok());
    for (size_t r = 0; r < rows; ++r) {
      const std::span<const uint32_t> kept = mask.RowIndices(r);
      for (size_t c = 0; c < cols; ++c) {
        const bool is_kept = std::find(kept.begin(), kept.end(), c) != kept.end();
        EXPECT_EQ(dense[r * cols + c], is_kept ? g[r * cols + c] : 0.0f);
      }
    }
    std::vector<float> again;
    ASSERT_TRUE(GatherAtMask(mask, View(dense, rows, cols), &again).ok());
    EXPECT_EQ(again, values);
  }
}

TEST(GatherAtMask, RejectsNonFiniteGradientAtAKeptPositionOnly) {
  const std::vector<float> a = {1, 0, 0, 2};  // keeps columns 0 and 3
  std::vector<float> g = {0.5f, kNaN, kInf, 0.25f};
  const Router router = MakeRouter(Scoring::kMagnitude);
  const RoutedTensor mask = MustRoute(router, View(a, 1, 4), nullptr, MakeContract(0.5));
  std::vector<float> values;
  ASSERT_TRUE(GatherAtMask(mask, View(g, 1, 4), &values).ok());
  EXPECT_EQ(values, (std::vector<float>{0.5f, 0.25f}));
  g[3] = kNaN;
  const Status bad = GatherAtMask(mask, View(g, 1, 4), &values);
  EXPECT_EQ(bad.code(), ErrorCode::kNonFinite);
  EXPECT_NE(bad.message().find("gradient[0][3]"), std::string::npos) << bad.message();
  ASSERT_TRUE(GatherAtMask(mask, View(g, 1, 4), &values, OnNonFinite::kTreatAsZero).ok());
  EXPECT_EQ(values, (std::vector<float>{0.5f, 0.0f}));
}

// The KeptMask forms against the column-list forms: the same values, the same dense gradient,
// at awkward widths (rows that start mid-byte, tails of a vector and of a word) and both
// granularities.
TEST(KeptMask, GatherAndScatterEqualTheColumnListForms) {
  const Router router = MakeRouter(Scoring::kMagnitude);
  for (size_t cols : {1u, 7u, 40u, 63u, 64u, 100u, 1024u, 1030u}) {
    for (Granularity gran : {Granularity::kElement, Granularity::kUnit}) {
      for (double keep : {0.05, 0.3, 1.0}) {
        const size_t rows = 5;
        const std::vector<float> a = RandomValues(rows, cols, 70 + cols);
        const std::vector<float> g = RandomValues(rows, cols, 71 + cols);
        const RoutedTensor routed =
            MustRoute(router, View(a, rows, cols), nullptr, MakeContract(keep, 1.0, gran));
        KeptMask mask;
        ASSERT_TRUE(MaskOf(routed, &mask).ok());
        ASSERT_TRUE(mask.Validate().ok());
        EXPECT_EQ(mask.num_kept(), routed.num_kept());
        EXPECT_EQ(mask.granularity, gran);
        std::vector<float> want, got;
        ASSERT_TRUE(GatherAtMask(routed, View(g, rows, cols), &want).ok());
        ASSERT_TRUE(GatherAtMask(mask, View(g, rows, cols), &got).ok());
        EXPECT_EQ(got, want) << cols << " " << keep;
        std::vector<float> dense_want(rows * cols, 3.0f), dense_got(rows * cols, 4.0f);
        ASSERT_TRUE(ScatterAtMask(routed, want, {dense_want.data(), rows, cols}).ok());
        ASSERT_TRUE(ScatterAtMask(mask, want, {dense_got.data(), rows, cols}).ok());
        EXPECT_EQ(dense_got, dense_want) << cols << " " << keep;
      }
    }
  }
}

TEST(KeptMask, GatherNamesANonFiniteGradientByRowAndColumn) {
  const std::vector<float> a = {1, 0, 0, 2, 0, 3, 4, 0};  // 2 x 4, keep 2 per row
  std::vector<float> g = {0.5f, kNaN, kInf, 0.25f, 1.0f, 2.0f, 3.0f, 4.0f};
  const Router router = MakeRouter(Scoring::kMagnitude);
  const RoutedTensor routed = MustRoute(router, View(a, 2, 4), nullptr, MakeContract(0.5));
  KeptMask mask;
  ASSERT_TRUE(MaskOf(routed, &mask).ok());
  std::vector<float> values;
  ASSERT_TRUE(GatherAtMask(mask, View(g, 2, 4), &values).ok());
  EXPECT_EQ(values, (std::vector<float>{0.5f, 0.25f, 2.0f, 3.0f}));
  g[6] = kInf;
  const Status bad = GatherAtMask(mask, View(g, 2, 4), &values);
  EXPECT_EQ(bad.code(), ErrorCode::kNonFinite);
  EXPECT_NE(bad.message().find("gradient[1][2]"), std::string::npos) << bad.message();
  ASSERT_TRUE(GatherAtMask(mask, View(g, 2, 4), &values, OnNonFinite::kTreatAsZero).ok());
  EXPECT_EQ(values, (std::vector<float>{0.5f, 0.25f, 2.0f, 0.0f}));
}

// The row-parallel paths (parallel_min_entries = 1: every call on the OpenMP threads, which
// split rows in ranges of multiples of 8) give the one-thread output bit for bit, on shapes
// whose ranges end mid-byte of no bitmap, rows fewer than a range, and more threads than
// ranges.
TEST(ParallelRows, ScattersAndGathersEqualOneThread) {
  constexpr size_t kSerial = std::numeric_limits<size_t>::max();
  const Router router = MakeRouter(Scoring::kMagnitude);
  const int saved_threads = omp_get_max_threads();
  for (int threads : {2, 3, 5}) {
    omp_set_num_threads(threads);
    for (size_t rows : {1u, 7u, 8u, 9u, 17u, 32u, 64u, 130u}) {
      for (size_t cols : {5u, 8u, 13u, 64u, 100u, 1024u}) {
        // keep 1 %: a row or two kept entries, so the whole vectors a thread's gather writes
        // past its last entry reach far beyond its rows.
        for (auto [gran, keep] :
             {std::pair{Granularity::kElement, 0.2}, std::pair{Granularity::kElement, 0.01},
              std::pair{Granularity::kUnit, 0.2}}) {
          const std::vector<float> a = RandomValues(rows, cols, 90 + rows + cols);
          std::vector<float> g = RandomValues(rows, cols, 91 + rows + cols);
          const RoutedTensor routed =
              MustRoute(router, View(a, rows, cols), nullptr, MakeContract(keep, 1.0, gran));
          KeptMask mask;
          ASSERT_TRUE(MaskOf(routed, &mask).ok());
          const std::string where = std::to_string(threads) + " threads, " + std::to_string(rows) +
                                    " x " + std::to_string(cols) + " keep " + std::to_string(keep);
          std::vector<float> want, got, got_mask;
          ASSERT_TRUE(
              GatherAtMask(routed, View(g, rows, cols), &want, OnNonFinite::kReject, kSerial).ok());
          ASSERT_TRUE(
              GatherAtMask(routed, View(g, rows, cols), &got, OnNonFinite::kReject, 1).ok());
          ASSERT_TRUE(
              GatherAtMask(mask, View(g, rows, cols), &got_mask, OnNonFinite::kReject, 1).ok());
          EXPECT_EQ(got, want) << where;
          EXPECT_EQ(got_mask, want) << where;
          std::vector<float> serial(rows * cols, 3.0f), par(rows * cols, 4.0f),
              par_mask(rows * cols, 5.0f);
          ASSERT_TRUE(ScatterAtMask(routed, want, {serial.data(), rows, cols}, kSerial).ok());
          ASSERT_TRUE(ScatterAtMask(routed, want, {par.data(), rows, cols}, 1).ok());
          ASSERT_TRUE(ScatterAtMask(mask, want, {par_mask.data(), rows, cols}, 1).ok());
          EXPECT_EQ(par, serial) << where;
          EXPECT_EQ(par_mask, serial) << where;
          std::fill(par.begin(), par.end(), 6.0f);
          ASSERT_TRUE(Scatter(routed, {serial.data(), rows, cols}, kSerial).ok());
          ASSERT_TRUE(Scatter(routed, {par.data(), rows, cols}, 1).ok());
          EXPECT_EQ(par, serial) << where;
          // A non-finite gradient at the last kept entry of the last row that keeps one is
          // named the same way.
          size_t r_bad = rows;
          while (r_bad > 0 && routed.RowIndices(r_bad - 1).empty()) --r_bad;
          if (r_bad == 0) continue;
          const uint32_t c = routed.RowIndices(r_bad - 1).back();
          g[(r_bad - 1) * cols + c] = kNaN;
          const std::string field =
              "gradient[" + std::to_string(r_bad - 1) + "][" + std::to_string(c) + "]";
          for (const Status& s :
               {GatherAtMask(routed, View(g, rows, cols), &got, OnNonFinite::kReject, 1),
                GatherAtMask(mask, View(g, rows, cols), &got_mask, OnNonFinite::kReject, 1)}) {
            EXPECT_EQ(s.code(), ErrorCode::kNonFinite) << where;
            EXPECT_NE(s.message().find(field), std::string::npos) << s.message();
          }
        }
      }
    }
  }
  omp_set_num_threads(saved_threads);
}

// The mask-only calls check what they read: positions and counts, not values or tiers.
TEST(RoutedTensor, ValidateMaskChecksPositionsNotValues) {
  const std::vector<float> a = RandomValues(3, 12, 81);
  const Router router = MakeRouter(Scoring::kMagnitude);
  RoutedTensor mask = MustRoute(router, View(a, 3, 12), nullptr, MakeContract(0.25));
  mask.values[1] = kNaN;
  mask.tiers[2] = static_cast<Tier>(7);
  EXPECT_EQ(mask.Validate().code(), ErrorCode::kNonFinite);
  EXPECT_TRUE(mask.ValidateMask().ok());
  const std::vector<float> g = RandomValues(3, 12, 82);
  std::vector<float> kept;
  ASSERT_TRUE(GatherAtMask(mask, View(g, 3, 12), &kept).ok());
  std::vector<float> dense(36);
  ASSERT_TRUE(ScatterAtMask(mask, kept, {dense.data(), 3, 12}).ok());
  RoutedTensor broken = mask;
  broken.indices[0] = 12;
  Status s = broken.ValidateMask();
  EXPECT_EQ(s.code(), ErrorCode::kCorruptPacket);
  EXPECT_NE(s.message().find("routed.indices[0]"), std::string::npos) << s.message();
  EXPECT_EQ(ScatterAtMask(broken, kept, {dense.data(), 3, 12}).code(), ErrorCode::kCorruptPacket);
  broken = mask;
  broken.values.pop_back();
  s = broken.ValidateMask();
  EXPECT_NE(s.message().find("routed.values.size()"), std::string::npos) << s.message();
}

TEST(KeptMask, ValidateNamesTheBrokenField) {
  const std::vector<float> a = RandomValues(3, 12, 80);
  const Router router = MakeRouter(Scoring::kMagnitude);
  const RoutedTensor routed = MustRoute(router, View(a, 3, 12), nullptr, MakeContract(0.25));
  KeptMask good;
  ASSERT_TRUE(MaskOf(routed, &good).ok());
  const auto expect_bad = [](const KeptMask& m, std::string_view field) {
    const Status s = m.Validate();
    EXPECT_EQ(s.code(), ErrorCode::kCorruptPacket) << field;
    EXPECT_NE(s.message().find(field), std::string::npos) << s.message();
  };
  KeptMask m = good;
  m.bits.pop_back();
  expect_bad(m, "mask.bits.size()");
  m = good;
  m.bits.back() = static_cast<uint8_t>(m.bits.back() | 0x80);  // 36 bits: bit 39 is padding
  expect_bad(m, "mask.bits padding");
  m = good;
  m.row_offsets[2] += 1;
  expect_bad(m, "mask.row_offsets[2]");
  m = good;
  m.row_offsets.pop_back();
  expect_bad(m, "mask.row_offsets.size()");
  m = good;
  m.bits[0] = static_cast<uint8_t>(m.bits[0] ^ 1);  // one entry more or less in row 0
  expect_bad(m, "mask.row_offsets[1]");
  m = good;
  m.cols = 0;
  expect_bad(m, "mask.cols");
  // Gather and scatter refuse a broken mask, and wrong shapes, before touching anything.
  std::vector<float> values = {7.0f}, dense(36, 1.0f);
  m = good;
  m.row_offsets[3] += 1;
  EXPECT_EQ(GatherAtMask(m, View(a, 3, 12), &values).code(), ErrorCode::kCorruptPacket);
  EXPECT_EQ(values, std::vector<float>{7.0f});
  const std::vector<float> right(good.num_kept(), 1.5f);
  EXPECT_EQ(ScatterAtMask(m, right, {dense.data(), 3, 12}).code(), ErrorCode::kCorruptPacket);
  EXPECT_EQ(dense, std::vector<float>(36, 1.0f));
  EXPECT_EQ(GatherAtMask(good, View(a, 3, 11), &values).code(), ErrorCode::kShapeMismatch);
  EXPECT_EQ(GatherAtMask(good, View(a, 3, 12), nullptr).code(), ErrorCode::kInvalidArgument);
  const std::vector<float> few(good.num_kept() - 1, 1.0f);
  EXPECT_EQ(ScatterAtMask(good, few, {dense.data(), 3, 12}).code(), ErrorCode::kShapeMismatch);
  EXPECT_EQ(dense, std::vector<float>(36, 1.0f));
  EXPECT_EQ(MaskOf(routed, nullptr).code(), ErrorCode::kInvalidArgument);
  // Unit granularity: one set of columns for every row, which a RoutedTensor cannot break.
  m = good;
  m.granularity = Granularity::kUnit;
  expect_bad(m, "mask.bits[1][");
  const RoutedTensor unit =
      MustRoute(router, View(a, 3, 12), nullptr, MakeContract(0.25, 1.0, Granularity::kUnit));
  KeptMask unit_mask;
  ASSERT_TRUE(MaskOf(unit, &unit_mask).ok());
  EXPECT_TRUE(unit_mask.Validate().ok());
}

// ----------------------------------------------------------------------------- policies

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

// ----------------------------------------------------------------------------- bad input

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

TEST(Scatter, RejectsOutputOfTheWrongShape) {
  const std::vector<float> a = RandomValues(4, 6, 81);
  const Router router = MakeRouter(Scoring::kMagnitude);
  const RoutedTensor routed = MustRoute(router, View(a, 4, 6), nullptr, MakeContract(0.5));
  std::vector<float> dense(4 * 6);
  const Status rows = Scatter(routed, {dense.data(), 3, 6});
  EXPECT_EQ(rows.code(), ErrorCode::kShapeMismatch);
  EXPECT_EQ(rows.message(), "out.rows = 3: must equal routed.rows = 4");
  const Status cols = Scatter(routed, {dense.data(), 4, 5});
  EXPECT_EQ(cols.code(), ErrorCode::kShapeMismatch);
  EXPECT_EQ(cols.message(), "out.cols = 5: must equal routed.cols = 6");
  EXPECT_EQ(Scatter(routed, {nullptr, 4, 6}).code(), ErrorCode::kInvalidArgument);
  RoutedTensor broken = routed;
  broken.values.pop_back();
  EXPECT_EQ(Scatter(broken, {dense.data(), 4, 6}).code(), ErrorCode::kCorruptPacket);
}

TEST(GatherAtMask, RejectsWrongSizes) {
  const std::vector<float> a = RandomValues(4, 6, 82);
  const Router router = MakeRouter(Scoring::kMagnitude);
  const RoutedTensor mask = MustRoute(router, View(a, 4, 6), nullptr, MakeContract(0.5));
  std::vector<float> values;
  const Status rows = GatherAtMask(mask, View(a, 2, 6), &values);
  EXPECT_EQ(rows.code(), ErrorCode::kShapeMismatch);
  EXPECT_EQ(rows.message(), "gradient.rows = 2: must equal mask.rows = 4");
  const Status cols = GatherAtMask(mask, {a.data(), 4, 7}, &values);
  EXPECT_EQ(cols.message(), "gradient.cols = 7: must equal mask.cols = 6");
  EXPECT_EQ(GatherAtMask(mask, {nullptr, 4, 6}, &values).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(GatherAtMask(mask, View(a, 4, 6), nullptr).code(), ErrorCode::kInvalidArgument);

  std::vector<float> dense(24);
  const std::vector<float> short_values(mask.num_kept() - 1, 1.0f);
  const Status short_status = ScatterAtMask(mask, short_values, {dense.data(), 4, 6});
  EXPECT_EQ(short_status.code(), ErrorCode::kShapeMismatch);
  EXPECT_NE(short_status.message().find("values.size() = 11"), std::string::npos)
      << short_status.message();
  const std::vector<float> right_values(mask.num_kept(), 1.0f);
  EXPECT_EQ(ScatterAtMask(mask, right_values, {dense.data(), 4, 5}).code(),
            ErrorCode::kShapeMismatch);
}

// ----------------------------------------------------------------------------- Validate

struct Corruption {
  const char* what;
  std::function<void(RoutedTensor&)> apply;
  const char* field;  // must appear in the error message
};

void ExpectEachCorruptionCaught(const RoutedTensor& valid, const std::vector<Corruption>& cases) {
  ASSERT_TRUE(valid.Validate().ok()) << valid.Validate().ToString();
  for (const Corruption& c : cases) {
    SCOPED_TRACE(c.what);
    RoutedTensor t = valid;
    c.apply(t);
    const Status status = t.Validate();
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.message().find(c.field), std::string::npos) << status.message();
  }
}

TEST(RoutedTensor, ValidateCatchesEachCorruptedElementField) {
  const std::vector<float> a = RandomValues(4, 10, 91);
  const Router router = MakeRouter(Scoring::kMagnitude);
  const RoutedTensor valid =
      MustRoute(router, View(a, 4, 10), nullptr,
                MakeContract(0.3, 0.5, Granularity::kElement, RestCodec::kSign1));
  // Rows keep 3 of 10: row_offsets = {0, 3, 6, 9, 12}.
  ExpectEachCorruptionCaught(
      valid,
      {
          {"zero rows", [](RoutedTensor& t) { t.rows = 0; }, "routed.rows = 0"},
          {"zero cols", [](RoutedTensor& t) { t.cols = 0; }, "routed.cols = 0"},
          {"unknown granularity", [](RoutedTensor& t) { t.granularity = Granularity(7); },
           "routed.granularity = 7"},
          {"unknown rest", [](RoutedTensor& t) { t.rest = RestCodec(9); }, "routed.rest = 9"},
          {"row_offsets too short", [](RoutedTensor& t) { t.row_offsets.pop_back(); },
           "routed.row_offsets.size() = 4"},
          {"row_offsets too long", [](RoutedTensor& t) { t.row_offsets.push_back(12); },
           "routed.row_offsets.size() = 6"},
          {"row_offsets start", [](RoutedTensor& t) { t.row_offsets[0] = 1; },
           "routed.row_offsets[0] = 1"},
          {"row_offsets decrease", [](RoutedTensor& t) { t.row_offsets[2] = 2; },
           "routed.row_offsets[2] = 2"},
          {"row_offsets end", [](RoutedTensor& t) { t.row_offsets[4] = 13; },
           "routed.row_offsets[4] = 13"},
          {"index out of range", [](RoutedTensor& t) { t.indices[4] = 10; },
           "routed.indices[4] = 10"},
          {"index not ascending", [](RoutedTensor& t) { std::swap(t.indices[3], t.indices[4]); },
           "routed.indices[4]"},
          {"index repeated", [](RoutedTensor& t) { t.indices[4] = t.indices[3]; },
           "routed.indices[4]"},
          {"values too short", [](RoutedTensor& t) { t.values.pop_back(); },
           "routed.values.size() = 11"},
          {"values too long", [](RoutedTensor& t) { t.values.push_back(1); },
           "routed.values.size() = 13"},
          {"value NaN", [](RoutedTensor& t) { t.values[5] = kNaN; }, "routed.values[5]"},
          {"value Inf", [](RoutedTensor& t) { t.values[0] = kInf; }, "routed.values[0]"},
          {"tiers too short", [](RoutedTensor& t) { t.tiers.pop_back(); },
           "routed.tiers.size() = 11"},
          {"tier dropped", [](RoutedTensor& t) { t.tiers[2] = Tier::kDropped; },
           "routed.tiers[2] = 2"},
          {"tier unknown", [](RoutedTensor& t) { t.tiers[2] = Tier(5); }, "routed.tiers[2] = 5"},
          {"rest_bits too short", [](RoutedTensor& t) { t.rest_bits.pop_back(); },
           "routed.rest_bits.size() = 3"},
          {"rest_bits too long", [](RoutedTensor& t) { t.rest_bits.push_back(0); },
           "routed.rest_bits.size() = 5"},
          {"centroids too short", [](RoutedTensor& t) { t.rest_centroids.pop_back(); },
           "routed.rest_centroids.size() = 7"},
          {"centroid NaN", [](RoutedTensor& t) { t.rest_centroids[3] = kNaN; },
           "routed.rest_centroids[3]"},
          {"drop with rest_bits",
           [](RoutedTensor& t) {
             t.rest = RestCodec::kDrop;
             t.rest_centroids.clear();
           },
           "routed.rest_bits.size() = 4"},
          {"drop with centroids",
           [](RoutedTensor& t) {
             t.rest = RestCodec::kDrop;
             t.rest_bits.clear();
           },
           "routed.rest_centroids.size() = 8"},
      });
}

TEST(RoutedTensor, ValidateCatchesEachCorruptedUnitField) {
  const std::vector<float> a = RandomValues(3, 10, 92);
  const Router router = MakeRouter(Scoring::kMagnitude);
  const RoutedTensor valid =
      MustRoute(router, View(a, 3, 10), nullptr, MakeContract(0.4, 0.5, Granularity::kUnit));
  // 4 shared columns, 2 full and 2 lossy; values are 3 x 4.
  ASSERT_EQ(valid.indices.size(), 4u);
  ExpectEachCorruptionCaught(
      valid,
      {
          {"row_offsets per row",
           [](RoutedTensor& t) {
             t.row_offsets = {0, 4, 4, 4};
           },
           "routed.row_offsets.size() = 4"},
          {"row_offsets end", [](RoutedTensor& t) { t.row_offsets[1] = 3; },
           "routed.row_offsets[1] = 3"},
          {"values one row only", [](RoutedTensor& t) { t.values.resize(4); },
           "routed.values.size() = 4"},
          {"tiers one row only", [](RoutedTensor& t) { t.tiers.resize(4); },
           "routed.tiers.size() = 4"},
          {"tier differs between rows",
           [](RoutedTensor& t) {
             t.tiers[5] = t.tiers[1] == Tier::kFull ? Tier::kLossy : Tier::kFull;
           },
           "routed.tiers[5]"},
          {"index not ascending", [](RoutedTensor& t) { std::swap(t.indices[0], t.indices[1]); },
           "routed.indices[1]"},
      });
}

TEST(RoutedTensor, RandomCorruptionIsEitherRejectedOrSafeToScatter) {
  // Whatever Validate accepts, Scatter and GatherAtMask must handle without reading out of
  // bounds (the sanitizer build turns any such read into a failure).
  const std::vector<float> a = RandomValues(3, 12, 93);
  const Router router = MakeRouter(Scoring::kMagnitude);
  std::mt19937 rng(94);
  for (Granularity g : {Granularity::kElement, Granularity::kUnit}) {
    const RoutedTensor valid =
        MustRoute(router, View(a, 3, 12), nullptr, MakeContract(0.25, 0.5, g, RestCodec::kSign1));
    for (int trial = 0; trial < 2000; ++trial) {
      RoutedTensor t = valid;
      const uint32_t value = std::uniform_int_distribution<uint32_t>(0, 40)(rng);
      switch (rng() % 6) {
        case 0: t.row_offsets[rng() % t.row_offsets.size()] = value; break;
        case 1: t.indices[rng() % t.indices.size()] = value; break;
        case 2: t.rows = value; break;
        case 3: t.cols = value; break;
        case 4: t.rest_bits.resize(value); break;
        case 5: t.indices.resize(value % 8); break;
      }
      if (!t.Validate().ok()) continue;
      std::vector<float> dense(size_t{t.rows} * t.cols);
      EXPECT_TRUE(Scatter(t, {dense.data(), t.rows, t.cols}).ok());
      std::vector<float> values;
      EXPECT_TRUE(GatherAtMask(t, {dense.data(), t.rows, t.cols}, &values).ok());
    }
  }
}

TEST(RoutedTensor, AccessorsDescribeRowsAndTiers) {
  RoutedTensor t;
  t.rows = 2;
  t.cols = 5;
  t.row_offsets = {0, 2, 3};
  t.indices = {1, 4, 0};
  t.values = {1, 2, 3};
  t.tiers = {Tier::kFull, Tier::kLossy, Tier::kFull};
  ASSERT_TRUE(t.Validate().ok());
  EXPECT_EQ(t.num_kept(), 3u);
  EXPECT_EQ(t.num_kept_in_row(0), 2u);
  EXPECT_EQ(t.num_kept_in_row(1), 1u);
  EXPECT_EQ(ToVector(t.RowIndices(1)), (std::vector<uint32_t>{0}));
  EXPECT_EQ(t.CountTier(Tier::kFull), 2u);
  EXPECT_EQ(t.CountTier(Tier::kLossy), 1u);
  EXPECT_EQ(t.CountTier(Tier::kDropped), 7u);
}

// ----------------------------------------------------------------------------- threads

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

// ----------------------------------------------------------------------------- fast select

// Inputs chosen to stress the fast selection: ties of every kind, scores that differ only
// below float precision (one coarse bucket, resolved on the exact doubles), +0 and -0 scores,
// and scores beyond the float range.
enum class Data { kUniform, kSmallIntegers, kAllEqual, kAllZero, kNarrow, kHuge, kNonFinite };

std::vector<float> MakeData(Data kind, size_t rows, size_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v(rows * cols);
  switch (kind) {
    case Data::kUniform: return RandomValues(rows, cols, seed);
    case Data::kSmallIntegers: return RandomValues(rows, cols, seed, /*quantized=*/true);
    case Data::kAllEqual: std::fill(v.begin(), v.end(), -0.75f); return v;
    case Data::kAllZero:
      for (size_t i = 0; i < v.size(); ++i) v[i] = i % 3 == 0 ? -0.0f : 0.0f;
      return v;
    case Data::kNarrow: {  // |a| in [1, 1 + 2^-12]: a handful of float steps, many near-ties
      std::uniform_int_distribution<int> steps(0, 2048);
      for (float& x : v) x = (rng() % 2 ? 1.0f : -1.0f) * (1.0f + 0x1p-23f * float(steps(rng)));
      return v;
    }
    case Data::kHuge: {  // near FLT_MAX: times a weight above 1, the score leaves float range
      std::uniform_int_distribution<int> steps(0, 64);
      for (float& x : v) {
        x = std::numeric_limits<float>::max() * (1.0f - 0x1p-20f * float(steps(rng)));
      }
      return v;
    }
    case Data::kNonFinite: {
      v = RandomValues(rows, cols, seed, /*quantized=*/true);
      for (size_t i = 0; i < v.size(); i += 5) v[i] = i % 2 ? kNaN : -kInf;
      return v;
    }
  }
  return v;
}

void ExpectBitIdentical(const RoutedTensor& fast, const RoutedTensor& ref) {
  EXPECT_EQ(fast.rows, ref.rows);
  EXPECT_EQ(fast.cols, ref.cols);
  EXPECT_EQ(fast.row_offsets, ref.row_offsets);
  EXPECT_EQ(fast.indices, ref.indices);
  EXPECT_EQ(fast.tiers, ref.tiers);
  ASSERT_EQ(fast.values.size(), ref.values.size());
  // memcmp, not ==: -0 and +0 must match too. (Never with a null pointer: empty vectors.)
  if (!fast.values.empty()) {
    EXPECT_EQ(
        0, std::memcmp(fast.values.data(), ref.values.data(), fast.values.size() * sizeof(float)));
  }
  EXPECT_EQ(fast.rest_bits, ref.rest_bits);
  ASSERT_EQ(fast.rest_centroids.size(), ref.rest_centroids.size());
  if (!fast.rest_centroids.empty()) {
    EXPECT_EQ(0, std::memcmp(fast.rest_centroids.data(), ref.rest_centroids.data(),
                             fast.rest_centroids.size() * sizeof(float)));
  }
}

TEST(RouterFastSelect, CreateRejectsUnknownSelectMethod) {
  EXPECT_FALSE(Router::Create({.select = static_cast<SelectMethod>(7)}).ok());
  EXPECT_EQ(RouterOptions{}.select, SelectMethod::kFast);
}

// The differential test of STYLE.md: kFast against kReference, bit for bit, over widths not a
// multiple of 8/32/64, k = 0, 1, mid, n, every scoring, both granularities, both rest
// policies, keep_full 0 / 0.5 / 1, and one vs two threads.
TEST(RouterFastSelect, MatchesReferenceBitForBit) {
  const int saved = omp_get_max_threads();
  const Data kinds[] = {Data::kUniform, Data::kSmallIntegers, Data::kAllEqual, Data::kAllZero,
                        Data::kNarrow,  Data::kHuge,          Data::kNonFinite};
  size_t cases = 0;
  for (size_t cols : {1u, 7u, 33u, 64u, 4097u}) {
    const size_t rows = cols > 1000 ? 9 : 5;  // 9 x 4097 is above the parallel threshold
    for (Data kind : kinds) {
      const uint32_t seed = static_cast<uint32_t>(cols * 31 + static_cast<size_t>(kind));
      const std::vector<float> a = MakeData(kind, rows, cols, seed);
      const SensitivityMap fine = RandomMap(cols, 1, seed + 1);
      const size_t block = std::min<size_t>(8, cols);
      const SensitivityMap coarse = RandomMap(cols, block, seed + 2);
      for (Scoring scoring : {Scoring::kSensitivity, Scoring::kMagnitude, Scoring::kRandom}) {
        for (Granularity granularity : {Granularity::kElement, Granularity::kUnit}) {
          const SensitivityMap* map = granularity == Granularity::kUnit ? &coarse : &fine;
          const size_t candidates =
              granularity == Granularity::kUnit && scoring == Scoring::kSensitivity
                  ? (cols + block - 1) / block
                  : cols;
          for (const auto& [keep, k] : KeepsForEdgeKs(candidates)) {
            for (double keep_full : {0.0, 0.5, 1.0}) {
              const RestCodec rest = keep_full == 0.5 ? RestCodec::kSign1 : RestCodec::kDrop;
              const Contract contract = MakeContract(keep, keep_full, granularity, rest);
              RouterOptions options{.scoring = scoring,
                                    .eps = 1e-3,
                                    .seed = 5,
                                    .non_finite = OnNonFinite::kTreatAsZero,
                                    .parallel_min_entries = 1};
              options.select = SelectMethod::kReference;
              const Router reference = *Router::Create(options);
              options.select = SelectMethod::kFast;
              const Router fast = *Router::Create(options);
              SCOPED_TRACE("cols=" + std::to_string(cols) + " kind=" + std::to_string(int(kind)) +
                           " scoring=" + std::string(ScoringName(scoring)) +
                           " granularity=" + std::string(GranularityName(granularity)) +
                           " k=" + std::to_string(k) + " keep_full=" + std::to_string(keep_full));
              omp_set_num_threads(1);
              const RoutedTensor want = MustRoute(reference, View(a, rows, cols), map, contract, 3);
              // Two threads only where rows run in parallel (9 x 4097), at one k: an idle
              // OpenMP worker spins, which makes every further call slow on a busy machine.
              const std::vector<int> thread_counts =
                  cols > 1000 && keep == 0.3 ? std::vector<int>{1, 2} : std::vector<int>{1};
              for (int threads : thread_counts) {
                omp_set_num_threads(threads);
                const RoutedTensor got = MustRoute(fast, View(a, rows, cols), map, contract, 3);
                ExpectBitIdentical(got, want);
                ++cases;
              }
            }
          }
        }
      }
    }
  }
  omp_set_num_threads(saved);
  EXPECT_GT(cases, 2000u);
}

// Scores of -0 and +0 (a -0 weight from eps = -0 and a map value of -0) tie with each other,
// and the exact cut runs on double scores that no float could tell apart.
TEST(RouterFastSelect, MatchesReferenceOnSignedZeroAndSubFloatScores) {
  const size_t rows = 6;
  const size_t cols = 300;
  std::vector<float> map_values(cols);
  for (size_t c = 0; c < cols; ++c)
    map_values[c] = c % 4 == 0 ? -0.0f : 0.25f + 0x1p-24f * float(c);
  const SensitivityMap map = MakeMap(cols, 1, map_values);
  const std::vector<float> a = MakeData(Data::kNarrow, rows, cols, 77);
  for (double eps : {-0.0, 0.0, 1e-300}) {
    for (double keep : {0.01, 0.1, 0.5, 0.75, 0.9}) {
      const Contract contract = MakeContract(keep, 0.3);
      RouterOptions options{.scoring = Scoring::kSensitivity, .eps = eps};
      options.select = SelectMethod::kReference;
      const RoutedTensor want =
          MustRoute(*Router::Create(options), View(a, rows, cols), &map, contract);
      options.select = SelectMethod::kFast;
      const RoutedTensor got =
          MustRoute(*Router::Create(options), View(a, rows, cols), &map, contract);
      SCOPED_TRACE("eps=" + std::to_string(eps) + " keep=" + std::to_string(keep));
      ExpectBitIdentical(got, want);
    }
  }
}

// Many rows with random k: the fast path also agrees with the full-sort oracle of this file.
TEST(RouterFastSelect, AgreesWithFullSortOracleOnManyRandomRows) {
  std::mt19937 rng(99);
  for (int trial = 0; trial < 40; ++trial) {
    const size_t cols = 1 + rng() % 2000;
    const size_t rows = 3;
    const std::vector<float> a = RandomValues(rows, cols, rng(), trial % 3 == 0);
    const SensitivityMap map = RandomMap(cols, 1, rng());
    const double keep = std::uniform_real_distribution<double>(0.001, 1.0)(rng);
    const double keep_full = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    const Router router = MakeRouter(Scoring::kSensitivity, 0.01);
    ASSERT_EQ(router.options().select, SelectMethod::kFast);
    const RoutedTensor routed =
        MustRoute(router, View(a, rows, cols), &map, MakeContract(keep, keep_full));
    const size_t k = KeptCount(cols, keep);
    for (size_t r = 0; r < rows; ++r) {
      std::vector<double> score(cols);
      for (size_t c = 0; c < cols; ++c) score[c] = RefScore(a[r * cols + c], c, &map, 0.01);
      const RefRow ref = RefSelectRow(score, k, FullCount(k, keep_full));
      ASSERT_EQ(ToVector(routed.RowIndices(r)), ref.indices) << "trial " << trial << " row " << r;
      const std::vector<Tier> tiers(routed.tiers.begin() + routed.row_offsets[r],
                                    routed.tiers.begin() + routed.row_offsets[r + 1]);
      ASSERT_EQ(tiers, ref.tiers) << "trial " << trial << " row " << r;
    }
  }
}

// Approximate mode: per row between k and k + floor(tol * k) entries, every entry scoring
// above the exact k-th kept, no dropped entry scoring above a kept one, tiers by the same rule
// over the row's own count, and the same output for 1 and 2 threads.
TEST(RouterApproximateSelect, StaysWithinToleranceAndKeepsEverythingAboveTheCut) {
  std::mt19937 rng(123);
  const int saved = omp_get_max_threads();
  int rows_checked = 0, rows_over_k = 0;
  for (int trial = 0; trial < 60; ++trial) {
    const size_t cols = 1 + rng() % 5000;
    const size_t rows = 9;
    const std::vector<float> a = RandomValues(rows, cols, rng(), trial % 3 == 0);
    const SensitivityMap map = RandomMap(cols, 1, rng());
    const double keep = std::uniform_real_distribution<double>(0.001, 1.0)(rng);
    const double keep_full = trial % 2 ? 1.0 : 0.3;
    const double tolerance = trial % 4 == 0 ? 0.01 : 0.05;
    auto router = Router::Create({.scoring = Scoring::kSensitivity,
                                  .eps = 0.01,
                                  .select = SelectMethod::kApproximate,
                                  .approx_tolerance = tolerance,
                                  .parallel_min_entries = 1});
    ASSERT_TRUE(router.ok());
    const Contract contract = MakeContract(keep, keep_full);
    omp_set_num_threads(1);
    const RoutedTensor one = MustRoute(*router, View(a, rows, cols), &map, contract);
    omp_set_num_threads(2);
    const RoutedTensor two = MustRoute(*router, View(a, rows, cols), &map, contract);
    EXPECT_EQ(one.row_offsets, two.row_offsets);
    EXPECT_EQ(one.indices, two.indices);
    EXPECT_EQ(one.tiers, two.tiers);
    const size_t k = KeptCount(cols, keep);
    const auto window = static_cast<size_t>(std::floor(tolerance * double(k)));
    for (size_t r = 0; r < rows; ++r) {
      std::vector<double> score(cols);
      for (size_t c = 0; c < cols; ++c) score[c] = RefScore(a[r * cols + c], c, &map, 0.01);
      const std::vector<uint32_t> kept = ToVector(one.RowIndices(r));
      SCOPED_TRACE(::testing::Message()
                   << "trial " << trial << " row " << r << " cols " << cols << " k " << k);
      ASSERT_GE(kept.size(), k);
      ASSERT_LE(kept.size(), k + window);
      rows_over_k += kept.size() > k;
      ++rows_checked;
      std::vector<double> sorted = score;
      std::sort(sorted.rbegin(), sorted.rend());
      const double kth = k > 0 ? sorted[k - 1] : std::numeric_limits<double>::infinity();
      std::vector<bool> is_kept(cols, false);
      double lowest_kept = std::numeric_limits<double>::infinity();
      for (uint32_t c : kept) {
        is_kept[c] = true;
        lowest_kept = std::min(lowest_kept, score[c]);
      }
      for (size_t c = 0; c < cols; ++c) {
        if (score[c] > kth) {
          ASSERT_TRUE(is_kept[c]) << "col " << c << " scores " << score[c] << " above the cut "
                                  << kth << "; kept " << kept.size() << " lowest kept "
                                  << lowest_kept;
        }
        if (!is_kept[c]) {
          ASSERT_LE(score[c], lowest_kept) << "dropped col " << c;
        }
      }
      // Tiers: the FullCount(count) best of the row's kept entries are full.
      const size_t nf = FullCount(kept.size(), keep_full);
      size_t full = 0;
      for (size_t i = one.row_offsets[r]; i < one.row_offsets[r + 1]; ++i) {
        full += one.tiers[i] == Tier::kFull;
      }
      EXPECT_EQ(full, nf);
    }
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(rows_checked, 60 * 9);
  EXPECT_GT(rows_over_k, 0);  // the early stop does happen
}

// ----------------------------------------------------------------------------- one pass

// Rows that look alike let the one-pass path predict each row's cut from the rows before;
// these rows change scale, ties and zeros from one row to the next, so the prediction misses
// in every way (the pass takes too few, ties straddle the search, t0 = 0, non-finite values).
std::vector<float> RowsThatDefeatTheModel(size_t rows, size_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> a(rows * cols);
  for (size_t r = 0; r < rows; ++r) {
    float* row = a.data() + r * cols;
    const size_t kind = (r / 3) % 8;  // a few alike rows, then a change
    for (size_t c = 0; c < cols; ++c) {
      const float x = normal(rng);
      switch (kind) {
        case 0: row[c] = x; break;
        case 1: row[c] = 1000.0f * x; break;
        case 2: row[c] = 1e-3f * x; break;
        case 3: row[c] = std::round(2.0f * x); break;  // small integers: ties
        case 4: row[c] = -0.5f; break;                 // one key
        case 5: row[c] = rng() % 20 == 0 ? x : 0.0f; break;
        case 6: row[c] = c % 13 == 0 ? (c % 2 ? kNaN : kInf) : x; break;
        default: row[c] = x * (1.0f + float(c % 7)); break;
      }
    }
  }
  return a;
}

// The set of a bitmap's bits against the routed indices (rows * cols bits, LSB first).
void ExpectBitmapOfIndices(const std::vector<uint8_t>& bitmap, const RoutedTensor& routed) {
  std::vector<uint8_t> want((size_t{routed.rows} * routed.cols + 7) / 8, 0);
  for (size_t r = 0; r < routed.rows; ++r) {
    for (uint32_t c : routed.RowIndices(r)) {
      const size_t bit = r * routed.cols + c;
      want[bit / 8] |= static_cast<uint8_t>(1u << (bit % 8));
    }
  }
  EXPECT_EQ(bitmap, want);
}

// The exact one-pass rows against the reference, bit for bit, with its bitmap, on 1 to 3
// threads, rows alike and rows that defeat the prediction, both |a|-based policies.
TEST(RouterOnePass, ExactMatchesReferenceOnRowsAlikeAndRowsThatDefeatThePrediction) {
  const int saved = omp_get_max_threads();
  size_t cases = 0;
  for (size_t cols : {size_t{2048}, size_t{4096}, size_t{4103}}) {
    const size_t rows = 48;
    for (bool alike : {true, false}) {
      const std::vector<float> a = alike ? RandomValues(rows, cols, uint32_t(cols))
                                         : RowsThatDefeatTheModel(rows, cols, uint32_t(cols));
      const SensitivityMap map = RandomMap(cols, 1, uint32_t(cols) + 1);
      for (Scoring scoring : {Scoring::kMagnitude, Scoring::kSensitivity}) {
        for (double keep : {0.01, 0.1, 0.5}) {
          for (double keep_full : {1.0, 0.3}) {
            RouterOptions options{.scoring = scoring,
                                  .eps = 1e-3,
                                  .non_finite = OnNonFinite::kTreatAsZero,
                                  .parallel_min_entries = 1};
            options.select = SelectMethod::kReference;
            const Contract contract = MakeContract(keep, keep_full);
            omp_set_num_threads(1);
            const RoutedTensor want =
                MustRoute(*Router::Create(options), View(a, rows, cols), &map, contract);
            options.select = SelectMethod::kFast;
            const Router fast = *Router::Create(options);
            for (int threads : {1, 2, 3}) {
              SCOPED_TRACE(::testing::Message()
                           << "cols " << cols << " alike " << alike << " policy "
                           << ScoringName(scoring) << " keep " << keep << " keep_full " << keep_full
                           << " threads " << threads);
              omp_set_num_threads(threads);
              RoutedTensor got;
              std::vector<uint8_t> bitmap;
              ASSERT_TRUE(
                  fast.Route(View(a, rows, cols), &map, contract, 0, &got, {.bitmap = &bitmap})
                      .ok());
              ExpectBitIdentical(got, want);
              if (cols % 8 == 0) ExpectBitmapOfIndices(bitmap, got);
              ++cases;
            }
          }
        }
      }
    }
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(cases, 3u * 2 * 2 * 3 * 2 * 3);
}

// Rows where most keys tie (0/1 values, a few small integers, ReLU outputs clipped at a
// ceiling), at keep 25 % where the cut falls inside a tie group: the probes cannot split it, so
// the exact step on the candidates finishes the row. Exact against the reference, approximate
// within its window and exactly the row's top count, 1 to 4 threads.
TEST(RouterOnePass, RowsOfTiesMatchTheReferenceAndStayInTheWindow) {
  const int saved = omp_get_max_threads();
  const size_t rows = 130;
  const size_t cols = 4096;
  std::mt19937 rng(31);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int kind = 0; kind < 3; ++kind) {
    std::vector<float> a(rows * cols);
    for (float& x : a) {
      const float g = normal(rng);
      x = kind == 0   ? float(rng() % 3 == 0)
          : kind == 1 ? std::round(2.0f * g)
                      : std::clamp(g, 0.0f, 0.5f);
    }
    const SensitivityMap map = RandomMap(cols, 1, 3);
    for (double keep : {0.1, 0.25}) {
      const Contract contract = MakeContract(keep, 0.5);
      RouterOptions options{.scoring = Scoring::kMagnitude, .parallel_min_entries = 1};
      options.select = SelectMethod::kReference;
      omp_set_num_threads(1);
      const RoutedTensor want =
          MustRoute(*Router::Create(options), View(a, rows, cols), &map, contract);
      options.select = SelectMethod::kFast;
      const Router fast = *Router::Create(options);
      options.select = SelectMethod::kApproximate;
      options.approx_tolerance = 0.1;
      const Router approximate = *Router::Create(options);
      const size_t k = KeptCount(cols, keep);
      const auto window = static_cast<size_t>(std::floor(0.1 * double(k)));
      RoutedTensor first;
      for (int threads : {1, 2, 4}) {
        SCOPED_TRACE(::testing::Message()
                     << "kind " << kind << " keep " << keep << " threads " << threads);
        omp_set_num_threads(threads);
        ExpectBitIdentical(MustRoute(fast, View(a, rows, cols), &map, contract), want);
        const RoutedTensor got = MustRoute(approximate, View(a, rows, cols), &map, contract);
        if (threads == 1) {
          first = got;
          for (size_t r = 0; r < rows; ++r) {
            const size_t count = got.num_kept_in_row(r);
            ASSERT_GE(count, k) << "row " << r;
            ASSERT_LE(count, k + window) << "row " << r;
            std::vector<double> score(cols);
            for (size_t c = 0; c < cols; ++c) score[c] = RefScore(a[r * cols + c], c, nullptr, 0);
            ASSERT_EQ(ToVector(got.RowIndices(r)),
                      RefSelectRow(score, count, FullCount(count, 0.5)).indices)
                << "row " << r;
          }
        } else {
          ExpectBitIdentical(got, first);
        }
      }
    }
  }
  omp_set_num_threads(saved);
}

// The approximate one-pass rows: each keeps the exact top `count` of its row for a count in
// [k, k + floor(tolerance * k)], tiers over that count, the bitmap of those entries, and the
// same output for 1 to 4 threads (with four, two regions of the output move on one thread).
TEST(RouterApproximateSelect, OnePassKeepsTheExactTopCountOfEveryRow) {
  const int saved = omp_get_max_threads();
  const size_t rows = 300;
  for (size_t cols : {size_t{2048}, size_t{1001}}) {
    for (bool alike : {true, false}) {
      const std::vector<float> a = alike ? RandomValues(rows, cols, 5 + uint32_t(cols))
                                         : RowsThatDefeatTheModel(rows, cols, 6);
      const SensitivityMap map = RandomMap(cols, 1, 7);
      for (double tolerance : {0.05, 0.2}) {
        for (double keep_full : {1.0, 0.5}) {
          const double keep = 0.1;
          auto router = Router::Create({.scoring = Scoring::kSensitivity,
                                        .eps = 0.01,
                                        .non_finite = OnNonFinite::kTreatAsZero,
                                        .select = SelectMethod::kApproximate,
                                        .approx_tolerance = tolerance,
                                        .parallel_min_entries = 1});
          ASSERT_TRUE(router.ok());
          const Contract contract = MakeContract(keep, keep_full);
          SCOPED_TRACE(::testing::Message()
                       << "cols " << cols << " alike " << alike << " tolerance " << tolerance);
          omp_set_num_threads(1);
          RoutedTensor one;
          std::vector<uint8_t> bitmap;
          ASSERT_TRUE(
              router->Route(View(a, rows, cols), &map, contract, 0, &one, {.bitmap = &bitmap})
                  .ok());
          if (cols % 8 == 0) ExpectBitmapOfIndices(bitmap, one);
          const size_t k = KeptCount(cols, keep);
          const auto window = static_cast<size_t>(std::floor(tolerance * double(k)));
          size_t above_k = 0;
          for (size_t r = 0; r < rows; ++r) {
            std::vector<double> score(cols);
            for (size_t c = 0; c < cols; ++c) score[c] = RefScore(a[r * cols + c], c, &map, 0.01);
            const size_t count = one.num_kept_in_row(r);
            ASSERT_GE(count, k) << "row " << r;
            ASSERT_LE(count, k + window) << "row " << r;
            above_k += count > k;
            const RefRow ref = RefSelectRow(score, count, FullCount(count, keep_full));
            ASSERT_EQ(ToVector(one.RowIndices(r)), ref.indices) << "row " << r;
            const std::vector<Tier> tiers(one.tiers.begin() + one.row_offsets[r],
                                          one.tiers.begin() + one.row_offsets[r + 1]);
            ASSERT_EQ(tiers, ref.tiers) << "row " << r;
          }
          if (alike) {
            EXPECT_GT(above_k, rows / 4);  // the window is used, not just k
          }
          for (int threads : {2, 3, 4}) {
            omp_set_num_threads(threads);
            RoutedTensor got;
            std::vector<uint8_t> got_bitmap;
            ASSERT_TRUE(
                router->Route(View(a, rows, cols), &map, contract, 0, &got, {.bitmap = &got_bitmap})
                    .ok());
            SCOPED_TRACE(threads);
            ExpectBitIdentical(got, one);
            EXPECT_EQ(got_bitmap, bitmap);
          }
        }
      }
    }
  }
  omp_set_num_threads(saved);
}

// The column sums of |a| a route takes on its way (RouteExtras::column_abs_sums) are
// ColumnAbsSums's, and both are the plain sums of 16-row blocks added in block order, bit for
// bit, on every path (three passes, one pass exact and approximate, reference, random, units)
// and for 1 to 3 threads; the routing is the same as without them.
TEST(RouteExtras, ColumnAbsSumsArePlainBlockSumsOnEveryPath) {
  const int saved = omp_get_max_threads();
  struct Case {
    SelectMethod select;
    Scoring scoring;
    Granularity granularity;
    size_t cols;
  };
  const std::vector<Case> cases = {
      {SelectMethod::kFast, Scoring::kSensitivity, Granularity::kElement, 512},
      {SelectMethod::kFast, Scoring::kMagnitude, Granularity::kElement, 2048},
      {SelectMethod::kApproximate, Scoring::kSensitivity, Granularity::kElement, 2048},
      {SelectMethod::kReference, Scoring::kSensitivity, Granularity::kElement, 100},
      {SelectMethod::kFast, Scoring::kRandom, Granularity::kElement, 1001},
      {SelectMethod::kFast, Scoring::kSensitivity, Granularity::kUnit, 1024},
  };
  for (const Case& c : cases) {
    for (size_t rows : {size_t{1}, size_t{17}, size_t{130}}) {
      SCOPED_TRACE(::testing::Message()
                   << "select " << int(c.select) << " scoring " << int(c.scoring) << " cols "
                   << c.cols << " rows " << rows);
      std::vector<float> a = RandomValues(rows, c.cols, 40 + uint32_t(rows));
      a[rows * c.cols / 2] = 1e30f;  // large terms: the order of the additions shows
      std::vector<float> want(c.cols, 0.0f);
      for (size_t b = 0; b * 16 < rows; ++b) {
        std::vector<float> partial(c.cols, 0.0f);
        for (size_t r = b * 16; r < std::min(rows, (b + 1) * 16); ++r) {
          for (size_t j = 0; j < c.cols; ++j) partial[j] += std::fabs(a[r * c.cols + j]);
        }
        for (size_t j = 0; j < c.cols; ++j) want[j] = b == 0 ? partial[j] : want[j] + partial[j];
      }
      const SensitivityMap map = RandomMap(c.cols, 1, 9);
      auto router =
          Router::Create({.scoring = c.scoring, .select = c.select, .parallel_min_entries = 1});
      ASSERT_TRUE(router.ok());
      const Contract contract = MakeContract(0.1, 1.0, c.granularity);
      omp_set_num_threads(1);
      RoutedTensor plain;
      ASSERT_TRUE(router->Route(View(a, rows, c.cols), &map, contract, 3, &plain).ok());
      for (int threads : {1, 2, 3}) {
        omp_set_num_threads(threads);
        SCOPED_TRACE(threads);
        RoutedTensor got;
        std::vector<float> sums = {7.0f}, direct;
        ASSERT_TRUE(
            router
                ->Route(View(a, rows, c.cols), &map, contract, 3, &got, {.column_abs_sums = &sums})
                .ok());
        ExpectBitIdentical(got, plain);
        ASSERT_TRUE(ColumnAbsSums(View(a, rows, c.cols), &direct, 1).ok());
        ASSERT_EQ(sums.size(), c.cols);
        ASSERT_EQ(direct.size(), c.cols);
        for (size_t j = 0; j < c.cols; ++j) {
          ASSERT_EQ(std::bit_cast<uint32_t>(sums[j]), std::bit_cast<uint32_t>(want[j])) << j;
          ASSERT_EQ(std::bit_cast<uint32_t>(direct[j]), std::bit_cast<uint32_t>(want[j])) << j;
        }
      }
    }
  }
  omp_set_num_threads(saved);
  std::vector<float> sums;
  const std::vector<float> a(8, 1.0f);
  EXPECT_EQ(ColumnAbsSums(View(a, 2, 4), nullptr).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ColumnAbsSums({nullptr, 2, 4}, &sums).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ColumnAbsSums(View(a, 0, 4), &sums).code(), ErrorCode::kInvalidArgument);
}

// Route writes every byte of the bitmap it returns (it does not zero the vector first): a vector
// full of set bits, of the same size or larger, comes back as a fresh one would, on every path
// (three passes, one pass exact and approximate, two kept per row, random scores); the reference
// and unit routes return none.
TEST(RouteExtras, BitmapIsWholeWhateverTheVectorHeld) {
  struct Case {
    SelectMethod select;
    Scoring scoring;
    Granularity granularity;
    size_t cols;
    double keep;
  };
  const std::vector<Case> cases = {
      {SelectMethod::kFast, Scoring::kSensitivity, Granularity::kElement, 512, 0.1},
      {SelectMethod::kFast, Scoring::kMagnitude, Granularity::kElement, 2048, 0.1},
      {SelectMethod::kFast, Scoring::kMagnitude, Granularity::kElement, 2048, 0.001},
      {SelectMethod::kApproximate, Scoring::kSensitivity, Granularity::kElement, 2048, 0.1},
      {SelectMethod::kApproximate, Scoring::kMagnitude, Granularity::kElement, 96, 0.5},
      {SelectMethod::kFast, Scoring::kRandom, Granularity::kElement, 1000, 0.1},
      {SelectMethod::kReference, Scoring::kSensitivity, Granularity::kElement, 64, 0.1},
      {SelectMethod::kFast, Scoring::kSensitivity, Granularity::kUnit, 1024, 0.1},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "select " << int(c.select) << " scoring " << int(c.scoring)
                                      << " cols " << c.cols << " keep " << c.keep);
    const size_t rows = 40;
    const std::vector<float> a = RandomValues(rows, c.cols, 77);
    const SensitivityMap map = RandomMap(c.cols, 1, 5);
    auto router =
        Router::Create({.scoring = c.scoring, .select = c.select, .parallel_min_entries = 1});
    ASSERT_TRUE(router.ok());
    const Contract contract = MakeContract(c.keep, 1.0, c.granularity);
    RoutedTensor fresh_routed;
    std::vector<uint8_t> fresh;
    ASSERT_TRUE(
        router->Route(View(a, rows, c.cols), &map, contract, 5, &fresh_routed, {.bitmap = &fresh})
            .ok());
    const bool has_bitmap = c.select != SelectMethod::kReference &&
                            c.granularity == Granularity::kElement && c.cols % 8 == 0;
    ASSERT_EQ(fresh.size(), has_bitmap ? rows * c.cols / 8 : 0);
    if (has_bitmap) ExpectBitmapOfIndices(fresh, fresh_routed);
    for (size_t size : {rows * c.cols / 8, rows * c.cols / 4 + 3}) {
      SCOPED_TRACE(size);
      std::vector<uint8_t> dirty(size, 0xFF);
      RoutedTensor routed;
      ASSERT_TRUE(
          router->Route(View(a, rows, c.cols), &map, contract, 5, &routed, {.bitmap = &dirty})
              .ok());
      ExpectBitIdentical(routed, fresh_routed);
      EXPECT_EQ(dirty, fresh);
    }
  }
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

TEST(Router, RefusesAZeroParallelThreshold) {
  auto router = Router::Create({.parallel_min_entries = 0});
  ASSERT_FALSE(router.ok());
  EXPECT_NE(router.status().message().find("router.parallel_min_entries"), std::string::npos);
}

// Scatter and ScatterAtMask go parallel from 2^20 entries: the same dense tensor either way.
TEST(Router, ScatterIsIdenticalForOneAndTwoThreadsAboveItsThreshold) {
  const size_t rows = 1024, cols = 1031;
  const std::vector<float> a = RandomValues(rows, cols, 77);
  const Router router = MakeRouter(Scoring::kMagnitude);
  const int saved = omp_get_max_threads();
  for (RestCodec rest : {RestCodec::kDrop, RestCodec::kSign1}) {
    const RoutedTensor routed = MustRoute(router, View(a, rows, cols), nullptr,
                                          MakeContract(0.1, 1.0, Granularity::kElement, rest));
    std::vector<float> one(rows * cols), two(rows * cols, 1.0f);
    omp_set_num_threads(1);
    ASSERT_TRUE(Scatter(routed, {one.data(), rows, cols}).ok());
    omp_set_num_threads(2);
    ASSERT_TRUE(Scatter(routed, {two.data(), rows, cols}).ok());
    EXPECT_EQ(0, std::memcmp(one.data(), two.data(), one.size() * sizeof(float)));
    if (rest == RestCodec::kDrop) {
      omp_set_num_threads(1);
      ASSERT_TRUE(ScatterAtMask(routed, routed.values, {one.data(), rows, cols}).ok());
      omp_set_num_threads(2);
      ASSERT_TRUE(ScatterAtMask(routed, routed.values, {two.data(), rows, cols}).ok());
      EXPECT_EQ(0, std::memcmp(one.data(), two.data(), one.size() * sizeof(float)));
    }
  }
  omp_set_num_threads(saved);
}

TEST(RouterApproximateSelect, RefusesABadTolerance) {
  for (double t : {0.0, -0.1, 1.5, std::nan("")}) {
    auto router = Router::Create({.select = SelectMethod::kApproximate, .approx_tolerance = t});
    ASSERT_FALSE(router.ok()) << t;
    EXPECT_NE(router.status().message().find("router.approx_tolerance"), std::string::npos);
  }
}

}  // namespace
}  // namespace sparselink
