#include "sparselink/types.hpp"

#include <cmath>
#include <cstring>
#include <sstream>

#include "simd/kernels.hpp"

namespace sparselink {

// One vector pass checks the whole matrix; only a matrix that fails it is walked again to name
// the first bad entry.
Status ValidateMatrix(ConstMatrix m, std::string_view field, OnNonFinite on_non_finite) {
  if (m.rows == 0)
    return FieldError(ErrorCode::kInvalidArgument, std::string(field) + ".rows", 0, "must be > 0");
  if (m.cols == 0)
    return FieldError(ErrorCode::kInvalidArgument, std::string(field) + ".cols", 0, "must be > 0");
  if (m.data == nullptr) {
    return Status(ErrorCode::kInvalidArgument,
                  std::string(field) + ".data = null: no values given");
  }
  if (on_non_finite == OnNonFinite::kReject && !simd::AllFinite(m.data, m.size())) {
    for (size_t r = 0; r < m.rows; ++r) {
      const float* row = m.Row(r);
      for (size_t c = 0; c < m.cols; ++c) {
        if (!std::isfinite(row[c])) {
          std::ostringstream name;
          name << field << "[" << r << "][" << c << "]";
          return FieldError(ErrorCode::kNonFinite, name.str(), row[c],
                            "must be finite (on_non_finite: reject)");
        }
      }
    }
  }
  return Status::Ok();
}

Result<ValueCodec> ParseValueCodec(std::string_view name) {
  if (const ValueCodecTraits* t = FindName(kValueCodecTraits, name)) return t->value;
  return FieldError(ErrorCode::kInvalidArgument, "codec", name,
                    "unknown value codec (one of " + NameChoices(kValueCodecTraits) + ")");
}

uint64_t ValueStreamBytes(ValueCodec codec, uint64_t count, uint64_t rows) {
  const ValueCodecTraits& t = Traits(codec);
  uint64_t bytes = (count * t.bits_per_value + 7) / 8;
  if (t.per_row_scale) bytes += rows * sizeof(float);
  return bytes;
}

}  // namespace sparselink
