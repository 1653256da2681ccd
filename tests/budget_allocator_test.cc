#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "sparselink/contract.hpp"

namespace sparselink {
namespace {

bool Contains(const Status& s, std::string_view text) {
  return s.message().find(text) != std::string::npos;
}

std::vector<float> Hot(size_t n, size_t hot, float cold = 0.0f) {
  std::vector<float> v(n, cold);
  for (size_t i = 0; i < hot; ++i) v[i] = 1.0f;
  return v;
}

Allocation AllocateOk(const std::vector<BoundaryDemand>& demands, double budget) {
  auto a = AllocateBudget(demands, budget);
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  return std::move(a).value();
}

double FullBytes(const BoundaryDemand& d) {
  return double(d.rows) * double(d.cols) * d.bytes_per_entry;
}

TEST(AllocateBudget, BudgetLargerThanAllGivesKeepOne) {
  const auto s0 = Hot(50, 5), s1 = Hot(80, 80);
  const std::vector<BoundaryDemand> d = {{s0, 4, 50, 2.0, 0.01}, {s1, 2, 80, 1.5, 0.05}};
  const auto a = AllocateOk(d, 1e9);
  for (size_t b = 0; b < 2; ++b) {
    EXPECT_DOUBLE_EQ(a.keep[b], 1.0);
    EXPECT_EQ(a.bound_by[b], BoundBy::kCeiling);
    EXPECT_DOUBLE_EQ(a.bytes[b], FullBytes(d[b]));
  }
  EXPECT_DOUBLE_EQ(a.total_bytes, FullBytes(d[0]) + FullBytes(d[1]));
}

TEST(AllocateBudget, BudgetBelowFloorsGivesFloorsWithFloorReason) {
  const auto s0 = Hot(100, 10), s1 = Hot(200, 3);
  const std::vector<BoundaryDemand> d = {{s0, 4, 100, 1.0, 0.05}, {s1, 4, 200, 1.0, 0.1}};
  for (double budget : {0.0, 10.0, 4 * 5 + 4 * 20 - 1.0}) {
    const auto a = AllocateOk(d, budget);
    EXPECT_DOUBLE_EQ(a.keep[0], 0.05);
    EXPECT_DOUBLE_EQ(a.keep[1], 0.1);
    EXPECT_EQ(a.bound_by[0], BoundBy::kFloor);
    EXPECT_EQ(a.bound_by[1], BoundBy::kFloor);
    EXPECT_DOUBLE_EQ(a.total_bytes, 4 * 5 + 4 * 20);  // above the budget: floors are never cut
  }
}

TEST(AllocateBudget, BudgetExactlyAtFloorsIsSharedBudget) {
  const auto s0 = Hot(100, 10);
  const std::vector<BoundaryDemand> d = {{s0, 1, 100, 1.0, 0.05}};
  const auto a = AllocateOk(d, 5.0);
  EXPECT_DOUBLE_EQ(a.keep[0], 0.05);
  EXPECT_EQ(a.bound_by[0], BoundBy::kSharedBudget);
  EXPECT_DOUBLE_EQ(a.total_bytes, 5.0);
}

TEST(AllocateBudget, FloorRoundsUpToWholeNeurons) {
  const auto s = Hot(100, 100);
  const std::vector<BoundaryDemand> d = {{s, 1, 100, 1.0, 0.055}, {s, 1, 100, 1.0, 0.03}};
  const auto a = AllocateOk(d, 0.0);
  EXPECT_DOUBLE_EQ(a.keep[0], 0.06);
  EXPECT_DOUBLE_EQ(a.keep[1], 0.03);  // 0.03 * 100 is 3, not 4
}

TEST(AllocateBudget, ConcentratedSensitivityIsServedFirst) {
  // Same sizes; boundary 0's sensitivity sits on 20 units, boundary 1's is spread over 60.
  const auto s0 = Hot(100, 20), s1 = Hot(100, 60);
  const std::vector<BoundaryDemand> d = {{s0, 1, 100, 1.0, 0.01}, {s1, 1, 100, 1.0, 0.01}};
  const auto a = AllocateOk(d, 30.0);  // floors 2, then 28 units
  EXPECT_DOUBLE_EQ(a.keep[0], 0.2);
  EXPECT_DOUBLE_EQ(a.keep[1], 0.1);
  EXPECT_GT(a.keep[0], a.keep[1]);
  EXPECT_LE(a.total_bytes, 30.0);
}

TEST(AllocateBudget, CheaperBytesAreServedFirst) {
  // Same maps; boundary 1's entries cost four times less, so each byte covers more there.
  const auto s = Hot(100, 100);
  const std::vector<BoundaryDemand> d = {{s, 1, 100, 4.0, 0.01}, {s, 1, 100, 1.0, 0.01}};
  const auto a = AllocateOk(d, 4.0 + 1.0 + 50.0);
  EXPECT_DOUBLE_EQ(a.keep[0], 0.01);
  EXPECT_DOUBLE_EQ(a.keep[1], 0.51);
}

TEST(AllocateBudget, TiesGoToLowerBoundaryThenLowerUnit) {
  const auto s = Hot(10, 10);
  const std::vector<BoundaryDemand> d = {{s, 1, 10, 1.0, 0.1}, {s, 1, 10, 1.0, 0.1}};
  const auto a = AllocateOk(d, 2.0 + 5.0);  // 5 units to share between identical boundaries
  EXPECT_DOUBLE_EQ(a.keep[0], 0.6);
  EXPECT_DOUBLE_EQ(a.keep[1], 0.1);
}

TEST(AllocateBudget, ResultIsDeterministic) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<std::vector<float>> maps(4);
  for (auto& m : maps) {
    m.resize(64);
    for (float& x : m) x = std::round(u(rng) * 4) / 4;  // many exact ties
  }
  std::vector<BoundaryDemand> d;
  for (const auto& m : maps) d.push_back({m, 3, 64, 1.25, 0.02});
  const auto first = AllocateOk(d, 400.0);
  for (int i = 0; i < 5; ++i) {
    const auto again = AllocateOk(d, 400.0);
    EXPECT_EQ(again.keep, first.keep);
    EXPECT_EQ(again.bytes, first.bytes);
    EXPECT_EQ(again.bound_by, first.bound_by);
  }
}

TEST(AllocateBudget, TotalStaysWithinBudgetAboveFloors) {
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int trial = 0; trial < 50; ++trial) {
    const size_t n = 1 + rng() % 5;
    std::vector<std::vector<float>> maps(n);
    std::vector<BoundaryDemand> d;
    for (size_t b = 0; b < n; ++b) {
      const size_t cols = 1 + rng() % 90;
      const size_t block = 1 + rng() % 7;
      const size_t units = (cols + block - 1) / block;
      if ((cols + ((cols + units - 1) / units) - 1) / ((cols + units - 1) / units) != units)
        continue;
      maps[b].resize(units);
      for (float& x : maps[b]) x = (rng() % 4 == 0) ? 0.0f : u(rng);
      d.push_back({maps[b], 1 + rng() % 8, cols, 0.5 + u(rng), 0.01 + 0.2 * u(rng)});
    }
    if (d.empty()) continue;
    const double floors = AllocateOk(d, 0.0).total_bytes;
    double all = 0;
    for (const auto& x : d) all += FullBytes(x);
    for (double budget :
         {floors, floors + 1, (floors + all) / 3, (floors + all) / 2, all - 1, all}) {
      const auto a = AllocateOk(d, budget);
      EXPECT_LE(a.total_bytes, budget + 1e-9) << "trial " << trial;
      double sum = 0;
      for (size_t b = 0; b < d.size(); ++b) {
        EXPECT_GE(a.keep[b], d[b].keep_min);
        EXPECT_LE(a.keep[b], 1.0);
        EXPECT_NE(a.bound_by[b], BoundBy::kFloor);
        sum += a.bytes[b];
      }
      EXPECT_DOUBLE_EQ(sum, a.total_bytes);
    }
  }
}

TEST(AllocateBudget, MoreBudgetNeverLowersAKeep) {
  const auto s0 = Hot(40, 7, 0.1f), s1 = Hot(30, 20, 0.3f), s2 = Hot(50, 2);
  const std::vector<BoundaryDemand> d = {
      {s0, 2, 40, 1.0, 0.05}, {s1, 2, 30, 2.0, 0.05}, {s2, 2, 50, 1.0, 0.05}};
  Allocation prev = AllocateOk(d, 0.0);
  for (double budget = 20; budget <= 400; budget += 7) {
    const auto a = AllocateOk(d, budget);
    for (size_t b = 0; b < d.size(); ++b) EXPECT_GE(a.keep[b], prev.keep[b]) << budget;
    prev = a;
  }
}

TEST(AllocateBudget, AllZeroBoundaryGetsOnlyItsFloorWhilePositiveUnitsRemain) {
  const auto zero = Hot(100, 0), hot = Hot(100, 30);
  const std::vector<BoundaryDemand> d = {{zero, 1, 100, 1.0, 0.05}, {hot, 1, 100, 1.0, 0.05}};
  const auto a = AllocateOk(d, 10.0 + 25.0);  // floors, then 25 of hot's 25 remaining hot units
  EXPECT_DOUBLE_EQ(a.keep[0], 0.05);
  EXPECT_DOUBLE_EQ(a.keep[1], 0.30);
  EXPECT_EQ(a.bound_by[0], BoundBy::kSharedBudget);
}

TEST(AllocateBudget, RemainderAfterPositiveUnitsIsSharedRoundRobin) {
  const auto zero = Hot(100, 0), hot = Hot(100, 30);
  const std::vector<BoundaryDemand> d = {{zero, 1, 100, 1.0, 0.05}, {hot, 1, 100, 1.0, 0.05}};
  const auto a = AllocateOk(d, 10.0 + 25.0 + 21.0);  // 21 bytes of zero-share units left
  EXPECT_NEAR(a.keep[0], 0.05 + 0.11, 1e-12);        // round robin starts at boundary 0
  EXPECT_NEAR(a.keep[1], 0.30 + 0.10, 1e-12);
  EXPECT_DOUBLE_EQ(a.total_bytes, 56.0);
}

TEST(AllocateBudget, PartialLastBlockCostsItsOwnNeurons) {
  // cols 10 in 3 units of 4, 4, 2 neurons; the last is the most sensitive.
  const std::vector<float> s = {0.2f, 0.1f, 1.0f};
  const std::vector<BoundaryDemand> d = {{s, 2, 10, 1.0, 0.1}};
  const auto floor = AllocateOk(d, 0.0);
  EXPECT_DOUBLE_EQ(floor.keep[0], 0.2);  // the 2-neuron unit satisfies the 1-neuron floor
  EXPECT_DOUBLE_EQ(floor.bytes[0], 4.0);
  const auto more = AllocateOk(d, 4.0 + 8.0 + 7.0);  // room for unit 0 (8 bytes), not unit 1
  EXPECT_DOUBLE_EQ(more.keep[0], 0.6);
  EXPECT_DOUBLE_EQ(more.bytes[0], 12.0);
  EXPECT_DOUBLE_EQ(AllocateOk(d, 20.0).keep[0], 1.0);
  EXPECT_EQ(AllocateOk(d, 20.0).bound_by[0], BoundBy::kCeiling);
}

TEST(AllocateBudget, RejectsBadInputsNamingTheField) {
  const auto s = Hot(10, 3);
  const std::vector<float> nan_map = {1.0f, std::nanf(""), 0.0f};
  const std::vector<float> negative = {1.0f, -0.5f, 0.0f};
  const std::vector<float> six_units(6, 1.0f);
  const std::vector<float> empty;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();

  auto none = AllocateBudget({}, 100.0);
  EXPECT_EQ(none.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(Contains(none.status(), "demands.size = 0"));

  const std::vector<BoundaryDemand> good = {{s, 2, 10, 1.0, 0.1}};
  for (double budget : {-1.0, nan, inf}) {
    auto a = AllocateBudget(good, budget);
    ASSERT_FALSE(a.ok()) << budget;
    EXPECT_TRUE(Contains(a.status(), "budget_bytes = ")) << a.status().message();
  }

  struct Case {
    BoundaryDemand d;
    const char* text;
    ErrorCode code;
  };
  const Case cases[] = {
      {{s, 0, 10, 1.0, 0.1}, "demands[0].rows = 0", ErrorCode::kInvalidArgument},
      {{s, 2, 0, 1.0, 0.1}, "demands[0].cols = 0", ErrorCode::kInvalidArgument},
      {{empty, 2, 10, 1.0, 0.1}, "demands[0].sensitivity.size = 0", ErrorCode::kInvalidArgument},
      {{s, 2, 5, 1.0, 0.1}, "demands[0].sensitivity.size = 10", ErrorCode::kInvalidArgument},
      {{six_units, 2, 10, 1.0, 0.1}, "demands[0].sensitivity.size = 6", ErrorCode::kShapeMismatch},
      {{s, 2, 10, 0.0, 0.1}, "demands[0].bytes_per_entry = 0", ErrorCode::kInvalidArgument},
      {{s, 2, 10, nan, 0.1}, "demands[0].bytes_per_entry = nan", ErrorCode::kInvalidArgument},
      {{s, 2, 10, 1.0, 0.0}, "demands[0].keep_min = 0", ErrorCode::kInvalidArgument},
      {{s, 2, 10, 1.0, 1.5}, "demands[0].keep_min = 1.5", ErrorCode::kInvalidArgument},
      {{nan_map, 2, 3, 1.0, 0.1}, "demands[0].sensitivity[1] = nan", ErrorCode::kNonFinite},
      {{negative, 2, 3, 1.0, 0.1}, "demands[0].sensitivity[1] = -0.5", ErrorCode::kInvalidArgument},
  };
  for (const Case& c : cases) {
    const std::vector<BoundaryDemand> d = {c.d};
    auto a = AllocateBudget(d, 100.0);
    ASSERT_FALSE(a.ok()) << c.text;
    EXPECT_EQ(a.status().code(), c.code) << c.text;
    EXPECT_TRUE(Contains(a.status(), c.text)) << a.status().message();
  }
  // The index in the message is the offending boundary's.
  const std::vector<BoundaryDemand> second_bad = {{s, 2, 10, 1.0, 0.1}, {s, 0, 10, 1.0, 0.1}};
  EXPECT_TRUE(Contains(AllocateBudget(second_bad, 1.0).status(), "demands[1].rows = 0"));
}

}  // namespace
}  // namespace sparselink
