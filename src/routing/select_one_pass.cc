// Rows of one batch look alike, so the rows before predict where a row's cut lies (the model:
// the key with about `aim` keys at or above it, aim = k exact or k + window / 2
// approximate; the density of keys there; and how far the prediction has been off lately).
// One pass over the row (simd::ThresholdEmit) computes the keys in registers and compacts the
// ids, values and bitmap bits of every entry at or above a floor t0, a margin below the
// prediction (at least two binomial standard deviations of the count, more when the
// prediction has been missing). If that took at least k entries, every key at or above the
// row's exact k-th largest T is among these ~k candidates, and the rest of the work runs on them
// alone, from the cache: their keys are recomputed from the values (simd::CandidateKeys), then
//  - exact: one count at the prediction (taken as CandidateKeys writes the keys) corrects it,
//    the keys of a band of kExactBand counts either side of the corrected estimate are
//    filtered out (simd::FilterRange), and when T is among them the exact step (KthLargestKey)
//    runs on the band alone; a band that missed hands the exact step the bracket its counts
//    verify. Either way it gives T and its tie quota: the same cut as SelectRowFast, bit for
//    bit;
//  - kApproximate: a false-position search on counts (simd::CountAbove) stops at any t with
//    k <= #(key >= t) <= k + window, and the row keeps every key >= t: exactly its top count,
//    everything above T among them.
// The candidates outside the cut are dropped (simd::KeepCut) and their bitmap bits cleared.
// An approximate search the probes do not finish within kMaxProbes (many ties at the cut, or
// ties straddling the window) ends in the exact step on the candidates, with the window as its
// early stop. The first row (of a thread's rows, exact; of a fixed chunk of rows, approximate) and
// a pass that took fewer than k (the margin missed) or met a non-finite value take
// SelectRowFast's three passes instead, which also re-seed the model. Exact rows give the same
// output on either path; approximate ones depend on the rows of their chunk alone, never on the
// thread count.
#include <algorithm>
#include <cmath>

#include "routing/select.hpp"

namespace sparselink::internal {
namespace {

// One-pass exact rows with at most this many candidates take the exact step on them all.
constexpr double kExactBracket = 16;
// The one-pass exact cut's bracket around its estimate of T, in counts either side.
constexpr double kExactBand = 12;
// Single probes of a one-pass kApproximate row's search before the exact step finishes it
// instead (also after two probes that did not split the bracket's count: ties or a gap at the
// cut). Exact rows take no probes: their band (kExactBand) leads to the exact step directly.
constexpr int kMaxProbes = 8;

// Clears the bits of the ascending ids[0, count) in the bitmap `bits` (n columns). A few (the
// usual few dozen dropped candidates) go one by one; many (a tie group dropped) are gathered
// per byte first, so that each byte is written once.
void ClearBits(const uint32_t* ids, size_t count, size_t n, uint8_t* bits) {
  if (count * 32 <= n) {
    for (size_t i = 0; i < count; ++i)
      bits[ids[i] / 8] &= static_cast<uint8_t>(~(1u << (ids[i] % 8)));
    return;
  }
  size_t i = 0;
  while (i < count) {
    const size_t byte = ids[i] / 8;
    unsigned mask = 0;
    for (; i < count && ids[i] / 8 == byte; ++i) mask |= 1u << (ids[i] % 8);
    bits[byte] &= static_cast<uint8_t>(~mask);
  }
}

// A key position of the model, within the keys' range (a far-off estimate from a row of ties
// or a tiny density would not fit a key).
double ClampKey(double key) { return std::clamp(key, 0.0, static_cast<double>(kInfKey)); }

// The model from a row routed by SelectRowFast: its keys and the cut key it found (`cut`,
// with count(>= cut) = kept).
void SeedModel(const uint32_t* keys, size_t n, uint32_t cut, double aim, SelectScratch& scratch) {
  const auto count_at_least = [&](uint32_t t) {
    return t == 0 ? n : simd::CountAbove(keys, n, t - 1);
  };
  if (scratch.model_ready) {  // the missed prediction still teaches the error
    const auto center = static_cast<uint32_t>(scratch.model_center);
    const double miss = std::fabs(static_cast<double>(count_at_least(center)) - aim);
    scratch.model_error = 0.7 * scratch.model_error + 0.3 * miss;
  }
  // The density: widen [cut - delta, cut) until it holds a few keys (a 256th of an octave first;
  // keys are float bits, so 2^23 key units make an octave).
  const size_t at_cut = count_at_least(cut);
  double density = 0;
  for (uint32_t delta = 1u << 15;; delta <<= 2) {
    const uint32_t lo = cut > delta ? cut - delta : 0;
    const size_t gained = count_at_least(lo) - at_cut;
    if (gained >= 8 || lo == 0 || delta >= (1u << 25)) {
      density = static_cast<double>(std::max<size_t>(gained, 1)) / std::max(1.0, double(cut - lo));
      break;
    }
  }
  // Ties at the cut: the cut itself is where the count passes aim.
  const size_t above_cut = cut == kInfKey ? 0 : count_at_least(cut + 1);
  const bool aim_in_ties =
      static_cast<double>(above_cut) <= aim && aim <= static_cast<double>(at_cut);
  scratch.model_center = ClampKey(
      aim_in_ties ? cut : static_cast<double>(cut) + (static_cast<double>(at_cut) - aim) / density);
  scratch.model_density = density;
  if (!scratch.model_ready) scratch.model_error = 0;
  scratch.model_ready = true;
}

// The search for a one-pass row's cut among its m candidates' keys (every key >= t0 of the
// row, so counts among them are counts in the row from t0 up): the exact band step, the
// probes, and the exact step that finishes either (see the top of the file).
class CutSearch {
 public:
  // The cut as EmitKept applies it: keys > t, and keys == t before candidate tie_end; count of
  // them; `edge` is the least key kept.
  struct Result {
    uint32_t t = 0;
    size_t tie_end = 0;
    size_t count = 0;
    uint32_t edge = 0;
  };

  // `first_key` is the prediction, where `first_count` keys are at or above it (counted as the
  // keys were written); `per_count` is key units per key near the cut.
  CutSearch(const uint32_t* keys, size_t m, size_t k, size_t window, uint32_t t0, double first_key,
            size_t first_count, double per_count, SelectScratch& scratch)
      : keys_(keys),
        m_(m),
        k_(k),
        window_(window),
        exact_(window == 0),
        aim_(static_cast<double>(k) + static_cast<double>(window) / 2.0),
        target_(exact_ ? static_cast<double>(k) - 0.5 : aim_),
        first_key_(first_key),
        first_count_(first_count),
        per_count_(per_count),
        scratch_(scratch),
        lo_t_(t0),
        lo_c_(static_cast<double>(m)),
        found_at_(t0),
        c_(m),
        found_(exact_ ? static_cast<double>(m) <= kExactBracket : m <= k + window) {}

  Result Run() {
    if (!found_ && exact_ && lo_t_ + 1 <= kInfKey) Band();
    Probes();
    return Finish();
  }

 private:
  size_t CountAtLeast(uint32_t key) const {
    if (key == static_cast<uint32_t>(first_key_)) return first_count_;
    return key == 0 ? m_ : simd::CountAbove(keys_, m_, key - 1);
  }

  // A probe's count moves one end of the bracket (returns +1: the lower end, -1: the upper),
  // or ends the search (0). lo side: count(>= lo_t) = lo_c, above the window (exact: >= k);
  // hi side: below k.
  int TakeProbe(double key, size_t count) {
    if (!exact_ && count >= k_ && count <= k_ + window_) {
      if (!found_ || std::fabs(double(count) - aim_) < std::fabs(double(c_) - aim_)) {
        found_at_ = static_cast<uint32_t>(key);
        c_ = count;
      }
      found_ = true;
      return 0;
    }
    if (exact_ ? count >= k_ : count > k_ + window_) {
      if (key > lo_t_) {
        lo_t_ = key;
        lo_c_ = static_cast<double>(count);
      }
      return 1;
    }
    if (key < hi_t_) {
      hi_t_ = key;
      hi_c_ = static_cast<double>(count);
      hi_bounded_ = true;
    }
    return -1;
  }

  // The exact cut: one count at the prediction puts T near center + (count - target) *
  // per_count; the keys of a band of about kExactBand counts either side of that are filtered
  // out, and when T is among them (the counts above and in the band say so), the exact step
  // runs on the band alone. A band that missed (a tie group at the cut, or a density that
  // changed) still bounds T from one side: below it, the first key below the band is tried
  // (on rows of ties it is T); otherwise the exact step starts from the bracket so verified.
  void Band() {
    const double center = first_key_;  // the prediction, at or above lo_t + 1 = t0 + 1
    const size_t count = first_count_;
    const double count_d = static_cast<double>(count);
    scratch_.model_error = 0.7 * scratch_.model_error + 0.3 * std::fabs(count_d - target_);
    TakeProbe(center, count);
    const double estimate = center + (count_d - target_) * per_count_;
    const double half = kExactBand * per_count_;
    const double top = std::min(hi_t_ - 1, static_cast<double>(kInfKey));
    const auto band_lo = static_cast<uint32_t>(std::clamp(std::floor(estimate - half), lo_t_, top));
    const auto band_hi = static_cast<uint32_t>(std::clamp(std::ceil(estimate + half), lo_t_, top));
    GrowTo(scratch_.band_keys, m_ + simd::kSlack);
    size_t over = 0;  // keys above the band
    const size_t in_band =
        simd::FilterRange(keys_, m_, band_lo, band_hi, scratch_.band_keys.data(), &over);
    found_ = true;
    if (over < k_ && k_ <= over + in_band) {
      band_cut_ = KthLargestKey(scratch_.band_keys.data(), in_band, k_ - over, Guess{}, scratch_);
      band_cut_.above += over;  // every key equal to T is in the band: its ties are the row's
      band_hit_ = true;
      return;
    }
    // The exact step from the bracket these counts verify (more single probes first cost
    // more on rows of ties: docs/perf-notes.md#kexactband).
    TakeProbe(static_cast<double>(band_hi) + 1, over);
    TakeProbe(band_lo, over + in_band);
    NextToBand(band_lo, band_hi, over, over + in_band);
  }

  // On rows of ties T is often the first key beyond the band: below it (count(>= band_lo)
  // < k), the largest key below band_lo when its count reaches k; above it (count(>
  // band_hi) >= k), the smallest key above band_hi when the count above that key stays
  // under k. Either way no key lies between that key and the band, so two counts give T,
  // the keys above it and its ties.
  void NextToBand(uint32_t band_lo, uint32_t band_hi, size_t over, size_t at_lo) {
    uint32_t next = 0;
    if (at_lo < k_ && simd::MaxBelow(keys_, m_, band_lo, &next)) {
      const size_t at_next = CountAtLeast(next);
      if (at_next >= k_) {
        band_cut_ = KeyRank{.key = next, .above = at_lo, .ties = at_next - at_lo};
        band_hit_ = true;
      } else {
        TakeProbe(next, at_next);
      }
    } else if (over >= k_ && simd::MinAbove(keys_, m_, band_hi, &next)) {
      const size_t past_next = next == kInfKey ? 0 : CountAtLeast(next + 1);
      if (past_next < k_) {
        band_cut_ = KeyRank{.key = next, .above = past_next, .ties = over - past_next};
        band_hit_ = true;
      } else {
        TakeProbe(static_cast<double>(next) + 1, past_next);
      }
    }
  }

  // kApproximate: a false-position search on counts among the candidates (each probe one
  // short vector count) ends at a key t with k <= count(>= t) <= k + window.
  void Probes() {
    int last_side = 0;  // which end the last probe moved
    int run = 0;        // how many probes in a row moved it (two: bisect, false position stalls)
    int stalls = 0;     // probes whose count equalled an end's: a tie group or a gap spans it
    for (int probe = 0; !found_ && probe < kMaxProbes && stalls < 2; ++probe) {
      if (hi_t_ - lo_t_ < 2) {  // no key strictly between lo and hi
        found_ = exact_;        // exact: T = lo_t; approximate: ties straddle the window
        break;
      }
      double next;
      if (probe == 0 && !exact_) {
        next = scratch_.model_center;
      } else if (!hi_bounded_ || run >= 2) {
        next = hi_bounded_ ? (lo_t_ + hi_t_) / 2 : lo_t_ + (lo_c_ - target_) * per_count_;
      } else {
        next = lo_t_ + (lo_c_ - target_) / (lo_c_ - hi_c_) * (hi_t_ - lo_t_);
      }
      next = std::clamp(std::floor(next + 0.5), lo_t_ + 1, hi_t_ - 1);
      const size_t count = CountAtLeast(static_cast<uint32_t>(next));
      const auto count_d = static_cast<double>(count);
      stalls += hi_bounded_ && (count_d == lo_c_ || count_d == hi_c_) ? 1 : 0;
      if (probe == 0 && !exact_) {
        scratch_.model_error =
            0.7 * scratch_.model_error + 0.3 * std::fabs(static_cast<double>(count) - target_);
      }
      const int side = TakeProbe(next, count);
      run = side == last_side ? run + 1 : 1;
      last_side = side;
    }
  }

  Result Finish() {
    if (found_ && !exact_) {
      // Every key >= found_at: above found_at - 1 with no ties (found_at = 0: everything).
      return {.t = found_at_ == 0 ? 0 : found_at_ - 1,
              .tie_end = found_at_ == 0 ? m_ : 0,
              .count = c_,
              .edge = found_at_};
    }
    // The exact step (done on the band already when it held T): from [lo_t, hi_t - 1], which
    // holds T (hi unbounded: up to the largest key). It also ends an approximate search the
    // probes did not finish (many ties at the cut, or ties straddling the window): with the
    // window it may stop early, keeping every key >= its floor (between k and k + window - 1
    // of them).
    const Guess bracket{true, static_cast<uint32_t>(lo_t_),
                        static_cast<uint32_t>(std::min(hi_t_ - 1, double(kInfKey)))};
    const KeyRank cut =
        band_hit_ ? band_cut_ : KthLargestKey(keys_, m_, k_, bracket, scratch_, window_);
    const EmitCut emit = EmitCutOf(cut, keys_, m_, k_);
    return {.t = emit.t, .tie_end = emit.tie_end, .count = emit.count, .edge = cut.key};
  }

  const uint32_t* keys_;
  size_t m_;
  size_t k_;
  size_t window_;
  bool exact_;
  double aim_;
  double target_;
  double first_key_;
  size_t first_count_;
  double per_count_;
  SelectScratch& scratch_;
  double lo_t_;
  double lo_c_;
  double hi_t_ = static_cast<double>(kInfKey) + 1.0;
  double hi_c_ = 0;
  bool hi_bounded_ = false;
  uint32_t found_at_;  // kApproximate: the key found
  size_t c_;
  bool found_;
  KeyRank band_cut_;
  bool band_hit_ = false;
};

// The model for the next row: the key where this row's count would be aim, with the density
// between t0 and that key (a wide base, so a steady estimate).
void UpdateModel(const CutSearch::Result& cut, uint32_t t0, size_t m, double aim,
                 SelectScratch& scratch) {
  if (cut.edge > t0 && m > cut.count) {
    const double density = static_cast<double>(m - cut.count) / static_cast<double>(cut.edge - t0);
    scratch.model_density = 0.5 * scratch.model_density + 0.5 * density;
  }
  const double estimate = ClampKey(static_cast<double>(cut.edge) +
                                   (static_cast<double>(cut.count) - aim) / scratch.model_density);
  scratch.model_center = 0.5 * scratch.model_center + 0.5 * estimate;
}

// The kept candidates to the output (their keys to the front of `keys` when tiered), the
// bitmap bits of the others cleared, and the tiers. Returns the count kept.
size_t KeepCandidates(const CutSearch::Result& cut, uint32_t* keys, const uint32_t* cand_ids,
                      const float* cand_values, size_t m, size_t n, double keep_full,
                      SelectScratch& scratch, uint32_t* ids, float* values, Tier* tiers,
                      uint8_t* bitmap) {
  const size_t c = cut.count;
  const size_t nf = FullCount(c, keep_full);
  const bool tiered = nf != c && nf != 0;  // the kept keys are needed for the second cut
  GrowTo(scratch.dropped, m + simd::kSlack);
  size_t num_dropped = 0;
  [[maybe_unused]] const size_t kept =
      simd::KeepCut(keys, cand_ids, cand_values, m, cut.t, cut.tie_end, tiered, ids, values,
                    scratch.dropped.data(), &num_dropped);
  SPARSELINK_DCHECK(kept == c);
  if (bitmap != nullptr) ClearBits(scratch.dropped.data(), num_dropped, n, bitmap);
  if (!tiered) {
    std::fill_n(tiers, c, nf == 0 ? Tier::kLossy : Tier::kFull);
    return c;
  }
  // The nf best of the kept are the nf best of the row, found among the kept keys.
  const KeyRank full = KthLargestKey(keys, c, nf, Guess{}, scratch);
  size_t full_ties = nf - full.above;
  for (size_t i = 0; i < c; ++i) {
    const bool tie = keys[i] == full.key && full_ties != 0;
    full_ties -= tie ? 1 : 0;
    tiers[i] = keys[i] > full.key || tie ? Tier::kFull : Tier::kLossy;
  }
  return c;
}

// The pass's floor t0: a safe margin below the prediction (in counts: at least two binomial
// standard deviations, kept for the rows of one n and k, and more when the prediction has
// been missing).
uint32_t PassFloor(size_t n, size_t k, SelectScratch& scratch) {
  if (scratch.spread_n != n || scratch.spread_k != k) {
    const double kd = static_cast<double>(k);
    scratch.spread = std::sqrt(kd * (1.0 - kd / static_cast<double>(n)));
    scratch.spread_n = n;
    scratch.spread_k = k;
  }
  const double margin = std::max(2.0 * scratch.spread, 3.75 * scratch.model_error) + 2.0;
  const double per_count = 1.0 / scratch.model_density;  // key units per key near the cut
  const double t0_key = scratch.model_center - margin * per_count;
  return t0_key <= 0 ? 0u : static_cast<uint32_t>(std::min(t0_key, double(kInfKey)));
}

}  // namespace

size_t RowOnePass(const float* row, const float* w, size_t n, size_t k, double keep_full,
                  size_t window, SelectScratch& scratch, uint32_t* ids, float* values, Tier* tiers,
                  uint8_t* bitmap, bool* finite) {
  const double aim = static_cast<double>(k) + static_cast<double>(window) / 2.0;
  const auto three_pass = [&] {
    GrowTo(scratch.row_keys, n);
    uint32_t* keys = scratch.row_keys.data();
    *finite = simd::MagnitudeKeys(row, w, n, keys);
    const size_t count =
        SelectRowFast(keys, row, n, k, keep_full, window, scratch, ids, values, tiers, bitmap);
    // SelectRowFast's cut key (the k-th largest, or where an approximate search stopped).
    if (k > 0) SeedModel(keys, n, scratch.last_key, aim, scratch);
    return count;
  };
  if (!scratch.model_ready || k == 0) return three_pass();

  const uint32_t t0 = PassFloor(n, k, scratch);
  const double per_count = 1.0 / scratch.model_density;  // key units per key near the cut
  GrowTo(scratch.emit_ids, n + simd::kSlack);
  GrowTo(scratch.emit_values, n + simd::kSlack);
  // The candidates go to the thread's scratch (in L1 for rows up to a few thousand columns),
  // and only the kept ones to the output.
  const uint32_t* cand_ids = scratch.emit_ids.data();
  const float* cand_values = scratch.emit_values.data();
  size_t m = 0;
  *finite = simd::ThresholdEmit(row, w, n, t0, scratch.emit_ids.data(), scratch.emit_values.data(),
                                bitmap, &m);
  // Fewer than k at or above t0: the k-th largest key is below t0, the margin missed. A row
  // with a non-finite value (rejected by the caller, or scored 0 under kTreatAsZero) is
  // left to the three passes, which score it.
  if (m < k || !*finite) return three_pass();

  GrowTo(scratch.approx_keys, n + simd::kSlack);
  uint32_t* keys = scratch.approx_keys.data();
  // The search's first count is at the prediction, counted as the keys are written.
  const double first_key = std::clamp(std::floor(scratch.model_center + 0.5),
                                      std::min(double(t0) + 1, double(kInfKey)), double(kInfKey));
  const size_t first_count =
      simd::CandidateKeys(cand_ids, cand_values, m, w, keys, static_cast<uint32_t>(first_key));
  const CutSearch::Result cut =
      CutSearch(keys, m, k, window, t0, first_key, first_count, per_count, scratch).Run();
  UpdateModel(cut, t0, m, aim, scratch);
  return KeepCandidates(cut, keys, cand_ids, cand_values, m, n, keep_full, scratch, ids, values,
                        tiers, bitmap);
}

}  // namespace sparselink::internal
