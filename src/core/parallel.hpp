// Row ranges over the OpenMP threads, for the calls that work row by row. Internal header.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstddef>

namespace sparselink::internal {

// Calls fn(first_row, end_row) once per thread (once in all when !parallel), the rows split
// into contiguous ranges in order, each starting at a multiple of 8 rows: eight rows of any
// width start on a byte of a rows x cols bitmap. A thread's range may be empty. Which rows a
// range holds depends on the thread count, so fn must write the same output for any split.
template <typename Fn>
void ForRowRanges(size_t rows, bool parallel, Fn&& fn) {
  constexpr size_t kRowsPerChunk = 8;
  const size_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
#pragma omp parallel if (parallel)
  {
    const auto threads = static_cast<size_t>(omp_get_num_threads());
    const auto me = static_cast<size_t>(omp_get_thread_num());
    const size_t first = std::min(rows, me * chunks / threads * kRowsPerChunk);
    const size_t end = std::min(rows, (me + 1) * chunks / threads * kRowsPerChunk);
    fn(first, end);
  }
}

}  // namespace sparselink::internal
