// Helpers shared by the packet codec tests (packet_test, packet_roundtrip_test,
// encode_activation_test, gradient_packet_test, control_packets_test, packet_parse_test,
// packet_parallel_test, index_codecs_test): little-endian field access, resealing a crafted
// packet, routed tensors built by hand, and the check of a decoded tensor against the codecs'
// stated error.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sparselink/codec.hpp"

namespace sparselink::packet_test {

inline constexpr std::array<ValueCodec, kNumValueCodecs> kAllCodecs = {
    ValueCodec::kFp32, ValueCodec::kFp16, ValueCodec::kBf16, ValueCodec::kInt8, ValueCodec::kInt4};

inline void Store32(std::vector<uint8_t>& p, size_t off, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[off + i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void Store64(std::vector<uint8_t>& p, size_t off, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[off + i] = static_cast<uint8_t>(v >> (8 * i));
}
inline uint32_t Load32(const std::vector<uint8_t>& p, size_t off) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[off + i]) << (8 * i);
  return v;
}

// The bytes as a C array body, for golden packets.
inline std::string HexDump(const std::vector<uint8_t>& p) {
  std::string s;
  char buf[8];
  for (size_t i = 0; i < p.size(); ++i) {
    std::snprintf(buf, sizeof(buf), "0x%02x,%s", p[i], (i % 16 == 15) ? "\n" : " ");
    s += buf;
  }
  return s;
}

// Recomputes the trailer, so that a crafted field reaches the check behind the checksum.
inline void Reseal(std::vector<uint8_t>& p) {
  Store64(p, p.size() - 8, PacketChecksum(std::span<const uint8_t>(p).first(p.size() - 8)));
}

// Builds a routed tensor by hand (the Router is tested on its own): in each row (or once, for
// unit granularity) k random distinct columns, `full` of them in the full tier at random.
inline RoutedTensor MakeRouted(uint32_t rows, uint32_t cols, uint32_t k, uint32_t full,
                               Granularity g, RestCodec rest, std::mt19937& rng) {
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

inline Contract MakeContract(const RoutedTensor& t, ValueCodec full, ValueCodec lossy) {
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
inline std::pair<size_t, size_t> Range(const RoutedTensor& t, size_t r) {
  if (t.granularity == Granularity::kUnit)
    return {r * t.indices.size(), (r + 1) * t.indices.size()};
  return {t.row_offsets[r], t.row_offsets[r + 1]};
}

// Checks `got` against `want`: structure exact, values within the codec's stated error.
inline void ExpectSameRouted(const RoutedTensor& want, const RoutedTensor& got, const Contract& c) {
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

// A value that a gradient stream may not hold (docs/wire-format.md, "Value streams"), for a
// stream of 9 values over 3 rows (an odd count, so int4 has a padding nibble): the codec of the
// packet it goes into, how it is written into the stream (scales first), and the field and
// value every refusal of it names.
struct ForbiddenValue {
  const char* name;
  ValueCodec codec;
  void (*write)(uint8_t* stream);
  const char* error;
};
inline void StoreF32(uint8_t* p, float f) {
  uint32_t v;
  std::memcpy(&v, &f, sizeof v);
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline constexpr size_t kForbiddenRows = 3;
inline constexpr size_t kScales = 4 * kForbiddenRows;  // int8/int4: where the codes start
inline const std::vector<ForbiddenValue>& ForbiddenValues() {
  static const std::vector<ForbiddenValue> values = {
      {"int8_code_minus_128", ValueCodec::kInt8, [](uint8_t* s) { s[kScales + 4] = 0x80; },
       "int8 value[4] = -128"},
      {"int8_negative_scale", ValueCodec::kInt8, [](uint8_t* s) { StoreF32(s + 4, -1.0f); },
       "scales[1] = -1"},
      {"int8_nan_scale", ValueCodec::kInt8, [](uint8_t* s) { StoreF32(s, NAN); },
       "scales[0] = nan"},
      {"int4_negative_scale", ValueCodec::kInt4, [](uint8_t* s) { StoreF32(s + 8, -0.5f); },
       "scales[2] = -0.5"},
      {"int4_code_minus_8", ValueCodec::kInt4,
       [](uint8_t* s) { s[kScales + 2] = static_cast<uint8_t>((s[kScales + 2] & 0x0F) | 0x80); },
       "int4 value[5] = -8"},
      {"int4_padding_nibble", ValueCodec::kInt4,
       [](uint8_t* s) { s[kScales + 4] = static_cast<uint8_t>(s[kScales + 4] | 0x30); },
       "int4 padding nibble = 3"},
      {"fp32_nan", ValueCodec::kFp32, [](uint8_t* s) { StoreF32(s + 8, NAN); }, "values[2] = nan"},
      {"fp32_minus_inf", ValueCodec::kFp32, [](uint8_t* s) { StoreF32(s + 32, -INFINITY); },
       "values[8] = -inf"},
      {"fp16_inf", ValueCodec::kFp16,
       [](uint8_t* s) {
         s[14] = 0x00;
         s[15] = 0x7C;
       },
       "values[7] = inf"},
      {"bf16_nan", ValueCodec::kBf16,
       [](uint8_t* s) {
         s[0] = 0xC0;
         s[1] = 0x7F;
       },
       "values[0] = nan"},
  };
  return values;
}
// `packet` (a gradient packet of kForbiddenRows rows and 9 values, without zstd) with `f`
// written into its stream, resealed.
inline std::vector<uint8_t> WithForbiddenValue(std::vector<uint8_t> packet,
                                               const ForbiddenValue& f) {
  auto info = InspectPacket(packet);
  EXPECT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->header.rows, kForbiddenRows);
  EXPECT_EQ(info->header.count_full, 9u);
  EXPECT_FALSE(info->sections[0].zstd);
  f.write(packet.data() + info->sections[0].offset);
  Reseal(packet);
  return packet;
}

inline bool Contains(const Status& s, const std::string& text) {
  return s.message().find(text) != std::string::npos;
}

// A test name from parameter names: letters and digits kept, anything else (the '-' of
// "delta-varint") written as '_'.
inline std::string TestNamePart(std::string_view text) {
  std::string name(text);
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

}  // namespace sparselink::packet_test
