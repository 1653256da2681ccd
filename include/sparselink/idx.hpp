// idx files (the MNIST / Fashion-MNIST format), parsed from bytes: the byte-level half of the
// dataset loader, free of LibTorch so that it can be fuzzed and tested on its own.
//
// idx format (big-endian header, then raw bytes):
//   images: magic 2051 (0x00000803), count, rows, cols, then count*rows*cols uint8 pixels
//   labels: magic 2049 (0x00000801), count, then count uint8 labels
// Every check is strict: magic, dims, label < num_classes, the exact number of payload bytes (a
// truncated file and trailing bytes are both errors) and, for gzip input, a real gzip stream
// (magic 1f 8b, deflate, CRC and length trailer; several members may follow each other, as
// `cat a.gz b.gz` makes; anything else after the last member is an error). Each failure is a
// Status whose message names the file, the field and the value: "<name>: <field> = <value>:
// <why>".
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sparselink/status.hpp"

namespace sparselink {

// Header counts above this are refused before anything is allocated (the largest real file
// holds 60000 images; 2^20 28x28 images are 822 MB of pixels).
inline constexpr int64_t kIdxMaxCount = int64_t{1} << 20;

enum class IdxKind : uint8_t {
  kImages = 0,  // idx3 ubyte, magic 2051
  kLabels = 1,  // idx1 ubyte, magic 2049
};

struct IdxOptions {
  IdxKind kind = IdxKind::kImages;
  bool gzip = true;            // the bytes are a gzip stream (false: plain idx bytes)
  int64_t expected_count = 0;  // > 0: the header count must equal it; 0: any count
  int64_t max_count = kIdxMaxCount;
  uint32_t rows = 28;  // images: the header dims must equal rows x cols
  uint32_t cols = 28;
  uint32_t num_classes = 10;  // labels: every label must be < num_classes
};

// One parsed idx file: `count` items of rows x cols bytes (labels: 1 x 1).
struct IdxData {
  int64_t count = 0;
  uint32_t rows = 1;
  uint32_t cols = 1;
  std::vector<uint8_t> payload;  // count * rows * cols bytes
};

// Parses one idx file held in `bytes`; `name` (usually the path) starts every error message.
// Errors: kIo for a stream that is not gzip, corrupt, truncated or followed by trailing bytes,
// or a payload of the wrong length; kUnsupported for a wrong magic; kShapeMismatch for wrong
// dims or an unexpected count; kResourceExhausted for a count above max_count (before any
// allocation); kInvalidArgument for a label out of range or bad options.
// Cost: inflates the stream in one pass into the payload (count*rows*cols bytes, grown a MiB
// at a time up to the size the checked header allows); O(bytes). Thread-safe (no shared state).
Result<IdxData> ParseIdx(std::span<const uint8_t> bytes, std::string_view name,
                         const IdxOptions& options);

// Reads the file at `path` and parses it (errors name the path; a missing or unreadable file is
// kIo). Reads the whole file into memory first (the 60000-image file is 26 MB gzip'd).
Result<IdxData> ReadIdxFile(const std::string& path, const IdxOptions& options);

}  // namespace sparselink
