// Shared vocabulary of sparselink: matrix views, tiers, value and index codecs, granularity.
// Every closed family is an enum class plus one constexpr traits table guarded by
// static_asserts on its size and order, so adding a member means adding one row.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "sparselink/name_table.hpp"
#include "sparselink/status.hpp"

namespace sparselink {

// A read-only row-major `rows x cols` view of fp32 values. Does not own `data`; the caller
// keeps it alive while the view is used. rows = samples of a micro-batch, cols = neurons.
struct ConstMatrix {
  const float* data = nullptr;
  size_t rows = 0;
  size_t cols = 0;

  size_t size() const { return rows * cols; }
  const float* Row(size_t r) const { return data + r * cols; }
};

// A writable row-major view; same ownership rules as ConstMatrix.
struct MutableMatrix {
  float* data = nullptr;
  size_t rows = 0;
  size_t cols = 0;

  size_t size() const { return rows * cols; }
  float* Row(size_t r) const { return data + r * cols; }
  operator ConstMatrix() const { return {data, rows, cols}; }  // NOLINT
};

// What to do with NaN or Inf in an activation or gradient. The default rejects the tensor
// with kNonFinite naming the field, the row and the column of the first bad entry.
enum class OnNonFinite : uint8_t {
  kReject = 0,   // return an error (default)
  kTreatAsZero,  // score it 0, send it never (it becomes a dropped entry)
};

// Checks that `m` is non-empty, not null and (under kReject) finite.
// `field` names the tensor in the error message ("activation", "gradient"). O(rows*cols).
Status ValidateMatrix(ConstMatrix m, std::string_view field, OnNonFinite on_non_finite);

// Calls that work row by row (routing, scatters, gathers, value coding) use the OpenMP threads
// from this many rows x cols entries on, by default. Below it the wake-up of a sleeping thread
// costs about what it saves; where the threads stay awake between regions 2^16 pays
// (docs/perf-notes.md#kdefaultparallelminentries). The output never
// depends on the thread count.
inline constexpr size_t kDefaultParallelMinEntries = size_t{1} << 20;

// Precision tier of an entry that crosses a boundary.
enum class Tier : uint8_t {
  kFull = 0,   // sent with the contract's full codec
  kLossy = 1,  // sent with the contract's lossy codec
  kDropped = 2,
};

// Selection granularity of a contract.
enum class Granularity : uint8_t {
  kElement = 0,  // top-k entries in each row, independently
  kUnit = 1,     // structured: one set of units for the whole micro-batch
};
inline constexpr size_t kNumGranularities = 2;
inline constexpr std::array<NameRow<Granularity>, kNumGranularities> kGranularityNames = {{
    {Granularity::kElement, "element"},
    {Granularity::kUnit, "unit"},
}};
static_assert(RowsInOrder(kGranularityNames));
inline constexpr std::string_view GranularityName(Granularity g) {
  return EnumName(kGranularityNames, g);
}

// Codec for the values of one tier.
enum class ValueCodec : uint8_t {
  kFp32 = 0,
  kFp16 = 1,  // IEEE binary16, round to nearest even; overflow saturates to +-65504
  kBf16 = 2,  // bfloat16, round to nearest even
  kInt8 = 3,  // symmetric, one fp32 scale per row: q = round(v / (max|v| / 127))
  kInt4 = 4,  // symmetric, one fp32 scale per row: q = round(v / (max|v| / 7)), two per byte
};
inline constexpr size_t kNumValueCodecs = 5;

struct ValueCodecTraits {
  ValueCodec value;
  std::string_view name;
  uint32_t bits_per_value;
  bool per_row_scale;  // one fp32 scale per row precedes the values
  bool lossless;
  // Largest absolute error of one value relative to its row's max |v| (0 for lossless);
  // for the float codecs it is the relative rounding error of the value itself.
  double max_relative_error;
};

inline constexpr std::array<ValueCodecTraits, kNumValueCodecs> kValueCodecTraits = {{
    {ValueCodec::kFp32, "fp32", 32, false, true, 0.0},
    {ValueCodec::kFp16, "fp16", 16, false, false, 1.0 / 2048},
    {ValueCodec::kBf16, "bf16", 16, false, false, 1.0 / 256},
    {ValueCodec::kInt8, "int8", 8, true, false, 0.5 / 127},
    {ValueCodec::kInt4, "int4", 4, true, false, 0.5 / 7},
}};
static_assert(kValueCodecTraits.size() == kNumValueCodecs);
static_assert(RowsInOrder(kValueCodecTraits));

inline constexpr const ValueCodecTraits& Traits(ValueCodec c) {
  return kValueCodecTraits[static_cast<size_t>(c)];
}
inline constexpr std::string_view ValueCodecName(ValueCodec c) {
  return EnumName(kValueCodecTraits, c);
}
// Parses "fp32", "fp16", "bf16", "int8", "int4".
Result<ValueCodec> ParseValueCodec(std::string_view name);

// What happens to entries outside the kept set.
enum class RestCodec : uint8_t {
  kDrop = 0,   // not sent; the receiver sees zeros
  kSign1 = 1,  // "compressed aggressively": 1 bit per entry (v > 0) plus two fp32 centroids per
               // row (mean of the positive rest entries, mean of the others); the receiver
               // sees the centroid of the entry's side
};
inline constexpr size_t kNumRestCodecs = 2;
inline constexpr std::array<NameRow<RestCodec>, kNumRestCodecs> kRestCodecNames = {{
    {RestCodec::kDrop, "drop"},
    {RestCodec::kSign1, "sign1"},
}};
static_assert(RowsInOrder(kRestCodecNames));
inline constexpr std::string_view RestCodecName(RestCodec r) {
  return EnumName(kRestCodecNames, r);
}

// How the kept positions are written on the wire.
enum class IndexCodec : uint8_t {
  kAuto = 0,          // encoder option only: pick the smallest per packet
  kBitmap = 1,        // one bit per column, LSB first
  kDeltaVarint = 2,   // per row: count, then gaps between kept columns, LEB128 varints
  kSubsetBitmap = 3,  // the columns any row keeps (a mask), then per row one bit per those
};
inline constexpr size_t kNumIndexCodecs = 4;
inline constexpr std::array<NameRow<IndexCodec>, kNumIndexCodecs> kIndexCodecNames = {{
    {IndexCodec::kAuto, "auto"},
    {IndexCodec::kBitmap, "bitmap"},
    {IndexCodec::kDeltaVarint, "delta-varint"},
    {IndexCodec::kSubsetBitmap, "subset-bitmap"},
}};
static_assert(RowsInOrder(kIndexCodecNames));
inline constexpr std::string_view IndexCodecName(IndexCodec c) {
  return EnumName(kIndexCodecNames, c);
}

// Fixed sizes of wire format v1 (docs/wire-format.md), shared by the codec and the cost model.
inline constexpr size_t kPacketHeaderBytes = 64;
inline constexpr size_t kSectionEntryBytes = 12;
inline constexpr size_t kChecksumBytes = 8;

// Bytes needed for `count` values of `codec` over `rows` rows (per-row scales included).
uint64_t ValueStreamBytes(ValueCodec codec, uint64_t count, uint64_t rows);

}  // namespace sparselink
