// The core library from an installed package: route a batch of activations under a contract,
// encode the packet, decode it and check that every kept entry came back.
#include <cmath>
#include <cstdio>
#include <sparselink/codec.hpp>
#include <sparselink/routing.hpp>
#include <vector>

int main() {
  constexpr size_t kRows = 8, kCols = 1024;
  std::vector<float> activation(kRows * kCols);
  for (size_t i = 0; i < activation.size(); ++i) {
    activation[i] = std::sin(static_cast<float>(i) * 0.37f) * static_cast<float>(i % 13);
  }
  auto map = sparselink::SensitivityMap::Create({.num_neurons = kCols});
  auto router = sparselink::Router::Create({.scoring = sparselink::Scoring::kMagnitude});
  if (!map.ok() || !router.ok()) return 1;
  const sparselink::Contract contract{.keep = 0.1,
                                      .keep_full = 1.0,
                                      .full_codec = sparselink::ValueCodec::kFp32,
                                      .lossy_codec = sparselink::ValueCodec::kInt8};
  auto routed = router->Route({activation.data(), kRows, kCols}, &*map, contract, 0);
  if (!routed.ok()) {
    std::fprintf(stderr, "route: %s\n", routed.status().ToString().c_str());
    return 1;
  }
  std::vector<uint8_t> packet;
  if (auto s = sparselink::EncodeActivation(*routed, contract, {.step = 0}, {}, &packet); !s.ok()) {
    std::fprintf(stderr, "encode: %s\n", s.ToString().c_str());
    return 1;
  }
  std::vector<float> dense(kRows * kCols, -1.0f);
  if (auto s = sparselink::DecodeActivationToDense(packet, {dense.data(), kRows, kCols}); !s.ok()) {
    std::fprintf(stderr, "decode: %s\n", s.ToString().c_str());
    return 1;
  }
  size_t kept = 0;
  for (size_t i = 0; i < dense.size(); ++i) {
    if (dense[i] == 0.0f) continue;
    if (dense[i] != activation[i]) {
      std::fprintf(stderr, "entry %zu came back as %g, sent %g\n", i, dense[i], activation[i]);
      return 1;
    }
    kept += 1;
  }
  std::printf("route_packet: %zu of %zu entries kept, %zu-byte packet (dense fp32: %zu)\n", kept,
              dense.size(), packet.size(), dense.size() * sizeof(float));
  return kept == routed->num_kept() ? 0 : 1;
}
