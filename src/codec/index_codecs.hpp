// Private to the codec module: the index codecs of wire format v1 (docs/wire-format.md).
//
// All describe `index_rows` sets of kept columns, each ascending and < cols. For element
// granularity index_rows = rows (one set per row); for unit granularity index_rows = 1 (the
// shared set). Sets come in the RoutedTensor form: row_offsets (index_rows + 1 entries,
// starting at 0) and indices.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "sparselink/status.hpp"

namespace sparselink::internal {

// Bitmap: index_rows * cols bits, row-major and continuous (row r's column c is bit
// r * cols + c), LSB first in each byte; padding bits of the last byte are zero.
uint64_t BitmapBytes(uint64_t index_rows, uint64_t cols);
// Appends BitmapBytes(...) bytes. The sets must be valid (ascending, < cols). O(bytes + kept).
void AppendBitmap(std::span<const uint32_t> row_offsets, std::span<const uint32_t> indices,
                  uint32_t cols, std::vector<uint8_t>* out);
// The bitmap's byte count for index_rows x cols bits, and its padding bits zero.
Status CheckBitmapShape(std::span<const uint8_t> bytes, uint32_t index_rows, uint32_t cols);
// Decodes into row_offsets/indices (replacing them). Refuses a wrong size, non-zero padding
// bits and a total other than `expected_kept`. Allocates at most index_rows + 1 + expected_kept
// words, after the size check (so at most 8 entries per byte of input). O(bytes + kept).
Status DecodeBitmap(std::span<const uint8_t> bytes, uint32_t index_rows, uint32_t cols,
                    uint64_t expected_kept, std::vector<uint32_t>* row_offsets,
                    std::vector<uint32_t>* indices);

// Delta-varint: per index row, LEB128 count, then (count > 0) the first column, then each
// following column as the gap col - prev - 1; all LEB128 (7 bits per byte, low group first,
// high bit = more follows), minimal length, at most 5 bytes for a u32.
// Exact encoded size, without encoding. O(kept).
uint64_t DeltaVarintBytes(std::span<const uint32_t> row_offsets, std::span<const uint32_t> indices);
void AppendDeltaVarint(std::span<const uint32_t> row_offsets, std::span<const uint32_t> indices,
                       std::vector<uint8_t>* out);
// Refuses an over-long, overflowing or truncated varint, a count > cols, a column >= cols,
// a total other than `expected_kept` and trailing bytes. Allocates after checking
// expected_kept <= bytes.size() (each kept column takes at least one byte). O(bytes). On error
// the outputs hold no meaning.
Status DecodeDeltaVarint(std::span<const uint8_t> bytes, uint32_t index_rows, uint32_t cols,
                         uint64_t expected_kept, std::vector<uint32_t>* row_offsets,
                         std::vector<uint32_t>* indices);

// Subset bitmap: the column mask, ceil(cols / 8) bytes (bit c set when some index row keeps
// column c), then index_rows * A bits, A = the mask's set bits, continuous across rows: row r's
// i-th masked column is bit r * A + i. Padding bits zero; every masked column kept by some row.
uint64_t SubsetBitmapBytes(uint64_t index_rows, uint64_t cols, uint64_t active);
// The column mask of the sets, as ceil(cols / 64) words (bits past cols zero); returns its set
// bits. With `bitmap` non-empty (the router's: rows of cols bits, each starting on a byte, so
// cols % 8 == 0) it is read from there, O(index_rows * cols / 64); else from the sets, O(kept).
uint64_t ColumnMask(std::span<const uint32_t> row_offsets, std::span<const uint32_t> indices,
                    uint32_t cols, std::span<const uint8_t> bitmap, std::vector<uint64_t>* mask);
// Appends the section, `mask` from ColumnMask on the same sets (and bitmap, if any). With
// `parallel` and a bitmap, rows are packed on the OpenMP threads (the same bytes).
void AppendSubsetBitmap(std::span<const uint32_t> row_offsets, std::span<const uint32_t> indices,
                        uint32_t cols, std::span<const uint8_t> bitmap,
                        std::span<const uint64_t> mask, std::vector<uint8_t>* out,
                        bool parallel = false);
// The same section written at `out`, SubsetBitmapBytes(...) bytes whatever they held before;
// it may read and write back unchanged the 8 bytes after them, which must be there.
void WriteSubsetBitmap(std::span<const uint32_t> row_offsets, std::span<const uint32_t> indices,
                       uint32_t cols, std::span<const uint8_t> bitmap,
                       std::span<const uint64_t> mask, uint8_t* out, bool parallel = false);
// Reads a subset-bitmap section row by row. Start checks all of it first (the size against
// index_rows x cols, the padding bits of both parts, every masked column kept by some row), so
// that a caller writing rows as it reads them writes nothing for a refused section; NextRow
// then gives each row's full bitmap (ceil(cols / 8) bytes, valid until the next call) and its
// set bits.
class SubsetBitmapReader {
 public:
  // With `parallel`, Start's check of the rows' union runs on the OpenMP threads. With
  // `counts` (index_rows of them), Start also counts each row's set bits in the same pass (on
  // success; on error they hold nothing meaningful).
  Status Start(std::span<const uint8_t> bytes, uint32_t index_rows, uint32_t cols,
               bool parallel = false, uint32_t* counts = nullptr);
  const uint8_t* NextRow(uint64_t* set_bits);
  // Row r's full bitmap into row_bits (row_buffer_bytes() of room), its set bits returned. Const:
  // threads may unpack rows of one reader at once, each into a buffer of its own.
  uint64_t UnpackRow(uint64_t r, uint8_t* row_bits) const;
  size_t row_buffer_bytes() const { return row_.size(); }
  uint64_t active() const { return active_; }

 private:
  std::span<const uint8_t> bytes_;
  uint32_t cols_ = 0;
  uint64_t active_ = 0;
  uint64_t stream_begin_ = 0;  // bit offset of row 0 in bytes_
  uint64_t pos_ = 0;
  std::vector<uint64_t> mask_;
  std::vector<uint64_t> union_;  // Start's OR of the packed rows
  std::vector<uint8_t> row_;
};
// Decodes into row_offsets/indices like DecodeBitmap (same checks and bounds: at most
// index_rows * A <= 8 * bytes entries are allocated).
Status DecodeSubsetBitmap(std::span<const uint8_t> bytes, uint32_t index_rows, uint32_t cols,
                          uint64_t expected_kept, std::vector<uint32_t>* row_offsets,
                          std::vector<uint32_t>* indices);

// Bytes of the LEB128 form of v (1..5).
inline uint32_t VarintBytes(uint32_t v) {
  uint32_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

}  // namespace sparselink::internal
