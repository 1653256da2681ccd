// Fashion-MNIST idx.gz loader: a synthetic round trip and every malformed-file case, on small
// files written here with zlib.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "sparselink/torch/fashion_mnist.hpp"

namespace sparselink::torch_adapter {
namespace {

using Bytes = std::vector<unsigned char>;

void PutBigEndian32(Bytes& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<unsigned char>(value >> shift));
}

Bytes ImagesFile(uint32_t count, uint32_t rows = 28, uint32_t cols = 28, uint32_t magic = 2051) {
  Bytes out;
  PutBigEndian32(out, magic);
  PutBigEndian32(out, count);
  PutBigEndian32(out, rows);
  PutBigEndian32(out, cols);
  for (uint32_t i = 0; i < count * rows * cols; ++i)
    out.push_back(static_cast<unsigned char>(i * 7 % 256));
  return out;
}

Bytes LabelsFile(uint32_t count, uint32_t magic = 2049) {
  Bytes out;
  PutBigEndian32(out, magic);
  PutBigEndian32(out, count);
  for (uint32_t i = 0; i < count; ++i) out.push_back(static_cast<unsigned char>(i % 10));
  return out;
}

class IdxFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("sparselink_idx_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string WriteGzip(const std::string& name, const Bytes& bytes) {
    const std::string path = (dir_ / name).string();
    gzFile file = gzopen(path.c_str(), "wb");
    EXPECT_NE(file, nullptr);
    if (!bytes.empty()) {
      EXPECT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
                static_cast<int>(bytes.size()));
    }
    EXPECT_EQ(gzclose(file), Z_OK);
    return path;
  }

  std::string WritePlain(const std::string& name, const Bytes& bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
    return path;
  }

  // Loads images + labels and expects an error whose message contains every part of `parts`.
  void ExpectError(const std::string& images, const std::string& labels,
                   const std::vector<std::string>& parts, int64_t expected_count = 0) {
    auto result = LoadIdxDataset(images, labels, expected_count);
    ASSERT_FALSE(result.ok());
    for (const auto& part : parts) {
      EXPECT_NE(result.status().message().find(part), std::string::npos)
          << "message: " << result.status().message() << "\nmissing: " << part;
    }
  }

  std::filesystem::path dir_;
};

TEST_F(IdxFiles, RoundTripsPixelsAndLabels) {
  const Bytes images = ImagesFile(5);
  const auto result = LoadIdxDataset(WriteGzip("i.gz", images), WriteGzip("l.gz", LabelsFile(5)));
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  ASSERT_EQ(result->images.sizes(), (std::vector<int64_t>{5, 1, 28, 28}));
  EXPECT_EQ(result->images.scalar_type(), torch::kFloat32);
  ASSERT_EQ(result->labels.sizes(), (std::vector<int64_t>{5}));
  EXPECT_EQ(result->labels.scalar_type(), torch::kInt64);
  EXPECT_EQ(result->size(), 5);
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(result->labels[i].item<int64_t>(), i % 10);
  const float* pixels = result->images.data_ptr<float>();
  for (size_t i = 0; i < 5 * 784; ++i) {
    const float expected =
        (static_cast<float>(images[16 + i]) / 255.0f - kFashionMnistMean) / kFashionMnistStd;
    ASSERT_NEAR(pixels[i], expected, 1e-5f) << "pixel " << i;
  }
}

TEST_F(IdxFiles, AcceptsEmptyFilesWithZeroCount) {
  const auto result =
      LoadIdxDataset(WriteGzip("i.gz", ImagesFile(0)), WriteGzip("l.gz", LabelsFile(0)));
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->size(), 0);
}

TEST_F(IdxFiles, RejectsMissingFile) {
  const std::string labels = WriteGzip("l.gz", LabelsFile(2));
  ExpectError((dir_ / "nope.gz").string(), labels, {"nope.gz", "no such file"});
}

TEST_F(IdxFiles, MissingDatasetNamesThePackage) {
  auto result = LoadFashionMnist(dir_.string());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), ErrorCode::kIo);
  EXPECT_NE(result.status().message().find("train-images-idx3-ubyte.gz"), std::string::npos);
  EXPECT_NE(
      result.status().message().find("install it with: apt-get install dataset-fashion-mnist"),
      std::string::npos)
      << result.status().message();
}

TEST_F(IdxFiles, DatasetDirectoryChecksTheRealCounts) {
  WriteGzip("train-images-idx3-ubyte.gz", ImagesFile(3));
  WriteGzip("train-labels-idx1-ubyte.gz", LabelsFile(3));
  WriteGzip("t10k-images-idx3-ubyte.gz", ImagesFile(2));
  WriteGzip("t10k-labels-idx1-ubyte.gz", LabelsFile(2));
  auto result = LoadFashionMnist(dir_.string());
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("count = 3: expected 60000"), std::string::npos)
      << result.status().message();
}

TEST_F(IdxFiles, RejectsWrongImageMagic) {
  ExpectError(WriteGzip("i.gz", ImagesFile(2, 28, 28, 2049)), WriteGzip("l.gz", LabelsFile(2)),
              {"i.gz: magic = 2049", "2051"});
}

TEST_F(IdxFiles, RejectsWrongLabelMagic) {
  ExpectError(WriteGzip("i.gz", ImagesFile(2)), WriteGzip("l.gz", LabelsFile(2, 2051)),
              {"l.gz: magic = 2051", "2049"});
}

TEST_F(IdxFiles, RejectsWrongDims) {
  ExpectError(WriteGzip("i.gz", ImagesFile(2, 28, 27)), WriteGzip("l.gz", LabelsFile(2)),
              {"i.gz: dims = 28x27", "28x28"});
}

TEST_F(IdxFiles, RejectsTruncatedPixels) {
  Bytes images = ImagesFile(3);
  images.resize(images.size() - 1);
  ExpectError(WriteGzip("i.gz", images), WriteGzip("l.gz", LabelsFile(3)),
              {"i.gz: pixel bytes = 2351: truncated: expected 2352"});
}

TEST_F(IdxFiles, RejectsTruncatedHeader) {
  Bytes labels = LabelsFile(3);
  labels.resize(6);
  ExpectError(WriteGzip("i.gz", ImagesFile(3)), WriteGzip("l.gz", labels),
              {"l.gz: header bytes = 6: truncated: expected 8"});
}

TEST_F(IdxFiles, RejectsTruncatedGzipStream) {
  // Compress properly, then cut the compressed file in half.
  const std::string path = WriteGzip("i.gz", ImagesFile(20));
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  ExpectError(path, WriteGzip("l.gz", LabelsFile(20)), {"i.gz", "truncated"});
}

TEST_F(IdxFiles, RejectsTrailingBytes) {
  Bytes labels = LabelsFile(3);
  labels.push_back(0);
  ExpectError(WriteGzip("i.gz", ImagesFile(3)), WriteGzip("l.gz", labels),
              {"l.gz: trailing bytes = >= 1", "8-byte header and 3 payload bytes"});
  Bytes images = ImagesFile(3);
  images.push_back(0);
  ExpectError(WriteGzip("i2.gz", images), WriteGzip("l2.gz", LabelsFile(3)),
              {"i2.gz: trailing bytes = >= 1", "16-byte header and 2352 payload bytes"});
}

TEST_F(IdxFiles, RejectsLabelOutOfRange) {
  Bytes labels = LabelsFile(4);
  labels[8 + 2] = 10;
  ExpectError(WriteGzip("i.gz", ImagesFile(4)), WriteGzip("l.gz", labels),
              {"l.gz: label[2] = 10", "< 10"});
}

TEST_F(IdxFiles, RejectsCountMismatch) {
  ExpectError(WriteGzip("i.gz", ImagesFile(3)), WriteGzip("l.gz", LabelsFile(4)),
              {"l.gz: count = 4", "3 images"});
}

TEST_F(IdxFiles, RejectsUnexpectedCount) {
  ExpectError(WriteGzip("i.gz", ImagesFile(3)), WriteGzip("l.gz", LabelsFile(3)),
              {"i.gz: count = 3", "expected 10000"}, 10000);
}

TEST_F(IdxFiles, RefusesAbsurdCountBeforeAllocating) {
  Bytes images;
  PutBigEndian32(images, 2051);
  PutBigEndian32(images, 0xFFFFFFFFu);
  PutBigEndian32(images, 28);
  PutBigEndian32(images, 28);
  auto result = LoadIdxDataset(WriteGzip("i.gz", images), WriteGzip("l.gz", LabelsFile(1)));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), ErrorCode::kResourceExhausted);
  EXPECT_NE(result.status().message().find("count = 4294967295"), std::string::npos)
      << result.status().message();
}

TEST_F(IdxFiles, RejectsPlainFileThatIsNotGzip) {
  ExpectError(WritePlain("i.gz", ImagesFile(2)), WriteGzip("l.gz", LabelsFile(2)),
              {"i.gz: format = not gzip"});
}

TEST_F(IdxFiles, RejectsCorruptGzipData) {
  const std::string path = WriteGzip("i.gz", ImagesFile(20));
  {
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(40);
    const char garbage[16] = {'\xff', '\x00', '\x13', '\x37', '\xff', '\xff', '\x00', '\x01',
                              '\xde', '\xad', '\xbe', '\xef', '\x55', '\xaa', '\x55', '\xaa'};
    file.write(garbage, sizeof garbage);
  }
  ExpectError(path, WriteGzip("l.gz", LabelsFile(20)), {"i.gz"});
}

TEST(FashionMnist, LoadsTheInstalledDatasetWhenPresent) {
  if (!std::filesystem::exists(std::string(kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz")) {
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
  auto result = LoadFashionMnist();
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->train.size(), 60000);
  EXPECT_EQ(result->test.size(), 10000);
  // The normalization constants are the training set's own mean and std.
  EXPECT_NEAR(result->train.images.mean().item<double>(), 0.0, 0.01);
  EXPECT_NEAR(result->train.images.std().item<double>(), 1.0, 0.01);
  EXPECT_EQ(result->test.labels.bincount().min().item<int64_t>(), 1000);
}

}  // namespace
}  // namespace sparselink::torch_adapter
