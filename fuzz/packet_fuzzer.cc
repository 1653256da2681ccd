// libFuzzer target: every packet decoder on arbitrary bytes. A decoder may refuse the input,
// but it must never crash, read out of bounds, leak, or hand back a routed tensor that fails
// its own invariants.
#include <cstddef>
#include <cstdint>
#include <span>

#include "sparselink/codec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparselink;
  const std::span<const uint8_t> bytes(data, size);
  const DecodeLimits limits{.max_packet_bytes = 1 << 20, .max_entries = 1 << 22};
  (void)InspectPacket(bytes, limits);
  if (auto routed = DecodeActivation(bytes, limits); routed.ok()) {
    SPARSELINK_CHECK(routed->Validate().ok());
    // The mask of a decoded activation must be usable for the gradient path too.
    (void)DecodeGradient(bytes, *routed, limits);
  }
  (void)DecodeSummary(bytes, limits);
  (void)DecodeContract(bytes, limits);
  return 0;
}
