// The core idx reader on bytes in memory: plain and gzip'd round trips, every malformed-input
// case, multi-member gzip, and the fuzz regressions. (tests/torch_data_test.cc covers the same
// checks through the LibTorch loader and real files.)
#include "sparselink/idx.hpp"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace sparselink {
namespace {

using Bytes = std::vector<uint8_t>;

void PutBigEndian32(Bytes& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(value >> shift));
}

Bytes Images(uint32_t count, uint32_t rows = 28, uint32_t cols = 28, uint32_t magic = 2051) {
  Bytes out;
  PutBigEndian32(out, magic);
  PutBigEndian32(out, count);
  PutBigEndian32(out, rows);
  PutBigEndian32(out, cols);
  for (uint32_t i = 0; i < count * rows * cols; ++i) out.push_back(static_cast<uint8_t>(i * 7));
  return out;
}

Bytes Labels(uint32_t count, uint32_t magic = 2049) {
  Bytes out;
  PutBigEndian32(out, magic);
  PutBigEndian32(out, count);
  for (uint32_t i = 0; i < count; ++i) out.push_back(static_cast<uint8_t>(i % 10));
  return out;
}

// One gzip member holding `raw` (deflate with gzip framing, as gzip(1) writes).
Bytes Gzip(const Bytes& raw) {
  z_stream stream{};
  EXPECT_EQ(deflateInit2(&stream, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  Bytes out(deflateBound(&stream, raw.size()) + 32);
  stream.next_in = const_cast<Bytef*>(raw.data());
  stream.avail_in = static_cast<uInt>(raw.size());
  stream.next_out = out.data();
  stream.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&stream, Z_FINISH), Z_STREAM_END);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

constexpr IdxOptions kImages{.kind = IdxKind::kImages};
constexpr IdxOptions kLabels{.kind = IdxKind::kLabels};

IdxOptions Plain(IdxOptions options) {
  options.gzip = false;
  return options;
}

// Expects an error of `code` whose message contains `part`.
void ExpectError(const Bytes& bytes, const IdxOptions& options, ErrorCode code,
                 const std::string& part) {
  auto result = ParseIdx(bytes, "f.gz", options);
  ASSERT_FALSE(result.ok()) << part;
  EXPECT_EQ(result.status().code(), code) << result.status().ToString();
  EXPECT_NE(result.status().message().find(part), std::string::npos)
      << "message: " << result.status().message() << "\nmissing: " << part;
}

TEST(Idx, RoundTripsGzipAndPlainImagesAndLabels) {
  const Bytes images = Images(3);
  for (bool gzip : {true, false}) {
    IdxOptions options = kImages;
    options.gzip = gzip;
    auto parsed = ParseIdx(gzip ? Gzip(images) : images, "i", options);
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    EXPECT_EQ(parsed->count, 3);
    EXPECT_EQ(parsed->rows, 28u);
    EXPECT_EQ(parsed->cols, 28u);
    EXPECT_EQ(parsed->payload, Bytes(images.begin() + 16, images.end()));
  }
  auto labels = ParseIdx(Gzip(Labels(12)), "l", kLabels);
  ASSERT_TRUE(labels.ok()) << labels.status().ToString();
  EXPECT_EQ(labels->count, 12);
  EXPECT_EQ(labels->payload.size(), 12u);
  EXPECT_EQ(labels->payload[11], 1);
}

TEST(Idx, AcceptsZeroCount) {
  auto parsed = ParseIdx(Gzip(Images(0)), "i", kImages);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->count, 0);
  EXPECT_TRUE(parsed->payload.empty());
}

TEST(Idx, AcceptsConcatenatedGzipMembers) {
  const Bytes raw = Labels(50);
  Bytes joined = Gzip(Bytes(raw.begin(), raw.begin() + 20));
  const Bytes second = Gzip(Bytes(raw.begin() + 20, raw.end()));
  joined.insert(joined.end(), second.begin(), second.end());
  auto parsed = ParseIdx(joined, "l", kLabels);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->payload, Bytes(raw.begin() + 8, raw.end()));
}

TEST(Idx, RejectsWhatIsNotGzip) {
  ExpectError(Images(1), kImages, ErrorCode::kIo, "f.gz: format = not gzip");
  ExpectError({}, kImages, ErrorCode::kIo, "f.gz: format = not gzip");
  ExpectError({0x1f}, kImages, ErrorCode::kIo, "f.gz: format = not gzip");
}

TEST(Idx, RejectsWrongMagicDimsAndCount) {
  ExpectError(Gzip(Images(1, 28, 28, 2049)), kImages, ErrorCode::kUnsupported,
              "f.gz: magic = 2049: expected 2051");
  ExpectError(Gzip(Labels(1, 2051)), kLabels, ErrorCode::kUnsupported,
              "f.gz: magic = 2051: expected 2049");
  ExpectError(Gzip(Images(1, 28, 27)), kImages, ErrorCode::kShapeMismatch,
              "f.gz: dims = 28x27: expected 28x28");
  IdxOptions expect_5 = kLabels;
  expect_5.expected_count = 5;
  ExpectError(Gzip(Labels(4)), expect_5, ErrorCode::kShapeMismatch, "f.gz: count = 4: expected 5");
}

TEST(Idx, RejectsLabelOutOfRange) {
  Bytes labels = Labels(4);
  labels[8 + 2] = 10;
  ExpectError(Gzip(labels), kLabels, ErrorCode::kInvalidArgument,
              "f.gz: label[2] = 10: must be < 10");
}

TEST(Idx, RejectsTruncationAndTrailingBytesInBothLayers) {
  Bytes short_labels = Labels(3);
  short_labels.pop_back();
  ExpectError(Gzip(short_labels), kLabels, ErrorCode::kIo,
              "f.gz: label bytes = 2: truncated: expected 3");
  ExpectError(Gzip({0, 0, 8, 1, 0, 0}), kLabels, ErrorCode::kIo,
              "f.gz: header bytes = 6: truncated: expected 8");
  Bytes long_labels = Labels(3);
  long_labels.push_back(0);
  ExpectError(Gzip(long_labels), kLabels, ErrorCode::kIo,
              "f.gz: trailing bytes = >= 1: expected the end of the file after the 8-byte header "
              "and 3 payload bytes");
  ExpectError(long_labels, Plain(kLabels), ErrorCode::kIo, "f.gz: trailing bytes = >= 1");

  // The compressed stream cut short, and garbage after a complete member.
  Bytes cut = Gzip(Images(4));
  cut.resize(cut.size() / 2);
  ExpectError(cut, kImages, ErrorCode::kIo, "f.gz: gzip = truncated");
  Bytes no_trailer = Gzip(Labels(3));
  no_trailer.resize(no_trailer.size() - 4);  // the length field of the gzip trailer
  ExpectError(no_trailer, kLabels, ErrorCode::kIo, "f.gz: gzip = truncated");
  Bytes garbage = Gzip(Labels(3));
  garbage.push_back('x');
  ExpectError(garbage, kLabels, ErrorCode::kIo,
              "f.gz: gzip = trailing bytes: 1 bytes after the end of the gzip stream");
}

TEST(Idx, RejectsCorruptDeflateDataAndBadChecksum) {
  Bytes data = Gzip(Images(4));
  for (size_t i = 20; i < 36; ++i) data[i] ^= 0xA5;
  ExpectError(data, kImages, ErrorCode::kIo, "f.gz: gzip = corrupt");
  Bytes crc = Gzip(Labels(3));
  crc[crc.size() - 8] ^= 1;  // the CRC-32 of the gzip trailer
  ExpectError(crc, kLabels, ErrorCode::kIo, "f.gz: gzip = corrupt");
}

TEST(Idx, RefusesAbsurdCountBeforeAllocating) {
  Bytes header;
  PutBigEndian32(header, 2051);
  PutBigEndian32(header, 0xFFFFFFFFu);
  PutBigEndian32(header, 28);
  PutBigEndian32(header, 28);
  ExpectError(Gzip(header), kImages, ErrorCode::kResourceExhausted,
              "f.gz: count = 4294967295: more than 1048576 items");
  IdxOptions small = kLabels;
  small.max_count = 2;
  ExpectError(Gzip(Labels(3)), small, ErrorCode::kResourceExhausted,
              "f.gz: count = 3: more than 2");
}

// A header that claims many items in a tiny input allocates as the bytes arrive (at most one
// 1 MiB chunk beyond them), and fails as truncated.
TEST(Idx, ClaimedCountWithoutTheBytesIsTruncatedNotAllocated) {
  Bytes header;
  PutBigEndian32(header, 2051);
  PutBigEndian32(header, 1u << 20);
  PutBigEndian32(header, 28);
  PutBigEndian32(header, 28);
  ExpectError(Gzip(header), kImages, ErrorCode::kIo,
              "f.gz: pixel bytes = 0: truncated: expected 822083584");
}

TEST(Idx, RejectsBadOptionsNamingTheField) {
  IdxOptions options = kImages;
  options.rows = 0;
  ExpectError(Gzip(Images(1)), options, ErrorCode::kInvalidArgument, "idx.dims = 0x28");
  options = kLabels;
  options.max_count = kIdxMaxCount + 1;
  ExpectError(Gzip(Labels(1)), options, ErrorCode::kInvalidArgument, "idx.max_count = 1048577");
  options = kLabels;
  options.expected_count = -1;
  ExpectError(Gzip(Labels(1)), options, ErrorCode::kInvalidArgument, "expected_count = -1");
}

TEST(Idx, ReadIdxFileNamesAMissingPath) {
  auto result = ReadIdxFile("/nonexistent/dir/t10k.gz", kLabels);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), ErrorCode::kIo);
  EXPECT_NE(result.status().message().find("/nonexistent/dir/t10k.gz: no such file"),
            std::string::npos)
      << result.status().message();
  auto directory = ReadIdxFile("/tmp", kLabels);
  ASSERT_FALSE(directory.ok());
  EXPECT_NE(directory.status().message().find("is a directory"), std::string::npos);
}

TEST(Idx, ReadIdxFileRefusesAFileLargerThanAnyIdxFileOfMaxCountItems) {
  const std::string path = testing::TempDir() + "/sparselink_idx_large.gz";
  { std::ofstream(path) << std::string(5000, 'x'); }
  IdxOptions options = kLabels;
  options.max_count = 2;  // the largest file: 8 + 2 bytes plus gzip overhead, 4114 in all
  auto result = ReadIdxFile(path, options);
  std::filesystem::remove(path);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), ErrorCode::kResourceExhausted);
  EXPECT_NE(result.status().message().find("size = 5000: larger than any idx file of at most 2"),
            std::string::npos)
      << result.status().message();
}

}  // namespace
}  // namespace sparselink
