// Shared by the files of the Python extension (_sparselink): errors and names.
//
// A sparselink Status becomes a Python exception of the matching built-in class (ValueError for
// bad arguments and packets, TimeoutError, ConnectionError for a closed link or a dead peer,
// MemoryError for a refused size, RuntimeError otherwise) with the message Status gives: the
// field and the value. A c10::Error from the adapter loses its C++ backtrace on the way.
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "sparselink/name_table.hpp"
#include "sparselink/status.hpp"

namespace sparselink::python {

namespace py = pybind11;

[[noreturn]] void Raise(const Status& status);

inline void ThrowIfError(const Status& status) {
  if (!status.ok()) Raise(status);
}

template <typename T>
T ValueOrRaise(Result<T> result) {
  if (!result.ok()) Raise(result.status());
  return std::move(result).value();
}

// The enum value a table names `text`; a ValueError naming `field` and the choices otherwise.
template <typename Row, size_t N>
auto ParseName(const std::array<Row, N>& table, std::string_view text, std::string_view field) {
  if (const Row* row = FindName(table, text)) return row->value;
  throw py::value_error(std::string(field) + " = '" + std::string(text) + "': must be one of " +
                        NameChoices(table));
}

// Runs `body`, turning a c10::Error (TORCH_CHECK in the adapter) into a RuntimeError or
// ValueError with its message alone.
template <typename F>
auto WithTorchErrors(F&& body) {
  try {
    return body();
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    // The adapter's Status errors arrive as "sparselink boundary B: <code>: ...".
    if (what.find(": invalid_argument: ") != std::string::npos ||
        what.find(": non_finite: ") != std::string::npos ||
        what.find(": shape_mismatch: ") != std::string::npos ||
        what.find(": corrupt_packet: ") != std::string::npos ||
        what.find(" must be ") != std::string::npos ||
        what.find(" built for ") != std::string::npos) {
      throw py::value_error(what);
    }
    throw std::runtime_error(what);
  }
}

// The bytes of a Python bytes object, in place (valid while `packet` lives).
inline std::span<const uint8_t> BytesOf(const py::bytes& packet) {
  char* data = nullptr;
  Py_ssize_t size = 0;
  if (PyBytes_AsStringAndSize(packet.ptr(), &data, &size) != 0) throw py::error_already_set();
  return {reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(size)};
}

// A 2-D (rows x cols) view of a CPU float32 tensor for the core: errors name `field`. A
// non-contiguous tensor is made contiguous (a copy, as torch's own ops make); any other dtype,
// device or shape is refused rather than converted.
torch::Tensor CheckMatrix(const torch::Tensor& t, std::string_view field);

void BindCodec(py::module_& m);
void BindBoundary(py::module_& m);
void BindTransport(py::module_& m);

}  // namespace sparselink::python
