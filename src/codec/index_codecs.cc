// Index codecs of wire format v1: where the kept entries are.
//
// Bitmap. Bit b of the stream is bit (b % 8) of byte b / 8; row r's column c is bit
// r * cols + c, so rows run on without byte alignment. The encoder zero-fills and sets one bit
// per kept column. The decoder reads the stream as little-endian 64-bit words, row by row:
// each word is masked to the row's bit range and each set bit becomes a column (count
// trailing zeros, clear the lowest bit); bits past index_rows * cols must be zero.
//
// Subset bitmap. The column mask (the union of the rows' sets), then each row's bits at the
// masked columns only: rows that keep columns from a common subset (a sensitivity map's picks,
// with many columns no row keeps) cost A bits each instead of cols. The encoder ORs the rows
// into the mask and packs each row's mask bits (simd::PackMaskedRow, pext where there is BMI2);
// the decoder deposits them back into a full row bitmap (simd::UnpackMaskedRow) and goes on
// as for the bitmap.
//
// Delta-varint. Per index row: count, first column, then gaps col - prev - 1 (so consecutive
// columns cost one zero byte each). Each number is LEB128: 7 bits per byte, least significant
// group first, bit 7 set on every byte but the last. The decoder accepts only the minimal form
// (no final 0x00 group after the first byte), at most 5 bytes, and values that fit in 32 bits;
// every column is checked < cols as it is rebuilt in 64-bit arithmetic, so a gap cannot wrap.
#include "codec/index_codecs.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <mutex>
#include <sstream>
#include <string>

#include "core/parallel.hpp"
#include "simd/kernels.hpp"

namespace sparselink::internal {
namespace {

Status IndexError(std::string_view field, uint64_t value, std::string_view why) {
  return FieldError(ErrorCode::kCorruptPacket, field, value, why);
}

std::string RowField(std::string_view what, uint64_t row) {
  std::ostringstream out;
  out << "index row " << row << " " << what;
  return out.str();
}

// Writes v's LEB128 form at `out` and returns the byte after it.
uint8_t* PutVarint(uint32_t v, uint8_t* out) {
  while (v >= 0x80) {
    *out++ = static_cast<uint8_t>(v | 0x80);
    v >>= 7;
  }
  *out++ = static_cast<uint8_t>(v);
  return out;
}

// The fields a varint can be, named in errors only.
enum class VarintField { kCount, kFirstColumn, kGap };

std::string_view VarintFieldName(VarintField f) {
  switch (f) {
    case VarintField::kCount: return "count";
    case VarintField::kFirstColumn: return "first column";
    case VarintField::kGap: return "gap";
  }
  return "?";
}

// Reads one varint at bytes[*pos], advancing *pos. `field` and `row` name it in an error; the
// name is built only when there is one.
Status GetVarint(std::span<const uint8_t> bytes, size_t* pos, VarintField field, uint32_t row,
                 uint32_t* value) {
  const auto what = [&] { return RowField(VarintFieldName(field), row); };
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

// Gaps below 2^7 are one byte, the common case from 1 % kept on; the vector kernel counts
// the bytes beyond one.
uint64_t DeltaVarintBytes(std::span<const uint32_t> row_offsets,
                          std::span<const uint32_t> indices) {
  uint64_t bytes = 0;
  for (size_t r = 0; r + 1 < row_offsets.size(); ++r) {
    const uint32_t begin = row_offsets[r];
    const uint32_t end = row_offsets[r + 1];
    bytes += VarintBytes(end - begin);
    if (begin == end) continue;
    bytes += uint64_t{VarintBytes(indices[begin])} + (end - begin - 1) +
             simd::GapVarintExtraBytes(indices.data() + begin, end - begin);
  }
  return bytes;
}

void AppendDeltaVarint(std::span<const uint32_t> row_offsets, std::span<const uint32_t> indices,
                       std::vector<uint8_t>* out) {
  const size_t start = out->size();
  out->resize(start + DeltaVarintBytes(row_offsets, indices));
  uint8_t* p = out->data() + start;
  for (size_t r = 0; r + 1 < row_offsets.size(); ++r) {
    const uint32_t begin = row_offsets[r];
    const uint32_t end = row_offsets[r + 1];
    p = PutVarint(end - begin, p);
    if (begin == end) continue;
    p = PutVarint(indices[begin], p);
    for (uint32_t i = begin + 1; i < end; ++i) {
      const uint32_t gap = indices[i] - indices[i - 1] - 1;
      if (gap < 0x80) {
        *p++ = static_cast<uint8_t>(gap);
      } else {
        p = PutVarint(gap, p);
      }
    }
  }
  SPARSELINK_DCHECK(p == out->data() + out->size());
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
  // Rows fill `indices` up to `kept`, which never passes expected_kept (checked per row).
  row_offsets->resize(static_cast<size_t>(index_rows) + 1);
  indices->resize(expected_kept);
  uint32_t* out = indices->data();
  uint64_t kept = 0;
  size_t pos = 0;
  (*row_offsets)[0] = 0;
  for (uint32_t r = 0; r < index_rows; ++r) {
    uint32_t count = 0;
    SPARSELINK_RETURN_IF_ERROR(GetVarint(bytes, &pos, VarintField::kCount, r, &count));
    if (count > cols)
      return IndexError(RowField("count", r), count, "exceeds cols = " + std::to_string(cols));
    if (kept + count > expected_kept) {
      return IndexError(
          RowField("count", r), count,
          "brings the total past the header's " + std::to_string(expected_kept) + " kept");
    }
    if (count > 0) {
      uint32_t first = 0;
      SPARSELINK_RETURN_IF_ERROR(GetVarint(bytes, &pos, VarintField::kFirstColumn, r, &first));
      uint64_t col = first;
      uint32_t* row_out = out + kept;
      if (col < cols) row_out[0] = static_cast<uint32_t>(col);
      for (uint32_t j = 1; j < count && col < cols; ++j) {
        // One-byte gaps (< 2^7) are the common case; a continuation byte, or the end of the
        // stream, takes the checked path.
        uint32_t gap = 0;
        if (pos < bytes.size() && bytes[pos] < 0x80) {
          gap = bytes[pos++];
        } else {
          SPARSELINK_RETURN_IF_ERROR(GetVarint(bytes, &pos, VarintField::kGap, r, &gap));
        }
        col += uint64_t{1} + gap;
        if (col < cols) row_out[j] = static_cast<uint32_t>(col);
      }
      // Columns only grow, so the last one (or the first to pass) is the one to check.
      if (col >= cols) {
        return IndexError(RowField("column", r), col, "must be < cols = " + std::to_string(cols));
      }
      kept += count;
    }
    (*row_offsets)[r + 1] = static_cast<uint32_t>(kept);
  }
  indices->resize(kept);
  if (indices->size() != expected_kept) {
    return IndexError("delta-varint kept total", indices->size(),
                      "header says " + std::to_string(expected_kept) + " kept");
  }
  if (pos != bytes.size()) {
    return IndexError("delta-varint trailing bytes", bytes.size() - pos, "must be 0");
  }
  return Status::Ok();
}

uint64_t SubsetBitmapBytes(uint64_t index_rows, uint64_t cols, uint64_t active) {
  return (cols + 7) / 8 + (index_rows * active + 7) / 8;
}

namespace {
uint64_t Words(uint64_t cols) { return (cols + 63) / 64; }

// Up to 8 bytes from p (`available` of them), little-endian; missing bytes read as 0.
uint64_t LoadLittle64(const uint8_t* p, size_t available) {
  uint64_t x = 0;
  if (available >= 8) {
    std::memcpy(&x, p, 8);
  } else {
    for (size_t i = 0; i < available; ++i) x |= uint64_t{p[i]} << (8 * i);
  }
  return x;
}

// n (1..64) bits of `bytes` from bit `at`, LSB first; bits past the end read as 0.
uint64_t ReadBits(std::span<const uint8_t> bytes, uint64_t at, unsigned n) {
  uint64_t x = 0;
  const uint64_t first = at / 8;
  const unsigned shift = at % 8;
  if (first + 9 <= bytes.size()) {  // away from the end: one load and the ninth byte's bits
    x = LoadLittle64(bytes.data() + first, 8) >> shift;
    if (shift != 0) x |= uint64_t{bytes[first + 8]} << (64 - shift);
    return n == 64 ? x : x & ((uint64_t{1} << n) - 1);
  }
  // A ninth byte only when the bits start inside the first one (its shift stays below 64).
  const uint64_t last = shift == 0 ? 8 : 9;
  for (uint64_t i = 0; i < last && first + i < bytes.size(); ++i) {
    const uint64_t byte = bytes[first + i];
    x |= i == 0 ? byte >> shift : byte << (8 * i - shift);
  }
  return n == 64 ? x : x & ((uint64_t{1} << n) - 1);
}

}  // namespace

uint64_t ColumnMask(std::span<const uint32_t> row_offsets, std::span<const uint32_t> indices,
                    uint32_t cols, std::span<const uint8_t> bitmap, std::vector<uint64_t>* mask) {
  mask->assign(Words(cols), 0);
  uint64_t* m = mask->data();
  const uint64_t index_rows = row_offsets.size() - 1;
  if (!bitmap.empty()) {
    const size_t row_bytes = cols / 8;
    for (uint64_t r = 0; r < index_rows; ++r) {
      const uint8_t* row = bitmap.data() + r * row_bytes;
      for (size_t w = 0; w < mask->size(); ++w)
        m[w] |= LoadLittle64(row + 8 * w, std::min<size_t>(8, row_bytes - 8 * w));
    }
  } else {
    for (uint32_t c : indices.first(row_offsets.back())) m[c / 64] |= uint64_t{1} << (c % 64);
  }
  uint64_t active = 0;
  for (uint64_t w : *mask) active += static_cast<uint64_t>(std::popcount(w));
  return active;
}

void AppendSubsetBitmap(std::span<const uint32_t> row_offsets, std::span<const uint32_t> indices,
                        uint32_t cols, std::span<const uint8_t> bitmap,
                        std::span<const uint64_t> mask, std::vector<uint8_t>* out, bool parallel) {
  uint64_t active = 0;
  for (uint64_t w : mask) active += static_cast<uint64_t>(std::popcount(w));
  const size_t start = out->size();
  const uint64_t total = SubsetBitmapBytes(row_offsets.size() - 1, cols, active);
  out->resize(start + total + 8);  // the 8 bytes WriteSubsetBitmap may touch, cut off below
  WriteSubsetBitmap(row_offsets, indices, cols, bitmap, mask, out->data() + start, parallel);
  out->resize(start + total);
}

void WriteSubsetBitmap(std::span<const uint32_t> row_offsets, std::span<const uint32_t> indices,
                       uint32_t cols, std::span<const uint8_t> bitmap,
                       std::span<const uint64_t> mask, uint8_t* p, bool parallel) {
  const uint64_t index_rows = row_offsets.size() - 1;
  uint64_t active = 0;
  for (uint64_t w : mask) active += static_cast<uint64_t>(std::popcount(w));
  const size_t mask_bytes = (cols + 7) / 8;
  const uint64_t total = SubsetBitmapBytes(index_rows, cols, active);
  for (size_t i = 0; i < mask_bytes; ++i) p[i] = static_cast<uint8_t>(mask[i / 8] >> (8 * (i % 8)));
  uint8_t* stream = p + mask_bytes;
  uint64_t pos = 0;
  if (!bitmap.empty() && parallel) {
    // Each thread packs its rows into a zeroed buffer of its own (PackMaskedRow ORs whole words,
    // which may reach past a range) and copies the bytes in: a range of 8k rows is 8k * active
    // bits, whole bytes, so the ranges' bytes do not overlap.
    internal::ForRowRanges(index_rows, true, [&](size_t first, size_t end) {
      thread_local std::vector<uint8_t> packed;
      const uint64_t bits = (end - first) * active;
      packed.assign((bits + 7) / 8 + 8, 0);
      uint64_t at = 0;
      for (size_t r = first; r < end; ++r) {
        simd::PackMaskedRow(bitmap.data() + r * (cols / 8), cols, mask.data(), packed.data(), &at);
      }
      std::memcpy(stream + first * active / 8, packed.data(), (bits + 7) / 8);
    });
    pos = index_rows * active;
  } else if (!bitmap.empty()) {
    std::memset(stream, 0, total - mask_bytes);  // PackMaskedRow ORs its bits in
    for (uint64_t r = 0; r < index_rows; ++r)
      simd::PackMaskedRow(bitmap.data() + r * (cols / 8), cols, mask.data(), stream, &pos);
  } else {
    // Each row's bitmap rebuilt from its set, in a buffer that stays in L1.
    std::memset(stream, 0, total - mask_bytes);
    thread_local std::vector<uint8_t> row;
    row.assign(mask_bytes, 0);
    for (uint64_t r = 0; r < index_rows; ++r) {
      const auto set = indices.subspan(row_offsets[r], row_offsets[r + 1] - row_offsets[r]);
      for (uint32_t c : set) row[c / 8] = static_cast<uint8_t>(row[c / 8] | (1u << (c % 8)));
      simd::PackMaskedRow(row.data(), cols, mask.data(), stream, &pos);
      for (uint32_t c : set) row[c / 8] = 0;
    }
  }
  SPARSELINK_DCHECK(pos == index_rows * active);
}

Status SubsetBitmapReader::Start(std::span<const uint8_t> bytes, uint32_t index_rows, uint32_t cols,
                                 bool parallel, uint32_t* counts) {
  const size_t mask_bytes = (uint64_t{cols} + 7) / 8;
  if (bytes.size() < mask_bytes) {
    return IndexError("subset bitmap bytes", bytes.size(),
                      "shorter than the column mask's " + std::to_string(mask_bytes));
  }
  bytes_ = bytes;
  cols_ = cols;
  mask_.assign(Words(cols), 0);
  for (size_t w = 0; w < mask_.size(); ++w)
    mask_[w] = LoadLittle64(bytes.data() + 8 * w, std::min<size_t>(8, mask_bytes - 8 * w));
  if (cols % 64 != 0 && (mask_.back() >> (cols % 64)) != 0) {
    return IndexError("subset bitmap column mask padding bits", mask_.back() >> (cols % 64),
                      "must be 0");
  }
  active_ = 0;
  for (uint64_t w : mask_) active_ += static_cast<uint64_t>(std::popcount(w));
  const uint64_t want = SubsetBitmapBytes(index_rows, cols, active_);
  if (bytes.size() != want) {
    return IndexError("subset bitmap bytes", bytes.size(),
                      "expected " + std::to_string(want) + " for " + std::to_string(index_rows) +
                          " rows of " + std::to_string(active_) + " masked columns of " +
                          std::to_string(cols));
  }
  stream_begin_ = 8 * mask_bytes;
  pos_ = stream_begin_;
  row_.assign(8 * mask_.size(), 0);
  // Every check before any row is read, so that a decoder writing rows as it reads them never
  // writes for a packet it then refuses: the padding, and the rows' union (the OR of their
  // packed A bits must be all ones).
  const uint64_t end = stream_begin_ + uint64_t{index_rows} * active_;
  if (end % 8 != 0 && (bytes.back() >> (end % 8)) != 0) {
    return IndexError("subset bitmap padding bits", bytes.back() >> (end % 8), "must be 0");
  }
  // The union over row ranges on the threads, each into words of its own, OR-ed after.
  const size_t words = (active_ + 63) / 64;
  union_.assign(words, 0);
  std::mutex merge;
  internal::ForRowRanges(index_rows, parallel, [&](size_t first, size_t stop) {
    thread_local std::vector<uint64_t> part;
    part.assign(words, 0);
    for (uint64_t r = first; r < stop; ++r) {
      const uint64_t row = stream_begin_ + r * active_;
      uint32_t set = 0;
      for (uint64_t i = 0; i < active_; i += 64) {
        const uint64_t bits =
            ReadBits(bytes, row + i, static_cast<unsigned>(std::min<uint64_t>(64, active_ - i)));
        part[i / 64] |= bits;
        set += static_cast<uint32_t>(std::popcount(bits));
      }
      if (counts != nullptr) counts[r] = set;
    }
    const std::lock_guard<std::mutex> lock(merge);
    for (size_t w = 0; w < words; ++w) union_[w] |= part[w];
  });
  for (uint64_t i = 0; i < active_; i += 64) {
    const auto n = static_cast<unsigned>(std::min<uint64_t>(64, active_ - i));
    const uint64_t all = n == 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1;
    if (union_[i / 64] != all) {
      // The masked column of the first packed position no row sets.
      uint64_t rank = i + static_cast<uint64_t>(std::countr_zero(~union_[i / 64]));
      uint64_t column = 0;
      for (size_t w = 0; w < mask_.size(); ++w) {
        const auto in_word = static_cast<uint64_t>(std::popcount(mask_[w]));
        if (rank < in_word) {
          uint64_t m = mask_[w];
          for (uint64_t k = 0; k < rank; ++k) m &= m - 1;
          column = w * 64 + static_cast<uint64_t>(std::countr_zero(m));
          break;
        }
        rank -= in_word;
      }
      return IndexError("subset bitmap masked column", column,
                        "is kept by no row (the mask must be the rows' union)");
    }
  }
  return Status::Ok();
}

const uint8_t* SubsetBitmapReader::NextRow(uint64_t* set_bits) {
  *set_bits =
      simd::UnpackMaskedRow(bytes_.data(), bytes_.size(), &pos_, cols_, mask_.data(), row_.data());
  return row_.data();
}

uint64_t SubsetBitmapReader::UnpackRow(uint64_t r, uint8_t* row_bits) const {
  uint64_t pos = stream_begin_ + r * active_;
  return simd::UnpackMaskedRow(bytes_.data(), bytes_.size(), &pos, cols_, mask_.data(), row_bits);
}

Status DecodeSubsetBitmap(std::span<const uint8_t> bytes, uint32_t index_rows, uint32_t cols,
                          uint64_t expected_kept, std::vector<uint32_t>* row_offsets,
                          std::vector<uint32_t>* indices) {
  thread_local SubsetBitmapReader reader;
  SPARSELINK_RETURN_IF_ERROR(reader.Start(bytes, index_rows, cols));
  if (expected_kept > uint64_t{index_rows} * reader.active()) {
    return IndexError("kept count", expected_kept, "exceeds the subset bitmap's bits");
  }
  row_offsets->resize(static_cast<size_t>(index_rows) + 1);
  indices->resize(expected_kept + simd::kSlack);
  uint64_t pos = 0;
  (*row_offsets)[0] = 0;
  for (uint32_t r = 0; r < index_rows; ++r) {
    uint64_t set = 0;
    const uint8_t* row = reader.NextRow(&set);
    if (set > expected_kept - pos) {
      indices->resize(expected_kept);
      return IndexError("subset bitmap set bits", pos + set, "more than the header's kept count");
    }
    uint32_t offsets[2];
    uint64_t count = 0;
    simd::BitmapToColumns(row, (uint64_t{cols} + 7) / 8, 1, cols, offsets, indices->data() + pos,
                          set, &count);
    pos += count;
    (*row_offsets)[r + 1] = static_cast<uint32_t>(pos);
  }
  indices->resize(pos);
  if (pos != expected_kept) {
    return IndexError("subset bitmap set bits", pos,
                      "header says " + std::to_string(expected_kept) + " kept");
  }
  return Status::Ok();
}

}  // namespace sparselink::internal
