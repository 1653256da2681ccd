// Routing and coding throughput against the baselines the project measures itself by:
// memcpy of the same bytes and std::nth_element per row. Input bytes = rows * cols * 4.
// Sizes run from in-cache (64 x 512 = 128 KiB) to far beyond cache (1024 x 4096 = 16 MiB);
// a pool of different random inputs is rotated per iteration so no branch predictor or
// cache learns one input.
// SPARSELINK_SIMD=avx2 (or sse4) caps the kernels' instruction set, as `sparselink bench
// --simd` does, to time what a machine without AVX-512 gets.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "simd/kernels.hpp"
#include "sparselink/codec.hpp"
#include "sparselink/routing.hpp"
#include "sparselink/sensitivity.hpp"

namespace sparselink {
namespace {

constexpr int kPool = 4;

struct Inputs {
  size_t rows, cols;
  std::vector<std::vector<float>> pool;
};

const Inputs& GetInputs(size_t rows, size_t cols) {
  static std::vector<Inputs> cache;
  for (const Inputs& in : cache) {
    if (in.rows == rows && in.cols == cols) return in;
  }
  Inputs in{rows, cols, {}};
  std::mt19937_64 rng(rows * 131 + cols);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int p = 0; p < kPool; ++p) {
    std::vector<float> v(rows * cols);
    for (float& x : v) x = normal(rng);
    in.pool.push_back(std::move(v));
  }
  cache.push_back(std::move(in));
  return cache.back();
}

void Sizes(benchmark::internal::Benchmark* b) {
  for (auto [rows, cols] :
       {std::pair{64, 512}, {128, 1024}, {256, 512}, {256, 4096}, {1024, 4096}}) {
    b->Args({rows, cols});
  }
}

void SetBytes(benchmark::State& state, size_t rows, size_t cols) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * rows * cols * sizeof(float)));
}

void BM_Memcpy(benchmark::State& state) {
  const Inputs& in = GetInputs(state.range(0), state.range(1));
  std::vector<float> dst(in.rows * in.cols);
  int i = 0;
  for (auto _ : state) {
    std::memcpy(dst.data(), in.pool[i++ % kPool].data(), dst.size() * sizeof(float));
    benchmark::ClobberMemory();
  }
  SetBytes(state, in.rows, in.cols);
}
BENCHMARK(BM_Memcpy)->Apply(Sizes);

// Baseline: |a| per row, then std::nth_element at k = 10% (selection only, no output).
void BM_NthElement(benchmark::State& state) {
  const Inputs& in = GetInputs(state.range(0), state.range(1));
  std::vector<float> scores(in.cols);
  const size_t k = KeptCount(in.cols, 0.1);
  int i = 0;
  for (auto _ : state) {
    const std::vector<float>& a = in.pool[i++ % kPool];
    for (size_t r = 0; r < in.rows; ++r) {
      for (size_t c = 0; c < in.cols; ++c) scores[c] = std::fabs(a[r * in.cols + c]);
      if (k > 0)
        std::nth_element(scores.begin(), scores.begin() + (k - 1), scores.end(), std::greater<>());
      benchmark::DoNotOptimize(scores.data());
    }
  }
  SetBytes(state, in.rows, in.cols);
}
BENCHMARK(BM_NthElement)->Apply(Sizes);

// Route alone at keep = range(2) percent, keep_full 0.5 (both cuts), under `scoring` and
// `select`. A sensitivity map of random unit values in [0, 1] is used for kSensitivity.
void RouteCase(benchmark::State& state, Scoring scoring, SelectMethod select) {
  const Inputs& in = GetInputs(state.range(0), state.range(1));
  auto router = Router::Create({.scoring = scoring, .select = select});
  auto map = SensitivityMap::Create(SensitivityOptions{.num_neurons = in.cols, .block = 1});
  std::vector<float> unit_values(in.cols);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (float& v : unit_values) v = uniform(rng);
  if (!map.ok() || !map->Assign(unit_values).ok()) state.SkipWithError("map");
  const Contract contract{
      .keep = double(state.range(2)) / 100.0, .keep_full = 0.5, .full_codec = ValueCodec::kFp16};
  RoutedTensor routed;
  int i = 0;
  for (auto _ : state) {
    Status s =
        router->Route({in.pool[i++ % kPool].data(), in.rows, in.cols}, &*map, contract, 0, &routed);
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    benchmark::DoNotOptimize(routed.values.data());
  }
  SetBytes(state, in.rows, in.cols);
}

void RouteSizes(benchmark::internal::Benchmark* b) {
  for (auto [rows, cols] : {std::pair{64, 512}, {128, 1024}, {256, 4096}, {1024, 4096}}) {
    for (int keep_percent : {10, 30}) b->Args({rows, cols, keep_percent});
  }
}

void BM_RouteReference(benchmark::State& state) {
  RouteCase(state, Scoring::kMagnitude, SelectMethod::kReference);
}
BENCHMARK(BM_RouteReference)->Apply(RouteSizes);
void BM_RouteFast(benchmark::State& state) {
  RouteCase(state, Scoring::kMagnitude, SelectMethod::kFast);
}
BENCHMARK(BM_RouteFast)->Apply(RouteSizes);
void BM_RouteSensitivityReference(benchmark::State& state) {
  RouteCase(state, Scoring::kSensitivity, SelectMethod::kReference);
}
BENCHMARK(BM_RouteSensitivityReference)->Apply(RouteSizes);
void BM_RouteSensitivityFast(benchmark::State& state) {
  RouteCase(state, Scoring::kSensitivity, SelectMethod::kFast);
}
BENCHMARK(BM_RouteSensitivityFast)->Apply(RouteSizes);

void RouteAndEncodeCase(benchmark::State& state, SelectMethod select) {
  const Inputs& in = GetInputs(state.range(0), state.range(1));
  auto router = Router::Create({.scoring = Scoring::kMagnitude, .select = select});
  const Contract contract{.keep = 0.1, .keep_full = 1.0, .full_codec = ValueCodec::kFp16};
  RoutedTensor routed;
  std::vector<uint8_t> packet;
  int i = 0;
  for (auto _ : state) {
    Status s = RouteAndEncode(*router, {in.pool[i++ % kPool].data(), in.rows, in.cols}, nullptr,
                              contract, {}, {.index_codec = IndexCodec::kBitmap}, &routed, &packet);
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    benchmark::DoNotOptimize(packet.data());
  }
  SetBytes(state, in.rows, in.cols);
  state.counters["wire_ratio"] = double(in.rows * in.cols * 4) / double(packet.size());
}
// Rows of ties at keep 25 %, where the cut falls inside a tie group (512 x 4096, magnitude):
// range(0) = 0 normal values, 1 zeros and ones, 2 round(2x) of normal x, 3 normal x clipped to
// [0, 0.5] (ReLU with a ceiling); range(1) = 1 exact, 2 approximate (+10 %).
void BM_RouteTies(benchmark::State& state) {
  const size_t rows = 512, cols = 4096;
  std::vector<float> a(rows * cols);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& x : a) {
    const float g = normal(rng);
    switch (state.range(0)) {
      case 0: x = g; break;
      case 1: x = float(rng() % 3 == 0); break;
      case 2: x = std::round(2.0f * g); break;
      default: x = std::clamp(g, 0.0f, 0.5f); break;
    }
  }
  auto router = Router::Create({.scoring = Scoring::kMagnitude,
                                .select = static_cast<SelectMethod>(state.range(1)),
                                .approx_tolerance = 0.1});
  const Contract contract{.keep = 0.25, .keep_full = 1.0};
  RoutedTensor routed;
  for (auto _ : state) {
    Status s = router->Route({a.data(), rows, cols}, nullptr, contract, 0, &routed);
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    benchmark::DoNotOptimize(routed.values.data());
  }
  SetBytes(state, rows, cols);
}
BENCHMARK(BM_RouteTies)->ArgsProduct({{0, 1, 2, 3}, {1, 2}})->Unit(benchmark::kMicrosecond);

void BM_RouteAndEncode(benchmark::State& state) { RouteAndEncodeCase(state, SelectMethod::kFast); }
BENCHMARK(BM_RouteAndEncode)->Apply(Sizes);
// The approximate mode (one streaming pass per row, count within +5 % of k).
void BM_RouteAndEncodeApprox(benchmark::State& state) {
  RouteAndEncodeCase(state, SelectMethod::kApproximate);
}
BENCHMARK(BM_RouteAndEncodeApprox)->Apply(Sizes);

void BM_DecodeAndScatter(benchmark::State& state) {
  const Inputs& in = GetInputs(state.range(0), state.range(1));
  auto router = Router::Create({.scoring = Scoring::kMagnitude});
  const Contract contract{.keep = 0.1, .keep_full = 1.0, .full_codec = ValueCodec::kFp16};
  std::vector<std::vector<uint8_t>> packets(kPool);
  for (int p = 0; p < kPool; ++p) {
    auto routed = router->Route({in.pool[p].data(), in.rows, in.cols}, nullptr, contract, 0);
    Status s =
        EncodeActivation(*routed, contract, {}, {.index_codec = IndexCodec::kBitmap}, &packets[p]);
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
  }
  std::vector<float> dense(in.rows * in.cols);
  int i = 0;
  for (auto _ : state) {
    Status s = DecodeActivationToDense(packets[i++ % kPool], {dense.data(), in.rows, in.cols});
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    benchmark::DoNotOptimize(dense.data());
  }
  SetBytes(state, in.rows, in.cols);
}
BENCHMARK(BM_DecodeAndScatter)->Apply(Sizes);

// Backward at the mask of a routed forward (keep 10%): gather dL/dy at the kept positions,
// encode fp16, decode, scatter back to dense.
void BM_GradientRoundTrip(benchmark::State& state) {
  const Inputs& in = GetInputs(state.range(0), state.range(1));
  auto router = Router::Create({.scoring = Scoring::kMagnitude});
  const Contract contract{.keep = 0.1, .keep_full = 1.0, .full_codec = ValueCodec::kFp16};
  std::vector<RoutedTensor> masks(kPool);
  for (int p = 0; p < kPool; ++p) {
    if (!router->Route({in.pool[p].data(), in.rows, in.cols}, nullptr, contract, 0, &masks[p])
             .ok()) {
      state.SkipWithError("route");
    }
  }
  std::vector<float> values;
  std::vector<uint8_t> packet;
  std::vector<float> dense(in.rows * in.cols);
  int i = 0;
  for (auto _ : state) {
    const int p = i++ % kPool;
    const RoutedTensor& mask = masks[p];
    Status s = GatherAtMask(mask, {in.pool[(p + 1) % kPool].data(), in.rows, in.cols}, &values);
    if (s.ok()) s = EncodeGradientValues(mask, values, ValueCodec::kFp16, {}, {}, &packet);
    auto decoded = DecodeGradientValues(packet, mask);
    if (s.ok()) s = decoded.status();
    if (s.ok()) s = ScatterAtMask(mask, *decoded, {dense.data(), in.rows, in.cols});
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    benchmark::DoNotOptimize(dense.data());
  }
  SetBytes(state, in.rows, in.cols);
}
BENCHMARK(BM_GradientRoundTrip)->Apply(Sizes);

// One training step of one routed boundary at the default MLP's shape (batch 128, 1024
// neurons, keep 12.2 %, the negotiated keep of the default run; int8 values and gradients,
// the index codec auto picks, zstd -5 with Huffman literals when on): the sender routes and
// encodes, the receiver decodes and scatters; backward, the receiver gathers the gradient at the
// mask and encodes it, the sender decodes it and scatters it. Activations are post-ReLU (half
// zeros), scored by a sensitivity map. Arg 1 = cold: 64 MiB are touched between steps (outside the
// timing), as the GEMMs between two boundary calls do in training. Arg 2 = zstd on (training's
// default until the subset-bitmap index; off now). Counters: microseconds per step of each
// phase.
void BM_TrainingBoundaryStep(benchmark::State& state) {
  constexpr size_t kRows = 128;
  constexpr size_t kCols = 1024;
  const bool cold = state.range(0) != 0;
  const bool zstd = state.range(1) != 0;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<std::vector<float>> activations(kPool), gradients(kPool);
  for (int p = 0; p < kPool; ++p) {
    for (size_t i = 0; i < kRows * kCols; ++i) {
      activations[p].push_back(std::max(0.0f, normal(rng)));
      gradients[p].push_back(0.01f * normal(rng));
    }
  }
  auto map = SensitivityMap::Create({.num_neurons = kCols});
  std::vector<float> map_values(kCols);
  for (float& v : map_values) v = uniform(rng) * uniform(rng);
  map_values[0] = 1.0f;
  if (!map.ok() || !map->Assign(map_values).ok()) state.SkipWithError("map");
  auto router = Router::Create({.scoring = Scoring::kSensitivity, .eps = 1e-3});
  const Contract contract{.keep = 0.12207, .keep_full = 0.0, .lossy_codec = ValueCodec::kInt8};
  const EncodeOptions options{.zstd = zstd, .zstd_level = -5};
  RoutedTensor sender, receiver;
  std::vector<uint8_t> packet, wire;
  std::vector<float> dense(kRows * kCols), dense_gradient(kRows * kCols), values;
  std::vector<float> evict(cold ? (size_t{64} << 20) / sizeof(float) : 0);
  double phase[6] = {};
  using Clock = std::chrono::steady_clock;
  const auto us = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::micro>(b - a).count();
  };
  int i = 0;
  for (auto _ : state) {
    if (cold) {
      state.PauseTiming();
      for (size_t j = 0; j < evict.size(); j += 16) evict[j] += 1.0f;
      state.ResumeTiming();
    }
    const int p = i++ % kPool;
    const auto t0 = Clock::now();
    Status s = RouteAndEncode(*router, {activations[p].data(), kRows, kCols}, &*map, contract,
                              {.step = static_cast<uint64_t>(i)}, options, &sender, &packet);
    const auto t1 = Clock::now();
    wire = packet;  // the in-process link's copy
    auto decoded = DecodeActivation(wire);
    if (s.ok()) s = decoded.status();
    if (s.ok()) receiver = std::move(*decoded);
    const auto t2 = Clock::now();
    if (s.ok()) s = Scatter(receiver, {dense.data(), kRows, kCols});
    const auto t3 = Clock::now();
    if (s.ok()) s = GatherAtMask(receiver, {gradients[p].data(), kRows, kCols}, &values);
    if (s.ok()) s = EncodeGradientValues(receiver, values, ValueCodec::kInt8, {}, options, &packet);
    const auto t4 = Clock::now();
    wire = packet;
    auto gradient = DecodeGradientValues(wire, sender);
    if (s.ok()) s = gradient.status();
    const auto t5 = Clock::now();
    if (s.ok()) s = ScatterAtMask(sender, *gradient, {dense_gradient.data(), kRows, kCols});
    const auto t6 = Clock::now();
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    benchmark::DoNotOptimize(dense.data());
    benchmark::DoNotOptimize(dense_gradient.data());
    const Clock::time_point t[] = {t0, t1, t2, t3, t4, t5, t6};
    for (int k = 0; k < 6; ++k) phase[k] += us(t[k], t[k + 1]);
  }
  const char* names[] = {"route_encode_us",    "link_decode_us",     "scatter_us",
                         "gradient_encode_us", "gradient_decode_us", "scatter_at_mask_us"};
  for (int k = 0; k < 6; ++k) {
    state.counters[names[k]] =
        phase[k] / static_cast<double>(std::max<int64_t>(1, state.iterations()));
  }
  state.SetLabel(std::string(cold ? "cold" : "warm") + (zstd ? " zstd" : ""));
}
BENCHMARK(BM_TrainingBoundaryStep)
    ->Args({0, 0})
    ->Args({1, 0})
    ->Args({0, 1})
    ->Args({1, 1})
    ->Unit(benchmark::kMicrosecond);

// The first touch of a row: rows of 4096 floats taken in turn from a 64 MiB pool (twice the
// L3 here), each copied into one L1-sized buffer (arg 0) or turned into routing keys
// (arg 1, simd::MagnitudeKeys, the router's first pass): whether the keys pass is bound by
// memory, that is, whether one read of the input costs about what memcpy costs.
void BM_FirstTouch(benchmark::State& state) {
  constexpr size_t kCols = 4096;
  constexpr size_t kRows = (size_t{64} << 20) / (kCols * sizeof(float));
  static const std::vector<float> pool = [] {
    std::vector<float> v(kRows * kCols);
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (float& x : v) x = normal(rng);
    return v;
  }();
  std::vector<float> row(kCols);
  std::vector<uint32_t> keys(kCols);
  size_t r = 0;
  for (auto _ : state) {
    const float* src = pool.data() + (r++ % kRows) * kCols;
    if (state.range(0) == 0) {
      std::memcpy(row.data(), src, kCols * sizeof(float));
      benchmark::DoNotOptimize(row.data());
    } else {
      benchmark::DoNotOptimize(simd::MagnitudeKeys(src, nullptr, kCols, keys.data()));
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kCols * sizeof(float)));
  state.SetLabel(state.range(0) == 0 ? "memcpy" : "keys");
}
BENCHMARK(BM_FirstTouch)->Arg(0)->Arg(1);

// Applied before main, so before any kernel runs.
const bool kSimdCapped = [] {
  const char* cap = std::getenv("SPARSELINK_SIMD");
  if (cap != nullptr && !simd::CapTargets(cap)) {
    std::fprintf(stderr,
                 "SPARSELINK_SIMD=%s: unknown or not supported by this CPU (best, avx2, sse4)\n",
                 cap);
    std::exit(1);
  }
  return cap != nullptr;
}();

}  // namespace
}  // namespace sparselink

BENCHMARK_MAIN();
