// LinkRateBudget: a boundary's bytes per step from the rate its link is measured at.
#include <algorithm>
#include <cmath>
#include <limits>

#include "sparselink/contract.hpp"

namespace sparselink {

Result<LinkRateBudget> LinkRateBudget::Create(const LinkRateOptions& options) {
  if (!(options.fill > 0 && options.fill <= 1)) {
    return FieldError(ErrorCode::kInvalidArgument, "link rate fill", options.fill,
                      "must be in (0, 1]");
  }
  if (!(options.rate_change >= 0 && options.rate_change < 10)) {
    return FieldError(ErrorCode::kInvalidArgument, "link rate change", options.rate_change,
                      "must be in [0, 10)");
  }
  if (!(options.min_target_seconds > 0 && std::isfinite(options.min_target_seconds))) {
    return FieldError(ErrorCode::kInvalidArgument, "link rate min_target_seconds",
                      options.min_target_seconds, "must be > 0 seconds");
  }
  return LinkRateBudget(options);
}

bool LinkRateBudget::Observe(double measured) {
  if (!(measured > 0) || !std::isfinite(measured)) return false;
  if (std::isfinite(rate_) && std::abs(measured - rate_) <= options_.rate_change * rate_) {
    return false;
  }
  rate_ = measured;
  return true;
}

double LinkRateBudget::BytesPerStep(double target_seconds) const {
  if (!std::isfinite(rate_)) return std::numeric_limits<double>::infinity();
  const double target = std::isfinite(target_seconds)
                            ? std::max(target_seconds, options_.min_target_seconds)
                            : options_.min_target_seconds;
  return rate_ * options_.fill * target;
}

}  // namespace sparselink
