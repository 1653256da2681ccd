// libFuzzer target: every packet decoder on arbitrary bytes. A decoder may refuse the input,
// but it must never crash, read out of bounds, leak, or hand back a routed tensor that fails
// its own invariants. The fused dense decoder is checked differentially: it must accept
// exactly what DecodeActivation + Scatter accept, with the same dense tensor.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "sparselink/codec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparselink;
  const std::span<const uint8_t> bytes(data, size);
  const DecodeLimits limits{.max_packet_bytes = 1 << 20, .max_entries = 1 << 22};
  auto info = InspectPacket(bytes, limits);
  auto routed = DecodeActivation(bytes, limits);
  if (routed.ok()) {
    SPARSELINK_CHECK(routed->Validate().ok());
    // The mask of a decoded activation must be usable for the gradient path too.
    (void)DecodeGradientValues(bytes, *routed, limits);
  }
  // Small tensors only: the two dense buffers are allocated per input.
  if (info.ok() && info->header.kind == PacketKind::kActivation &&
      uint64_t{info->header.rows} * info->header.cols <= (1u << 16)) {
    const size_t rows = info->header.rows, cols = info->header.cols;
    std::vector<float> want(rows * cols, 1.0f), got(rows * cols, 2.0f);
    const bool want_ok = routed.ok() && Scatter(*routed, {want.data(), rows, cols}).ok();
    const bool got_ok = DecodeActivationToDense(bytes, {got.data(), rows, cols}, limits).ok();
    SPARSELINK_CHECK(want_ok == got_ok);
    SPARSELINK_CHECK(!want_ok || std::memcmp(want.data(), got.data(), want.size() * 4) == 0);
  }
  (void)DecodeSummary(bytes, limits);
  (void)DecodeContract(bytes, limits);
  return 0;
}
