// The LibTorch adapter from an installed package (the `torch` component): one boundary between
// two linear layers, a few training steps through it, and what crossed the link.
#include <torch/torch.h>

#include <cstdio>
#include <sparselink/torch/routed_boundary.hpp>

int main() {
  torch::manual_seed(1);
  namespace ta = sparselink::torch_adapter;
  auto boundaries = ta::RoutedBoundaries::Create({.keep = 0.1}, nullptr);
  if (!boundaries.ok()) {
    std::fprintf(stderr, "%s\n", boundaries.status().ToString().c_str());
    return 1;
  }
  torch::nn::Linear first(256, 512), second(512, 10);
  torch::optim::SGD sgd({first->parameters()[0], first->parameters()[1], second->parameters()[0],
                         second->parameters()[1]},
                        0.1);
  const torch::Tensor x = torch::randn({64, 256});
  const torch::Tensor y = torch::randint(0, 10, {64});
  double first_loss = 0, last_loss = 0;
  for (int64_t step = 0; step < 20; ++step) {
    sgd.zero_grad();
    const torch::Tensor hidden = torch::relu(first(x));
    const torch::Tensor routed = (*boundaries)->Forward(0, hidden, /*training=*/true);
    const torch::Tensor loss = torch::nn::functional::cross_entropy(second(routed), y);
    loss.backward();
    sgd.step();
    (*boundaries)->OnStepEnd(step);
    (step == 0 ? first_loss : last_loss) = loss.item<double>();
  }
  const ta::BoundaryReport report = (*boundaries)->Report().at(0);
  std::printf(
      "routed_step: loss %.3f -> %.3f, %llu wire bytes for %llu dense fp32 bytes\n", first_loss,
      last_loss,
      static_cast<unsigned long long>(report.forward_wire_bytes + report.backward_wire_bytes),
      static_cast<unsigned long long>(report.dense_fp32_bytes));
  return last_loss < first_loss ? 0 : 1;
}
