// RoutedTensor (routed_tensor.cc): Validate and ValidateMask name each corrupted field, whatever
// they accept is safe to scatter, and the accessors.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "routing_test_util.hpp"
#include "sparselink/routing.hpp"

namespace sparselink::routing_test {
namespace {

// The mask-only calls check what they read: positions and counts, not values or tiers.
TEST(RoutedTensor, ValidateMaskChecksPositionsNotValues) {
  const std::vector<float> a = RandomValues(3, 12, 81);
  const Router router = MakeRouter(Scoring::kMagnitude);
  RoutedTensor mask = MustRoute(router, View(a, 3, 12), nullptr, MakeContract(0.25));
  mask.values[1] = kNaN;
  mask.tiers[2] = static_cast<Tier>(7);
  EXPECT_EQ(mask.Validate().code(), ErrorCode::kNonFinite);
  EXPECT_TRUE(mask.ValidateMask().ok());
  const std::vector<float> g = RandomValues(3, 12, 82);
  std::vector<float> kept;
  ASSERT_TRUE(GatherAtMask(mask, View(g, 3, 12), &kept).ok());
  std::vector<float> dense(36);
  ASSERT_TRUE(ScatterAtMask(mask, kept, {dense.data(), 3, 12}).ok());
  RoutedTensor broken = mask;
  broken.indices[0] = 12;
  Status s = broken.ValidateMask();
  EXPECT_EQ(s.code(), ErrorCode::kCorruptPacket);
  EXPECT_NE(s.message().find("routed.indices[0]"), std::string::npos) << s.message();
  EXPECT_EQ(ScatterAtMask(broken, kept, {dense.data(), 3, 12}).code(), ErrorCode::kCorruptPacket);
  broken = mask;
  broken.values.pop_back();
  s = broken.ValidateMask();
  EXPECT_NE(s.message().find("routed.values.size()"), std::string::npos) << s.message();
}

struct Corruption {
  const char* what;
  std::function<void(RoutedTensor&)> apply;
  const char* field;  // must appear in the error message
};

void ExpectEachCorruptionCaught(const RoutedTensor& valid, const std::vector<Corruption>& cases) {
  ASSERT_TRUE(valid.Validate().ok()) << valid.Validate().ToString();
  for (const Corruption& c : cases) {
    SCOPED_TRACE(c.what);
    RoutedTensor t = valid;
    c.apply(t);
    const Status status = t.Validate();
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.message().find(c.field), std::string::npos) << status.message();
  }
}

TEST(RoutedTensor, ValidateCatchesEachCorruptedElementField) {
  const std::vector<float> a = RandomValues(4, 10, 91);
  const Router router = MakeRouter(Scoring::kMagnitude);
  const RoutedTensor valid =
      MustRoute(router, View(a, 4, 10), nullptr,
                MakeContract(0.3, 0.5, Granularity::kElement, RestCodec::kSign1));
  // Rows keep 3 of 10: row_offsets = {0, 3, 6, 9, 12}.
  ExpectEachCorruptionCaught(
      valid,
      {
          {"zero rows", [](RoutedTensor& t) { t.rows = 0; }, "routed.rows = 0"},
          {"zero cols", [](RoutedTensor& t) { t.cols = 0; }, "routed.cols = 0"},
          {"unknown granularity", [](RoutedTensor& t) { t.granularity = Granularity(7); },
           "routed.granularity = 7"},
          {"unknown rest", [](RoutedTensor& t) { t.rest = RestCodec(9); }, "routed.rest = 9"},
          {"row_offsets too short", [](RoutedTensor& t) { t.row_offsets.pop_back(); },
           "routed.row_offsets.size() = 4"},
          {"row_offsets too long", [](RoutedTensor& t) { t.row_offsets.push_back(12); },
           "routed.row_offsets.size() = 6"},
          {"row_offsets start", [](RoutedTensor& t) { t.row_offsets[0] = 1; },
           "routed.row_offsets[0] = 1"},
          {"row_offsets decrease", [](RoutedTensor& t) { t.row_offsets[2] = 2; },
           "routed.row_offsets[2] = 2"},
          {"row_offsets end", [](RoutedTensor& t) { t.row_offsets[4] = 13; },
           "routed.row_offsets[4] = 13"},
          {"index out of range", [](RoutedTensor& t) { t.indices[4] = 10; },
           "routed.indices[4] = 10"},
          {"index not ascending", [](RoutedTensor& t) { std::swap(t.indices[3], t.indices[4]); },
           "routed.indices[4]"},
          {"index repeated", [](RoutedTensor& t) { t.indices[4] = t.indices[3]; },
           "routed.indices[4]"},
          {"values too short", [](RoutedTensor& t) { t.values.pop_back(); },
           "routed.values.size() = 11"},
          {"values too long", [](RoutedTensor& t) { t.values.push_back(1); },
           "routed.values.size() = 13"},
          {"value NaN", [](RoutedTensor& t) { t.values[5] = kNaN; }, "routed.values[5]"},
          {"value Inf", [](RoutedTensor& t) { t.values[0] = kInf; }, "routed.values[0]"},
          {"tiers too short", [](RoutedTensor& t) { t.tiers.pop_back(); },
           "routed.tiers.size() = 11"},
          {"tier dropped", [](RoutedTensor& t) { t.tiers[2] = Tier::kDropped; },
           "routed.tiers[2] = 2"},
          {"tier unknown", [](RoutedTensor& t) { t.tiers[2] = Tier(5); }, "routed.tiers[2] = 5"},
          {"rest_bits too short", [](RoutedTensor& t) { t.rest_bits.pop_back(); },
           "routed.rest_bits.size() = 3"},
          {"rest_bits too long", [](RoutedTensor& t) { t.rest_bits.push_back(0); },
           "routed.rest_bits.size() = 5"},
          {"centroids too short", [](RoutedTensor& t) { t.rest_centroids.pop_back(); },
           "routed.rest_centroids.size() = 7"},
          {"centroid NaN", [](RoutedTensor& t) { t.rest_centroids[3] = kNaN; },
           "routed.rest_centroids[3]"},
          {"drop with rest_bits",
           [](RoutedTensor& t) {
             t.rest = RestCodec::kDrop;
             t.rest_centroids.clear();
           },
           "routed.rest_bits.size() = 4"},
          {"drop with centroids",
           [](RoutedTensor& t) {
             t.rest = RestCodec::kDrop;
             t.rest_bits.clear();
           },
           "routed.rest_centroids.size() = 8"},
      });
}

TEST(RoutedTensor, ValidateCatchesEachCorruptedUnitField) {
  const std::vector<float> a = RandomValues(3, 10, 92);
  const Router router = MakeRouter(Scoring::kMagnitude);
  const RoutedTensor valid =
      MustRoute(router, View(a, 3, 10), nullptr, MakeContract(0.4, 0.5, Granularity::kUnit));
  // 4 shared columns, 2 full and 2 lossy; values are 3 x 4.
  ASSERT_EQ(valid.indices.size(), 4u);
  ExpectEachCorruptionCaught(
      valid,
      {
          {"row_offsets per row",
           [](RoutedTensor& t) {
             t.row_offsets = {0, 4, 4, 4};
           },
           "routed.row_offsets.size() = 4"},
          {"row_offsets end", [](RoutedTensor& t) { t.row_offsets[1] = 3; },
           "routed.row_offsets[1] = 3"},
          {"values one row only", [](RoutedTensor& t) { t.values.resize(4); },
           "routed.values.size() = 4"},
          {"tiers one row only", [](RoutedTensor& t) { t.tiers.resize(4); },
           "routed.tiers.size() = 4"},
          {"tier differs between rows",
           [](RoutedTensor& t) {
             t.tiers[5] = t.tiers[1] == Tier::kFull ? Tier::kLossy : Tier::kFull;
           },
           "routed.tiers[5]"},
          {"index not ascending", [](RoutedTensor& t) { std::swap(t.indices[0], t.indices[1]); },
           "routed.indices[1]"},
      });
}

TEST(RoutedTensor, RandomCorruptionIsEitherRejectedOrSafeToScatter) {
  // Whatever Validate accepts, Scatter and GatherAtMask must handle without reading out of
  // bounds (the sanitizer build turns any such read into a failure).
  const std::vector<float> a = RandomValues(3, 12, 93);
  const Router router = MakeRouter(Scoring::kMagnitude);
  std::mt19937 rng(94);
  for (Granularity g : {Granularity::kElement, Granularity::kUnit}) {
    const RoutedTensor valid =
        MustRoute(router, View(a, 3, 12), nullptr, MakeContract(0.25, 0.5, g, RestCodec::kSign1));
    for (int trial = 0; trial < 2000; ++trial) {
      RoutedTensor t = valid;
      const uint32_t value = std::uniform_int_distribution<uint32_t>(0, 40)(rng);
      switch (rng() % 6) {
        case 0: t.row_offsets[rng() % t.row_offsets.size()] = value; break;
        case 1: t.indices[rng() % t.indices.size()] = value; break;
        case 2: t.rows = value; break;
        case 3: t.cols = value; break;
        case 4: t.rest_bits.resize(value); break;
        case 5: t.indices.resize(value % 8); break;
      }
      if (!t.Validate().ok()) continue;
      std::vector<float> dense(size_t{t.rows} * t.cols);
      EXPECT_TRUE(Scatter(t, {dense.data(), t.rows, t.cols}).ok());
      std::vector<float> values;
      EXPECT_TRUE(GatherAtMask(t, {dense.data(), t.rows, t.cols}, &values).ok());
    }
  }
}

TEST(RoutedTensor, AccessorsDescribeRowsAndTiers) {
  RoutedTensor t;
  t.rows = 2;
  t.cols = 5;
  t.row_offsets = {0, 2, 3};
  t.indices = {1, 4, 0};
  t.values = {1, 2, 3};
  t.tiers = {Tier::kFull, Tier::kLossy, Tier::kFull};
  ASSERT_TRUE(t.Validate().ok());
  EXPECT_EQ(t.num_kept(), 3u);
  EXPECT_EQ(t.num_kept_in_row(0), 2u);
  EXPECT_EQ(t.num_kept_in_row(1), 1u);
  EXPECT_EQ(ToVector(t.RowIndices(1)), (std::vector<uint32_t>{0}));
  EXPECT_EQ(t.CountTier(Tier::kFull), 2u);
  EXPECT_EQ(t.CountTier(Tier::kLossy), 1u);
  EXPECT_EQ(t.CountTier(Tier::kDropped), 7u);
}

}  // namespace
}  // namespace sparselink::routing_test
