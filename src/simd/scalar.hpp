// Scalar conversions of the wire format's 16-bit value codecs (docs/wire-format.md): the one
// definition the vector kernels' tails, the value codecs and the tests share. Pure integer and
// IEEE arithmetic, so the result is the same wherever it is compiled.
#pragma once

#include <bit>
#include <cstdint>

namespace sparselink::simd {

// IEEE binary16, round to nearest even; finite |f| >= 65504 saturates to +-65504 (0x7BFF), Inf
// stays Inf and NaN becomes the quiet NaN 0x7E00 (with f's sign).
inline uint16_t ScalarHalf(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u);   // NaN
  if (abs == 0x7F800000u) return static_cast<uint16_t>(sign | 0x7C00u);  // Inf
  if (abs >= 0x477FE000u) return static_cast<uint16_t>(sign | 0x7BFFu);  // >= 65504: saturate
  if (abs >= 0x38800000u) {
    // Normal binary16: rebias the exponent (127 -> 15), keep the top 10 mantissa bits and
    // round on the 13 dropped ones. A mantissa carry moves into the exponent by itself.
    // (Branch-free rounding: the round-up decision is data-dependent and mispredicts.)
    uint32_t half = ((abs >> 23) - 127 + 15) << 10 | ((abs & 0x7FFFFFu) >> 13);
    const uint32_t rest = abs & 0x1FFFu;
    half += static_cast<uint32_t>(rest > 0x1000u) | (static_cast<uint32_t>(rest == 0x1000u) & half);
    return static_cast<uint16_t>(sign | half);
  }
  // Subnormal binary16: the result is round(|f| / 2^-24). |f| = m * 2^(e - 150) with the
  // 24-bit significand m, so the quotient is m >> (126 - e), rounded on the bits shifted out.
  const uint32_t e = abs >> 23;
  if (e < 102) return sign;  // |f| < 2^-25: rounds to zero (fp32 subnormals included)
  const uint32_t m = (abs & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126 - e;  // 14 .. 24
  uint32_t q = m >> shift;
  const uint32_t rest = m & ((1u << shift) - 1);
  const uint32_t halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (q & 1u))) ++q;
  return static_cast<uint16_t>(sign | q);
}

// binary16 to float, exactly (Inf and NaN included).
inline float ScalarHalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0) {
    // Subnormal or zero: mant * 2^-24, exact in fp32.
    const float v = static_cast<float>(mant) * 0x1p-24f;
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

// Whether a binary16 code is Inf or NaN (which the wire format refuses as a value).
inline bool HalfIsNonFinite(uint16_t h) { return (h & 0x7C00u) == 0x7C00u; }

// bfloat16, round to nearest even; a finite value that would round to Inf saturates (0x7F7F);
// NaN stays a (quiet) NaN.
inline uint16_t ScalarBf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x0040u);
  // Adding 0x7FFF plus the lowest kept bit rounds to nearest with ties to even.
  const uint32_t rounded = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
  if ((x & 0x7FFFFFFFu) < 0x7F800000u && (rounded & 0x7FFFu) == 0x7F80u) {
    return static_cast<uint16_t>((rounded & 0x8000u) | 0x7F7Fu);  // finite: saturate
  }
  return static_cast<uint16_t>(rounded);
}

// bfloat16 to float, exactly.
inline float ScalarBf16ToFloat(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

}  // namespace sparselink::simd
