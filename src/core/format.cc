#include "core/format.hpp"

#include <iomanip>
#include <sstream>

namespace sparselink::internal {

std::string MustEqual(std::string_view what, uint64_t value) {
  std::ostringstream why;
  why << "must equal " << what << " = " << value;
  return why.str();
}

std::string Hex(uint64_t v) {
  std::ostringstream out;
  out << "0x" << std::hex << std::setw(16) << std::setfill('0') << v;
  return out.str();
}

}  // namespace sparselink::internal
