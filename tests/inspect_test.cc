// `sparselink inspect` (src/cli/inspect.cc): text and JSON output, exit codes, and the one
// error line for unreadable or corrupt packet files and for gradient values the format forbids.
#include "cli/inspect.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "packet_test_util.hpp"
#include "sparselink/codec.hpp"

namespace sparselink {
namespace {

std::string WriteTemp(const std::string& name, const std::vector<uint8_t>& bytes) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() /
      ("sparselink_inspect_test_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  return path.string();
}

std::vector<uint8_t> SamplePacket() {
  RoutedTensor t;
  t.rows = 2;
  t.cols = 64;
  t.row_offsets = {0, 2, 3};
  t.indices = {1, 40, 63};
  t.values = {1.5f, -2.0f, 0.25f};
  t.tiers = {Tier::kFull, Tier::kLossy, Tier::kFull};
  Contract c;
  c.keep = 0.05;
  c.keep_full = 0.5;
  std::vector<uint8_t> packet;
  EXPECT_TRUE(
      EncodeActivation(t, c, {.boundary = 3, .contract_version = 4, .step = 5}, {}, &packet).ok());
  return packet;
}

struct InspectRun {
  int rc;
  std::string out, err;
};

InspectRun Inspect(const std::string& path, bool json) {
  std::ostringstream out, err;
  const int rc = cli::RunInspect(path, json, out, err);
  return {rc, out.str(), err.str()};
}

TEST(Inspect, PrintsHeaderTiersSectionsAndChecksum) {
  const std::string path = WriteTemp("ok.packet", SamplePacket());
  const InspectRun r = Inspect(path, false);
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(r.err.empty());
  for (const char* text : {"kind activation", "boundary 3, contract version 4, step 5",
                           "shape 2 x 64", "index delta-varint", "full", "int8", "tier_bits",
                           "dense fp32 bytes 512", "checksum 0x", ": ok"}) {
    EXPECT_NE(r.out.find(text), std::string::npos) << text << "\n" << r.out;
  }
  std::filesystem::remove(path);
}

TEST(Inspect, JsonIsOneObjectWithTheSameFields) {
  const std::vector<uint8_t> packet = SamplePacket();
  const std::string path = WriteTemp("json.packet", packet);
  const InspectRun r = Inspect(path, true);
  EXPECT_EQ(r.rc, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ok"], true);
  EXPECT_EQ(j["header"]["kind"], "activation");
  EXPECT_EQ(j["header"]["count_full"], 2);
  EXPECT_EQ(j["wire_bytes"], packet.size());
  EXPECT_EQ(j["dense_bytes"], 512);
  EXPECT_EQ(j["checksum_status"], "ok");
  EXPECT_EQ(j["sections"].size(), 4u);
  EXPECT_EQ(j["sections"][0]["id"], "index");
  EXPECT_EQ(j["header"]["micro_batch"], 0);
  std::filesystem::remove(path);
}

TEST(Inspect, CorruptPacketPrintsHeaderAndOneErrorLine) {
  std::vector<uint8_t> packet = SamplePacket();
  packet[packet.size() / 2] ^= 0xff;
  const std::string path = WriteTemp("bad.packet", packet);
  const InspectRun r = Inspect(path, false);
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("kind activation"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(": BAD"), std::string::npos) << r.out;
  EXPECT_EQ(r.err, "sparselink inspect: " + path +
                       ": corrupt_packet: " + r.err.substr(r.err.find("checksum = ")));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1);
  const InspectRun j = Inspect(path, true);
  EXPECT_EQ(j.rc, 1);
  EXPECT_EQ(nlohmann::json::parse(j.out)["checksum_status"], "BAD");
  std::filesystem::remove(path);
}

TEST(Inspect, UnreadableFilesNameThePath) {
  InspectRun r = Inspect("/no/such/sparselink.packet", false);
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err.rfind("sparselink inspect: /no/such/sparselink.packet: io: ", 0), 0u) << r.err;
  EXPECT_TRUE(r.out.empty());
  r = Inspect(std::filesystem::temp_directory_path().string(), false);
  EXPECT_NE(r.err.find("not a regular file"), std::string::npos) << r.err;
  const std::string empty = WriteTemp("empty.packet", {});
  r = Inspect(empty, false);
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("packet size = 0"), std::string::npos) << r.err;
  std::filesystem::remove(empty);
}

TEST(Inspect, ContractAndSummaryPacketsDecode) {
  std::vector<uint8_t> packet;
  ASSERT_TRUE(EncodeContract(Contract{}, {.boundary = 1}, &packet).ok());
  std::string path = WriteTemp("contract.packet", packet);
  InspectRun r = Inspect(path, false);
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("contract b0 v0 keep=100.00%"), std::string::npos) << r.out;
  std::filesystem::remove(path);
  ASSERT_TRUE(EncodeSummary(std::vector<float>{1, 2, 3}, {}, &packet).ok());
  path = WriteTemp("summary.packet", packet);
  r = Inspect(path, false);
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("summary units"), std::string::npos) << r.out;
  std::filesystem::remove(path);
}

// A gradient packet decodes only with its activation's mask, but inspect runs every check that
// needs none: a packet holding a forbidden value (int8 -128, int4 -8, a non-zero int4 padding
// nibble, a negative or NaN scale, a non-finite value) is one error line naming the field and
// the value, exit 1; the same packet untouched passes. Inspect accepted all of these before.
TEST(Inspect, GradientPacketWithAForbiddenValueIsRefused) {
  std::mt19937 rng(8);
  for (Granularity g : {Granularity::kElement, Granularity::kUnit}) {
    const RoutedTensor mask =
        packet_test::MakeRouted(packet_test::kForbiddenRows, 8, 3, 3, g, RestCodec::kDrop, rng);
    const std::vector<float> values = {0.5f, -1.0f, 2.0f, 0.25f, -3.0f, 1.0f, 0.0f, 4.0f, -0.5f};
    for (const packet_test::ForbiddenValue& f : packet_test::ForbiddenValues()) {
      SCOPED_TRACE(f.name);
      std::vector<uint8_t> packet;
      ASSERT_TRUE(EncodeGradientValues(mask, values, f.codec, {.step = 9}, {}, &packet).ok());
      const std::string good = WriteTemp("gradient.packet", packet);
      InspectRun r = Inspect(good, false);
      EXPECT_EQ(r.rc, 0) << r.err;
      EXPECT_NE(r.out.find("kind gradient"), std::string::npos) << r.out;
      EXPECT_NE(r.out.find("values checked without the mask"), std::string::npos) << r.out;
      const std::string bad =
          WriteTemp("forbidden.packet", packet_test::WithForbiddenValue(packet, f));
      r = Inspect(bad, false);
      EXPECT_EQ(r.rc, 1);
      EXPECT_EQ(r.err.rfind("sparselink inspect: " + bad +
                                ": corrupt_packet: gradient_values: " + std::string(f.error) + ": ",
                            0),
                0u)
          << r.err;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1);
      EXPECT_NE(r.out.find("kind gradient"), std::string::npos) << r.out;  // still shown
      r = Inspect(bad, true);
      EXPECT_EQ(r.rc, 1);
      EXPECT_EQ(nlohmann::json::parse(r.out)["ok"], false);
      std::filesystem::remove(good);
      std::filesystem::remove(bad);
    }
  }
}

}  // namespace
}  // namespace sparselink
