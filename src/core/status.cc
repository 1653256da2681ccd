#include "sparselink/status.hpp"

namespace sparselink {

const char* ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk: return "ok";
    case ErrorCode::kInvalidArgument: return "invalid_argument";
    case ErrorCode::kShapeMismatch: return "shape_mismatch";
    case ErrorCode::kNonFinite: return "non_finite";
    case ErrorCode::kCorruptPacket: return "corrupt_packet";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kResourceExhausted: return "resource_exhausted";
    case ErrorCode::kTimeout: return "timeout";
    case ErrorCode::kClosed: return "closed";
    case ErrorCode::kRefused: return "refused";
    case ErrorCode::kIo: return "io";
  }
  return "unknown";
}

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
