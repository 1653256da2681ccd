// Helpers the kernel files share, compiled into each target's namespace: the lane types, the
// float bit masks, unaligned 16-bit access and the 32-bit lane compress. Included by the
// *_kernels.cc files inside their per-target pass (Highway's -inl convention: the guard
// toggles with HWY_TARGET_TOGGLE, so each target gets its own copy).
#if defined(SPARSELINK_SIMD_LANES_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SPARSELINK_SIMD_LANES_INL_H_
#undef SPARSELINK_SIMD_LANES_INL_H_
#else
#define SPARSELINK_SIMD_LANES_INL_H_
#endif

#include <hwy/highway.h>

#include <array>
#include <cstdint>
#include <cstring>

HWY_BEFORE_NAMESPACE();
namespace sparselink::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using DU = hn::RebindToUnsigned<DF>;
using DI = hn::RebindToSigned<DF>;

constexpr uint32_t kAbsMask = 0x7FFFFFFFu;
constexpr uint32_t kInfBits = 0x7F800000u;

// --- scalar tails (the same arithmetic as the vector bodies) ---

// 16-bit streams sit at any byte offset inside a packet: the tails access them bytewise.
inline uint16_t LoadU16(const uint16_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void StoreU16(uint16_t v, uint16_t* p) { std::memcpy(p, &v, sizeof v); }

// Compress of 32-bit lanes (the lanes of `mask` moved to the front, in order). AVX-512 has an
// instruction for it, which Highway uses. On the other x86 targets Highway 1.0 builds the
// index table inside the function, and GCC copies that table onto the stack at every call
// (`rep movsq`, 1 KiB for AVX2), which made routing and decoding several times slower on
// machines without AVX-512 (docs/perf-notes.md#compresstable). There the indices come from this
// static table instead:
// entry m holds, for an 8-bit mask m, the set lanes' positions ascending, then the others
// (a 4-lane target reads the first four; for m < 16 those are all below 4).
struct CompressTable {
  std::array<uint8_t, 256 * 8> index{};
  constexpr CompressTable() {
    for (size_t m = 0; m < 256; ++m) {
      size_t pos = 0;
      for (size_t want : {1u, 0u}) {
        for (size_t lane = 0; lane < 8; ++lane) {
          if (((m >> lane) & 1u) == want) index[m * 8 + pos++] = static_cast<uint8_t>(lane);
        }
      }
    }
  }
};
constexpr CompressTable kCompressTable;

template <class D, class V, class M>
V CompressLanes(D d, V v, M mask) {
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_SSE4 || HWY_TARGET == HWY_SSSE3
  static_assert(hn::MaxLanes(D()) <= 8 && sizeof(hn::TFromD<D>) == 4);
  const hn::RebindToUnsigned<D> du;
  const hn::Rebind<uint8_t, decltype(du)> d8;
  uint8_t bits[8] = {};
  hn::StoreMaskBits(d, mask, bits);
  const auto index = hn::PromoteTo(du, hn::LoadU(d8, kCompressTable.index.data() + 8 * bits[0]));
  return hn::TableLookupLanes(v, hn::IndicesFromVec(d, index));
#else
  (void)d;
  return hn::Compress(v, mask);
#endif
}

}  // namespace HWY_NAMESPACE
}  // namespace sparselink::simd
HWY_AFTER_NAMESPACE();

#endif  // SPARSELINK_SIMD_LANES_INL_H_
