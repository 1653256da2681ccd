#include "sparselink/types.hpp"

#include <cmath>
#include <cstring>
#include <sstream>

#include "simd/kernels.hpp"

namespace sparselink {

// One vector pass checks the whole matrix; only a matrix that fails it is walked again to name
// the first bad entry.
Status ValidateMatrix(ConstMatrix m, std::string_view field, NonFinitePolicy policy) {
  if (m.rows == 0)
    return FieldError(ErrorCode::kInvalidArgument, std::string(field) + ".rows", 0, "must be > 0");
  if (m.cols == 0)
    return FieldError(ErrorCode::kInvalidArgument, std::string(field) + ".cols", 0, "must be > 0");
  if (m.data == nullptr) {
    return Status(ErrorCode::kInvalidArgument,
                  std::string(field) + ".data = null: no values given");
  }
  if (policy == NonFinitePolicy::kReject && !simd::AllFinite(m.data, m.size())) {
    for (size_t r = 0; r < m.rows; ++r) {
      const float* row = m.Row(r);
      for (size_t c = 0; c < m.cols; ++c) {
        if (!std::isfinite(row[c])) {
          std::ostringstream name;
          name << field << "[" << r << "][" << c << "]";
          return FieldError(ErrorCode::kNonFinite, name.str(), row[c],
                            "must be finite (policy: reject)");
        }
      }
    }
  }
  return Status::Ok();
}

std::string_view GranularityName(Granularity g) {
  switch (g) {
    case Granularity::kElement: return "element";
    case Granularity::kUnit: return "unit";
  }
  return "?";
}

Result<ValueCodec> ParseValueCodec(std::string_view name) {
  for (const ValueCodecTraits& t : kValueCodecTraits) {
    if (t.name == name) return t.codec;
  }
  return FieldError(ErrorCode::kInvalidArgument, "codec", name,
                    "unknown value codec (one of fp32, fp16, bf16, int8, int4)");
}

std::string_view RestPolicyName(RestPolicy r) {
  switch (r) {
    case RestPolicy::kDrop: return "drop";
    case RestPolicy::kSign1: return "sign1";
  }
  return "?";
}

std::string_view IndexCodecName(IndexCodec c) {
  switch (c) {
    case IndexCodec::kAuto: return "auto";
    case IndexCodec::kBitmap: return "bitmap";
    case IndexCodec::kDeltaVarint: return "delta-varint";
    case IndexCodec::kSubsetBitmap: return "subset-bitmap";
  }
  return "?";
}

uint64_t ValueStreamBytes(ValueCodec codec, uint64_t count, uint64_t rows) {
  const ValueCodecTraits& t = Traits(codec);
  uint64_t bytes = (count * t.bits_per_value + 7) / 8;
  if (t.per_row_scale) bytes += rows * sizeof(float);
  return bytes;
}

}  // namespace sparselink
