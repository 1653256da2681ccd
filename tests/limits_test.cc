// Resource limits (docs/limits.md): every configured maximum refuses an input above it with
// resource_exhausted, naming the field and the limit, before the input's size is allocated.
// One test per refusal the other unit tests do not already pin, plus the documented defaults.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "cli/inspect.hpp"
#include "codec/own_mask.hpp"
#include "packet_test_util.hpp"
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
  EXPECT_EQ(DecodeLimits{}.max_expansion, 1024u);
  EXPECT_EQ(DecodeLimits{}.expansion_floor_bytes, uint64_t{16} << 20);
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

// An activation packet of rows x cols, nothing kept, whose bitmap index (rows * cols / 8 zero
// bytes) is one zstd frame, built by hand: streamed from a small zero buffer, so the raw section
// it claims is never held whole. A few KiB that, before the decode budget, made a decoder
// allocate the raw section and its arrays.
std::vector<uint8_t> ZstdBomb(uint32_t rows, uint32_t cols) {
  using packet_test::Store32;
  using packet_test::Store64;
  const uint64_t raw = (uint64_t{rows} * cols + 7) / 8;
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  EXPECT_FALSE(ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(cctx, raw)));
  const std::vector<uint8_t> zeros(1 << 20, 0);
  std::vector<uint8_t> frame, buffer(ZSTD_CStreamOutSize());
  for (uint64_t left = raw; left > 0;) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(left, zeros.size()));
    left -= chunk;
    ZSTD_inBuffer in{zeros.data(), chunk, 0};
    const ZSTD_EndDirective mode = left == 0 ? ZSTD_e_end : ZSTD_e_continue;
    for (bool done = false; !done;) {
      ZSTD_outBuffer out{buffer.data(), buffer.size(), 0};
      const size_t pending = ZSTD_compressStream2(cctx, &out, &in, mode);
      EXPECT_FALSE(ZSTD_isError(pending));
      frame.insert(frame.end(), buffer.data(), buffer.data() + out.pos);
      done = ZSTD_isError(pending) || (mode == ZSTD_e_end ? pending == 0 : in.pos == in.size);
    }
  }
  ZSTD_freeCCtx(cctx);
  std::vector<uint8_t> p(64 + 12 + frame.size() + 8, 0);
  Store32(p, 0, kPacketMagic);
  p[4] = kWireFormatVersion;
  p[7] = 1;  // bitmap index; kind activation, element granularity, fp32 full tier
  p[9] = 3;  // int8 lossy tier
  p[11] = 1;
  Store32(p, 20, rows);
  Store32(p, 24, cols);
  Store64(p, 56, p.size());
  p[64] = 1;  // section: index, zstd
  p[65] = 1;
  Store32(p, 68, static_cast<uint32_t>(frame.size()));
  Store32(p, 72, static_cast<uint32_t>(raw));
  std::copy(frame.begin(), frame.end(), p.begin() + 76);
  packet_test::Reseal(p);
  return p;
}

// The outside finding (issue 21): an 8 KiB packet whose zstd bitmap claims 2^31 entries (256 MiB
// of raw index, as many KeptMask bits) is within max_packet_bytes and max_entries. The decode
// budget refuses it before any payload is read: InspectPacket, which reads none, refuses it
// alike, and so does `sparselink inspect`.
TEST(Limits, AZstdBombIsRefusedBeforeDecompression) {
  const std::vector<uint8_t> bomb = ZstdBomb(1u << 16, 1u << 15);
  ASSERT_LT(bomb.size(), 16u << 10);
  const Status inspected = InspectPacket(bomb).status();
  EXPECT_EQ(inspected.code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(Contains(inspected, "zstd sections' raw 268435456 + decoded arrays "))
      << inspected.ToString();
  EXPECT_TRUE(Contains(inspected,
                       "limits.max_expansion = 1024 x packet size " + std::to_string(bomb.size())))
      << inspected.ToString();
  EXPECT_TRUE(Contains(inspected, "decoded bytes = ")) << inspected.ToString();
  EXPECT_EQ(DecodeActivation(bomb).status().ToString(), inspected.ToString());
  const std::filesystem::path path = std::filesystem::temp_directory_path() /
                                     ("sparselink_limits_bomb_" + std::to_string(::getpid()));
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bomb.data()),
              static_cast<std::streamsize>(bomb.size()));
  }
  std::ostringstream out, err;
  EXPECT_EQ(cli::RunInspect(path.string(), false, out, err), 1);
  EXPECT_NE(err.str().find("resource_exhausted: decoded bytes = "), std::string::npos) << err.str();
  std::filesystem::remove(path);
  // The same form at a size that fits the budget decodes (the bomb is the size, not the form).
  const std::vector<uint8_t> small = ZstdBomb(64, 4096);
  EXPECT_TRUE(DecodeActivation(small).ok());
}

// Every decoder of a kind refuses a packet whose decoded bytes (PacketInfo::decoded_bytes)
// exceed the budget by one byte and accepts it at the budget, through either limit: the floor
// (max_expansion 0) and the multiple of the packet size (floor 0).
TEST(Limits, EveryDecoderRefusesAPacketPastItsDecodeBudget) {
  const RoutedTensor routed = Routed(kContract);
  std::vector<uint8_t> activation, gradient, summary, contract;
  ASSERT_TRUE(EncodeActivation(routed, kContract, {}, {.zstd = true}, &activation).ok());
  const std::vector<float> zeros(routed.values.size(), 0.0f);
  ASSERT_TRUE(
      EncodeGradientValues(routed, zeros, ValueCodec::kInt8, {}, {.zstd = true}, &gradient).ok());
  ASSERT_TRUE(EncodeSummary(std::vector<float>(1000, 0.25f), {}, &summary).ok());
  ASSERT_TRUE(EncodeContract(kContract, {}, &contract).ok());
  std::vector<float> dense(4 * 1000), kept;
  const MutableMatrix out{dense.data(), 4, 1000};
  KeptMask mask;
  using Decoders = std::vector<std::function<Status(std::span<const uint8_t>, DecodeLimits)>>;
  const Decoders activation_decoders = {
      [](auto p, auto l) { return InspectPacket(p, l).status(); },
      [](auto p, auto l) { return DecodeActivation(p, l).status(); },
      [&](auto p, auto l) { return DecodeActivationToDense(p, out, l); },
      [&](auto p, auto l) { return DecodeActivationToDenseAndMask(p, out, &mask, l); }};
  const Decoders gradient_decoders = {
      [](auto p, auto l) { return CheckGradientValues(p, l); },
      [&](auto p, auto l) { return DecodeGradientValues(p, routed, l).status(); },
      [&](auto p, auto l) { return DecodeGradientToDense(p, routed, out, &kept, l); },
      [&](auto p, auto l) {
        return internal::DecodeGradientToDenseTrustedMask(p, routed, out, &kept, l, nullptr);
      }};
  const Decoders summary_decoders = {[](auto p, auto l) { return DecodeSummary(p, l).status(); }};
  using Case = std::pair<const std::vector<uint8_t>*, const Decoders*>;
  for (const auto& [packet, decoders] : std::vector<Case>{{&activation, &activation_decoders},
                                                          {&gradient, &gradient_decoders},
                                                          {&summary, &summary_decoders}}) {
    const uint64_t size = packet->size();
    const uint64_t decoded = InspectPacket(*packet)->decoded_bytes;
    ASSERT_GT(decoded, size);
    for (const auto& decode : *decoders) {
      const Status refused =
          decode(*packet, {.max_expansion = 0, .expansion_floor_bytes = decoded - 1});
      EXPECT_EQ(refused.code(), ErrorCode::kResourceExhausted) << refused.ToString();
      EXPECT_TRUE(
          Contains(refused, "decoded bytes = " + std::to_string(decoded) + ": ") &&
          Contains(refused, "limits.expansion_floor_bytes = " + std::to_string(decoded - 1)))
          << refused.ToString();
      EXPECT_TRUE(decode(*packet, {.max_expansion = 0, .expansion_floor_bytes = decoded}).ok());
      const uint64_t times = decoded / size;
      if (decoded % size != 0) {
        EXPECT_EQ(decode(*packet, {.max_expansion = times, .expansion_floor_bytes = 0}).code(),
                  ErrorCode::kResourceExhausted);
      }
      EXPECT_TRUE(decode(*packet, {.max_expansion = times + 1, .expansion_floor_bytes = 0}).ok());
    }
  }
  // A contract decodes to no array: nothing to refuse.
  EXPECT_TRUE(DecodeContract(contract, {.max_expansion = 0, .expansion_floor_bytes = 0}).ok());
}

// decoded_bytes bounds what the decoders really hold: the routed tensor's arrays, the KeptMask
// and the zstd sections' raw bytes, for packets of every section kind.
TEST(Limits, DecodedBytesBoundWhatTheDecodersAllocate) {
  std::mt19937 rng(3);
  for (Granularity g : {Granularity::kElement, Granularity::kUnit}) {
    for (IndexCodec index :
         {IndexCodec::kBitmap, IndexCodec::kDeltaVarint, IndexCodec::kSubsetBitmap}) {
      const RoutedTensor t = packet_test::MakeRouted(37, 200, 30, 11, g, RestCodec::kSign1, rng);
      std::vector<uint8_t> packet;
      ASSERT_TRUE(
          EncodeActivation(t, packet_test::MakeContract(t, ValueCodec::kFp16, ValueCodec::kInt4),
                           {}, {.index_codec = index, .zstd = true}, &packet)
              .ok());
      const PacketInfo info = *InspectPacket(packet);
      auto decoded = DecodeActivation(packet);
      ASSERT_TRUE(decoded.ok());
      std::vector<float> dense(37 * 200);
      KeptMask mask;
      ASSERT_TRUE(DecodeActivationToDenseAndMask(packet, {dense.data(), 37, 200}, &mask).ok());
      uint64_t held = 4 * decoded->row_offsets.size() + 4 * decoded->indices.size() +
                      4 * decoded->values.size() + decoded->tiers.size() +
                      decoded->rest_bits.size() + 4 * decoded->rest_centroids.size() +
                      mask.bits.size() + 8 * mask.row_offsets.size();
      for (const SectionInfo& s : info.sections) held += s.zstd ? s.raw_bytes : 0;
      EXPECT_LE(held, info.decoded_bytes);
    }
  }
}

// The defaults admit legitimate packets far past the floor: a large activation of ReLU-like
// values at keep 100 % in int4 with zstd (the kind of packet with the highest expansion measured,
// docs/limits.md) by the multiple; and a gradient of zeros (which zstd shrinks thousands of times)
// by the floor, which the multiple alone would refuse.
TEST(Limits, LegitimateLargePacketsDecodeUnderTheDefaults) {
  const size_t rows = 512, cols = 4096;
  std::vector<float> a(rows * cols);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = std::max(0.0f, static_cast<float>((i * 2654435761u >> 13) % 17) - 8.0f);
  }
  const Contract all{.keep = 1.0, .keep_full = 0.0, .lossy_codec = ValueCodec::kInt4};
  auto router = Router::Create({.scoring = Scoring::kMagnitude});
  auto routed = router->Route({a.data(), rows, cols}, nullptr, all, 0);
  ASSERT_TRUE(routed.ok());
  std::vector<uint8_t> packet;
  ASSERT_TRUE(EncodeActivation(*routed, all, {}, {.zstd = true}, &packet).ok());
  const PacketInfo info = *InspectPacket(packet);
  EXPECT_GT(info.decoded_bytes, DecodeLimits{}.expansion_floor_bytes);
  std::vector<float> dense(rows * cols);
  EXPECT_TRUE(DecodeActivationToDense(packet, {dense.data(), rows, cols}).ok());
  EXPECT_TRUE(DecodeActivation(packet).ok());

  std::mt19937 rng(4);
  const RoutedTensor mask =
      packet_test::MakeRouted(256, 1024, 1024, 1024, Granularity::kElement, RestCodec::kDrop, rng);
  std::vector<uint8_t> gradient;
  const std::vector<float> zeros(mask.values.size(), 0.0f);
  ASSERT_TRUE(
      EncodeGradientValues(mask, zeros, ValueCodec::kFp32, {}, {.zstd = true}, &gradient).ok());
  const uint64_t decoded = InspectPacket(gradient)->decoded_bytes;
  EXPECT_GT(decoded, DecodeLimits{}.max_expansion * gradient.size());
  EXPECT_TRUE(DecodeGradientValues(gradient, mask).ok());
  EXPECT_EQ(DecodeGradientValues(gradient, mask, {.expansion_floor_bytes = 0}).status().code(),
            ErrorCode::kResourceExhausted);
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
