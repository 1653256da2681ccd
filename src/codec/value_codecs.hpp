// Private to the codec module: the allocation-free value stream entry points the packet codec
// uses (the scalar 16-bit conversions are simd/scalar.hpp's). The formats are described in
// value_codecs.cc.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "sparselink/status.hpp"
#include "sparselink/types.hpp"

namespace sparselink::internal {

// Writes exactly ValueStreamBytes(codec, values.size(), row_counts.size()) bytes to `dst`.
// sum(row_counts) must equal values.size() (checked: a broken invariant aborts).
// With parallel_rows, a codec with per-row scales and whole bytes per value (int8) codes its
// rows on the OpenMP threads (the same bytes for any thread count).
void EncodeValues(ValueCodec codec, std::span<const float> values,
                  std::span<const uint32_t> row_counts, uint8_t* dst, bool parallel_rows = false);
// The same, appended to `out`.
void AppendValues(ValueCodec codec, std::span<const float> values,
                  std::span<const uint32_t> row_counts, std::vector<uint8_t>* out);
// Decodes into `values` (size == sum(row_counts)); checks the stream size first. Allocates
// nothing but, on the parallel int8 path, the calling thread's row starts (kept between calls).
// parallel_rows as for EncodeValues; a refused stream is named as on one thread (the first bad
// row's error).
Status DecodeValuesInto(ValueCodec codec, std::span<const uint8_t> bytes,
                        std::span<const uint32_t> row_counts, std::span<float> values,
                        bool parallel_rows = false);

// Checks a stream of `count` values over `rows` rows as far as that needs no split in rows
// (docs/wire-format.md, "Gradient packets"): the size, every row's scale, every int8 code (not
// -128) and int4 code (not -8), the int4 padding nibble (rows are not byte aligned, so the
// stream's only one), every fp32/fp16/bf16 value finite; with `per_row` (the same count in
// every row, unit granularity) also every int8/int4 q * scale finite. A stream that passes and
// whose split sums to `count` fails DecodeValuesInto only for a q * scale that overflows; an
// error names the field as DecodeValuesInto does. Allocates nothing; O(count).
Status CheckValuesWithoutSplit(ValueCodec codec, std::span<const uint8_t> bytes, uint64_t count,
                               size_t rows, std::optional<uint64_t> per_row);

// One row of the int8 codec: its scale (the largest finite |v| over 127, rounded down where 127
// times it would overflow) as 4 little-endian bytes at `scale_at`, its n values quantized at `q`.
void EncodeInt8Row(const float* row, size_t n, uint8_t* scale_at, uint8_t* q);

// Whether an int8 stream of `rows` rows, of the size DecodeValuesInto checks, plainly decodes:
// every scale finite, >= 0 and finite times 127, and no value byte -128. Then DecodeValuesInto
// would accept it and give float(q) * scale for every value, finite; a stream turned down here
// may still decode (the caller then decodes it the full way, which names any refusal). One
// vector pass over the bytes.
bool Int8StreamPlainlyValid(std::span<const uint8_t> bytes, size_t rows);

}  // namespace sparselink::internal
