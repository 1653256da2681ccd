// libFuzzer target: the idx dataset reader (ParseIdx) on arbitrary bytes, no LibTorch. The
// first byte picks the file kind (bit 0: labels) and the layer (bit 1: plain idx bytes, else
// gzip); the rest is the file. A parse may refuse the input, but it must never crash, read out
// of bounds, leak, or allocate beyond the bytes that arrive; what it accepts must be
// consistent with its header.
#include <cstddef>
#include <cstdint>
#include <span>

#include "sparselink/idx.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparselink;
  if (size == 0) return 0;
  const IdxOptions options{.kind = (data[0] & 1) != 0 ? IdxKind::kLabels : IdxKind::kImages,
                           .gzip = (data[0] & 2) == 0,
                           .max_count = 4096};
  auto parsed = ParseIdx(std::span<const uint8_t>(data + 1, size - 1), "fuzz", options);
  if (parsed.ok()) {
    SPARSELINK_CHECK_LE(parsed->count, options.max_count);
    SPARSELINK_CHECK_EQ(parsed->payload.size(),
                        static_cast<size_t>(parsed->count) * parsed->rows * parsed->cols);
    if (options.kind == IdxKind::kLabels) {
      for (uint8_t label : parsed->payload) SPARSELINK_CHECK_LT(label, options.num_classes);
    }
    // Plain idx bytes: the payload is the input after the header, byte for byte.
    if (!options.gzip) {
      const size_t header = options.kind == IdxKind::kLabels ? 8 : 16;
      SPARSELINK_CHECK_EQ(size - 1, header + parsed->payload.size());
    }
  }
  return 0;
}
