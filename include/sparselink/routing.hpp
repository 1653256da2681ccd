// The routing engine: scores every entry of an activation, keeps the most important under a
// contract, assigns precision tiers, and on the far side scatters back to a dense tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "sparselink/contract.hpp"
#include "sparselink/sensitivity.hpp"
#include "sparselink/status.hpp"
#include "sparselink/types.hpp"

namespace sparselink {

// How entries are scored.
enum class Scoring : uint8_t {
  kSensitivity = 0,  // |a_ij| * (eps + S_unit(j)); needs a map
  kMagnitude = 1,    // |a_ij|
  kRandom = 2,       // a hash of (seed, step, row, col): the control experiment
};
inline constexpr size_t kNumScorings = 3;
inline constexpr std::array<NameRow<Scoring>, kNumScorings> kScoringNames = {{
    {Scoring::kSensitivity, "sensitivity"},
    {Scoring::kMagnitude, "magnitude"},
    {Scoring::kRandom, "random"},
}};
static_assert(RowsInOrder(kScoringNames));
inline constexpr std::string_view ScoringName(Scoring s) { return EnumName(kScoringNames, s); }
Result<Scoring> ParseScoring(std::string_view name);

// How the top k of a row (or of the units) is found. kReference and kFast give bit-identical
// output: the selection is exact under one total order (score descending, then column
// ascending), so the method only changes the cost. kReference is the plain
// std::nth_element-over-ids path kept as the oracle of the differential tests; kFast is the
// one to use. kApproximate trades exactness of the count for speed (element granularity only;
// units are always selected exactly): each row keeps between k and
// k + floor(approx_tolerance * k) entries - exactly the row's top `count` for that count, so
// every entry scoring above the row's exact k-th score plus at most that many at the margin -
// and the output still does not depend on the thread count.
enum class SelectMethod : uint8_t {
  kReference = 0,  // nth_element over an id array with an indirect comparator
  // Exact. Rows of 2048 columns or more keeping at most a quarter (scores |a| or |a| * w): one
  // streaming pass compacts the entries above a cut predicted from the rows before, and the
  // exact cut is found among those few; other rows: sample select on integer keys in three
  // vector passes. O(n).
  kFast = 1,
  // One streaming pass per row and a threshold search among its candidates, the count landing
  // anywhere in the window (kRandom, a window under 2 entries or a kept share above a quarter:
  // kFast's three passes, stopped early).
  kApproximate = 2,
};
inline constexpr size_t kNumSelectMethods = 3;
inline constexpr std::array<NameRow<SelectMethod>, kNumSelectMethods> kSelectMethodNames = {{
    {SelectMethod::kReference, "reference"},
    {SelectMethod::kFast, "fast"},
    {SelectMethod::kApproximate, "approximate"},
}};
static_assert(RowsInOrder(kSelectMethodNames));
inline constexpr std::string_view SelectMethodName(SelectMethod m) {
  return EnumName(kSelectMethodNames, m);
}

struct RouterOptions {
  Scoring scoring = Scoring::kSensitivity;
  double eps = 1e-3;  // keeps units the map has not scored yet alive; >= 0
  uint64_t seed = 0;  // for kRandom
  OnNonFinite non_finite = OnNonFinite::kReject;
  SelectMethod select = SelectMethod::kFast;
  double approx_tolerance = 0.05;  // kApproximate: extra entries per row, share of k; (0, 1]
  // A Route call uses the OpenMP threads from this many entries on (>= 1; see
  // kDefaultParallelMinEntries). Tests set 1 to exercise the parallel path on small inputs.
  size_t parallel_min_entries = kDefaultParallelMinEntries;
};

// The routed form of one activation: which entries cross, in which tier, with which values.
//
// Element granularity: row r's kept columns are indices[row_offsets[r] .. row_offsets[r+1]),
// ascending. Unit granularity: one set of kept columns shared by every row, stored once
// (row_offsets = {0, n}); values are then rows x n, row-major.
// values and tiers run parallel to the kept entries in row-major order (tier is kFull or
// kLossy). With RestCodec::kSign1, rest_bits holds one bit per non-kept entry in row-major
// order (LSB first, 1 = positive side) and rest_centroids two floats per row
// (positive-side mean, other-side mean).
struct RoutedTensor {
  uint32_t rows = 0;
  uint32_t cols = 0;
  Granularity granularity = Granularity::kElement;
  RestCodec rest = RestCodec::kDrop;
  std::vector<uint32_t> row_offsets;  // element: rows + 1 entries; unit: 2 entries
  std::vector<uint32_t> indices;      // kept columns
  std::vector<float> values;          // kept values (full precision; quantized by the codec)
  std::vector<Tier> tiers;            // per kept entry
  std::vector<uint8_t> rest_bits;     // kSign1 only
  std::vector<float> rest_centroids;  // kSign1 only: 2 per row

  // Kept entries in all rows (for unit granularity: rows * kept columns).
  size_t num_kept() const { return values.size(); }
  size_t num_kept_in_row(size_t r) const;
  // Kept columns of row r (for unit granularity, the shared set).
  std::span<const uint32_t> RowIndices(size_t r) const;
  size_t CountTier(Tier t) const;
  // All structural invariants: sizes agree, indices ascending and < cols, tiers valid.
  // Used by the decoder on untrusted input; errors name the field.
  Status Validate() const;
  // What the calls that use a routed tensor as a mask read (GatherAtMask, ScatterAtMask,
  // EncodeGradientValues, DecodeGradientValues, MaskOf): shape, row offsets, indices, and
  // values.size() (num_kept()), and that granularity and rest codec are known ones; not the values,
  // tiers or rest tier's bits and centroids, which they do not read. Validate's first checks, in
  // its order.
  Status ValidateMask() const;
};

// Which entries of a rows x cols matrix a routed tensor kept, laid out as the bitmap index
// codec lays them on the wire (docs/wire-format.md): rows x cols bits, row after row with no
// padding between rows, LSB first, zero past the last entry; and the kept entries before each
// row. The receiver's form of the mask: the fused decoder (DecodeActivationToDenseAndMask) leaves
// it beside the dense rows, and the gradient is gathered at it by one vector compress per vector of
// columns, where RoutedTensor's column list costs a dependent load per kept entry.
struct KeptMask {
  uint32_t rows = 0;
  uint32_t cols = 0;
  Granularity granularity = Granularity::kElement;  // how the tensor was routed
  std::vector<uint8_t> bits;                        // ceil(rows * cols / 8) bytes
  std::vector<uint64_t> row_offsets;  // rows + 1: kept entries before each row, then the total

  uint64_t num_kept() const { return row_offsets.empty() ? 0 : row_offsets.back(); }
  uint64_t num_kept_in_row(size_t r) const { return row_offsets[r + 1] - row_offsets[r]; }
  // Shape, sizes, padding bits zero, each row's set bits equal to its share of row_offsets,
  // and (unit granularity) every row's bits equal to row 0's. O(rows * cols / 8); unit
  // granularity O(rows * cols).
  Status Validate() const;
};

// The mask of `routed` (unit granularity: its shared columns in every row) into `out`, reusing
// its capacity. O(rows * cols / 8 + kept).
Status MaskOf(const RoutedTensor& routed, KeptMask* out);

// What Router::Route can hand back besides the routing, from the rows while it has them in
// cache; a null member is not taken.
struct RouteExtras {
  // The kept set as the wire format's bitmap (rows * cols bits, row r column c at bit
  // r * cols + c, LSB first) when it falls out of the selection for free (kFast or
  // kApproximate, element granularity, cols a multiple of 8); otherwise left empty. Every byte
  // is written (the vector's old contents do not matter). Unspecified when Route refuses.
  std::vector<uint8_t>* bitmap = nullptr;
  // cols sums over the rows of |a| (a non-finite value as it is), ColumnAbsSums's bits. Element
  // rows take them in the routing pass; unit granularity in a pass after it. Unspecified when
  // Route refuses.
  std::vector<float>* column_abs_sums = nullptr;
};

// Per column, the sum over the rows of |a| (a non-finite value as it is) into `sums` (resized to
// cols): each block of 16 rows is summed row by row into a partial of its own, and the partials
// are added in block order, so the bits do not depend on the thread count (rows go parallel
// from `parallel_min_entries` rows x cols on). Router::Route gives the same sums from its own
// pass (RouteExtras::column_abs_sums). Errors: a null `sums`, an empty or null matrix.
Status ColumnAbsSums(ConstMatrix a, std::vector<float>* sums,
                     size_t parallel_min_entries = kDefaultParallelMinEntries);

// Thread-safe for concurrent Route calls on different outputs (no shared mutable state).
class Router {
 public:
  static Result<Router> Create(const RouterOptions& options);

  // Routes `activation` (rows x cols) under `contract`. `map` must have num_neurons == cols
  // for kSensitivity (and is ignored otherwise). `step` seeds kRandom.
  //  - element granularity: in each row keep k = KeptCount(cols, keep) entries of highest
  //    score, ties to the lower column; of those FullCount(k, keep_full) highest go kFull;
  //  - unit granularity: a unit's score is the sum over the batch and its columns of the
  //    entry scores; keep KeptCount(num_units, keep) units (all their columns), tiers per unit.
  // options().select picks the selection algorithm; the output is the same for both and for
  // any OpenMP thread count. Allocates `out`'s vectors (reusing their capacity); the per-row
  // scratch is thread-local and reused across calls (O(cols) per thread, kept for the thread's
  // life). Errors: shape, non-finite, invalid contract, missing map, resource_exhausted (rows
  // or cols >= 2^32, or more kept entries than u32 row offsets hold); on error `out` holds no
  // meaningful routing. With kApproximate rows may keep different counts (row_offsets says).
  Status Route(ConstMatrix activation, const SensitivityMap* map, const Contract& contract,
               uint64_t step, RoutedTensor* out) const;
  Result<RoutedTensor> Route(ConstMatrix activation, const SensitivityMap* map,
                             const Contract& contract, uint64_t step) const;
  // The same, and what RouteExtras asks for, taken during the same pass over the activation.
  // Used by RouteAndEncode (codec.hpp).
  Status Route(ConstMatrix activation, const SensitivityMap* map, const Contract& contract,
               uint64_t step, RoutedTensor* out, const RouteExtras& extras) const;

  const RouterOptions& options() const { return options_; }

 private:
  explicit Router(const RouterOptions& options) : options_(options) {}
  RouterOptions options_;
};

// Receiver side: writes the dense tensor (rows x cols) with kept values in place, the rest
// tier's centroids where kSign1, and zeros elsewhere. `out` must be rows x cols.
// Rows go parallel from `parallel_min_entries` rows x cols on (the functions below likewise).
Status Scatter(const RoutedTensor& routed, MutableMatrix out,
               size_t parallel_min_entries = kDefaultParallelMinEntries);

// Backward: the gradient at the kept positions of `mask`, in the same order as mask.values
// (the index set is known to both sides, so no indices travel). `gradient` is rows x cols.
Status GatherAtMask(const RoutedTensor& mask, ConstMatrix gradient, std::vector<float>* values,
                    OnNonFinite non_finite = OnNonFinite::kReject,
                    size_t parallel_min_entries = kDefaultParallelMinEntries);
// Sender side of backward: dense dL/dy with `values` at the mask's positions, zeros elsewhere.
// (d(m*y)/dy = m, so this is the exact gradient of the routed forward, not an approximation.)
Status ScatterAtMask(const RoutedTensor& mask, std::span<const float> values, MutableMatrix out,
                     size_t parallel_min_entries = kDefaultParallelMinEntries);
// The same two at a KeptMask: equal outputs, the same checks (errors name the mask's fields).
// GatherAtMask compresses 16 columns a vector (a row's last cols % 64 one set bit at a time);
// ScatterAtMask expands 16 a vector on AVX-512 when cols % 16 == 0, else one row's columns
// at a time.
Status GatherAtMask(const KeptMask& mask, ConstMatrix gradient, std::vector<float>* values,
                    OnNonFinite non_finite = OnNonFinite::kReject,
                    size_t parallel_min_entries = kDefaultParallelMinEntries);
Status ScatterAtMask(const KeptMask& mask, std::span<const float> values, MutableMatrix out,
                     size_t parallel_min_entries = kDefaultParallelMinEntries);

}  // namespace sparselink
