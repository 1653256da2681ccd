// libFuzzer target: every packet decoder on arbitrary bytes. A decoder may refuse the input,
// but it must never crash, read out of bounds, leak, or hand back a routed tensor that fails
// its own invariants. The fused dense decoder is checked differentially: it must accept
// exactly what DecodeActivation + Scatter accept, with the same dense tensor; the gradient check
// without a mask, against DecodeGradientValues with a mask that agrees with the header.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "sparselink/codec.hpp"

namespace {

using namespace sparselink;

// A mask that agrees with a gradient header (shape, granularity, kept count): rows filled with
// their first columns in order. Any such mask will do: the checks without one must refuse
// exactly what the decoders refuse for any mask, except an element row's overflowing product.
RoutedTensor MaskFor(const PacketHeader& h) {
  RoutedTensor mask;
  mask.rows = h.rows;
  mask.cols = h.cols;
  mask.granularity = h.granularity;
  mask.row_offsets = {0};
  const bool unit = h.granularity == Granularity::kUnit;
  uint64_t left = unit ? h.count_full / h.rows : h.count_full;
  for (uint32_t r = 0; r < (unit ? 1u : h.rows); ++r) {
    const uint64_t n = std::min<uint64_t>(left, h.cols);
    for (uint32_t c = 0; c < n; ++c) mask.indices.push_back(c);
    mask.row_offsets.push_back(static_cast<uint32_t>(mask.indices.size()));
    left -= n;
  }
  mask.tiers.assign(h.count_full, Tier::kFull);
  mask.values.assign(h.count_full, 0.0f);
  return mask;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  // Small budgets keep each input's allocations small: at most 1 MiB, or 64 times the input.
  const DecodeLimits limits{.max_packet_bytes = 1 << 20,
                            .max_entries = 1 << 22,
                            .max_expansion = 64,
                            .expansion_floor_bytes = 1 << 20};
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
  // A gradient: what the check without a mask refuses, a decoder given an agreeing mask
  // refuses; what the decoder refuses, the check refuses too, but for an overflowing q * scale
  // of an element row, which only the mask places. (With several bad values the two may name
  // different ones first: the check reads all scales before any code.)
  if (info.ok() && info->header.kind == PacketKind::kGradient) {
    const Status checked = CheckGradientValues(bytes, limits);
    const RoutedTensor mask = MaskFor(info->header);
    SPARSELINK_CHECK(mask.ValidateMask().ok());
    const Status decoded = DecodeGradientValues(bytes, mask, limits).status();
    SPARSELINK_CHECK(checked.ok() || !decoded.ok());
    SPARSELINK_CHECK(decoded.ok() || !checked.ok() ||
                     (info->header.granularity == Granularity::kElement &&
                      decoded.message().find("not finite") != std::string::npos));
  }
  (void)DecodeSummary(bytes, limits);
  (void)DecodeContract(bytes, limits);
  return 0;
}
