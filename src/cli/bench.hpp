// `sparselink bench`: the routing engine against its baselines, in one process, on the same
// inputs. Each case routes rows x cols fp32 activations (a pool of random inputs larger than
// the last-level cache, taken in turn, so no method runs from a warm cache) with:
//   fast         RouteAndEncode: fast router + packet encoder (values, bitmap, checksum)
//   fast_decode  DecodeActivationToDense: the packet straight back to a dense tensor
//   reference    the reference router (nth_element per row) + the same encoder
//   torch_topk   torch::topk on |a| per row + gather of the values (when LibTorch is built)
//   nth_element  std::nth_element on a copy of each row's |a| (selection alone)
//   memcpy       std::memcpy of the same input bytes
//   read         a read-only pass over the same input, rows split over the threads (the
//                route reads its input once: the memory system's ceiling for it)
// and reports GB/s of dense input for each, and the ratios the issue tracker asks about. A case
// on more than one thread also times fast, fast_decode and read on one thread, in rounds that
// alternate with its own (<name>_one_thread), and reports each one's speed-up over one thread
// as the median of the rounds' ratios.
#pragma once

#include <cstddef>
#include <functional>
#include <ostream>
#include <string>

namespace sparselink::cli {

struct BenchOptions {
  std::string what = "all";              // route | decode | all
  std::string json_path;                 // also write the results here as JSON
  double min_seconds = 0.2;              // per method and round
  int rounds = 5;                        // the median of these is reported
  size_t pool_bytes = size_t{64} << 20;  // inputs per case, in turn (> L3 here: 32 MiB)
  bool quick = false;                    // one small case, short rounds: for tests
  int only_case = 0;                     // 1-based: run only this case of the list (0: all)
  std::string simd = "best";             // best | avx2 | sse4: cap the kernels' instruction set
};

// torch::topk + gather over a rows x cols matrix with k per row, on `threads` threads.
using TopkBaseline =
    std::function<void(const float* data, size_t rows, size_t cols, size_t k, int threads)>;

// Runs the cases, prints a table (and a progress line per case) to `out`, writes the JSON when
// asked. Returns 0, or 1 with one line on `err` (bad option, unwritable JSON path, a method
// failing its own round-trip check).
int RunBench(const BenchOptions& options, const TopkBaseline& torch_topk, std::ostream& out,
             std::ostream& err);

}  // namespace sparselink::cli
