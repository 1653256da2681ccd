// Helpers shared by the routing tests (router_test, select_test, select_fast_test,
// select_one_pass_test, select_units_test, rest_tier_test, mask_ops_test, routed_tensor_test,
// column_sums_test): random inputs, maps and contracts, a router on the parallel path, and the
// plain reference of routing.hpp's semantics (full sort, plain loops) that the routers are
// compared against.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "sparselink/contract.hpp"
#include "sparselink/routing.hpp"
#include "sparselink/sensitivity.hpp"

namespace sparselink::routing_test {

inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
inline constexpr float kInf = std::numeric_limits<float>::infinity();

// rows x cols values: uniform in [-1, 1], or (quantized) small integers with many ties.
inline std::vector<float> RandomValues(size_t rows, size_t cols, uint32_t seed,
                                       bool quantized = false) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::uniform_int_distribution<int> small(-3, 3);
  std::vector<float> v(rows * cols);
  for (float& x : v) x = quantized ? static_cast<float>(small(rng)) : uniform(rng);
  return v;
}

inline ConstMatrix View(const std::vector<float>& v, size_t rows, size_t cols) {
  return {v.data(), rows, cols};
}

inline SensitivityMap MakeMap(size_t cols, size_t block, const std::vector<float>& values) {
  Result<SensitivityMap> map = SensitivityMap::Create({.num_neurons = cols, .block = block});
  EXPECT_TRUE(map.ok()) << map.status().ToString();
  const Status assigned = map->Assign(values);
  EXPECT_TRUE(assigned.ok()) << assigned.ToString();
  return std::move(map).value();
}

// A map with random unit values in [0,1], a few of them exactly 0.
inline SensitivityMap RandomMap(size_t cols, size_t block, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> values((cols + block - 1) / block);
  for (size_t u = 0; u < values.size(); ++u) values[u] = (u % 5 == 3) ? 0.0f : uniform(rng);
  return MakeMap(cols, block, values);
}

inline Contract MakeContract(double keep, double keep_full = 1.0,
                             Granularity granularity = Granularity::kElement,
                             RestCodec rest = RestCodec::kDrop) {
  Contract c;
  c.keep = keep;
  c.keep_full = keep_full;
  c.granularity = granularity;
  c.rest = rest;
  return c;
}

inline Router MakeRouter(Scoring scoring, double eps = 1e-3, uint64_t seed = 0,
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

inline RoutedTensor MustRoute(const Router& router, ConstMatrix a, const SensitivityMap* map,
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
inline double RefScore(float a, size_t col, const SensitivityMap* map, double eps) {
  if (!std::isfinite(a)) return 0.0;
  const float magnitude = std::fabs(a);
  if (map == nullptr) return magnitude;
  const auto w = static_cast<float>(eps + static_cast<double>(map->NeuronValue(col)));
  return std::fabs(magnitude * w);
}

// Candidates ids 0..n-1 in the reference order: score descending, then id ascending.
inline std::vector<uint32_t> RefOrder(const std::vector<double>& score) {
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
inline RefRow RefSelectRow(const std::vector<double>& score, size_t k, size_t nf) {
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

inline std::vector<uint32_t> ToVector(std::span<const uint32_t> s) { return {s.begin(), s.end()}; }

// keep values that give k = 0, 1, a middle k and n out of n columns.
inline std::vector<std::pair<double, size_t>> KeepsForEdgeKs(size_t n) {
  std::vector<std::pair<double, size_t>> keeps;
  keeps.push_back({0.5 / static_cast<double>(n), 0});
  if (n >= 2) keeps.push_back({1.5 / static_cast<double>(n), 1});
  keeps.push_back({0.3, KeptCount(n, 0.3)});
  keeps.push_back({1.0, n});
  return keeps;
}

// Every field of two routed tensors, bit for bit.
inline void ExpectBitIdentical(const RoutedTensor& fast, const RoutedTensor& ref) {
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

}  // namespace sparselink::routing_test
