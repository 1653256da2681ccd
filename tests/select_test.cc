// What Route selects, against the plain reference of routing.hpp (routing_test_util.hpp): the
// seed's pseudocode, the exact top k at k = 0, 1, mid and n, ties, and the full and lossy tiers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "routing_test_util.hpp"
#include "sparselink/routing.hpp"

namespace sparselink::routing_test {
namespace {

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

}  // namespace
}  // namespace sparselink::routing_test
