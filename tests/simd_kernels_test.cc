// The vector kernels against plain scalar references, on every instruction set Highway built
// and this CPU runs (SSSE3 .. AVX-512 here): the wire format's conversions must not depend on
// the machine, and the routing kernels must give exactly the scalar answer.
#include <gtest/gtest.h>
#include <hwy/highway.h>
#include <hwy/targets.h>
#if HWY_ARCH_X86
#include <immintrin.h>  // _mm_getcsr / _mm_setcsr: the FTZ and DAZ modes
#endif

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <vector>

#include "codec/value_codecs.hpp"
#include "simd/kernels.hpp"
#include "simd/scalar.hpp"

namespace sparselink::simd {
namespace {

// Runs `body` once per target (each name is reported on failure), then restores the default.
template <typename Body>
void ForEachTarget(Body body) {
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  ASSERT_FALSE(targets.empty());
  for (int64_t target : targets) {
    hwy::SetSupportedTargetsForTest(target);
    hwy::GetChosenTarget().Update(hwy::SupportedTargets());
    SCOPED_TRACE(TargetName());
    EXPECT_STREQ(TargetName(), hwy::TargetName(target));
    body();
  }
  hwy::SetSupportedTargetsForTest(0);
  hwy::GetChosenTarget().Update(hwy::SupportedTargets());
}

// Floats covering every exponent and the codecs' boundaries: a strided walk over all bit
// patterns plus the edges, both signs.
std::vector<float> InterestingFloats() {
  std::vector<float> v;
  for (uint64_t bits = 0; bits < (uint64_t{1} << 31); bits += 40503) {
    v.push_back(std::bit_cast<float>(static_cast<uint32_t>(bits)));
  }
  const float edges[] = {0.0f,
                         65504.0f,
                         65519.996f,
                         65520.0f,
                         0x1p-14f,
                         0x1p-24f,
                         0x1p-25f,
                         0x1.8p-25f,
                         0x1.fffffep-15f,
                         0x1.ffep-1f,
                         0x1.002p0f,
                         0x1.003p0f,
                         3.3895314e38f,
                         std::numeric_limits<float>::max(),
                         std::numeric_limits<float>::denorm_min()};
  v.insert(v.end(), std::begin(edges), std::end(edges));
  const size_t positive = v.size();
  for (size_t i = 0; i < positive; ++i) v.push_back(-v[i]);
  return v;
}

TEST(SimdKernels, HalfAndBf16EncodersEqualTheScalarCodecOnEveryTarget) {
  // Non-finite values too (NaN payloads, both infinities), and once with the flush-to-zero and
  // denormals-are-zero modes set, as LibTorch may leave them: the fp16 encoder uses F16C
  // where the target has it, which must round and saturate as the scalar codec does.
  const std::vector<float> all = InterestingFloats();
  for (const bool flush : {false, true}) {
    SCOPED_TRACE(flush ? "FTZ and DAZ set" : "default MXCSR");
#if HWY_ARCH_X86
    const unsigned saved_csr = _mm_getcsr();
    if (flush) _mm_setcsr(saved_csr | 0x8040u);
#else
    if (flush) continue;
#endif
    const std::vector<float>& in = all;
    std::vector<uint16_t> half(in.size() + 1), bf16(in.size() + 1);
    ForEachTarget([&] {
      // Odd offset: packet sections are not aligned.
      auto* half_out = reinterpret_cast<uint16_t*>(reinterpret_cast<uint8_t*>(half.data()) + 1);
      FloatToHalf(in.data(), in.size(), half_out);
      FloatToBf16(in.data(), in.size(), bf16.data());
      size_t bad = 0;
      for (size_t i = 0; i < in.size() && bad < 5; ++i) {
        uint16_t h;
        std::memcpy(&h, reinterpret_cast<uint8_t*>(half_out) + 2 * i, 2);
        if (h != ScalarHalf(in[i])) {
          ADD_FAILURE() << "fp16 of " << in[i] << " (bits " << std::bit_cast<uint32_t>(in[i])
                        << "): " << h << " vs " << ScalarHalf(in[i]);
          ++bad;
        }
        if (bf16[i] != ScalarBf16(in[i])) {
          ADD_FAILURE() << "bf16 of " << in[i] << ": " << bf16[i] << " vs " << ScalarBf16(in[i]);
          ++bad;
        }
      }
    });
#if HWY_ARCH_X86
    _mm_setcsr(saved_csr);
#endif
  }
}

TEST(SimdKernels, HalfAndBf16DecodersEqualTheScalarCodecAndRefuseNonFinite) {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<uint16_t> finite_half, finite_bf16;
  for (uint16_t h : all) {
    if (((h >> 10) & 0x1F) != 31) finite_half.push_back(h);
    if (((h >> 7) & 0xFF) != 0xFF) finite_bf16.push_back(h);
  }
  ForEachTarget([&] {
    std::vector<float> out(finite_half.size());
    ASSERT_TRUE(HalfToFloat(finite_half.data(), finite_half.size(), out.data()));
    for (size_t i = 0; i < finite_half.size(); ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(out[i]),
                std::bit_cast<uint32_t>(ScalarHalfToFloat(finite_half[i])))
          << finite_half[i];
    }
    out.resize(finite_bf16.size());
    ASSERT_TRUE(Bf16ToFloat(finite_bf16.data(), finite_bf16.size(), out.data()));
    for (size_t i = 0; i < finite_bf16.size(); ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(out[i]),
                std::bit_cast<uint32_t>(ScalarBf16ToFloat(finite_bf16[i])));
    }
    // One Inf or NaN anywhere (vector body or tail) is refused.
    for (uint16_t bad : {uint16_t{0x7C00}, uint16_t{0xFE01}}) {
      for (size_t at : {size_t{0}, size_t{37}, finite_half.size() - 1}) {
        std::vector<uint16_t> in(finite_half.begin(), finite_half.begin() + 200);
        in[std::min<size_t>(at, in.size() - 1)] = bad;
        std::vector<float> o(in.size());
        EXPECT_FALSE(HalfToFloat(in.data(), in.size(), o.data())) << at;
      }
    }
    std::vector<uint16_t> in(finite_bf16.begin(), finite_bf16.begin() + 100);
    in[99] = 0x7F80;
    std::vector<float> o(in.size());
    EXPECT_FALSE(Bf16ToFloat(in.data(), in.size(), o.data()));
  });
}

// The scalar int8 rule of the wire format: q = lround(v / scale) in double, clamped (first, so
// that a huge quotient cannot overflow lround).
int8_t ScalarInt8(float v, float scale) {
  if (scale == 0.0f || !std::isfinite(v)) return 0;
  const double x = static_cast<double>(v) / static_cast<double>(scale);
  return static_cast<int8_t>(std::lround(std::clamp(x, -127.0, 127.0)));
}

TEST(SimdKernels, Int8QuantizerEqualsLroundIncludingHalfwayTies) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> in(4099);
  for (float& v : in) v = normal(rng);
  const float scale = MaxAbsFinite(in.data(), in.size()) / 127.0f;
  // Exact halfway points q + 0.5 (times a power-of-two scale, so the quotient is exact).
  for (int q = -127; q < 127; ++q) in.push_back((static_cast<float>(q) + 0.5f) * 0.25f);
  in.push_back(std::numeric_limits<float>::infinity());
  in.push_back(std::nanf(""));
  ForEachTarget([&] {
    for (float s : {scale, 0.25f, 0.0f, 1e-30f}) {
      std::vector<int8_t> out(in.size());
      QuantizeInt8(in.data(), in.size(), s, out.data());
      for (size_t i = 0; i < in.size(); ++i) {
        ASSERT_EQ(out[i], ScalarInt8(in[i], s)) << in[i] << " / " << s;
      }
    }
    // Near the halfway points at scales that are not powers of two (the fast float path must
    // round every lane as the double division does, or hand the vector to it).
    std::uniform_real_distribution<float> unit(0.5f, 2.0f);
    for (int trial = 0; trial < 200; ++trial) {
      const float s = unit(rng) * std::ldexp(1.0f, trial % 40 - 20);
      std::vector<float> near;
      for (int q = -128; q <= 127; q += 3) {
        for (float d : {0.0f, 0x1p-22f, -0x1p-22f, 0x1p-14f, -0x1p-14f, 0x1p-12f, -0x1p-12f, 1e-3f,
                        -1e-3f, 0.3f}) {
          near.push_back((static_cast<float>(q) + 0.5f + d) * s);
        }
      }
      std::vector<int8_t> out(near.size());
      QuantizeInt8(near.data(), near.size(), s, out.data());
      for (size_t i = 0; i < near.size(); ++i) {
        ASSERT_EQ(out[i], ScalarInt8(near[i], s)) << near[i] << " / " << s;
      }
    }
    // Every length of a partial last vector: the same values, nothing written past n.
    for (size_t n = 0; n <= 40; ++n) {
      std::vector<int8_t> out(n + 64, int8_t{0x55});
      QuantizeInt8(in.data() + 4099, n, 0.25f, out.data());  // the halfway points
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], ScalarInt8(in[4099 + i], 0.25f)) << n;
      for (size_t i = n; i < out.size(); ++i) ASSERT_EQ(out[i], int8_t{0x55}) << n << " " << i;
    }
    std::vector<int8_t> q(300);
    for (size_t i = 0; i < q.size(); ++i)
      q[i] = static_cast<int8_t>(static_cast<int>(i % 255) - 127);
    std::vector<float> out(q.size());
    ASSERT_TRUE(Int8ToFloat(q.data(), q.size(), 0.5f, out.data()));
    for (size_t i = 0; i < q.size(); ++i) ASSERT_EQ(out[i], static_cast<float>(q[i]) * 0.5f);
    q[123] = -128;
    EXPECT_FALSE(Int8ToFloat(q.data(), q.size(), 0.5f, out.data()));
  });
}

// The map's magnitudes: |a| * |b| (or |a|), non-finite as 0, the plain loop's bits on every
// target and at every tail length.
TEST(SimdKernels, AddMagnitudesEqualsAPlainLoop) {
  std::mt19937 rng(31);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const auto m = [](float x) { return std::isfinite(x) ? std::fabs(x) : 0.0f; };
  ForEachTarget([&] {
    for (size_t n : {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{1000}}) {
      std::vector<float> a(n), b(n), acc(n), want(n);
      for (size_t i = 0; i < n; ++i) {
        a[i] = normal(rng);
        b[i] = normal(rng);
        acc[i] = want[i] = normal(rng);
      }
      if (n > 3) {
        a[1] = std::numeric_limits<float>::infinity();
        b[2] = std::nanf("");
        a[3] = -std::numeric_limits<float>::infinity();
      }
      std::vector<float> acc_one = acc, want_one = want;
      AddMagnitudes(a.data(), b.data(), n, acc.data());
      AddMagnitudes(a.data(), nullptr, n, acc_one.data());
      for (size_t i = 0; i < n; ++i) {
        const float product = m(a[i]) * m(b[i]);
        want[i] += product;
        want_one[i] += m(a[i]);
        ASSERT_EQ(std::bit_cast<uint32_t>(acc[i]), std::bit_cast<uint32_t>(want[i]))
            << n << " " << i;
        ASSERT_EQ(std::bit_cast<uint32_t>(acc_one[i]), std::bit_cast<uint32_t>(want_one[i])) << i;
      }
    }
  });
}

// The sender map's kept correction: a scatter-add at distinct ids, the plain loop's bits on
// every target and tail length, with and without the activation factor.
TEST(SimdKernels, AddKeptCorrectionEqualsAPlainLoop) {
  std::mt19937 rng(37);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  constexpr size_t kCols = 300;
  ForEachTarget([&] {
    for (size_t n : {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{123}}) {
      std::vector<uint32_t> ids(kCols);
      for (uint32_t j = 0; j < kCols; ++j) ids[j] = j;
      std::shuffle(ids.begin(), ids.end(), rng);
      ids.resize(n);
      std::sort(ids.begin(), ids.end());
      std::vector<float> a(n), g(n), s(kCols), acc(kCols);
      for (size_t i = 0; i < n; ++i) {
        a[i] = normal(rng);
        g[i] = normal(rng);
      }
      for (size_t j = 0; j < kCols; ++j) {
        s[j] = std::fabs(normal(rng));
        acc[j] = normal(rng);
      }
      for (const bool with_a : {true, false}) {
        std::vector<float> got = acc, want = acc;
        AddKeptCorrection(ids.data(), with_a ? a.data() : nullptr, g.data(), s.data(), n, 1.0f / 3,
                          got.data());
        for (size_t i = 0; i < n; ++i) {
          const float term = std::fabs(g[i]) - s[ids[i]];
          want[ids[i]] += (with_a ? std::fabs(a[i]) * term : term) * (1.0f / 3);
        }
        for (size_t j = 0; j < kCols; ++j) {
          ASSERT_EQ(std::bit_cast<uint32_t>(got[j]), std::bit_cast<uint32_t>(want[j]))
              << n << " " << j << " " << with_a;
        }
      }
    }
  });
}

// One row expanded straight from int8 values: Int8ToFloat then ScatterBits, bit for bit, on
// every target, for widths on and off whole 16-column masks; the values end the buffer, so a
// read past them shows under the sanitizers.
TEST(SimdKernels, ScatterInt8RowEqualsDecodeThenScatter) {
  std::mt19937 rng(41);
  ForEachTarget([&] {
    for (size_t cols : {size_t{8}, size_t{16}, size_t{24}, size_t{33}, size_t{64}, size_t{1024}}) {
      for (double density : {0.0, 0.1, 0.5, 1.0}) {
        std::bernoulli_distribution take(density);
        std::vector<uint8_t> bits((cols + 7) / 8, 0);
        size_t count = 0;
        for (size_t c = 0; c < cols; ++c) {
          if (take(rng)) {
            bits[c / 8] = static_cast<uint8_t>(bits[c / 8] | (1u << (c % 8)));
            ++count;
          }
        }
        std::vector<int8_t> q(count);  // exactly the row's values
        for (int8_t& v : q) v = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
        const float scale = 0.013f;
        std::vector<float> values(count + kSlack), want(cols, 7.0f), got(cols, 9.0f);
        ASSERT_TRUE(Int8ToFloat(q.data(), count, scale, values.data()));
        ScatterBits(bits.data(), bits.size(), 1, cols, values.data(), want.data(), cols);
        ScatterInt8Row(bits.data(), cols, q.data(), count, scale, got.data());
        for (size_t c = 0; c < cols; ++c) {
          ASSERT_EQ(std::bit_cast<uint32_t>(got[c]), std::bit_cast<uint32_t>(want[c]))
              << cols << " " << density << " " << c;
        }
      }
    }
  });
}

TEST(SimdKernels, MaxAbsAndAllFiniteSkipOrSpotNonFinite) {
  ForEachTarget([&] {
    for (size_t n : {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{1000}}) {
      std::vector<float> v(n);
      for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(i % 7) - 3.5f;
      const float expected = n == 0 ? 0.0f : n < 4 ? std::fabs(v[0]) : 3.5f;
      EXPECT_EQ(MaxAbsFinite(v.data(), n), n == 0 ? 0.0f : std::max(expected, std::fabs(v[0])));
      EXPECT_TRUE(AllFinite(v.data(), n));
      for (size_t at = 0; at < n; at += 7) {
        std::vector<float> w = v;
        w[at] = at % 2 ? std::numeric_limits<float>::infinity() : std::nanf("");
        EXPECT_FALSE(AllFinite(w.data(), n)) << n << " " << at;
        EXPECT_LE(MaxAbsFinite(w.data(), n), 3.5f);
      }
    }
  });
}

// Keys, counting, filtering, ranking and emitting against plain loops, on lengths around the
// vector widths and on data with many ties.
TEST(SimdKernels, RoutingKernelsEqualPlainLoops) {
  std::mt19937 rng(11);
  ForEachTarget([&] {
    for (size_t n :
         {size_t{1}, size_t{7}, size_t{16}, size_t{33}, size_t{64}, size_t{100}, size_t{4097}}) {
      for (bool ties : {false, true}) {
        std::vector<float> a(n), w(n);
        for (size_t i = 0; i < n; ++i) {
          a[i] = ties ? static_cast<float>(static_cast<int>(rng() % 5) - 2)
                      : std::uniform_real_distribution<float>(-2, 2)(rng);
          w[i] = std::uniform_real_distribution<float>(0, 1)(rng);
        }
        if (n > 5) a[5] = std::numeric_limits<float>::infinity();
        std::vector<uint32_t> keys(n), weighted(n);
        EXPECT_EQ(MagnitudeKeys(a.data(), nullptr, n, keys.data()), n <= 5);
        MagnitudeKeys(a.data(), w.data(), n, weighted.data());
        for (size_t i = 0; i < n; ++i) {
          const float s = std::isfinite(a[i]) ? std::fabs(a[i]) : 0.0f;
          ASSERT_EQ(keys[i], std::bit_cast<uint32_t>(s));
          ASSERT_EQ(weighted[i], std::bit_cast<uint32_t>(std::isfinite(a[i]) ? s * w[i] : 0.0f));
        }
        const uint32_t t = keys[n / 2];
        size_t above = 0, ties_at_t = 0;
        for (uint32_t k : keys) {
          above += k > t;
          ties_at_t += k == t;
        }
        EXPECT_EQ(CountAbove(keys.data(), n, t), above);

        std::vector<uint32_t> out(n + kSlack);
        size_t over = 0;
        const uint32_t lo = t / 2;
        const size_t m = FilterRange(keys.data(), n, lo, t, out.data(), &over);
        std::vector<uint32_t> expected;
        for (uint32_t k : keys) {
          if (k >= lo && k <= t) expected.push_back(k);
        }
        EXPECT_EQ(over, above);
        ASSERT_EQ(m, expected.size());
        EXPECT_TRUE(std::equal(expected.begin(), expected.end(), out.begin()));

        const size_t s = std::min<size_t>(n, 64);
        std::vector<uint32_t> greater(s);
        SampleRanks(keys.data(), s, greater.data());
        for (size_t i = 0; i < s; ++i) {
          ASSERT_EQ(greater[i], std::count_if(keys.begin(), keys.begin() + s,
                                              [&](uint32_t k) { return k > keys[i]; }));
        }
        std::vector<uint32_t> sorted(keys.begin(), keys.begin() + s);
        std::sort(sorted.rbegin(), sorted.rend());
        for (size_t rank = 1; rank <= s; ++rank) {
          ASSERT_EQ(OrderStatistic(keys.data(), greater.data(), s, rank), sorted[rank - 1]);
        }

        EXPECT_EQ(TieEnd(keys.data(), n, t, 0), 0u);
        for (size_t q = 1; q <= ties_at_t; q += 1 + ties_at_t / 3) {
          size_t seen = 0, end = n;
          for (size_t i = 0; i < n; ++i) {
            seen += keys[i] == t;
            if (seen == q) {
              end = i + 1;
              break;
            }
          }
          ASSERT_EQ(TieEnd(keys.data(), n, t, q), end) << q;
          std::vector<uint32_t> ids(n + kSlack);
          std::vector<float> values(n + kSlack);
          const size_t kept = EmitKept(keys.data(), a.data(), n, t, end, ids.data(), values.data());
          std::vector<uint32_t> expected_ids;
          for (size_t i = 0; i < n; ++i) {
            if (keys[i] > t || (keys[i] == t && i < end)) expected_ids.push_back(i);
          }
          ASSERT_EQ(kept, expected_ids.size());
          ASSERT_EQ(kept, above + q);
          for (size_t i = 0; i < kept; ++i) {
            ASSERT_EQ(ids[i], expected_ids[i]);
            const float v = a[ids[i]];
            ASSERT_EQ(values[i], std::isfinite(v) ? v : 0.0f);
          }
        }
      }
    }
  });
}

// The bitmap emitted by EmitKept is the wire's bitmap of the taken columns.
TEST(SimdKernels, EmitKeptBitmapMatchesTheTakenColumns) {
  std::mt19937 rng(3);
  ForEachTarget([&] {
    for (size_t n : {size_t{1}, size_t{63}, size_t{64}, size_t{65}, size_t{200}, size_t{1024}}) {
      std::vector<float> a(n);
      for (float& v : a) v = std::uniform_real_distribution<float>(-1, 1)(rng);
      std::vector<uint32_t> keys(n);
      MagnitudeKeys(a.data(), nullptr, n, keys.data());
      const uint32_t t = keys[n / 3];
      std::vector<uint32_t> ids(n + kSlack);
      std::vector<float> values(n + kSlack);
      // ceil(n / 8) bytes, then guard bytes that must stay as they were.
      std::vector<uint8_t> bits((n + 7) / 8 + 8, 0xA5);
      const size_t kept =
          EmitKept(keys.data(), a.data(), n, t, n, ids.data(), values.data(), bits.data());
      std::vector<uint8_t> expected((n + 7) / 8 + 8, 0xA5);
      std::fill_n(expected.begin(), (n + 7) / 8, uint8_t{0});
      for (size_t i = 0; i < kept; ++i) expected[ids[i] / 8] |= uint8_t(1u << (ids[i] % 8));
      EXPECT_EQ(bits, expected) << n;
    }
  });
}

// MaxBelow and MinAbove (the largest key below a limit, the smallest above) on one row's keys
// (`sorted`: the same keys in ascending order) against plain loops, at limits drawn from `rng`.
void ExpectMaxBelowAndMinAboveEqualPlainLoops(const std::vector<uint32_t>& keys,
                                              const std::vector<uint32_t>& sorted,
                                              std::mt19937& rng) {
  const size_t n = keys.size();
  // The largest key below a limit: none below 0 or below the least key, every key
  // below one past the largest.
  for (const uint32_t limit : {0u, sorted[0], sorted[rng() % n], sorted[n - 1] + 1}) {
    uint32_t got = 12345;
    const bool any = MaxBelow(keys.data(), n, limit, &got);
    bool want_any = false;
    uint32_t want = 0;
    for (const uint32_t key : keys) {
      if (key < limit) {
        want = want_any ? std::max(want, key) : key;
        want_any = true;
      }
    }
    ASSERT_EQ(any, want_any) << limit;
    ASSERT_EQ(got, any ? want : 12345u) << limit;
  }
  // The smallest key above a limit, likewise.
  for (const uint32_t limit : {0u, sorted[0], sorted[rng() % n], sorted[n - 1], UINT32_MAX - 1}) {
    uint32_t got = 12345;
    const bool any = MinAbove(keys.data(), n, limit, &got);
    bool want_any = false;
    uint32_t want = 0;
    for (const uint32_t key : keys) {
      if (key > limit) {
        want = want_any ? std::min(want, key) : key;
        want_any = true;
      }
    }
    ASSERT_EQ(any, want_any) << limit;
    ASSERT_EQ(got, any ? want : 12345u) << limit;
  }
}

// KeepCut on the m candidates of a row (ids, values and their keys cand_keys) against a plain
// loop: the cut at a key of the list drawn from `rng`, with every tie quota, and the dropped ids.
void ExpectKeepCutEqualsPlainLoop(const std::vector<uint32_t>& cand_keys,
                                  const std::vector<uint32_t>& ids,
                                  const std::vector<float>& values, size_t m, std::mt19937& rng) {
  const uint32_t cut = cand_keys[rng() % m];
  const size_t ties = std::count(cand_keys.begin(), cand_keys.begin() + m, cut);
  for (size_t q : {size_t{0}, ties / 2, ties}) {
    size_t tie_end = 0;
    for (size_t i = 0, seen = 0; i < m && seen < q; ++i) {
      seen += cand_keys[i] == cut;
      tie_end = i + 1;
    }
    std::vector<uint32_t> work(cand_keys);
    std::vector<uint32_t> out_ids(m + kSlack), dropped(m + kSlack);
    std::vector<float> out_values(m + kSlack);
    size_t num_dropped = 0;
    const size_t kept = KeepCut(work.data(), ids.data(), values.data(), m, cut, tie_end,
                                /*compact_keys=*/true, out_ids.data(), out_values.data(),
                                dropped.data(), &num_dropped);
    std::vector<uint32_t> want_kept, want_dropped, want_keys;
    std::vector<float> want_values;
    for (size_t i = 0; i < m; ++i) {
      const bool take = cand_keys[i] > cut || (cand_keys[i] == cut && i < tie_end);
      (take ? want_kept : want_dropped).push_back(ids[i]);
      if (take) {
        want_keys.push_back(cand_keys[i]);
        want_values.push_back(values[i]);
      }
    }
    ASSERT_EQ(kept, want_kept.size());
    ASSERT_EQ(num_dropped, want_dropped.size());
    ASSERT_EQ(std::vector<uint32_t>(out_ids.begin(), out_ids.begin() + kept), want_kept);
    ASSERT_EQ(std::vector<uint32_t>(dropped.begin(), dropped.begin() + num_dropped), want_dropped);
    ASSERT_EQ(std::vector<uint32_t>(work.begin(), work.begin() + kept), want_keys);
    for (size_t i = 0; i < kept; ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(out_values[i]), std::bit_cast<uint32_t>(want_values[i]));
    }
  }
}

// The one-pass kernels of the router against plain loops: ThresholdEmit (keys computed in
// registers, with and without weights, non-finite entries, thresholds 0 .. above every key),
// CandidateKeys (the keys again, from the emitted values) and KeepCut (the cut on the candidate
// list, ties included).
TEST(SimdKernels, OnePassKernelsEqualPlainLoops) {
  std::mt19937 rng(17);
  ForEachTarget([&] {
    for (size_t n : {size_t{1}, size_t{15}, size_t{16}, size_t{63}, size_t{64}, size_t{65},
                     size_t{333}, size_t{4096}}) {
      for (int variant = 0; variant < 8; ++variant) {
        const bool weighted = variant % 2 == 1;
        const bool coarse = variant % 4 >= 2;  // small integers: many equal keys
        const bool bad = variant >= 4;         // NaN and Inf among the values
        std::vector<float> a(n), w(n);
        for (size_t i = 0; i < n; ++i) {
          a[i] = coarse ? float(int(rng() % 9) - 4)
                        : std::uniform_real_distribution<float>(-2, 2)(rng);
          w[i] = i % 7 == 0 ? 0.0f : std::uniform_real_distribution<float>(0, 3)(rng);
          if (bad && i % 11 == 5) {
            a[i] = i % 2 ? std::numeric_limits<float>::infinity() : std::nanf("");
          }
        }
        const float* wp = weighted ? w.data() : nullptr;
        std::vector<uint32_t> keys(n);
        const bool finite_keys = MagnitudeKeys(a.data(), wp, n, keys.data());
        std::vector<uint32_t> sorted = keys;
        std::sort(sorted.begin(), sorted.end());
        for (uint32_t t :
             {0u, 1u, sorted[n / 2], sorted[n - 1], sorted[n - 1] + 1, sorted[(9 * n) / 10]}) {
          SCOPED_TRACE(::testing::Message() << "n " << n << " variant " << variant << " t " << t);
          std::vector<uint32_t> ids(n + kSlack);
          std::vector<float> values(n + kSlack);
          std::vector<uint8_t> bits((n + 7) / 8 + 8, 0xA5);  // + guard bytes
          size_t m = 0;
          const bool finite =
              ThresholdEmit(a.data(), wp, n, t, ids.data(), values.data(), bits.data(), &m);
          ASSERT_EQ(finite, finite_keys);
          // Even then the bitmap (the router's output row) stays within its ceil(n / 8) bytes.
          for (size_t b = (n + 7) / 8; b < bits.size(); ++b) ASSERT_EQ(bits[b], 0xA5) << b;
          if (!finite) continue;  // the outputs are unspecified: the caller routes it otherwise
          std::vector<uint32_t> want_ids;
          std::vector<uint8_t> want_bits((n + 7) / 8 + 8, 0xA5);
          std::fill_n(want_bits.begin(), (n + 7) / 8, uint8_t{0});
          for (size_t i = 0; i < n; ++i) {
            if (keys[i] >= t) {
              want_ids.push_back(static_cast<uint32_t>(i));
              want_bits[i / 8] |= uint8_t(1u << (i % 8));
            }
          }
          ASSERT_EQ(m, want_ids.size());
          ASSERT_EQ(std::vector<uint32_t>(ids.begin(), ids.begin() + m), want_ids);
          ASSERT_EQ(bits, want_bits);
          for (size_t i = 0; i < m; ++i) {
            const float v = a[ids[i]];
            ASSERT_EQ(std::bit_cast<uint32_t>(values[i]), std::bit_cast<uint32_t>(v));
          }
          // The candidates' keys, recomputed from their values, are the keys they were taken by.
          std::vector<uint32_t> cand_keys(m + kSlack);
          // With the count at or above a key: 0 (all of them), a key of the row, above all.
          for (const uint32_t at : {0u, sorted[rng() % n], sorted[n - 1] + 1}) {
            const size_t at_least =
                CandidateKeys(ids.data(), values.data(), m, wp, cand_keys.data(), at);
            for (size_t i = 0; i < m; ++i) ASSERT_EQ(cand_keys[i], keys[ids[i]]) << i;
            ASSERT_EQ(at_least, std::count_if(cand_keys.begin(), cand_keys.begin() + m,
                                              [&](uint32_t key) { return key >= at; }));
          }
          ASSERT_NO_FATAL_FAILURE(ExpectMaxBelowAndMinAboveEqualPlainLoops(keys, sorted, rng));
          if (m == 0) continue;
          ASSERT_NO_FATAL_FAILURE(ExpectKeepCutEqualsPlainLoop(cand_keys, ids, values, m, rng));
        }
      }
    }
  });
}

// Bitmap to columns against a per-bit loop, on rows that do and do not start on a byte, with
// the capacity check at the exact count and one below; dense from the bitmap (ScatterBits) and
// back (GatherBits).
TEST(SimdKernels, BitmapToColumnsEqualsAPerBitLoop) {
  std::mt19937 rng(9);
  ForEachTarget([&] {
    for (uint64_t cols : {1u, 7u, 8u, 48u, 64u, 100u, 1024u, 4097u}) {
      for (double density : {0.0, 0.1, 0.5, 1.0}) {
        const uint64_t rows = 5;
        const uint64_t bits = rows * cols;
        std::vector<uint8_t> bytes((bits + 7) / 8, 0);
        std::vector<uint32_t> want_offsets(rows + 1, 0), want;
        for (uint64_t r = 0; r < rows; ++r) {
          want_offsets[r] = static_cast<uint32_t>(want.size());
          for (uint64_t c = 0; c < cols; ++c) {
            if (std::uniform_real_distribution<double>(0, 1)(rng) < density) {
              const uint64_t b = r * cols + c;
              bytes[b / 8] = static_cast<uint8_t>(bytes[b / 8] | (1u << (b % 8)));
              want.push_back(static_cast<uint32_t>(c));
            }
          }
        }
        want_offsets[rows] = static_cast<uint32_t>(want.size());
        EXPECT_EQ(CountSetBits(bytes.data(), bytes.size()), want.size());
        std::vector<uint32_t> offsets(rows + 1), out(want.size() + kSlack);
        uint64_t count = 0;
        ASSERT_TRUE(BitmapToColumns(bytes.data(), bytes.size(), rows, cols, offsets.data(),
                                    out.data(), want.size(), &count));
        ASSERT_EQ(count, want.size());
        out.resize(count);
        EXPECT_EQ(out, want) << cols << " " << density;
        EXPECT_EQ(offsets, want_offsets);
        std::vector<uint32_t> counts(rows);
        RowBitCounts(bytes.data(), bytes.size(), rows, cols, counts.data());
        for (uint64_t r = 0; r < rows; ++r) {
          EXPECT_EQ(counts[r], want_offsets[r + 1] - want_offsets[r]) << r;
        }
        // Dense from the bitmap: value j at the j-th set bit, zeros elsewhere (the values with
        // the kSlack that ScatterBits may read past them, holding what must not appear).
        std::vector<float> values(want.size() + kSlack, -2.0f);
        for (size_t j = 0; j < want.size(); ++j) values[j] = static_cast<float>(j + 1);
        std::vector<float> dense(rows * cols, -1.0f), expected(rows * cols, 0.0f);
        for (uint64_t r = 0; r < rows; ++r) {
          for (uint32_t j = want_offsets[r]; j < want_offsets[r + 1]; ++j) {
            expected[r * cols + want[j]] = values[j];
          }
        }
        ScatterBits(bytes.data(), bytes.size(), rows, cols, values.data(), dense.data(), cols);
        EXPECT_EQ(dense, expected) << cols << " " << density;
        // Back from a dense matrix with a row stride past cols: the values at the set bits, row
        // after row (the kSlack after them may be written, nothing past it).
        const size_t stride = cols + 3;
        std::vector<float> source(rows * stride);
        for (size_t i = 0; i < source.size(); ++i) source[i] = 0.5f * static_cast<float>(i);
        std::vector<float> gathered(want.size() + 2 * kSlack, -3.0f), want_gathered;
        for (uint64_t r = 0; r < rows; ++r) {
          for (uint32_t j = want_offsets[r]; j < want_offsets[r + 1]; ++j) {
            want_gathered.push_back(source[r * stride + want[j]]);
          }
        }
        EXPECT_EQ(GatherBits(bytes.data(), bytes.size(), rows, cols, source.data(), stride,
                             gathered.data()),
                  want.size());
        for (size_t j = want.size() + kSlack; j < gathered.size(); ++j)
          ASSERT_EQ(gathered[j], -3.0f);
        gathered.resize(want.size());
        EXPECT_EQ(gathered, want_gathered) << cols << " " << density;
        if (!want.empty()) {
          out.assign(want.size() + kSlack, 0);
          EXPECT_FALSE(BitmapToColumns(bytes.data(), bytes.size(), rows, cols, offsets.data(),
                                       out.data(), want.size() - 1, &count));
        }
      }
    }
  });
}

// Subset bitmap rows: each row's bits at the masked columns, packed in column order at any bit
// offset and back, against a per-bit loop, on every target (pext/pdep on AVX2 and AVX3, the
// portable loops below).
TEST(SimdKernels, MaskedRowPackAndUnpackEqualAPerBitLoop) {
  std::mt19937 rng(21);
  ForEachTarget([&] {
    for (size_t cols : {1u, 7u, 8u, 63u, 64u, 65u, 100u, 1024u, 1029u}) {
      for (double mask_density : {0.0, 0.3, 1.0}) {
        const size_t words = (cols + 63) / 64;
        const size_t row_bytes = (cols + 7) / 8;
        std::vector<uint64_t> mask(words, 0);
        std::vector<size_t> masked;
        for (size_t c = 0; c < cols; ++c) {
          if (std::uniform_real_distribution<double>(0, 1)(rng) < mask_density) {
            mask[c / 64] |= uint64_t{1} << (c % 64);
            masked.push_back(c);
          }
        }
        const size_t rows = 4;
        const uint64_t start = 3;  // an odd bit offset for row 0
        std::vector<uint8_t> packed((start + rows * masked.size() + 7) / 8 + 8, 0);
        std::vector<std::vector<uint8_t>> row_bits(rows, std::vector<uint8_t>(row_bytes, 0));
        std::vector<uint8_t> want_bits;  // the packed stream, bit by bit
        for (size_t r = 0; r < rows; ++r) {
          for (size_t c = 0; c < cols; ++c) {
            if (rng() % 3 == 0) row_bits[r][c / 8] |= static_cast<uint8_t>(1u << (c % 8));
          }
          if (cols % 8 != 0) row_bits[r].back() |= static_cast<uint8_t>(0x80);  // past cols
          for (size_t c : masked) want_bits.push_back((row_bits[r][c / 8] >> (c % 8)) & 1u);
        }
        uint64_t pos = start;
        for (size_t r = 0; r < rows; ++r)
          PackMaskedRow(row_bits[r].data(), cols, mask.data(), packed.data(), &pos);
        ASSERT_EQ(pos, start + rows * masked.size());
        for (size_t b = 0; b < 8 * packed.size(); ++b) {
          const unsigned got = (packed[b / 8] >> (b % 8)) & 1u;
          const unsigned want =
              b >= start && b < pos ? want_bits[b - start] : 0u;  // nothing outside the rows
          ASSERT_EQ(got, want) << "cols " << cols << " bit " << b;
        }
        packed.resize((pos + 7) / 8);  // no slack: the reader must not look past the end
        pos = start;
        for (size_t r = 0; r < rows; ++r) {
          std::vector<uint8_t> back(row_bytes, 0xEE);
          const uint64_t set =
              UnpackMaskedRow(packed.data(), packed.size(), &pos, cols, mask.data(), back.data());
          uint64_t want_set = 0;
          for (size_t c = 0; c < cols; ++c) {
            const unsigned m = (mask[c / 64] >> (c % 64)) & 1u;
            const unsigned want = m & ((row_bits[r][c / 8] >> (c % 8)) & 1u);
            want_set += want;
            ASSERT_EQ((back[c / 8] >> (c % 8)) & 1u, want) << "cols " << cols << " col " << c;
          }
          if (cols % 8 != 0) {
            EXPECT_EQ(back.back() >> (cols % 8), 0) << cols;
          }
          EXPECT_EQ(set, want_set);
        }
        EXPECT_EQ(pos, start + rows * masked.size());
      }
    }
  });
}

TEST(SimdKernels, ValidationScreensAndColumnSums) {
  ForEachTarget([&] {
    for (size_t n : {size_t{0}, size_t{1}, size_t{2}, size_t{17}, size_t{100}}) {
      std::vector<uint32_t> ids(n);
      for (size_t i = 0; i < n; ++i) ids[i] = static_cast<uint32_t>(3 * i + 1);
      EXPECT_TRUE(AscendingBelow(ids.data(), n, static_cast<uint32_t>(3 * n + 1)));
      if (n == 0) continue;
      EXPECT_FALSE(AscendingBelow(ids.data(), n, ids[n - 1]));  // last id must be < limit
      for (size_t at = 1; at < n; at += 5) {
        std::vector<uint32_t> bad = ids;
        bad[at] = bad[at - 1];  // not strictly ascending
        EXPECT_FALSE(AscendingBelow(bad.data(), n, 1000000)) << n << " " << at;
      }
      std::vector<uint8_t> bytes(n, 1);
      EXPECT_EQ(MaxByte(bytes.data(), n), 1);
      bytes[n - 1] = 7;
      EXPECT_EQ(MaxByte(bytes.data(), n), 7);
      for (size_t i = 0; i < n; i += 3) bytes[i] = 2;
      EXPECT_EQ(CountByte(bytes.data(), n, 2), (n + 2) / 3) << n;
      EXPECT_EQ(CountByte(bytes.data(), n, 1) + CountByte(bytes.data(), n, 2) +
                    CountByte(bytes.data(), n, 7),
                n);
      // Gaps at both sides of every LEB128 length boundary, and ids that wrap (the kernel's
      // arithmetic is modular, like the codec's); checked against the scalar count.
      const uint32_t gaps[] = {0,        127,
                               128,      (1u << 14) - 1,
                               1u << 14, (1u << 21) - 1,
                               1u << 21, (1u << 28) - 1,
                               1u << 28, 0xFFFFFFFEu};
      std::mt19937 rng(static_cast<uint32_t>(n));
      std::vector<uint32_t> gap_ids(n);
      uint64_t want_extra = 0;
      for (size_t i = 1; i < n; ++i) {
        const uint32_t gap =
            i % 3 == 0 ? static_cast<uint32_t>(rng()) : gaps[(i + rng() % 2) % std::size(gaps)];
        gap_ids[i] = gap_ids[i - 1] + 1 + gap;
        uint32_t len = 1;
        for (uint32_t v = gap; v >= 0x80; v >>= 7) ++len;
        want_extra += len - 1;
      }
      EXPECT_EQ(GapVarintExtraBytes(gap_ids.data(), n), want_extra) << n;
      std::vector<float> x(n), acc(n, 1.0f);
      for (size_t i = 0; i < n; ++i) x[i] = (i % 2 ? -1.0f : 1.0f) * static_cast<float>(i);
      AddAbs(x.data(), n, acc.data());
      for (size_t i = 0; i < n; ++i) EXPECT_EQ(acc[i], 1.0f + static_cast<float>(i));
    }
  });
}

}  // namespace
}  // namespace sparselink::simd
