// Value-codec kernels (wire format v1): fp32 to and from fp16 and bf16, and the int8
// quantizer and dequantizer. Bit-identical to the scalar conversions of simd/scalar.hpp.
//
// Compiled once per x86 target by hwy/foreach_target.h (the file includes itself); the
// exported table and HWY_DYNAMIC_DISPATCH pick the best target at the first call. Every
// result is the same on every target (simd/kernels.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "simd/value_kernels.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "simd/kernels.hpp"
#include "simd/lanes-inl.hpp"
#include "simd/scalar.hpp"

HWY_BEFORE_NAMESPACE();
namespace sparselink::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

int8_t ScalarQuantize(float v, double scale) {
  if (scale == 0.0 || !std::isfinite(v)) return 0;
  const double x = static_cast<double>(v) / scale;
  double r = std::trunc(x);
  if (std::fabs(x - r) >= 0.5) r += std::copysign(1.0, x);
  return static_cast<int8_t>(std::clamp(r, -127.0, 127.0));
}

// Half to float; false for Inf/NaN.

void FloatToHalf(const float* HWY_RESTRICT in, size_t n, uint16_t* HWY_RESTRICT out) {
  const DF df;
  const DU du;
  const hn::Rebind<uint16_t, DU> d16;
  const size_t lanes = hn::Lanes(du);
  size_t i = 0;
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2 && !defined(HWY_DISABLE_F16C)
  // F16C (vcvtps2ph, round to nearest even whatever MXCSR says) on inputs the wire format's
  // way: a finite |x| above 65504 saturates to 65504 rather than rounding to infinity, and a
  // NaN becomes the quiet NaN 0x7E00 with its sign (the quiet float NaN converts to it).
  // Less than half the integer emulation's time (docs/perf-notes.md#floattohalf).
  const hn::Rebind<hwy::float16_t, DF> dh;
  const auto convert = [&](size_t at) {
    const auto x = hn::BitCast(du, hn::LoadU(df, in + at));
    const auto sign = hn::And(x, hn::Set(du, ~kAbsMask));
    const auto abs = hn::And(x, hn::Set(du, kAbsMask));
    const auto inf = hn::Set(du, kInfBits);
    const auto finite = hn::Or(sign, hn::Min(abs, hn::Set(du, 0x477FE000u)));
    const auto other = hn::IfThenElse(hn::Gt(abs, inf), hn::Or(sign, hn::Set(du, 0x7FC00000u)), x);
    const auto y = hn::BitCast(df, hn::IfThenElse(hn::Lt(abs, inf), finite, other));
    hn::StoreU(hn::BitCast(d16, hn::DemoteTo(dh, y)), d16, out + at);
  };
  for (; i + lanes <= n; i += lanes) convert(i);
  // The tail as the last whole vector again (the same values written twice), not entry by entry.
  if (i < n && n >= lanes) {
    convert(n - lanes);
    i = n;
  }
#else
  const DI di;
  for (; i + lanes <= n; i += lanes) {
    const auto x = hn::BitCast(du, hn::LoadU(df, in + i));
    const auto sign = hn::And(hn::ShiftRight<16>(x), hn::Set(du, 0x8000u));
    const auto abs = hn::And(x, hn::Set(du, kAbsMask));
    const auto normal =
        hn::ShiftRight<13>(hn::Add(hn::Sub(abs, hn::Set(du, 0x38000000u - 0xFFFu)),
                                   hn::And(hn::ShiftRight<13>(abs), hn::Set(du, 1u))));
    const auto sub =
        hn::BitCast(du, hn::NearestInt(hn::Mul(hn::BitCast(df, abs), hn::Set(df, 0x1p24f))));
    auto h = hn::IfThenElse(hn::Lt(abs, hn::Set(du, 0x38800000u)), sub, normal);
    h = hn::IfThenElse(hn::Lt(abs, hn::Set(du, 0x477FE000u)), h, hn::Set(du, 0x7BFFu));
    h = hn::IfThenElse(hn::Eq(abs, hn::Set(du, kInfBits)), hn::Set(du, 0x7C00u), h);
    h = hn::IfThenElse(hn::Gt(abs, hn::Set(du, kInfBits)), hn::Set(du, 0x7E00u), h);
    hn::StoreU(hn::DemoteTo(d16, hn::BitCast(di, hn::Or(sign, h))), d16, out + i);
  }
#endif
  for (; i < n; ++i) StoreU16(ScalarHalf(in[i]), out + i);
}

void FloatToBf16(const float* HWY_RESTRICT in, size_t n, uint16_t* HWY_RESTRICT out) {
  const DF df;
  const DU du;
  const DI di;
  const hn::Rebind<uint16_t, DU> d16;
  const size_t lanes = hn::Lanes(du);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto x = hn::BitCast(du, hn::LoadU(df, in + i));
    const auto abs = hn::And(x, hn::Set(du, kAbsMask));
    auto r = hn::ShiftRight<16>(
        hn::Add(hn::Add(x, hn::Set(du, 0x7FFFu)), hn::And(hn::ShiftRight<16>(x), hn::Set(du, 1u))));
    const auto overflow = hn::And(hn::Lt(abs, hn::Set(du, kInfBits)),
                                  hn::Eq(hn::And(r, hn::Set(du, 0x7FFFu)), hn::Set(du, 0x7F80u)));
    r = hn::IfThenElse(overflow, hn::Or(hn::And(r, hn::Set(du, 0x8000u)), hn::Set(du, 0x7F7Fu)), r);
    r = hn::IfThenElse(hn::Gt(abs, hn::Set(du, kInfBits)),
                       hn::Or(hn::ShiftRight<16>(x), hn::Set(du, 0x0040u)), r);
    hn::StoreU(hn::DemoteTo(d16, hn::BitCast(di, r)), d16, out + i);
  }
  for (; i < n; ++i) StoreU16(ScalarBf16(in[i]), out + i);
}

float MaxAbsFinite(const float* HWY_RESTRICT in, size_t n) {
  const DF df;
  const DU du;
  const size_t lanes = hn::Lanes(df);
  auto best = hn::Zero(du);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto abs = hn::And(hn::BitCast(du, hn::LoadU(df, in + i)), hn::Set(du, kAbsMask));
    // Non-negative floats order like their bits; non-finite ones count as 0.
    best = hn::Max(best, hn::IfThenElseZero(hn::Lt(abs, hn::Set(du, kInfBits)), abs));
  }
  uint32_t m = hn::GetLane(hn::MaxOfLanes(du, best));
  for (; i < n; ++i) {
    const uint32_t abs = std::bit_cast<uint32_t>(in[i]) & kAbsMask;
    if (abs < kInfBits) m = std::max(m, abs);
  }
  return std::bit_cast<float>(m);
}

void QuantizeInt8(const float* HWY_RESTRICT in, size_t n, float scale, int8_t* HWY_RESTRICT out) {
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> df;
  const hn::Rebind<int32_t, decltype(dd)> di32;
  const hn::Rebind<int8_t, decltype(dd)> di8;
  const size_t lanes = hn::Lanes(dd);
  const double s = static_cast<double>(scale);
  size_t i = 0;
  if (scale != 0.0f) {
    const auto vs = hn::Set(dd, s);
    const auto half = hn::Set(dd, 0.5);
    const auto one = hn::Set(dd, 1.0);
    const auto levels = hn::Set(dd, 127.0);
    const auto quantize = [&](const float* from, int8_t* to) {
      const auto v = hn::LoadU(df, from);
      const auto x = hn::Div(hn::PromoteTo(dd, hn::IfThenElseZero(hn::IsFinite(v), v)), vs);
      auto r = hn::Trunc(x);
      r = hn::Add(r,
                  hn::IfThenElseZero(hn::Ge(hn::Abs(hn::Sub(x, r)), half), hn::CopySign(one, x)));
      r = hn::Min(hn::Max(r, hn::Neg(levels)), levels);
      hn::StoreU(hn::DemoteTo(di8, hn::DemoteTo(di32, r)), di8, to);
    };
    // Whole float vectors multiply by the reciprocal instead (a double division per value was
    // the kernel's cost): y = v * (1 / scale) is within 2^-16 of v / scale for |v / scale| <=
    // 127.5, so it rounds to the same integer unless the quotient lies within that of a
    // halfway point; a vector with any lane within 2^-14 of one goes the exact way.
    const float inv = 1.0f / scale;
    if (std::isfinite(inv)) {
      const DF dfl;
      const hn::Rebind<int32_t, DF> di32f;
      const hn::Rebind<int8_t, DF> di8f;
      const size_t float_lanes = hn::Lanes(dfl);
      const auto vinv = hn::Set(dfl, inv);
      const auto fhalf = hn::Set(dfl, 0.5f);
      const auto fone = hn::Set(dfl, 1.0f);
      const auto flevels = hn::Set(dfl, 127.0f);
      const auto margin = hn::Set(dfl, 0x1p-14f);
      for (; i + float_lanes <= n; i += float_lanes) {
        const auto v = hn::LoadU(dfl, in + i);
        const auto y = hn::Mul(hn::IfThenElseZero(hn::IsFinite(v), v), vinv);
        auto r = hn::Trunc(y);
        const auto frac = hn::Abs(hn::Sub(y, r));
        if (!hn::AllFalse(dfl, hn::Lt(hn::Abs(hn::Sub(frac, fhalf)), margin))) {
          for (size_t j = 0; j < float_lanes; j += lanes) quantize(in + i + j, out + i + j);
          continue;
        }
        r = hn::Add(r, hn::IfThenElseZero(hn::Ge(frac, fhalf), hn::CopySign(fone, y)));
        r = hn::Min(hn::Max(r, hn::Neg(flevels)), flevels);
        hn::StoreU(hn::DemoteTo(di8f, hn::ConvertTo(di32f, r)), di8f, out + i);
      }
    }
    for (; i + lanes <= n; i += lanes) quantize(in + i, out + i);
    // The last partial vector through the same lanes (rows are short: a scalar tail was a
    // fifth of the time), padded with zeros that are not stored.
    constexpr size_t kMaxLanes = 64;
    if (i < n && lanes <= kMaxLanes) {
      float padded_in[kMaxLanes] = {};
      int8_t padded_out[kMaxLanes];
      std::copy(in + i, in + n, padded_in);
      quantize(padded_in, padded_out);
      std::copy(padded_out, padded_out + (n - i), out + i);
      i = n;
    }
  }
  for (; i < n; ++i) out[i] = ScalarQuantize(in[i], s);
}

bool HalfToFloat(const uint16_t* HWY_RESTRICT in, size_t n, float* HWY_RESTRICT out) {
  const DF df;
  const DU du;
  const hn::Rebind<uint16_t, DU> d16;
  const size_t lanes = hn::Lanes(du);
  auto bad = hn::Zero(du);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto h = hn::PromoteTo(du, hn::LoadU(d16, in + i));
    const auto sign = hn::ShiftLeft<16>(hn::And(h, hn::Set(du, 0x8000u)));
    const auto abs = hn::And(h, hn::Set(du, 0x7FFFu));
    const auto normal = hn::Add(hn::ShiftLeft<13>(abs), hn::Set(du, 0x38000000u));
    const auto sub =
        hn::BitCast(du, hn::Mul(hn::ConvertTo(df, hn::BitCast(hn::RebindToSigned<DU>(), abs)),
                                hn::Set(df, 0x1p-24f)));
    const auto f = hn::Or(sign, hn::IfThenElse(hn::Lt(abs, hn::Set(du, 0x0400u)), sub, normal));
    bad = hn::Or(bad, hn::VecFromMask(du, hn::Gt(abs, hn::Set(du, 0x7BFFu))));
    hn::StoreU(hn::BitCast(df, f), df, out + i);
  }
  bool ok = hn::AllTrue(du, hn::Eq(bad, hn::Zero(du)));
  for (; i < n; ++i) {
    const uint16_t h = LoadU16(in + i);
    out[i] = ScalarHalfToFloat(h);
    ok = ok && !HalfIsNonFinite(h);
  }
  return ok;
}

bool Bf16ToFloat(const uint16_t* HWY_RESTRICT in, size_t n, float* HWY_RESTRICT out) {
  const DF df;
  const DU du;
  const hn::Rebind<uint16_t, DU> d16;
  const size_t lanes = hn::Lanes(du);
  auto bad = hn::Zero(du);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto f = hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, in + i)));
    bad = hn::Or(bad, hn::VecFromMask(du, hn::Gt(hn::And(f, hn::Set(du, kAbsMask)),
                                                 hn::Set(du, kInfBits - 1))));
    hn::StoreU(hn::BitCast(df, f), df, out + i);
  }
  bool ok = hn::AllTrue(du, hn::Eq(bad, hn::Zero(du)));
  for (; i < n; ++i) {
    const uint32_t f = static_cast<uint32_t>(LoadU16(in + i)) << 16;
    ok = ok && (f & kAbsMask) < kInfBits;
    out[i] = std::bit_cast<float>(f);
  }
  return ok;
}

bool Int8ToFloat(const int8_t* HWY_RESTRICT in, size_t n, float scale, float* HWY_RESTRICT out) {
  const DF df;
  const DI di;
  const hn::Rebind<int8_t, DI> d8;
  const size_t lanes = hn::Lanes(di);
  const auto vs = hn::Set(df, scale);
  auto bad = hn::Zero(di);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto q = hn::PromoteTo(di, hn::LoadU(d8, in + i));
    bad = hn::Or(bad, hn::VecFromMask(di, hn::Eq(q, hn::Set(di, -128))));
    hn::StoreU(hn::Mul(hn::ConvertTo(df, q), vs), df, out + i);
  }
  bool ok = hn::AllTrue(di, hn::Eq(bad, hn::Zero(di)));
  for (; i < n; ++i) {
    ok = ok && in[i] != -128;
    out[i] = static_cast<float>(in[i]) * scale;
  }
  return ok;
}

}  // namespace HWY_NAMESPACE
}  // namespace sparselink::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace sparselink::simd {

HWY_EXPORT(FloatToHalf);
HWY_EXPORT(FloatToBf16);
HWY_EXPORT(MaxAbsFinite);
HWY_EXPORT(QuantizeInt8);
HWY_EXPORT(HalfToFloat);
HWY_EXPORT(Bf16ToFloat);
HWY_EXPORT(Int8ToFloat);

void FloatToHalf(const float* in, size_t n, uint16_t* out) {
  HWY_DYNAMIC_DISPATCH(FloatToHalf)(in, n, out);
}
void FloatToBf16(const float* in, size_t n, uint16_t* out) {
  HWY_DYNAMIC_DISPATCH(FloatToBf16)(in, n, out);
}
float MaxAbsFinite(const float* in, size_t n) { return HWY_DYNAMIC_DISPATCH(MaxAbsFinite)(in, n); }
void QuantizeInt8(const float* in, size_t n, float scale, int8_t* out) {
  HWY_DYNAMIC_DISPATCH(QuantizeInt8)(in, n, scale, out);
}
bool HalfToFloat(const uint16_t* in, size_t n, float* out) {
  return HWY_DYNAMIC_DISPATCH(HalfToFloat)(in, n, out);
}
bool Bf16ToFloat(const uint16_t* in, size_t n, float* out) {
  return HWY_DYNAMIC_DISPATCH(Bf16ToFloat)(in, n, out);
}
bool Int8ToFloat(const int8_t* in, size_t n, float scale, float* out) {
  return HWY_DYNAMIC_DISPATCH(Int8ToFloat)(in, n, scale, out);
}

}  // namespace sparselink::simd
#endif  // HWY_ONCE
