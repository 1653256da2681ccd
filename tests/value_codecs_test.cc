// Value codecs: known bit patterns, round trips within the stated error of kValueCodecTraits,
// exact stream sizes, and refusal of malformed streams.
#include "codec/value_codecs.hpp"

#include <gtest/gtest.h>
#include <omp.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "simd/scalar.hpp"
#include "sparselink/codec.hpp"

namespace sparselink {
namespace {

using simd::ScalarBf16;
using simd::ScalarBf16ToFloat;
using simd::ScalarHalf;
using simd::ScalarHalfToFloat;

constexpr std::array<ValueCodec, kNumValueCodecs> kAllCodecs = {
    ValueCodec::kFp32, ValueCodec::kFp16, ValueCodec::kBf16, ValueCodec::kInt8, ValueCodec::kInt4};

TEST(ValueCodecFp16, KnownBitPatterns) {
  EXPECT_EQ(ScalarHalf(1.0f), 0x3C00);
  EXPECT_EQ(ScalarHalf(-2.0f), 0xC000);
  EXPECT_EQ(ScalarHalf(0.5f), 0x3800);
  EXPECT_EQ(ScalarHalf(0.0f), 0x0000);
  EXPECT_EQ(ScalarHalf(-0.0f), 0x8000);
  EXPECT_EQ(ScalarHalf(65504.0f), 0x7BFF);
  EXPECT_EQ(ScalarHalf(0x1p-14f), 0x0400);                    // smallest normal
  EXPECT_EQ(ScalarHalf(0x1p-24f), 0x0001);                    // smallest subnormal
  EXPECT_EQ(ScalarHalf(0x1p-25f), 0x0000);                    // tie between 0 and 2^-24: even is 0
  EXPECT_EQ(ScalarHalf(0x1.8p-25f), 0x0001);                  // above the tie
  EXPECT_EQ(ScalarHalf(0x3p-25f), 0x0002);                    // 1.5 * 2^-24: tie, rounds to even 2
  EXPECT_EQ(ScalarHalf(1.0f + 0x1p-11f), 0x3C00);             // tie: even mantissa kept
  EXPECT_EQ(ScalarHalf(1.0f + 0x3p-11f), 0x3C02);             // tie: rounds up to even
  EXPECT_EQ(ScalarHalf(1.0f + 0x1p-11f + 0x1p-20f), 0x3C01);  // just above the tie
  EXPECT_EQ(ScalarHalf(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(ScalarHalf(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_EQ(ScalarHalf(std::numeric_limits<float>::quiet_NaN()) & 0x7E00, 0x7E00);
  EXPECT_EQ(ScalarHalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(ScalarHalfToFloat(0x0001), 0x1p-24f);
  EXPECT_EQ(ScalarHalfToFloat(0xFBFF), -65504.0f);
}

TEST(ValueCodecFp16, SaturatesFiniteOverflowTo65504) {
  EXPECT_EQ(ScalarHalf(65519.0f), 0x7BFF);
  EXPECT_EQ(ScalarHalf(65520.0f), 0x7BFF);  // would round to Inf under plain RNE
  EXPECT_EQ(ScalarHalf(1e6f), 0x7BFF);
  EXPECT_EQ(ScalarHalf(-1e30f), 0xFBFF);
  EXPECT_EQ(ScalarHalf(std::numeric_limits<float>::max()), 0x7BFF);
}

TEST(ValueCodecFp16, EveryFiniteHalfRoundTripsExactly) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7C00) == 0x7C00) continue;  // Inf / NaN
    ASSERT_EQ(ScalarHalf(ScalarHalfToFloat(static_cast<uint16_t>(h))), h) << std::hex << h;
  }
}

// Differential test against the compiler's _Float16 conversion (round to nearest even), the
// reference implementation, on values inside the range where saturation does not apply.
TEST(ValueCodecFp16, MatchesCompilerConversion) {
#if defined(__FLT16_MAX__)
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  int checked = 0;
  for (int i = 0; i < 2000000; ++i) {
    const float f = std::bit_cast<float>(bits(rng));
    if (!std::isfinite(f) || std::fabs(f) >= 65504.0f) continue;
    const auto ref = static_cast<_Float16>(f);
    ASSERT_EQ(ScalarHalf(f), std::bit_cast<uint16_t>(ref)) << f;
    ++checked;
  }
  EXPECT_GT(checked, 100000);
#else
  GTEST_SKIP() << "no _Float16 in this compiler";
#endif
}

TEST(ValueCodecBf16, KnownBitPatterns) {
  EXPECT_EQ(ScalarBf16(1.0f), 0x3F80);
  EXPECT_EQ(ScalarBf16(-2.0f), 0xC000);
  EXPECT_EQ(ScalarBf16(std::bit_cast<float>(0x3F808000u)), 0x3F80);  // tie, even kept
  EXPECT_EQ(ScalarBf16(std::bit_cast<float>(0x3F818000u)), 0x3F82);  // tie, up to even
  EXPECT_EQ(ScalarBf16(std::bit_cast<float>(0x3F808001u)), 0x3F81);  // above the tie
  EXPECT_EQ(ScalarBf16(std::numeric_limits<float>::max()), 0x7F7F);  // saturates
  EXPECT_EQ(ScalarBf16(-std::numeric_limits<float>::max()), 0xFF7F);
  EXPECT_EQ(ScalarBf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(ScalarBf16ToFloat(0x3F80), 1.0f);
}

TEST(ValueCodecBf16, EveryFiniteBf16RoundTripsExactly) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    if ((b & 0x7F80) == 0x7F80) continue;
    ASSERT_EQ(ScalarBf16(ScalarBf16ToFloat(static_cast<uint16_t>(b))), b) << std::hex << b;
  }
}

// The largest error one value may have after a round trip through `codec`, given the largest
// |v| of its row (for the scaled codecs) per kValueCodecTraits.
double AllowedError(ValueCodec codec, float v, float row_max) {
  const ValueCodecTraits& t = Traits(codec);
  switch (codec) {
    case ValueCodec::kFp32: return 0.0;
    case ValueCodec::kFp16:
      if (std::fabs(v) >= 65504.0f) return std::fabs(v) - 65504.0;  // saturation
      return t.max_relative_error * std::fabs(v) + 0x1p-25;         // subnormal step / 2
    case ValueCodec::kBf16: return t.max_relative_error * std::fabs(v) + 1e-45;
    case ValueCodec::kInt8:
    case ValueCodec::kInt4:  // plus the fp32 rounding of q * scale and of the scale itself
      return (t.max_relative_error + 0x1p-22) * row_max + 1e-45;
  }
  return 0.0;
}

void ExpectRoundTrip(ValueCodec codec, const std::vector<float>& values,
                     const std::vector<uint32_t>& row_counts) {
  std::vector<uint8_t> bytes;
  EncodeValues(codec, values, row_counts, &bytes);
  ASSERT_EQ(bytes.size(), ValueStreamBytes(codec, values.size(), row_counts.size()));
  std::vector<float> decoded;
  ASSERT_TRUE(DecodeValues(codec, bytes, row_counts, &decoded).ok());
  ASSERT_EQ(decoded.size(), values.size());
  size_t i = 0;
  for (size_t r = 0; r < row_counts.size(); ++r) {
    float row_max = 0;
    for (uint32_t j = 0; j < row_counts[r]; ++j)
      row_max = std::max(row_max, std::fabs(values[i + j]));
    for (uint32_t j = 0; j < row_counts[r]; ++j, ++i) {
      const double err = std::fabs(static_cast<double>(decoded[i]) - values[i]);
      ASSERT_LE(err, AllowedError(codec, values[i], row_max))
          << Traits(codec).name << " row " << r << " value " << values[i] << " -> " << decoded[i];
    }
  }
}

TEST(ValueCodecs, RoundTripWithinStatedErrorOnRandomRows) {
  std::mt19937 rng(42);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<uint32_t> count(0, 9);
  std::uniform_int_distribution<int> exponent(-20, 14);
  for (ValueCodec codec : kAllCodecs) {
    for (int trial = 0; trial < 200; ++trial) {
      std::vector<uint32_t> row_counts(1 + trial % 7);
      std::vector<float> values;
      for (uint32_t& c : row_counts) {
        c = count(rng);
        const float scale = std::ldexp(1.0f, exponent(rng));
        for (uint32_t j = 0; j < c; ++j) values.push_back(normal(rng) * scale);
      }
      ExpectRoundTrip(codec, values, row_counts);
    }
  }
}

TEST(ValueCodecs, RoundTripsEdgeRows) {
  const std::vector<std::pair<std::vector<float>, std::vector<uint32_t>>> cases = {
      {{}, {}},                              // nothing at all
      {{}, {0, 0, 0}},                       // rows, no values
      {{0, 0, 0, 0}, {4}},                   // all zeros
      {{0, 0, 3.5f}, {2, 1}},                // an all-zero row beside another
      {{-1.25f}, {1}},                       // a single value
      {{1, 2, 3}, {3}},                      // odd count (int4 padding)
      {{1, -2, 3, 0.5f, 7}, {2, 0, 3}},      // odd total, rows not byte aligned
      {{1e30f, -3e29f, 1.0f}, {3}},          // huge magnitudes
      {{1e-30f, -2e-31f, 5e-31f}, {3}},      // small magnitudes
      {{4.0f, 4.0f, -4.0f}, {3}},            // all equal magnitude
      {{1e5f, -7e4f, 65504.0f, 2.0f}, {4}},  // fp16 saturation
      {{5e-8f, 6e-5f, -1e-7f}, {3}},         // fp16 subnormals
  };
  for (ValueCodec codec : kAllCodecs) {
    for (const auto& [values, row_counts] : cases) ExpectRoundTrip(codec, values, row_counts);
  }
}

// Long fp32/fp16/bf16 streams are encoded in chunks on several threads: every byte must equal
// the one-value-at-a-time conversion (the scalar reference, not the chunked path itself), on
// any thread count, at sizes around the threshold where chunking starts (2^16 values).
TEST(ValueCodecs, LongStreamsEqualTheScalarConversionOnAnyThreadCount) {
  struct RestoreThreads {
    int threads = omp_get_max_threads();
    ~RestoreThreads() { omp_set_num_threads(threads); }
  } restore;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 100.0f);
  for (size_t n :
       {(size_t{1} << 16) - 1, size_t{1} << 16, (size_t{1} << 16) + 1, 3 * (size_t{1} << 16) + 5}) {
    std::vector<float> values(n);
    for (float& v : values) v = normal(rng);
    values[7] = 1e-7f;     // fp16 subnormal
    values[n - 1] = 7e4f;  // fp16 saturation, in the last chunk
    const std::vector<uint32_t> counts = {static_cast<uint32_t>(n - 1000), 1000};
    for (ValueCodec codec : {ValueCodec::kFp32, ValueCodec::kFp16, ValueCodec::kBf16}) {
      std::vector<uint8_t> want(n * Traits(codec).bits_per_value / 8);
      for (size_t i = 0; i < n; ++i) {
        if (codec == ValueCodec::kFp32) {
          std::memcpy(want.data() + 4 * i, &values[i], 4);  // little-endian, like the wire
        } else {
          const uint16_t h =
              codec == ValueCodec::kFp16 ? ScalarHalf(values[i]) : ScalarBf16(values[i]);
          std::memcpy(want.data() + 2 * i, &h, 2);
        }
      }
      for (int threads : {1, 2}) {
        omp_set_num_threads(threads);
        std::vector<uint8_t> got;
        EncodeValues(codec, values, counts, &got);
        EXPECT_TRUE(got == want) << Traits(codec).name << " n " << n << " threads " << threads;
      }
    }
  }
}

TEST(ValueCodecs, Fp32IsExact) {
  const std::vector<float> values = {1.0f, -0.0f, 3.14159f, 1e-40f,
                                     std::numeric_limits<float>::max()};
  const std::vector<uint32_t> counts = {5};
  std::vector<uint8_t> bytes;
  EncodeValues(ValueCodec::kFp32, values, counts, &bytes);
  std::vector<float> decoded;
  ASSERT_TRUE(DecodeValues(ValueCodec::kFp32, bytes, counts, &decoded).ok());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(decoded[i]), std::bit_cast<uint32_t>(values[i]));
  }
}

TEST(ValueCodecs, Fp16SaturatesOnTheWire) {
  const std::vector<float> values = {1e5f, -7e4f};
  const std::vector<uint32_t> counts = {2};
  std::vector<uint8_t> bytes;
  EncodeValues(ValueCodec::kFp16, values, counts, &bytes);
  EXPECT_EQ(bytes, (std::vector<uint8_t>{0xFF, 0x7B, 0xFF, 0xFB}));
  std::vector<float> decoded;
  ASSERT_TRUE(DecodeValues(ValueCodec::kFp16, bytes, counts, &decoded).ok());
  EXPECT_EQ(decoded, (std::vector<float>{65504.0f, -65504.0f}));
}

TEST(ValueCodecs, Int8KnownBytesRoundHalfAwayFromZero) {
  // scale = 127 / 127 = 1; -63.5 rounds away from zero to -64.
  const std::vector<float> values = {127.0f, -63.5f, 0.0f, 0.5f};
  const std::vector<uint32_t> counts = {4};
  std::vector<uint8_t> bytes;
  EncodeValues(ValueCodec::kInt8, values, counts, &bytes);
  EXPECT_EQ(bytes, (std::vector<uint8_t>{0x00, 0x00, 0x80, 0x3F, 0x7F, 0xC0, 0x00, 0x01}));
}

TEST(ValueCodecs, Int4PacksLowNibbleFirstContinuouslyAcrossRows) {
  // Row 0: scale 1, q = 7. Row 1: scale 1, q = round(3.5) = 4, -7 (nibble 9).
  // Nibbles 7, 4, 9 -> bytes 0x47, 0x09 (final high nibble 0).
  const std::vector<float> values = {7.0f, 3.5f, -7.0f};
  const std::vector<uint32_t> counts = {1, 2};
  std::vector<uint8_t> bytes;
  EncodeValues(ValueCodec::kInt4, values, counts, &bytes);
  EXPECT_EQ(bytes,
            (std::vector<uint8_t>{0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x80, 0x3F, 0x47, 0x09}));
}

TEST(ValueCodecs, AllZeroRowHasScaleZero) {
  const std::vector<float> values = {0.0f, 0.0f};
  const std::vector<uint32_t> counts = {2};
  std::vector<uint8_t> bytes;
  EncodeValues(ValueCodec::kInt8, values, counts, &bytes);
  EXPECT_EQ(bytes, (std::vector<uint8_t>{0, 0, 0, 0, 0, 0}));
}

TEST(ValueCodecs, EncodeReplacesOutput) {
  std::vector<uint8_t> bytes = {1, 2, 3};
  const std::vector<float> values = {1.0f};
  const std::vector<uint32_t> counts = {1};
  EncodeValues(ValueCodec::kFp16, values, counts, &bytes);
  EXPECT_EQ(bytes, (std::vector<uint8_t>{0x00, 0x3C}));
}

TEST(ValueCodecs, DecodeRejectsWrongSizes) {
  const std::vector<float> values = {1, 2, 3};
  const std::vector<uint32_t> counts = {2, 1};
  for (ValueCodec codec : kAllCodecs) {
    std::vector<uint8_t> bytes;
    EncodeValues(codec, values, counts, &bytes);
    for (int delta : {-1, 1}) {
      std::vector<uint8_t> wrong = bytes;
      wrong.resize(bytes.size() + delta);
      std::vector<float> decoded = {9.0f};
      const Status s = DecodeValues(codec, wrong, counts, &decoded);
      EXPECT_EQ(s.code(), ErrorCode::kCorruptPacket) << Traits(codec).name;
      EXPECT_NE(s.message().find("value stream bytes = " + std::to_string(wrong.size())),
                std::string::npos)
          << s.message();
      EXPECT_NE(s.message().find("expected " + std::to_string(bytes.size())), std::string::npos)
          << s.message();
    }
  }
}

Status DecodeOne(ValueCodec codec, std::vector<uint8_t> bytes, std::vector<uint32_t> counts) {
  std::vector<float> decoded;
  return DecodeValues(codec, bytes, counts, &decoded);
}

TEST(ValueCodecs, DecodeRejectsValuesNoEncoderWrites) {
  // int8 -128.
  Status s = DecodeOne(ValueCodec::kInt8, {0x00, 0x00, 0x80, 0x3F, 0x80}, {1});
  EXPECT_EQ(s.code(), ErrorCode::kCorruptPacket);
  EXPECT_NE(s.message().find("int8 value[0] = -128"), std::string::npos) << s.message();
  // int4 nibble 8 (-8).
  s = DecodeOne(ValueCodec::kInt4, {0x00, 0x00, 0x80, 0x3F, 0x18}, {2});
  EXPECT_NE(s.message().find("int4 value[0] = -8"), std::string::npos) << s.message();
  // int4 non-zero padding nibble after an odd count.
  s = DecodeOne(ValueCodec::kInt4, {0x00, 0x00, 0x80, 0x3F, 0x11}, {1});
  EXPECT_EQ(s.code(), ErrorCode::kCorruptPacket);
  EXPECT_NE(s.message().find("int4 padding nibble = 1"), std::string::npos) << s.message();
  // Negative and NaN scales.
  s = DecodeOne(ValueCodec::kInt8, {0x00, 0x00, 0x80, 0xBF, 0x01}, {1});
  EXPECT_NE(s.message().find("scales[0] = -1"), std::string::npos) << s.message();
  s = DecodeOne(ValueCodec::kInt4, {0x00, 0x00, 0xC0, 0x7F, 0x01}, {1});
  EXPECT_NE(s.message().find("scales[0] = nan"), std::string::npos) << s.message();
  // Non-finite floats.
  s = DecodeOne(ValueCodec::kFp32, {0x00, 0x00, 0x80, 0x7F}, {1});
  EXPECT_NE(s.message().find("values[0] = inf"), std::string::npos) << s.message();
  s = DecodeOne(ValueCodec::kFp16, {0x00, 0x3C, 0x00, 0x7C}, {2});
  EXPECT_NE(s.message().find("values[1] = inf"), std::string::npos) << s.message();
  s = DecodeOne(ValueCodec::kBf16, {0xC0, 0x7F}, {1});
  EXPECT_NE(s.message().find("values[0] = nan"), std::string::npos) << s.message();
}

TEST(ValueCodecs, DecodeRejectsUnknownCodec) {
  const Status s = DecodeOne(static_cast<ValueCodec>(9), {}, {});
  EXPECT_EQ(s.code(), ErrorCode::kUnsupported);
  EXPECT_NE(s.message().find("value codec = 9"), std::string::npos);
}

TEST(ValueCodecs, StreamSizesMatchValueStreamBytes) {
  for (ValueCodec codec : kAllCodecs) {
    for (uint32_t n : {0u, 1u, 2u, 3u, 8u, 33u}) {
      for (uint32_t rows : {1u, 2u, 5u}) {
        std::vector<uint32_t> counts(rows, 0);
        counts[0] = n;
        std::vector<float> values(n, 1.5f);
        std::vector<uint8_t> bytes;
        EncodeValues(codec, values, counts, &bytes);
        EXPECT_EQ(bytes.size(), ValueStreamBytes(codec, n, rows))
            << Traits(codec).name << " " << n << " " << rows;
      }
    }
  }
}

}  // namespace
}  // namespace sparselink
