# LibTorch adapter: sparselink_torch. Owned by the torch module; included from CMakeLists.txt
# when SPARSELINK_WITH_TORCH is ON, after the core module targets exist.
#
# Debian 12's libtorch-dev (1.13) installs TorchConfig.cmake under
# /usr/lib/x86_64-linux-gnu/cmake/Torch; it pulls in the Caffe2 config and defines the
# imported target `torch` plus TORCH_LIBRARIES. Its BLAS is whatever libblas.so.3 points to:
# with libopenblas0-pthread installed the Debian alternative selects OpenBLAS (priority 100 over
# the reference BLAS), which trains about 7x faster. `sparselink_torch` reports the BLAS in use
# through TorchRuntimeInfo() (include/sparselink/torch/runtime.hpp).
find_package(Torch REQUIRED)
find_package(ZLIB REQUIRED)  # zlib1g-dev: the gzip'd Fashion-MNIST idx files (sparselink_data)

# LibTorch's headers are most of each adapter file's compile time: one
# precompiled <torch/torch.h> serves the adapter, the process-group transport, their tests, the
# CLI's train command and the link bench. GCC takes a precompiled header only where the flags
# that shape it match, so every user compiles position-independent with USE_C10D_GLOO
# (sparselink_use_torch_pch).
add_library(sparselink_torch_pch OBJECT src/torch/torch_pch.cc)
target_link_libraries(sparselink_torch_pch PRIVATE ${TORCH_LIBRARIES} OpenMP::OpenMP_CXX)
target_compile_definitions(sparselink_torch_pch PRIVATE USE_C10D_GLOO)
target_compile_options(sparselink_torch_pch PRIVATE ${SPARSELINK_WARNINGS} -fPIC -Winvalid-pch)
target_precompile_headers(sparselink_torch_pch PRIVATE <torch/torch.h>)
function(sparselink_use_torch_pch target)
  target_compile_definitions(${target} PRIVATE USE_C10D_GLOO)
  target_compile_options(${target} PRIVATE -fPIC -Winvalid-pch)
  target_precompile_headers(${target} REUSE_FROM sparselink_torch_pch)
endfunction()

add_library(sparselink_torch STATIC
  src/torch/fashion_mnist.cc
  src/torch/models.cc
  src/torch/runtime.cc
  src/torch/trainer.cc
  src/torch/routed_boundary.cc
  src/torch/boundary_sender.cc
  src/torch/boundary_receiver.cc
  src/torch/pipeline.cc
  src/torch/pipeline_rank.cc
  src/torch/pipeline_exchange.cc
  src/torch/pipeline_link_rate.cc
  src/torch/pipeline_schedule.cc
  src/torch/checkpoint.cc
  src/torch/run_state.cc
  src/torch/boundary_state.cc
  src/torch/pipeline_checkpoint.cc)
target_include_directories(sparselink_torch PUBLIC
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include> $<INSTALL_INTERFACE:include>
  PRIVATE ${PROJECT_SOURCE_DIR}/src)
# LibTorch's own headers trip -Wshadow/-Wconversion/-Wpedantic; they come in as SYSTEM
# includes (imported target), so our warnings apply to our code only.
target_compile_options(sparselink_torch PRIVATE ${SPARSELINK_WARNINGS})
target_link_libraries(sparselink_torch PUBLIC ${TORCH_LIBRARIES} sparselink::sparselink
  sparselink_data PRIVATE PkgConfig::XXHASH)
set_target_properties(sparselink_torch PROPERTIES POSITION_INDEPENDENT_CODE ON)
sparselink_use_torch_pch(sparselink_torch)
add_library(sparselink::torch ALIAS sparselink_torch)

# The transport over torch's c10d::ProcessGroup (Gloo in Debian's libtorch). Its headers need
# USE_C10D_GLOO and the gloo headers of libgloo-dev; the library itself is inside libtorch.
add_library(sparselink_process_group STATIC
  src/transport/process_group/process_group_link.cc
  src/transport/process_group/process_group_transport.cc)
target_include_directories(sparselink_process_group PUBLIC
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include> $<INSTALL_INTERFACE:include>
  PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_compile_definitions(sparselink_process_group PUBLIC USE_C10D_GLOO)
target_compile_options(sparselink_process_group PRIVATE ${SPARSELINK_WARNINGS})
target_link_libraries(sparselink_process_group PUBLIC ${TORCH_LIBRARIES} sparselink::sparselink)
set_target_properties(sparselink_process_group PROPERTIES POSITION_INDEPENDENT_CODE ON)
sparselink_use_torch_pch(sparselink_process_group)
add_library(sparselink::process_group ALIAS sparselink_process_group)

# OpenBLAS's OpenMP build (libopenblas0-openmp) runs its GEMMs on the libgomp pool that
# LibTorch's ops and the router use, where the pthread build keeps a second pool that fights
# the first for the cores (runtime.hpp). The Debian alternatives prefer the pthread build
# (priority 100 against 95), so sparselink's own programs ask for the OpenMP one by path: an
# RPATH (not RUNPATH, which the loader does not apply to libtorch_cpu's own libblas.so.3).
# A program that embeds sparselink gets whichever libblas.so.3 the system gives it. The check
# runs at configure time: a build tree configured before libopenblas0-openmp was installed
# needs `cmake` run again to pick it up.
set(SPARSELINK_OPENMP_BLAS_DIR /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp)
function(sparselink_prefer_openmp_blas target)
  if(EXISTS ${SPARSELINK_OPENMP_BLAS_DIR}/libblas.so.3)
    target_link_options(${target} PRIVATE -Wl,--disable-new-dtags
      -Wl,-rpath,${SPARSELINK_OPENMP_BLAS_DIR})
  endif()
endfunction()

if(SPARSELINK_BUILD_TESTS)
  find_package(GTest REQUIRED)
  include(GoogleTest)
  foreach(unit torch_data torch_model torch_routed_boundary process_group_link pipeline
      checkpoint)
    add_executable(${unit}_test tests/${unit}_test.cc)
    target_compile_options(${unit}_test PRIVATE ${SPARSELINK_WARNINGS})
    target_link_libraries(${unit}_test PRIVATE sparselink_torch sparselink_process_group
      ZLIB::ZLIB GTest::gtest GTest::gtest_main)
    target_include_directories(${unit}_test PRIVATE ${PROJECT_SOURCE_DIR}/tests)
    sparselink_prefer_openmp_blas(${unit}_test)
    sparselink_use_torch_pch(${unit}_test)
    gtest_discover_tests(${unit}_test DISCOVERY_TIMEOUT 120)
  endforeach()
endif()

if(SPARSELINK_BUILD_BENCH)
  # The link over the engine under it: bytes/s of a packet stream, link vs raw send/recv.
  add_executable(link_throughput bench/link_throughput.cc)
  target_compile_options(link_throughput PRIVATE ${SPARSELINK_WARNINGS} -Wno-conversion)
  target_link_libraries(link_throughput PRIVATE sparselink_process_group)
  sparselink_use_torch_pch(link_throughput)
endif()
