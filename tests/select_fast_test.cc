// The fast selection (SelectMethod::kFast) against the reference router (kReference,
// std::nth_element), bit for bit, and against the full-sort oracle of routing_test_util.hpp.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "routing_test_util.hpp"
#include "sparselink/routing.hpp"

namespace sparselink::routing_test {
namespace {

// Inputs chosen to stress the fast selection: ties of every kind, scores that differ only
// below float precision (one coarse bucket, resolved on the exact doubles), +0 and -0 scores,
// and scores beyond the float range.
enum class Data { kUniform, kSmallIntegers, kAllEqual, kAllZero, kNarrow, kHuge, kNonFinite };

std::vector<float> MakeData(Data kind, size_t rows, size_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v(rows * cols);
  switch (kind) {
    case Data::kUniform: return RandomValues(rows, cols, seed);
    case Data::kSmallIntegers: return RandomValues(rows, cols, seed, /*quantized=*/true);
    case Data::kAllEqual: std::fill(v.begin(), v.end(), -0.75f); return v;
    case Data::kAllZero:
      for (size_t i = 0; i < v.size(); ++i) v[i] = i % 3 == 0 ? -0.0f : 0.0f;
      return v;
    case Data::kNarrow: {  // |a| in [1, 1 + 2^-12]: a handful of float steps, many near-ties
      std::uniform_int_distribution<int> steps(0, 2048);
      for (float& x : v) x = (rng() % 2 ? 1.0f : -1.0f) * (1.0f + 0x1p-23f * float(steps(rng)));
      return v;
    }
    case Data::kHuge: {  // near FLT_MAX: times a weight above 1, the score leaves float range
      std::uniform_int_distribution<int> steps(0, 64);
      for (float& x : v) {
        x = std::numeric_limits<float>::max() * (1.0f - 0x1p-20f * float(steps(rng)));
      }
      return v;
    }
    case Data::kNonFinite: {
      v = RandomValues(rows, cols, seed, /*quantized=*/true);
      for (size_t i = 0; i < v.size(); i += 5) v[i] = i % 2 ? kNaN : -kInf;
      return v;
    }
  }
  return v;
}

TEST(RouterFastSelect, CreateRejectsUnknownSelectMethod) {
  EXPECT_FALSE(Router::Create({.select = static_cast<SelectMethod>(7)}).ok());
  EXPECT_EQ(RouterOptions{}.select, SelectMethod::kFast);
}

// The differential test of CONTRIBUTING.md: kFast against kReference, bit for bit, over widths not
// a multiple of 8/32/64, k = 0, 1, mid, n, every scoring, both granularities, both rest policies,
// keep_full 0 / 0.5 / 1, and one vs two threads.
TEST(RouterFastSelect, MatchesReferenceBitForBit) {
  const int saved = omp_get_max_threads();
  const Data kinds[] = {Data::kUniform, Data::kSmallIntegers, Data::kAllEqual, Data::kAllZero,
                        Data::kNarrow,  Data::kHuge,          Data::kNonFinite};
  size_t cases = 0;
  for (size_t cols : {1u, 7u, 33u, 64u, 4097u}) {
    const size_t rows = cols > 1000 ? 9 : 5;  // 9 x 4097 is above the parallel threshold
    for (Data kind : kinds) {
      const uint32_t seed = static_cast<uint32_t>(cols * 31 + static_cast<size_t>(kind));
      const std::vector<float> a = MakeData(kind, rows, cols, seed);
      const SensitivityMap fine = RandomMap(cols, 1, seed + 1);
      const size_t block = std::min<size_t>(8, cols);
      const SensitivityMap coarse = RandomMap(cols, block, seed + 2);
      for (Scoring scoring : {Scoring::kSensitivity, Scoring::kMagnitude, Scoring::kRandom}) {
        for (Granularity granularity : {Granularity::kElement, Granularity::kUnit}) {
          const SensitivityMap* map = granularity == Granularity::kUnit ? &coarse : &fine;
          const size_t candidates =
              granularity == Granularity::kUnit && scoring == Scoring::kSensitivity
                  ? (cols + block - 1) / block
                  : cols;
          for (const auto& [keep, k] : KeepsForEdgeKs(candidates)) {
            for (double keep_full : {0.0, 0.5, 1.0}) {
              const RestCodec rest = keep_full == 0.5 ? RestCodec::kSign1 : RestCodec::kDrop;
              const Contract contract = MakeContract(keep, keep_full, granularity, rest);
              RouterOptions options{.scoring = scoring,
                                    .eps = 1e-3,
                                    .seed = 5,
                                    .non_finite = OnNonFinite::kTreatAsZero,
                                    .parallel_min_entries = 1};
              options.select = SelectMethod::kReference;
              const Router reference = *Router::Create(options);
              options.select = SelectMethod::kFast;
              const Router fast = *Router::Create(options);
              SCOPED_TRACE("cols=" + std::to_string(cols) + " kind=" + std::to_string(int(kind)) +
                           " scoring=" + std::string(ScoringName(scoring)) +
                           " granularity=" + std::string(GranularityName(granularity)) +
                           " k=" + std::to_string(k) + " keep_full=" + std::to_string(keep_full));
              omp_set_num_threads(1);
              const RoutedTensor want = MustRoute(reference, View(a, rows, cols), map, contract, 3);
              // Two threads only where rows run in parallel (9 x 4097), at one k: an idle
              // OpenMP worker spins, which makes every further call slow on a busy machine.
              const std::vector<int> thread_counts =
                  cols > 1000 && keep == 0.3 ? std::vector<int>{1, 2} : std::vector<int>{1};
              for (int threads : thread_counts) {
                omp_set_num_threads(threads);
                const RoutedTensor got = MustRoute(fast, View(a, rows, cols), map, contract, 3);
                ExpectBitIdentical(got, want);
                ++cases;
              }
            }
          }
        }
      }
    }
  }
  omp_set_num_threads(saved);
  EXPECT_GT(cases, 2000u);
}

// Scores of -0 and +0 (a -0 weight from eps = -0 and a map value of -0) tie with each other,
// and the exact cut runs on double scores that no float could tell apart.
TEST(RouterFastSelect, MatchesReferenceOnSignedZeroAndSubFloatScores) {
  const size_t rows = 6;
  const size_t cols = 300;
  std::vector<float> map_values(cols);
  for (size_t c = 0; c < cols; ++c)
    map_values[c] = c % 4 == 0 ? -0.0f : 0.25f + 0x1p-24f * float(c);
  const SensitivityMap map = MakeMap(cols, 1, map_values);
  const std::vector<float> a = MakeData(Data::kNarrow, rows, cols, 77);
  for (double eps : {-0.0, 0.0, 1e-300}) {
    for (double keep : {0.01, 0.1, 0.5, 0.75, 0.9}) {
      const Contract contract = MakeContract(keep, 0.3);
      RouterOptions options{.scoring = Scoring::kSensitivity, .eps = eps};
      options.select = SelectMethod::kReference;
      const RoutedTensor want =
          MustRoute(*Router::Create(options), View(a, rows, cols), &map, contract);
      options.select = SelectMethod::kFast;
      const RoutedTensor got =
          MustRoute(*Router::Create(options), View(a, rows, cols), &map, contract);
      SCOPED_TRACE("eps=" + std::to_string(eps) + " keep=" + std::to_string(keep));
      ExpectBitIdentical(got, want);
    }
  }
}

// Many rows with random k: the fast path also agrees with the full-sort oracle of
// routing_test_util.hpp.
TEST(RouterFastSelect, AgreesWithFullSortOracleOnManyRandomRows) {
  std::mt19937 rng(99);
  for (int trial = 0; trial < 40; ++trial) {
    const size_t cols = 1 + rng() % 2000;
    const size_t rows = 3;
    const std::vector<float> a = RandomValues(rows, cols, rng(), trial % 3 == 0);
    const SensitivityMap map = RandomMap(cols, 1, rng());
    const double keep = std::uniform_real_distribution<double>(0.001, 1.0)(rng);
    const double keep_full = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    const Router router = MakeRouter(Scoring::kSensitivity, 0.01);
    ASSERT_EQ(router.options().select, SelectMethod::kFast);
    const RoutedTensor routed =
        MustRoute(router, View(a, rows, cols), &map, MakeContract(keep, keep_full));
    const size_t k = KeptCount(cols, keep);
    for (size_t r = 0; r < rows; ++r) {
      std::vector<double> score(cols);
      for (size_t c = 0; c < cols; ++c) score[c] = RefScore(a[r * cols + c], c, &map, 0.01);
      const RefRow ref = RefSelectRow(score, k, FullCount(k, keep_full));
      ASSERT_EQ(ToVector(routed.RowIndices(r)), ref.indices) << "trial " << trial << " row " << r;
      const std::vector<Tier> tiers(routed.tiers.begin() + routed.row_offsets[r],
                                    routed.tiers.begin() + routed.row_offsets[r + 1]);
      ASSERT_EQ(tiers, ref.tiers) << "trial " << trial << " row " << r;
    }
  }
}

}  // namespace
}  // namespace sparselink::routing_test
