// Value codecs of wire format v1: how the values of one tier become bytes.
//
// A value stream is [per-row fp32 scales, if the codec has them][packed values]; its size is
// always ValueStreamBytes(codec, count, rows) (types.hpp), so a decoder knows it from the
// header alone. All multi-byte quantities are little-endian.
//
//  fp32  the IEEE bits as they are.
//  fp16  IEEE binary16, round to nearest, ties to even. Finite values at or beyond 65504 in
//        magnitude saturate to +-65504 (0x7BFF); values below 2^-14 become binary16 subnormals
//        (steps of 2^-24), below 2^-25 zero. +-Inf stay +-Inf and NaN becomes a quiet NaN, so
//        the decoder can refuse them (the packet encoders never pass them).
//  bf16  the top 16 bits of the fp32 value after rounding to nearest, ties to even. The
//        exponent range is fp32's; a finite value that would round up to Inf (within half a
//        bf16 step of FLT_MAX) saturates to +-0x7F7F instead, as fp16 does.
//  int8  symmetric, per row: scale = max|v| / 127 stored as fp32, q = round(v / scale) with
//        ties away from zero (std::lround), clamped to [-127, 127]; -128 is never written and
//        the decoder refuses it. A row whose values are all zero (or that has none) has scale 0.
//        The receiver sees q * scale.
//  int4  the same with 7 in place of 127: q in [-7, 7], stored as a two's-complement nibble,
//        two per byte, low nibble first, packed continuously across the whole stream (rows do
//        not start on a byte boundary); an odd total leaves the final high nibble 0. The
//        nibble 0x8 (-8) is never written and the decoder refuses it.
//
// Non-finite input to the integer codecs counts as 0 (it neither sets the scale nor is sent);
// the packet encoders refuse non-finite values before they get here. Every decoder refuses a
// stream of the wrong size, a negative or non-finite scale, and a non-finite value, so a
// decoded tensor is always finite.
#include "codec/value_codecs.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <numeric>
#include <sstream>

#include "core/parallel.hpp"
#include "simd/kernels.hpp"
#include "simd/scalar.hpp"
#include "sparselink/codec.hpp"

namespace sparselink {
namespace {

using simd::ScalarBf16;
using simd::ScalarBf16ToFloat;
using simd::ScalarHalf;
using simd::ScalarHalfToFloat;

uint16_t GetU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
void PutF32(uint8_t* p, float f) {
  const uint32_t v = std::bit_cast<uint32_t>(f);
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
float GetF32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return std::bit_cast<float>(v);
}

Status NonFiniteValue(size_t i, float v) {
  std::ostringstream field;
  field << "values[" << i << "]";
  return FieldError(ErrorCode::kCorruptPacket, field.str(), v,
                    "not finite (an encoder never writes one)");
}

// The refusals of integer codes, shared by the decoders and CheckValuesWithoutSplit so that
// both name a bad stream alike.
Status Int8CodeError(uint64_t i) {
  return FieldError(ErrorCode::kCorruptPacket, "int8 value[" + std::to_string(i) + "]", -128,
                    "outside [-127, 127]");
}
Status Int4CodeError(uint64_t i) {
  return FieldError(ErrorCode::kCorruptPacket, "int4 value[" + std::to_string(i) + "]", -8,
                    "outside [-7, 7]");
}
// The high nibble of the last byte after an odd number of int4 values (0 if the count is even).
Status CheckInt4Padding(const uint8_t* q, uint64_t count) {
  if (count % 2 == 0 || (q[count / 2] >> 4) == 0) return Status::Ok();
  return FieldError(ErrorCode::kCorruptPacket, "int4 padding nibble", int(q[count / 2] >> 4),
                    "must be 0 after an odd number of values");
}
int Int4Code(const uint8_t* q, uint64_t i) {
  const int nibble = (q[i / 2] >> (4 * (i % 2))) & 0xF;
  return nibble >= 8 ? nibble - 16 : nibble;
}

Status CheckStreamSize(ValueCodec codec, size_t size, uint64_t count, size_t rows) {
  const uint64_t expected = ValueStreamBytes(codec, count, rows);
  if (size == expected) return Status::Ok();
  std::ostringstream why;
  why << "expected " << expected << " for " << count << " " << Traits(codec).name << " values over "
      << rows << " rows";
  return FieldError(ErrorCode::kCorruptPacket, "value stream bytes", size, why.str());
}

// Row-scaled integer codecs share everything but the level count and the packing.
// max_abs / levels, rounded down where levels * scale would round up past FLT_MAX (max_abs
// near FLT_MAX), so that the decoder's q * scale of every q in [-levels, levels] is finite.
float ScaleFor(float max_abs, float levels) {
  float scale = max_abs / levels;
  while (!std::isfinite(levels * scale)) scale = std::nextafter(scale, 0.0f);
  return scale;
}

float RowScale(std::span<const float> row, float levels) {
  float max_abs = 0.0f;
  for (float v : row) {
    if (std::isfinite(v)) max_abs = std::max(max_abs, std::fabs(v));
  }
  return ScaleFor(max_abs, levels);
}

int Quantize(float v, float scale, long levels) {
  if (scale == 0.0f || !std::isfinite(v)) return 0;
  const long q = std::lround(static_cast<double>(v) / static_cast<double>(scale));
  return static_cast<int>(std::clamp(q, -levels, levels));
}

// Each encoder writes exactly ValueStreamBytes(codec, values.size(), row_counts.size()) bytes
// at `out`.
void EncodeFp32(std::span<const float> values, std::span<const uint32_t>, uint8_t* out) {
  for (size_t i = 0; i < values.size(); ++i) PutF32(out + 4 * i, values[i]);
}

// The vector kernels write native uint16; the wire is little-endian (so is every target
// Highway builds for here, which the static_assert pins).
static_assert(std::endian::native == std::endian::little);

void EncodeFp16(std::span<const float> values, std::span<const uint32_t>, uint8_t* out) {
  simd::FloatToHalf(values.data(), values.size(), reinterpret_cast<uint16_t*>(out));
}

void EncodeBf16(std::span<const float> values, std::span<const uint32_t>, uint8_t* out) {
  simd::FloatToBf16(values.data(), values.size(), reinterpret_cast<uint16_t*>(out));
}

// Rows [first, end) of an int8 stream, whose values start at values[begin]: their scales and
// their quantized values, where the whole stream puts them.
void EncodeInt8Rows(std::span<const float> values, std::span<const uint32_t> row_counts,
                    uint8_t* out, size_t first, size_t end, size_t begin) {
  uint8_t* q_out = out + 4 * row_counts.size() + begin;
  for (size_t r = first; r < end; ++r) {
    internal::EncodeInt8Row(values.data() + begin, row_counts[r], out + 4 * r, q_out);
    q_out += row_counts[r];
    begin += row_counts[r];
  }
}

void EncodeInt8(std::span<const float> values, std::span<const uint32_t> row_counts, uint8_t* out) {
  EncodeInt8Rows(values, row_counts, out, 0, row_counts.size(), 0);
}

void EncodeInt4(std::span<const float> values, std::span<const uint32_t> row_counts, uint8_t* out) {
  uint8_t* q_out = out + 4 * row_counts.size();
  if (!values.empty()) std::memset(q_out, 0, (values.size() + 1) / 2);
  size_t i = 0;
  for (size_t r = 0; r < row_counts.size(); ++r) {
    const std::span<const float> row = values.subspan(i, row_counts[r]);
    const float scale = RowScale(row, 7.0f);
    PutF32(out + 4 * r, scale);
    for (float v : row) {
      const auto nibble = static_cast<uint8_t>(Quantize(v, scale, 7) & 0xF);
      q_out[i / 2] = static_cast<uint8_t>(q_out[i / 2] | (nibble << (4 * (i % 2))));
      ++i;
    }
  }
}

// Each decoder gets a stream whose size was already checked and writes values.size() values.
// The three float codecs differ only in the width and the conversion of one value.
template <size_t kBytes, float (*Read)(const uint8_t*)>
Status DecodeFloats(std::span<const uint8_t> bytes, std::span<const uint32_t>,
                    std::span<float> values) {
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = Read(bytes.data() + kBytes * i);
    if (!std::isfinite(values[i])) return NonFiniteValue(i, values[i]);
  }
  return Status::Ok();
}
float ReadHalf(const uint8_t* p) { return ScalarHalfToFloat(GetU16(p)); }
float ReadBf16(const uint8_t* p) { return ScalarBf16ToFloat(GetU16(p)); }
constexpr auto DecodeFp32 = DecodeFloats<4, GetF32>;

// The 16-bit codecs convert with a vector kernel; only a stream it refuses is walked again by
// the scalar decoder, to name the bad value.
template <bool (*Convert)(const uint16_t*, size_t, float*), float (*Read)(const uint8_t*)>
Status DecodeHalves(std::span<const uint8_t> bytes, std::span<const uint32_t> row_counts,
                    std::span<float> values) {
  if (Convert(reinterpret_cast<const uint16_t*>(bytes.data()), values.size(), values.data())) {
    return Status::Ok();
  }
  return DecodeFloats<2, Read>(bytes, row_counts, values);
}
constexpr auto DecodeFp16 = DecodeHalves<simd::HalfToFloat, ReadHalf>;
constexpr auto DecodeBf16 = DecodeHalves<simd::Bf16ToFloat, ReadBf16>;

// DecodeFloats's check alone, nothing written.
template <size_t kBytes, float (*Read)(const uint8_t*)>
Status CheckFloatsFinite(std::span<const uint8_t> bytes, uint64_t count) {
  for (uint64_t i = 0; i < count; ++i) {
    const float v = Read(bytes.data() + kBytes * i);
    if (!std::isfinite(v)) return NonFiniteValue(i, v);
  }
  return Status::Ok();
}

Status CheckScale(size_t r, float scale) {
  if (std::isfinite(scale) && scale >= 0.0f) return Status::Ok();
  std::ostringstream field;
  field << "scales[" << r << "]";
  return FieldError(ErrorCode::kCorruptPacket, field.str(), scale, "must be finite and >= 0");
}

// Rows [first, end) of an int8 stream, whose values start at values[i].
Status DecodeInt8Rows(std::span<const uint8_t> bytes, std::span<const uint32_t> row_counts,
                      std::span<float> values, size_t first, size_t end, size_t i) {
  const uint8_t* q_in = bytes.data() + 4 * row_counts.size();
  for (size_t r = first; r < end; ++r) {
    const float scale = GetF32(bytes.data() + 4 * r);
    SPARSELINK_RETURN_IF_ERROR(CheckScale(r, scale));
    if (simd::Int8ToFloat(reinterpret_cast<const int8_t*>(q_in + i), row_counts[r], scale,
                          values.data() + i)) {
      i += row_counts[r];
      continue;
    }
    for (uint32_t j = 0; j < row_counts[r]; ++j, ++i) {  // name the bad value
      const auto q = static_cast<int8_t>(q_in[i]);
      if (q == -128) return Int8CodeError(i);
      values[i] = static_cast<float>(q) * scale;
    }
  }
  return Status::Ok();
}

Status DecodeInt8(std::span<const uint8_t> bytes, std::span<const uint32_t> row_counts,
                  std::span<float> values) {
  return DecodeInt8Rows(bytes, row_counts, values, 0, row_counts.size(), 0);
}

Status DecodeInt4(std::span<const uint8_t> bytes, std::span<const uint32_t> row_counts,
                  std::span<float> values) {
  const uint8_t* q_in = bytes.data() + 4 * row_counts.size();
  size_t i = 0;
  for (size_t r = 0; r < row_counts.size(); ++r) {
    const float scale = GetF32(bytes.data() + 4 * r);
    SPARSELINK_RETURN_IF_ERROR(CheckScale(r, scale));
    for (uint32_t j = 0; j < row_counts[r]; ++j, ++i) {
      const int q = Int4Code(q_in, i);
      if (q == -8) return Int4CodeError(i);
      values[i] = static_cast<float>(q) * scale;
    }
  }
  return CheckInt4Padding(q_in, values.size());
}

// One row per codec, in enum order (one traits table per closed family: CONTRIBUTING.md).
struct ValueCodecImpl {
  ValueCodec codec;
  void (*encode)(std::span<const float> values, std::span<const uint32_t> row_counts, uint8_t* out);
  Status (*decode)(std::span<const uint8_t> bytes, std::span<const uint32_t> row_counts,
                   std::span<float> values);
};

constexpr std::array<ValueCodecImpl, kNumValueCodecs> kValueCodecImpls = {{
    {ValueCodec::kFp32, EncodeFp32, DecodeFp32},
    {ValueCodec::kFp16, EncodeFp16, DecodeFp16},
    {ValueCodec::kBf16, EncodeBf16, DecodeBf16},
    {ValueCodec::kInt8, EncodeInt8, DecodeInt8},
    {ValueCodec::kInt4, EncodeInt4, DecodeInt4},
}};
static_assert(kValueCodecImpls.size() == kNumValueCodecs);
static_assert(kValueCodecImpls[0].codec == ValueCodec::kFp32);
static_assert(kValueCodecImpls[1].codec == ValueCodec::kFp16);
static_assert(kValueCodecImpls[2].codec == ValueCodec::kBf16);
static_assert(kValueCodecImpls[3].codec == ValueCodec::kInt8);
static_assert(kValueCodecImpls[4].codec == ValueCodec::kInt4);

uint64_t SumCounts(std::span<const uint32_t> row_counts) {
  return std::accumulate(row_counts.begin(), row_counts.end(), uint64_t{0});
}

}  // namespace

namespace internal {

// A long stream of a codec without per-row scales (fp32, fp16, bf16) is encoded on the OpenMP
// threads: each value's bytes depend on that value alone, so the stream is the same for any
// thread count, and a second thread shares what it otherwise could not. A stream of
// kParallelValueRows rows or more, with parallel_rows, goes by row ranges (ForRowRanges, the
// router's split: a thread codes the values it routed, from its own cache); others in chunks of
// kValueChunk (docs/perf-notes.md#kparallelvaluerows).
constexpr size_t kParallelValues = size_t{1} << 16;
constexpr size_t kValueChunk = size_t{1} << 14;
constexpr size_t kParallelValueRows = 64;

void AppendValues(ValueCodec codec, std::span<const float> values,
                  std::span<const uint32_t> row_counts, std::vector<uint8_t>* out) {
  SPARSELINK_CHECK_LT(static_cast<size_t>(codec), kNumValueCodecs);
  const size_t start = out->size();
  out->resize(start + ValueStreamBytes(codec, values.size(), row_counts.size()));
  EncodeValues(codec, values, row_counts, out->data() + start);
}

// A decoded stream must be finite.
Status CheckFinite(ValueCodec codec, std::span<const float> values) {
  // A finite q times a finite scale can still overflow (a corrupt scale near FLT_MAX): refused
  // like a non-finite float value, so a decoded stream is always finite.
  if (Traits(codec).per_row_scale && !simd::AllFinite(values.data(), values.size())) {
    const auto bad =
        std::find_if(values.begin(), values.end(), [](float v) { return !std::isfinite(v); });
    return NonFiniteValue(static_cast<size_t>(bad - values.begin()), *bad);
  }
  return Status::Ok();
}

// Where each row's values start (rows + 1 entries), for the row-parallel int8 paths; the
// calling thread's buffer.
const uint64_t* RowStarts(std::span<const uint32_t> row_counts) {
  thread_local std::vector<uint64_t> starts;
  starts.resize(row_counts.size() + 1);
  starts[0] = 0;
  std::inclusive_scan(row_counts.begin(), row_counts.end(), starts.begin() + 1, std::plus<>(),
                      uint64_t{0});
  return starts.data();
}

void EncodeValues(ValueCodec codec, std::span<const float> values,
                  std::span<const uint32_t> row_counts, uint8_t* dst, bool parallel_rows) {
  SPARSELINK_CHECK_LT(static_cast<size_t>(codec), kNumValueCodecs);
  SPARSELINK_CHECK_EQ(SumCounts(row_counts), values.size());
  const ValueCodecImpl& impl = kValueCodecImpls[static_cast<size_t>(codec)];
  if (codec == ValueCodec::kInt8 && parallel_rows) {
    const uint64_t* starts = RowStarts(row_counts);
    internal::ForRowRanges(row_counts.size(), true, [&](size_t first, size_t end) {
      EncodeInt8Rows(values, row_counts, dst, first, end, starts[first]);
    });
    return;
  }
  if (Traits(codec).per_row_scale || values.size() < kParallelValues) {
    impl.encode(values, row_counts, dst);
    return;
  }
  // On the rows' threads, by the rows' split (the router's: each thread codes the values it
  // routed, in its own cache); a few long rows go in chunks instead.
  if (parallel_rows && row_counts.size() >= kParallelValueRows) {
    const uint64_t* starts = RowStarts(row_counts);
    const size_t value_bytes = Traits(codec).bits_per_value / 8;
    internal::ForRowRanges(row_counts.size(), true, [&](size_t first, size_t end) {
      impl.encode(values.subspan(starts[first], starts[end] - starts[first]), {},
                  dst + starts[first] * value_bytes);
    });
    return;
  }
  const size_t value_bytes = Traits(codec).bits_per_value / 8;
  const size_t chunks = (values.size() + kValueChunk - 1) / kValueChunk;
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < chunks; ++c) {
    const size_t begin = c * kValueChunk;
    const size_t count = std::min(kValueChunk, values.size() - begin);
    impl.encode(values.subspan(begin, count), {}, dst + begin * value_bytes);
  }
}

Status DecodeValuesInto(ValueCodec codec, std::span<const uint8_t> bytes,
                        std::span<const uint32_t> row_counts, std::span<float> values,
                        bool parallel_rows) {
  if (static_cast<size_t>(codec) >= kNumValueCodecs) {
    return FieldError(ErrorCode::kUnsupported, "value codec", int(codec), "unknown value codec");
  }
  const uint64_t count = SumCounts(row_counts);
  SPARSELINK_CHECK_EQ(count, values.size());
  SPARSELINK_RETURN_IF_ERROR(CheckStreamSize(codec, bytes.size(), count, row_counts.size()));
  if (codec == ValueCodec::kInt8 && parallel_rows) {
    // Each thread decodes its rows; a refusal anywhere is named by the one-thread decode below,
    // so that the error is the first bad row's whatever the split.
    const uint64_t* starts = RowStarts(row_counts);
    bool ok = true;
    internal::ForRowRanges(row_counts.size(), true, [&](size_t first, size_t end) {
      if (!DecodeInt8Rows(bytes, row_counts, values, first, end, starts[first]).ok()) {
#pragma omp atomic write
        ok = false;
      }
    });
    if (ok) return CheckFinite(codec, values);
  }
  SPARSELINK_RETURN_IF_ERROR(
      kValueCodecImpls[static_cast<size_t>(codec)].decode(bytes, row_counts, values));
  return CheckFinite(codec, values);
}

// The checks of the decoders that hold whatever the rows' split: the float codecs value by
// value, the integer codecs' scales (one per row, first), codes and padding nibble; and, where
// every row holds per_row values, the products of the rows whose scale could overflow with some
// code (levels * scale not finite), in stream order as CheckFinite finds them.
Status CheckValuesWithoutSplit(ValueCodec codec, std::span<const uint8_t> bytes, uint64_t count,
                               size_t rows, std::optional<uint64_t> per_row) {
  if (static_cast<size_t>(codec) >= kNumValueCodecs) {
    return FieldError(ErrorCode::kUnsupported, "value codec", int(codec), "unknown value codec");
  }
  SPARSELINK_RETURN_IF_ERROR(CheckStreamSize(codec, bytes.size(), count, rows));
  switch (codec) {
    case ValueCodec::kFp32: return CheckFloatsFinite<4, GetF32>(bytes, count);
    case ValueCodec::kFp16: return CheckFloatsFinite<2, ReadHalf>(bytes, count);
    case ValueCodec::kBf16: return CheckFloatsFinite<2, ReadBf16>(bytes, count);
    case ValueCodec::kInt8:
    case ValueCodec::kInt4: break;
  }
  for (size_t r = 0; r < rows; ++r) {
    SPARSELINK_RETURN_IF_ERROR(CheckScale(r, GetF32(bytes.data() + 4 * r)));
  }
  const uint8_t* q = bytes.data() + 4 * rows;
  const bool int8 = codec == ValueCodec::kInt8;
  if (int8) {
    const void* bad = count > 0 ? std::memchr(q, 0x80, count) : nullptr;
    if (bad != nullptr) return Int8CodeError(static_cast<const uint8_t*>(bad) - q);
  } else {
    for (uint64_t i = 0; i < count; ++i) {
      if (Int4Code(q, i) == -8) return Int4CodeError(i);
    }
    SPARSELINK_RETURN_IF_ERROR(CheckInt4Padding(q, count));
  }
  if (!per_row) return Status::Ok();
  SPARSELINK_CHECK_EQ(*per_row * rows, count);
  const float levels = int8 ? 127.0f : 7.0f;
  for (size_t r = 0; r < rows; ++r) {
    const float scale = GetF32(bytes.data() + 4 * r);
    if (std::isfinite(levels * scale)) continue;
    for (uint64_t i = r * *per_row; i < (r + 1) * *per_row; ++i) {
      const int code = int8 ? static_cast<int8_t>(q[i]) : Int4Code(q, i);
      const float v = static_cast<float>(code) * scale;
      if (!std::isfinite(v)) return NonFiniteValue(i, v);
    }
  }
  return Status::Ok();
}

void EncodeInt8Row(const float* row, size_t n, uint8_t* scale_at, uint8_t* q) {
  const float scale = ScaleFor(simd::MaxAbsFinite(row, n), 127.0f);
  PutF32(scale_at, scale);
  simd::QuantizeInt8(row, n, scale, reinterpret_cast<int8_t*>(q));
}

bool Int8StreamPlainlyValid(std::span<const uint8_t> bytes, size_t rows) {
  if (bytes.size() < 4 * rows) return false;
  for (size_t r = 0; r < rows; ++r) {
    const float scale = GetF32(bytes.data() + 4 * r);
    if (!(std::isfinite(scale) && scale >= 0.0f && std::isfinite(127.0f * scale))) return false;
  }
  return simd::CountByte(bytes.data() + 4 * rows, bytes.size() - 4 * rows, 0x80) == 0;
}

}  // namespace internal

void EncodeValues(ValueCodec codec, std::span<const float> values,
                  std::span<const uint32_t> row_counts, std::vector<uint8_t>* out) {
  out->clear();
  internal::AppendValues(codec, values, row_counts, out);
}

Status DecodeValues(ValueCodec codec, std::span<const uint8_t> bytes,
                    std::span<const uint32_t> row_counts, std::vector<float>* values) {
  if (static_cast<size_t>(codec) >= kNumValueCodecs) {
    return FieldError(ErrorCode::kUnsupported, "value codec", int(codec), "unknown value codec");
  }
  const uint64_t count = SumCounts(row_counts);
  // The size check comes before the allocation, so a wrong row_counts cannot make us allocate.
  SPARSELINK_RETURN_IF_ERROR(CheckStreamSize(codec, bytes.size(), count, row_counts.size()));
  values->resize(count);
  Status status = internal::DecodeValuesInto(codec, bytes, row_counts, *values);
  if (!status.ok()) values->clear();
  return status;
}

}  // namespace sparselink
