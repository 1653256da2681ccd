// Packet codec (wire format v1): round trips over every codec combination and edge shape,
// golden packets with their exact bytes, and hostile input (truncation, flips, crafted fields).
#include <gtest/gtest.h>
#include <omp.h>
#include <zstd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "codec/index_codecs.hpp"
#include "codec/own_mask.hpp"
#include "sparselink/codec.hpp"

namespace sparselink {
namespace {

constexpr std::array<ValueCodec, kNumValueCodecs> kAllCodecs = {
    ValueCodec::kFp32, ValueCodec::kFp16, ValueCodec::kBf16, ValueCodec::kInt8, ValueCodec::kInt4};

// --- Helpers ------------------------------------------------------------------------------

void Store32(std::vector<uint8_t>& p, size_t off, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[off + i] = static_cast<uint8_t>(v >> (8 * i));
}
void Store64(std::vector<uint8_t>& p, size_t off, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[off + i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t Load32(const std::vector<uint8_t>& p, size_t off) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[off + i]) << (8 * i);
  return v;
}

// Recomputes the trailer, so that a crafted field reaches the check behind the checksum.
void Reseal(std::vector<uint8_t>& p) {
  Store64(p, p.size() - 8, PacketChecksum(std::span<const uint8_t>(p).first(p.size() - 8)));
}

// Builds a routed tensor by hand (the Router is tested on its own): in each row (or once, for
// unit granularity) k random distinct columns, `full` of them in the full tier at random.
RoutedTensor MakeRouted(uint32_t rows, uint32_t cols, uint32_t k, uint32_t full, Granularity g,
                        RestCodec rest, std::mt19937& rng) {
  RoutedTensor t;
  t.rows = rows;
  t.cols = cols;
  t.granularity = g;
  t.rest = rest;
  std::normal_distribution<float> normal;
  std::vector<uint32_t> all(cols);
  auto pick = [&](std::vector<uint32_t>* idx, std::vector<Tier>* tiers) {
    std::iota(all.begin(), all.end(), 0u);
    std::shuffle(all.begin(), all.end(), rng);
    idx->assign(all.begin(), all.begin() + k);
    std::sort(idx->begin(), idx->end());
    std::vector<Tier> tt(k, Tier::kLossy);
    std::fill(tt.begin(), tt.begin() + full, Tier::kFull);
    std::shuffle(tt.begin(), tt.end(), rng);
    *tiers = tt;
  };
  t.row_offsets = {0};
  if (g == Granularity::kUnit) {
    std::vector<Tier> tiers;
    pick(&t.indices, &tiers);
    t.row_offsets.push_back(k);
    for (uint32_t r = 0; r < rows; ++r) t.tiers.insert(t.tiers.end(), tiers.begin(), tiers.end());
  } else {
    for (uint32_t r = 0; r < rows; ++r) {
      std::vector<uint32_t> idx;
      std::vector<Tier> tiers;
      pick(&idx, &tiers);
      t.indices.insert(t.indices.end(), idx.begin(), idx.end());
      t.tiers.insert(t.tiers.end(), tiers.begin(), tiers.end());
      t.row_offsets.push_back(static_cast<uint32_t>(t.indices.size()));
    }
  }
  for (size_t i = 0; i < t.tiers.size(); ++i) t.values.push_back(normal(rng) * 3.0f);
  if (rest == RestCodec::kSign1) {
    const uint64_t rest_entries = uint64_t{rows} * cols - t.tiers.size();
    t.rest_bits.assign((rest_entries + 7) / 8, 0);
    for (uint64_t i = 0; i < rest_entries; ++i) {
      if (rng() & 1)
        t.rest_bits[i / 8] = static_cast<uint8_t>(t.rest_bits[i / 8] | (1u << (i % 8)));
    }
    for (uint32_t r = 0; r < rows; ++r) {
      t.rest_centroids.push_back(std::fabs(normal(rng)));
      t.rest_centroids.push_back(-std::fabs(normal(rng)));
    }
  }
  return t;
}

Contract MakeContract(const RoutedTensor& t, ValueCodec full, ValueCodec lossy) {
  Contract c;
  c.keep = 0.5;
  c.keep_full = 0.5;
  c.full_codec = full;
  c.lossy_codec = lossy;
  c.rest = t.rest;
  c.granularity = t.granularity;
  return c;
}

// Entries [begin, end) of row r in kept order.
std::pair<size_t, size_t> Range(const RoutedTensor& t, size_t r) {
  if (t.granularity == Granularity::kUnit)
    return {r * t.indices.size(), (r + 1) * t.indices.size()};
  return {t.row_offsets[r], t.row_offsets[r + 1]};
}

// Checks `got` against `want`: structure exact, values within the codec's stated error.
void ExpectSameRouted(const RoutedTensor& want, const RoutedTensor& got, const Contract& c) {
  ASSERT_EQ(got.rows, want.rows);
  ASSERT_EQ(got.cols, want.cols);
  ASSERT_EQ(got.granularity, want.granularity);
  ASSERT_EQ(got.rest, want.rest);
  ASSERT_EQ(got.row_offsets, want.row_offsets);
  ASSERT_EQ(got.indices, want.indices);
  ASSERT_EQ(got.tiers, want.tiers);
  ASSERT_EQ(got.rest_bits, want.rest_bits);
  ASSERT_EQ(got.rest_centroids, want.rest_centroids);
  ASSERT_EQ(got.values.size(), want.values.size());
  for (size_t r = 0; r < want.rows; ++r) {
    const auto [begin, end] = Range(want, r);
    float max_full = 0, max_lossy = 0;
    for (size_t i = begin; i < end; ++i) {
      (want.tiers[i] == Tier::kFull ? max_full : max_lossy) =
          std::max(want.tiers[i] == Tier::kFull ? max_full : max_lossy, std::fabs(want.values[i]));
    }
    for (size_t i = begin; i < end; ++i) {
      const bool full = want.tiers[i] == Tier::kFull;
      const ValueCodecTraits& t = Traits(full ? c.full_codec : c.lossy_codec);
      const double ref =
          t.per_row_scale ? (full ? max_full : max_lossy) : std::fabs(want.values[i]);
      const double allowed =
          (t.max_relative_error + (t.lossless ? 0 : 0x1p-22)) * ref + (t.lossless ? 0 : 0x1p-24);
      ASSERT_LE(std::fabs(static_cast<double>(got.values[i]) - want.values[i]), allowed)
          << t.name << " entry " << i;
    }
  }
}

std::string HexDump(const std::vector<uint8_t>& p) {
  std::string s;
  char buf[8];
  for (size_t i = 0; i < p.size(); ++i) {
    std::snprintf(buf, sizeof(buf), "0x%02x,%s", p[i], (i % 16 == 15) ? "\n" : " ");
    s += buf;
  }
  return s;
}

bool Contains(const Status& s, const std::string& text) {
  return s.message().find(text) != std::string::npos;
}

// --- Round trips --------------------------------------------------------------------------

class ActivationPacketRoundTrip : public ::testing::TestWithParam<uint32_t> {};

TEST_P(ActivationPacketRoundTrip, EveryCodecIndexGranularityRestAndZstd) {
  const uint32_t cols = GetParam();
  const uint32_t rows = 3;
  std::mt19937 rng(cols);
  std::vector<std::pair<ValueCodec, ValueCodec>> codec_pairs;
  for (ValueCodec c : kAllCodecs) {
    codec_pairs.push_back({c, ValueCodec::kInt8});
    codec_pairs.push_back({ValueCodec::kFp32, c});
  }
  const std::vector<uint32_t> ks = {0, 1, cols / 3, cols};
  int cases = 0;
  for (auto [full_codec, lossy_codec] : codec_pairs) {
    for (IndexCodec index : {IndexCodec::kBitmap, IndexCodec::kDeltaVarint,
                             IndexCodec::kSubsetBitmap, IndexCodec::kAuto}) {
      for (Granularity g : {Granularity::kElement, Granularity::kUnit}) {
        for (RestCodec rest : {RestCodec::kDrop, RestCodec::kSign1}) {
          for (bool zstd : {false, true}) {
            for (uint32_t k : ks) {
              // Cycle the full share through all-full, mixed and all-lossy.
              const uint32_t full = (cases % 3 == 0) ? k : (cases % 3 == 1) ? k / 2 : 0;
              ++cases;
              const RoutedTensor routed = MakeRouted(rows, cols, k, full, g, rest, rng);
              const Contract contract = MakeContract(routed, full_codec, lossy_codec);
              SCOPED_TRACE(::testing::Message()
                           << "cols " << cols << " k " << k << " full " << full << " "
                           << Traits(full_codec).name << "/" << Traits(lossy_codec).name << " "
                           << IndexCodecName(index) << " " << GranularityName(g) << " "
                           << RestCodecName(rest) << " zstd " << zstd);
              std::vector<uint8_t> packet;
              const Status enc = EncodeActivation(
                  routed, contract, {.boundary = 2, .contract_version = 5, .step = 99},
                  {.index_codec = index, .zstd = zstd}, &packet);
              ASSERT_TRUE(enc.ok()) << enc.ToString();
              PacketInfo info;
              auto decoded = DecodeActivation(packet, {}, &info);
              ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
              ExpectSameRouted(routed, *decoded, contract);
              // The fused dense decoder gives Scatter's tensor, bit for bit.
              std::vector<float> want(size_t{rows} * cols, 1.0f), got(size_t{rows} * cols, 2.0f);
              ASSERT_TRUE(Scatter(*decoded, {want.data(), rows, cols}).ok());
              const Status dense = DecodeActivationToDense(packet, {got.data(), rows, cols});
              ASSERT_TRUE(dense.ok()) << dense.ToString();
              ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)));
              // With the mask: the same tensor, and MaskOf's mask of the decoded copy; the
              // gradient packet from either mask is the same bytes.
              KeptMask mask, want_mask;
              std::fill(got.begin(), got.end(), 2.0f);
              const Status and_mask =
                  DecodeActivationToDenseAndMask(packet, {got.data(), rows, cols}, &mask);
              ASSERT_TRUE(and_mask.ok()) << and_mask.ToString();
              ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)));
              ASSERT_TRUE(MaskOf(*decoded, &want_mask).ok());
              EXPECT_EQ(mask.bits, want_mask.bits);
              EXPECT_EQ(mask.row_offsets, want_mask.row_offsets);
              EXPECT_EQ(mask.granularity, g);
              std::vector<float> grad(decoded->num_kept());
              for (size_t i = 0; i < grad.size(); ++i) grad[i] = 0.25f * static_cast<float>(i % 9);
              std::vector<uint8_t> from_routed, from_mask;
              ASSERT_TRUE(EncodeGradientValues(*decoded, grad, ValueCodec::kInt8, {.step = 3}, {},
                                               &from_routed)
                              .ok());
              ASSERT_TRUE(
                  EncodeGradientValues(mask, grad, ValueCodec::kInt8, {.step = 3}, {}, &from_mask)
                      .ok());
              EXPECT_EQ(from_routed, from_mask);
              EXPECT_EQ(info.header.boundary, 2u);
              EXPECT_EQ(info.header.contract_version, 5u);
              EXPECT_EQ(info.header.step, 99u);
              EXPECT_EQ(info.wire_bytes, packet.size());
              EXPECT_EQ(info.dense_bytes, uint64_t{rows} * cols * 4);
              EXPECT_TRUE(info.checksum_ok);
              if (index != IndexCodec::kAuto) {
                EXPECT_EQ(info.header.index_codec, index);
              }
              if (!zstd) {
                for (const SectionInfo& s : info.sections) EXPECT_FALSE(s.zstd);
              }
            }
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Widths, ActivationPacketRoundTrip,
                         ::testing::Values(1u, 7u, 16u, 24u, 33u, 1024u, 4097u));

// The fused sender path writes exactly the bytes of Route + EncodeActivation, for every codec,
// index codec, granularity, rest codec, select method and awkward width (cols % 8 == 0 takes
// the bitmap-from-selection path, the others the rebuild).
TEST(ActivationPacket, RouteAndEncodeEqualsRouteThenEncode) {
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  int cases = 0;
  for (uint32_t cols : {1u, 8u, 33u, 64u, 520u, 4096u}) {
    const uint32_t rows = cols >= 4096 ? 9 : 23;
    std::vector<float> a(size_t{rows} * cols);
    for (float& v : a) v = normal(rng) * (rng() % 4 == 0 ? 0.0f : 1.0f);  // ReLU-like ties at 0
    auto map = SensitivityMap::Create({.num_neurons = cols, .block = 1});
    ASSERT_TRUE(map.ok());
    std::vector<float> s(cols);
    for (float& v : s) v = std::uniform_real_distribution<float>(0, 1)(rng);
    ASSERT_TRUE(map->Assign(s).ok());
    for (Scoring scoring : {Scoring::kSensitivity, Scoring::kMagnitude}) {
      for (SelectMethod select : {SelectMethod::kFast, SelectMethod::kReference}) {
        auto router = Router::Create({.scoring = scoring, .select = select});
        ASSERT_TRUE(router.ok());
        for (double keep : {0.01, 0.1, 0.5, 1.0}) {
          for (ValueCodec codec : kAllCodecs) {
            for (IndexCodec index :
                 {IndexCodec::kBitmap, IndexCodec::kSubsetBitmap, IndexCodec::kAuto}) {
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
              ASSERT_TRUE(RouteAndEncode(*router, view, &*map, contract, label, options,
                                         &fused_routed, &fused)
                              .ok());
              ASSERT_TRUE(router->Route(view, &*map, contract, 7, &plain_routed).ok());
              ASSERT_TRUE(EncodeActivation(plain_routed, contract, label, options, &plain).ok());
              ASSERT_EQ(fused, plain);
              ASSERT_EQ(fused_routed.indices, plain_routed.indices);
              // Into a used buffer, larger or smaller than the packet and full of junk: the
              // encoder must write every byte, whatever `out` held.
              std::vector<uint8_t> dirty(cases % 2 == 0 ? 2 * fused.size() + 64 : fused.size() / 2,
                                         0xAB);
              ASSERT_TRUE(RouteAndEncode(*router, view, &*map, contract, label, options,
                                         &fused_routed, &dirty)
                              .ok());
              ASSERT_EQ(dirty, fused);
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(cases, 1440);
}

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

TEST(GradientPacket, RoundTripsEveryCodecAndGranularity) {
  std::mt19937 rng(11);
  for (ValueCodec codec : kAllCodecs) {
    for (Granularity g : {Granularity::kElement, Granularity::kUnit}) {
      for (uint32_t k : {0u, 1u, 5u, 33u}) {
        for (bool zstd : {false, true}) {
          const RoutedTensor mask = MakeRouted(4, 33, k, k, g, RestCodec::kDrop, rng);
          std::vector<float> values(mask.num_kept());
          std::normal_distribution<float> normal;
          for (float& v : values) v = normal(rng);
          std::vector<uint8_t> packet;
          ASSERT_TRUE(EncodeGradientValues(mask, values, codec, {.boundary = 1, .step = 7},
                                           {.zstd = zstd}, &packet)
                          .ok());
          PacketInfo info;
          auto decoded = DecodeGradientValues(packet, mask, {}, &info);
          ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
          EXPECT_EQ(info.header.kind, PacketKind::kGradient);
          EXPECT_EQ(info.header.full_codec, codec);
          ASSERT_EQ(decoded->size(), values.size());
          for (size_t r = 0; r < mask.rows; ++r) {
            const auto [begin, end] = Range(mask, r);
            float row_max = 0;
            for (size_t i = begin; i < end; ++i) row_max = std::max(row_max, std::fabs(values[i]));
            for (size_t i = begin; i < end; ++i) {
              const ValueCodecTraits& t = Traits(codec);
              const double ref = t.per_row_scale ? row_max : std::fabs(values[i]);
              const double allowed = (t.max_relative_error + (t.lossless ? 0 : 0x1p-22)) * ref +
                                     (t.lossless ? 0 : 0x1p-24);
              ASSERT_LE(std::fabs((*decoded)[i] - values[i]), allowed);
            }
          }
        }
      }
    }
  }
}

// A checksum-valid int8 stream whose scale is near FLT_MAX: q * scale overflows to inf, and
// every decoder refuses it rather than hand out a non-finite value.
TEST(GradientPacket, OverflowingScaleIsRefused) {
  std::mt19937 rng(13);
  const RoutedTensor mask = MakeRouted(2, 8, 3, 3, Granularity::kElement, RestCodec::kDrop, rng);
  std::vector<float> values(mask.num_kept(), 1.0f);
  for (ValueCodec codec : {ValueCodec::kInt8, ValueCodec::kInt4}) {
    std::vector<uint8_t> packet;
    ASSERT_TRUE(EncodeGradientValues(mask, values, codec, {}, {}, &packet).ok());
    auto info = InspectPacket(packet);
    ASSERT_TRUE(info.ok());
    const float huge = std::numeric_limits<float>::max();
    std::memcpy(packet.data() + info->sections[0].offset, &huge, 4);  // row 0's scale
    Reseal(packet);
    auto r = DecodeGradientValues(packet, mask);
    ASSERT_FALSE(r.ok()) << Traits(codec).name;
    EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
    EXPECT_TRUE(Contains(r.status(), "not finite")) << r.status().message();
  }
}

TEST(GradientPacket, DecoderChecksTheMask) {
  std::mt19937 rng(12);
  const RoutedTensor mask = MakeRouted(2, 8, 3, 3, Granularity::kElement, RestCodec::kDrop, rng);
  std::vector<float> values(mask.num_kept(), 1.0f);
  std::vector<uint8_t> packet;
  ASSERT_TRUE(EncodeGradientValues(mask, values, ValueCodec::kFp16, {}, {}, &packet).ok());
  RoutedTensor other = MakeRouted(2, 8, 4, 4, Granularity::kElement, RestCodec::kDrop, rng);
  auto r = DecodeGradientValues(packet, other);
  EXPECT_EQ(r.status().code(), ErrorCode::kShapeMismatch);
  EXPECT_TRUE(Contains(r.status(), "header.count_full = 6")) << r.status().message();
  other = MakeRouted(3, 8, 3, 3, Granularity::kElement, RestCodec::kDrop, rng);
  r = DecodeGradientValues(packet, other);
  EXPECT_TRUE(Contains(r.status(), "header.rows = 2")) << r.status().message();
  // Wrong count of values on the encoder side.
  values.pop_back();
  const Status s = EncodeGradientValues(mask, values, ValueCodec::kFp16, {}, {}, &packet);
  EXPECT_EQ(s.code(), ErrorCode::kShapeMismatch);
  EXPECT_TRUE(Contains(s, "values.size() = 5")) << s.message();
}

// Streams of 2^16 values or more of the codecs without per-row scales go on the threads: by row
// ranges (64 rows or more) or in chunks (fewer, longer rows); either way the packet is the
// one-thread packet, for any thread count and either parallel_min_entries.
TEST(ParallelRows, LongFloatStreamsEqualOneThread) {
  const int saved_threads = omp_get_max_threads();
  std::mt19937 rng(31);
  std::normal_distribution<float> normal;
  auto router = Router::Create({.scoring = Scoring::kMagnitude});
  ASSERT_TRUE(router.ok());
  struct Shape {
    uint32_t rows, cols;
  };
  for (const Shape shape : {Shape{130, 4096}, Shape{9, 65536}}) {
    std::vector<float> a(size_t{shape.rows} * shape.cols);
    for (float& v : a) v = normal(rng);
    const ConstMatrix view{a.data(), shape.rows, shape.cols};
    for (ValueCodec codec : {ValueCodec::kFp16, ValueCodec::kBf16, ValueCodec::kFp32}) {
      const Contract contract{.keep = 0.2, .keep_full = 1.0, .full_codec = codec};
      RoutedTensor routed;
      std::vector<uint8_t> want, got;
      omp_set_num_threads(1);
      ASSERT_TRUE(RouteAndEncode(*router, view, nullptr, contract, {.step = 4},
                                 {.index_codec = IndexCodec::kBitmap}, &routed, &want)
                      .ok());
      ASSERT_GE(routed.num_kept(), size_t{1} << 16);
      for (int threads : {2, 3, 5}) {
        omp_set_num_threads(threads);
        for (size_t min_entries : {size_t{1}, std::numeric_limits<size_t>::max()}) {
          SCOPED_TRACE(::testing::Message()
                       << shape.rows << " x " << shape.cols << " " << Traits(codec).name << " "
                       << threads << " threads, parallel_min_entries " << min_entries);
          ASSERT_TRUE(RouteAndEncode(
                          *router, view, nullptr, contract, {.step = 4},
                          {.index_codec = IndexCodec::kBitmap, .parallel_min_entries = min_entries},
                          &routed, &got)
                          .ok());
          ASSERT_EQ(got, want);
        }
      }
    }
  }
  omp_set_num_threads(saved_threads);
}

// The row-parallel coders (parallel_min_entries = 1: on the OpenMP threads, rows split in
// ranges of multiples of 8) write the one-thread bytes and decode to the one-thread tensors, and
// a refused stream is named as on one thread, for any thread count.
TEST(ParallelRows, PacketsAndDecodesEqualOneThread) {
  constexpr size_t kSerial = std::numeric_limits<size_t>::max();
  const int saved_threads = omp_get_max_threads();
  std::mt19937 rng(23);
  std::normal_distribution<float> normal;
  auto router = Router::Create({.scoring = Scoring::kMagnitude});
  ASSERT_TRUE(router.ok());
  for (int threads : {2, 3, 5}) {
    omp_set_num_threads(threads);
    for (uint32_t rows : {1u, 7u, 9u, 17u, 32u, 33u, 130u}) {
      for (uint32_t cols : {5u, 8u, 13u, 64u, 1024u}) {
        std::vector<float> a(size_t{rows} * cols), g(a.size());
        for (float& v : a) v = std::max(0.0f, normal(rng));  // ReLU-like: dead columns too
        for (size_t c = 0; c < cols; c += 3) a[c] = 0.0f;    // (row 0: a subset bitmap's mask)
        for (float& v : g) v = normal(rng);
        const ConstMatrix view{a.data(), rows, cols};
        for (ValueCodec codec : {ValueCodec::kInt8, ValueCodec::kFp16, ValueCodec::kInt4}) {
          for (IndexCodec index : {IndexCodec::kBitmap, IndexCodec::kSubsetBitmap}) {
            SCOPED_TRACE(::testing::Message()
                         << threads << " threads, " << rows << " x " << cols << " "
                         << Traits(codec).name << " index " << int(index));
            // keep 1 % on wide rows: one kept entry a row, whole vectors spill far.
            const double keep = cols >= 64 && rows % 2 == 1 ? 0.01 : 0.2;
            const Contract contract{
                .keep = keep, .keep_full = 1.0, .full_codec = codec, .lossy_codec = codec};
            const PacketLabel label{.boundary = 2, .step = 9};
            RoutedTensor routed;
            std::vector<uint8_t> serial, parallel;
            ASSERT_TRUE(RouteAndEncode(*router, view, nullptr, contract, label,
                                       {.index_codec = index, .parallel_min_entries = kSerial},
                                       &routed, &serial)
                            .ok());
            ASSERT_TRUE(RouteAndEncode(*router, view, nullptr, contract, label,
                                       {.index_codec = index, .parallel_min_entries = 1}, &routed,
                                       &parallel)
                            .ok());
            ASSERT_EQ(parallel, serial);
            std::vector<float> dense_serial(a.size(), 1.0f), dense_parallel(a.size(), 2.0f);
            KeptMask mask_serial, mask_parallel, want_mask;
            ASSERT_TRUE(DecodeActivationToDenseAndMask(serial, {dense_serial.data(), rows, cols},
                                                       &mask_serial,
                                                       {.parallel_min_entries = kSerial})
                            .ok());
            ASSERT_TRUE(DecodeActivationToDenseAndMask(serial, {dense_parallel.data(), rows, cols},
                                                       &mask_parallel, {.parallel_min_entries = 1})
                            .ok());
            ASSERT_EQ(dense_parallel, dense_serial);
            ASSERT_TRUE(MaskOf(routed, &want_mask).ok());
            ASSERT_EQ(mask_parallel.bits, want_mask.bits);
            ASSERT_EQ(mask_parallel.row_offsets, want_mask.row_offsets);
            std::fill(dense_parallel.begin(), dense_parallel.end(), 3.0f);
            ASSERT_TRUE(DecodeActivationToDense(serial, {dense_parallel.data(), rows, cols},
                                                {.parallel_min_entries = 1})
                            .ok());
            ASSERT_EQ(dense_parallel, dense_serial);
            // The gradient back at the mask.
            std::vector<float> kept;
            ASSERT_TRUE(GatherAtMask(want_mask, {g.data(), rows, cols}, &kept).ok());
            std::vector<uint8_t> grad_serial, grad_parallel;
            ASSERT_TRUE(EncodeGradientValues(want_mask, kept, codec, label,
                                             {.parallel_min_entries = kSerial}, &grad_serial)
                            .ok());
            ASSERT_TRUE(EncodeGradientValues(want_mask, kept, codec, label,
                                             {.parallel_min_entries = 1}, &grad_parallel)
                            .ok());
            ASSERT_EQ(grad_parallel, grad_serial);
            // Gathered and encoded in one call, on any split: the same packet.
            std::vector<uint8_t> grad_at;
            ASSERT_TRUE(EncodeGradientFromDense(want_mask, {g.data(), rows, cols}, codec, label,
                                                {.parallel_min_entries = 1}, &grad_at)
                            .ok());
            ASSERT_EQ(grad_at, grad_serial);
            ASSERT_TRUE(EncodeGradientFromDense(want_mask, {g.data(), rows, cols}, codec, label,
                                                {.parallel_min_entries = kSerial}, &grad_at)
                            .ok());
            ASSERT_EQ(grad_at, grad_serial);
            auto back_serial =
                DecodeGradientValues(grad_serial, routed, {.parallel_min_entries = kSerial});
            auto back_parallel =
                DecodeGradientValues(grad_serial, routed, {.parallel_min_entries = 1});
            ASSERT_TRUE(back_serial.ok() && back_parallel.ok());
            ASSERT_EQ(*back_parallel, *back_serial);
            // Fused into the dense gradient: DecodeGradientValues + ScatterAtMask, on any split.
            std::vector<float> grad_want(a.size(), 7.0f), grad_got(a.size(), 8.0f), fused_values;
            ASSERT_TRUE(
                ScatterAtMask(routed, *back_serial, {grad_want.data(), rows, cols}, kSerial).ok());
            ASSERT_TRUE(DecodeGradientToDense(grad_serial, routed, {grad_got.data(), rows, cols},
                                              &fused_values, {.parallel_min_entries = 1})
                            .ok());
            ASSERT_EQ(grad_got, grad_want);
            ASSERT_EQ(fused_values, *back_serial);
            if (codec != ValueCodec::kInt8 || routed.num_kept() == 0) continue;
            // A bad int8 value in the last row and a bad scale in a later one: the first is
            // named, on any split.
            auto info = InspectPacket(grad_serial);
            ASSERT_TRUE(info.ok());
            std::vector<uint8_t> bad = grad_serial;
            const size_t values_at = info->sections[0].offset + 4 * size_t{rows};
            bad[values_at + routed.num_kept() - 1] = 0x80;  // -128
            if (rows > 8) {
              const float negative = -1.0f;
              std::memcpy(bad.data() + info->sections[0].offset + 4 * (rows - 1), &negative, 4);
              std::memcpy(bad.data() + info->sections[0].offset + 4 * 8, &negative, 4);
            }
            Reseal(bad);
            auto refused_serial =
                DecodeGradientValues(bad, routed, {.parallel_min_entries = kSerial});
            auto refused_parallel = DecodeGradientValues(bad, routed, {.parallel_min_entries = 1});
            ASSERT_FALSE(refused_serial.ok());
            ASSERT_FALSE(refused_parallel.ok());
            EXPECT_EQ(refused_parallel.status().ToString(), refused_serial.status().ToString());
            EXPECT_TRUE(Contains(refused_serial.status(), rows > 8 ? "scales[8]" : "int8 value"))
                << refused_serial.status().ToString();
          }
        }
      }
    }
  }
  omp_set_num_threads(saved_threads);
}

// The fused gradient decoder refuses what DecodeGradientValues refuses, and a wrong output shape,
// without writing the dense gradient.
TEST(GradientPacket, DenseDecoderWritesNothingItRefuses) {
  std::mt19937 rng(14);
  const RoutedTensor mask = MakeRouted(3, 8, 3, 3, Granularity::kElement, RestCodec::kDrop, rng);
  std::vector<float> values(mask.num_kept(), 0.5f);
  std::vector<uint8_t> packet;
  ASSERT_TRUE(EncodeGradientValues(mask, values, ValueCodec::kInt8, {}, {}, &packet).ok());
  std::vector<float> dense(24, 9.0f), got;
  const std::vector<float> untouched = dense;
  Status s = DecodeGradientToDense(packet, mask, {dense.data(), 3, 7}, &got);
  EXPECT_EQ(s.code(), ErrorCode::kShapeMismatch);
  EXPECT_TRUE(Contains(s, "out.cols = 7")) << s.message();
  EXPECT_EQ(DecodeGradientToDense(packet, mask, {dense.data(), 3, 8}, nullptr).code(),
            ErrorCode::kInvalidArgument);
  std::vector<uint8_t> bad = packet;
  bad[bad.size() - 12] ^= 0x10;  // a value byte, checksum not resealed
  s = DecodeGradientToDense(bad, mask, {dense.data(), 3, 8}, &got);
  EXPECT_FALSE(s.ok());
  auto info = InspectPacket(packet);
  ASSERT_TRUE(info.ok());
  bad = packet;
  bad[info->sections[0].offset + 4 * 3] = 0x80;  // int8 -128, resealed
  Reseal(bad);
  s = DecodeGradientToDense(bad, mask, {dense.data(), 3, 8}, &got);
  EXPECT_EQ(s.code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(s, "int8 value[0]")) << s.message();
  EXPECT_EQ(dense, untouched);
  ASSERT_TRUE(DecodeGradientToDense(packet, mask, {dense.data(), 3, 8}, &got).ok());
  EXPECT_EQ(got, *DecodeGradientValues(packet, mask));
}

// The own-mask calls (the adapter's, which skip validating a mask the library made) write what
// the public ones write, byte for byte and row for row, for both granularities and on the
// threads; everything but the mask is still checked.
TEST(GradientPacket, OwnMaskCallsEqualThePublicOnes) {
  std::mt19937 rng(16);
  for (Granularity granularity : {Granularity::kElement, Granularity::kUnit}) {
    for (size_t parallel : {size_t{1}, kDefaultParallelMinEntries}) {
      const RoutedTensor routed = MakeRouted(37, 64, 9, 9, granularity, RestCodec::kDrop, rng);
      KeptMask mask;
      ASSERT_TRUE(MaskOf(routed, &mask).ok());
      std::normal_distribution<float> normal(0.0f, 1.0f);
      std::vector<float> g(37 * 64);
      for (float& v : g) v = normal(rng);
      const EncodeOptions options{.parallel_min_entries = parallel};
      std::vector<uint8_t> want, got;
      ASSERT_TRUE(EncodeGradientFromDense(mask, {g.data(), 37, 64}, ValueCodec::kInt8, {.step = 4},
                                          options, &want)
                      .ok());
      ASSERT_TRUE(internal::EncodeGradientFromDenseTrustedMask(
                      mask, {g.data(), 37, 64}, ValueCodec::kInt8, {.step = 4}, options, &got)
                      .ok());
      EXPECT_EQ(got, want);
      std::vector<float> dense_want(37 * 64, 3.0f), dense_got(37 * 64, 4.0f), kept_want, kept_got;
      const DecodeLimits limits{.parallel_min_entries = parallel};
      ASSERT_TRUE(
          DecodeGradientToDense(want, routed, {dense_want.data(), 37, 64}, &kept_want, limits)
              .ok());
      ASSERT_TRUE(internal::DecodeGradientToDenseTrustedMask(
                      want, routed, {dense_got.data(), 37, 64}, &kept_got, limits, nullptr)
                      .ok());
      EXPECT_EQ(dense_got, dense_want);
      EXPECT_EQ(kept_got, kept_want);
      g[5] = std::numeric_limits<float>::quiet_NaN();  // at a kept entry or not: both agree
      EXPECT_EQ(
          internal::EncodeGradientFromDenseTrustedMask(mask, {g.data(), 37, 64}, ValueCodec::kInt8,
                                                       {}, options, &got)
              .code(),
          EncodeGradientFromDense(mask, {g.data(), 37, 64}, ValueCodec::kInt8, {}, options, &want)
              .code());
      std::vector<uint8_t> bad = want;
      bad[bad.size() - 12] ^= 0x10;
      EXPECT_EQ(internal::DecodeGradientToDenseTrustedMask(bad, routed, {dense_got.data(), 37, 64},
                                                           &kept_got, limits, nullptr)
                    .code(),
                ErrorCode::kCorruptPacket);
      EXPECT_EQ(internal::DecodeGradientToDenseTrustedMask(want, routed, {dense_got.data(), 37, 63},
                                                           &kept_got, limits, nullptr)
                    .code(),
                ErrorCode::kShapeMismatch);
    }
  }
}

// The one-call gradient encoder refuses what GatherAtMask and EncodeGradientValues refuse, naming
// the same fields.
TEST(GradientPacket, EncodeAtMaskNamesBadInput) {
  std::mt19937 rng(15);
  const RoutedTensor routed = MakeRouted(3, 8, 3, 3, Granularity::kElement, RestCodec::kDrop, rng);
  KeptMask mask;
  ASSERT_TRUE(MaskOf(routed, &mask).ok());
  std::vector<float> g(24, 0.25f);
  std::vector<uint8_t> packet;
  const uint32_t c = routed.RowIndices(2)[1];
  g[2 * 8 + c] = std::numeric_limits<float>::infinity();
  Status s = EncodeGradientFromDense(mask, {g.data(), 3, 8}, ValueCodec::kInt8, {}, {}, &packet);
  EXPECT_EQ(s.code(), ErrorCode::kNonFinite);
  EXPECT_TRUE(Contains(s, "gradient[2][" + std::to_string(c) + "]")) << s.message();
  s = EncodeGradientFromDense(mask, {g.data(), 3, 7}, ValueCodec::kInt8, {}, {}, &packet);
  EXPECT_EQ(s.code(), ErrorCode::kShapeMismatch);
  EXPECT_TRUE(Contains(s, "gradient.cols = 7")) << s.message();
  KeptMask broken = mask;
  broken.row_offsets[1] += 1;
  s = EncodeGradientFromDense(broken, {g.data(), 3, 8}, ValueCodec::kInt8, {}, {}, &packet);
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s, "mask.row_offsets[1]")) << s.message();
  EXPECT_EQ(
      EncodeGradientFromDense(mask, {g.data(), 3, 8}, ValueCodec::kInt8, {}, {}, nullptr).code(),
      ErrorCode::kInvalidArgument);
}

TEST(SummaryPacket, RoundTripsWithinFp16Error) {
  std::vector<float> units = {0.0f, 1.0f, 0.333f, 1e-6f, 70000.0f, 12.5f, 0.01f};
  std::vector<uint8_t> packet;
  ASSERT_TRUE(
      EncodeSummary(units, {.boundary = 3, .contract_version = 1, .step = 40}, &packet).ok());
  PacketInfo info;
  auto decoded = DecodeSummary(packet, {}, &info);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(info.header.rows, 1u);
  EXPECT_EQ(info.header.cols, units.size());
  EXPECT_EQ(info.header.count_full, units.size());
  ASSERT_EQ(decoded->size(), units.size());
  for (size_t i = 0; i < units.size(); ++i) {
    const double want = std::min(units[i], 65504.0f);
    EXPECT_NEAR((*decoded)[i], want, want / 2048 + 0x1p-25) << i;
  }
  EXPECT_EQ(EncodeSummary(std::vector<float>{1.0f, -1.0f}, {}, &packet).code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(EncodeSummary(std::vector<float>{}, {}, &packet).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(EncodeSummary(std::vector<float>{INFINITY}, {}, &packet).code(), ErrorCode::kNonFinite);
}

// bf16 summaries keep small means that fp16 flushes or rounds coarsely: every value from
// 1e-12 to 1e30 comes back within bf16's relative error (2^-9), and a summary packet with any
// other codec is refused by the encoder and, resealed, by the decoder, naming the field.
TEST(SummaryPacket, Bf16KeepsSmallMeans) {
  const std::vector<float> units = {0.0f, 1e-12f, 2e-8f, 2.5e-6f, 4.5e-4f, 1.0f, 1e30f};
  std::vector<uint8_t> packet;
  ASSERT_TRUE(EncodeSummary(units, {.step = 9}, &packet, ValueCodec::kBf16).ok());
  PacketInfo info;
  auto decoded = DecodeSummary(packet, {}, &info);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(info.header.full_codec, ValueCodec::kBf16);
  ASSERT_EQ(decoded->size(), units.size());
  for (size_t i = 0; i < units.size(); ++i) {
    EXPECT_NEAR((*decoded)[i], units[i], units[i] * 0x1p-9) << i;
  }
  std::vector<uint8_t> fp16;
  ASSERT_TRUE(EncodeSummary(units, {}, &fp16).ok());
  EXPECT_EQ((*DecodeSummary(fp16))[2], 0.0f);  // 2e-8, below half of fp16's 6e-8: gone
  for (ValueCodec codec : {ValueCodec::kFp32, ValueCodec::kInt8, ValueCodec::kInt4}) {
    const Status s = EncodeSummary(units, {}, &packet, codec);
    EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
    EXPECT_TRUE(Contains(s, "summary codec")) << s.message();
  }
  std::vector<uint8_t> bad = fp16;
  bad[8] = static_cast<uint8_t>(ValueCodec::kFp32);  // full codec
  Reseal(bad);
  auto r = DecodeSummary(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status(), "header.full_codec = 0")) << r.status().message();
}

// A non-finite gradient value is one error naming its index, wherever it sits (the vector
// screen finds it, the scalar walk names it).
TEST(GradientPacket, NonFiniteValueIsNamed) {
  std::mt19937 rng(4);
  const RoutedTensor t = MakeRouted(4, 64, 10, 0, Granularity::kElement, RestCodec::kDrop, rng);
  for (size_t at : {size_t{0}, size_t{17}, size_t{39}}) {
    std::vector<float> values(t.num_kept(), 0.25f);
    values[at] = at == 17 ? INFINITY : NAN;
    std::vector<uint8_t> packet;
    const Status s = EncodeGradientValues(t, values, ValueCodec::kInt8, {}, {}, &packet);
    EXPECT_EQ(s.code(), ErrorCode::kNonFinite);
    EXPECT_TRUE(Contains(s, "values[" + std::to_string(at) + "]")) << s.message();
    EXPECT_TRUE(packet.empty());
  }
}

// The micro-batch of the label (header offset 28) crosses with every per-step packet; a
// contract is per step, so its micro-batch must be 0 on both ends.
TEST(Packet, MicroBatchLabelRoundTripsAndIsZeroForContracts) {
  std::mt19937 rng(3);
  const RoutedTensor t = MakeRouted(3, 40, 5, 0, Granularity::kElement, RestCodec::kDrop, rng);
  const PacketLabel label{.boundary = 2, .contract_version = 4, .step = 9, .micro_batch = 3};
  std::vector<uint8_t> packet;
  ASSERT_TRUE(
      EncodeActivation(t, MakeContract(t, ValueCodec::kFp16, ValueCodec::kInt8), label, {}, &packet)
          .ok());
  EXPECT_EQ(InspectPacket(packet)->header.micro_batch, 3u);
  const std::vector<float> values(t.num_kept(), 0.5f);
  ASSERT_TRUE(EncodeGradientValues(t, values, ValueCodec::kInt8, label, {}, &packet).ok());
  EXPECT_EQ(InspectPacket(packet)->header.micro_batch, 3u);
  ASSERT_TRUE(EncodeSummary(std::vector<float>(4, 1.0f), label, &packet).ok());
  EXPECT_EQ(InspectPacket(packet)->header.micro_batch, 3u);
  const Status refused = EncodeContract(Contract{}, label, &packet);
  EXPECT_TRUE(Contains(refused, "label.micro_batch = 3")) << refused.message();
  ASSERT_TRUE(EncodeContract(Contract{}, {.step = 9}, &packet).ok());
  packet[28] = 1;
  Reseal(packet);
  const auto decoded = DecodeContract(packet);
  ASSERT_FALSE(decoded.ok());
  EXPECT_TRUE(Contains(decoded.status(), "header.micro_batch = 1")) << decoded.status().message();
}

TEST(ContractPacket, RoundTripsEveryField) {
  Contract c;
  c.boundary = 7;
  c.version = 12;
  c.keep = 0.075;
  c.keep_full = 0.3;
  c.full_codec = ValueCodec::kBf16;
  c.lossy_codec = ValueCodec::kInt4;
  c.rest = RestCodec::kSign1;
  c.granularity = Granularity::kUnit;
  c.bound_by = BoundBy::kReceiverBuffer;
  std::vector<uint8_t> packet;
  ASSERT_TRUE(
      EncodeContract(c, {.boundary = 7, .contract_version = 12, .step = 1000}, &packet).ok());
  EXPECT_EQ(packet.size(), 64u + 12 + kContractBodyBytes + 8);
  auto d = DecodeContract(packet);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->ToString(), c.ToString());
  EXPECT_EQ(d->keep, c.keep);
  EXPECT_EQ(d->keep_full, c.keep_full);
  EXPECT_EQ(d->bound_by, c.bound_by);
  // A body that does not validate.
  const size_t body = 64 + 12;
  Store64(packet, body + 8, std::bit_cast<uint64_t>(1.5));
  Reseal(packet);
  d = DecodeContract(packet);
  EXPECT_EQ(d.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(d.status(), "contract.keep = 1.5")) << d.status().message();
  Store64(packet, body + 8, std::bit_cast<uint64_t>(0.5));
  packet[body + 30] = 1;
  Reseal(packet);
  d = DecodeContract(packet);
  EXPECT_TRUE(Contains(d.status(), "contract_body.reserved[1] = 1")) << d.status().message();
}

TEST(Packet, DecoderRefusesTheWrongKind) {
  std::vector<uint8_t> packet;
  ASSERT_TRUE(EncodeSummary(std::vector<float>{1.0f}, {}, &packet).ok());
  auto r = DecodeActivation(packet);
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(Contains(r.status(), "header.kind = summary")) << r.status().message();
}

// --- Golden packets -----------------------------------------------------------------------
// Exact bytes of three tiny packets. A change here is a change of wire format v1: bump the
// version and document it in docs/wire-format.md instead of editing these arrays.

RoutedTensor GoldenActivation() {
  // 2 x 5, element granularity: row 0 keeps columns 1 (full, 1.5) and 3 (lossy, -2.0);
  // row 1 keeps column 0 (full, 0.25).
  RoutedTensor t;
  t.rows = 2;
  t.cols = 5;
  t.row_offsets = {0, 2, 3};
  t.indices = {1, 3, 0};
  t.values = {1.5f, -2.0f, 0.25f};
  t.tiers = {Tier::kFull, Tier::kLossy, Tier::kFull};
  return t;
}

const std::vector<uint8_t> kGoldenActivation = {
    // header
    0x53, 0x50, 0x4c, 0x4b, 0x01, 0x00, 0x00, 0x01, 0x00, 0x03, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x8c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // section table: index, tier bits, full values, lossy values
    0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00,
    0x08, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00,
    // index: bits 1, 3 (row 0) and 5 (row 1, column 0) -> 0x2a 0x00
    0x2a, 0x00,
    // tier bits: entry 1 lossy -> 0x02
    0x02,
    // full values: 1.5f, 0.25f
    0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x80, 0x3e,
    // lossy values: scales (row 0: 2/127, row 1: 0), then q = -127 (0x81)
    0x04, 0x02, 0x81, 0x3c, 0x00, 0x00, 0x00, 0x00, 0x81,
    // trailer: XXH3-64
    0xb1, 0xd3, 0xb5, 0x20, 0x31, 0x31, 0x9d, 0x07};

TEST(GoldenPacket, ActivationBitmapFp32Int8) {
  const RoutedTensor t = GoldenActivation();
  Contract c = MakeContract(t, ValueCodec::kFp32, ValueCodec::kInt8);
  std::vector<uint8_t> packet;
  ASSERT_TRUE(EncodeActivation(t, c, {.boundary = 1, .contract_version = 2, .step = 3},
                               {.index_codec = IndexCodec::kBitmap}, &packet)
                  .ok());
  EXPECT_EQ(packet, kGoldenActivation) << HexDump(packet);
}

RoutedTensor GoldenUnitSign1() {
  // 2 x 6, unit granularity: columns 2 (full) and 5 (lossy) for both rows; the 8 other entries
  // go as sign bits 0xb2 with centroids (0.5, -0.5) and (1, -1).
  RoutedTensor t;
  t.rows = 2;
  t.cols = 6;
  t.granularity = Granularity::kUnit;
  t.rest = RestCodec::kSign1;
  t.row_offsets = {0, 2};
  t.indices = {2, 5};
  t.values = {1.0f, 3.5f, -0.5f, -7.0f};
  t.tiers = {Tier::kFull, Tier::kLossy, Tier::kFull, Tier::kLossy};
  t.rest_bits = {0xb2};
  t.rest_centroids = {0.5f, -0.5f, 1.0f, -1.0f};
  return t;
}

const std::vector<uint8_t> kGoldenUnitSign1 = {
    // header: kind 0, unit, delta-varint, fp16 / int4, sign1, 6 sections, step 0x0102030405060708
    0x53, 0x50, 0x4c, 0x4b, 0x01, 0x00, 0x01, 0x02, 0x01, 0x04, 0x01, 0x06, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xb2, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // section table
    0x01, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00,
    0x04, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00,
    0x05, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00,
    0x10, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00,
    // index: count 2, first column 2, gap 5 - 2 - 1 = 2
    0x02, 0x02, 0x02,
    // tier bits: column 5 lossy
    0x02,
    // full values, fp16: 1.0, -0.5
    0x00, 0x3c, 0x00, 0xb8,
    // lossy values, int4: scales 0.5 and 1.0, then nibbles 7 and -7 (9)
    0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0x80, 0x3f, 0x97,
    // rest bits, centroids
    0xb2, 0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0x00, 0xbf, 0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x80,
    0xbf,
    // trailer
    0xf6, 0xfa, 0xbd, 0x0f, 0x3c, 0x61, 0x1a, 0xe9};

TEST(GoldenPacket, ActivationUnitDeltaVarintSign1Fp16Int4) {
  const RoutedTensor t = GoldenUnitSign1();
  const Contract c = MakeContract(t, ValueCodec::kFp16, ValueCodec::kInt4);
  std::vector<uint8_t> packet;
  ASSERT_TRUE(
      EncodeActivation(t, c, {.boundary = 0, .contract_version = 1, .step = 0x0102030405060708ull},
                       {.index_codec = IndexCodec::kDeltaVarint}, &packet)
          .ok());
  EXPECT_EQ(packet, kGoldenUnitSign1) << HexDump(packet);
  auto d = DecodeActivation(kGoldenUnitSign1);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ExpectSameRouted(t, *d, c);
}

const std::vector<uint8_t> kGoldenSummary = {
    0x53, 0x50, 0x4c, 0x4b, 0x01, 0x02, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x5a, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00,
    0x00, 0x00, 0x3c, 0x00, 0x38, 0x00, 0x40, 0x02, 0x81, 0x12, 0x5c, 0xf0, 0x91, 0x39, 0x15};

TEST(GoldenPacket, Summary) {
  std::vector<uint8_t> packet;
  ASSERT_TRUE(
      EncodeSummary(std::vector<float>{1.0f, 0.5f, 2.0f}, {.boundary = 4, .step = 5}, &packet)
          .ok());
  EXPECT_EQ(packet, kGoldenSummary) << HexDump(packet);
  auto d = DecodeSummary(kGoldenSummary);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(*d, (std::vector<float>{1.0f, 0.5f, 2.0f}));
}

// --- Hostile input ------------------------------------------------------------------------

// A real packet with every section kind: element granularity, both tiers, sign1, 3 x 7 (21
// bits, so the bitmap has padding), int4 lossy tier.
std::vector<uint8_t> RealPacket(IndexCodec index = IndexCodec::kBitmap, bool zstd = false) {
  std::mt19937 rng(77);
  const RoutedTensor t = MakeRouted(3, 7, 3, 1, Granularity::kElement, RestCodec::kSign1, rng);
  std::vector<uint8_t> packet;
  const Status s =
      EncodeActivation(t, MakeContract(t, ValueCodec::kFp16, ValueCodec::kInt4),
                       {.boundary = 1, .step = 2}, {.index_codec = index, .zstd = zstd}, &packet);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return packet;
}

bool IsPacketError(ErrorCode c) {
  return c == ErrorCode::kCorruptPacket || c == ErrorCode::kUnsupported ||
         c == ErrorCode::kResourceExhausted;
}

TEST(BadPacket, EveryTruncationFails) {
  for (IndexCodec index :
       {IndexCodec::kBitmap, IndexCodec::kDeltaVarint, IndexCodec::kSubsetBitmap}) {
    const std::vector<uint8_t> packet = RealPacket(index);
    for (size_t len = 0; len < packet.size(); ++len) {
      const std::vector<uint8_t> cut(packet.begin(), packet.begin() + len);
      auto r = DecodeActivation(cut);
      ASSERT_FALSE(r.ok()) << len;
      EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket) << len;
      if (len < 72) {
        EXPECT_TRUE(Contains(r.status(), "packet size = " + std::to_string(len)))
            << r.status().message();
      } else {
        EXPECT_TRUE(Contains(r.status(), "header.packet_bytes = " + std::to_string(packet.size())))
            << r.status().message();
      }
    }
  }
}

TEST(BadPacket, EverySingleByteFlipFails) {
  for (bool zstd : {false, true}) {
    const std::vector<uint8_t> packet = RealPacket(IndexCodec::kDeltaVarint, zstd);
    ASSERT_TRUE(DecodeActivation(packet).ok());
    for (size_t i = 0; i < packet.size(); ++i) {
      for (uint8_t mask : {0x01, 0x80, 0xff}) {
        std::vector<uint8_t> bad = packet;
        bad[i] ^= mask;
        auto r = DecodeActivation(bad);
        ASSERT_FALSE(r.ok()) << "byte " << i << " ^ " << int(mask);
        EXPECT_TRUE(IsPacketError(r.status().code())) << r.status().ToString();
        EXPECT_FALSE(r.status().message().empty());
      }
    }
  }
}

// Flips that get past the checksum (resealed) reach every field check behind it. Nothing may
// crash; a packet that still decodes passed RoutedTensor::Validate inside the decoder.
TEST(BadPacket, ResealedFlipsNeverCrash) {
  for (IndexCodec index :
       {IndexCodec::kBitmap, IndexCodec::kDeltaVarint, IndexCodec::kSubsetBitmap}) {
    for (bool zstd : {false, true}) {
      const std::vector<uint8_t> packet = RealPacket(index, zstd);
      for (size_t i = 0; i + 8 < packet.size(); ++i) {
        for (int bit = 0; bit < 8; ++bit) {
          std::vector<uint8_t> bad = packet;
          bad[i] = static_cast<uint8_t>(bad[i] ^ (1 << bit));
          Reseal(bad);
          auto r = DecodeActivation(bad);
          if (!r.ok()) {
            EXPECT_TRUE(IsPacketError(r.status().code())) << r.status().ToString();
            EXPECT_NE(r.status().message().find(" = "), std::string::npos) << r.status().message();
          }
        }
      }
    }
  }
}

// The fused dense decoder against DecodeActivation + Scatter on a packet it takes the fused
// path for, after every single-bit flip (resealed, so the field checks are reached): both
// refuse, or both give the same dense tensor. Plus a wrong output shape.
TEST(BadPacket, DenseDecoderAgreesWithDecodeThenScatterOnEveryResealedFlip) {
  std::mt19937 rng(5);
  for (ValueCodec codec : {ValueCodec::kFp16, ValueCodec::kInt8}) {
    for (bool zstd : {false, true}) {
      for (IndexCodec index : {IndexCodec::kBitmap, IndexCodec::kSubsetBitmap}) {
        const uint32_t rows = 3, cols = 21;  // rows not byte-aligned in the bitmap
        const RoutedTensor t =
            MakeRouted(rows, cols, 5, 5, Granularity::kElement, RestCodec::kDrop, rng);
        std::vector<uint8_t> packet;
        ASSERT_TRUE(EncodeActivation(t, MakeContract(t, codec, ValueCodec::kInt8), {},
                                     {.index_codec = index, .zstd = zstd}, &packet)
                        .ok());
        size_t both_ok = 0;
        for (size_t i = 0; i + 8 < packet.size(); ++i) {
          for (int bit = 0; bit < 8; ++bit) {
            std::vector<uint8_t> bad = packet;
            bad[i] = static_cast<uint8_t>(bad[i] ^ (1 << bit));
            Reseal(bad);
            std::vector<float> want(rows * cols, 1.0f), got(rows * cols, 2.0f);
            auto decoded = DecodeActivation(bad);
            const bool want_ok = decoded.ok() && decoded->rows == rows && decoded->cols == cols &&
                                 Scatter(*decoded, {want.data(), rows, cols}).ok();
            const Status dense = DecodeActivationToDense(bad, {got.data(), rows, cols});
            // The form with the mask decides alike, and leaves the mask alone when it refuses.
            KeptMask mask{.rows = 9, .cols = 9};
            std::vector<float> got_too(rows * cols, 2.0f);
            const Status with_mask =
                DecodeActivationToDenseAndMask(bad, {got_too.data(), rows, cols}, &mask);
            ASSERT_EQ(with_mask.code(), dense.code()) << i << "^" << bit;
            if (!with_mask.ok()) {  // nothing written: neither the mask nor the dense rows
              ASSERT_EQ(mask.rows, 9u);
              ASSERT_TRUE(mask.bits.empty());
              ASSERT_EQ(got_too, std::vector<float>(rows * cols, 2.0f));
            } else {
              ASSERT_EQ(got_too, got);
              KeptMask want_mask;
              ASSERT_TRUE(decoded.ok() && MaskOf(*decoded, &want_mask).ok());
              ASSERT_EQ(mask.bits, want_mask.bits);
              ASSERT_EQ(mask.row_offsets, want_mask.row_offsets);
            }
            if (decoded.ok() && (decoded->rows != rows || decoded->cols != cols)) {
              EXPECT_EQ(dense.code(), ErrorCode::kShapeMismatch) << i << "^" << bit;
              continue;
            }
            ASSERT_EQ(dense.ok(), want_ok)
                << "byte " << i << " bit " << bit << ": " << dense.ToString() << " vs "
                << decoded.status().ToString();
            if (want_ok) {
              ++both_ok;
              ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)));
            } else {  // refused too: as a bad packet, or as not the shape it now claims
              EXPECT_TRUE(IsPacketError(dense.code()) || dense.code() == ErrorCode::kShapeMismatch)
                  << dense.ToString();
            }
          }
        }
        EXPECT_GT(both_ok, 0u);  // flips in values and labels still decode
        std::vector<float> small(rows * (cols - 1));
        EXPECT_EQ(DecodeActivationToDense(packet, {small.data(), rows, cols - 1}).code(),
                  ErrorCode::kShapeMismatch);
        EXPECT_EQ(
            DecodeActivationToDenseAndMask(packet, {small.data(), rows, cols - 1}, nullptr).code(),
            ErrorCode::kInvalidArgument);
        EXPECT_EQ(DecodeActivationToDense(packet, {nullptr, rows, cols}).code(),
                  ErrorCode::kInvalidArgument);
      }
    }
  }
}

struct Crafted {
  const char* name;
  size_t offset;
  uint8_t value;
  ErrorCode code;
  const char* message;
};

TEST(BadPacket, CraftedHeaderFieldsNameTheField) {
  // Table offsets: header 64 bytes, then 12 per section.
  const std::vector<Crafted> cases = {
      {"version 2", 4, 2, ErrorCode::kUnsupported, "header.version = 2"},
      {"unknown kind", 5, 4, ErrorCode::kUnsupported, "header.kind = 4"},
      {"unknown granularity", 6, 2, ErrorCode::kUnsupported, "header.granularity = 2"},
      {"unknown index codec", 7, 4, ErrorCode::kUnsupported, "header.index_codec = 4"},
      {"index codec none", 7, 0, ErrorCode::kCorruptPacket, "header.index_codec = 0"},
      {"unknown full codec", 8, 9, ErrorCode::kUnsupported, "header.full_codec = 9"},
      {"unknown lossy codec", 9, 5, ErrorCode::kUnsupported, "header.lossy_codec = 5"},
      {"unknown rest", 10, 2, ErrorCode::kUnsupported, "header.rest = 2"},
      {"section count", 11, 5, ErrorCode::kCorruptPacket, "header.section_count = 5"},
      {"rows", 20, 4, ErrorCode::kCorruptPacket, "section[0].raw_bytes = 3"},
      {"cols zero", 24, 0, ErrorCode::kCorruptPacket, "header.cols = 0"},
      {"count_full", 40, 200, ErrorCode::kCorruptPacket, "header.count_full = 200"},
      {"section id", 64, 2, ErrorCode::kCorruptPacket, "section[0].id = 2"},
      {"section flags", 65, 2, ErrorCode::kCorruptPacket, "section[0].flags = 2"},
      {"section reserved", 66, 1, ErrorCode::kCorruptPacket, "section[0].reserved = 1"},
      {"section zstd flag on raw", 65, 1, ErrorCode::kCorruptPacket, "section[0].stored_bytes = 3"},
      {"section stored", 68, 4, ErrorCode::kCorruptPacket, "section[0].stored_bytes = 4"},
      {"section raw", 72, 200, ErrorCode::kCorruptPacket, "section[0].raw_bytes = 200"},
  };
  const std::vector<uint8_t> packet = RealPacket(IndexCodec::kBitmap);
  for (const Crafted& c : cases) {
    std::vector<uint8_t> bad = packet;
    bad[c.offset] = c.value;
    Reseal(bad);
    auto r = DecodeActivation(bad);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_EQ(r.status().code(), c.code) << c.name << ": " << r.status().ToString();
    EXPECT_TRUE(Contains(r.status(), c.message)) << c.name << ": " << r.status().message();
  }
}

TEST(BadPacket, WrongMagic) {
  std::vector<uint8_t> bad = RealPacket();
  bad[3] = 'X';
  auto r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(r.status(), "header.magic = 0x584c5053")) << r.status().message();
}

TEST(BadPacket, BadChecksumNamesBothValues) {
  std::vector<uint8_t> bad = RealPacket();
  bad[100] ^= 0x10;
  auto r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
  char stored[32];
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{bad[bad.size() - 8 + i]} << (8 * i);
  std::snprintf(stored, sizeof(stored), "checksum = 0x%016llx", static_cast<unsigned long long>(v));
  EXPECT_TRUE(Contains(r.status(), stored)) << r.status().message();
  EXPECT_TRUE(Contains(r.status(), "does not match computed 0x")) << r.status().message();
  PacketInfo info;
  EXPECT_FALSE(InspectPacketPartial(bad, {}, &info).ok());
  EXPECT_TRUE(info.header_parsed);
  EXPECT_TRUE(info.checksum_checked);
  EXPECT_FALSE(info.checksum_ok);
}

TEST(BadPacket, TrailingGarbage) {
  std::vector<uint8_t> bad = RealPacket();
  bad.push_back(0);
  auto r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(r.status(), "header.packet_bytes = " + std::to_string(bad.size() - 1)))
      << r.status().message();
  EXPECT_TRUE(Contains(r.status(), "trailing")) << r.status().message();
}

TEST(BadPacket, OversizedShapeIsRefusedBeforeAllocation) {
  std::vector<uint8_t> bad = RealPacket();
  Store32(bad, 20, 0xFFFFFFFFu);  // rows
  Store32(bad, 24, 0xFFFFFFFFu);  // cols
  Reseal(bad);
  auto r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(Contains(r.status(), "header.rows*cols = 18446744065119617025"))
      << r.status().message();
  // A small limit refuses a real packet the same way.
  r = DecodeActivation(RealPacket(), {.max_entries = 20});
  EXPECT_EQ(r.status().code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(Contains(r.status(), "header.rows*cols = 21")) << r.status().message();
  r = DecodeActivation(RealPacket(), {.max_packet_bytes = 64});
  EXPECT_EQ(r.status().code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(Contains(r.status(), "packet size")) << r.status().message();
}

TEST(BadPacket, SectionPastTheEnd) {
  std::vector<uint8_t> bad = RealPacket();
  const size_t last = 64 + 12 * (bad[11] - 1);
  const uint32_t raw = Load32(bad, last + 8);
  Store32(bad, last + 4, 0xFFFFFFF0u);  // stored_bytes
  Reseal(bad);
  auto r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(r.status(), "section[5].stored_bytes = 4294967280")) << r.status().message();
  // Claim zstd with a stored size below raw but past the trailer.
  bad[last + 1] = 1;
  Store32(bad, last + 4, raw - 1);
  Store32(bad, 64 + 4, 0);  // shrink section 0's claim so that the offsets still add up early
  Reseal(bad);
  r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(r.status(), "section[0]")) << r.status().message();
}

// An activation packet of rows x cols with nothing kept, its bitmap index zstd-compressed (an
// empty bitmap compresses to a few bytes).
std::vector<uint8_t> EmptyZstdBitmapPacket(uint32_t rows, uint32_t cols) {
  RoutedTensor t;
  t.rows = rows;
  t.cols = cols;
  t.row_offsets.assign(rows + 1, 0);
  std::vector<uint8_t> packet;
  EXPECT_TRUE(EncodeActivation(t, MakeContract(t, ValueCodec::kFp32, ValueCodec::kInt8), {},
                               {.index_codec = IndexCodec::kBitmap, .zstd = true}, &packet)
                  .ok());
  return packet;
}

TEST(BadPacket, HugeRawBytesOfAZstdSection) {
  // Packet whose index compresses: a wide, empty bitmap.
  const std::vector<uint8_t> packet = EmptyZstdBitmapPacket(64, 4096);
  ASSERT_EQ(packet[65], 1);  // zstd
  ASSERT_TRUE(DecodeActivation(packet).ok());
  std::vector<uint8_t> bad = packet;
  Store32(bad, 72, 0xFFFFFFFFu);
  Reseal(bad);
  auto r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(r.status(), "section[0].raw_bytes = 4294967295")) << r.status().message();
  // Within the header's claim but beyond the limits.
  r = DecodeActivation(packet, {.max_packet_bytes = 4096});
  EXPECT_EQ(r.status().code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(Contains(r.status(), "section[0].raw_bytes = 32768")) << r.status().message();
  // A frame that decompresses to something else.
  bad = packet;
  bad[64 + 12 + 6] ^= 0x55;
  Reseal(bad);
  r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(r.status(), "section[0].zstd")) << r.status().message();
}

// Many one-column rows cost a decoder 4 bytes of row offsets each, though their compressed
// bitmap is a few bytes: a packet whose row offsets would exceed max_packet_bytes is refused
// by both decoders before anything is allocated, and decodes under a larger limit.
TEST(BadPacket, ManyOneColumnRowsAreRefusedBeforeAllocation) {
  const std::vector<uint8_t> packet = EmptyZstdBitmapPacket(4096, 1);
  ASSERT_LT(packet.size(), 200u);  // 512 bitmap bytes stored as a few zstd bytes
  const DecodeLimits limits{.max_packet_bytes = 8192};  // > every section, < 4 * 4097
  auto r = DecodeActivation(packet, limits);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(Contains(r.status(), "header.rows = 4096")) << r.status().message();
  std::vector<float> dense(4096, 7.0f);
  const Status fast = DecodeActivationToDense(packet, {dense.data(), 4096, 1}, limits);
  EXPECT_EQ(fast.code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(Contains(fast, "header.rows = 4096")) << fast.message();
  EXPECT_TRUE(DecodeActivation(packet, {.max_packet_bytes = 4 * 4097}).ok());
  EXPECT_TRUE(
      DecodeActivationToDense(packet, {dense.data(), 4096, 1}, {.max_packet_bytes = 4 * 4097})
          .ok());
}

// A zstd section is one frame: the same raw bytes as two frames back to back, or one frame
// followed by a skippable frame, decompress fine with zstd but are refused, naming the section.
TEST(BadPacket, ZstdSectionMustBeOneFrame) {
  const std::vector<uint8_t> packet = EmptyZstdBitmapPacket(64, 4096);
  ASSERT_EQ(packet[11], 1);  // one section: the bitmap
  ASSERT_EQ(packet[65], 1);  // zstd
  const uint32_t raw = Load32(packet, 72);
  const std::vector<uint8_t> zeros(raw, 0);
  const auto frame = [](const uint8_t* data, size_t size) {
    std::vector<uint8_t> out(ZSTD_compressBound(size));
    out.resize(ZSTD_compress(out.data(), out.size(), data, size, 1));
    return out;
  };
  // Rebuilds the packet around another payload for its one section.
  const auto with_payload = [&](const std::vector<uint8_t>& payload) {
    std::vector<uint8_t> p(64 + 12 + payload.size() + 8);  // checksum last, set by Reseal
    std::copy(packet.begin(), packet.begin() + 64 + 12, p.begin());
    std::copy(payload.begin(), payload.end(), p.begin() + 64 + 12);
    Store32(p, 64 + 4, static_cast<uint32_t>(payload.size()));
    Store64(p, 56, p.size());
    Reseal(p);
    return p;
  };
  std::vector<uint8_t> one = frame(zeros.data(), raw);
  ASSERT_TRUE(DecodeActivation(with_payload(one)).ok());  // the rebuild itself is sound
  std::vector<uint8_t> two = frame(zeros.data(), raw / 2);
  const std::vector<uint8_t> second = frame(zeros.data() + raw / 2, raw - raw / 2);
  two.insert(two.end(), second.begin(), second.end());
  std::vector<uint8_t> skippable = one;
  for (uint8_t b : {0x50, 0x2A, 0x4D, 0x18, 0x01, 0x00, 0x00, 0x00, 0x00}) skippable.push_back(b);
  for (const auto& payload : {two, skippable}) {
    ASSERT_LT(payload.size(), raw);
    const std::vector<uint8_t> bad = with_payload(payload);
    auto r = DecodeActivation(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
    EXPECT_TRUE(Contains(r.status(), "section[0].zstd")) << r.status().message();
    std::vector<float> dense(64 * 4096);
    const Status fast = DecodeActivationToDense(bad, {dense.data(), 64, 4096});
    EXPECT_TRUE(Contains(fast, "section[0].zstd")) << fast.message();
  }
}

// Values at +-FLT_MAX: the int8 and int4 row scales are rounded down so that the decoder's
// q * scale stays finite, and the packet round-trips.
TEST(GradientPacket, ValuesAtFloatMaxRoundTrip) {
  std::mt19937 rng(14);
  const RoutedTensor mask = MakeRouted(2, 8, 3, 3, Granularity::kElement, RestCodec::kDrop, rng);
  std::vector<float> values(mask.num_kept(), 1.0f);
  const float max = std::numeric_limits<float>::max();
  values[0] = max;
  values[values.size() - 1] = -max;
  for (ValueCodec codec : {ValueCodec::kInt8, ValueCodec::kInt4}) {
    std::vector<uint8_t> packet;
    ASSERT_TRUE(EncodeGradientValues(mask, values, codec, {}, {}, &packet).ok());
    auto r = DecodeGradientValues(packet, mask);
    ASSERT_TRUE(r.ok()) << Traits(codec).name << ": " << r.status().message();
    EXPECT_GT(r->front(), 0.99f * max) << Traits(codec).name;
    EXPECT_LT(r->back(), -0.99f * max) << Traits(codec).name;
  }
}

TEST(BadPacket, NonZeroPaddingBits) {
  // Bitmap of 3 x 7 = 21 bits: bit 23 is padding.
  std::vector<uint8_t> bad = RealPacket(IndexCodec::kBitmap);
  const size_t payload = 64 + 12 * bad[11];
  bad[payload + 2] |= 0x80;
  Reseal(bad);
  auto r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(r.status(), "bitmap padding bits = 4")) << r.status().message();
  // Tier bits: 9 kept entries, so the second byte has 7 padding bits.
  bad = RealPacket(IndexCodec::kBitmap);
  const uint32_t index_bytes = Load32(bad, 64 + 4);
  bad[payload + index_bytes + 1] |= 0x80;
  Reseal(bad);
  r = DecodeActivation(bad);
  EXPECT_TRUE(Contains(r.status(), "tier_bits padding = 64")) << r.status().message();
}

TEST(BadPacket, ZeroLengthAndGarbageBuffers) {
  EXPECT_EQ(DecodeActivation({}).status().code(), ErrorCode::kCorruptPacket);
  std::vector<uint8_t> junk(200, 0xAB);
  EXPECT_EQ(DecodeActivation(junk).status().code(), ErrorCode::kCorruptPacket);
  EXPECT_EQ(DecodeSummary(junk).status().code(), ErrorCode::kCorruptPacket);
  EXPECT_EQ(DecodeContract(junk).status().code(), ErrorCode::kCorruptPacket);
  EXPECT_EQ(InspectPacket(junk).status().code(), ErrorCode::kCorruptPacket);
}

// --- Index codecs on their own ------------------------------------------------------------

Status DecodeDelta(std::vector<uint8_t> bytes, uint32_t rows, uint32_t cols, uint64_t kept) {
  std::vector<uint32_t> offsets, indices;
  return internal::DecodeDeltaVarint(bytes, rows, cols, kept, &offsets, &indices);
}

TEST(IndexCodec, DeltaVarintRoundTripsWideGaps) {
  const std::vector<uint32_t> offsets = {0, 3, 3, 5};
  const std::vector<uint32_t> indices = {0, 127, 100000, 5, 6};
  std::vector<uint8_t> bytes;
  internal::AppendDeltaVarint(offsets, indices, &bytes);
  EXPECT_EQ(bytes.size(), internal::DeltaVarintBytes(offsets, indices));
  // Row 0: 3, 0, 126, 99872 (3 bytes); row 1: 0; row 2: 2, 5, 0.
  EXPECT_EQ(bytes,
            (std::vector<uint8_t>{0x03, 0x00, 0x7e, 0xa0, 0x8c, 0x06, 0x00, 0x02, 0x05, 0x00}));
  std::vector<uint32_t> got_offsets, got_indices;
  ASSERT_TRUE(internal::DecodeDeltaVarint(bytes, 3, 100001, 5, &got_offsets, &got_indices).ok());
  EXPECT_EQ(got_offsets, offsets);
  EXPECT_EQ(got_indices, indices);
}

// Rows long enough for the vector byte count and the one-byte decode path, with gaps at every
// LEB128 length boundary mixed in.
TEST(IndexCodec, DeltaVarintRoundTripsRandomRowsAtEveryGapLength) {
  std::mt19937 rng(7);
  const uint32_t boundaries[] = {
      126, 127, 128, 16383, 16384, (1u << 21) - 1, 1u << 21, (1u << 28) - 1, 1u << 28};
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<uint32_t> offsets = {0};
    std::vector<uint32_t> indices;
    for (int r = 0; r < 6; ++r) {
      const size_t count = std::uniform_int_distribution<size_t>(0, 90)(rng);
      uint64_t col = std::uniform_int_distribution<uint32_t>(0, 300)(rng);
      for (size_t j = 0; j < count && col < (uint64_t{1} << 31); ++j) {
        indices.push_back(static_cast<uint32_t>(col));
        const bool wide = std::uniform_int_distribution<int>(0, 15)(rng) == 0;
        const uint32_t gap = wide ? boundaries[std::uniform_int_distribution<size_t>(0, 8)(rng)]
                                  : std::uniform_int_distribution<uint32_t>(0, 20)(rng);
        col += uint64_t{1} + gap;
      }
      offsets.push_back(static_cast<uint32_t>(indices.size()));
    }
    // The size counted the slow way, one LEB128 number at a time.
    uint64_t want_bytes = 0;
    for (size_t r = 0; r + 1 < offsets.size(); ++r) {
      want_bytes += internal::VarintBytes(offsets[r + 1] - offsets[r]);
      for (uint32_t i = offsets[r]; i < offsets[r + 1]; ++i) {
        want_bytes +=
            internal::VarintBytes(i == offsets[r] ? indices[i] : indices[i] - indices[i - 1] - 1);
      }
    }
    ASSERT_EQ(internal::DeltaVarintBytes(offsets, indices), want_bytes) << trial;
    std::vector<uint8_t> bytes = {0xAA};  // appends after what is there
    internal::AppendDeltaVarint(offsets, indices, &bytes);
    ASSERT_EQ(bytes.size() - 1, want_bytes) << trial;
    ASSERT_EQ(bytes[0], 0xAA);
    std::vector<uint32_t> got_offsets, got_indices;
    const std::span<const uint8_t> stream(bytes.data() + 1, bytes.size() - 1);
    ASSERT_TRUE(
        internal::DecodeDeltaVarint(stream, 6, 1u << 31, indices.size(), &got_offsets, &got_indices)
            .ok())
        << trial;
    EXPECT_EQ(got_offsets, offsets) << trial;
    EXPECT_EQ(got_indices, indices) << trial;
  }
}

TEST(IndexCodec, DeltaVarintRefusesMalformedStreams) {
  Status s = DecodeDelta({0x01, 0x80, 0x00}, 1, 10, 1);  // over-long 0
  EXPECT_TRUE(Contains(s, "index row 0 first column offset = 2")) << s.message();
  EXPECT_TRUE(Contains(s, "not minimal")) << s.message();
  s = DecodeDelta({0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 1, 10, 1);  // 6 bytes
  EXPECT_TRUE(Contains(s, "longer than 5 bytes")) << s.message();
  s = DecodeDelta({0x01, 0xff, 0xff, 0xff, 0xff, 0x1f}, 1, 10, 1);  // > 32 bits
  EXPECT_TRUE(Contains(s, "overflows 32 bits")) << s.message();
  s = DecodeDelta({0x01, 0x0a}, 1, 10, 1);  // column 10 of 10
  EXPECT_TRUE(Contains(s, "index row 0 column = 10")) << s.message();
  s = DecodeDelta({0x02, 0x00, 0x09}, 1, 10, 2);  // 0 then gap 9 -> column 10
  EXPECT_TRUE(Contains(s, "index row 0 column = 10")) << s.message();
  s = DecodeDelta({0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 1, 10, 11);  // count 11 > cols
  EXPECT_TRUE(Contains(s, "index row 0 count = 11")) << s.message();
  s = DecodeDelta({0x01, 0x00, 0x00}, 1, 10, 1);  // trailing byte
  EXPECT_TRUE(Contains(s, "trailing bytes = 1")) << s.message();
  s = DecodeDelta({0x01, 0x00, 0x01}, 2, 10,
                  2);  // total 2 claimed, rows give 2 but row 1 truncated
  EXPECT_EQ(s.code(), ErrorCode::kCorruptPacket);
  s = DecodeDelta({0x01, 0x80}, 1, 10, 1);  // truncated varint
  EXPECT_TRUE(Contains(s, "runs past the end")) << s.message();
  s = DecodeDelta({0x03, 0x00, 0x00, 0x80, 0x00}, 1, 10, 3);  // over-long gap after a short one
  EXPECT_TRUE(Contains(s, "index row 0 gap offset = 4")) << s.message();
  EXPECT_TRUE(Contains(s, "not minimal")) << s.message();
  s = DecodeDelta({0x02, 0x85, 0x01}, 1, 1000, 2);  // stream ends where a gap should be
  EXPECT_TRUE(Contains(s, "index row 0 gap offset = 3")) << s.message();
  EXPECT_TRUE(Contains(s, "runs past the end")) << s.message();
  EXPECT_TRUE(DecodeDelta({0x03, 0x00, 0x00, 0x00, 0x02, 0x05, 0x00}, 2, 10, 5).ok());
  s = DecodeDelta({0x02, 0x00, 0x00}, 1, 10, 1);  // more than the header's kept
  EXPECT_TRUE(Contains(s, "index row 0 count = 2")) << s.message();
}

TEST(IndexCodec, BitmapRoundTripsRowsAcrossByteBoundaries) {
  for (uint32_t cols : {1u, 3u, 7u, 8u, 9u, 33u}) {
    std::mt19937 rng(cols);
    const RoutedTensor t =
        MakeRouted(5, cols, (cols + 1) / 2, 0, Granularity::kElement, RestCodec::kDrop, rng);
    std::vector<uint8_t> bytes;
    internal::AppendBitmap(t.row_offsets, t.indices, cols, &bytes);
    ASSERT_EQ(bytes.size(), internal::BitmapBytes(5, cols));
    std::vector<uint32_t> offsets, indices;
    ASSERT_TRUE(internal::DecodeBitmap(bytes, 5, cols, t.indices.size(), &offsets, &indices).ok());
    EXPECT_EQ(offsets, t.row_offsets);
    EXPECT_EQ(indices, t.indices);
    Status s = internal::DecodeBitmap(bytes, 5, cols, t.indices.size() - 1, &offsets, &indices);
    EXPECT_TRUE(Contains(s, "bitmap set bits = " + std::to_string(t.indices.size())))
        << s.message();
    EXPECT_TRUE(Contains(s, "more than the header's kept count")) << s.message();
    s = internal::DecodeBitmap(bytes, 5, cols, 5 * cols + 1, &offsets, &indices);
    EXPECT_TRUE(Contains(s, "kept count = " + std::to_string(5 * cols + 1))) << s.message();
  }
}

// The subset bitmap over rows that share columns, at every width class: encoded from the sets
// and from the router-style bitmap (rows on bytes) it is the same bytes, and it decodes back.
TEST(IndexCodec, SubsetBitmapRoundTripsAndMatchesTheBitmapPath) {
  for (uint32_t cols : {1u, 5u, 8u, 64u, 72u, 1024u, 1030u}) {
    for (uint32_t pool : {0u, 1u, cols / 3, cols}) {
      std::mt19937 rng(cols * 7 + pool);
      const uint32_t rows = 6;
      RoutedTensor t;
      t.row_offsets = {0};
      std::vector<uint32_t> columns(cols);
      std::iota(columns.begin(), columns.end(), 0u);
      std::shuffle(columns.begin(), columns.end(), rng);
      columns.resize(pool);  // every row keeps from these only
      std::vector<uint8_t> bitmap(cols % 8 == 0 ? rows * cols / 8 : 0, 0);
      for (uint32_t r = 0; r < rows; ++r) {
        std::vector<uint32_t> row;
        for (uint32_t c : columns) {
          if (rng() % 2 == 0 || r == 0) row.push_back(c);  // row 0 keeps the whole pool
        }
        std::sort(row.begin(), row.end());
        for (uint32_t c : row) {
          t.indices.push_back(c);
          if (!bitmap.empty()) bitmap[r * cols / 8 + c / 8] |= static_cast<uint8_t>(1u << (c % 8));
        }
        t.row_offsets.push_back(static_cast<uint32_t>(t.indices.size()));
      }
      SCOPED_TRACE(::testing::Message() << "cols " << cols << " pool " << pool);
      std::vector<uint64_t> mask;
      const uint64_t active = internal::ColumnMask(t.row_offsets, t.indices, cols, {}, &mask);
      EXPECT_EQ(active, pool);
      std::vector<uint8_t> from_sets, from_bitmap;
      internal::AppendSubsetBitmap(t.row_offsets, t.indices, cols, {}, mask, &from_sets);
      ASSERT_EQ(from_sets.size(), internal::SubsetBitmapBytes(rows, cols, pool));
      if (!bitmap.empty()) {
        std::vector<uint64_t> mask2;
        EXPECT_EQ(internal::ColumnMask(t.row_offsets, t.indices, cols, bitmap, &mask2), active);
        EXPECT_EQ(mask2, mask);
        internal::AppendSubsetBitmap(t.row_offsets, t.indices, cols, bitmap, mask, &from_bitmap);
        EXPECT_EQ(from_bitmap, from_sets);
      }
      std::vector<uint32_t> offsets, indices;
      const Status s =
          internal::DecodeSubsetBitmap(from_sets, rows, cols, t.indices.size(), &offsets, &indices);
      ASSERT_TRUE(s.ok()) << s.ToString();
      EXPECT_EQ(offsets, t.row_offsets);
      EXPECT_EQ(indices, t.indices);
    }
  }
}

// Every way a subset bitmap can be malformed is one error naming it.
TEST(IndexCodec, SubsetBitmapRefusesMalformedSections) {
  // 2 rows x 5 columns: row 0 keeps {1, 3}, row 1 keeps {0}. Mask {0, 1, 3} = 0x0b, A = 3;
  // row 0 over (0, 1, 3) is 0,1,1 and row 1 is 1,0,0: stream bits 1, 2, 3 = 0x0e.
  const std::vector<uint32_t> offsets = {0, 2, 3};
  const std::vector<uint32_t> indices = {1, 3, 0};
  std::vector<uint64_t> mask;
  ASSERT_EQ(internal::ColumnMask(offsets, indices, 5, {}, &mask), 3u);
  std::vector<uint8_t> good;
  internal::AppendSubsetBitmap(offsets, indices, 5, {}, mask, &good);
  ASSERT_EQ(good, (std::vector<uint8_t>{0x0b, 0x0e}));
  std::vector<uint32_t> o, i;
  ASSERT_TRUE(internal::DecodeSubsetBitmap(good, 2, 5, 3, &o, &i).ok());
  EXPECT_EQ(i, indices);
  struct Case {
    std::vector<uint8_t> bytes;
    uint64_t kept;
    const char* message;
  };
  const std::vector<Case> cases = {
      {{}, 3, "subset bitmap bytes = 0: shorter than the column mask's 1"},
      {{0x0b}, 3, "subset bitmap bytes = 1: expected 2"},
      {{0x0b, 0x0e, 0x00}, 3, "subset bitmap bytes = 3: expected 2"},
      {{0x2b, 0x0e}, 3, "column mask padding bits = 1"},
      {{0x0b, 0x4e}, 4, "subset bitmap padding bits = 1"},
      {{0x1f, 0x0e}, 3, "subset bitmap bytes = 2: expected 3"},  // 5 masked: 10 bits
      {{0x0b, 0x06}, 2, "subset bitmap masked column = 0: is kept by no row"},
      {{0x0b, 0x0e}, 2, "subset bitmap set bits = 3: more than the header's kept count"},
      {{0x0b, 0x0e}, 4, "subset bitmap set bits = 3: header says 4 kept"},
      {{0x0b, 0x0e}, 7, "kept count = 7: exceeds the subset bitmap's bits"},
  };
  for (const Case& c : cases) {
    const Status s = internal::DecodeSubsetBitmap(c.bytes, 2, 5, c.kept, &o, &i);
    EXPECT_EQ(s.code(), ErrorCode::kCorruptPacket) << c.message;
    EXPECT_TRUE(Contains(s, c.message)) << s.message() << " / " << c.message;
  }
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

// A subset bitmap whose mask names a column no row keeps, with the right size and kept count
// (one mask bit flipped, resealed): both decoders refuse it, and the fused one before it has
// written anything.
TEST(BadPacket, SubsetMaskOutsideTheRowsIsRefusedBeforeAnyWrite) {
  RoutedTensor t;  // 2 x 5: row 0 keeps {1, 3}, row 1 keeps {0}
  t.rows = 2;
  t.cols = 5;
  t.row_offsets = {0, 2, 3};
  t.indices = {1, 3, 0};
  t.values = {1.0f, 2.0f, 3.0f};
  t.tiers.assign(3, Tier::kFull);
  std::vector<uint8_t> packet;
  ASSERT_TRUE(EncodeActivation(t, MakeContract(t, ValueCodec::kFp32, ValueCodec::kInt8), {},
                               {.index_codec = IndexCodec::kSubsetBitmap}, &packet)
                  .ok());
  const PacketInfo info = *InspectPacket(packet);
  const size_t at = info.sections[0].offset;
  ASSERT_EQ(packet[at], 0x0b);      // mask {0, 1, 3}
  ASSERT_EQ(packet[at + 1], 0x0e);  // rows over it: 0,1,1 | 1,0,0
  // Mask {0, 1, 3, 4}: still 8 stream bits in one byte, rows now {1, 3, 4} and {}, 3 kept.
  packet[at] = 0x1b;
  Reseal(packet);
  auto decoded = DecodeActivation(packet);
  ASSERT_FALSE(decoded.ok());
  EXPECT_TRUE(Contains(decoded.status(), "subset bitmap masked column = 0: is kept by no row"))
      << decoded.status().message();
  std::vector<float> out(10, 7.0f);
  const Status dense = DecodeActivationToDense(packet, {out.data(), 2, 5});
  EXPECT_EQ(dense.code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(dense, "subset bitmap masked column = 0")) << dense.message();
  EXPECT_EQ(out, std::vector<float>(10, 7.0f));
}

// --- The cost model against the codec ------------------------------------------------------

// Unit granularity with a partial last unit (100 columns in units of 32, 32, 32, 4): the
// router keeps whole units, and the estimate, given the block, is never below the packets
// the router's output encodes to (it was 28 % below at keep 0.75 when it counted columns).
TEST(PacketSizeEstimate, UnitGranularityIsPricedAsWholeUnits) {
  const size_t rows = 8, cols = 100, block = 32;
  std::mt19937 rng(3);
  std::vector<float> a(rows * cols);
  for (float& v : a) v = std::uniform_real_distribution<float>(0.1f, 1.0f)(rng);
  auto map = SensitivityMap::Create({.num_neurons = cols, .block = block});
  ASSERT_TRUE(map.ok());
  std::vector<float> unit_values = {0.9f, 1.0f, 0.8f, 0.1f};  // the partial unit is dropped
  ASSERT_TRUE(map->Assign(unit_values).ok());
  auto router = Router::Create({.scoring = Scoring::kSensitivity});
  ASSERT_TRUE(router.ok());
  for (double keep : {0.25, 0.5, 0.75, 1.0}) {
    const Contract contract{.keep = keep,
                            .keep_full = 1.0,
                            .full_codec = ValueCodec::kFp16,
                            .granularity = Granularity::kUnit};
    RoutedTensor routed;
    std::vector<uint8_t> forward, backward;
    ASSERT_TRUE(router->Route({a.data(), rows, cols}, &*map, contract, 0, &routed).ok());
    ASSERT_TRUE(EncodeActivation(routed, contract, {}, {}, &forward).ok());
    std::vector<float> grad(routed.num_kept(), 0.5f);
    ASSERT_TRUE(EncodeGradientValues(routed, grad, ValueCodec::kFp16, {}, {}, &backward).ok());
    const double real = static_cast<double>(forward.size() + backward.size());
    const double estimate = EstimateStepBytes(contract, rows, cols, true, ValueCodec::kFp16, block);
    EXPECT_GE(estimate, real) << "keep " << keep;
    EXPECT_LE(estimate, 1.3 * real) << "keep " << keep;
  }
}

TEST(PacketSizeEstimate, EstimateStepBytesAgreesWithEncodedSizesWithin3Percent) {
  std::mt19937 rng(2024);
  struct Case {
    double keep, keep_full;
    ValueCodec full, lossy;
    RestCodec rest;
    double tolerance;
  };
  const std::vector<Case> cases = {
      {0.01, 1.0, ValueCodec::kFp32, ValueCodec::kInt8, RestCodec::kDrop, 0.03},
      {0.03, 1.0, ValueCodec::kFp16, ValueCodec::kInt8, RestCodec::kDrop, 0.03},
      {0.05, 0.5, ValueCodec::kFp32, ValueCodec::kInt8, RestCodec::kDrop, 0.03},
      {0.10, 0.5, ValueCodec::kFp16, ValueCodec::kInt4, RestCodec::kDrop, 0.03},
      {0.25, 0.25, ValueCodec::kBf16, ValueCodec::kInt8, RestCodec::kDrop, 0.03},
      {0.50, 0.5, ValueCodec::kFp32, ValueCodec::kInt4, RestCodec::kSign1, 0.03},
      {0.90, 1.0, ValueCodec::kFp16, ValueCodec::kInt8, RestCodec::kDrop, 0.03},
  };
  const uint32_t rows = 64, cols = 1024;
  for (const Case& c : cases) {
    Contract contract;
    contract.keep = c.keep;
    contract.keep_full = c.keep_full;
    contract.full_codec = c.full;
    contract.lossy_codec = c.lossy;
    contract.rest = c.rest;
    const auto k = static_cast<uint32_t>(KeptCount(cols, c.keep));
    const auto full = static_cast<uint32_t>(FullCount(k, c.keep_full));
    const RoutedTensor t = MakeRouted(rows, cols, k, full, Granularity::kElement, c.rest, rng);
    std::vector<uint8_t> forward, backward;
    ASSERT_TRUE(EncodeActivation(t, contract, {}, {}, &forward).ok());
    std::vector<float> grad(t.num_kept(), 0.5f);
    ASSERT_TRUE(EncodeGradientValues(t, grad, ValueCodec::kFp16, {}, {}, &backward).ok());
    const double est_fwd = EstimateStepBytes(contract, rows, cols, false);
    const double est_both = EstimateStepBytes(contract, rows, cols, true, ValueCodec::kFp16);
    const double real_both = static_cast<double>(forward.size() + backward.size());
    std::printf(
        "[ estimate ] keep %.2f full %.2f %s/%s %s: encoded %zu, estimated %.0f (%+.2f%%); "
        "with gradient %.0f vs %.0f (%+.2f%%)\n",
        c.keep, c.keep_full, Traits(c.full).name.data(), Traits(c.lossy).name.data(),
        RestCodecName(c.rest).data(), forward.size(), est_fwd,
        100.0 * (est_fwd / static_cast<double>(forward.size()) - 1), real_both, est_both,
        100.0 * (est_both / real_both - 1));
    EXPECT_NEAR(est_fwd / static_cast<double>(forward.size()), 1.0, c.tolerance);
    EXPECT_NEAR(est_both / real_both, 1.0, c.tolerance);
  }
}

}  // namespace
}  // namespace sparselink
