// Checks of the flags more than one subcommand takes, so that each is refused with the same
// one-line error ("<flag> = <value>: <why>") whichever subcommand got it.
#pragma once

#include <string>
#include <string_view>

#include "sparselink/status.hpp"
#include "sparselink/types.hpp"

namespace sparselink::cli {

// A value codec flag (--codec, --gradient-codec): fp32, fp16, bf16, int8 or int4.
Result<ValueCodec> ParseCodecFlag(std::string_view flag, const std::string& value);

// --link-budget: a finite number of bytes per step, >= 0 (0: no budget).
Status CheckLinkBudgetFlag(double bytes_per_step);

// --simd: caps the routing kernels' instruction set for the whole process (simd::CapTargets);
// an error when this CPU cannot run the capped set.
Status ApplySimdFlag(const std::string& simd);

}  // namespace sparselink::cli
