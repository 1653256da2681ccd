// Resource limits (docs/limits.md): every configured maximum refuses an input above it with
// resource_exhausted, naming the field and the limit, before the input's size is allocated.
// One test per refusal the other unit tests do not already pin, plus the documented defaults.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cli/inspect.hpp"
#include "sparselink/codec.hpp"
#include "sparselink/link.hpp"
#include "sparselink/routing.hpp"
#include "sparselink/sensitivity.hpp"

namespace sparselink {
namespace {

using std::chrono::milliseconds;

bool Contains(const Status& s, const std::string& part) {
  return s.message().find(part) != std::string::npos;
}

// A routed 4 x 1000 activation, keep 50 %, fp32 values (so the packet is a few KiB).
RoutedTensor Routed(const Contract& contract) {
  std::vector<float> a(4 * 1000);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 37) - 18.0f;
  auto router = Router::Create({.scoring = Scoring::kMagnitude});
  auto routed = router->Route({a.data(), 4, 1000}, nullptr, contract, 0);
  EXPECT_TRUE(routed.ok()) << routed.status().ToString();
  return std::move(routed).value();
}

const Contract kContract{.keep = 0.5,
                         .keep_full = 1.0,
                         .full_codec = ValueCodec::kFp32,
                         .lossy_codec = ValueCodec::kFp32};

TEST(Limits, DefaultsAreTheDocumentedOnes) {
  EXPECT_EQ(DecodeLimits{}.max_packet_bytes, uint64_t{1} << 30);
  EXPECT_EQ(DecodeLimits{}.max_entries, uint64_t{1} << 31);
  EXPECT_EQ(LinkOptions{}.max_packet_bytes, uint64_t{1} << 30);
  EXPECT_EQ(LinkOptions{}.max_queued_packets, 64u);
  EXPECT_EQ(kMaxSensitivityNeurons, size_t{1} << 28);
}

TEST(Limits, EveryDecoderRefusesAPacketAboveMaxPacketBytes) {
  const RoutedTensor routed = Routed(kContract);
  std::vector<uint8_t> activation, gradient, summary, contract;
  ASSERT_TRUE(EncodeActivation(routed, kContract, {}, {}, &activation).ok());
  std::vector<float> values(routed.values.size(), 0.5f);
  ASSERT_TRUE(EncodeGradientValues(routed, values, ValueCodec::kFp32, {}, {}, &gradient).ok());
  ASSERT_TRUE(EncodeSummary(std::vector<float>(1000, 0.25f), {}, &summary).ok());
  ASSERT_TRUE(EncodeContract(kContract, {}, &contract).ok());
  const auto refused = [](const Status& s, size_t size) {
    EXPECT_EQ(s.code(), ErrorCode::kResourceExhausted) << s.ToString();
    EXPECT_TRUE(Contains(
        s, "packet size = " + std::to_string(size) + ": exceeds limits.max_packet_bytes = 100"))
        << s.ToString();
  };
  const DecodeLimits limits{.max_packet_bytes = 100};
  refused(DecodeActivation(activation, limits).status(), activation.size());
  refused(DecodeGradientValues(gradient, routed, limits).status(), gradient.size());
  refused(DecodeSummary(summary, limits).status(), summary.size());
  refused(InspectPacket(activation, limits).status(), activation.size());
  // The contract packet is 112 bytes: refused at 100, accepted at its size.
  refused(DecodeContract(contract, limits).status(), contract.size());
  EXPECT_TRUE(DecodeContract(contract, {.max_packet_bytes = contract.size()}).ok());
  EXPECT_TRUE(DecodeActivation(activation, {.max_packet_bytes = activation.size()}).ok());
}

TEST(Limits, GradientAndSummaryRefuseAShapeAboveMaxEntries) {
  const RoutedTensor routed = Routed(kContract);
  std::vector<uint8_t> gradient, summary;
  std::vector<float> values(routed.values.size(), 0.5f);
  ASSERT_TRUE(EncodeGradientValues(routed, values, ValueCodec::kFp32, {}, {}, &gradient).ok());
  ASSERT_TRUE(EncodeSummary(std::vector<float>(1000, 0.25f), {}, &summary).ok());
  Status s = DecodeGradientValues(gradient, routed, {.max_entries = 3999}).status();
  EXPECT_EQ(s.code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(Contains(s, "header.rows*cols = 4000: exceeds limits.max_entries = 3999"))
      << s.ToString();
  s = DecodeSummary(summary, {.max_entries = 999}).status();
  EXPECT_EQ(s.code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(Contains(s, "header.rows*cols = 1000")) << s.ToString();
  EXPECT_TRUE(DecodeGradientValues(gradient, routed, {.max_entries = 4000}).ok());
}

TEST(Limits, ZstdSectionsMayNotInflatePastMaxPacketBytes) {
  // All-zero gradient values compress to almost nothing: the packet is small, its raw size
  // is not. The limit applies to the raw size before any decompression buffer exists.
  const RoutedTensor routed = Routed(kContract);
  std::vector<uint8_t> gradient;
  std::vector<float> zeros(routed.values.size(), 0.0f);
  ASSERT_TRUE(
      EncodeGradientValues(routed, zeros, ValueCodec::kFp32, {}, {.zstd = true}, &gradient).ok());
  ASSERT_LT(gradient.size(), 1000u);
  const uint64_t raw = zeros.size() * 4;
  const Status s = DecodeGradientValues(gradient, routed, {.max_packet_bytes = 2000}).status();
  EXPECT_EQ(s.code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(Contains(s, "section[0].raw_bytes = " + std::to_string(raw) +
                              ": brings the sections' raw total past limits.max_packet_bytes"))
      << s.ToString();
  EXPECT_TRUE(DecodeGradientValues(gradient, routed, {.max_packet_bytes = raw + 1000}).ok());
}

TEST(Limits, LinkRefusesAnOversizedPacketBeforeCountingOrCopyingIt) {
  auto link = MakeLink({.max_packet_bytes = 1000});
  ASSERT_TRUE(link.ok());
  const Status s = (*link)->Send(std::vector<uint8_t>(1001, 7), 4004, milliseconds(10));
  EXPECT_EQ(s.code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(Contains(s, "packet.size = 1001: exceeds link.max_packet_bytes = 1000"))
      << s.ToString();
  const LinkStats stats = (*link)->stats();
  EXPECT_EQ(stats.packets_sent, 0u);
  EXPECT_EQ(stats.wire_bytes, 0u);
  EXPECT_EQ((*link)->Recv(milliseconds(0)).status().code(), ErrorCode::kTimeout);
  EXPECT_TRUE((*link)->Send(std::vector<uint8_t>(1000, 7), 4000, milliseconds(10)).ok());
}

TEST(Limits, LinkRefusesAZeroLimit) {
  auto link = MakeLink({.max_packet_bytes = 0});
  ASSERT_FALSE(link.ok());
  EXPECT_TRUE(Contains(link.status(), "link.max_packet_bytes = 0")) << link.status().ToString();
  auto queue = MakeLink({.max_queued_packets = 0});
  ASSERT_FALSE(queue.ok());
  EXPECT_TRUE(Contains(queue.status(), "link.max_queued_packets = 0"));
}

TEST(Limits, SensitivityMapRefusesTooManyNeurons) {
  auto map = SensitivityMap::Create({.num_neurons = kMaxSensitivityNeurons + 1});
  ASSERT_FALSE(map.ok());
  EXPECT_TRUE(Contains(map.status(), "num_neurons = " + std::to_string(kMaxSensitivityNeurons + 1)))
      << map.status().ToString();
}

// Files above a reader's limit are refused from their size alone: a sparse file of 1 GiB + 1
// costs no disk and is never read.
class LargeFile : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() /
            ("sparselink_limits_" +
             std::to_string(::testing::UnitTest::GetInstance()->current_test_info()->line()));
    { std::ofstream(path_).put('x'); }
    std::filesystem::resize_file(path_, (uint64_t{1} << 30) + 1);
  }
  void TearDown() override { std::filesystem::remove(path_); }
  std::filesystem::path path_;
};

TEST_F(LargeFile, InspectRefusesAFileAboveOneGiB) {
  std::ostringstream out, err;
  EXPECT_EQ(cli::RunInspect(path_.string(), false, out, err), 1);
  EXPECT_NE(err.str().find("file size = 1073741825: larger than the 1 GiB a packet may have"),
            std::string::npos)
      << err.str();
}

TEST_F(LargeFile, SensitivityMapLoadRefusesAFileLargerThanAnyMap) {
  std::filesystem::resize_file(path_, (uint64_t{1} << 31) + 200);  // above 2 * 4 * 2^28 + fixed
  auto map = SensitivityMap::Load(path_);
  ASSERT_FALSE(map.ok());
  EXPECT_TRUE(Contains(map.status(), "is larger than any map")) << map.status().ToString();
}

}  // namespace
}  // namespace sparselink
