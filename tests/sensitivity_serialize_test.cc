// The serialized SensitivityMap: bit-exact round trips, Save and Load, and every corrupted,
// truncated or absurd buffer refused by Deserialize, naming the field.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>
#include <xxhash.h>

#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "sensitivity_test_util.hpp"
#include "sparselink/sensitivity.hpp"

namespace sparselink::sensitivity_test {
namespace {

// Rewrites the XXH3-64 trailer so that a deliberately edited buffer passes the checksum and
// reaches the field checks.
void Reseal(std::vector<uint8_t>& bytes) {
  const uint64_t sum = XXH3_64bits(bytes.data(), bytes.size() - 8);
  for (int i = 0; i < 8; ++i) bytes[bytes.size() - 8 + size_t(i)] = uint8_t(sum >> (8 * i));
}

void PutU64(std::vector<uint8_t>& bytes, size_t offset, uint64_t v) {
  for (int i = 0; i < 8; ++i) bytes[offset + size_t(i)] = uint8_t(v >> (8 * i));
}

// Offsets of format version 1 (see sensitivity.cc).
constexpr size_t kOffVersion = 4, kOffNumNeurons = 8, kOffBlock = 16, kOffMode = 24, kOffAlpha = 25,
                 kOffFrozen = 50, kOffNumUnits = 51, kOffEma = 59;

SensitivityMap TrainedMap() {
  auto map = MakeMap({.num_neurons = 11,
                      .block = 3,
                      .mode = SensitivityMode::kWeighted,
                      .alpha = 0.25,
                      .ema_decay = 0.8,
                      .non_finite = OnNonFinite::kTreatAsZero});
  for (uint32_t step = 0; step < 3; ++step) {
    const auto a = RandomMatrix(4, 11, 40 + step), g = RandomMatrix(4, 11, 50 + step);
    EXPECT_TRUE(map.Update({a.data(), 4, 11}, {g.data(), 4, 11}).ok());
  }
  return map;
}

void ExpectSameMap(const SensitivityMap& x, const SensitivityMap& y) {
  EXPECT_EQ(x.num_neurons(), y.num_neurons());
  EXPECT_EQ(x.block(), y.block());
  EXPECT_EQ(x.options().mode, y.options().mode);
  EXPECT_EQ(x.options().alpha, y.options().alpha);
  EXPECT_EQ(x.options().ema_decay, y.options().ema_decay);
  EXPECT_EQ(x.options().non_finite, y.options().non_finite);
  EXPECT_EQ(x.num_updates(), y.num_updates());
  EXPECT_EQ(x.frozen(), y.frozen());
  ASSERT_EQ(x.num_units(), y.num_units());
  EXPECT_EQ(std::memcmp(x.values().data(), y.values().data(), x.num_units() * sizeof(float)), 0);
}

TEST(SensitivityMapSerialize, RoundTripIsBitExact) {
  auto map = TrainedMap();
  map.Freeze();
  const auto bytes = map.Serialize();
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 4), "SLSM");
  auto back = SensitivityMap::Deserialize(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSameMap(map, *back);
  EXPECT_EQ(back->Serialize(), bytes);
}

TEST(SensitivityMapSerialize, RestoredEmaContinuesIdentically) {
  auto map = TrainedMap();
  auto back = SensitivityMap::Deserialize(map.Serialize());
  ASSERT_TRUE(back.ok());
  const auto a = RandomMatrix(4, 11, 60), g = RandomMatrix(4, 11, 61);
  ASSERT_TRUE(map.Update({a.data(), 4, 11}, {g.data(), 4, 11}).ok());
  ASSERT_TRUE(back->Update({a.data(), 4, 11}, {g.data(), 4, 11}).ok());
  EXPECT_EQ(back->Serialize(), map.Serialize());
}

TEST(SensitivityMapSerialize, SaveLoadRoundTrip) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("sparselink_sensitivity_test_" + std::to_string(::getpid()) + ".slsm");
  auto map = TrainedMap();
  ASSERT_TRUE(map.Save(path).ok());
  auto back = SensitivityMap::Load(path);
  std::filesystem::remove(path);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSameMap(map, *back);
}

TEST(SensitivityMapSerialize, LoadMissingFileNamesPath) {
  auto back = SensitivityMap::Load("/nonexistent/dir/map.slsm");
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.status().code(), ErrorCode::kIo);
  EXPECT_TRUE(Contains(back.status(), "/nonexistent/dir/map.slsm")) << back.status().message();
}

TEST(SensitivityMapSerialize, SaveToMissingDirectoryNamesPath) {
  auto map = TrainedMap();
  Status s = map.Save("/nonexistent/dir/map.slsm");
  EXPECT_EQ(s.code(), ErrorCode::kIo);
  EXPECT_TRUE(Contains(s, "/nonexistent/dir/map.slsm")) << s.message();
}

TEST(SensitivityMapSerialize, LoadOfCorruptFileNamesPath) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("sparselink_sensitivity_bad_" + std::to_string(::getpid()) + ".slsm");
  auto bytes = TrainedMap().Serialize();
  bytes[kOffEma] ^= 1;
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  }
  auto back = SensitivityMap::Load(path);
  std::filesystem::remove(path);
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(back.status(), path.string())) << back.status().message();
  EXPECT_TRUE(Contains(back.status(), "checksum")) << back.status().message();
}

TEST(SensitivityMapDeserialize, EveryTruncationIsAnError) {
  const auto bytes = TrainedMap().Serialize();
  for (size_t len = 0; len < bytes.size(); ++len) {
    auto back = SensitivityMap::Deserialize(std::span(bytes).first(len));
    ASSERT_FALSE(back.ok()) << "length " << len;
    EXPECT_EQ(back.status().code(), ErrorCode::kCorruptPacket) << back.status().ToString();
  }
}

TEST(SensitivityMapDeserialize, EveryFlippedBitIsAnError) {
  const auto bytes = TrainedMap().Serialize();
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      auto bad = bytes;
      bad[i] ^= uint8_t(1u << bit);
      ASSERT_FALSE(SensitivityMap::Deserialize(bad).ok()) << "byte " << i << " bit " << bit;
    }
  }
}

TEST(SensitivityMapDeserialize, TrailingBytesAreAnError) {
  auto bytes = TrainedMap().Serialize();
  bytes.insert(bytes.end() - 8, {0, 0, 0, 0});
  Reseal(bytes);
  auto back = SensitivityMap::Deserialize(bytes);
  ASSERT_FALSE(back.ok());
  EXPECT_TRUE(Contains(back.status(), "num_units")) << back.status().message();
}

TEST(SensitivityMapDeserialize, WrongMagicIsNamed) {
  auto bytes = TrainedMap().Serialize();
  bytes[0] = 'X';
  auto back = SensitivityMap::Deserialize(bytes);
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(back.status(), "sensitivity_map.magic")) << back.status().message();
}

TEST(SensitivityMapDeserialize, BadChecksumIsNamed) {
  auto bytes = TrainedMap().Serialize();
  bytes.back() ^= 0x80;
  auto back = SensitivityMap::Deserialize(bytes);
  ASSERT_FALSE(back.ok());
  EXPECT_TRUE(Contains(back.status(), "sensitivity_map.checksum")) << back.status().message();
}

TEST(SensitivityMapDeserialize, UnknownFormatVersionIsUnsupported) {
  auto bytes = TrainedMap().Serialize();
  bytes[kOffVersion] = 2;
  Reseal(bytes);
  auto back = SensitivityMap::Deserialize(bytes);
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.status().code(), ErrorCode::kUnsupported);
  EXPECT_TRUE(Contains(back.status(), "format_version = 2")) << back.status().message();
}

TEST(SensitivityMapDeserialize, AbsurdSizesAreRejectedBeforeAllocating) {
  const auto good = TrainedMap().Serialize();
  struct Case {
    size_t offset;
    uint64_t value;
    const char* field;
  };
  const Case cases[] = {
      {kOffNumNeurons, uint64_t{1} << 40, "sensitivity_map.num_neurons = 1099511627776"},
      {kOffNumNeurons, 0, "sensitivity_map.num_neurons = 0"},
      {kOffNumNeurons, kMaxSensitivityNeurons, "sensitivity_map.num_units"},
      {kOffBlock, 0, "sensitivity_map.block = 0"},
      {kOffBlock, 1000, "sensitivity_map.block = 1000"},
      {kOffNumUnits, ~uint64_t{0}, "sensitivity_map.num_units"},
      {kOffNumUnits, 5, "sensitivity_map.num_units = 5"},
  };
  for (const Case& c : cases) {
    auto bytes = good;
    PutU64(bytes, c.offset, c.value);
    Reseal(bytes);
    auto back = SensitivityMap::Deserialize(bytes);
    ASSERT_FALSE(back.ok()) << c.field;
    EXPECT_EQ(back.status().code(), ErrorCode::kCorruptPacket);
    EXPECT_TRUE(Contains(back.status(), c.field)) << back.status().message();
  }
  // Units consistent with a huge num_neurons but no bytes behind them.
  auto bytes = good;
  PutU64(bytes, kOffNumNeurons, kMaxSensitivityNeurons);
  PutU64(bytes, kOffBlock, 1);
  PutU64(bytes, kOffNumUnits, kMaxSensitivityNeurons);
  Reseal(bytes);
  auto back = SensitivityMap::Deserialize(bytes);
  ASSERT_FALSE(back.ok());
  EXPECT_TRUE(Contains(back.status(), "needs")) << back.status().message();
}

TEST(SensitivityMapDeserialize, BadFieldValuesAreNamed) {
  const auto good = TrainedMap().Serialize();
  {
    auto bytes = good;
    bytes[kOffMode] = 9;
    Reseal(bytes);
    auto back = SensitivityMap::Deserialize(bytes);
    ASSERT_FALSE(back.ok());
    EXPECT_TRUE(Contains(back.status(), "mode = 9")) << back.status().message();
  }
  {
    auto bytes = good;
    const double nan = std::numeric_limits<double>::quiet_NaN();
    PutU64(bytes, kOffAlpha, std::bit_cast<uint64_t>(nan));
    Reseal(bytes);
    auto back = SensitivityMap::Deserialize(bytes);
    ASSERT_FALSE(back.ok());
    EXPECT_TRUE(Contains(back.status(), "alpha")) << back.status().message();
  }
  {
    auto bytes = good;
    bytes[kOffFrozen] = 2;
    Reseal(bytes);
    auto back = SensitivityMap::Deserialize(bytes);
    ASSERT_FALSE(back.ok());
    EXPECT_TRUE(Contains(back.status(), "frozen = 2")) << back.status().message();
  }
  {
    auto bytes = good;
    const uint32_t bits = std::bit_cast<uint32_t>(1.5f);
    for (int i = 0; i < 4; ++i) bytes[kOffEma + size_t(i)] = uint8_t(bits >> (8 * i));
    Reseal(bytes);
    auto back = SensitivityMap::Deserialize(bytes);
    ASSERT_FALSE(back.ok());
    EXPECT_TRUE(Contains(back.status(), "sensitivity_map.ema[0] = 1.5")) << back.status().message();
  }
  {
    auto bytes = good;
    const size_t values_at = kOffEma + 4 * 4 + 4 * 2;  // 4 units of ema, then values[2]
    const uint32_t bits = std::bit_cast<uint32_t>(std::numeric_limits<float>::infinity());
    for (int i = 0; i < 4; ++i) bytes[values_at + size_t(i)] = uint8_t(bits >> (8 * i));
    Reseal(bytes);
    auto back = SensitivityMap::Deserialize(bytes);
    ASSERT_FALSE(back.ok());
    EXPECT_TRUE(Contains(back.status(), "sensitivity_map.values[2]")) << back.status().message();
  }
}

TEST(SensitivityMapDeserialize, EmptyAndGarbageBuffersAreErrors) {
  EXPECT_FALSE(SensitivityMap::Deserialize({}).ok());
  std::mt19937 rng(99);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<uint8_t> junk(size_t(rng() % 200));
    for (auto& b : junk) b = uint8_t(rng());
    if (junk.size() >= 4) std::memcpy(junk.data(), "SLSM", 4);
    EXPECT_FALSE(SensitivityMap::Deserialize(junk).ok());
  }
}

// Regression (found by the sensitivity fuzzer): a 75-byte file claiming 2^28 neurons in one
// block of 2^28 is a valid one-unit map; reading it must not allocate per-neuron scratch
// (2 GiB of doubles) before anyone updates it.
TEST(SensitivityMapFuzzRegression, HugeNeuronCountInOneBlockDoesNotAllocatePerNeuron) {
  auto small = SensitivityMap::Create({.num_neurons = 1});
  ASSERT_TRUE(small.ok());
  std::vector<uint8_t> bytes = small->Serialize();
  const uint64_t huge = uint64_t{1} << 28;
  for (int i = 0; i < 8; ++i) {
    bytes[8 + i] = static_cast<uint8_t>(huge >> (8 * i));   // num_neurons
    bytes[16 + i] = static_cast<uint8_t>(huge >> (8 * i));  // block
  }
  const uint64_t sum = XXH3_64bits(bytes.data(), bytes.size() - 8);
  for (int i = 0; i < 8; ++i) bytes[bytes.size() - 8 + i] = static_cast<uint8_t>(sum >> (8 * i));

  rusage before{};
  getrusage(RUSAGE_SELF, &before);
  auto map = SensitivityMap::Deserialize(bytes);
  rusage after{};
  getrusage(RUSAGE_SELF, &after);
  ASSERT_TRUE(map.ok()) << map.status().ToString();
  EXPECT_EQ(map->num_neurons(), huge);
  EXPECT_EQ(map->num_units(), 1u);
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 64 * 1024);  // KiB: far below 2 GiB
}

}  // namespace
}  // namespace sparselink::sensitivity_test
