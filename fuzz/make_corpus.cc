// Writes the seed corpus for the fuzzers: real packets of every kind, codec and index codec,
// and real serialized sensitivity maps. usage: make_corpus OUT_DIR
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "sparselink/codec.hpp"
#include "sparselink/routing.hpp"
#include "sparselink/sensitivity.hpp"

namespace {
void Write(const std::filesystem::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}
}  // namespace

int main(int argc, char** argv) {
  using namespace sparselink;
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus OUT_DIR\n");
    return 2;
  }
  const std::filesystem::path out = argv[1];
  std::filesystem::create_directories(out / "packet");
  std::filesystem::create_directories(out / "sensitivity");
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto router = Router::Create({.policy = ScorePolicy::kMagnitude});
  int n = 0;
  for (size_t cols : {1, 7, 33, 100}) {
    const size_t rows = 3;
    std::vector<float> a(rows * cols);
    for (float& x : a) x = normal(rng);
    for (ValueCodec codec : {ValueCodec::kFp32, ValueCodec::kFp16, ValueCodec::kBf16,
                             ValueCodec::kInt8, ValueCodec::kInt4}) {
      for (IndexCodec index : {IndexCodec::kBitmap, IndexCodec::kDeltaVarint}) {
        for (Granularity g : {Granularity::kElement, Granularity::kUnit}) {
          for (RestPolicy rest : {RestPolicy::kDrop, RestPolicy::kSign1}) {
            const Contract contract{.keep = 0.3,
                                    .keep_full = 0.5,
                                    .full_codec = ValueCodec::kFp16,
                                    .lossy_codec = codec,
                                    .rest = rest,
                                    .granularity = g};
            auto routed = router->Route({a.data(), rows, cols}, nullptr, contract, 0);
            if (!routed.ok()) continue;
            std::vector<uint8_t> packet;
            if (EncodeActivation(*routed, contract, {.step = 1},
                                 {.index_codec = index, .zstd = (n % 3 == 0)}, &packet)
                    .ok()) {
              Write(out / "packet" / ("activation_" + std::to_string(n++)), packet);
            }
            std::vector<float> grad;
            if (GatherAtMask(*routed, {a.data(), rows, cols}, &grad).ok() &&
                EncodeGradient(*routed, grad, codec, {}, {}, &packet).ok()) {
              Write(out / "packet" / ("gradient_" + std::to_string(n++)), packet);
            }
          }
        }
      }
    }
    std::vector<uint8_t> packet;
    std::vector<float> summary(cols, 0.5f);
    if (EncodeSummary(summary, {}, &packet).ok())
      Write(out / "packet" / ("summary_" + std::to_string(n++)), packet);
    if (EncodeContract(Contract{.keep = 0.07}, {}, &packet).ok()) {
      Write(out / "packet" / ("contract_" + std::to_string(n++)), packet);
    }
    auto map = SensitivityMap::Create({.num_neurons = cols, .block = cols > 4 ? 4u : 1u});
    std::vector<float> g(rows * cols);
    for (float& x : g) x = normal(rng);
    if (map.ok() && map->Update({a.data(), rows, cols}, {g.data(), rows, cols}).ok()) {
      Write(out / "sensitivity" / ("map_" + std::to_string(cols)), map->Serialize());
    }
  }
  std::printf("corpus: %d packets and 4 maps in %s\n", n, argv[1]);
  return 0;
}
