// Fashion-MNIST loader: reads the four gzip'd idx files (Debian package dataset-fashion-mnist)
// into LibTorch tensors ready for training.
//
// The bytes are parsed by the core's idx reader (include/sparselink/idx.hpp, which documents
// the format and every check: magic, 28x28 dims, label < 10, the exact number of payload bytes,
// a real gzip stream); this loader adds image count == label count. Each failure is a Status
// whose message names the path, the field and the value.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "sparselink/idx.hpp"
#include "sparselink/status.hpp"

namespace sparselink::torch_adapter {

// Where dataset-fashion-mnist installs the files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
inline constexpr int64_t kFashionMnistTrainCount = 60000;
inline constexpr int64_t kFashionMnistTestCount = 10000;
inline constexpr int64_t kImageSide = 28;
inline constexpr int64_t kNumClasses = 10;
// Per-pixel normalization of the training set (pixel / 255 - mean) / std, also applied to the
// test set.
inline constexpr float kFashionMnistMean = 0.2860f;
inline constexpr float kFashionMnistStd = 0.3530f;
// Header counts above this are refused before anything is allocated (kIdxMaxCount).
inline constexpr int64_t kMaxIdxCount = kIdxMaxCount;

// A labelled image set. `images` is float32 [N, 1, 28, 28], normalized as above; `labels` is
// int64 [N] with values in [0, 10). Both contiguous, on the CPU; the struct owns them (tensors
// are reference counted, so copies are shallow).
struct Dataset {
  torch::Tensor images;
  torch::Tensor labels;

  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

struct FashionMnist {
  Dataset train;  // 60000 samples
  Dataset test;   // 10000 samples
};

// Reads one image file and its label file from arbitrary paths. `expected_count` = 0 accepts
// any count in [0, kMaxIdxCount]; otherwise the header count must equal it.
// Cost: reads and inflates both files (about 0.5 s for the 60000-sample training set) and
// allocates N*784 bytes of uint8 plus N*784 floats. Thread-safe (no shared state).
Result<Dataset> LoadIdxDataset(const std::string& images_path, const std::string& labels_path,
                               int64_t expected_count = 0);

// Reads train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and
// t10k-labels-idx1-ubyte.gz from `dir` and checks the counts are 60000 and 10000. A missing
// file is a kIo error that says "install it with: apt-get install dataset-fashion-mnist".
Result<FashionMnist> LoadFashionMnist(const std::string& dir = kFashionMnistDir);

}  // namespace sparselink::torch_adapter
