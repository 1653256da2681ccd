// The gradient's two calls for a mask the library made itself and the caller has kept unchanged
// since: the router's RoutedTensor on the sender, the decoder's KeptMask on the receiver
// (DecodeActivationToDenseAndMask; the torch adapter keeps both in its private state for one
// step). They write the same bytes and the same dense rows as EncodeGradientFromDense and
// DecodeGradientToDense, and check everything those check except the mask itself, whose
// validation is a serial pass over it from memory (O(rows * cols / 8) for an element KeptMask,
// O(rows * cols) for a unit one, O(kept) for a RoutedTensor), a few percent of a training
// boundary's step (docs/perf-notes.md#encodegradientfromdensetrustedmask). A mask that is not valid
// is undefined behaviour here; builds with SPARSELINK_DCHECK on validate it anyway.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "sparselink/codec.hpp"
#include "sparselink/routing.hpp"

namespace sparselink::internal {

Status EncodeGradientFromDenseTrustedMask(const KeptMask& mask, ConstMatrix gradient,
                                          ValueCodec codec, const PacketLabel& label,
                                          const EncodeOptions& options, std::vector<uint8_t>* out);

Status DecodeGradientToDenseTrustedMask(std::span<const uint8_t> packet, const RoutedTensor& mask,
                                        MutableMatrix out, std::vector<float>* values,
                                        const DecodeLimits& limits, PacketInfo* info);

}  // namespace sparselink::internal
