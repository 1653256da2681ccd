// Fashion-MNIST idx.gz reader.
//
// Each file is read through zlib's gz* API in one pass: the 8- or 16-byte big-endian header is
// read and checked first (magic, count, dims), the count is bounded before any allocation, the
// payload is inflated straight into a uint8 tensor, and a final one-byte read must hit end of
// file. zlib reads a file without a gzip header transparently, so gzdirect() is checked after
// the first read: the dataset files are always gzip'd, and a plain file means something else
// was put in their place.
#include "sparselink/torch/fashion_mnist.hpp"

#include <zlib.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>

namespace sparselink::torch_adapter {
namespace {

constexpr uint32_t kImagesMagic = 2051;
constexpr uint32_t kLabelsMagic = 2049;
constexpr const char* kInstallHint = "install it with: apt-get install dataset-fashion-mnist";

struct GzCloser {
  void operator()(gzFile_s* file) const { gzclose(file); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

// "<path>: <field>", the field name of every message about a file.
std::string Field(const std::string& path, const char* field) { return path + ": " + field; }

uint32_t BigEndian32(const unsigned char* bytes) {
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) |
         uint32_t{bytes[3]};
}

Result<GzFile> Open(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return FieldError(ErrorCode::kIo, "path", path, "no such file");
  }
  errno = 0;
  GzFile file(gzopen(path.c_str(), "rb"));
  if (!file) {
    return FieldError(ErrorCode::kIo, "path", path,
                      std::string("cannot open: ") + std::strerror(errno));
  }
  return file;
}

// Reads exactly `size` bytes. `what` names the part being read ("header bytes", "pixel bytes",
// "label bytes").
Status ReadExactly(gzFile_s* file, const std::string& path, const char* what, unsigned char* data,
                   int64_t size) {
  int64_t done = 0;
  while (done < size) {
    const auto chunk = static_cast<unsigned>(std::min<int64_t>(size - done, int64_t{1} << 24));
    const int got = gzread(file, data + done, chunk);
    if (got < 0) {
      int errnum = 0;
      const char* message = gzerror(file, &errnum);
      return FieldError(ErrorCode::kIo, Field(path, "gzip"), "corrupt",
                        std::string("inflate failed while reading the ") + what + ": " + message);
    }
    if (got == 0) break;
    done += got;
  }
  if (done < size) {
    return FieldError(ErrorCode::kIo, Field(path, what), done,
                      "truncated: expected " + std::to_string(size));
  }
  return Status::Ok();
}

// Checks the file ends right after the payload and the gzip stream is intact.
Status CheckEnd(gzFile_s* file, const std::string& path, int header_bytes, int64_t payload_bytes) {
  unsigned char extra = 0;
  const int got = gzread(file, &extra, 1);
  if (got > 0) {
    return FieldError(ErrorCode::kIo, Field(path, "trailing bytes"), ">= 1",
                      "expected the end of the file after the " + std::to_string(header_bytes) +
                          "-byte header and " + std::to_string(payload_bytes) + " payload bytes");
  }
  int errnum = Z_OK;
  const char* message = gzerror(file, &errnum);
  if (got < 0 || (errnum != Z_OK && errnum != Z_BUF_ERROR)) {
    return FieldError(ErrorCode::kIo, Field(path, "gzip"), "corrupt", message);
  }
  if (errnum == Z_BUF_ERROR) {  // the compressed stream itself ended early
    return FieldError(ErrorCode::kIo, Field(path, "gzip"), "truncated", message);
  }
  return Status::Ok();
}

Status CheckIsGzip(gzFile_s* file, const std::string& path) {
  if (gzdirect(file) != 0) {
    return FieldError(ErrorCode::kIo, Field(path, "format"), "not gzip",
                      "expected a gzip'd idx file (.gz)");
  }
  return Status::Ok();
}

Status CheckCount(const std::string& path, int64_t count, int64_t expected_count) {
  if (count > kMaxIdxCount) {
    return FieldError(ErrorCode::kResourceExhausted, Field(path, "count"), count,
                      "more than " + std::to_string(kMaxIdxCount) + " items; refusing to allocate");
  }
  if (expected_count > 0 && count != expected_count) {
    return FieldError(ErrorCode::kShapeMismatch, Field(path, "count"), count,
                      "expected " + std::to_string(expected_count));
  }
  return Status::Ok();
}

// Returns uint8 [N, 1, 28, 28].
Result<torch::Tensor> ReadImages(const std::string& path, int64_t expected_count) {
  SPARSELINK_ASSIGN_OR_RETURN(GzFile file, Open(path));
  std::array<unsigned char, 16> header{};
  SPARSELINK_RETURN_IF_ERROR(ReadExactly(file.get(), path, "header bytes", header.data(), 16));
  SPARSELINK_RETURN_IF_ERROR(CheckIsGzip(file.get(), path));
  const uint32_t magic = BigEndian32(&header[0]);
  if (magic != kImagesMagic) {
    return FieldError(ErrorCode::kUnsupported, Field(path, "magic"), magic,
                      "expected 2051 (idx3 ubyte images)");
  }
  const int64_t count = BigEndian32(&header[4]);
  const uint32_t rows = BigEndian32(&header[8]);
  const uint32_t cols = BigEndian32(&header[12]);
  if (rows != kImageSide || cols != kImageSide) {
    return FieldError(ErrorCode::kShapeMismatch, Field(path, "dims"),
                      std::to_string(rows) + "x" + std::to_string(cols), "expected 28x28");
  }
  SPARSELINK_RETURN_IF_ERROR(CheckCount(path, count, expected_count));
  torch::Tensor pixels = torch::empty({count, 1, kImageSide, kImageSide}, torch::kUInt8);
  const int64_t payload = count * kImageSide * kImageSide;
  SPARSELINK_RETURN_IF_ERROR(
      ReadExactly(file.get(), path, "pixel bytes", pixels.data_ptr<uint8_t>(), payload));
  SPARSELINK_RETURN_IF_ERROR(CheckEnd(file.get(), path, 16, payload));
  return pixels;
}

// Returns int64 [N].
Result<torch::Tensor> ReadLabels(const std::string& path, int64_t expected_count) {
  SPARSELINK_ASSIGN_OR_RETURN(GzFile file, Open(path));
  std::array<unsigned char, 8> header{};
  SPARSELINK_RETURN_IF_ERROR(ReadExactly(file.get(), path, "header bytes", header.data(), 8));
  SPARSELINK_RETURN_IF_ERROR(CheckIsGzip(file.get(), path));
  const uint32_t magic = BigEndian32(&header[0]);
  if (magic != kLabelsMagic) {
    return FieldError(ErrorCode::kUnsupported, Field(path, "magic"), magic,
                      "expected 2049 (idx1 ubyte labels)");
  }
  const int64_t count = BigEndian32(&header[4]);
  SPARSELINK_RETURN_IF_ERROR(CheckCount(path, count, expected_count));
  torch::Tensor labels = torch::empty({count}, torch::kUInt8);
  uint8_t* data = labels.data_ptr<uint8_t>();
  SPARSELINK_RETURN_IF_ERROR(ReadExactly(file.get(), path, "label bytes", data, count));
  SPARSELINK_RETURN_IF_ERROR(CheckEnd(file.get(), path, 8, count));
  for (int64_t i = 0; i < count; ++i) {
    if (data[i] >= kNumClasses) {
      return FieldError(ErrorCode::kInvalidArgument,
                        Field(path, ("label[" + std::to_string(i) + "]").c_str()), int{data[i]},
                        "must be < 10");
    }
  }
  return labels.to(torch::kInt64);
}

}  // namespace

Result<Dataset> LoadIdxDataset(const std::string& images_path, const std::string& labels_path,
                               int64_t expected_count) {
  if (expected_count < 0) {
    return FieldError(ErrorCode::kInvalidArgument, "expected_count", expected_count,
                      "must be >= 0 (0 = any)");
  }
  SPARSELINK_ASSIGN_OR_RETURN(torch::Tensor pixels, ReadImages(images_path, expected_count));
  SPARSELINK_ASSIGN_OR_RETURN(torch::Tensor labels, ReadLabels(labels_path, expected_count));
  if (pixels.size(0) != labels.size(0)) {
    return FieldError(
        ErrorCode::kShapeMismatch, Field(labels_path, "count"), labels.size(0),
        "differs from the " + std::to_string(pixels.size(0)) + " images in " + images_path);
  }
  torch::Tensor images =
      pixels.to(torch::kFloat32).div_(255.0f).sub_(kFashionMnistMean).div_(kFashionMnistStd);
  return Dataset{.images = std::move(images), .labels = std::move(labels)};
}

Result<FashionMnist> LoadFashionMnist(const std::string& dir) {
  const std::filesystem::path base(dir);
  const char* names[] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
  for (const char* name : names) {
    std::error_code ec;
    const std::string path = (base / name).string();
    if (!std::filesystem::exists(path, ec)) {
      return FieldError(ErrorCode::kIo, "path", path, std::string("no such file; ") + kInstallHint);
    }
  }
  SPARSELINK_ASSIGN_OR_RETURN(Dataset train,
                              LoadIdxDataset((base / names[0]).string(), (base / names[1]).string(),
                                             kFashionMnistTrainCount));
  SPARSELINK_ASSIGN_OR_RETURN(Dataset test,
                              LoadIdxDataset((base / names[2]).string(), (base / names[3]).string(),
                                             kFashionMnistTestCount));
  return FashionMnist{.train = std::move(train), .test = std::move(test)};
}

}  // namespace sparselink::torch_adapter
