// Dense training of the stage-split MLP or CNN on Fashion-MNIST: the baseline every routed
// run is compared with. Not a Google Benchmark (one run takes minutes); prints the runtime
// probe and one line per epoch.
//
//   torch_dense_train [mlp|cnn] [epochs] [adam|sgd] [lr] [batch] [threads] [seed] [stages] [max_train_samples]
//   torch_dense_train mlp 5 sgd 0.05 128 2 1 4      (LR_SCHEDULE=constant: no cosine decay)
//   torch_dense_train cnn 2 sgd 0.05 128 2 1 4
// Arguments left out take the TrainOptions defaults; threads default to 2 here.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include <torch/torch.h>

#include "sparselink/torch/fashion_mnist.hpp"
#include "sparselink/torch/models.hpp"
#include "sparselink/torch/runtime.hpp"
#include "sparselink/torch/trainer.hpp"

namespace st = sparselink::torch_adapter;

int main(int argc, char** argv) {
  st::EnsurePassiveOpenMpWait(argv);
  const std::string model = argc > 1 ? argv[1] : "mlp";
  st::TrainOptions options;
  options.epochs = argc > 2 ? std::atoi(argv[2]) : 5;
  const std::string optimizer = argc > 3 ? argv[3] : "sgd";
  options.optimizer = optimizer == "adam" ? st::OptimizerKind::kAdam : st::OptimizerKind::kSgdMomentum;
  const double default_lr = options.optimizer == st::OptimizerKind::kAdam ? 1e-3 : 0.05;
  options.learning_rate = argc > 4 ? std::atof(argv[4]) : default_lr;
  options.batch_size = argc > 5 ? std::atoll(argv[5]) : 128;
  options.num_threads = argc > 6 ? std::atoi(argv[6]) : 2;
  options.seed = argc > 7 ? std::strtoull(argv[7], nullptr, 10) : 1;
  const int num_stages = argc > 8 ? std::atoi(argv[8]) : 4;
  options.max_train_samples = argc > 9 ? std::atoll(argv[9]) : 0;

  st::SetNumThreads(options.num_threads);
  if (const char* schedule = std::getenv("LR_SCHEDULE")) {  // "constant" or "cosine"
    options.schedule = std::string(schedule) == "constant" ? st::LrSchedule::kConstant
                                                           : st::LrSchedule::kCosine;
  }
  const st::TorchRuntimeInfo info = st::ProbeTorchRuntime();
  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  std::printf("threads %d  OMP_WAIT_POLICY %s  blas %s  matmul 1024^3 %.1f ms\n",
              info.num_threads, wait_policy != nullptr ? wait_policy : "(unset)", info.blas.c_str(),
              info.matmul_1024_ms);

  auto data = st::LoadFashionMnist();
  if (!data.ok()) {
    std::fprintf(stderr, "torch_dense_train: %s\n", data.status().ToString().c_str());
    return 1;
  }
  torch::manual_seed(options.seed);
  auto stages = st::BuildModel(model, num_stages);
  if (!stages.ok()) {
    std::fprintf(stderr, "torch_dense_train: %s\n", stages.status().ToString().c_str());
    return 1;
  }
  std::printf("%s  %d stages  %lld parameters  %s lr %g (%s)  batch %lld  seed %llu\n", model.c_str(),
              num_stages, static_cast<long long>(st::CountParameters(*stages)), optimizer.c_str(),
              options.learning_rate,
              options.schedule == st::LrSchedule::kCosine ? "cosine" : "constant",
              static_cast<long long>(options.batch_size),
              static_cast<unsigned long long>(options.seed));
  std::fflush(stdout);
  auto report = st::Train(*stages, data->train, data->test, options, nullptr, &std::cout);
  if (!report.ok()) {
    std::fprintf(stderr, "torch_dense_train: %s\n", report.status().ToString().c_str());
    return 1;
  }
  return 0;
}
