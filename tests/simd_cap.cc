// Linked into the tests that ctest also runs with the kernels capped to an older instruction
// set (the *_avx2 and *_sse4 entries): SPARSELINK_TEST_SIMD names the cap, applied before main, so
// the routers and codecs run end to end on the kernels a machine without AVX-512 (or without
// AVX) would pick. A CPU without the named set skips (exit 77).
#include <strings.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "simd/kernels.hpp"

namespace {

const bool kCapped = [] {
  const char* cap = std::getenv("SPARSELINK_TEST_SIMD");
  if (cap == nullptr) return false;
  if (!sparselink::simd::CapTargets(cap)) {
    std::fprintf(stderr, "SPARSELINK_TEST_SIMD=%s: unknown or not run by this CPU: skipped\n", cap);
    std::exit(77);
  }
  const std::string chosen = sparselink::simd::TargetName();
  if (strcasecmp(chosen.c_str(), cap) != 0) {
    std::fprintf(stderr, "SPARSELINK_TEST_SIMD=%s: the kernels run %s instead\n", cap,
                 chosen.c_str());
    std::exit(1);
  }
  std::fprintf(stderr, "kernels capped to %s\n", chosen.c_str());
  return true;
}();

}  // namespace
