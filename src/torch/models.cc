// Builds the MLP and the CNN as a chain of blocks (each non-final block ends in ReLU, or ReLU +
// max-pool) and groups consecutive blocks into stages; see models.hpp for the layer table and
// the split rule.
#include "sparselink/torch/models.hpp"

#include <string>
#include <utility>

#include "sparselink/torch/fashion_mnist.hpp"

namespace sparselink::torch_adapter {
namespace {

namespace nn = torch::nn;

// Checked before any block is built: building initializes parameters and so advances the
// global generator, which a refused call must not do.
Status CheckStages(int num_stages, int64_t num_blocks, const char* model_name) {
  if (num_stages < 1) {
    return FieldError(ErrorCode::kInvalidArgument, "stages", num_stages, "must be >= 1");
  }
  if (num_stages > num_blocks) {
    return FieldError(ErrorCode::kInvalidArgument, "stages", num_stages,
                      std::string("the ") + model_name + " has at most " +
                          std::to_string(num_blocks) + " stages");
  }
  return Status::Ok();
}

// A block is a short list of layers; nn::Sequential cannot nest (its forward is a template), so
// a stage is the flat concatenation of its blocks' layers.
using Block = std::vector<nn::AnyModule>;

// Groups `blocks` into `num_stages` consecutive stages: stage s gets blocks
// [floor(s*B/S), floor((s+1)*B/S)). Every stage is non-empty because 1 <= S <= B.
Stages GroupBlocks(const std::vector<Block>& blocks, int num_stages) {
  const auto num_blocks = static_cast<int64_t>(blocks.size());
  Stages stages;
  stages.reserve(static_cast<size_t>(num_stages));
  for (int64_t s = 0; s < num_stages; ++s) {
    const int64_t begin = s * num_blocks / num_stages;
    const int64_t end = (s + 1) * num_blocks / num_stages;
    nn::Sequential stage;
    for (int64_t b = begin; b < end; ++b) {
      for (const nn::AnyModule& layer : blocks[static_cast<size_t>(b)]) stage->push_back(layer);
    }
    stages.push_back(std::move(stage));
  }
  return stages;
}

}  // namespace

Result<Stages> SplitMlp(const std::vector<int64_t>& widths, int num_stages) {
  if (widths.size() < 2) {
    return FieldError(ErrorCode::kInvalidArgument, "mlp widths", widths.size(),
                      "need at least 2 (inputs and outputs)");
  }
  for (size_t i = 0; i < widths.size(); ++i) {
    if (widths[i] <= 0) {
      return FieldError(ErrorCode::kInvalidArgument, "mlp widths[" + std::to_string(i) + "]",
                        widths[i], "must be > 0");
    }
  }
  SPARSELINK_RETURN_IF_ERROR(
      CheckStages(num_stages, static_cast<int64_t>(widths.size()) - 1, "mlp"));
  std::vector<Block> blocks;
  for (size_t i = 0; i + 1 < widths.size(); ++i) {
    Block block;
    if (i == 0) block.emplace_back(nn::Flatten());
    block.emplace_back(nn::Linear(widths[i], widths[i + 1]));
    if (i + 2 < widths.size()) block.emplace_back(nn::ReLU());
    blocks.push_back(std::move(block));
  }
  return GroupBlocks(blocks, num_stages);
}

Result<Stages> SplitCnn(int num_stages) {
  constexpr int kCnnBlocks = 4;
  SPARSELINK_RETURN_IF_ERROR(CheckStages(num_stages, kCnnBlocks, "cnn"));
  const std::vector<Block> blocks = {
      {nn::AnyModule(nn::Conv2d(nn::Conv2dOptions(1, 32, 3).padding(1))), nn::AnyModule(nn::ReLU()),
       nn::AnyModule(nn::MaxPool2d(nn::MaxPool2dOptions(2)))},
      {nn::AnyModule(nn::Conv2d(nn::Conv2dOptions(32, 64, 3).padding(1))),
       nn::AnyModule(nn::ReLU()), nn::AnyModule(nn::MaxPool2d(nn::MaxPool2dOptions(2)))},
      {nn::AnyModule(nn::Flatten()), nn::AnyModule(nn::Linear(64 * 7 * 7, 128)),
       nn::AnyModule(nn::ReLU())},
      {nn::AnyModule(nn::Linear(128, kNumClasses))},
  };
  return GroupBlocks(blocks, num_stages);
}

Result<Stages> BuildModel(const std::string& name, int num_stages) {
  if (name == "mlp") return SplitMlp(kDefaultMlpWidths, num_stages);
  if (name == "cnn") return SplitCnn(num_stages);
  return FieldError(ErrorCode::kInvalidArgument, "model", name, "expected mlp or cnn");
}

std::vector<torch::Tensor> StageParameters(const Stages& stages) {
  std::vector<torch::Tensor> parameters;
  for (const auto& stage : stages) {
    for (const auto& p : stage->parameters()) parameters.push_back(p);
  }
  return parameters;
}

int64_t CountParameters(const Stages& stages) {
  int64_t total = 0;
  for (const auto& p : StageParameters(stages)) total += p.numel();
  return total;
}

}  // namespace sparselink::torch_adapter
