// The control packets (control_packets.cc): summaries of unit values in fp16 and bf16, and
// contracts, every field round-tripped and every bad one named.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "packet_test_util.hpp"
#include "sparselink/codec.hpp"

namespace sparselink::packet_test {
namespace {

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

}  // namespace
}  // namespace sparselink::packet_test
