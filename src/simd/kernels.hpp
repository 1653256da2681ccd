// The vector kernels of the hot paths (routing and value coding), one call per row or per
// stream. Each is written once with Highway and compiled for every x86 target Highway knows
// (SSSE3 .. AVX-512); the best one the CPU supports is chosen at the first call. Private to the
// library: callers are src/core, src/routing, src/codec and src/torch.
//
// Keys. An entry's selection key is the IEEE bit pattern of its score |a| (* w) with the sign
// cleared, as an unsigned integer: for the non-negative floats this order is exactly the order
// of the values, so the k largest scores are the k largest keys and ties stay ties.
//
// Every kernel gives the same result on every target (they are exact integer or IEEE
// operations, in the same order); the scalar references live in the tests.
//
// One file per family: select_kernels.cc (keys, counts, cuts and emit passes of the router),
// sum_kernels.cc (column sums, magnitude accumulators, finiteness), value_kernels.cc (fp16,
// bf16 and int8 value codecs), index_kernels.cc (bitmaps, subset bitmaps, varint sizes) and
// dispatch.cc (the chosen instruction set and its cap). lanes-inl.hpp holds what they share.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sparselink::simd {

// Output buffers of the kernels marked "slack" may be written up to this many elements past
// the returned count (whole vectors are stored).
inline constexpr size_t kSlack = 64;

// keys[i] = bits(|a[i]| * w[i]) & 0x7FFFFFFF (w == nullptr: bits(|a[i]|) & 0x7FFFFFFF); a
// non-finite a[i] gives key 0. The product is one IEEE float multiply (it may overflow to +inf,
// which is then the largest key). w must be finite and >= 0. Returns whether every a[i] was
// finite.
bool MagnitudeKeys(const float* a, const float* w, size_t n, uint32_t* keys);

// Number of keys[i] > t.
size_t CountAbove(const uint32_t* keys, size_t n, uint32_t t);

// The largest keys[i] < limit to *out; false (and *out untouched) when there is none.
bool MaxBelow(const uint32_t* keys, size_t n, uint32_t limit, uint32_t* out);
// The smallest keys[i] > limit to *out; false (and *out untouched) when there is none.
bool MinAbove(const uint32_t* keys, size_t n, uint32_t limit, uint32_t* out);

// Copies the keys in [lo, hi] to `out` (in order; slack) and returns their number; *above gets
// the number of keys > hi. `out` may equal `keys` (in-place compaction).
size_t FilterRange(const uint32_t* keys, size_t n, uint32_t lo, uint32_t hi, uint32_t* out,
                   size_t* above);

// For each of the s sample keys, the number of sample keys strictly greater (s^2 / lanes work).
void SampleRanks(const uint32_t* sample, size_t s, uint32_t* greater);

// The rank-th largest (1-based) of the s sample keys, given each one's count of strictly
// greater sample keys (SampleRanks): the least key with fewer than rank keys above it.
uint32_t OrderStatistic(const uint32_t* sample, const uint32_t* greater, size_t s, size_t rank);

// The number of set bits in bytes[0, n).
uint64_t CountSetBits(const uint8_t* bytes, size_t n);

// The number of bytes[i] == value in bytes[0, n).
uint64_t CountByte(const uint8_t* bytes, size_t n, uint8_t value);

// For ascending ids[0, n): the bytes the LEB128 forms of the gaps ids[i] - ids[i-1] - 1
// (i >= 1) take beyond one byte each. Wrapping arithmetic on unsorted input, never UB.
uint64_t GapVarintExtraBytes(const uint32_t* ids, size_t n);

// acc[i] += |x[i]| (column sums of a matrix, one row per call).
void AddAbs(const float* x, size_t n, float* acc);
// acc[i] += m(a[i]) * m(b[i]), or m(a[i]) when b is null, where m(x) = |x| for finite x and 0
// for NaN and +-inf (the sensitivity map's magnitude).
void AddMagnitudes(const float* a, const float* b, size_t n, float* acc);
// acc[ids[i]] += |a[i]| * (|g[i]| - s[ids[i]]) * scale for i < n, or (|g[i]| - s[ids[i]]) * scale
// when a is null, in that order of operations (the scalar loop's result, bit for bit); ids[0, n)
// must be distinct (one row of a mask).
void AddKeptCorrection(const uint32_t* ids, const float* a, const float* g, const float* s,
                       size_t n, float scale, float* acc);

// The largest of bytes[0, n) (0 for n = 0).
uint8_t MaxByte(const uint8_t* bytes, size_t n);

// Whether ids[0, n) is strictly ascending with every id < limit (true for n = 0).
bool AscendingBelow(const uint32_t* ids, size_t n, uint32_t limit);

// Whether every a[i] is finite.
bool AllFinite(const float* a, size_t n);

// The smallest e such that [0, e) holds q keys equal to t (requires that many to exist).
size_t TieEnd(const uint32_t* keys, size_t n, uint32_t t, size_t q);

// In column order, every i with keys[i] > t, or keys[i] == t and i < tie_end: writes i to ids
// and a[i] (0 where not finite) to values (both slack). Returns the count. When `bits` is not
// null it also gets the taken set as the wire format's bitmap: ceil(n / 8) bytes, bit i % 8 of
// byte i / 8 for column i, zero past n; no byte after them is touched.
size_t EmitKept(const uint32_t* keys, const float* a, size_t n, uint32_t t, size_t tie_end,
                uint32_t* ids, float* values, uint8_t* bits = nullptr);

// The one streaming pass of the router's one-pass rows: computes each entry's key as
// MagnitudeKeys does and, in column order, writes every i with key >= t to ids and a[i] to
// values (both slack), *count of them; `bits` (when not null) gets the taken set as EmitKept
// writes it. Returns whether every a[i] was finite; when not, the outputs are unspecified (the
// hot loop does not mask non-finite values) and the caller routes the row another way.
bool ThresholdEmit(const float* a, const float* w, size_t n, uint32_t t, uint32_t* ids,
                   float* values, uint8_t* bits, size_t* count);

// keys[i] = the key of values[i] at column ids[i], as MagnitudeKeys computes it (w == nullptr:
// bits(|values[i]|) & 0x7FFFFFFF; else bits(|values[i]| * w[ids[i]]) & 0x7FFFFFFF). The values
// are finite (ThresholdEmit's output, when it returned true), so this is the key the entry was
// taken with. Returns the
// number of them >= at (a search's first count, in the same pass).
size_t CandidateKeys(const uint32_t* ids, const float* values, size_t m, const float* w,
                     uint32_t* keys, uint32_t at);

// Copies, in order, the entries i < m with keys[i] > t, or keys[i] == t and i < tie_end (the
// cut EmitKept applies, here to a candidate list), to out_ids and out_values (slack; they must
// not overlap ids and values) and returns their number; with compact_keys their keys are also
// moved to the front of `keys` (in place). The ids of the others go to `dropped` (slack),
// *num_dropped of them.
size_t KeepCut(uint32_t* keys, const uint32_t* ids, const float* values, size_t m, uint32_t t,
               size_t tie_end, bool compact_keys, uint32_t* out_ids, float* out_values,
               uint32_t* dropped, size_t* num_dropped);

// Value codecs (wire format v1, docs/wire-format.md): bit-identical to the scalar encoders.
// The uint16_t streams may sit at any byte offset (they are packet sections).
void FloatToHalf(const float* in, size_t n, uint16_t* out);
void FloatToBf16(const float* in, size_t n, uint16_t* out);
// Largest |in[i]| over the finite entries (0 for none).
float MaxAbsFinite(const float* in, size_t n);
// q = round(in / scale) half away from zero, computed in double, clamped to [-127, 127];
// scale 0 or a non-finite input gives 0.
void QuantizeInt8(const float* in, size_t n, float scale, int8_t* out);

// Decoders: return false when an input is invalid (a non-finite half or bf16, an int8 -128);
// the caller then finds and names it with the scalar path.
bool HalfToFloat(const uint16_t* in, size_t n, float* out);
bool Bf16ToFloat(const uint16_t* in, size_t n, float* out);
bool Int8ToFloat(const int8_t* in, size_t n, float scale, float* out);

// The wire format's bitmap (rows x cols bits, LSB first, rows continuous, `num_bytes` bytes) to
// columns: offsets[r] = first entry of row r (rows + 1 of them), out = each row's set columns
// ascending. `out` needs capacity + kSlack entries (whole vectors are written). Returns false, with
// *count = the entries up to the vector or word that passed it, when more than `capacity` bits are
// set; else true with *count = the set bits.
bool BitmapToColumns(const uint8_t* bytes, size_t num_bytes, uint64_t rows, uint64_t cols,
                     uint32_t* offsets, uint32_t* out, uint64_t capacity, uint64_t* count);

// Set bits per row of the same bitmap: counts[r] for r < rows.
void RowBitCounts(const uint8_t* bytes, size_t num_bytes, uint64_t rows, uint64_t cols,
                  uint32_t* counts);

// Dense from the same bitmap: row r of `out` (rows x cols, row stride `stride` floats) gets
// zeros, then the next value of `values` at each set column, in order. `values` must hold as
// many values as there are set bits (the caller counted them), plus kSlack readable after them
// (whole vectors are read).
void ScatterBits(const uint8_t* bytes, size_t num_bytes, uint64_t rows, uint64_t cols,
                 const float* values, float* out, size_t stride);
// One row of the same from int8 values: out[c] = float(q[j]) * scale at the j-th set bit c of
// the row's (cols + 7) / 8 bytes at `bits`, 0 elsewhere; exactly Int8ToFloat then ScatterBits.
// q holds `count` values (the row's set bits), none of them -128 (the caller checked), and is
// read no further.
void ScatterInt8Row(const uint8_t* bits, size_t cols, const int8_t* q, size_t count, float scale,
                    float* out);

// The inverse of ScatterBits: the values of row r of `dense` (rows x cols, row stride `stride`
// floats) at the set bits of row r of the same bitmap, in order, row after row, to `out`;
// returns how many. `out` needs room for them plus kSlack (whole vectors are written). One
// vector compress per vector of columns.
uint64_t GatherBits(const uint8_t* bytes, size_t num_bytes, uint64_t rows, uint64_t cols,
                    const float* dense, size_t stride, float* out);

// Subset bitmap rows (index codec 3, docs/wire-format.md). `mask` is the column mask as
// ceil(cols / 64) little-endian words, zero past cols; a row's full bitmap `row_bits` has
// column c at bit c, ceil(cols / 8) bytes.
// Packs the row's bits at the masked columns, in column order, into `out` from bit *pos on,
// OR-ed in (`out` zeroed up to 8 bytes past the last bit written), and advances *pos by the
// mask's set bits. Bits of row_bits past cols are ignored. BMI2 pext on AVX2 and AVX3.
void PackMaskedRow(const uint8_t* row_bits, size_t cols, const uint64_t* mask, uint8_t* out,
                   uint64_t* pos);
// The inverse: reads the mask's set-bit count of bits from `in` (num_bytes long; zero past
// it) at *pos, writes the row's full bitmap (bits past cols zero) to row_bits, advances *pos
// and returns the row's set bits.
uint64_t UnpackMaskedRow(const uint8_t* in, size_t num_bytes, uint64_t* pos, size_t cols,
                         const uint64_t* mask, uint8_t* row_bits);

// The name of the instruction set the dispatcher chose (for bench reports), e.g. "AVX3".
const char* TargetName();

// Caps the instruction sets the dispatcher may choose, for the whole process: "best" (no cap),
// "avx2" (no AVX-512), "sse4" (no AVX). Lets a machine with AVX-512 show what one without
// gets (`sparselink bench --simd`, `train --simd`). A later call replaces the cap ("best" lifts
// it). Returns false for another name, or when the capped set is not built or not run by this CPU
// (then no cap is left in place). Not thread-safe: call it before kernels run on other threads. A
// direct call of Highway's hwy::SupportedTargets() afterwards undoes the cap (Highway 1.0.3).
bool CapTargets(const char* name);

}  // namespace sparselink::simd
