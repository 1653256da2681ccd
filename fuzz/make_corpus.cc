// Writes the seed corpus for the fuzzers: real packets of every kind, codec and index codec,
// real serialized sensitivity maps, small valid idx files (gzip'd and plain, behind the idx
// fuzzer's selector byte), and the CLI's flag values. usage: make_corpus OUT_DIR
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "sparselink/codec.hpp"
#include "sparselink/routing.hpp"
#include "sparselink/sensitivity.hpp"

namespace {
void Write(const std::filesystem::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

void PutBigEndian32(std::vector<uint8_t>& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(value >> shift));
}

// One gzip member holding `raw`, as gzip(1) writes it.
std::vector<uint8_t> Gzip(const std::vector<uint8_t>& raw) {
  z_stream stream{};
  deflateInit2(&stream, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::vector<uint8_t> out(deflateBound(&stream, raw.size()) + 32);
  stream.next_in = const_cast<Bytef*>(raw.data());
  stream.avail_in = static_cast<uInt>(raw.size());
  stream.next_out = out.data();
  stream.avail_out = static_cast<uInt>(out.size());
  deflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

// Small valid idx files for the idx fuzzer: its selector byte (bit 0 labels, bit 1 plain),
// then the file. Images are 28 x 28, as the fuzzer's options expect.
void WriteIdxCorpus(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  int n = 0;
  for (uint32_t count : {0u, 1u, 3u}) {
    std::vector<uint8_t> images, labels;
    PutBigEndian32(images, 2051);
    PutBigEndian32(images, count);
    PutBigEndian32(images, 28);
    PutBigEndian32(images, 28);
    for (uint32_t i = 0; i < count * 28 * 28; ++i) images.push_back(static_cast<uint8_t>(i * 7));
    PutBigEndian32(labels, 2049);
    PutBigEndian32(labels, count * 4);
    for (uint32_t i = 0; i < count * 4; ++i) labels.push_back(static_cast<uint8_t>(i % 10));
    const std::pair<uint8_t, std::vector<uint8_t>> files[] = {
        {0, Gzip(images)}, {1, Gzip(labels)}, {2, images}, {3, labels}};
    for (const auto& [selector, file] : files) {
      std::vector<uint8_t> input{selector};
      input.insert(input.end(), file.begin(), file.end());
      Write(dir / ("idx_" + std::to_string(n++)), input);
    }
  }
}

// The CLI's flag values: bandwidths, codecs, policies, modes, keep percentages.
void WriteTextCorpus(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  int n = 0;
  for (const char* text :
       {"100Mbit",   "1Gbit",  "250kbit", "12.5MB",     "1e8",      "8B",
        "fp32",      "fp16",   "bf16",    "int8",       "int4",     "sensitivity",
        "magnitude", "random", "taylor",  "activation", "gradient", "weighted",
        "10",        "12.5%",  "auto",    "0.5"}) {
    const std::string s(text);
    Write(dir / ("text_" + std::to_string(n++)), std::vector<uint8_t>(s.begin(), s.end()));
  }
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
  auto router = Router::Create({.scoring = Scoring::kMagnitude});
  int n = 0;
  for (size_t cols : {1, 7, 33, 100}) {
    const size_t rows = 3;
    std::vector<float> a(rows * cols);
    for (float& x : a) x = normal(rng);
    for (ValueCodec codec : {ValueCodec::kFp32, ValueCodec::kFp16, ValueCodec::kBf16,
                             ValueCodec::kInt8, ValueCodec::kInt4}) {
      for (IndexCodec index :
           {IndexCodec::kBitmap, IndexCodec::kDeltaVarint, IndexCodec::kSubsetBitmap}) {
        for (Granularity g : {Granularity::kElement, Granularity::kUnit}) {
          for (RestCodec rest : {RestCodec::kDrop, RestCodec::kSign1}) {
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
                EncodeGradientValues(*routed, grad, codec, {}, {}, &packet).ok()) {
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
  WriteIdxCorpus(out / "idx");
  WriteTextCorpus(out / "text");
  std::printf("corpus: %d packets, 4 maps, 12 idx files and 22 flag values in %s\n", n, argv[1]);
  return 0;
}
