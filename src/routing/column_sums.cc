// ColumnAbsSums: the public form of the router's column sums (routing/column_sums.hpp).
#include "routing/column_sums.hpp"

#include <algorithm>
#include <vector>

#include "sparselink/routing.hpp"

namespace sparselink {

Status ColumnAbsSums(ConstMatrix a, std::vector<float>* sums, size_t parallel_min_entries) {
  if (sums == nullptr) return Status(ErrorCode::kInvalidArgument, "sums = null: no output given");
  SPARSELINK_RETURN_IF_ERROR(ValidateMatrix(a, "a", OnNonFinite::kTreatAsZero));
  thread_local std::vector<float> partials;
  internal::AbsSumRows rows(sums, a.rows, a.cols, partials);
  const size_t blocks = (a.rows + internal::kSumRows - 1) / internal::kSumRows;
#pragma omp parallel if (a.size() >= parallel_min_entries)
  {
#pragma omp for schedule(static)
    for (size_t b = 0; b < blocks; ++b) {
      for (size_t r = b * internal::kSumRows; r < std::min(a.rows, (b + 1) * internal::kSumRows);
           ++r) {
        rows.Add(r, a.Row(r));
      }
    }
    rows.Finish();
  }
  return Status::Ok();
}

}  // namespace sparselink
