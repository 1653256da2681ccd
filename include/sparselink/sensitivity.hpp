// SensitivityMap: per boundary, one importance value in [0,1] for each unit (a neuron, or a
// block of `block` consecutive neurons) of the activation that crosses the boundary.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

#include "sparselink/status.hpp"
#include "sparselink/types.hpp"

namespace sparselink {

// How one batch's (activation, gradient) pair becomes a raw score per neuron. Every mode
// averages over the rows of the batch.
enum class SensitivityMode : uint8_t {
  kTaylor = 0,      // mean_r |a_rj * g_rj|   (first-order Taylor, Molchanov et al. 2017)
  kActivation = 1,  // mean_r |a_rj|
  kGradient = 2,    // mean_r |g_rj|
  kWeighted = 3,    // alpha * norm(mean_r |a_rj|) + (1 - alpha) * norm(mean_r |g_rj|)
};
inline constexpr size_t kNumSensitivityModes = 4;
inline constexpr std::array<NameRow<SensitivityMode>, kNumSensitivityModes> kSensitivityModeNames =
    {{
        {SensitivityMode::kTaylor, "taylor"},
        {SensitivityMode::kActivation, "activation"},
        {SensitivityMode::kGradient, "gradient"},
        {SensitivityMode::kWeighted, "weighted"},
    }};
static_assert(RowsInOrder(kSensitivityModeNames));
inline constexpr std::string_view SensitivityModeName(SensitivityMode m) {
  return EnumName(kSensitivityModeNames, m);
}
Result<SensitivityMode> ParseSensitivityMode(std::string_view name);

// Largest num_neurons a map accepts (Create and Deserialize).
inline constexpr size_t kMaxSensitivityNeurons = size_t{1} << 28;

struct SensitivityOptions {
  size_t num_neurons = 0;  // cols of the activation; in [1, kMaxSensitivityNeurons]
  size_t block = 1;        // neurons per unit, in [1, num_neurons]; the last unit may be partial
  SensitivityMode mode = SensitivityMode::kTaylor;
  double alpha = 0.5;      // weight of the activation term in kWeighted, in [0, 1]
  double ema_decay = 0.9;  // map <- decay * map + (1 - decay) * batch; in [0, 1). The EMA
                           // starts at zero; values() renormalizes by the max, which makes
                           // that start equivalent to a bias-corrected EMA.
  OnNonFinite non_finite = OnNonFinite::kReject;
  // Update runs its blocks of rows on the OpenMP threads from this many rows x cols entries on;
  // its result's bits depend on neither this nor the thread count.
  size_t parallel_min_entries = kDefaultParallelMinEntries;
};

// Normalizes `values` in place to [0,1] by dividing by the max. An all-zero (or empty) input
// stays all zero. Values must be >= 0 and finite. Does not allocate.
void NormalizeByMax(std::span<float> values);

// Units in descending value, ties broken by unit index, lowest first (deterministic).
// Allocates the returned vector; O(n log n).
std::vector<uint32_t> RankUnits(std::span<const float> values);

// Smallest share of units (in (0,1], a multiple of 1/n) whose value sum reaches `tau` of the
// total, taking units in RankUnits order. An all-zero map covers nothing: returns 1/n (the
// smallest non-empty share) so that the caller's floor decides. tau in [0,1].
double Coverage(std::span<const float> values, double tau);

// Not thread-safe: one owner updates it; concurrent const reads are fine.
class SensitivityMap {
 public:
  // Validates the options (each bad field is named in the error).
  static Result<SensitivityMap> Create(const SensitivityOptions& options);

  // Adds one batch. `activation` and `gradient` are rows x num_neurons (the gradient may be
  // ignored by kActivation but must still match in shape when given; pass an empty
  // ConstMatrix{} for "no gradient" in kActivation mode). The batch's per-unit score is
  // normalized to [0,1] before the EMA, so the map is insensitive to the overall scale of
  // gradients, which shrinks as training converges. Allocates nothing after Create.
  // Errors: shape mismatch, non-finite input (per options.non_finite), frozen map
  // (kInvalidArgument).
  Status Update(ConstMatrix activation, ConstMatrix gradient);

  // Adds one batch of raw, non-negative per-unit scores (size num_units()), e.g. a score
  // assembled from a receiver summary. Normalized and folded in like Update.
  Status UpdateUnitScores(std::span<const float> unit_scores);

  // Replaces the map with `values` (size num_units(), each in [0,1]); used to load or to
  // seed a map. values() becomes exactly `values` (not renormalized) and the EMA state
  // continues from them. Allowed on a frozen map. Errors name the first bad index and value.
  Status Assign(std::span<const float> values);

  // The normalized map: num_units() values in [0,1], max 1 unless all zero.
  std::span<const float> values() const { return values_; }
  // Value of the unit that holds `neuron`.
  float NeuronValue(size_t neuron) const { return values_[neuron / options_.block]; }
  size_t UnitOf(size_t neuron) const { return neuron / options_.block; }

  size_t num_units() const { return values_.size(); }
  size_t num_neurons() const { return options_.num_neurons; }
  size_t block() const { return options_.block; }
  uint64_t num_updates() const { return num_updates_; }
  const SensitivityOptions& options() const { return options_; }

  // A frozen map refuses updates (inference); Unfreeze reverses it.
  void Freeze() { frozen_ = true; }
  void Unfreeze() { frozen_ = false; }
  bool frozen() const { return frozen_; }

  // Binary form (docs/formats.md): magic "SLSM", version, options, update count, EMA state,
  // values; little-endian, with an XXH3-64 trailer. Deserialize checks every field and
  // allocates only in proportion to the bytes it was given (the per-neuron scratch of a
  // loaded map is allocated by its first Update).
  std::vector<uint8_t> Serialize() const;
  static Result<SensitivityMap> Deserialize(std::span<const uint8_t> bytes);
  Status Save(const std::filesystem::path& path) const;
  static Result<SensitivityMap> Load(const std::filesystem::path& path);

 private:
  // `allocate_scratch` = false defers the per-neuron scratch to the first Update (Deserialize:
  // a short file must not make the reader allocate num_neurons doubles).
  explicit SensitivityMap(const SensitivityOptions& options, bool allocate_scratch = true);
  void FoldBatch();  // batch_ (raw per unit) -> normalize -> EMA into ema_ -> values_
  void FoldBatch(double batch_max);  // the same, batch_'s max given

  SensitivityOptions options_;
  std::vector<float> ema_;       // EMA of per-batch normalized scores, per unit
  std::vector<float> values_;    // ema_ normalized by its max
  std::vector<double> batch_;    // scratch: this batch's raw per-unit score
  std::vector<double> scratch_;  // scratch: per-neuron sums (2 x num_neurons in kWeighted),
                                 // summed in float vectors, redone in double where a float
                                 // sum overflows or underflows (Update)
  uint64_t num_updates_ = 0;
  bool frozen_ = false;
};

}  // namespace sparselink
