// The Python extension sparselink._sparselink. The package (python/sparselink/__init__.py)
// wraps it in torch.nn.Module and typed functions; docs/python.md describes the API.
#include "bindings.hpp"

namespace sparselink::python {

void Raise(const Status& status) {
  const std::string message = status.ToString();
  switch (status.code()) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kShapeMismatch:
    case ErrorCode::kNonFinite:
    case ErrorCode::kCorruptPacket:
    case ErrorCode::kUnsupported: throw py::value_error(message);
    case ErrorCode::kIo:
      PyErr_SetString(PyExc_OSError, message.c_str());
      throw py::error_already_set();
    case ErrorCode::kTimeout:
      PyErr_SetString(PyExc_TimeoutError, message.c_str());
      throw py::error_already_set();
    case ErrorCode::kClosed:
      PyErr_SetString(PyExc_ConnectionError, message.c_str());
      throw py::error_already_set();
    case ErrorCode::kResourceExhausted:
      PyErr_SetString(PyExc_MemoryError, message.c_str());
      throw py::error_already_set();
    default: throw std::runtime_error(message);
  }
}

torch::Tensor CheckMatrix(const torch::Tensor& t, std::string_view field) {
  const std::string name(field);
  if (!t.defined()) throw py::value_error(name + ": an undefined tensor");
  if (!t.device().is_cpu()) {
    throw py::value_error(name + ".device = " + t.device().str() +
                          ": this build of sparselink runs on the CPU");
  }
  if (t.scalar_type() != torch::kFloat32) {
    throw py::value_error(name + ".dtype = " + std::string(c10::toString(t.scalar_type())) +
                          ": must be float32");
  }
  if (t.dim() != 2)
    throw py::value_error(name + ".dim() = " + std::to_string(t.dim()) +
                          ": must be 2 (rows x cols)");
  return t.is_contiguous() ? t : t.contiguous();
}

}  // namespace sparselink::python

PYBIND11_MODULE(_sparselink, m) {
  m.doc() = "sparselink's C++ library (use the sparselink package, not this module)";
  sparselink::python::BindCodec(m);
  sparselink::python::BindBoundary(m);
  sparselink::python::BindTransport(m);
  // For the tests: where the data a call reads lies once the binding checked the tensor (the
  // caller's own memory unless it had to be made contiguous).
  m.def("_data_ptr_seen", [](const torch::Tensor& t) {
    return reinterpret_cast<uintptr_t>(
        sparselink::python::CheckMatrix(t, "tensor").data_ptr<float>());
  });
}
