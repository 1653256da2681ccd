// An element row's top k in three passes: the keys of the row (simd::MagnitudeKeys or the
// scorer), the k-th largest key (kth_largest.cc), and one emit pass in column order
// (simd::EmitKept) that writes the kept columns, values and bitmap bits.
#include <algorithm>
#include <bit>

#include "routing/select.hpp"

namespace sparselink::internal {

size_t SelectRowFast(const uint32_t* keys, const float* row, size_t n, size_t k, double keep_full,
                     size_t window, SelectScratch& scratch, uint32_t* ids, float* values,
                     Tier* tiers, uint8_t* bitmap) {
  if (k == 0) {
    if (bitmap != nullptr) std::fill_n(bitmap, n / 8, uint8_t{0});
    return 0;
  }
  Guess guess;
  if (scratch.last_n == n && scratch.last_k == k) {
    const float last = std::bit_cast<float>(scratch.last_key);
    const auto key_of = [](float f) { return std::bit_cast<uint32_t>(f) & 0x7FFFFFFFu; };
    guess = {true, key_of(last * (1.0f - scratch.guess_width)),
             std::min(key_of(last * (1.0f + scratch.guess_width)), 0x7F800000u)};
  }
  const KeyRank cut = KthLargestKey(keys, n, k, guess, scratch, window);
  if (guess.valid) {
    scratch.guess_width = cut.guess_hit ? std::max(scratch.guess_width * 0.9f, 0x1p-8f)
                                        : std::min(scratch.guess_width * 2.0f, 0.5f);
  }
  scratch.last_key = cut.key;
  scratch.last_n = n;
  scratch.last_k = k;
  const EmitCut emit = EmitCutOf(cut, keys, n, k);
  const uint32_t t = emit.t;
  const size_t tie_end = emit.tie_end;
  const size_t count = emit.count;
  GrowTo(scratch.emit_ids, count + simd::kSlack);
  GrowTo(scratch.emit_values, count + simd::kSlack);
  [[maybe_unused]] const size_t kept = simd::EmitKept(
      keys, row, n, t, tie_end, scratch.emit_ids.data(), scratch.emit_values.data(), bitmap);
  SPARSELINK_DCHECK(kept == count);
  std::copy_n(scratch.emit_ids.data(), count, ids);
  std::copy_n(scratch.emit_values.data(), count, values);
  const size_t nf = FullCount(count, keep_full);
  if (nf == count || nf == 0) {
    std::fill_n(tiers, count, nf == 0 ? Tier::kLossy : Tier::kFull);
    return count;
  }
  // The nf best of the kept are the nf best of the row: one more cut, applied in column order.
  const KeyRank full = KthLargestKey(keys, n, nf, Guess{}, scratch);
  const uint32_t tf = full.key;
  size_t full_ties = nf - full.above;
  for (size_t i = 0; i < count; ++i) {
    const uint32_t key = keys[ids[i]];
    const bool tie = key == tf && full_ties != 0;
    full_ties -= tie ? 1 : 0;
    tiers[i] = key > tf || tie ? Tier::kFull : Tier::kLossy;
  }
  return count;
}

}  // namespace sparselink::internal
