#include "sparselink/status.hpp"

namespace sparselink {

std::string Status::ToString() const {
  if (ok()) return "ok";
  return std::string(ErrorCodeName(code_)) + ": " + message_;
}

namespace internal {
void CheckFailed(const char* file, int line, const char* expr, const std::string& detail) {
  std::fprintf(stderr, "%s:%d: SPARSELINK_CHECK failed: %s %s\n", file, line, expr, detail.c_str());
  std::fflush(stderr);
  std::abort();
}
}  // namespace internal

}  // namespace sparselink
