// Router: options, the checks of a Route call, the sensitivity weights, and the dispatch to
// unit or element selection and the rest tier (routing/select.hpp lists where each lives).
#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "core/format.hpp"
#include "routing/column_sums.hpp"
#include "routing/select.hpp"
#include "sparselink/routing.hpp"

namespace sparselink {
namespace {

using internal::MustEqual;

}  // namespace

Result<Scoring> ParseScoring(std::string_view name) {
  if (const auto* row = FindName(kScoringNames, name)) return row->value;
  return FieldError(ErrorCode::kInvalidArgument, "scoring", name,
                    "unknown scoring (one of " + NameChoices(kScoringNames) + ")");
}

Result<Router> Router::Create(const RouterOptions& options) {
  if (!std::isfinite(options.eps) || options.eps < 0.0) {
    return FieldError(ErrorCode::kInvalidArgument, "router.eps", options.eps,
                      "must be finite and >= 0");
  }
  if (static_cast<size_t>(options.scoring) >= kNumScorings) {
    return FieldError(ErrorCode::kInvalidArgument, "router.scoring", int(options.scoring),
                      "unknown scoring");
  }
  if (options.non_finite != OnNonFinite::kReject &&
      options.non_finite != OnNonFinite::kTreatAsZero) {
    return FieldError(ErrorCode::kInvalidArgument, "router.non_finite", int(options.non_finite),
                      "unknown non-finite handling");
  }
  if (static_cast<size_t>(options.select) >= kNumSelectMethods) {
    return FieldError(ErrorCode::kInvalidArgument, "router.select", int(options.select),
                      "unknown select method");
  }
  if (options.parallel_min_entries == 0) {
    return FieldError(ErrorCode::kInvalidArgument, "router.parallel_min_entries", 0,
                      "must be >= 1");
  }
  if (!(options.approx_tolerance > 0.0 && options.approx_tolerance <= 1.0)) {
    return FieldError(ErrorCode::kInvalidArgument, "router.approx_tolerance",
                      options.approx_tolerance, "must be in (0, 1]");
  }
  return Router(options);
}

Status Router::Route(ConstMatrix activation, const SensitivityMap* map, const Contract& contract,
                     uint64_t step, RoutedTensor* out) const {
  return Route(activation, map, contract, step, out, RouteExtras{});
}

Status Router::Route(ConstMatrix activation, const SensitivityMap* map, const Contract& contract,
                     uint64_t step, RoutedTensor* out, const RouteExtras& extras) const {
  if (out == nullptr) return Status(ErrorCode::kInvalidArgument, "out = null: no output given");
  SPARSELINK_RETURN_IF_ERROR(contract.Validate());
  // The element rows check finiteness while they score (one pass less over the input); a
  // failure is then named by ValidateMatrix below.
  const bool unit = contract.granularity == Granularity::kUnit;
  const bool check_while_scoring = !unit && options_.non_finite == OnNonFinite::kReject;
  SPARSELINK_RETURN_IF_ERROR(
      ValidateMatrix(activation, "activation",
                     check_while_scoring ? OnNonFinite::kTreatAsZero : options_.non_finite));
  constexpr size_t kMaxDim = std::numeric_limits<uint32_t>::max();
  if (activation.rows > kMaxDim) {
    return FieldError(ErrorCode::kResourceExhausted, "activation.rows", activation.rows,
                      "must fit in 32 bits");
  }
  if (activation.cols > kMaxDim) {
    return FieldError(ErrorCode::kResourceExhausted, "activation.cols", activation.cols,
                      "must fit in 32 bits");
  }
  const bool sensitivity = options_.scoring == Scoring::kSensitivity;
  if (sensitivity) {
    if (map == nullptr) {
      return Status(ErrorCode::kInvalidArgument,
                    "map = null: scoring sensitivity needs a sensitivity map");
    }
    if (map->num_neurons() != activation.cols) {
      return FieldError(ErrorCode::kShapeMismatch, "map.num_neurons", map->num_neurons(),
                        MustEqual("activation.cols", activation.cols));
    }
  }
  if (!unit) {
    const size_t k = KeptCount(activation.cols, contract.keep);
    const size_t extra = options_.select == SelectMethod::kApproximate
                             ? static_cast<size_t>(options_.approx_tolerance * double(k))
                             : 0;
    const uint64_t kept = uint64_t{activation.rows} * (k + extra);
    if (kept > kMaxDim) {
      return FieldError(ErrorCode::kResourceExhausted, "kept entries", kept,
                        "must fit in 32 bits (row_offsets); route fewer rows at a time");
    }
  }

  // The caller's thread keeps the weights' buffer (one allocation per thread, not per call).
  thread_local std::vector<float> weight;
  if (sensitivity) {
    weight.resize(activation.cols);
    // Unit by unit (NeuronValue's division per column cost more than the rest of the loop).
    const std::span<const float> units = map->values();
    const size_t block = map->block();
    for (size_t u = 0, c = 0; u < units.size(); ++u) {
      // Clamped to FLT_MAX: an infinite weight would make 0 * w a NaN key.
      const auto w =
          static_cast<float>(std::min(options_.eps + static_cast<double>(units[u]),
                                      static_cast<double>(std::numeric_limits<float>::max())));
      for (const size_t end = std::min(c + block, activation.cols); c < end; ++c) weight[c] = w;
    }
  }
  const internal::Scorer scorer{
      .scoring = options_.scoring, .seed = options_.seed, .step = step, .weight = weight.data()};
  const bool parallel = activation.size() >= options_.parallel_min_entries;

  out->rows = static_cast<uint32_t>(activation.rows);
  out->cols = static_cast<uint32_t>(activation.cols);
  out->granularity = contract.granularity;
  out->rest = contract.rest;
  // The element paths size the bitmap and write every byte of it (no zero fill needed); unit
  // granularity has none.
  std::vector<uint8_t>* bitmap = extras.bitmap;
  if (bitmap != nullptr && unit) bitmap->clear();
  thread_local std::vector<float> sum_partials;
  // Element rows take the sums as they go; unit granularity reads its columns in stripes, so it
  // takes them after (ColumnAbsSums, the same bits).
  internal::AbsSumRows sums(unit ? nullptr : extras.column_abs_sums, activation.rows,
                            activation.cols, sum_partials);
  if (unit) {
    internal::RouteUnits(activation, scorer, contract, sensitivity ? map->block() : 1,
                         options_.select, parallel, out);
    if (extras.column_abs_sums != nullptr) {
      SPARSELINK_RETURN_IF_ERROR(
          ColumnAbsSums(activation, extras.column_abs_sums, options_.parallel_min_entries));
    }
  } else if (!internal::RouteElements(activation, scorer, contract, options_.select,
                                      options_.approx_tolerance, parallel, out, bitmap, sums) &&
             check_while_scoring) {
    const Status named = ValidateMatrix(activation, "activation", OnNonFinite::kReject);
    SPARSELINK_CHECK(!named.ok());
    return named;
  }
  if (contract.rest == RestCodec::kSign1) {
    internal::FillSign1Rest(activation, parallel, out);
  } else {
    out->rest_bits.clear();
    out->rest_centroids.clear();
  }
  return Status::Ok();
}

Result<RoutedTensor> Router::Route(ConstMatrix activation, const SensitivityMap* map,
                                   const Contract& contract, uint64_t step) const {
  RoutedTensor routed;
  SPARSELINK_RETURN_IF_ERROR(Route(activation, map, contract, step, &routed));
  return routed;
}

}  // namespace sparselink
