// Error handling in three tiers (docs/errors.md):
//   1. expected failures (bad input, bad packet, timeout, refused contract) return a
//      `Status` or a `Result<T>` whose message names the field and the value;
//   2. broken invariants stop the process through SPARSELINK_CHECK*, which always runs
//      and prints both operands and file:line;
//   3. hot-loop checks use SPARSELINK_DCHECK*, compiled out in release builds.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "sparselink/name_table.hpp"

namespace sparselink {

// One catalogue of failure kinds. The message carries the detail.
enum class ErrorCode : uint8_t {
  kOk = 0,
  kInvalidArgument,    // a caller-supplied value is out of its documented range
  kShapeMismatch,      // rows/cols of two inputs disagree
  kNonFinite,          // NaN or Inf where finite values are required
  kCorruptPacket,      // a packet fails a length, range or checksum check
  kUnsupported,        // unknown format version, codec or kind
  kResourceExhausted,  // a configured size limit would be exceeded
  kTimeout,            // a blocking call ran past its deadline
  kClosed,             // the other end of a link is gone
  kIo,                 // a file could not be read or written
};

inline constexpr std::array<NameRow<ErrorCode>, 10> kErrorCodeNames = {{
    {ErrorCode::kOk, "ok"},
    {ErrorCode::kInvalidArgument, "invalid_argument"},
    {ErrorCode::kShapeMismatch, "shape_mismatch"},
    {ErrorCode::kNonFinite, "non_finite"},
    {ErrorCode::kCorruptPacket, "corrupt_packet"},
    {ErrorCode::kUnsupported, "unsupported"},
    {ErrorCode::kResourceExhausted, "resource_exhausted"},
    {ErrorCode::kTimeout, "timeout"},
    {ErrorCode::kClosed, "closed"},
    {ErrorCode::kIo, "io"},
}};
static_assert(RowsInOrder(kErrorCodeNames));
// Name of an error code, e.g. "invalid_argument".
inline constexpr std::string_view ErrorCodeName(ErrorCode code) {
  return EnumName(kErrorCodeNames, code);
}

// A success flag or an error code with a one-line message. Cheap to copy when ok.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid_argument: keep_percent = 150: must be in (0, 100]".
  std::string ToString() const;

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

// Builds the message "<field> = <value>: <why>", the one form every error in this project uses.
template <typename T>
Status FieldError(ErrorCode code, std::string_view field, const T& value, std::string_view why) {
  std::ostringstream out;
  out << field << " = " << value << ": " << why;
  return Status(code, out.str());
}

// A value or an error. `value()` on an error is a broken invariant (it aborts).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT(google-explicit-constructor)
  Result(Status status) : status_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (status_.ok()) {
      std::fprintf(stderr, "sparselink: Result built from an ok Status\n");
      std::abort();
    }
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  T& value() & { return Get(); }
  const T& value() const& { return const_cast<Result*>(this)->Get(); }
  T&& value() && { return std::move(Get()); }
  T* operator->() { return &Get(); }
  const T* operator->() const { return &const_cast<Result*>(this)->Get(); }
  T& operator*() & { return Get(); }
  const T& operator*() const& { return const_cast<Result*>(this)->Get(); }

 private:
  T& Get() {
    if (!value_.has_value()) {
      std::fprintf(stderr, "sparselink: value() of an error Result: %s\n",
                   status_.ToString().c_str());
      std::abort();
    }
    return *value_;
  }

  std::optional<T> value_;
  Status status_;
};

namespace internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* expr,
                              const std::string& detail);

template <typename A, typename B>
std::string Operands(const A& a, const B& b) {
  std::ostringstream out;
  out << "(" << a << " vs " << b << ")";
  return out.str();
}
}  // namespace internal

}  // namespace sparselink

// Returns early from the enclosing function when `expr` (a Status) is an error.
#define SPARSELINK_RETURN_IF_ERROR(expr)                     \
  do {                                                       \
    ::sparselink::Status sparselink_status_ = (expr);        \
    if (!sparselink_status_.ok()) return sparselink_status_; \
  } while (0)

#define SPARSELINK_CONCAT_INNER(a, b) a##b
#define SPARSELINK_CONCAT(a, b) SPARSELINK_CONCAT_INNER(a, b)
// `SPARSELINK_ASSIGN_OR_RETURN(auto x, MakeX());` unwraps a Result or returns its Status.
#define SPARSELINK_ASSIGN_OR_RETURN(lhs, expr)                       \
  auto SPARSELINK_CONCAT(sparselink_result_, __LINE__) = (expr);     \
  if (!SPARSELINK_CONCAT(sparselink_result_, __LINE__).ok())         \
    return SPARSELINK_CONCAT(sparselink_result_, __LINE__).status(); \
  lhs = std::move(SPARSELINK_CONCAT(sparselink_result_, __LINE__)).value()

#define SPARSELINK_CHECK(cond)                                                       \
  do {                                                                               \
    if (!(cond)) ::sparselink::internal::CheckFailed(__FILE__, __LINE__, #cond, ""); \
  } while (0)

#define SPARSELINK_CHECK_OP(a, op, b)                                      \
  do {                                                                     \
    const auto& sparselink_a_ = (a);                                       \
    const auto& sparselink_b_ = (b);                                       \
    if (!(sparselink_a_ op sparselink_b_))                                 \
      ::sparselink::internal::CheckFailed(                                 \
          __FILE__, __LINE__, #a " " #op " " #b,                           \
          ::sparselink::internal::Operands(sparselink_a_, sparselink_b_)); \
  } while (0)
#define SPARSELINK_CHECK_EQ(a, b) SPARSELINK_CHECK_OP(a, ==, b)
#define SPARSELINK_CHECK_NE(a, b) SPARSELINK_CHECK_OP(a, !=, b)
#define SPARSELINK_CHECK_LE(a, b) SPARSELINK_CHECK_OP(a, <=, b)
#define SPARSELINK_CHECK_LT(a, b) SPARSELINK_CHECK_OP(a, <, b)
#define SPARSELINK_CHECK_GE(a, b) SPARSELINK_CHECK_OP(a, >=, b)

#ifdef NDEBUG
#define SPARSELINK_DCHECK(cond) \
  do {                          \
  } while (0)
#else
#define SPARSELINK_DCHECK(cond) SPARSELINK_CHECK(cond)
#endif
