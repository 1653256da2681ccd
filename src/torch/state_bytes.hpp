// The bytes of a run's state inside a checkpoint (sparselink/torch/checkpoint.hpp): a writer
// that appends little-endian fields, and a reader that checks every field against the bytes
// left before it reads or allocates and names the field it could not read. The checkpoint's
// checksum has vouched for the bytes by then, so a failed read means a file written by
// another build or a bug, never a crash. Private to the torch adapter.
#pragma once

#include <bit>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sparselink/status.hpp"

namespace sparselink::torch_adapter::internal {

class StateWriter {
 public:
  void U8(uint8_t v) { out_.push_back(v); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void I64(int64_t v) { Le(static_cast<uint64_t>(v), 8); }
  void F64(double v) { Le(std::bit_cast<uint64_t>(v), 8); }
  // A u64 count, then the items.
  void Bytes(std::span<const uint8_t> bytes) {
    U64(bytes.size());
    out_.insert(out_.end(), bytes.begin(), bytes.end());
  }
  void String(std::string_view text) {
    Bytes({reinterpret_cast<const uint8_t*>(text.data()), text.size()});
  }
  void Floats(std::span<const float> values) {
    U64(values.size());
    for (float v : values) Le(std::bit_cast<uint32_t>(v), 4);
  }

  std::vector<uint8_t> Take() { return std::move(out_); }

 private:
  void Le(uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t> out_;
};

class StateReader {
 public:
  // `what` names the bytes in errors: "<what>.<field>".
  StateReader(std::span<const uint8_t> bytes, std::string what)
      : bytes_(bytes), what_(std::move(what)) {}

  Status U8(std::string_view field, uint8_t* v) { return Uint(field, 1, v); }
  Status U32(std::string_view field, uint32_t* v) { return Uint(field, 4, v); }
  Status U64(std::string_view field, uint64_t* v) { return Uint(field, 8, v); }
  Status I64(std::string_view field, int64_t* v) { return Uint(field, 8, v); }
  Status F64(std::string_view field, double* v) {
    uint64_t bits = 0;
    SPARSELINK_RETURN_IF_ERROR(Uint(field, 8, &bits));
    *v = std::bit_cast<double>(bits);
    return Status::Ok();
  }
  Status Bytes(std::string_view field, std::vector<uint8_t>* out) {
    SPARSELINK_ASSIGN_OR_RETURN(const size_t n, Count(field, 1));
    out->assign(bytes_.begin() + static_cast<std::ptrdiff_t>(pos_),
                bytes_.begin() + static_cast<std::ptrdiff_t>(pos_ + n));
    pos_ += n;
    return Status::Ok();
  }
  Status String(std::string_view field, std::string* out) {
    SPARSELINK_ASSIGN_OR_RETURN(const size_t n, Count(field, 1));
    out->assign(reinterpret_cast<const char*>(bytes_.data() + pos_), n);
    pos_ += n;
    return Status::Ok();
  }
  Status Floats(std::string_view field, std::vector<float>* out) {
    SPARSELINK_ASSIGN_OR_RETURN(const size_t n, Count(field, 4));
    out->resize(n);
    for (float& v : *out) {
      uint32_t bits = 0;
      SPARSELINK_RETURN_IF_ERROR(Uint(field, 4, &bits));
      v = std::bit_cast<float>(bits);
    }
    return Status::Ok();
  }
  // Every byte was read: a longer state is another build's.
  Status Done() const {
    if (left() == 0) return Status::Ok();
    return FieldError(ErrorCode::kCorruptPacket, what_ + ".bytes_left", left(),
                      "expected none after the last field");
  }
  size_t left() const { return bytes_.size() - pos_; }
  const std::string& what() const { return what_; }

 private:
  template <typename T>
  Status Uint(std::string_view field, size_t n, T* v) {
    if (left() < n) return Short(field, n);
    uint64_t x = 0;
    for (size_t i = 0; i < n; ++i) x |= static_cast<uint64_t>(bytes_[pos_ + i]) << (8 * i);
    pos_ += n;
    *v = static_cast<T>(x);
    return Status::Ok();
  }
  // A u64 count of items of `item_bytes` each, checked against the bytes left.
  Result<size_t> Count(std::string_view field, size_t item_bytes) {
    uint64_t n = 0;
    SPARSELINK_RETURN_IF_ERROR(Uint(field, 8, &n));
    if (n > left() / item_bytes) {
      return FieldError(ErrorCode::kCorruptPacket, what_ + "." + std::string(field) + " count", n,
                        "more than the " + std::to_string(left()) + " bytes left hold");
    }
    return static_cast<size_t>(n);
  }
  Status Short(std::string_view field, size_t wanted) const {
    return FieldError(ErrorCode::kCorruptPacket, what_ + "." + std::string(field) + " bytes left",
                      left(), "too few (needs " + std::to_string(wanted) + ")");
  }

  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
  std::string what_;
};

}  // namespace sparselink::torch_adapter::internal
