# The Python package `sparselink`: the pybind11 extension _sparselink over the LibTorch
# adapter, and the pure-Python layer in python/sparselink/ (nn.Module, typed functions).
# Included from CMakeLists.txt after the torch targets. The package is assembled in
# ${PROJECT_BINARY_DIR}/python (put it on PYTHONPATH) and installed under
# ${SPARSELINK_PYTHON_INSTALL_DIR}.
#
# Debian's interpreter is /usr/bin/python3 (3.11) with python3-torch 1.13 and pybind11-dev
# 2.10; another python3 first on PATH cannot import Debian's torch, so the interpreter is
# asked for by path. The extension must be built with the same pybind11 as torch's own
# bindings (Debian builds both from pybind11-dev) so that a torch.distributed process group
# crosses into C++ as a c10d::ProcessGroup.
set(Python3_EXECUTABLE /usr/bin/python3 CACHE FILEPATH "Debian's Python, which sees python3-torch")
find_package(Python3 COMPONENTS Interpreter Development.Module)
find_package(pybind11 CONFIG QUIET)
find_library(SPARSELINK_TORCH_PYTHON_LIBRARY torch_python
  PATHS ${TORCH_INSTALL_PREFIX}/lib /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE})
set(_python_ok OFF)
if(Python3_FOUND AND pybind11_FOUND AND SPARSELINK_TORCH_PYTHON_LIBRARY)
  set(_python_ok ON)
endif()
option(SPARSELINK_WITH_PYTHON "Build the Python package (needs pybind11-dev and python3-torch)"
       ${_python_ok})
if(NOT SPARSELINK_WITH_PYTHON)
  return()
endif()
if(NOT _python_ok)
  message(FATAL_ERROR "SPARSELINK_WITH_PYTHON needs /usr/bin/python3 with its headers "
    "(python3-dev), pybind11-dev and libtorch_python (python3-torch): install them with "
    "scripts/install-deps")
endif()

set(SPARSELINK_PYTHON_DIR ${PROJECT_BINARY_DIR}/python)
# NO_EXTRAS: no link-time optimization, which linked the static libraries again serially.
pybind11_add_module(sparselink_python MODULE NO_EXTRAS
  python/src/module.cc python/src/bind_codec.cc python/src/bind_boundary.cc
  python/src/bind_transport.cc)
set_target_properties(sparselink_python PROPERTIES OUTPUT_NAME _sparselink
  LIBRARY_OUTPUT_DIRECTORY ${SPARSELINK_PYTHON_DIR}/sparselink)
target_compile_definitions(sparselink_python PRIVATE TORCH_API_INCLUDE_EXTENSION_H
  TORCH_EXTENSION_NAME=_sparselink)
target_compile_options(sparselink_python PRIVATE ${SPARSELINK_WARNINGS} -Wno-shadow)
target_link_libraries(sparselink_python PRIVATE sparselink_torch sparselink_process_group
  ${SPARSELINK_TORCH_PYTHON_LIBRARY})
# One precompiled <torch/extension.h> (torch, its Python bindings and pybind11) for the four
# files: it is most of each file's compile time.
target_precompile_headers(sparselink_python PRIVATE <torch/extension.h>)

# The pure-Python files next to the extension, copied at every build (they are few and small).
add_custom_target(sparselink_python_files ALL
  COMMAND ${CMAKE_COMMAND} -E copy_directory ${PROJECT_SOURCE_DIR}/python/sparselink
          ${SPARSELINK_PYTHON_DIR}/sparselink
  COMMENT "Python package files into ${SPARSELINK_PYTHON_DIR}")
add_dependencies(sparselink_python sparselink_python_files)

set(SPARSELINK_PYTHON_INSTALL_DIR lib/python3/dist-packages CACHE PATH
    "Where `cmake --install` puts the sparselink package, under the prefix")
install(TARGETS sparselink_python LIBRARY DESTINATION ${SPARSELINK_PYTHON_INSTALL_DIR}/sparselink)
install(DIRECTORY python/sparselink DESTINATION ${SPARSELINK_PYTHON_INSTALL_DIR}
  FILES_MATCHING PATTERN "*.py" PATTERN "py.typed")

if(SPARSELINK_BUILD_TESTS)
  # The C++ side of the Python/C++ packet comparison.
  add_executable(python_packet_ref python/tests/packet_ref.cc)
  target_link_libraries(python_packet_ref PRIVATE sparselink::sparselink)
  # pytest over the package in the build tree: python/tests (the examples included).
  add_test(NAME python_test COMMAND ${CMAKE_COMMAND} -E env
    PYTHONPATH=${SPARSELINK_PYTHON_DIR} SPARSELINK_PACKET_REF=$<TARGET_FILE:python_packet_ref>
    SPARSELINK_SOURCE_DIR=${PROJECT_SOURCE_DIR}
    ${Python3_EXECUTABLE} -m pytest -q -p no:cacheprovider ${PROJECT_SOURCE_DIR}/python/tests)
  set_tests_properties(python_test PROPERTIES TIMEOUT 600)
endif()
