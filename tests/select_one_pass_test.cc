// The one-pass rows (select_one_pass.cc) and the approximate selection (kApproximate): exact
// one-pass rows against the reference, approximate rows within their window, the bitmap the
// element paths return, and the same output on 1 to 4 threads.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "routing_test_util.hpp"
#include "sparselink/routing.hpp"

namespace sparselink::routing_test {
namespace {

// Approximate mode: per row between k and k + floor(tol * k) entries, every entry scoring
// above the exact k-th kept, no dropped entry scoring above a kept one, tiers by the same rule
// over the row's own count, and the same output for 1 and 2 threads.
TEST(RouterApproximateSelect, StaysWithinToleranceAndKeepsEverythingAboveTheCut) {
  std::mt19937 rng(123);
  const int saved = omp_get_max_threads();
  int rows_checked = 0, rows_over_k = 0;
  for (int trial = 0; trial < 60; ++trial) {
    const size_t cols = 1 + rng() % 5000;
    const size_t rows = 9;
    const std::vector<float> a = RandomValues(rows, cols, rng(), trial % 3 == 0);
    const SensitivityMap map = RandomMap(cols, 1, rng());
    const double keep = std::uniform_real_distribution<double>(0.001, 1.0)(rng);
    const double keep_full = trial % 2 ? 1.0 : 0.3;
    const double tolerance = trial % 4 == 0 ? 0.01 : 0.05;
    auto router = Router::Create({.scoring = Scoring::kSensitivity,
                                  .eps = 0.01,
                                  .select = SelectMethod::kApproximate,
                                  .approx_tolerance = tolerance,
                                  .parallel_min_entries = 1});
    ASSERT_TRUE(router.ok());
    const Contract contract = MakeContract(keep, keep_full);
    omp_set_num_threads(1);
    const RoutedTensor one = MustRoute(*router, View(a, rows, cols), &map, contract);
    omp_set_num_threads(2);
    const RoutedTensor two = MustRoute(*router, View(a, rows, cols), &map, contract);
    EXPECT_EQ(one.row_offsets, two.row_offsets);
    EXPECT_EQ(one.indices, two.indices);
    EXPECT_EQ(one.tiers, two.tiers);
    const size_t k = KeptCount(cols, keep);
    const auto window = static_cast<size_t>(std::floor(tolerance * double(k)));
    for (size_t r = 0; r < rows; ++r) {
      std::vector<double> score(cols);
      for (size_t c = 0; c < cols; ++c) score[c] = RefScore(a[r * cols + c], c, &map, 0.01);
      const std::vector<uint32_t> kept = ToVector(one.RowIndices(r));
      SCOPED_TRACE(::testing::Message()
                   << "trial " << trial << " row " << r << " cols " << cols << " k " << k);
      ASSERT_GE(kept.size(), k);
      ASSERT_LE(kept.size(), k + window);
      rows_over_k += kept.size() > k;
      ++rows_checked;
      std::vector<double> sorted = score;
      std::sort(sorted.rbegin(), sorted.rend());
      const double kth = k > 0 ? sorted[k - 1] : std::numeric_limits<double>::infinity();
      std::vector<bool> is_kept(cols, false);
      double lowest_kept = std::numeric_limits<double>::infinity();
      for (uint32_t c : kept) {
        is_kept[c] = true;
        lowest_kept = std::min(lowest_kept, score[c]);
      }
      for (size_t c = 0; c < cols; ++c) {
        if (score[c] > kth) {
          ASSERT_TRUE(is_kept[c]) << "col " << c << " scores " << score[c] << " above the cut "
                                  << kth << "; kept " << kept.size() << " lowest kept "
                                  << lowest_kept;
        }
        if (!is_kept[c]) {
          ASSERT_LE(score[c], lowest_kept) << "dropped col " << c;
        }
      }
      // Tiers: the FullCount(count) best of the row's kept entries are full.
      const size_t nf = FullCount(kept.size(), keep_full);
      size_t full = 0;
      for (size_t i = one.row_offsets[r]; i < one.row_offsets[r + 1]; ++i) {
        full += one.tiers[i] == Tier::kFull;
      }
      EXPECT_EQ(full, nf);
    }
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(rows_checked, 60 * 9);
  EXPECT_GT(rows_over_k, 0);  // the early stop does happen
}

TEST(RouterApproximateSelect, RefusesABadTolerance) {
  for (double t : {0.0, -0.1, 1.5, std::nan("")}) {
    auto router = Router::Create({.select = SelectMethod::kApproximate, .approx_tolerance = t});
    ASSERT_FALSE(router.ok()) << t;
    EXPECT_NE(router.status().message().find("router.approx_tolerance"), std::string::npos);
  }
}

// Rows that look alike let the one-pass path predict each row's cut from the rows before;
// these rows change scale, ties and zeros from one row to the next, so the prediction misses
// in every way (the pass takes too few, ties straddle the search, t0 = 0, non-finite values).
std::vector<float> RowsThatDefeatTheModel(size_t rows, size_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> a(rows * cols);
  for (size_t r = 0; r < rows; ++r) {
    float* row = a.data() + r * cols;
    const size_t kind = (r / 3) % 8;  // a few alike rows, then a change
    for (size_t c = 0; c < cols; ++c) {
      const float x = normal(rng);
      switch (kind) {
        case 0: row[c] = x; break;
        case 1: row[c] = 1000.0f * x; break;
        case 2: row[c] = 1e-3f * x; break;
        case 3: row[c] = std::round(2.0f * x); break;  // small integers: ties
        case 4: row[c] = -0.5f; break;                 // one key
        case 5: row[c] = rng() % 20 == 0 ? x : 0.0f; break;
        case 6: row[c] = c % 13 == 0 ? (c % 2 ? kNaN : kInf) : x; break;
        default: row[c] = x * (1.0f + float(c % 7)); break;
      }
    }
  }
  return a;
}

// The set of a bitmap's bits against the routed indices (rows * cols bits, LSB first).
void ExpectBitmapOfIndices(const std::vector<uint8_t>& bitmap, const RoutedTensor& routed) {
  std::vector<uint8_t> want((size_t{routed.rows} * routed.cols + 7) / 8, 0);
  for (size_t r = 0; r < routed.rows; ++r) {
    for (uint32_t c : routed.RowIndices(r)) {
      const size_t bit = r * routed.cols + c;
      want[bit / 8] |= static_cast<uint8_t>(1u << (bit % 8));
    }
  }
  EXPECT_EQ(bitmap, want);
}

// The exact one-pass rows against the reference, bit for bit, with its bitmap, on 1 to 3
// threads, rows alike and rows that defeat the prediction, both |a|-based policies.
TEST(RouterOnePass, ExactMatchesReferenceOnRowsAlikeAndRowsThatDefeatThePrediction) {
  const int saved = omp_get_max_threads();
  size_t cases = 0;
  for (size_t cols : {size_t{2048}, size_t{4096}, size_t{4103}}) {
    const size_t rows = 48;
    for (bool alike : {true, false}) {
      const std::vector<float> a = alike ? RandomValues(rows, cols, uint32_t(cols))
                                         : RowsThatDefeatTheModel(rows, cols, uint32_t(cols));
      const SensitivityMap map = RandomMap(cols, 1, uint32_t(cols) + 1);
      for (Scoring scoring : {Scoring::kMagnitude, Scoring::kSensitivity}) {
        for (double keep : {0.01, 0.1, 0.5}) {
          for (double keep_full : {1.0, 0.3}) {
            RouterOptions options{.scoring = scoring,
                                  .eps = 1e-3,
                                  .non_finite = OnNonFinite::kTreatAsZero,
                                  .parallel_min_entries = 1};
            options.select = SelectMethod::kReference;
            const Contract contract = MakeContract(keep, keep_full);
            omp_set_num_threads(1);
            const RoutedTensor want =
                MustRoute(*Router::Create(options), View(a, rows, cols), &map, contract);
            options.select = SelectMethod::kFast;
            const Router fast = *Router::Create(options);
            for (int threads : {1, 2, 3}) {
              SCOPED_TRACE(::testing::Message()
                           << "cols " << cols << " alike " << alike << " policy "
                           << ScoringName(scoring) << " keep " << keep << " keep_full " << keep_full
                           << " threads " << threads);
              omp_set_num_threads(threads);
              RoutedTensor got;
              std::vector<uint8_t> bitmap;
              ASSERT_TRUE(
                  fast.Route(View(a, rows, cols), &map, contract, 0, &got, {.bitmap = &bitmap})
                      .ok());
              ExpectBitIdentical(got, want);
              if (cols % 8 == 0) ExpectBitmapOfIndices(bitmap, got);
              ++cases;
            }
          }
        }
      }
    }
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(cases, 3u * 2 * 2 * 3 * 2 * 3);
}

// Rows where most keys tie (0/1 values, a few small integers, ReLU outputs clipped at a
// ceiling), at keep 25 % where the cut falls inside a tie group: the probes cannot split it, so
// the exact step on the candidates finishes the row. Exact against the reference, approximate
// within its window and exactly the row's top count, 1 to 4 threads.
TEST(RouterOnePass, RowsOfTiesMatchTheReferenceAndStayInTheWindow) {
  const int saved = omp_get_max_threads();
  const size_t rows = 130;
  const size_t cols = 4096;
  std::mt19937 rng(31);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int kind = 0; kind < 3; ++kind) {
    std::vector<float> a(rows * cols);
    for (float& x : a) {
      const float g = normal(rng);
      x = kind == 0   ? float(rng() % 3 == 0)
          : kind == 1 ? std::round(2.0f * g)
                      : std::clamp(g, 0.0f, 0.5f);
    }
    const SensitivityMap map = RandomMap(cols, 1, 3);
    for (double keep : {0.1, 0.25}) {
      const Contract contract = MakeContract(keep, 0.5);
      RouterOptions options{.scoring = Scoring::kMagnitude, .parallel_min_entries = 1};
      options.select = SelectMethod::kReference;
      omp_set_num_threads(1);
      const RoutedTensor want =
          MustRoute(*Router::Create(options), View(a, rows, cols), &map, contract);
      options.select = SelectMethod::kFast;
      const Router fast = *Router::Create(options);
      options.select = SelectMethod::kApproximate;
      options.approx_tolerance = 0.1;
      const Router approximate = *Router::Create(options);
      const size_t k = KeptCount(cols, keep);
      const auto window = static_cast<size_t>(std::floor(0.1 * double(k)));
      RoutedTensor first;
      for (int threads : {1, 2, 4}) {
        SCOPED_TRACE(::testing::Message()
                     << "kind " << kind << " keep " << keep << " threads " << threads);
        omp_set_num_threads(threads);
        ExpectBitIdentical(MustRoute(fast, View(a, rows, cols), &map, contract), want);
        const RoutedTensor got = MustRoute(approximate, View(a, rows, cols), &map, contract);
        if (threads == 1) {
          first = got;
          for (size_t r = 0; r < rows; ++r) {
            const size_t count = got.num_kept_in_row(r);
            ASSERT_GE(count, k) << "row " << r;
            ASSERT_LE(count, k + window) << "row " << r;
            std::vector<double> score(cols);
            for (size_t c = 0; c < cols; ++c) score[c] = RefScore(a[r * cols + c], c, nullptr, 0);
            ASSERT_EQ(ToVector(got.RowIndices(r)),
                      RefSelectRow(score, count, FullCount(count, 0.5)).indices)
                << "row " << r;
          }
        } else {
          ExpectBitIdentical(got, first);
        }
      }
    }
  }
  omp_set_num_threads(saved);
}

// The approximate one-pass rows: each keeps the exact top `count` of its row for a count in
// [k, k + floor(tolerance * k)], tiers over that count, the bitmap of those entries, and the
// same output for 1 to 4 threads (with four, two regions of the output move on one thread).
TEST(RouterApproximateSelect, OnePassKeepsTheExactTopCountOfEveryRow) {
  const int saved = omp_get_max_threads();
  const size_t rows = 300;
  for (size_t cols : {size_t{2048}, size_t{1001}}) {
    for (bool alike : {true, false}) {
      const std::vector<float> a = alike ? RandomValues(rows, cols, 5 + uint32_t(cols))
                                         : RowsThatDefeatTheModel(rows, cols, 6);
      const SensitivityMap map = RandomMap(cols, 1, 7);
      for (double tolerance : {0.05, 0.2}) {
        for (double keep_full : {1.0, 0.5}) {
          const double keep = 0.1;
          auto router = Router::Create({.scoring = Scoring::kSensitivity,
                                        .eps = 0.01,
                                        .non_finite = OnNonFinite::kTreatAsZero,
                                        .select = SelectMethod::kApproximate,
                                        .approx_tolerance = tolerance,
                                        .parallel_min_entries = 1});
          ASSERT_TRUE(router.ok());
          const Contract contract = MakeContract(keep, keep_full);
          SCOPED_TRACE(::testing::Message()
                       << "cols " << cols << " alike " << alike << " tolerance " << tolerance);
          omp_set_num_threads(1);
          RoutedTensor one;
          std::vector<uint8_t> bitmap;
          ASSERT_TRUE(
              router->Route(View(a, rows, cols), &map, contract, 0, &one, {.bitmap = &bitmap})
                  .ok());
          if (cols % 8 == 0) ExpectBitmapOfIndices(bitmap, one);
          const size_t k = KeptCount(cols, keep);
          const auto window = static_cast<size_t>(std::floor(tolerance * double(k)));
          size_t above_k = 0;
          for (size_t r = 0; r < rows; ++r) {
            std::vector<double> score(cols);
            for (size_t c = 0; c < cols; ++c) score[c] = RefScore(a[r * cols + c], c, &map, 0.01);
            const size_t count = one.num_kept_in_row(r);
            ASSERT_GE(count, k) << "row " << r;
            ASSERT_LE(count, k + window) << "row " << r;
            above_k += count > k;
            const RefRow ref = RefSelectRow(score, count, FullCount(count, keep_full));
            ASSERT_EQ(ToVector(one.RowIndices(r)), ref.indices) << "row " << r;
            const std::vector<Tier> tiers(one.tiers.begin() + one.row_offsets[r],
                                          one.tiers.begin() + one.row_offsets[r + 1]);
            ASSERT_EQ(tiers, ref.tiers) << "row " << r;
          }
          if (alike) {
            EXPECT_GT(above_k, rows / 4);  // the window is used, not just k
          }
          for (int threads : {2, 3, 4}) {
            omp_set_num_threads(threads);
            RoutedTensor got;
            std::vector<uint8_t> got_bitmap;
            ASSERT_TRUE(
                router->Route(View(a, rows, cols), &map, contract, 0, &got, {.bitmap = &got_bitmap})
                    .ok());
            SCOPED_TRACE(threads);
            ExpectBitIdentical(got, one);
            EXPECT_EQ(got_bitmap, bitmap);
          }
        }
      }
    }
  }
  omp_set_num_threads(saved);
}

// Route writes every byte of the bitmap it returns (it does not zero the vector first): a vector
// full of set bits, of the same size or larger, comes back as a fresh one would, on every path
// (three passes, one pass exact and approximate, two kept per row, random scores); the reference
// and unit routes return none.
TEST(RouteExtras, BitmapIsWholeWhateverTheVectorHeld) {
  struct Case {
    SelectMethod select;
    Scoring scoring;
    Granularity granularity;
    size_t cols;
    double keep;
  };
  const std::vector<Case> cases = {
      {SelectMethod::kFast, Scoring::kSensitivity, Granularity::kElement, 512, 0.1},
      {SelectMethod::kFast, Scoring::kMagnitude, Granularity::kElement, 2048, 0.1},
      {SelectMethod::kFast, Scoring::kMagnitude, Granularity::kElement, 2048, 0.001},
      {SelectMethod::kApproximate, Scoring::kSensitivity, Granularity::kElement, 2048, 0.1},
      {SelectMethod::kApproximate, Scoring::kMagnitude, Granularity::kElement, 96, 0.5},
      {SelectMethod::kFast, Scoring::kRandom, Granularity::kElement, 1000, 0.1},
      {SelectMethod::kReference, Scoring::kSensitivity, Granularity::kElement, 64, 0.1},
      {SelectMethod::kFast, Scoring::kSensitivity, Granularity::kUnit, 1024, 0.1},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "select " << int(c.select) << " scoring " << int(c.scoring)
                                      << " cols " << c.cols << " keep " << c.keep);
    const size_t rows = 40;
    const std::vector<float> a = RandomValues(rows, c.cols, 77);
    const SensitivityMap map = RandomMap(c.cols, 1, 5);
    auto router =
        Router::Create({.scoring = c.scoring, .select = c.select, .parallel_min_entries = 1});
    ASSERT_TRUE(router.ok());
    const Contract contract = MakeContract(c.keep, 1.0, c.granularity);
    RoutedTensor fresh_routed;
    std::vector<uint8_t> fresh;
    ASSERT_TRUE(
        router->Route(View(a, rows, c.cols), &map, contract, 5, &fresh_routed, {.bitmap = &fresh})
            .ok());
    const bool has_bitmap = c.select != SelectMethod::kReference &&
                            c.granularity == Granularity::kElement && c.cols % 8 == 0;
    ASSERT_EQ(fresh.size(), has_bitmap ? rows * c.cols / 8 : 0);
    if (has_bitmap) ExpectBitmapOfIndices(fresh, fresh_routed);
    for (size_t size : {rows * c.cols / 8, rows * c.cols / 4 + 3}) {
      SCOPED_TRACE(size);
      std::vector<uint8_t> dirty(size, 0xFF);
      RoutedTensor routed;
      ASSERT_TRUE(
          router->Route(View(a, rows, c.cols), &map, contract, 5, &routed, {.bitmap = &dirty})
              .ok());
      ExpectBitIdentical(routed, fresh_routed);
      EXPECT_EQ(dirty, fresh);
    }
  }
}

}  // namespace
}  // namespace sparselink::routing_test
