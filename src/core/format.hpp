// Pieces of error messages more than one module writes (private to the library), so that the
// same fact reads the same wherever it is refused.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sparselink::internal {

// "must equal <what> = <value>": the why of a size or shape that disagrees with another field.
std::string MustEqual(std::string_view what, uint64_t value);

// 0x followed by 16 hex digits: magics and checksums.
std::string Hex(uint64_t v);

}  // namespace sparselink::internal
