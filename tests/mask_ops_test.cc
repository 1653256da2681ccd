// The receiver's Scatter and the backward pass's GatherAtMask and ScatterAtMask (mask_ops.cc), in
// their column-list and KeptMask forms, on one thread and several.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "routing_test_util.hpp"
#include "sparselink/routing.hpp"

namespace sparselink::routing_test {
namespace {

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

}  // namespace
}  // namespace sparselink::routing_test
