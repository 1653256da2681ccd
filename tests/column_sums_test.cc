// The column sums of |a| (column_sums.cc): taken by a route on its way or by ColumnAbsSums, the
// plain sums of 16-row blocks added in block order, bit for bit, on every path.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "routing_test_util.hpp"
#include "sparselink/routing.hpp"

namespace sparselink::routing_test {
namespace {

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

}  // namespace
}  // namespace sparselink::routing_test
