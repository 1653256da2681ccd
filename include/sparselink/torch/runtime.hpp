// What LibTorch runs on: thread count and BLAS, and a quick speed probe. LibTorch from Debian
// links libblas.so.3, which the Debian alternatives point at OpenBLAS when libopenblas0-pthread
// is installed, and at the reference BLAS (about 7x slower training) otherwise.
#pragma once

#include <cstddef>
#include <string>

namespace sparselink::torch_adapter {

struct TorchRuntimeInfo {
  int num_threads = 0;          // at::get_num_threads(): intra-op threads
  std::string blas;             // openblas_get_config(), or "reference/unknown (not OpenBLAS)"
  double matmul_1024_ms = 0.0;  // best of 5 fp32 1024x1024x1024 matmuls, milliseconds
  // OPENBLAS_CORETYPE from the environment, else empty. It overrides OpenBLAS's own choice of
  // kernels: on this project's Zen 5 machine OpenBLAS picks its AVX-512 Cooperlake kernels,
  // and OPENBLAS_CORETYPE=Haswell (AVX2) halves the matmul speed (docs/RESULTS.md).
  std::string openblas_coretype;
};

// Sets LibTorch's intra-op threads and, when the BLAS is OpenBLAS, OpenBLAS's own thread pool
// (ATen does not forward the count to OpenBLAS). `num_threads` <= 0 leaves both unchanged.
// Process-wide; call before training, not concurrently with running ops.
void SetNumThreads(int num_threads);

// LibTorch's OpenMP threads spin after every parallel region while OpenBLAS's own threads
// run the next matmul, so on a machine with few cores the two pools fight: measured 2-10x
// slower MLP training on 2 cores, worst when other processes share the cores. The cure is
// OMP_WAIT_POLICY=PASSIVE, which libgomp reads only when it loads, i.e. before main. This
// re-executes the program (/proc/self/exe, same argv) once with OMP_WAIT_POLICY=PASSIVE when
// the variable is unset; it returns normally when the variable is already set (any value,
// so a user's choice is kept) or when the re-exec fails. Call it first thing in main, before
// any thread is started. Linux only.
void EnsurePassiveOpenMpWait(char** argv);

// The baseline of `sparselink bench`: torch::topk of |a| along each row of the rows x cols
// matrix at `data` (k per row, unsorted, which is the cheapest form), then a gather of the
// kept values, on `threads` intra-op threads.
void TopkGatherBaseline(const float* data, size_t rows, size_t cols, size_t k, int threads);

// Probes the runtime. Cost: about 6 matmuls of 1024^3 (tens of ms with OpenBLAS, ~1 s without).
TorchRuntimeInfo ProbeTorchRuntime();

}  // namespace sparselink::torch_adapter
