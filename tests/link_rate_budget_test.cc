#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "sparselink/contract.hpp"

namespace sparselink {
namespace {

LinkRateBudget Make(LinkRateOptions o = {}) {
  auto b = LinkRateBudget::Create(o);
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return std::move(b).value();
}

TEST(LinkRateBudget, NoBudgetBeforeTheFirstMeasurement) {
  LinkRateBudget b = Make();
  EXPECT_TRUE(std::isinf(b.rate()));
  EXPECT_TRUE(std::isinf(b.BytesPerStep(0.05)));
  EXPECT_FALSE(b.Observe(0));
  EXPECT_FALSE(b.Observe(-3));
  EXPECT_FALSE(b.Observe(std::nan("")));
  EXPECT_FALSE(b.Observe(std::numeric_limits<double>::infinity()));
  EXPECT_TRUE(std::isinf(b.rate()));
}

TEST(LinkRateBudget, BytesPerStepIsRateTimesFillTimesTarget) {
  LinkRateBudget b = Make({.fill = 0.5});
  EXPECT_TRUE(b.Observe(12.5e6));  // 100 Mbit/s
  EXPECT_DOUBLE_EQ(b.rate(), 12.5e6);
  EXPECT_DOUBLE_EQ(b.BytesPerStep(0.04), 12.5e6 * 0.5 * 0.04);
}

TEST(LinkRateBudget, SmallMovesKeepTheRateLargeOnesChangeIt) {
  LinkRateBudget b = Make({.rate_change = 0.25});
  EXPECT_TRUE(b.Observe(100e6));
  EXPECT_FALSE(b.Observe(120e6));  // +20 %: noise
  EXPECT_FALSE(b.Observe(80e6));   // -20 %
  EXPECT_DOUBLE_EQ(b.rate(), 100e6);
  EXPECT_TRUE(b.Observe(12e6));  // the link dropped to a tenth
  EXPECT_DOUBLE_EQ(b.rate(), 12e6);
  EXPECT_FALSE(b.Observe(0));  // nothing timed: kept
  EXPECT_DOUBLE_EQ(b.rate(), 12e6);
  EXPECT_TRUE(b.Observe(110e6));  // and recovered
  EXPECT_DOUBLE_EQ(b.rate(), 110e6);
}

TEST(LinkRateBudget, TargetsBelowTheMinimumCountAsIt) {
  LinkRateBudget b = Make({.fill = 1.0, .min_target_seconds = 0.002});
  b.Observe(1e6);
  EXPECT_DOUBLE_EQ(b.BytesPerStep(0), 2000);
  EXPECT_DOUBLE_EQ(b.BytesPerStep(-1), 2000);
  EXPECT_DOUBLE_EQ(b.BytesPerStep(std::nan("")), 2000);
  EXPECT_DOUBLE_EQ(b.BytesPerStep(0.01), 10000);
}

TEST(LinkRateBudget, BadOptionsAreNamed) {
  const auto fill = LinkRateBudget::Create({.fill = 0});
  ASSERT_FALSE(fill.ok());
  EXPECT_NE(fill.status().message().find("fill"), std::string::npos);
  const auto change = LinkRateBudget::Create({.rate_change = -0.1});
  ASSERT_FALSE(change.ok());
  EXPECT_NE(change.status().message().find("rate change"), std::string::npos);
  const auto target = LinkRateBudget::Create({.min_target_seconds = 0});
  ASSERT_FALSE(target.ok());
  EXPECT_NE(target.status().message().find("min_target_seconds"), std::string::npos);
}

}  // namespace
}  // namespace sparselink
