// The dispatcher's own state: which instruction set it chose, and the cap that `--simd` puts
// on it. Compiled once per x86 target (hwy/foreach_target.h) so that TargetName reports the
// target the other kernels' dispatch picks.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "simd/dispatch.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <string_view>

#include "simd/kernels.hpp"

HWY_BEFORE_NAMESPACE();
namespace sparselink::simd {
namespace HWY_NAMESPACE {

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace sparselink::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace sparselink::simd {

HWY_EXPORT(TargetName);

const char* TargetName() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }
bool CapTargets(const char* name) {
  const std::string_view cap = name;
  hwy::DisableTargets(0);  // lift an earlier cap first
  int64_t wanted = 0;
  if (cap == "avx2") {
    wanted = HWY_AVX2;
  } else if (cap == "sse4") {
    wanted = HWY_SSE4;
  } else {
    return cap == "best";
  }
  // The capped set must be both compiled (HWY_TARGETS) and run by this CPU.
  if ((hwy::SupportedTargets() & HWY_TARGETS & wanted) == 0) return false;
  hwy::DisableTargets(wanted - 1);  // every better target has a lower bit
  return true;
}

}  // namespace sparselink::simd
#endif  // HWY_ONCE
