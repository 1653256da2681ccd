// Sums and scans over float rows: column sums of |a| (routing extras), the sensitivity
// map's magnitude accumulators, and the finiteness check.
//
// Compiled once per x86 target by hwy/foreach_target.h (the file includes itself); the
// exported table and HWY_DYNAMIC_DISPATCH pick the best target at the first call. Every
// result is the same on every target (simd/kernels.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "simd/sum_kernels.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <cmath>

#include "simd/kernels.hpp"
#include "simd/lanes-inl.hpp"

HWY_BEFORE_NAMESPACE();
namespace sparselink::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void AddAbs(const float* HWY_RESTRICT x, size_t n, float* HWY_RESTRICT acc) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    hn::StoreU(hn::Add(hn::LoadU(df, acc + i), hn::Abs(hn::LoadU(df, x + i))), df, acc + i);
  }
  for (; i < n; ++i) acc[i] += std::fabs(x[i]);
}

void AddKeptCorrection(const uint32_t* HWY_RESTRICT ids, const float* HWY_RESTRICT a,
                       const float* HWY_RESTRICT g, const float* HWY_RESTRICT s, size_t n,
                       float scale, float* HWY_RESTRICT acc) {
  const DF df;
  const DU du;
  const DI di;
  const size_t lanes = hn::Lanes(df);
  const auto vscale = hn::Set(df, scale);
  size_t i = 0;
  // The lanes of one vector hold distinct ids (the caller's promise), so the scatter of their
  // sums loses none.
  for (; i + lanes <= n; i += lanes) {
    const auto index = hn::BitCast(di, hn::LoadU(du, ids + i));
    auto term = hn::Sub(hn::Abs(hn::LoadU(df, g + i)), hn::GatherIndex(df, s, index));
    if (a != nullptr) term = hn::Mul(hn::Abs(hn::LoadU(df, a + i)), term);
    term = hn::Mul(term, vscale);
    hn::ScatterIndex(hn::Add(hn::GatherIndex(df, acc, index), term), df, acc, index);
  }
  for (; i < n; ++i) {
    const float term = std::fabs(g[i]) - s[ids[i]];
    acc[ids[i]] += (a != nullptr ? std::fabs(a[i]) * term : term) * scale;
  }
}

void AddMagnitudes(const float* HWY_RESTRICT a, const float* HWY_RESTRICT b, size_t n,
                   float* HWY_RESTRICT acc) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  const auto magnitude = [&](auto v) { return hn::IfThenElseZero(hn::IsFinite(v), hn::Abs(v)); };
  const auto one = [](float x) { return std::isfinite(x) ? std::fabs(x) : 0.0f; };
  size_t i = 0;
  if (b == nullptr) {
    for (; i + lanes <= n; i += lanes) {
      hn::StoreU(hn::Add(hn::LoadU(df, acc + i), magnitude(hn::LoadU(df, a + i))), df, acc + i);
    }
    for (; i < n; ++i) acc[i] += one(a[i]);
    return;
  }
  for (; i + lanes <= n; i += lanes) {
    const auto product = hn::Mul(magnitude(hn::LoadU(df, a + i)), magnitude(hn::LoadU(df, b + i)));
    hn::StoreU(hn::Add(hn::LoadU(df, acc + i), product), df, acc + i);
  }
  for (; i < n; ++i) acc[i] += one(a[i]) * one(b[i]);
}

bool AllFinite(const float* HWY_RESTRICT a, size_t n) {
  const DF df;
  const DU du;
  const size_t lanes = hn::Lanes(df);
  auto worst = hn::Zero(du);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    worst = hn::Max(worst, hn::And(hn::BitCast(du, hn::LoadU(df, a + i)), hn::Set(du, kAbsMask)));
  }
  bool ok = hn::GetLane(hn::MaxOfLanes(du, worst)) < kInfBits;
  for (; i < n; ++i) ok = ok && std::isfinite(a[i]);
  return ok;
}

}  // namespace HWY_NAMESPACE
}  // namespace sparselink::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace sparselink::simd {

HWY_EXPORT(AllFinite);
HWY_EXPORT(AddAbs);
HWY_EXPORT(AddKeptCorrection);
HWY_EXPORT(AddMagnitudes);

bool AllFinite(const float* a, size_t n) { return HWY_DYNAMIC_DISPATCH(AllFinite)(a, n); }
void AddAbs(const float* x, size_t n, float* acc) { HWY_DYNAMIC_DISPATCH(AddAbs)(x, n, acc); }
void AddKeptCorrection(const uint32_t* ids, const float* a, const float* g, const float* s,
                       size_t n, float scale, float* acc) {
  HWY_DYNAMIC_DISPATCH(AddKeptCorrection)(ids, a, g, s, n, scale, acc);
}
void AddMagnitudes(const float* a, const float* b, size_t n, float* acc) {
  HWY_DYNAMIC_DISPATCH(AddMagnitudes)(a, b, n, acc);
}

}  // namespace sparselink::simd
#endif  // HWY_ONCE
