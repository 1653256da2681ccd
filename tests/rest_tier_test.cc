// The kSign1 rest tier (rest_tier.cc): sign bits and per-row centroids of the entries not kept,
// against plain loops, and what Scatter makes of them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "routing_test_util.hpp"
#include "sparselink/routing.hpp"

namespace sparselink::routing_test {
namespace {

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

}  // namespace
}  // namespace sparselink::routing_test
