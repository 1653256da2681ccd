// Scatters the routing and codec modules share, without the argument checks of the public
// forms (routing.hpp): for callers that have validated the mask themselves. Internal header.
#pragma once

#include <cstddef>

#include "sparselink/routing.hpp"
#include "sparselink/types.hpp"

namespace sparselink::internal {

// ScatterAtMask's work: row r of `out` gets zeros, then values[kept before row r + i] at the
// mask's i-th kept column of the row. `mask` valid, `out` rows x cols, `values` num_kept().
void ScatterRowsAtMask(const RoutedTensor& mask, const float* values, MutableMatrix out,
                       bool parallel);

}  // namespace sparselink::internal
