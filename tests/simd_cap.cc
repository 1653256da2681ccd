// Linked into the tests that ctest also runs with the kernels capped to an older instruction
// set (the *_avx2 and *_sse4 entries): SPARSELINK_SIMD names the cap, applied before main, so
// the routers and codecs run end to end on the kernels a machine without AVX-512 (or without
// AVX) would pick. A CPU without the named set skips (exit 77).
#include <cstdio>
#include <cstdlib>

#include "simd/kernels.hpp"

namespace {

const bool kCapped = [] {
  const char* cap = std::getenv("SPARSELINK_SIMD");
  if (cap == nullptr) return false;
  if (!sparselink::simd::CapTargets(cap)) {
    std::fprintf(stderr, "SPARSELINK_SIMD=%s: unknown or not supported by this CPU: skipped\n",
                 cap);
    std::exit(77);
  }
  std::fprintf(stderr, "kernels capped to %s\n", sparselink::simd::TargetName());
  return true;
}();

}  // namespace
