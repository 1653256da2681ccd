// The score of an entry, as the router computes it (private to src/routing).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

#include "simd/kernels.hpp"
#include "sparselink/routing.hpp"

namespace sparselink::internal {

inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The value an entry is sent (and summarized) as: non-finite ones only get this far under
// OnNonFinite::kTreatAsZero, and then they are 0.
inline float SafeValue(float a) { return std::isfinite(a) ? a : 0.0f; }

// Everything scoring needs, fixed for one Route call. An entry's score is a float: |a| for
// kMagnitude, |a| * w_c for kSensitivity (w_c = eps + S_unit(c) rounded to float, one IEEE
// multiply), a 24-bit hash fraction for kRandom; a non-finite activation scores 0. Scores are
// handled as keys (simd/kernels.hpp: the float's bits without the sign), which order exactly
// like the scores.
struct Scorer {
  Scoring scoring = Scoring::kMagnitude;
  uint64_t seed = 0;
  uint64_t step = 0;
  const float* weight = nullptr;  // kSensitivity: w_c per column

  // Keys of columns [c0, c1) of row r (values `row`) into key[c - c0]. Returns whether all
  // those values were finite.
  bool KeyRange(const float* row, size_t r, size_t c0, size_t c1, uint32_t* key) const {
    if (scoring == Scoring::kRandom) {
      const uint64_t row_hash = SplitMix64(SplitMix64(SplitMix64(seed) ^ step) ^ r);
      bool all_finite = true;
      for (size_t c = c0; c < c1; ++c) {
        const float u = static_cast<float>(SplitMix64(row_hash ^ c) >> 40) * 0x1p-24f;
        const bool finite = std::isfinite(row[c]);
        all_finite = all_finite && finite;
        key[c - c0] = finite ? std::bit_cast<uint32_t>(u) : 0u;
      }
      return all_finite;
    }
    const float* w = scoring == Scoring::kSensitivity ? weight + c0 : nullptr;
    return simd::MagnitudeKeys(row + c0, w, c1 - c0, key);
  }
};

// The score a key stands for.
inline double KeyScore(uint32_t key) { return static_cast<double>(std::bit_cast<float>(key)); }

}  // namespace sparselink::internal
