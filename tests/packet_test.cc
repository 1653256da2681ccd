// The packet as a whole (wire format v1): golden packets with their exact bytes, the label and
// kind every packet carries, and the packet sizes the negotiator's cost model prices. The other
// packet tests follow the codec's files: packet_roundtrip_test, encode_activation_test,
// gradient_packet_test, control_packets_test, packet_parse_test, packet_parallel_test and
// index_codecs_test.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "packet_test_util.hpp"
#include "sparselink/codec.hpp"

namespace sparselink::packet_test {
namespace {

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
}  // namespace sparselink::packet_test
