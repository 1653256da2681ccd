// Gradient packets (encode_gradient.cc, decode_gradient.cc): round trips within each codec's
// error, the mask checks, the one-call and fused forms against the plain ones, the own-mask
// calls of the adapter, and the refusals of forbidden values (every decoder, and the check
// without the mask) and overflowing scales.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "codec/own_mask.hpp"
#include "codec/value_codecs.hpp"
#include "packet_test_util.hpp"
#include "sparselink/codec.hpp"

namespace sparselink::packet_test {
namespace {

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

// A peer's packet is untrusted: every forbidden value (ForbiddenValues: int8 -128, int4 -8, a
// non-zero int4 padding nibble, a negative or NaN scale, a non-finite fp32, fp16 or bf16 value),
// at either granularity, on one thread and on several, is refused by CheckGradientValues
// without the mask and by every decoder (the values, the dense gradient with its fused int8
// rows, the own-mask call) with the same error, and the dense gradient is not written.
TEST(GradientPacket, EveryDecoderRefusesEveryForbiddenValue) {
  std::mt19937 rng(21);
  for (Granularity g : {Granularity::kElement, Granularity::kUnit}) {
    const RoutedTensor mask = MakeRouted(kForbiddenRows, 8, 3, 3, g, RestCodec::kDrop, rng);
    std::vector<float> values(mask.num_kept());
    std::normal_distribution<float> normal;
    for (float& v : values) v = normal(rng);
    for (const ForbiddenValue& f : ForbiddenValues()) {
      SCOPED_TRACE(std::string(f.name) + (g == Granularity::kUnit ? " unit" : " element"));
      std::vector<uint8_t> packet;
      ASSERT_TRUE(EncodeGradientValues(mask, values, f.codec, {}, {}, &packet).ok());
      ASSERT_TRUE(CheckGradientValues(packet).ok());
      const std::vector<uint8_t> bad = WithForbiddenValue(packet, f);
      const Status want = CheckGradientValues(bad);
      EXPECT_EQ(want.code(), ErrorCode::kCorruptPacket);
      EXPECT_TRUE(Contains(want, std::string("gradient_values: ") + f.error)) << want.message();
      if (f.codec == ValueCodec::kInt8) {  // the fused rows take only a plainly valid stream
        const PacketInfo info = *InspectPacket(bad);
        EXPECT_FALSE(internal::Int8StreamPlainlyValid(
            std::span<const uint8_t>(bad).subspan(info.sections[0].offset,
                                                  info.sections[0].stored_bytes),
            kForbiddenRows));
      }
      for (size_t parallel : {kDefaultParallelMinEntries, size_t{1}}) {
        const DecodeLimits limits{.parallel_min_entries = parallel};
        EXPECT_EQ(DecodeGradientValues(bad, mask, limits).status().ToString(), want.ToString());
        std::vector<float> dense(kForbiddenRows * 8, 7.0f), kept;
        const MutableMatrix out{dense.data(), kForbiddenRows, 8};
        EXPECT_EQ(DecodeGradientToDense(bad, mask, out, &kept, limits).ToString(), want.ToString());
        EXPECT_EQ(internal::DecodeGradientToDenseTrustedMask(bad, mask, out, &kept, limits, nullptr)
                      .ToString(),
                  want.ToString());
        EXPECT_EQ(dense, std::vector<float>(kForbiddenRows * 8, 7.0f));
      }
    }
  }
}

// A scale whose product with a code overflows (FLT_MAX): which codes it multiplies is the
// header's at unit granularity, so CheckGradientValues refuses it as the decoders do; at element
// granularity only the mask says, so the check without it passes and the decoders refuse.
TEST(GradientPacket, OverflowingScaleNeedsTheMaskOnlyAtElementGranularity) {
  std::mt19937 rng(22);
  for (Granularity g : {Granularity::kElement, Granularity::kUnit}) {
    const RoutedTensor mask = MakeRouted(2, 8, 3, 3, g, RestCodec::kDrop, rng);
    const std::vector<float> values(mask.num_kept(), 1.0f);
    for (ValueCodec codec : {ValueCodec::kInt8, ValueCodec::kInt4}) {
      std::vector<uint8_t> packet;
      ASSERT_TRUE(EncodeGradientValues(mask, values, codec, {}, {}, &packet).ok());
      const PacketInfo info = *InspectPacket(packet);
      StoreF32(packet.data() + info.sections[0].offset, std::numeric_limits<float>::max());
      Reseal(packet);
      const Status decoded = DecodeGradientValues(packet, mask).status();
      EXPECT_EQ(decoded.code(), ErrorCode::kCorruptPacket);
      EXPECT_TRUE(Contains(decoded, "values[0] = inf: not finite")) << decoded.message();
      const Status checked = CheckGradientValues(packet);
      if (g == Granularity::kUnit) {
        EXPECT_EQ(checked.ToString(), decoded.ToString());
      } else {
        EXPECT_TRUE(checked.ok()) << checked.ToString();
      }
    }
  }
}

// CheckGradientValues takes gradient packets only, and refuses what InspectPacket refuses.
TEST(GradientPacket, CheckWithoutMaskRefusesOtherKindsAndBadStructure) {
  std::vector<uint8_t> summary;
  ASSERT_TRUE(EncodeSummary(std::vector<float>{1, 2}, {}, &summary).ok());
  const Status s = CheckGradientValues(summary);
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s, "header.kind = summary")) << s.message();
  std::mt19937 rng(23);
  const RoutedTensor mask = MakeRouted(3, 64, 30, 30, Granularity::kElement, RestCodec::kDrop, rng);
  std::vector<uint8_t> packet;
  ASSERT_TRUE(EncodeGradientValues(mask, std::vector<float>(90, 0.0f), ValueCodec::kInt8, {},
                                   {.zstd = true}, &packet)
                  .ok());
  PacketInfo info;
  ASSERT_TRUE(CheckGradientValues(packet, {}, &info).ok());
  EXPECT_TRUE(info.sections[0].zstd);  // the frame was decompressed and checked
  packet[packet.size() - 9] ^= 1;
  EXPECT_TRUE(Contains(CheckGradientValues(packet), "checksum"));
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

}  // namespace
}  // namespace sparselink::packet_test
