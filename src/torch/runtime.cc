// LibTorch runtime probe. OpenBLAS is found by symbol, not by linking: libtorch_cpu loads
// libblas.so.3 (a Debian alternative), and when that is OpenBLAS its entry points are visible
// through dlsym(RTLD_DEFAULT). Linking OpenBLAS directly would hide the case we want to detect.
#include "sparselink/torch/runtime.hpp"

#include <dlfcn.h>
#include <strings.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace sparselink::torch_adapter {
namespace {

using OpenBlasSetThreads = void (*)(int);
using OpenBlasGetConfig = char* (*)();

template <typename Fn>
Fn FindSymbol(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, name));
}

}  // namespace

void SetNumThreads(int num_threads) {
  if (num_threads <= 0) return;
  torch::set_num_threads(num_threads);
  if (auto set = FindSymbol<OpenBlasSetThreads>("openblas_set_num_threads")) set(num_threads);
}

bool BlasSharesOpenMpPool() {
  const auto get_config = FindSymbol<OpenBlasGetConfig>("openblas_get_config");
  return get_config != nullptr && std::strstr(get_config(), "USE_OPENMP") != nullptr;
}

void ChooseOpenMpWait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (BlasSharesOpenMpPool()) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  execv("/proc/self/exe", argv);
  // Only reached when execv failed: carry on with the spinning default.
}

bool OpenMpThreadsStayAwake() {
  if (!BlasSharesOpenMpPool()) return false;
  if (const char* policy = std::getenv("OMP_WAIT_POLICY");
      policy != nullptr && strcasecmp(policy, "passive") == 0) {
    return false;
  }
  const char* spin = std::getenv("GOMP_SPINCOUNT");
  return spin == nullptr || std::strtod(spin, nullptr) > 0;
}

TorchRuntimeInfo ProbeTorchRuntime() {
  TorchRuntimeInfo info;
  info.num_threads = torch::get_num_threads();
  if (auto get_config = FindSymbol<OpenBlasGetConfig>("openblas_get_config")) {
    info.blas = get_config();
  } else {
    info.blas = "reference/unknown (not OpenBLAS)";
  }
  if (const char* core = std::getenv("OPENBLAS_CORETYPE")) info.openblas_coretype = core;
  torch::NoGradGuard no_grad;
  const torch::Tensor a = torch::rand({1024, 1024});
  const torch::Tensor b = torch::rand({1024, 1024});
  torch::Tensor c = torch::mm(a, b);  // warm-up: thread pool start, page faults
  double best_ms = std::numeric_limits<double>::infinity();
  for (int i = 0; i < 5; ++i) {
    const auto start = std::chrono::steady_clock::now();
    torch::mm_out(c, a, b);
    const std::chrono::duration<double, std::milli> elapsed =
        std::chrono::steady_clock::now() - start;
    best_ms = std::min(best_ms, elapsed.count());
  }
  info.matmul_1024_ms = best_ms;
  return info;
}

}  // namespace sparselink::torch_adapter

namespace sparselink::torch_adapter {

void TopkGatherBaseline(const float* data, size_t rows, size_t cols, size_t k, int threads) {
  if (at::get_num_threads() != threads) at::set_num_threads(threads);
  const torch::NoGradGuard no_grad;
  const torch::Tensor a = torch::from_blob(
      const_cast<float*>(data), {static_cast<int64_t>(rows), static_cast<int64_t>(cols)});
  const torch::Tensor indices = std::get<1>(
      a.abs().topk(static_cast<int64_t>(k), /*dim=*/1, /*largest=*/true, /*sorted=*/false));
  const torch::Tensor values = a.gather(1, indices);
  (void)values.data_ptr<float>();
}

}  // namespace sparselink::torch_adapter
