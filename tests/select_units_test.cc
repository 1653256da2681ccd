// Unit granularity (select_units.cc): unit scores summed over rows and columns, the exact top k
// units kept whole, the partial last unit included, against a plain reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "routing_test_util.hpp"
#include "sparselink/routing.hpp"

namespace sparselink::routing_test {
namespace {

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

}  // namespace
}  // namespace sparselink::routing_test
