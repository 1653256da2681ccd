// Scatters and gathers the routing and codec modules share, without the argument checks of the
// public forms (routing.hpp): for callers that have checked the mask and shapes themselves.
// Internal header.
#pragma once

#include <cstddef>
#include <vector>

#include "sparselink/routing.hpp"
#include "sparselink/status.hpp"
#include "sparselink/types.hpp"

namespace sparselink::internal {

// ScatterAtMask's work: row r of `out` gets zeros, then values[kept before row r + i] at the
// mask's i-th kept column of the row. `mask` valid, `out` rows x cols, `values` num_kept().
void ScatterRowsAtMask(const RoutedTensor& mask, const float* values, MutableMatrix out,
                       bool parallel);

// GatherAtMask's work at a KeptMask: `values` resized to num_kept(), a non-finite value named
// gradient[r][c] under kReject (and `values` cleared) or replaced by 0. `mask` valid,
// `gradient` rows x cols.
Status GatherRowsAtMask(const KeptMask& mask, ConstMatrix gradient, std::vector<float>* values,
                        OnNonFinite non_finite, bool parallel);

}  // namespace sparselink::internal
