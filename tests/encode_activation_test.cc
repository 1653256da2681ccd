// The activation encoder (encode_activation.cc) and the fused sender path RouteAndEncode: the
// same bytes as Route then EncodeActivation over a sweep of widths, scorings, select methods and
// codecs (one named test each), the index codec "auto" picks, zstd kept only where it pays, and
// the refusals of inconsistent input.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "codec/index_codecs.hpp"
#include "packet_test_util.hpp"
#include "sparselink/codec.hpp"

namespace sparselink::packet_test {
namespace {

// The sweep of the fused sender path below: its widths, scorings, select methods, keeps, codecs
// and index codecs, in the order of its loops when it was one test.
constexpr std::array<uint32_t, 6> kFusedCols = {1, 8, 33, 64, 520, 4096};
constexpr std::array<Scoring, 2> kFusedScorings = {Scoring::kSensitivity, Scoring::kMagnitude};
constexpr std::array<SelectMethod, 2> kFusedSelects = {SelectMethod::kFast,
                                                       SelectMethod::kReference};
constexpr std::array<double, 4> kFusedKeeps = {0.01, 0.1, 0.5, 1.0};
constexpr std::array<IndexCodec, 3> kFusedIndexCodecs = {
    IndexCodec::kBitmap, IndexCodec::kSubsetBitmap, IndexCodec::kAuto};
static_assert(kFusedCols.size() * kFusedScorings.size() * kFusedSelects.size() *
                  kFusedKeeps.size() * kAllCodecs.size() * kFusedIndexCodecs.size() ==
              1440);

template <typename T, size_t N>
size_t Position(const std::array<T, N>& values, T value) {
  return static_cast<size_t>(std::find(values.begin(), values.end(), value) - values.begin());
}

// One activation and one map of unit values per width, drawn in width order from one generator.
struct FusedInput {
  uint32_t rows;
  std::vector<float> a;
  std::vector<float> s;
};

const FusedInput& FusedInputOf(size_t col_pos) {
  static const std::vector<FusedInput> inputs = [] {
    std::mt19937 rng(17);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<FusedInput> all;
    for (uint32_t cols : kFusedCols) {
      FusedInput in;
      in.rows = cols >= 4096 ? 9 : 23;
      in.a.resize(size_t{in.rows} * cols);
      // ReLU-like: ties at 0.
      for (float& v : in.a) v = normal(rng) * (rng() % 4 == 0 ? 0.0f : 1.0f);
      in.s.resize(cols);
      for (float& v : in.s) v = std::uniform_real_distribution<float>(0, 1)(rng);
      all.push_back(std::move(in));
    }
    return all;
  }();
  return inputs[col_pos];
}

// One named test per width, scoring, select method and codec (the width's place in kFusedCols,
// then the values); each covers every keep and index codec.
using FusedParam = std::tuple<size_t, Scoring, SelectMethod, ValueCodec>;

class ActivationPacketFusedSender : public ::testing::TestWithParam<FusedParam> {};

// The fused sender path writes exactly the bytes of Route + EncodeActivation, for every codec,
// index codec, granularity, rest codec, select method and awkward width (cols % 8 == 0 takes
// the bitmap-from-selection path, the others the rebuild).
TEST_P(ActivationPacketFusedSender, RouteAndEncodeEqualsRouteThenEncode) {
  const auto [col_pos, scoring, select, codec] = GetParam();
  const uint32_t cols = kFusedCols[col_pos];
  const uint32_t rows = FusedInputOf(col_pos).rows;
  const std::vector<float>& a = FusedInputOf(col_pos).a;
  auto map = SensitivityMap::Create({.num_neurons = cols, .block = 1});
  ASSERT_TRUE(map.ok());
  ASSERT_TRUE(map->Assign(FusedInputOf(col_pos).s).ok());
  auto router = Router::Create({.scoring = scoring, .select = select});
  ASSERT_TRUE(router.ok());
  // The cases of the whole sweep before the one at hand: the granularity, the rest codec, the
  // full share, zstd and the used buffer's size cycle along the sweep's order.
  const size_t before_keeps =
      (col_pos * kFusedScorings.size() + Position(kFusedScorings, scoring)) * kFusedSelects.size() +
      Position(kFusedSelects, select);
  for (size_t keep_pos = 0; keep_pos < kFusedKeeps.size(); ++keep_pos) {
    const double keep = kFusedKeeps[keep_pos];
    for (size_t index_pos = 0; index_pos < kFusedIndexCodecs.size(); ++index_pos) {
      const IndexCodec index = kFusedIndexCodecs[index_pos];
      const size_t before_codec =
          (before_keeps * kFusedKeeps.size() + keep_pos) * kAllCodecs.size() +
          Position(kAllCodecs, codec);
      int cases = static_cast<int>(before_codec * kFusedIndexCodecs.size() + index_pos);
      const Granularity g = cases % 5 == 0 ? Granularity::kUnit : Granularity::kElement;
      const RestCodec rest = cases % 7 == 0 ? RestCodec::kSign1 : RestCodec::kDrop;
      const Contract contract{.keep = keep,
                              .keep_full = cases % 3 == 0 ? 0.5 : 1.0,
                              .full_codec = codec,
                              .lossy_codec = ValueCodec::kInt8,
                              .rest = rest,
                              .granularity = g};
      const EncodeOptions options{.index_codec = index, .zstd = cases % 2 == 0};
      const PacketLabel label{.boundary = 1, .contract_version = 3, .step = 7};
      ++cases;
      SCOPED_TRACE(::testing::Message() << "cols " << cols << " keep " << keep << " "
                                        << Traits(codec).name << " case " << cases);
      const ConstMatrix view{a.data(), rows, cols};
      RoutedTensor fused_routed, plain_routed;
      std::vector<uint8_t> fused, plain;
      ASSERT_TRUE(
          RouteAndEncode(*router, view, &*map, contract, label, options, &fused_routed, &fused)
              .ok());
      ASSERT_TRUE(router->Route(view, &*map, contract, 7, &plain_routed).ok());
      ASSERT_TRUE(EncodeActivation(plain_routed, contract, label, options, &plain).ok());
      ASSERT_EQ(fused, plain);
      ASSERT_EQ(fused_routed.indices, plain_routed.indices);
      // Into a used buffer, larger or smaller than the packet and full of junk: the
      // encoder must write every byte, whatever `out` held.
      std::vector<uint8_t> dirty(cases % 2 == 0 ? 2 * fused.size() + 64 : fused.size() / 2, 0xAB);
      ASSERT_TRUE(
          RouteAndEncode(*router, view, &*map, contract, label, options, &fused_routed, &dirty)
              .ok());
      ASSERT_EQ(dirty, fused);
    }
  }
}

std::string FusedName(const ::testing::TestParamInfo<FusedParam>& info) {
  const auto [col_pos, scoring, select, codec] = info.param;
  return "cols" + std::to_string(kFusedCols[col_pos]) + "_" + TestNamePart(ScoringName(scoring)) +
         "_" + TestNamePart(SelectMethodName(select)) + "_" + TestNamePart(ValueCodecName(codec));
}

INSTANTIATE_TEST_SUITE_P(Sweep, ActivationPacketFusedSender,
                         ::testing::Combine(::testing::Range(size_t{0}, kFusedCols.size()),
                                            ::testing::ValuesIn(kFusedScorings),
                                            ::testing::ValuesIn(kFusedSelects),
                                            ::testing::ValuesIn(kAllCodecs)),
                         FusedName);

// The random scoring draws afresh for each micro-batch of a step: the same rows routed as
// micro-batch 0 and 1 keep different columns, and micro-batch 0 routes as the plain step.
TEST(ActivationPacket, RandomPolicyDrawsPerMicroBatch) {
  std::vector<float> a(16 * 256, 1.0f);
  auto router = Router::Create({.scoring = Scoring::kRandom, .seed = 5});
  ASSERT_TRUE(router.ok());
  const Contract contract{.keep = 0.1, .full_codec = ValueCodec::kFp16};
  const ConstMatrix view{a.data(), 16, 256};
  RoutedTensor plain, first, second;
  std::vector<uint8_t> packet;
  ASSERT_TRUE(router->Route(view, nullptr, contract, 9, &plain).ok());
  ASSERT_TRUE(RouteAndEncode(*router, view, nullptr, contract, {.step = 9, .micro_batch = 0}, {},
                             &first, &packet)
                  .ok());
  ASSERT_TRUE(RouteAndEncode(*router, view, nullptr, contract, {.step = 9, .micro_batch = 1}, {},
                             &second, &packet)
                  .ok());
  EXPECT_EQ(first.indices, plain.indices);
  EXPECT_NE(second.indices, first.indices);
}

TEST(ActivationPacket, AutoIndexPicksTheSmallerAndBitmapOnTies) {
  std::mt19937 rng(1);
  // Dense: bitmap is smaller.
  RoutedTensor dense = MakeRouted(4, 256, 128, 128, Granularity::kElement, RestCodec::kDrop, rng);
  std::vector<uint8_t> packet;
  ASSERT_TRUE(EncodeActivation(dense, MakeContract(dense, ValueCodec::kFp32, ValueCodec::kInt8), {},
                               {}, &packet)
                  .ok());
  EXPECT_EQ(InspectPacket(packet)->header.index_codec, IndexCodec::kBitmap);
  // Sparse: delta-varint is smaller.
  RoutedTensor sparse = MakeRouted(4, 4096, 8, 8, Granularity::kElement, RestCodec::kDrop, rng);
  ASSERT_TRUE(EncodeActivation(sparse, MakeContract(sparse, ValueCodec::kFp32, ValueCodec::kInt8),
                               {}, {}, &packet)
                  .ok());
  EXPECT_EQ(InspectPacket(packet)->header.index_codec, IndexCodec::kDeltaVarint);
  // Tie: 1 x 16 bitmap is 2 bytes; delta-varint of {0} is count 1 + column 0 = 2 bytes.
  RoutedTensor tie;
  tie.rows = 1;
  tie.cols = 16;
  tie.row_offsets = {0, 1};
  tie.indices = {0};
  tie.values = {1.0f};
  tie.tiers = {Tier::kFull};
  ASSERT_TRUE(EncodeActivation(tie, MakeContract(tie, ValueCodec::kFp32, ValueCodec::kInt8), {}, {},
                               &packet)
                  .ok());
  EXPECT_EQ(InspectPacket(packet)->header.index_codec, IndexCodec::kBitmap);
}

// Rows that keep columns from a common subset - what a sensitivity map makes - go as a subset
// bitmap under "auto", smaller than either of the other two.
TEST(ActivationPacket, AutoIndexPicksTheSubsetBitmapForSharedColumns) {
  std::mt19937 rng(8);
  RoutedTensor t;
  t.rows = 64;
  t.cols = 1024;
  t.row_offsets = {0};
  for (uint32_t r = 0; r < t.rows; ++r) {
    for (uint32_t c = 0; c < 400; c += 2) {
      if (rng() % 2 == 0) t.indices.push_back(c);  // ~100 of the 200 even columns below 400
    }
    t.row_offsets.push_back(static_cast<uint32_t>(t.indices.size()));
  }
  t.values.assign(t.indices.size(), 1.0f);
  t.tiers.assign(t.indices.size(), Tier::kFull);
  std::vector<uint8_t> packet;
  ASSERT_TRUE(
      EncodeActivation(t, MakeContract(t, ValueCodec::kInt8, ValueCodec::kInt8), {}, {}, &packet)
          .ok());
  const PacketInfo info = *InspectPacket(packet);
  EXPECT_EQ(info.header.index_codec, IndexCodec::kSubsetBitmap);
  EXPECT_EQ(info.sections[0].raw_bytes, 128u + 64u * 200u / 8u);
  EXPECT_LT(info.sections[0].raw_bytes, internal::DeltaVarintBytes(t.row_offsets, t.indices));
  auto decoded = DecodeActivation(packet);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->indices, t.indices);
  // The fused dense decoder on rows of whole 16-column masks (ExpandRow on AVX-512).
  std::vector<float> want(size_t{t.rows} * t.cols, 1.0f), got(want.size(), 2.0f);
  ASSERT_TRUE(Scatter(*decoded, {want.data(), t.rows, t.cols}).ok());
  ASSERT_TRUE(DecodeActivationToDense(packet, {got.data(), t.rows, t.cols}).ok());
  EXPECT_EQ(got, want);
}

TEST(ActivationPacket, ZstdKeepsASectionOnlyWhenSmaller) {
  // A long run of zeros compresses; the section is flagged and its stored size smaller.
  RoutedTensor t;
  t.rows = 1;
  t.cols = 4096;
  t.row_offsets = {0, 4096};
  t.indices.resize(4096);
  std::iota(t.indices.begin(), t.indices.end(), 0u);
  t.values.assign(4096, 0.0f);
  t.tiers.assign(4096, Tier::kFull);
  std::vector<uint8_t> packet;
  ASSERT_TRUE(EncodeActivation(t, MakeContract(t, ValueCodec::kFp32, ValueCodec::kInt8), {},
                               {.index_codec = IndexCodec::kBitmap, .zstd = true}, &packet)
                  .ok());
  auto info = InspectPacket(packet);
  ASSERT_TRUE(info.ok());
  ASSERT_EQ(info->sections.size(), 2u);
  for (const SectionInfo& s : info->sections) {
    EXPECT_TRUE(s.zstd);
    EXPECT_LT(s.stored_bytes, s.raw_bytes);
  }
  EXPECT_LT(packet.size(), 1000u);
  // Random fp32 values do not compress: stored raw.
  std::mt19937 rng(3);
  RoutedTensor r = MakeRouted(1, 64, 64, 64, Granularity::kElement, RestCodec::kDrop, rng);
  ASSERT_TRUE(EncodeActivation(r, MakeContract(r, ValueCodec::kFp32, ValueCodec::kInt8), {},
                               {.index_codec = IndexCodec::kBitmap, .zstd = true}, &packet)
                  .ok());
  info = InspectPacket(packet);
  EXPECT_FALSE(info->sections[1].zstd);
}

TEST(ActivationPacket, EncoderRefusesInconsistentInput) {
  std::mt19937 rng(5);
  RoutedTensor t = MakeRouted(2, 10, 3, 2, Granularity::kElement, RestCodec::kDrop, rng);
  Contract c = MakeContract(t, ValueCodec::kFp32, ValueCodec::kInt8);
  std::vector<uint8_t> packet = {1, 2, 3};
  c.granularity = Granularity::kUnit;
  Status s = EncodeActivation(t, c, {}, {}, &packet);
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s, "routed.granularity = element")) << s.message();
  EXPECT_EQ(packet, (std::vector<uint8_t>{1, 2, 3}));  // untouched on error
  c.granularity = Granularity::kElement;
  t.values[0] = NAN;
  s = EncodeActivation(t, c, {}, {}, &packet);
  EXPECT_EQ(s.code(), ErrorCode::kNonFinite);
  EXPECT_TRUE(Contains(s, "routed.values[0]")) << s.message();
  t.values[0] = 1;
  t.indices[1] = 11;
  s = EncodeActivation(t, c, {}, {}, &packet);
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s, "routed.indices[1] = 11")) << s.message();
}

}  // namespace
}  // namespace sparselink::packet_test
