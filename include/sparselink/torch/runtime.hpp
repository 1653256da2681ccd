// What LibTorch runs on: thread count and BLAS, and a quick speed probe. LibTorch from Debian
// links libblas.so.3, which the Debian alternatives point at OpenBLAS when libopenblas0-pthread
// (or -openmp) is installed, and at the reference BLAS (about 7x slower training) otherwise.
// sparselink's own programs load OpenBLAS's OpenMP build when it is installed, whatever the
// alternatives say (an RPATH, cmake/torch.cmake).
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
  // and OPENBLAS_CORETYPE=Haswell (AVX2) halves the matmul speed
  // (docs/perf-notes.md#openblas_coretype).
  std::string openblas_coretype;
};

// Sets LibTorch's intra-op threads and, when the BLAS is OpenBLAS, OpenBLAS's own thread pool
// (ATen does not forward the count to OpenBLAS). `num_threads` <= 0 leaves both unchanged.
// Process-wide; call before training, not concurrently with running ops.
void SetNumThreads(int num_threads);

// Whether the loaded BLAS is OpenBLAS built for OpenMP (Debian's libopenblas0-openmp, whose
// openblas_get_config() says USE_OPENMP): then its GEMMs run on the same libgomp thread pool
// as LibTorch's own ops and the router, and one pool serves the whole step. Readable before
// main's first LibTorch call (libtorch_cpu loads the BLAS at start-up).
bool BlasSharesOpenMpPool();

// How the OpenMP threads wait between parallel regions, chosen before any thread exists.
//  - BLAS with its own pthreads (libopenblas0-pthread, or any BLAS not built for OpenMP):
//    LibTorch's OpenMP threads spin after every parallel region while OpenBLAS's own threads
//    run the next matmul, so on a machine with few cores the two pools fight: measured 2-10x
//    slower MLP training on 2 cores, worst when other processes share the cores. The cure is
//    OMP_WAIT_POLICY=PASSIVE, which libgomp reads only when it loads, i.e. before main. This
//    re-executes the program (/proc/self/exe, same argv) once with OMP_WAIT_POLICY=PASSIVE.
//  - OpenBLAS on OpenMP (BlasSharesOpenMpPool): one pool, nothing to fight; libgomp's default
//    (spin a few ms, then sleep) keeps the threads awake between the step's parallel regions,
//    so short ones (a boundary's 128 x 1024 tensors) can use them. Nothing is changed.
// Returns normally when OMP_WAIT_POLICY is already set (any value, so a user's choice is kept),
// when nothing needs changing, or when the re-exec fails. Call it first thing in main. Linux
// only.
void ChooseOpenMpWait(char** argv);

// Whether the OpenMP threads are awake between parallel regions: the BLAS shares their pool
// and neither OMP_WAIT_POLICY=PASSIVE nor GOMP_SPINCOUNT=0 puts them to sleep at once. Then a
// parallel region of a few tens of microseconds pays off; otherwise each one first waits for a
// sleeping thread to wake (docs/perf-notes.md#omp_wait_policy).
bool OpenMpThreadsStayAwake();

// The baseline of `sparselink bench`: torch::topk of |a| along each row of the rows x cols
// matrix at `data` (k per row, unsorted, which is the cheapest form), then a gather of the
// kept values, on `threads` intra-op threads.
void TopkGatherBaseline(const float* data, size_t rows, size_t cols, size_t k, int threads);

// Probes the runtime. Cost: about 6 matmuls of 1024^3 (tens of ms with OpenBLAS, ~1 s without).
TorchRuntimeInfo ProbeTorchRuntime();

}  // namespace sparselink::torch_adapter
