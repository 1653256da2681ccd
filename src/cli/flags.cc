#include "cli/flags.hpp"

#include <cmath>

#include "simd/kernels.hpp"

namespace sparselink::cli {

Result<ValueCodec> ParseCodecFlag(std::string_view flag, const std::string& value) {
  auto codec = ParseValueCodec(value);
  if (!codec.ok()) {
    return FieldError(ErrorCode::kInvalidArgument, flag, value,
                      "unknown value codec (one of " + NameChoices(kValueCodecTraits) + ")");
  }
  return codec.value();
}

Status CheckLinkBudgetFlag(double bytes_per_step) {
  if (!std::isfinite(bytes_per_step) || bytes_per_step < 0) {
    return FieldError(ErrorCode::kInvalidArgument, "--link-budget", bytes_per_step,
                      "must be a finite number of bytes per step >= 0");
  }
  return Status::Ok();
}

Status ApplySimdFlag(const std::string& simd) {
  if (!simd::CapTargets(simd.c_str())) {
    return FieldError(ErrorCode::kInvalidArgument, "--simd", simd,
                      "this CPU cannot run it (best, avx2 or sse4)");
  }
  return Status::Ok();
}

}  // namespace sparselink::cli
