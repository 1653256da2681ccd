// SensitivityMap: per-unit importance, EMA over batches, normalization, binary form.
//
// One update runs in three passes over fixed buffers sized at Create:
//   1. per neuron j, the mean over rows of the mode's magnitude (|a*g|, |a|, |g|, or both |a|
//      and |g| for kWeighted, each then normalized by its max and mixed by alpha), summed in
//      double so that |a*g| of large finite floats cannot overflow;
//   2. per unit, the mean of its neurons (the last unit may hold fewer than `block`);
//   3. FoldBatch: the per-unit batch score is normalized by its max, folded into the EMA
//      (ema <- decay * ema + (1 - decay) * batch, starting from zero), and values() is the
//      EMA normalized by its max. Normalizing the batch first makes the map blind to the
//      overall gradient scale; normalizing the EMA makes its zero start equivalent to a
//      bias-corrected EMA, since bias correction only rescales all units alike.
#include "sparselink/sensitivity.hpp"

#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <limits>
#include <numeric>
#include <sstream>
#include <string>

#include "core/format.hpp"
#include "simd/kernels.hpp"

namespace sparselink {

Result<SensitivityMode> ParseSensitivityMode(std::string_view name) {
  if (const auto* row = FindName(kSensitivityModeNames, name)) return row->value;
  return FieldError(ErrorCode::kInvalidArgument, "sensitivity.mode", name,
                    "unknown mode (one of " + NameChoices(kSensitivityModeNames) + ")");
}

void NormalizeByMax(std::span<float> values) {
  float max_value = 0.0f;
  for (float v : values) max_value = std::max(max_value, v);
  if (!(max_value > 0.0f)) {
    std::fill(values.begin(), values.end(), 0.0f);
    return;
  }
  // Division (not a multiplied reciprocal) so that the max itself becomes exactly 1.
  for (float& v : values) v /= max_value;
}

// NaN sorts last, so that a bad value can never break the strict weak order of the sort.
static float RankKey(float v) {
  return std::isnan(v) ? -std::numeric_limits<float>::infinity() : v;
}

std::vector<uint32_t> RankUnits(std::span<const float> values) {
  std::vector<uint32_t> order(values.size());
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    const float va = RankKey(values[a]);
    const float vb = RankKey(values[b]);
    return va > vb || (va == vb && a < b);
  });
  return order;
}

// Sorts a copy in descending order and counts units until their running sum reaches
// tau * total. The sum runs in double in the same order as the total, and the target gets a
// relative slack of 1e-12 so that rounding never costs one unit (tau = 1 over equal values
// ends exactly at n). tau outside [0,1] is clamped; NaN counts as 1 (keep everything).
double Coverage(std::span<const float> values, double tau) {
  const size_t n = values.size();
  if (n == 0) return 1.0;
  if (std::isnan(tau)) tau = 1.0;
  tau = std::clamp(tau, 0.0, 1.0);
  std::vector<float> sorted(values.begin(), values.end());
  for (float& v : sorted) v = std::isfinite(v) && v > 0.0f ? v : 0.0f;
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  double total = 0.0;
  for (float v : sorted) total += v;
  if (!(total > 0.0)) return 1.0 / static_cast<double>(n);
  const double target = tau * total * (1.0 - 1e-12);
  size_t count = 0;
  double sum = 0.0;
  while (count < n && sum < target) sum += sorted[count++];
  count = std::max<size_t>(count, 1);
  return static_cast<double>(count) / static_cast<double>(n);
}

// ---------------------------------------------------------------------------------------
// SensitivityMap

static size_t NumUnits(size_t num_neurons, size_t block) {
  return (num_neurons + block - 1) / block;
}

static Status ValidateOptions(const SensitivityOptions& o) {
  if (o.num_neurons == 0 || o.num_neurons > kMaxSensitivityNeurons) {
    return FieldError(ErrorCode::kInvalidArgument, "sensitivity.num_neurons", o.num_neurons,
                      "must be in [1, " + std::to_string(kMaxSensitivityNeurons) + "]");
  }
  if (o.block == 0 || o.block > o.num_neurons) {
    return FieldError(ErrorCode::kInvalidArgument, "sensitivity.block", o.block,
                      "must be in [1, num_neurons = " + std::to_string(o.num_neurons) + "]");
  }
  if (static_cast<size_t>(o.mode) >= kNumSensitivityModes) {
    return FieldError(ErrorCode::kInvalidArgument, "sensitivity.mode", int(o.mode), "unknown mode");
  }
  if (!std::isfinite(o.alpha) || o.alpha < 0.0 || o.alpha > 1.0) {
    return FieldError(ErrorCode::kInvalidArgument, "sensitivity.alpha", o.alpha,
                      "must be in [0, 1]");
  }
  if (!std::isfinite(o.ema_decay) || o.ema_decay < 0.0 || o.ema_decay >= 1.0) {
    return FieldError(ErrorCode::kInvalidArgument, "sensitivity.ema_decay", o.ema_decay,
                      "must be in [0, 1)");
  }
  if (o.non_finite != OnNonFinite::kReject && o.non_finite != OnNonFinite::kTreatAsZero) {
    return FieldError(ErrorCode::kInvalidArgument, "sensitivity.non_finite", int(o.non_finite),
                      "unknown non-finite handling");
  }
  return Status::Ok();
}

// Rows per block of Update's sums (see there).
constexpr size_t kRowBlock = 64;

static size_t ScratchSize(const SensitivityOptions& options) {
  return options.mode == SensitivityMode::kWeighted ? 2 * options.num_neurons : options.num_neurons;
}

SensitivityMap::SensitivityMap(const SensitivityOptions& options, bool allocate_scratch)
    : options_(options),
      ema_(NumUnits(options.num_neurons, options.block), 0.0f),
      values_(ema_.size(), 0.0f),
      batch_(ema_.size(), 0.0) {
  if (allocate_scratch) scratch_.assign(ScratchSize(options), 0.0);
}

Result<SensitivityMap> SensitivityMap::Create(const SensitivityOptions& options) {
  SPARSELINK_RETURN_IF_ERROR(ValidateOptions(options));
  return SensitivityMap(options);
}

static bool IsEmpty(ConstMatrix m) { return m.data == nullptr && m.rows == 0 && m.cols == 0; }

// |x| under OnNonFinite; after validation under kReject every x here is finite.
static double Magnitude(float x) {
  return std::isfinite(x) ? std::fabs(static_cast<double>(x)) : 0.0;
}

static void NormalizeDoubles(std::span<double> values) {
  double max_value = 0.0;
  for (double v : values) max_value = std::max(max_value, v);
  if (!(max_value > 0.0)) {
    std::fill(values.begin(), values.end(), 0.0);
    return;
  }
  for (double& v : values) v /= max_value;
}

// Update's checks before any work: the shapes, and a gradient where the mode needs one. The
// activation's non-finite entries are checked later, with the sums; a refusal of the gradient
// comes after the activation's own (as when the activation was checked in full first): the
// activation's non-finite entry, if any, is named instead.
static Status CheckUpdateInputs(const SensitivityOptions& options, ConstMatrix activation,
                                ConstMatrix gradient) {
  const size_t n = options.num_neurons;
  if (activation.cols != n && !IsEmpty(activation)) {
    return FieldError(ErrorCode::kShapeMismatch, "activation.cols", activation.cols,
                      "must equal num_neurons = " + std::to_string(n));
  }
  SPARSELINK_RETURN_IF_ERROR(ValidateMatrix(activation, "activation", OnNonFinite::kTreatAsZero));
  const bool has_gradient = !IsEmpty(gradient);
  const auto refuse_gradient = [&](Status why) {
    Status activation_first = ValidateMatrix(activation, "activation", options.non_finite);
    return activation_first.ok() ? why : activation_first;
  };
  if (!has_gradient && options.mode != SensitivityMode::kActivation) {
    return refuse_gradient(FieldError(ErrorCode::kInvalidArgument, "gradient", "empty",
                                      std::string("mode ") +
                                          std::string(SensitivityModeName(options.mode)) +
                                          " needs a gradient"));
  }
  if (!has_gradient) return Status::Ok();
  if (gradient.rows != activation.rows) {
    return refuse_gradient(
        FieldError(ErrorCode::kShapeMismatch, "gradient.rows", gradient.rows,
                   "must equal activation.rows = " + std::to_string(activation.rows)));
  }
  if (gradient.cols != activation.cols) {
    return refuse_gradient(
        FieldError(ErrorCode::kShapeMismatch, "gradient.cols", gradient.cols,
                   "must equal activation.cols = " + std::to_string(activation.cols)));
  }
  if (Status shape = ValidateMatrix(gradient, "gradient", OnNonFinite::kTreatAsZero); !shape.ok()) {
    return refuse_gradient(shape);
  }
  return Status::Ok();
}

// The sums over rows of the mode's magnitudes into `sums` (width entries: n, or 2n for
// kWeighted), in float vectors, one row at a time, in fixed blocks of kRowBlock rows: each
// block into a partial of its own (on the OpenMP threads for large batches), and the partials
// added in block order, so the bits do not depend on the thread count. With `check_finite`,
// returns whether every entry was finite (the sums are then meaningless where not).
static bool SumRowsInFloat(ConstMatrix activation, ConstMatrix gradient, SensitivityMode mode,
                           size_t width, bool parallel, bool check_finite,
                           std::vector<float>* sums) {
  const size_t n = activation.cols;
  const size_t rows = activation.rows;
  const bool has_gradient = !IsEmpty(gradient);
  const size_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  thread_local std::vector<float> partials;
  partials.resize(blocks * width);
  float* const p = partials.data();
  bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite) if (parallel)
  for (size_t b = 0; b < blocks; ++b) {
    float* partial = p + b * width;
    std::fill(partial, partial + width, 0.0f);
    for (size_t r = b * kRowBlock; r < std::min(rows, (b + 1) * kRowBlock); ++r) {
      const float* a = activation.Row(r);
      const float* g = has_gradient ? gradient.Row(r) : nullptr;
      if (check_finite) {
        finite = finite && simd::AllFinite(a, n) && (g == nullptr || simd::AllFinite(g, n));
      }
      switch (mode) {
        case SensitivityMode::kTaylor: simd::AddMagnitudes(a, g, n, partial); break;
        case SensitivityMode::kActivation: simd::AddMagnitudes(a, nullptr, n, partial); break;
        case SensitivityMode::kGradient: simd::AddMagnitudes(g, nullptr, n, partial); break;
        case SensitivityMode::kWeighted:
          simd::AddMagnitudes(a, nullptr, n, partial);
          simd::AddMagnitudes(g, nullptr, n, partial + n);
          break;
      }
    }
  }
  sums->assign(p, p + width);
  for (size_t b = 1; b < blocks; ++b) {
    for (size_t j = 0; j < width; ++j) (*sums)[j] += p[b * width + j];
  }
  return finite;
}

// The same sums in double, into `scratch` (zeroed first), for batches whose float sums
// overflowed or may have underflowed.
static void SumRowsInDouble(ConstMatrix activation, ConstMatrix gradient, SensitivityMode mode,
                            std::vector<double>* scratch) {
  const size_t n = activation.cols;
  const bool has_gradient = !IsEmpty(gradient);
  std::fill(scratch->begin(), scratch->end(), 0.0);
  for (size_t r = 0; r < activation.rows; ++r) {
    const float* a = activation.Row(r);
    const float* g = has_gradient ? gradient.Row(r) : nullptr;
    for (size_t j = 0; j < n; ++j) {
      const double ma = Magnitude(a[j]);
      const double mg = g != nullptr ? Magnitude(g[j]) : 0.0;
      switch (mode) {
        case SensitivityMode::kTaylor: (*scratch)[j] += ma * mg; break;
        case SensitivityMode::kActivation: (*scratch)[j] += ma; break;
        case SensitivityMode::kGradient: (*scratch)[j] += mg; break;
        case SensitivityMode::kWeighted:
          (*scratch)[j] += ma;
          (*scratch)[n + j] += mg;
          break;
      }
    }
  }
}

Status SensitivityMap::Update(ConstMatrix activation, ConstMatrix gradient) {
  if (frozen_) {
    return FieldError(ErrorCode::kInvalidArgument, "sensitivity.frozen", "true",
                      "a frozen map refuses updates (Unfreeze it first)");
  }
  SPARSELINK_RETURN_IF_ERROR(CheckUpdateInputs(options_, activation, gradient));
  const SensitivityMode mode = options_.mode;
  const size_t n = options_.num_neurons;
  // Pass 1: per-neuron means over rows. A deserialized map gets its scratch here, once: its
  // size comes from num_neurons, which a file may set far larger than its own byte count.
  // The non-finite check under kReject runs with the sums (one read of the rows instead of
  // two); ValidateMatrix then names the first bad entry.
  if (scratch_.empty()) scratch_.assign(ScratchSize(options_), 0.0);
  const size_t rows = activation.rows;
  thread_local std::vector<float> sums;
  const bool finite = SumRowsInFloat(activation, gradient, mode, scratch_.size(),
                                     rows * n >= options_.parallel_min_entries,
                                     options_.non_finite == OnNonFinite::kReject, &sums);
  if (!finite) {
    SPARSELINK_RETURN_IF_ERROR(ValidateMatrix(activation, "activation", options_.non_finite));
    SPARSELINK_RETURN_IF_ERROR(ValidateMatrix(gradient, "gradient", options_.non_finite));
  }
  // Float keeps the ratios between neurons (all the map uses: each batch is scaled by its
  // largest) unless a sum overflowed (magnitudes past ~1e19 in Taylor mode) or the largest
  // sum is so small (or zero) that float products may have underflowed (magnitudes below
  // ~1e-19): then the same sums in double.
  const float largest = sums.empty() ? 0.0f : *std::max_element(sums.begin(), sums.end());
  if (simd::AllFinite(sums.data(), sums.size()) && largest >= 0x1p-60f) {
    std::copy(sums.begin(), sums.end(), scratch_.begin());
  } else {
    SumRowsInDouble(activation, gradient, mode, &scratch_);
  }
  const double inv_rows = 1.0 / static_cast<double>(rows);
  for (double& s : scratch_) s *= inv_rows;
  if (mode == SensitivityMode::kWeighted) {
    const std::span<double> act(scratch_.data(), n);
    const std::span<double> grad(scratch_.data() + n, n);
    NormalizeDoubles(act);
    NormalizeDoubles(grad);
    for (size_t j = 0; j < n; ++j)
      act[j] = options_.alpha * act[j] + (1.0 - options_.alpha) * grad[j];
  }

  // Pass 2: per-unit means.
  const size_t block = options_.block;
  for (size_t u = 0; u < batch_.size(); ++u) {
    const size_t begin = u * block;
    const size_t end = std::min(begin + block, n);
    double sum = 0.0;
    for (size_t j = begin; j < end; ++j) sum += scratch_[j];
    batch_[u] = sum / static_cast<double>(end - begin);
  }
  FoldBatch();
  return Status::Ok();
}

Status SensitivityMap::UpdateUnitScores(std::span<const float> unit_scores) {
  if (frozen_) {
    return FieldError(ErrorCode::kInvalidArgument, "sensitivity.frozen", "true",
                      "a frozen map refuses updates (Unfreeze it first)");
  }
  if (unit_scores.size() != batch_.size()) {
    return FieldError(ErrorCode::kShapeMismatch, "unit_scores.size", unit_scores.size(),
                      "must equal num_units = " + std::to_string(batch_.size()));
  }
  // Checked, taken and their max found in one pass (batch_ is scratch: a refusal leaves the
  // map as it was).
  const bool reject = options_.non_finite == OnNonFinite::kReject;
  double max_value = 0.0;
  for (size_t u = 0; u < unit_scores.size(); ++u) {
    const float v = unit_scores[u];
    if (!std::isfinite(v) && reject) {
      return FieldError(ErrorCode::kNonFinite, "unit_scores[" + std::to_string(u) + "]", v,
                        "must be finite (on_non_finite: reject)");
    }
    if (v < 0.0f) {
      return FieldError(ErrorCode::kInvalidArgument, "unit_scores[" + std::to_string(u) + "]", v,
                        "must be >= 0");
    }
    batch_[u] = Magnitude(v);
    max_value = std::max(max_value, batch_[u]);
  }
  FoldBatch(max_value);
  return Status::Ok();
}

Status SensitivityMap::Assign(std::span<const float> values) {
  if (values.size() != values_.size()) {
    return FieldError(ErrorCode::kShapeMismatch, "values.size", values.size(),
                      "must equal num_units = " + std::to_string(values_.size()));
  }
  for (size_t u = 0; u < values.size(); ++u) {
    const float v = values[u];
    if (!std::isfinite(v)) {
      return FieldError(ErrorCode::kNonFinite, "values[" + std::to_string(u) + "]", v,
                        "must be finite");
    }
    if (v < 0.0f || v > 1.0f) {
      return FieldError(ErrorCode::kInvalidArgument, "values[" + std::to_string(u) + "]", v,
                        "must be in [0, 1]");
    }
  }
  std::copy(values.begin(), values.end(), ema_.begin());
  std::copy(values.begin(), values.end(), values_.begin());
  return Status::Ok();
}

void SensitivityMap::FoldBatch() {
  double max_value = 0.0;
  for (double v : batch_) max_value = std::max(max_value, v);
  FoldBatch(max_value);
}

// NormalizeDoubles(batch_), the EMA into ema_, then values_ = NormalizeByMax(ema_), in two
// passes: the same divisions, in the same order per unit.
void SensitivityMap::FoldBatch(double batch_max) {
  const double decay = options_.ema_decay;
  const bool scale = batch_max > 0.0;
  float ema_max = 0.0f;
  for (size_t u = 0; u < ema_.size(); ++u) {
    const double b = scale ? batch_[u] / batch_max : 0.0;
    ema_[u] = static_cast<float>(decay * static_cast<double>(ema_[u]) + (1.0 - decay) * b);
    ema_max = std::max(ema_max, ema_[u]);
  }
  if (!(ema_max > 0.0f)) {
    std::fill(values_.begin(), values_.end(), 0.0f);
  } else {
    for (size_t u = 0; u < ema_.size(); ++u) values_[u] = ema_[u] / ema_max;
  }
  ++num_updates_;
}

// ---------------------------------------------------------------------------------------
// Binary form, format version 1. Every integer and float is little-endian:
//   magic "SLSM" | u32 format_version | u64 num_neurons | u64 block | u8 mode | f64 alpha |
//   f64 ema_decay | u8 non_finite | u64 num_updates | u8 frozen | u64 num_units |
//   f32 ema[num_units] | f32 values[num_units] | u64 XXH3-64 of all bytes before it.

namespace {

using internal::Hex;

constexpr char kMagic[4] = {'S', 'L', 'S', 'M'};
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kFixedBytes = 4 + 4 + 8 + 8 + 1 + 8 + 8 + 1 + 8 + 1 + 8;
constexpr size_t kTrailerBytes = 8;

class Writer {
 public:
  explicit Writer(std::vector<uint8_t>& out) : out_(out) {}
  void U8(uint8_t v) { out_.push_back(v); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void F32(float v) { U32(std::bit_cast<uint32_t>(v)); }
  void F64(double v) { U64(std::bit_cast<uint64_t>(v)); }

 private:
  void Le(uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t>& out_;
};

// Reads little-endian fields; every read is checked against the bytes left, and a short
// read names the field.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  size_t left() const { return bytes_.size() - pos_; }

  Status U8(std::string_view field, uint8_t& v) {
    uint64_t x = 0;
    SPARSELINK_RETURN_IF_ERROR(Le(field, 1, x));
    v = static_cast<uint8_t>(x);
    return Status::Ok();
  }
  Status U32(std::string_view field, uint32_t& v) {
    uint64_t x = 0;
    SPARSELINK_RETURN_IF_ERROR(Le(field, 4, x));
    v = static_cast<uint32_t>(x);
    return Status::Ok();
  }
  Status U64(std::string_view field, uint64_t& v) { return Le(field, 8, v); }
  Status F32(std::string_view field, float& v) {
    uint32_t x = 0;
    SPARSELINK_RETURN_IF_ERROR(U32(field, x));
    v = std::bit_cast<float>(x);
    return Status::Ok();
  }
  Status F64(std::string_view field, double& v) {
    uint64_t x = 0;
    SPARSELINK_RETURN_IF_ERROR(U64(field, x));
    v = std::bit_cast<double>(x);
    return Status::Ok();
  }

 private:
  Status Le(std::string_view field, size_t n, uint64_t& v) {
    if (left() < n) {
      return FieldError(ErrorCode::kCorruptPacket, "sensitivity_map.bytes_left", left(),
                        std::string("too few for field ") + std::string(field) + " (" +
                            std::to_string(n) + " bytes)");
    }
    v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(bytes_[pos_ + i]) << (8 * i);
    pos_ += n;
    return Status::Ok();
  }
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
};

// Validates a per-unit array read from a buffer: finite, in [0,1].
Status CheckUnitValue(std::string_view array, size_t u, float v) {
  if (!std::isfinite(v) || v < 0.0f || v > 1.0f) {
    return FieldError(ErrorCode::kCorruptPacket,
                      "sensitivity_map." + std::string(array) + "[" + std::to_string(u) + "]", v,
                      "must be finite and in [0, 1]");
  }
  return Status::Ok();
}

}  // namespace

std::vector<uint8_t> SensitivityMap::Serialize() const {
  std::vector<uint8_t> out;
  out.reserve(kFixedBytes + 8 * values_.size() + kTrailerBytes);
  Writer w(out);
  for (char c : kMagic) w.U8(static_cast<uint8_t>(c));
  w.U32(kFormatVersion);
  w.U64(options_.num_neurons);
  w.U64(options_.block);
  w.U8(static_cast<uint8_t>(options_.mode));
  w.F64(options_.alpha);
  w.F64(options_.ema_decay);
  w.U8(static_cast<uint8_t>(options_.non_finite));
  w.U64(num_updates_);
  w.U8(frozen_ ? 1 : 0);
  w.U64(values_.size());
  for (float v : ema_) w.F32(v);
  for (float v : values_) w.F32(v);
  w.U64(XXH3_64bits(out.data(), out.size()));
  return out;
}

// Order of checks: magic (so a foreign file says so even when short), size, format version,
// checksum, then each field against the bytes left and its range. The unit arrays' length is
// checked against both the cap and the exact bytes left before anything is allocated.
Result<SensitivityMap> SensitivityMap::Deserialize(std::span<const uint8_t> bytes) {
  if (bytes.size() >= sizeof(kMagic) && std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    uint64_t got = 0;
    for (size_t i = 0; i < 4; ++i) got = (got << 8) | bytes[i];
    return FieldError(ErrorCode::kCorruptPacket, "sensitivity_map.magic", Hex(got),
                      "expected \"SLSM\" (0x00000000534c534d)");
  }
  if (bytes.size() < kFixedBytes + kTrailerBytes) {
    return FieldError(ErrorCode::kCorruptPacket, "sensitivity_map.size", bytes.size(),
                      "shorter than the fixed part of a map (" +
                          std::to_string(kFixedBytes + kTrailerBytes) + " bytes)");
  }
  Reader r(bytes.first(bytes.size() - kTrailerBytes));
  uint8_t magic_byte = 0;
  for (size_t i = 0; i < sizeof(kMagic); ++i) SPARSELINK_RETURN_IF_ERROR(r.U8("magic", magic_byte));
  uint32_t version = 0;
  SPARSELINK_RETURN_IF_ERROR(r.U32("format_version", version));
  if (version != kFormatVersion) {
    return FieldError(ErrorCode::kUnsupported, "sensitivity_map.format_version", version,
                      "only version " + std::to_string(kFormatVersion) + " is known");
  }
  uint64_t stored_sum = 0;
  Reader trailer(bytes.last(kTrailerBytes));
  SPARSELINK_RETURN_IF_ERROR(trailer.U64("checksum", stored_sum));
  const uint64_t sum = XXH3_64bits(bytes.data(), bytes.size() - kTrailerBytes);
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
  stored_sum = sum;  // fuzz builds only: reach the field checks behind the checksum
#endif
  if (sum != stored_sum) {
    return FieldError(ErrorCode::kCorruptPacket, "sensitivity_map.checksum", Hex(stored_sum),
                      "does not match the content (XXH3-64 " + Hex(sum) + ")");
  }

  uint64_t num_neurons = 0, block = 0, num_updates = 0, num_units = 0;
  uint8_t mode = 0, non_finite = 0, frozen = 0;
  SensitivityOptions options;
  SPARSELINK_RETURN_IF_ERROR(r.U64("num_neurons", num_neurons));
  SPARSELINK_RETURN_IF_ERROR(r.U64("block", block));
  SPARSELINK_RETURN_IF_ERROR(r.U8("mode", mode));
  SPARSELINK_RETURN_IF_ERROR(r.F64("alpha", options.alpha));
  SPARSELINK_RETURN_IF_ERROR(r.F64("ema_decay", options.ema_decay));
  SPARSELINK_RETURN_IF_ERROR(r.U8("non_finite", non_finite));
  SPARSELINK_RETURN_IF_ERROR(r.U64("num_updates", num_updates));
  SPARSELINK_RETURN_IF_ERROR(r.U8("frozen", frozen));
  SPARSELINK_RETURN_IF_ERROR(r.U64("num_units", num_units));

  if (num_neurons == 0 || num_neurons > kMaxSensitivityNeurons) {
    return FieldError(ErrorCode::kCorruptPacket, "sensitivity_map.num_neurons", num_neurons,
                      "must be in [1, " + std::to_string(kMaxSensitivityNeurons) + "]");
  }
  if (block == 0 || block > num_neurons) {
    return FieldError(ErrorCode::kCorruptPacket, "sensitivity_map.block", block,
                      "must be in [1, num_neurons = " + std::to_string(num_neurons) + "]");
  }
  options.num_neurons = static_cast<size_t>(num_neurons);
  options.block = static_cast<size_t>(block);
  options.mode = static_cast<SensitivityMode>(mode);
  options.non_finite = static_cast<OnNonFinite>(non_finite);
  if (Status s = ValidateOptions(options); !s.ok()) {
    return Status(ErrorCode::kCorruptPacket, "sensitivity_map: " + s.message());
  }
  if (frozen > 1) {
    return FieldError(ErrorCode::kCorruptPacket, "sensitivity_map.frozen", int(frozen),
                      "must be 0 or 1");
  }
  const size_t expected_units = NumUnits(options.num_neurons, options.block);
  if (num_units != expected_units) {
    return FieldError(ErrorCode::kCorruptPacket, "sensitivity_map.num_units", num_units,
                      "must equal ceil(num_neurons / block) = " + std::to_string(expected_units));
  }
  if (r.left() != 2 * sizeof(float) * expected_units) {
    return FieldError(ErrorCode::kCorruptPacket, "sensitivity_map.num_units", num_units,
                      "needs " + std::to_string(2 * sizeof(float) * expected_units) +
                          " bytes of values, the buffer has " + std::to_string(r.left()));
  }

  SensitivityMap map(options, /*allocate_scratch=*/false);
  for (size_t u = 0; u < expected_units; ++u) {
    SPARSELINK_RETURN_IF_ERROR(r.F32("ema", map.ema_[u]));
    SPARSELINK_RETURN_IF_ERROR(CheckUnitValue("ema", u, map.ema_[u]));
  }
  for (size_t u = 0; u < expected_units; ++u) {
    SPARSELINK_RETURN_IF_ERROR(r.F32("values", map.values_[u]));
    SPARSELINK_RETURN_IF_ERROR(CheckUnitValue("values", u, map.values_[u]));
  }
  map.num_updates_ = num_updates;
  map.frozen_ = frozen == 1;
  return map;
}

Status SensitivityMap::Save(const std::filesystem::path& path) const {
  const std::vector<uint8_t> bytes = Serialize();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return FieldError(ErrorCode::kIo, "path", path.string(),
                      std::string("cannot open for writing: ") + std::strerror(errno));
  }
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    return FieldError(ErrorCode::kIo, "path", path.string(), "write failed");
  }
  return Status::Ok();
}

Result<SensitivityMap> SensitivityMap::Load(const std::filesystem::path& path) {
  // The largest valid file: the fixed part, two arrays at the neuron cap, the trailer.
  constexpr uint64_t kMaxFileBytes =
      kFixedBytes + 2 * sizeof(float) * kMaxSensitivityNeurons + kTrailerBytes;
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) {
    return FieldError(ErrorCode::kIo, "path", path.string(),
                      std::string("cannot open for reading: ") + std::strerror(errno));
  }
  const std::streamoff size = in.tellg();
  if (size < 0) return FieldError(ErrorCode::kIo, "path", path.string(), "cannot read its size");
  if (static_cast<uint64_t>(size) > kMaxFileBytes) {
    return FieldError(ErrorCode::kIo, "path", path.string(),
                      "file of " + std::to_string(size) + " bytes is larger than any map (" +
                          std::to_string(kMaxFileBytes) + ")");
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), size);
  if (!in) return FieldError(ErrorCode::kIo, "path", path.string(), "read failed");
  Result<SensitivityMap> map = Deserialize(bytes);
  if (!map.ok()) {
    return Status(map.status().code(), path.string() + ": " + map.status().message());
  }
  return map;
}

}  // namespace sparselink
