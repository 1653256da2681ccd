#include "sparselink/status.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "sparselink/types.hpp"

namespace sparselink {
namespace {

TEST(Status, FieldErrorNamesFieldAndValue) {
  Status s = FieldError(ErrorCode::kInvalidArgument, "keep_percent", 150, "must be in (0, 100]");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.ToString(), "invalid_argument: keep_percent = 150: must be in (0, 100]");
}

Result<int> Half(int x) {
  if (x % 2 != 0) return FieldError(ErrorCode::kInvalidArgument, "x", x, "must be even");
  return x / 2;
}

Status Quarter(int x, int* out) {
  SPARSELINK_ASSIGN_OR_RETURN(int half, Half(x));
  SPARSELINK_ASSIGN_OR_RETURN(*out, Half(half));
  return Status::Ok();
}

TEST(Result, PropagatesErrorsThroughMacros) {
  int out = 0;
  EXPECT_TRUE(Quarter(8, &out).ok());
  EXPECT_EQ(out, 2);
  Status s = Quarter(6, &out);
  EXPECT_EQ(s.message(), "x = 3: must be even");
}

TEST(ResultDeathTest, ValueOfErrorAborts) {
  EXPECT_DEATH((void)Half(3).value(), "x = 3: must be even");
}

TEST(CheckDeathTest, PrintsBothOperandsAndLocation) {
  int a = 3, b = 4;
  EXPECT_DEATH(SPARSELINK_CHECK_EQ(a, b),
               "status_test.cc:[0-9]+: SPARSELINK_CHECK failed: a == b \\(3 vs 4\\)");
}

TEST(ValidateMatrix, RejectsEmptyNullAndNonFinite) {
  std::vector<float> v(6, 1.0f);
  EXPECT_TRUE(ValidateMatrix({v.data(), 2, 3}, "activation", OnNonFinite::kReject).ok());
  EXPECT_EQ(ValidateMatrix({v.data(), 0, 3}, "activation", OnNonFinite::kReject).message(),
            "activation.rows = 0: must be > 0");
  EXPECT_EQ(ValidateMatrix({v.data(), 2, 0}, "activation", OnNonFinite::kReject).message(),
            "activation.cols = 0: must be > 0");
  EXPECT_FALSE(ValidateMatrix({nullptr, 2, 3}, "activation", OnNonFinite::kReject).ok());
  v[4] = std::numeric_limits<float>::quiet_NaN();
  Status s = ValidateMatrix({v.data(), 2, 3}, "gradient", OnNonFinite::kReject);
  EXPECT_EQ(s.code(), ErrorCode::kNonFinite);
  EXPECT_NE(s.message().find("gradient[1][1] = nan"), std::string::npos) << s.message();
  v[4] = -std::numeric_limits<float>::infinity();
  EXPECT_NE(
      ValidateMatrix({v.data(), 2, 3}, "gradient", OnNonFinite::kReject).message().find("-inf"),
      std::string::npos);
  EXPECT_TRUE(ValidateMatrix({v.data(), 2, 3}, "gradient", OnNonFinite::kTreatAsZero).ok());
}

TEST(ValueCodecTraits, ParseAndSizes) {
  for (const auto& t : kValueCodecTraits) EXPECT_EQ(*ParseValueCodec(t.name), t.value);
  EXPECT_FALSE(ParseValueCodec("fp8").ok());
  EXPECT_EQ(ValueStreamBytes(ValueCodec::kFp32, 10, 2), 40u);
  EXPECT_EQ(ValueStreamBytes(ValueCodec::kFp16, 10, 2), 20u);
  EXPECT_EQ(ValueStreamBytes(ValueCodec::kInt8, 10, 2), 10u + 8u);
  EXPECT_EQ(ValueStreamBytes(ValueCodec::kInt4, 11, 2), 6u + 8u);
}

}  // namespace
}  // namespace sparselink
