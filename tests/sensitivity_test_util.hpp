// Helpers shared by the sensitivity map tests (sensitivity_test, sensitivity_serialize_test).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string_view>
#include <utility>
#include <vector>

#include "sparselink/sensitivity.hpp"

namespace sparselink::sensitivity_test {

inline std::vector<float> RandomMatrix(size_t rows, size_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> m(rows * cols);
  for (float& x : m) x = dist(rng);
  return m;
}

inline SensitivityMap MakeMap(SensitivityOptions o) {
  auto map = SensitivityMap::Create(o);
  EXPECT_TRUE(map.ok()) << map.status().ToString();
  return std::move(map).value();
}

inline bool Contains(const Status& s, std::string_view text) {
  return s.message().find(text) != std::string::npos;
}

}  // namespace sparselink::sensitivity_test
