// The README's library example, end to end: route one activation, encode it, decode it back.
#include <cstdio>
#include <sparselink/codec.hpp>
#include <sparselink/routing.hpp>
#include <vector>

int main() {
  constexpr size_t kRows = 4, kCols = 1024;
  std::vector<float> activation(kRows * kCols);
  for (size_t i = 0; i < activation.size(); ++i) activation[i] = static_cast<float>(i % 97);
  auto map = sparselink::SensitivityMap::Create({.num_neurons = kCols});
  auto router = sparselink::Router::Create({.scoring = sparselink::Scoring::kSensitivity});
  if (!map.ok() || !router.ok()) return 1;
  const sparselink::Contract contract{.keep = 0.1,
                                      .keep_full = 0.5,
                                      .full_codec = sparselink::ValueCodec::kFp16,
                                      .lossy_codec = sparselink::ValueCodec::kInt8};
  auto routed = router->Route({activation.data(), kRows, kCols}, &*map, contract, 0);
  if (!routed.ok()) return 1;
  std::vector<uint8_t> packet;
  if (!sparselink::EncodeActivation(*routed, contract, {.step = 0}, {}, &packet).ok()) return 1;
  auto decoded = sparselink::DecodeActivation(packet);
  if (!decoded.ok() || decoded->num_kept() != routed->num_kept()) return 1;
  std::printf("embedded sparselink: %zu kept entries in a %zu-byte packet\n", decoded->num_kept(),
              packet.size());
  return 0;
}
