// Index codecs of wire format v1: where the kept entries are.
//
// Bitmap. Bit b of the stream is bit (b % 8) of byte b / 8; row r's column c is bit
// r * cols + c, so rows run on without byte alignment. The encoder zero-fills and sets one bit
// per kept column. The decoder reads the stream as little-endian 64-bit words, row by row:
// each word is masked to the row's bit range and each set bit becomes a column (count
// trailing zeros, clear the lowest bit); bits past index_rows * cols must be zero.
//
// Delta-varint. Per index row: count, first column, then gaps col - prev - 1 (so consecutive
// columns cost one zero byte each). Each number is LEB128: 7 bits per byte, least significant
// group first, bit 7 set on every byte but the last. The decoder accepts only the minimal form
// (no final 0x00 group after the first byte), at most 5 bytes, and values that fit in 32 bits;
// every column is checked < cols as it is rebuilt in 64-bit arithmetic, so a gap cannot wrap.
#include "codec/index_codecs.hpp"

#include <bit>
#include <cstring>
#include <sstream>
#include <string>

#include "simd/kernels.hpp"

namespace sparselink::codec_internal {
namespace {

Status IndexError(std::string_view field, uint64_t value, std::string_view why) {
  return FieldError(ErrorCode::kCorruptPacket, field, value, why);
}

std::string RowField(std::string_view what, uint64_t row) {
  std::ostringstream out;
  out << "index row " << row << " " << what;
  return out.str();
}

void PutVarint(uint32_t v, std::vector<uint8_t>* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<uint8_t>(v));
}

// Reads one varint at bytes[*pos], advancing *pos. `what` names it in errors.
// `what` and `row` name the field in an error; the name is built only when there is one, since
// this runs once per kept entry.
Status GetVarint(std::span<const uint8_t> bytes, size_t* pos, std::string_view field, uint32_t row,
                 uint32_t* value) {
  const auto what = [&] { return RowField(field, row); };
  uint64_t v = 0;
  for (int i = 0; i < 5; ++i) {
    if (*pos >= bytes.size()) {
      return IndexError(what() + " offset", *pos, "varint runs past the end of the index stream");
    }
    const uint8_t byte = bytes[(*pos)++];
    v |= static_cast<uint64_t>(byte & 0x7F) << (7 * i);
    if ((byte & 0x80) == 0) {
      if (i > 0 && byte == 0)
        return IndexError(what() + " offset", *pos - 1, "varint is not minimal");
      if (v > 0xFFFFFFFFull) return IndexError(what(), v, "varint overflows 32 bits");
      *value = static_cast<uint32_t>(v);
      return Status::Ok();
    }
  }
  return IndexError(what() + " offset", *pos - 5, "varint longer than 5 bytes");
}

}  // namespace

uint64_t BitmapBytes(uint64_t index_rows, uint64_t cols) { return (index_rows * cols + 7) / 8; }

void AppendBitmap(std::span<const uint32_t> row_offsets, std::span<const uint32_t> indices,
                  uint32_t cols, std::vector<uint8_t>* out) {
  const uint64_t index_rows = row_offsets.size() - 1;
  const size_t start = out->size();
  out->resize(start + BitmapBytes(index_rows, cols), 0);
  uint8_t* bits = out->data() + start;
  for (uint64_t r = 0; r < index_rows; ++r) {
    for (uint32_t i = row_offsets[r]; i < row_offsets[r + 1]; ++i) {
      const uint64_t bit = r * cols + indices[i];
      bits[bit / 8] = static_cast<uint8_t>(bits[bit / 8] | (1u << (bit % 8)));
    }
  }
}

Status CheckBitmapShape(std::span<const uint8_t> bytes, uint32_t index_rows, uint32_t cols) {
  const uint64_t total_bits = static_cast<uint64_t>(index_rows) * cols;
  if (bytes.size() != BitmapBytes(index_rows, cols)) {
    return IndexError("bitmap bytes", bytes.size(),
                      "expected " + std::to_string(BitmapBytes(index_rows, cols)) + " for " +
                          std::to_string(index_rows) + " x " + std::to_string(cols) + " bits");
  }
  if (total_bits % 8 != 0 && (bytes.back() >> (total_bits % 8)) != 0) {
    return IndexError("bitmap padding bits", bytes.back() >> (total_bits % 8), "must be 0");
  }
  return Status::Ok();
}

Status DecodeBitmap(std::span<const uint8_t> bytes, uint32_t index_rows, uint32_t cols,
                    uint64_t expected_kept, std::vector<uint32_t>* row_offsets,
                    std::vector<uint32_t>* indices) {
  SPARSELINK_RETURN_IF_ERROR(CheckBitmapShape(bytes, index_rows, cols));
  if (expected_kept > static_cast<uint64_t>(index_rows) * cols)
    return IndexError("kept count", expected_kept, "exceeds the bitmap's bits");
  // Row by row over 64-bit little-endian words: mask the word to the row's bit range, then
  // turn its set bits into columns. The output is sized to expected_kept (plus slack) up
  // front; a word that would pass it is an error before it is stored.
  row_offsets->resize(static_cast<size_t>(index_rows) + 1);
  indices->resize(expected_kept + simd::kSlack);
  uint64_t pos = 0;
  const bool fits =
      simd::BitmapToColumns(bytes.data(), bytes.size(), index_rows, cols, row_offsets->data(),
                            indices->data(), expected_kept, &pos);
  if (!fits) {
    indices->resize(expected_kept);
    return IndexError("bitmap set bits", pos, "more than the header's kept count");
  }
  indices->resize(pos);
  if (pos != expected_kept) {
    return IndexError("bitmap set bits", pos,
                      "header says " + std::to_string(expected_kept) + " kept");
  }
  return Status::Ok();
}

uint64_t DeltaVarintBytes(std::span<const uint32_t> row_offsets,
                          std::span<const uint32_t> indices) {
  uint64_t bytes = 0;
  for (size_t r = 0; r + 1 < row_offsets.size(); ++r) {
    bytes += VarintBytes(row_offsets[r + 1] - row_offsets[r]);
    for (uint32_t i = row_offsets[r]; i < row_offsets[r + 1]; ++i) {
      bytes += VarintBytes(i == row_offsets[r] ? indices[i] : indices[i] - indices[i - 1] - 1);
    }
  }
  return bytes;
}

void AppendDeltaVarint(std::span<const uint32_t> row_offsets, std::span<const uint32_t> indices,
                       std::vector<uint8_t>* out) {
  for (size_t r = 0; r + 1 < row_offsets.size(); ++r) {
    PutVarint(row_offsets[r + 1] - row_offsets[r], out);
    for (uint32_t i = row_offsets[r]; i < row_offsets[r + 1]; ++i) {
      PutVarint(i == row_offsets[r] ? indices[i] : indices[i] - indices[i - 1] - 1, out);
    }
  }
}

Status DecodeDeltaVarint(std::span<const uint8_t> bytes, uint32_t index_rows, uint32_t cols,
                         uint64_t expected_kept, std::vector<uint32_t>* row_offsets,
                         std::vector<uint32_t>* indices) {
  // Every row takes at least one byte and every kept column one more.
  if (static_cast<uint64_t>(index_rows) + expected_kept > bytes.size()) {
    return IndexError("delta-varint bytes", bytes.size(),
                      "too short for " + std::to_string(index_rows) + " rows and " +
                          std::to_string(expected_kept) + " kept columns");
  }
  row_offsets->assign(1, 0);
  row_offsets->reserve(static_cast<size_t>(index_rows) + 1);
  indices->clear();
  indices->reserve(expected_kept);
  size_t pos = 0;
  for (uint32_t r = 0; r < index_rows; ++r) {
    uint32_t count = 0;
    SPARSELINK_RETURN_IF_ERROR(GetVarint(bytes, &pos, "count", r, &count));
    if (count > cols)
      return IndexError(RowField("count", r), count, "exceeds cols = " + std::to_string(cols));
    if (indices->size() + count > expected_kept) {
      return IndexError(
          RowField("count", r), count,
          "brings the total past the header's " + std::to_string(expected_kept) + " kept");
    }
    uint64_t col = 0;
    for (uint32_t j = 0; j < count; ++j) {
      uint32_t delta = 0;
      SPARSELINK_RETURN_IF_ERROR(
          GetVarint(bytes, &pos, j == 0 ? "first column" : "gap", r, &delta));
      col = j == 0 ? delta : col + 1 + delta;
      if (col >= cols) {
        return IndexError(RowField("column", r), col, "must be < cols = " + std::to_string(cols));
      }
      indices->push_back(static_cast<uint32_t>(col));
    }
    row_offsets->push_back(static_cast<uint32_t>(indices->size()));
  }
  if (indices->size() != expected_kept) {
    return IndexError("delta-varint kept total", indices->size(),
                      "header says " + std::to_string(expected_kept) + " kept");
  }
  if (pos != bytes.size()) {
    return IndexError("delta-varint trailing bytes", bytes.size() - pos, "must be 0");
  }
  return Status::Ok();
}

}  // namespace sparselink::codec_internal
