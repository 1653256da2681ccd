// Fashion-MNIST idx.gz reader: the bytes are parsed by the core's ReadIdxFile
// (include/sparselink/idx.hpp, fuzzed without LibTorch); this file only turns the parsed
// payloads into tensors and checks that images and labels agree.
#include "sparselink/torch/fashion_mnist.hpp"

#include <filesystem>
#include <string>

#include "sparselink/idx.hpp"

namespace sparselink::torch_adapter {
namespace {

constexpr const char* kInstallHint = "install it with: apt-get install dataset-fashion-mnist";

// "<path>: <field>", the field name of every message about a file.
std::string Field(const std::string& path, const char* field) { return path + ": " + field; }

}  // namespace

Result<Dataset> LoadIdxDataset(const std::string& images_path, const std::string& labels_path,
                               int64_t expected_count) {
  if (expected_count < 0) {
    return FieldError(ErrorCode::kInvalidArgument, "expected_count", expected_count,
                      "must be >= 0 (0 = any)");
  }
  SPARSELINK_ASSIGN_OR_RETURN(IdxData pixels,
                              ReadIdxFile(images_path, {.kind = IdxKind::kImages,
                                                        .expected_count = expected_count,
                                                        .max_count = kMaxIdxCount,
                                                        .rows = kImageSide,
                                                        .cols = kImageSide}));
  SPARSELINK_ASSIGN_OR_RETURN(IdxData labels,
                              ReadIdxFile(labels_path, {.kind = IdxKind::kLabels,
                                                        .expected_count = expected_count,
                                                        .max_count = kMaxIdxCount,
                                                        .num_classes = kNumClasses}));
  if (pixels.count != labels.count) {
    return FieldError(
        ErrorCode::kShapeMismatch, Field(labels_path, "count"), labels.count,
        "differs from the " + std::to_string(pixels.count) + " images in " + images_path);
  }
  // from_blob borrows the payloads; .to() copies them into tensors that own their storage.
  torch::Tensor images = torch::from_blob(pixels.payload.data(),
                                          {pixels.count, 1, kImageSide, kImageSide}, torch::kUInt8)
                             .to(torch::kFloat32)
                             .div_(255.0f)
                             .sub_(kFashionMnistMean)
                             .div_(kFashionMnistStd);
  torch::Tensor label_tensor =
      torch::from_blob(labels.payload.data(), {labels.count}, torch::kUInt8).to(torch::kInt64);
  return Dataset{.images = std::move(images), .labels = std::move(label_tensor)};
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
