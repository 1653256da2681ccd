// Activation packets round trip (EncodeActivation, then DecodeActivation and the fused dense
// decoders) over every codec pair, index codec, granularity, rest codec and zstd, at edge
// widths and k = 0, 1, n/3, n: one named test per width, codec pair and index codec.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "packet_test_util.hpp"
#include "sparselink/codec.hpp"

namespace sparselink::packet_test {
namespace {

// The sweep's codec pairs: every codec as the full tier's with int8 lossy ("full_<codec>"), and
// every codec as the lossy tier's with fp32 full ("lossy_<codec>"); fp32 / int8 is in both
// halves, under both names.
struct CodecPair {
  ValueCodec full, lossy;
  std::string name;
};

const std::vector<CodecPair>& CodecPairs() {
  static const std::vector<CodecPair> pairs = [] {
    std::vector<CodecPair> all;
    for (ValueCodec c : kAllCodecs) {
      all.push_back({c, ValueCodec::kInt8, "full_" + std::string(ValueCodecName(c))});
      all.push_back({ValueCodec::kFp32, c, "lossy_" + std::string(ValueCodecName(c))});
    }
    return all;
  }();
  return pairs;
}

constexpr std::array<IndexCodec, 4> kIndexCodecs = {IndexCodec::kBitmap, IndexCodec::kDeltaVarint,
                                                    IndexCodec::kSubsetBitmap, IndexCodec::kAuto};

// One named test per width, codec pair and index codec (cols, the pair's place in CodecPairs(),
// the index codec); each covers both granularities, both rest codecs, zstd off and on, and the
// edge sizes k = 0, 1, cols / 3 and cols.
using RoundTripParam = std::tuple<uint32_t, size_t, IndexCodec>;

class ActivationPacketRoundTrip : public ::testing::TestWithParam<RoundTripParam> {};

TEST_P(ActivationPacketRoundTrip, EveryCodecIndexGranularityRestAndZstd) {
  const auto [cols, pair, index] = GetParam();
  const ValueCodec full_codec = CodecPairs()[pair].full;
  const ValueCodec lossy_codec = CodecPairs()[pair].lossy;
  const uint32_t rows = 3;
  const auto index_pos = static_cast<size_t>(
      std::find(kIndexCodecs.begin(), kIndexCodecs.end(), index) - kIndexCodecs.begin());
  std::seed_seq seed{cols, static_cast<uint32_t>(pair), static_cast<uint32_t>(index_pos)};
  std::mt19937 rng(seed);
  const std::vector<uint32_t> ks = {0, 1, cols / 3, cols};
  // The cases of one width before this test's first, in the order of the loops over codec pair,
  // index codec, granularity, rest codec, zstd and k: the full share cycles along that order.
  int cases = static_cast<int>((pair * kIndexCodecs.size() + index_pos) * 2 * 2 * 2 * ks.size());
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
          const Status enc =
              EncodeActivation(routed, contract, {.boundary = 2, .contract_version = 5, .step = 99},
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
          ASSERT_TRUE(
              EncodeGradientValues(*decoded, grad, ValueCodec::kInt8, {.step = 3}, {}, &from_routed)
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

std::string RoundTripName(const ::testing::TestParamInfo<RoundTripParam>& info) {
  const auto [cols, pair, index] = info.param;
  return "cols" + std::to_string(cols) + "_" + CodecPairs()[pair].name + "_" +
         TestNamePart(IndexCodecName(index));
}

INSTANTIATE_TEST_SUITE_P(Sweep, ActivationPacketRoundTrip,
                         ::testing::Combine(::testing::Values(1u, 7u, 16u, 24u, 33u, 1024u, 4097u),
                                            ::testing::Range(size_t{0}, 2 * kAllCodecs.size()),
                                            ::testing::ValuesIn(kIndexCodecs)),
                         RoundTripName);

}  // namespace
}  // namespace sparselink::packet_test
