// Models split into pipeline stages: an MLP with configurable widths and a small CNN, both for
// 1x28x28 inputs (Fashion-MNIST) and 10 classes.
//
// A model is built as a chain of *blocks*; every block but the last ends in a ReLU (for the CNN
// in ReLU + 2x2 max-pool, which keeps the values non-negative). A stage boundary may only sit
// between blocks, so the activation that crosses a boundary is always a post-ReLU output —
// non-negative and typically sparse, which is what routing exploits.
//
//   MLP  widths {w0, w1, ..., wL}:   block i = Linear(w_i, w_{i+1}) + ReLU for i < L-1
//                                    (block 0 starts with Flatten), last block = Linear(w_{L-1},
//                                    wL)
//                                    -> L blocks, at most L stages. Default 784-1024-1024-1024-10:
//                                    4 blocks, boundary activations [N, 1024].
//   CNN  block 0: Conv(1->32, 3x3, pad 1) + ReLU + MaxPool 2      -> [N, 32, 14, 14]
//        block 1: Conv(32->64, 3x3, pad 1) + ReLU + MaxPool 2     -> [N, 64, 7, 7]
//        block 2: Flatten + Linear(64*7*7 -> 128) + ReLU          -> [N, 128]
//        block 3: Linear(128 -> 10)                               -> [N, 10] logits
//        -> at most 4 stages.
//
// With B blocks and S stages, stage s holds blocks [floor(s*B/S), floor((s+1)*B/S)), so stages
// are as even as block counts allow (S=2 on 4 blocks: 2+2; S=3: 1+1+2).
//
// Initialization uses LibTorch's defaults and the global generator: call torch::manual_seed(seed)
// first and the parameters are identical from run to run.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sparselink/status.hpp"

namespace sparselink::torch_adapter {

// Stage s maps the output of stage s-1 (stage 0: images [N,1,28,28]) to its own output; the
// last stage outputs logits [N, 10]. Modules are reference counted; copying the vector shares
// the parameters.
using Stages = std::vector<torch::nn::Sequential>;

inline const std::vector<int64_t> kDefaultMlpWidths = {784, 1024, 1024, 1024, 10};

// `widths` = {inputs, hidden..., outputs}; widths[0] must be 784 (1*28*28) for Fashion-MNIST
// images but any positive value works for flattened inputs of that size. Errors: fewer than 2
// widths, a width <= 0, num_stages < 1 or more than the number of blocks
// ("stages = 9: the mlp has at most 4 stages").
Result<Stages> SplitMlp(const std::vector<int64_t>& widths, int num_stages);

// The CNN above, split into `num_stages` in [1, 4].
Result<Stages> SplitCnn(int num_stages);

// "mlp" or "cnn" (the names the CLI uses); the MLP uses kDefaultMlpWidths.
Result<Stages> BuildModel(const std::string& name, int num_stages);

// Every parameter of every stage, in stage order (what an optimizer needs).
std::vector<torch::Tensor> StageParameters(const Stages& stages);

// Total number of scalar parameters.
int64_t CountParameters(const Stages& stages);

}  // namespace sparselink::torch_adapter
