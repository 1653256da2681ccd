// The packet coders on the OpenMP threads: long float streams and the row-parallel coders write
// the one-thread bytes and decode to the one-thread tensors, for any thread count and split.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "packet_test_util.hpp"
#include "sparselink/codec.hpp"

namespace sparselink::packet_test {
namespace {

// Streams of 2^16 values or more of the codecs without per-row scales go on the threads: by row
// ranges (64 rows or more) or in chunks (fewer, longer rows); either way the packet is the
// one-thread packet, for any thread count and either parallel_min_entries.
TEST(ParallelRows, LongFloatStreamsEqualOneThread) {
  const int saved_threads = omp_get_max_threads();
  std::mt19937 rng(31);
  std::normal_distribution<float> normal;
  auto router = Router::Create({.scoring = Scoring::kMagnitude});
  ASSERT_TRUE(router.ok());
  struct Shape {
    uint32_t rows, cols;
  };
  for (const Shape shape : {Shape{130, 4096}, Shape{9, 65536}}) {
    std::vector<float> a(size_t{shape.rows} * shape.cols);
    for (float& v : a) v = normal(rng);
    const ConstMatrix view{a.data(), shape.rows, shape.cols};
    for (ValueCodec codec : {ValueCodec::kFp16, ValueCodec::kBf16, ValueCodec::kFp32}) {
      const Contract contract{.keep = 0.2, .keep_full = 1.0, .full_codec = codec};
      RoutedTensor routed;
      std::vector<uint8_t> want, got;
      omp_set_num_threads(1);
      ASSERT_TRUE(RouteAndEncode(*router, view, nullptr, contract, {.step = 4},
                                 {.index_codec = IndexCodec::kBitmap}, &routed, &want)
                      .ok());
      ASSERT_GE(routed.num_kept(), size_t{1} << 16);
      for (int threads : {2, 3, 5}) {
        omp_set_num_threads(threads);
        for (size_t min_entries : {size_t{1}, std::numeric_limits<size_t>::max()}) {
          SCOPED_TRACE(::testing::Message()
                       << shape.rows << " x " << shape.cols << " " << Traits(codec).name << " "
                       << threads << " threads, parallel_min_entries " << min_entries);
          ASSERT_TRUE(RouteAndEncode(
                          *router, view, nullptr, contract, {.step = 4},
                          {.index_codec = IndexCodec::kBitmap, .parallel_min_entries = min_entries},
                          &routed, &got)
                          .ok());
          ASSERT_EQ(got, want);
        }
      }
    }
  }
  omp_set_num_threads(saved_threads);
}

// The row-parallel coders (parallel_min_entries = 1: on the OpenMP threads, rows split in
// ranges of multiples of 8) write the one-thread bytes and decode to the one-thread tensors, and
// a refused stream is named as on one thread, for any thread count.
TEST(ParallelRows, PacketsAndDecodesEqualOneThread) {
  constexpr size_t kSerial = std::numeric_limits<size_t>::max();
  const int saved_threads = omp_get_max_threads();
  std::mt19937 rng(23);
  std::normal_distribution<float> normal;
  auto router = Router::Create({.scoring = Scoring::kMagnitude});
  ASSERT_TRUE(router.ok());
  for (int threads : {2, 3, 5}) {
    omp_set_num_threads(threads);
    for (uint32_t rows : {1u, 7u, 9u, 17u, 32u, 33u, 130u}) {
      for (uint32_t cols : {5u, 8u, 13u, 64u, 1024u}) {
        std::vector<float> a(size_t{rows} * cols), g(a.size());
        for (float& v : a) v = std::max(0.0f, normal(rng));  // ReLU-like: dead columns too
        for (size_t c = 0; c < cols; c += 3) a[c] = 0.0f;    // (row 0: a subset bitmap's mask)
        for (float& v : g) v = normal(rng);
        const ConstMatrix view{a.data(), rows, cols};
        for (ValueCodec codec : {ValueCodec::kInt8, ValueCodec::kFp16, ValueCodec::kInt4}) {
          for (IndexCodec index : {IndexCodec::kBitmap, IndexCodec::kSubsetBitmap}) {
            SCOPED_TRACE(::testing::Message()
                         << threads << " threads, " << rows << " x " << cols << " "
                         << Traits(codec).name << " index " << int(index));
            // keep 1 % on wide rows: one kept entry a row, whole vectors spill far.
            const double keep = cols >= 64 && rows % 2 == 1 ? 0.01 : 0.2;
            const Contract contract{
                .keep = keep, .keep_full = 1.0, .full_codec = codec, .lossy_codec = codec};
            const PacketLabel label{.boundary = 2, .step = 9};
            RoutedTensor routed;
            std::vector<uint8_t> serial, parallel;
            ASSERT_TRUE(RouteAndEncode(*router, view, nullptr, contract, label,
                                       {.index_codec = index, .parallel_min_entries = kSerial},
                                       &routed, &serial)
                            .ok());
            ASSERT_TRUE(RouteAndEncode(*router, view, nullptr, contract, label,
                                       {.index_codec = index, .parallel_min_entries = 1}, &routed,
                                       &parallel)
                            .ok());
            ASSERT_EQ(parallel, serial);
            std::vector<float> dense_serial(a.size(), 1.0f), dense_parallel(a.size(), 2.0f);
            KeptMask mask_serial, mask_parallel, want_mask;
            ASSERT_TRUE(DecodeActivationToDenseAndMask(serial, {dense_serial.data(), rows, cols},
                                                       &mask_serial,
                                                       {.parallel_min_entries = kSerial})
                            .ok());
            ASSERT_TRUE(DecodeActivationToDenseAndMask(serial, {dense_parallel.data(), rows, cols},
                                                       &mask_parallel, {.parallel_min_entries = 1})
                            .ok());
            ASSERT_EQ(dense_parallel, dense_serial);
            ASSERT_TRUE(MaskOf(routed, &want_mask).ok());
            ASSERT_EQ(mask_parallel.bits, want_mask.bits);
            ASSERT_EQ(mask_parallel.row_offsets, want_mask.row_offsets);
            std::fill(dense_parallel.begin(), dense_parallel.end(), 3.0f);
            ASSERT_TRUE(DecodeActivationToDense(serial, {dense_parallel.data(), rows, cols},
                                                {.parallel_min_entries = 1})
                            .ok());
            ASSERT_EQ(dense_parallel, dense_serial);
            // The gradient back at the mask.
            std::vector<float> kept;
            ASSERT_TRUE(GatherAtMask(want_mask, {g.data(), rows, cols}, &kept).ok());
            std::vector<uint8_t> grad_serial, grad_parallel;
            ASSERT_TRUE(EncodeGradientValues(want_mask, kept, codec, label,
                                             {.parallel_min_entries = kSerial}, &grad_serial)
                            .ok());
            ASSERT_TRUE(EncodeGradientValues(want_mask, kept, codec, label,
                                             {.parallel_min_entries = 1}, &grad_parallel)
                            .ok());
            ASSERT_EQ(grad_parallel, grad_serial);
            // Gathered and encoded in one call, on any split: the same packet.
            std::vector<uint8_t> grad_at;
            ASSERT_TRUE(EncodeGradientFromDense(want_mask, {g.data(), rows, cols}, codec, label,
                                                {.parallel_min_entries = 1}, &grad_at)
                            .ok());
            ASSERT_EQ(grad_at, grad_serial);
            ASSERT_TRUE(EncodeGradientFromDense(want_mask, {g.data(), rows, cols}, codec, label,
                                                {.parallel_min_entries = kSerial}, &grad_at)
                            .ok());
            ASSERT_EQ(grad_at, grad_serial);
            auto back_serial =
                DecodeGradientValues(grad_serial, routed, {.parallel_min_entries = kSerial});
            auto back_parallel =
                DecodeGradientValues(grad_serial, routed, {.parallel_min_entries = 1});
            ASSERT_TRUE(back_serial.ok() && back_parallel.ok());
            ASSERT_EQ(*back_parallel, *back_serial);
            // Fused into the dense gradient: DecodeGradientValues + ScatterAtMask, on any split.
            std::vector<float> grad_want(a.size(), 7.0f), grad_got(a.size(), 8.0f), fused_values;
            ASSERT_TRUE(
                ScatterAtMask(routed, *back_serial, {grad_want.data(), rows, cols}, kSerial).ok());
            ASSERT_TRUE(DecodeGradientToDense(grad_serial, routed, {grad_got.data(), rows, cols},
                                              &fused_values, {.parallel_min_entries = 1})
                            .ok());
            ASSERT_EQ(grad_got, grad_want);
            ASSERT_EQ(fused_values, *back_serial);
            if (codec != ValueCodec::kInt8 || routed.num_kept() == 0) continue;
            // A bad int8 value in the last row and a bad scale in a later one: the first is
            // named, on any split.
            auto info = InspectPacket(grad_serial);
            ASSERT_TRUE(info.ok());
            std::vector<uint8_t> bad = grad_serial;
            const size_t values_at = info->sections[0].offset + 4 * size_t{rows};
            bad[values_at + routed.num_kept() - 1] = 0x80;  // -128
            if (rows > 8) {
              const float negative = -1.0f;
              std::memcpy(bad.data() + info->sections[0].offset + 4 * (rows - 1), &negative, 4);
              std::memcpy(bad.data() + info->sections[0].offset + 4 * 8, &negative, 4);
            }
            Reseal(bad);
            auto refused_serial =
                DecodeGradientValues(bad, routed, {.parallel_min_entries = kSerial});
            auto refused_parallel = DecodeGradientValues(bad, routed, {.parallel_min_entries = 1});
            ASSERT_FALSE(refused_serial.ok());
            ASSERT_FALSE(refused_parallel.ok());
            EXPECT_EQ(refused_parallel.status().ToString(), refused_serial.status().ToString());
            EXPECT_TRUE(Contains(refused_serial.status(), rows > 8 ? "scales[8]" : "int8 value"))
                << refused_serial.status().ToString();
          }
        }
      }
    }
  }
  omp_set_num_threads(saved_threads);
}

}  // namespace
}  // namespace sparselink::packet_test
