// The index codecs on their own (index_codecs.cc): delta-varint, bitmap and subset bitmap, their
// byte counts, round trips at every width class and LEB128 length, and every malformed section
// named.
#include "codec/index_codecs.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "packet_test_util.hpp"
#include "sparselink/codec.hpp"

namespace sparselink::packet_test {
namespace {

Status DecodeDelta(std::vector<uint8_t> bytes, uint32_t rows, uint32_t cols, uint64_t kept) {
  std::vector<uint32_t> offsets, indices;
  return internal::DecodeDeltaVarint(bytes, rows, cols, kept, &offsets, &indices);
}

TEST(IndexCodec, DeltaVarintRoundTripsWideGaps) {
  const std::vector<uint32_t> offsets = {0, 3, 3, 5};
  const std::vector<uint32_t> indices = {0, 127, 100000, 5, 6};
  std::vector<uint8_t> bytes;
  internal::AppendDeltaVarint(offsets, indices, &bytes);
  EXPECT_EQ(bytes.size(), internal::DeltaVarintBytes(offsets, indices));
  // Row 0: 3, 0, 126, 99872 (3 bytes); row 1: 0; row 2: 2, 5, 0.
  EXPECT_EQ(bytes,
            (std::vector<uint8_t>{0x03, 0x00, 0x7e, 0xa0, 0x8c, 0x06, 0x00, 0x02, 0x05, 0x00}));
  std::vector<uint32_t> got_offsets, got_indices;
  ASSERT_TRUE(internal::DecodeDeltaVarint(bytes, 3, 100001, 5, &got_offsets, &got_indices).ok());
  EXPECT_EQ(got_offsets, offsets);
  EXPECT_EQ(got_indices, indices);
}

// Rows long enough for the vector byte count and the one-byte decode path, with gaps at every
// LEB128 length boundary mixed in.
TEST(IndexCodec, DeltaVarintRoundTripsRandomRowsAtEveryGapLength) {
  std::mt19937 rng(7);
  const uint32_t boundaries[] = {
      126, 127, 128, 16383, 16384, (1u << 21) - 1, 1u << 21, (1u << 28) - 1, 1u << 28};
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<uint32_t> offsets = {0};
    std::vector<uint32_t> indices;
    for (int r = 0; r < 6; ++r) {
      const size_t count = std::uniform_int_distribution<size_t>(0, 90)(rng);
      uint64_t col = std::uniform_int_distribution<uint32_t>(0, 300)(rng);
      for (size_t j = 0; j < count && col < (uint64_t{1} << 31); ++j) {
        indices.push_back(static_cast<uint32_t>(col));
        const bool wide = std::uniform_int_distribution<int>(0, 15)(rng) == 0;
        const uint32_t gap = wide ? boundaries[std::uniform_int_distribution<size_t>(0, 8)(rng)]
                                  : std::uniform_int_distribution<uint32_t>(0, 20)(rng);
        col += uint64_t{1} + gap;
      }
      offsets.push_back(static_cast<uint32_t>(indices.size()));
    }
    // The size counted the slow way, one LEB128 number at a time.
    uint64_t want_bytes = 0;
    for (size_t r = 0; r + 1 < offsets.size(); ++r) {
      want_bytes += internal::VarintBytes(offsets[r + 1] - offsets[r]);
      for (uint32_t i = offsets[r]; i < offsets[r + 1]; ++i) {
        want_bytes +=
            internal::VarintBytes(i == offsets[r] ? indices[i] : indices[i] - indices[i - 1] - 1);
      }
    }
    ASSERT_EQ(internal::DeltaVarintBytes(offsets, indices), want_bytes) << trial;
    std::vector<uint8_t> bytes = {0xAA};  // appends after what is there
    internal::AppendDeltaVarint(offsets, indices, &bytes);
    ASSERT_EQ(bytes.size() - 1, want_bytes) << trial;
    ASSERT_EQ(bytes[0], 0xAA);
    std::vector<uint32_t> got_offsets, got_indices;
    const std::span<const uint8_t> stream(bytes.data() + 1, bytes.size() - 1);
    ASSERT_TRUE(
        internal::DecodeDeltaVarint(stream, 6, 1u << 31, indices.size(), &got_offsets, &got_indices)
            .ok())
        << trial;
    EXPECT_EQ(got_offsets, offsets) << trial;
    EXPECT_EQ(got_indices, indices) << trial;
  }
}

TEST(IndexCodec, DeltaVarintRefusesMalformedStreams) {
  Status s = DecodeDelta({0x01, 0x80, 0x00}, 1, 10, 1);  // over-long 0
  EXPECT_TRUE(Contains(s, "index row 0 first column offset = 2")) << s.message();
  EXPECT_TRUE(Contains(s, "not minimal")) << s.message();
  s = DecodeDelta({0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 1, 10, 1);  // 6 bytes
  EXPECT_TRUE(Contains(s, "longer than 5 bytes")) << s.message();
  s = DecodeDelta({0x01, 0xff, 0xff, 0xff, 0xff, 0x1f}, 1, 10, 1);  // > 32 bits
  EXPECT_TRUE(Contains(s, "overflows 32 bits")) << s.message();
  s = DecodeDelta({0x01, 0x0a}, 1, 10, 1);  // column 10 of 10
  EXPECT_TRUE(Contains(s, "index row 0 column = 10")) << s.message();
  s = DecodeDelta({0x02, 0x00, 0x09}, 1, 10, 2);  // 0 then gap 9 -> column 10
  EXPECT_TRUE(Contains(s, "index row 0 column = 10")) << s.message();
  s = DecodeDelta({0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 1, 10, 11);  // count 11 > cols
  EXPECT_TRUE(Contains(s, "index row 0 count = 11")) << s.message();
  s = DecodeDelta({0x01, 0x00, 0x00}, 1, 10, 1);  // trailing byte
  EXPECT_TRUE(Contains(s, "trailing bytes = 1")) << s.message();
  s = DecodeDelta({0x01, 0x00, 0x01}, 2, 10,
                  2);  // total 2 claimed, rows give 2 but row 1 truncated
  EXPECT_EQ(s.code(), ErrorCode::kCorruptPacket);
  s = DecodeDelta({0x01, 0x80}, 1, 10, 1);  // truncated varint
  EXPECT_TRUE(Contains(s, "runs past the end")) << s.message();
  s = DecodeDelta({0x03, 0x00, 0x00, 0x80, 0x00}, 1, 10, 3);  // over-long gap after a short one
  EXPECT_TRUE(Contains(s, "index row 0 gap offset = 4")) << s.message();
  EXPECT_TRUE(Contains(s, "not minimal")) << s.message();
  s = DecodeDelta({0x02, 0x85, 0x01}, 1, 1000, 2);  // stream ends where a gap should be
  EXPECT_TRUE(Contains(s, "index row 0 gap offset = 3")) << s.message();
  EXPECT_TRUE(Contains(s, "runs past the end")) << s.message();
  EXPECT_TRUE(DecodeDelta({0x03, 0x00, 0x00, 0x00, 0x02, 0x05, 0x00}, 2, 10, 5).ok());
  s = DecodeDelta({0x02, 0x00, 0x00}, 1, 10, 1);  // more than the header's kept
  EXPECT_TRUE(Contains(s, "index row 0 count = 2")) << s.message();
}

TEST(IndexCodec, BitmapRoundTripsRowsAcrossByteBoundaries) {
  for (uint32_t cols : {1u, 3u, 7u, 8u, 9u, 33u}) {
    std::mt19937 rng(cols);
    const RoutedTensor t =
        MakeRouted(5, cols, (cols + 1) / 2, 0, Granularity::kElement, RestCodec::kDrop, rng);
    std::vector<uint8_t> bytes;
    internal::AppendBitmap(t.row_offsets, t.indices, cols, &bytes);
    ASSERT_EQ(bytes.size(), internal::BitmapBytes(5, cols));
    std::vector<uint32_t> offsets, indices;
    ASSERT_TRUE(internal::DecodeBitmap(bytes, 5, cols, t.indices.size(), &offsets, &indices).ok());
    EXPECT_EQ(offsets, t.row_offsets);
    EXPECT_EQ(indices, t.indices);
    Status s = internal::DecodeBitmap(bytes, 5, cols, t.indices.size() - 1, &offsets, &indices);
    EXPECT_TRUE(Contains(s, "bitmap set bits = " + std::to_string(t.indices.size())))
        << s.message();
    EXPECT_TRUE(Contains(s, "more than the header's kept count")) << s.message();
    s = internal::DecodeBitmap(bytes, 5, cols, 5 * cols + 1, &offsets, &indices);
    EXPECT_TRUE(Contains(s, "kept count = " + std::to_string(5 * cols + 1))) << s.message();
  }
}

// The subset bitmap over rows that share columns, at every width class: encoded from the sets
// and from the router-style bitmap (rows on bytes) it is the same bytes, and it decodes back.
TEST(IndexCodec, SubsetBitmapRoundTripsAndMatchesTheBitmapPath) {
  for (uint32_t cols : {1u, 5u, 8u, 64u, 72u, 1024u, 1030u}) {
    for (uint32_t pool : {0u, 1u, cols / 3, cols}) {
      std::mt19937 rng(cols * 7 + pool);
      const uint32_t rows = 6;
      RoutedTensor t;
      t.row_offsets = {0};
      std::vector<uint32_t> columns(cols);
      std::iota(columns.begin(), columns.end(), 0u);
      std::shuffle(columns.begin(), columns.end(), rng);
      columns.resize(pool);  // every row keeps from these only
      std::vector<uint8_t> bitmap(cols % 8 == 0 ? rows * cols / 8 : 0, 0);
      for (uint32_t r = 0; r < rows; ++r) {
        std::vector<uint32_t> row;
        for (uint32_t c : columns) {
          if (rng() % 2 == 0 || r == 0) row.push_back(c);  // row 0 keeps the whole pool
        }
        std::sort(row.begin(), row.end());
        for (uint32_t c : row) {
          t.indices.push_back(c);
          if (!bitmap.empty()) bitmap[r * cols / 8 + c / 8] |= static_cast<uint8_t>(1u << (c % 8));
        }
        t.row_offsets.push_back(static_cast<uint32_t>(t.indices.size()));
      }
      SCOPED_TRACE(::testing::Message() << "cols " << cols << " pool " << pool);
      std::vector<uint64_t> mask;
      const uint64_t active = internal::ColumnMask(t.row_offsets, t.indices, cols, {}, &mask);
      EXPECT_EQ(active, pool);
      std::vector<uint8_t> from_sets, from_bitmap;
      internal::AppendSubsetBitmap(t.row_offsets, t.indices, cols, {}, mask, &from_sets);
      ASSERT_EQ(from_sets.size(), internal::SubsetBitmapBytes(rows, cols, pool));
      if (!bitmap.empty()) {
        std::vector<uint64_t> mask2;
        EXPECT_EQ(internal::ColumnMask(t.row_offsets, t.indices, cols, bitmap, &mask2), active);
        EXPECT_EQ(mask2, mask);
        internal::AppendSubsetBitmap(t.row_offsets, t.indices, cols, bitmap, mask, &from_bitmap);
        EXPECT_EQ(from_bitmap, from_sets);
      }
      std::vector<uint32_t> offsets, indices;
      const Status s =
          internal::DecodeSubsetBitmap(from_sets, rows, cols, t.indices.size(), &offsets, &indices);
      ASSERT_TRUE(s.ok()) << s.ToString();
      EXPECT_EQ(offsets, t.row_offsets);
      EXPECT_EQ(indices, t.indices);
    }
  }
}

// Every way a subset bitmap can be malformed is one error naming it.
TEST(IndexCodec, SubsetBitmapRefusesMalformedSections) {
  // 2 rows x 5 columns: row 0 keeps {1, 3}, row 1 keeps {0}. Mask {0, 1, 3} = 0x0b, A = 3;
  // row 0 over (0, 1, 3) is 0,1,1 and row 1 is 1,0,0: stream bits 1, 2, 3 = 0x0e.
  const std::vector<uint32_t> offsets = {0, 2, 3};
  const std::vector<uint32_t> indices = {1, 3, 0};
  std::vector<uint64_t> mask;
  ASSERT_EQ(internal::ColumnMask(offsets, indices, 5, {}, &mask), 3u);
  std::vector<uint8_t> good;
  internal::AppendSubsetBitmap(offsets, indices, 5, {}, mask, &good);
  ASSERT_EQ(good, (std::vector<uint8_t>{0x0b, 0x0e}));
  std::vector<uint32_t> o, i;
  ASSERT_TRUE(internal::DecodeSubsetBitmap(good, 2, 5, 3, &o, &i).ok());
  EXPECT_EQ(i, indices);
  struct Case {
    std::vector<uint8_t> bytes;
    uint64_t kept;
    const char* message;
  };
  const std::vector<Case> cases = {
      {{}, 3, "subset bitmap bytes = 0: shorter than the column mask's 1"},
      {{0x0b}, 3, "subset bitmap bytes = 1: expected 2"},
      {{0x0b, 0x0e, 0x00}, 3, "subset bitmap bytes = 3: expected 2"},
      {{0x2b, 0x0e}, 3, "column mask padding bits = 1"},
      {{0x0b, 0x4e}, 4, "subset bitmap padding bits = 1"},
      {{0x1f, 0x0e}, 3, "subset bitmap bytes = 2: expected 3"},  // 5 masked: 10 bits
      {{0x0b, 0x06}, 2, "subset bitmap masked column = 0: is kept by no row"},
      {{0x0b, 0x0e}, 2, "subset bitmap set bits = 3: more than the header's kept count"},
      {{0x0b, 0x0e}, 4, "subset bitmap set bits = 3: header says 4 kept"},
      {{0x0b, 0x0e}, 7, "kept count = 7: exceeds the subset bitmap's bits"},
  };
  for (const Case& c : cases) {
    const Status s = internal::DecodeSubsetBitmap(c.bytes, 2, 5, c.kept, &o, &i);
    EXPECT_EQ(s.code(), ErrorCode::kCorruptPacket) << c.message;
    EXPECT_TRUE(Contains(s, c.message)) << s.message() << " / " << c.message;
  }
}

}  // namespace
}  // namespace sparselink::packet_test
