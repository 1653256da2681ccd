// Hostile input to the packet decoders (parse_packet.cc and the decoders behind it): every
// truncation and byte flip, resealed flips that reach the field checks, crafted header and
// section fields named in the error, sizes refused before allocation, zstd sections that are not
// one frame, padding bits, and a subset mask naming a column no row keeps.
#include <gtest/gtest.h>
#include <zstd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "packet_test_util.hpp"
#include "sparselink/codec.hpp"

namespace sparselink::packet_test {
namespace {

// A real packet with every section kind: element granularity, both tiers, sign1, 3 x 7 (21
// bits, so the bitmap has padding), int4 lossy tier.
std::vector<uint8_t> RealPacket(IndexCodec index = IndexCodec::kBitmap, bool zstd = false) {
  std::mt19937 rng(77);
  const RoutedTensor t = MakeRouted(3, 7, 3, 1, Granularity::kElement, RestCodec::kSign1, rng);
  std::vector<uint8_t> packet;
  const Status s =
      EncodeActivation(t, MakeContract(t, ValueCodec::kFp16, ValueCodec::kInt4),
                       {.boundary = 1, .step = 2}, {.index_codec = index, .zstd = zstd}, &packet);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return packet;
}

bool IsPacketError(ErrorCode c) {
  return c == ErrorCode::kCorruptPacket || c == ErrorCode::kUnsupported ||
         c == ErrorCode::kResourceExhausted;
}

TEST(BadPacket, EveryTruncationFails) {
  for (IndexCodec index :
       {IndexCodec::kBitmap, IndexCodec::kDeltaVarint, IndexCodec::kSubsetBitmap}) {
    const std::vector<uint8_t> packet = RealPacket(index);
    for (size_t len = 0; len < packet.size(); ++len) {
      const std::vector<uint8_t> cut(packet.begin(), packet.begin() + len);
      auto r = DecodeActivation(cut);
      ASSERT_FALSE(r.ok()) << len;
      EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket) << len;
      if (len < 72) {
        EXPECT_TRUE(Contains(r.status(), "packet size = " + std::to_string(len)))
            << r.status().message();
      } else {
        EXPECT_TRUE(Contains(r.status(), "header.packet_bytes = " + std::to_string(packet.size())))
            << r.status().message();
      }
    }
  }
}

TEST(BadPacket, EverySingleByteFlipFails) {
  for (bool zstd : {false, true}) {
    const std::vector<uint8_t> packet = RealPacket(IndexCodec::kDeltaVarint, zstd);
    ASSERT_TRUE(DecodeActivation(packet).ok());
    for (size_t i = 0; i < packet.size(); ++i) {
      for (uint8_t mask : {0x01, 0x80, 0xff}) {
        std::vector<uint8_t> bad = packet;
        bad[i] ^= mask;
        auto r = DecodeActivation(bad);
        ASSERT_FALSE(r.ok()) << "byte " << i << " ^ " << int(mask);
        EXPECT_TRUE(IsPacketError(r.status().code())) << r.status().ToString();
        EXPECT_FALSE(r.status().message().empty());
      }
    }
  }
}

// Flips that get past the checksum (resealed) reach every field check behind it. Nothing may
// crash; a packet that still decodes passed RoutedTensor::Validate inside the decoder.
TEST(BadPacket, ResealedFlipsNeverCrash) {
  for (IndexCodec index :
       {IndexCodec::kBitmap, IndexCodec::kDeltaVarint, IndexCodec::kSubsetBitmap}) {
    for (bool zstd : {false, true}) {
      const std::vector<uint8_t> packet = RealPacket(index, zstd);
      for (size_t i = 0; i + 8 < packet.size(); ++i) {
        for (int bit = 0; bit < 8; ++bit) {
          std::vector<uint8_t> bad = packet;
          bad[i] = static_cast<uint8_t>(bad[i] ^ (1 << bit));
          Reseal(bad);
          auto r = DecodeActivation(bad);
          if (!r.ok()) {
            EXPECT_TRUE(IsPacketError(r.status().code())) << r.status().ToString();
            EXPECT_NE(r.status().message().find(" = "), std::string::npos) << r.status().message();
          }
        }
      }
    }
  }
}

// The fused dense decoder against DecodeActivation + Scatter on a packet it takes the fused
// path for, after every single-bit flip (resealed, so the field checks are reached): both
// refuse, or both give the same dense tensor. Plus a wrong output shape.
TEST(BadPacket, DenseDecoderAgreesWithDecodeThenScatterOnEveryResealedFlip) {
  std::mt19937 rng(5);
  for (ValueCodec codec : {ValueCodec::kFp16, ValueCodec::kInt8}) {
    for (bool zstd : {false, true}) {
      for (IndexCodec index : {IndexCodec::kBitmap, IndexCodec::kSubsetBitmap}) {
        const uint32_t rows = 3, cols = 21;  // rows not byte-aligned in the bitmap
        const RoutedTensor t =
            MakeRouted(rows, cols, 5, 5, Granularity::kElement, RestCodec::kDrop, rng);
        std::vector<uint8_t> packet;
        ASSERT_TRUE(EncodeActivation(t, MakeContract(t, codec, ValueCodec::kInt8), {},
                                     {.index_codec = index, .zstd = zstd}, &packet)
                        .ok());
        size_t both_ok = 0;
        for (size_t i = 0; i + 8 < packet.size(); ++i) {
          for (int bit = 0; bit < 8; ++bit) {
            std::vector<uint8_t> bad = packet;
            bad[i] = static_cast<uint8_t>(bad[i] ^ (1 << bit));
            Reseal(bad);
            std::vector<float> want(rows * cols, 1.0f), got(rows * cols, 2.0f);
            auto decoded = DecodeActivation(bad);
            const bool want_ok = decoded.ok() && decoded->rows == rows && decoded->cols == cols &&
                                 Scatter(*decoded, {want.data(), rows, cols}).ok();
            const Status dense = DecodeActivationToDense(bad, {got.data(), rows, cols});
            // The form with the mask decides alike, and leaves the mask alone when it refuses.
            KeptMask mask{.rows = 9, .cols = 9};
            std::vector<float> got_too(rows * cols, 2.0f);
            const Status with_mask =
                DecodeActivationToDenseAndMask(bad, {got_too.data(), rows, cols}, &mask);
            ASSERT_EQ(with_mask.code(), dense.code()) << i << "^" << bit;
            if (!with_mask.ok()) {  // nothing written: neither the mask nor the dense rows
              ASSERT_EQ(mask.rows, 9u);
              ASSERT_TRUE(mask.bits.empty());
              ASSERT_EQ(got_too, std::vector<float>(rows * cols, 2.0f));
            } else {
              ASSERT_EQ(got_too, got);
              KeptMask want_mask;
              ASSERT_TRUE(decoded.ok() && MaskOf(*decoded, &want_mask).ok());
              ASSERT_EQ(mask.bits, want_mask.bits);
              ASSERT_EQ(mask.row_offsets, want_mask.row_offsets);
            }
            if (decoded.ok() && (decoded->rows != rows || decoded->cols != cols)) {
              EXPECT_EQ(dense.code(), ErrorCode::kShapeMismatch) << i << "^" << bit;
              continue;
            }
            ASSERT_EQ(dense.ok(), want_ok)
                << "byte " << i << " bit " << bit << ": " << dense.ToString() << " vs "
                << decoded.status().ToString();
            if (want_ok) {
              ++both_ok;
              ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)));
            } else {  // refused too: as a bad packet, or as not the shape it now claims
              EXPECT_TRUE(IsPacketError(dense.code()) || dense.code() == ErrorCode::kShapeMismatch)
                  << dense.ToString();
            }
          }
        }
        EXPECT_GT(both_ok, 0u);  // flips in values and labels still decode
        std::vector<float> small(rows * (cols - 1));
        EXPECT_EQ(DecodeActivationToDense(packet, {small.data(), rows, cols - 1}).code(),
                  ErrorCode::kShapeMismatch);
        EXPECT_EQ(
            DecodeActivationToDenseAndMask(packet, {small.data(), rows, cols - 1}, nullptr).code(),
            ErrorCode::kInvalidArgument);
        EXPECT_EQ(DecodeActivationToDense(packet, {nullptr, rows, cols}).code(),
                  ErrorCode::kInvalidArgument);
      }
    }
  }
}

struct Crafted {
  const char* name;
  size_t offset;
  uint8_t value;
  ErrorCode code;
  const char* message;
};

TEST(BadPacket, CraftedHeaderFieldsNameTheField) {
  // Table offsets: header 64 bytes, then 12 per section.
  const std::vector<Crafted> cases = {
      {"version 2", 4, 2, ErrorCode::kUnsupported, "header.version = 2"},
      {"unknown kind", 5, 5, ErrorCode::kUnsupported, "header.kind = 5"},
      {"unknown granularity", 6, 2, ErrorCode::kUnsupported, "header.granularity = 2"},
      {"unknown index codec", 7, 4, ErrorCode::kUnsupported, "header.index_codec = 4"},
      {"index codec none", 7, 0, ErrorCode::kCorruptPacket, "header.index_codec = 0"},
      {"unknown full codec", 8, 9, ErrorCode::kUnsupported, "header.full_codec = 9"},
      {"unknown lossy codec", 9, 5, ErrorCode::kUnsupported, "header.lossy_codec = 5"},
      {"unknown rest", 10, 2, ErrorCode::kUnsupported, "header.rest = 2"},
      {"section count", 11, 5, ErrorCode::kCorruptPacket, "header.section_count = 5"},
      {"rows", 20, 4, ErrorCode::kCorruptPacket, "section[0].raw_bytes = 3"},
      {"cols zero", 24, 0, ErrorCode::kCorruptPacket, "header.cols = 0"},
      {"count_full", 40, 200, ErrorCode::kCorruptPacket, "header.count_full = 200"},
      {"section id", 64, 2, ErrorCode::kCorruptPacket, "section[0].id = 2"},
      {"section flags", 65, 2, ErrorCode::kCorruptPacket, "section[0].flags = 2"},
      {"section reserved", 66, 1, ErrorCode::kCorruptPacket, "section[0].reserved = 1"},
      {"section zstd flag on raw", 65, 1, ErrorCode::kCorruptPacket, "section[0].stored_bytes = 3"},
      {"section stored", 68, 4, ErrorCode::kCorruptPacket, "section[0].stored_bytes = 4"},
      {"section raw", 72, 200, ErrorCode::kCorruptPacket, "section[0].raw_bytes = 200"},
  };
  const std::vector<uint8_t> packet = RealPacket(IndexCodec::kBitmap);
  for (const Crafted& c : cases) {
    std::vector<uint8_t> bad = packet;
    bad[c.offset] = c.value;
    Reseal(bad);
    auto r = DecodeActivation(bad);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_EQ(r.status().code(), c.code) << c.name << ": " << r.status().ToString();
    EXPECT_TRUE(Contains(r.status(), c.message)) << c.name << ": " << r.status().message();
  }
}

TEST(BadPacket, WrongMagic) {
  std::vector<uint8_t> bad = RealPacket();
  bad[3] = 'X';
  auto r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(r.status(), "header.magic = 0x584c5053")) << r.status().message();
}

TEST(BadPacket, BadChecksumNamesBothValues) {
  std::vector<uint8_t> bad = RealPacket();
  bad[100] ^= 0x10;
  auto r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
  char stored[32];
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{bad[bad.size() - 8 + i]} << (8 * i);
  std::snprintf(stored, sizeof(stored), "checksum = 0x%016llx", static_cast<unsigned long long>(v));
  EXPECT_TRUE(Contains(r.status(), stored)) << r.status().message();
  EXPECT_TRUE(Contains(r.status(), "does not match computed 0x")) << r.status().message();
  PacketInfo info;
  EXPECT_FALSE(InspectPacketPartial(bad, {}, &info).ok());
  EXPECT_TRUE(info.header_parsed);
  EXPECT_TRUE(info.checksum_checked);
  EXPECT_FALSE(info.checksum_ok);
}

TEST(BadPacket, TrailingGarbage) {
  std::vector<uint8_t> bad = RealPacket();
  bad.push_back(0);
  auto r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(r.status(), "header.packet_bytes = " + std::to_string(bad.size() - 1)))
      << r.status().message();
  EXPECT_TRUE(Contains(r.status(), "trailing")) << r.status().message();
}

TEST(BadPacket, OversizedShapeIsRefusedBeforeAllocation) {
  std::vector<uint8_t> bad = RealPacket();
  Store32(bad, 20, 0xFFFFFFFFu);  // rows
  Store32(bad, 24, 0xFFFFFFFFu);  // cols
  Reseal(bad);
  auto r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(Contains(r.status(), "header.rows*cols = 18446744065119617025"))
      << r.status().message();
  // A small limit refuses a real packet the same way.
  r = DecodeActivation(RealPacket(), {.max_entries = 20});
  EXPECT_EQ(r.status().code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(Contains(r.status(), "header.rows*cols = 21")) << r.status().message();
  r = DecodeActivation(RealPacket(), {.max_packet_bytes = 64});
  EXPECT_EQ(r.status().code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(Contains(r.status(), "packet size")) << r.status().message();
}

TEST(BadPacket, SectionPastTheEnd) {
  std::vector<uint8_t> bad = RealPacket();
  const size_t last = 64 + 12 * (bad[11] - 1);
  const uint32_t raw = Load32(bad, last + 8);
  Store32(bad, last + 4, 0xFFFFFFF0u);  // stored_bytes
  Reseal(bad);
  auto r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(r.status(), "section[5].stored_bytes = 4294967280")) << r.status().message();
  // Claim zstd with a stored size below raw but past the trailer.
  bad[last + 1] = 1;
  Store32(bad, last + 4, raw - 1);
  Store32(bad, 64 + 4, 0);  // shrink section 0's claim so that the offsets still add up early
  Reseal(bad);
  r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(r.status(), "section[0]")) << r.status().message();
}

// An activation packet of rows x cols with nothing kept, its bitmap index zstd-compressed (an
// empty bitmap compresses to a few bytes).
std::vector<uint8_t> EmptyZstdBitmapPacket(uint32_t rows, uint32_t cols) {
  RoutedTensor t;
  t.rows = rows;
  t.cols = cols;
  t.row_offsets.assign(rows + 1, 0);
  std::vector<uint8_t> packet;
  EXPECT_TRUE(EncodeActivation(t, MakeContract(t, ValueCodec::kFp32, ValueCodec::kInt8), {},
                               {.index_codec = IndexCodec::kBitmap, .zstd = true}, &packet)
                  .ok());
  return packet;
}

TEST(BadPacket, HugeRawBytesOfAZstdSection) {
  // Packet whose index compresses: a wide, empty bitmap.
  const std::vector<uint8_t> packet = EmptyZstdBitmapPacket(64, 4096);
  ASSERT_EQ(packet[65], 1);  // zstd
  ASSERT_TRUE(DecodeActivation(packet).ok());
  std::vector<uint8_t> bad = packet;
  Store32(bad, 72, 0xFFFFFFFFu);
  Reseal(bad);
  auto r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(r.status(), "section[0].raw_bytes = 4294967295")) << r.status().message();
  // Within the header's claim but beyond the limits.
  r = DecodeActivation(packet, {.max_packet_bytes = 4096});
  EXPECT_EQ(r.status().code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(Contains(r.status(), "section[0].raw_bytes = 32768")) << r.status().message();
  // A frame that decompresses to something else.
  bad = packet;
  bad[64 + 12 + 6] ^= 0x55;
  Reseal(bad);
  r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(r.status(), "section[0].zstd")) << r.status().message();
}

// Many one-column rows cost a decoder 4 bytes of row offsets each, though their compressed
// bitmap is a few bytes: a packet whose row offsets would exceed max_packet_bytes is refused
// by both decoders before anything is allocated, and decodes under a larger limit.
TEST(BadPacket, ManyOneColumnRowsAreRefusedBeforeAllocation) {
  const std::vector<uint8_t> packet = EmptyZstdBitmapPacket(4096, 1);
  ASSERT_LT(packet.size(), 200u);  // 512 bitmap bytes stored as a few zstd bytes
  const DecodeLimits limits{.max_packet_bytes = 8192};  // > every section, < 4 * 4097
  auto r = DecodeActivation(packet, limits);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(Contains(r.status(), "header.rows = 4096")) << r.status().message();
  std::vector<float> dense(4096, 7.0f);
  const Status fast = DecodeActivationToDense(packet, {dense.data(), 4096, 1}, limits);
  EXPECT_EQ(fast.code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(Contains(fast, "header.rows = 4096")) << fast.message();
  EXPECT_TRUE(DecodeActivation(packet, {.max_packet_bytes = 4 * 4097}).ok());
  EXPECT_TRUE(
      DecodeActivationToDense(packet, {dense.data(), 4096, 1}, {.max_packet_bytes = 4 * 4097})
          .ok());
}

// A zstd section is one frame: the same raw bytes as two frames back to back, or one frame
// followed by a skippable frame, decompress fine with zstd but are refused, naming the section.
TEST(BadPacket, ZstdSectionMustBeOneFrame) {
  const std::vector<uint8_t> packet = EmptyZstdBitmapPacket(64, 4096);
  ASSERT_EQ(packet[11], 1);  // one section: the bitmap
  ASSERT_EQ(packet[65], 1);  // zstd
  const uint32_t raw = Load32(packet, 72);
  const std::vector<uint8_t> zeros(raw, 0);
  const auto frame = [](const uint8_t* data, size_t size) {
    std::vector<uint8_t> out(ZSTD_compressBound(size));
    out.resize(ZSTD_compress(out.data(), out.size(), data, size, 1));
    return out;
  };
  // Rebuilds the packet around another payload for its one section.
  const auto with_payload = [&](const std::vector<uint8_t>& payload) {
    std::vector<uint8_t> p(64 + 12 + payload.size() + 8);  // checksum last, set by Reseal
    std::copy(packet.begin(), packet.begin() + 64 + 12, p.begin());
    std::copy(payload.begin(), payload.end(), p.begin() + 64 + 12);
    Store32(p, 64 + 4, static_cast<uint32_t>(payload.size()));
    Store64(p, 56, p.size());
    Reseal(p);
    return p;
  };
  std::vector<uint8_t> one = frame(zeros.data(), raw);
  ASSERT_TRUE(DecodeActivation(with_payload(one)).ok());  // the rebuild itself is sound
  std::vector<uint8_t> two = frame(zeros.data(), raw / 2);
  const std::vector<uint8_t> second = frame(zeros.data() + raw / 2, raw - raw / 2);
  two.insert(two.end(), second.begin(), second.end());
  std::vector<uint8_t> skippable = one;
  for (uint8_t b : {0x50, 0x2A, 0x4D, 0x18, 0x01, 0x00, 0x00, 0x00, 0x00}) skippable.push_back(b);
  for (const auto& payload : {two, skippable}) {
    ASSERT_LT(payload.size(), raw);
    const std::vector<uint8_t> bad = with_payload(payload);
    auto r = DecodeActivation(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
    EXPECT_TRUE(Contains(r.status(), "section[0].zstd")) << r.status().message();
    std::vector<float> dense(64 * 4096);
    const Status fast = DecodeActivationToDense(bad, {dense.data(), 64, 4096});
    EXPECT_TRUE(Contains(fast, "section[0].zstd")) << fast.message();
  }
}

TEST(BadPacket, NonZeroPaddingBits) {
  // Bitmap of 3 x 7 = 21 bits: bit 23 is padding.
  std::vector<uint8_t> bad = RealPacket(IndexCodec::kBitmap);
  const size_t payload = 64 + 12 * bad[11];
  bad[payload + 2] |= 0x80;
  Reseal(bad);
  auto r = DecodeActivation(bad);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(r.status(), "bitmap padding bits = 4")) << r.status().message();
  // Tier bits: 9 kept entries, so the second byte has 7 padding bits.
  bad = RealPacket(IndexCodec::kBitmap);
  const uint32_t index_bytes = Load32(bad, 64 + 4);
  bad[payload + index_bytes + 1] |= 0x80;
  Reseal(bad);
  r = DecodeActivation(bad);
  EXPECT_TRUE(Contains(r.status(), "tier_bits padding = 64")) << r.status().message();
}

TEST(BadPacket, ZeroLengthAndGarbageBuffers) {
  EXPECT_EQ(DecodeActivation({}).status().code(), ErrorCode::kCorruptPacket);
  std::vector<uint8_t> junk(200, 0xAB);
  EXPECT_EQ(DecodeActivation(junk).status().code(), ErrorCode::kCorruptPacket);
  EXPECT_EQ(DecodeSummary(junk).status().code(), ErrorCode::kCorruptPacket);
  EXPECT_EQ(DecodeContract(junk).status().code(), ErrorCode::kCorruptPacket);
  EXPECT_EQ(InspectPacket(junk).status().code(), ErrorCode::kCorruptPacket);
}

// A subset bitmap whose mask names a column no row keeps, with the right size and kept count
// (one mask bit flipped, resealed): both decoders refuse it, and the fused one before it has
// written anything.
TEST(BadPacket, SubsetMaskOutsideTheRowsIsRefusedBeforeAnyWrite) {
  RoutedTensor t;  // 2 x 5: row 0 keeps {1, 3}, row 1 keeps {0}
  t.rows = 2;
  t.cols = 5;
  t.row_offsets = {0, 2, 3};
  t.indices = {1, 3, 0};
  t.values = {1.0f, 2.0f, 3.0f};
  t.tiers.assign(3, Tier::kFull);
  std::vector<uint8_t> packet;
  ASSERT_TRUE(EncodeActivation(t, MakeContract(t, ValueCodec::kFp32, ValueCodec::kInt8), {},
                               {.index_codec = IndexCodec::kSubsetBitmap}, &packet)
                  .ok());
  const PacketInfo info = *InspectPacket(packet);
  const size_t at = info.sections[0].offset;
  ASSERT_EQ(packet[at], 0x0b);      // mask {0, 1, 3}
  ASSERT_EQ(packet[at + 1], 0x0e);  // rows over it: 0,1,1 | 1,0,0
  // Mask {0, 1, 3, 4}: still 8 stream bits in one byte, rows now {1, 3, 4} and {}, 3 kept.
  packet[at] = 0x1b;
  Reseal(packet);
  auto decoded = DecodeActivation(packet);
  ASSERT_FALSE(decoded.ok());
  EXPECT_TRUE(Contains(decoded.status(), "subset bitmap masked column = 0: is kept by no row"))
      << decoded.status().message();
  std::vector<float> out(10, 7.0f);
  const Status dense = DecodeActivationToDense(packet, {out.data(), 2, 5});
  EXPECT_EQ(dense.code(), ErrorCode::kCorruptPacket);
  EXPECT_TRUE(Contains(dense, "subset bitmap masked column = 0")) << dense.message();
  EXPECT_EQ(out, std::vector<float>(10, 7.0f));
}

}  // namespace
}  // namespace sparselink::packet_test
