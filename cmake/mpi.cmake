# The MPI transport: sparselink_mpi (sparselink::mpi), behind SPARSELINK_WITH_MPI. Included
# from CMakeLists.txt after the core targets exist; the core never includes mpi.h.
#
# Debian 12's libopenmpi-dev (OpenMPI 4.1) gives MPI::MPI_CXX and mpiexec. Only MPI's C API is
# used: the MPI-2 C++ bindings are left out (MPI_CXX_SKIP_MPICXX), so nothing links libmpi_cxx.
# The option defaults to ON only for the top-level project that finds MPI: a project embedding
# sparselink turns it on to have the target (and then MPI is required).
set(MPI_CXX_SKIP_MPICXX TRUE)
if(PROJECT_IS_TOP_LEVEL)
  find_package(MPI QUIET COMPONENTS CXX)
endif()
option(SPARSELINK_WITH_MPI "Build the MPI transport (sparselink::mpi)" ${MPI_CXX_FOUND})
if(NOT SPARSELINK_WITH_MPI)
  return()
endif()
find_package(MPI REQUIRED COMPONENTS CXX)

add_library(sparselink_mpi STATIC
  src/transport/mpi/mpi_channel.cc
  src/transport/mpi/mpi_engine.cc
  src/transport/mpi/mpi_link.cc
  src/transport/mpi/mpi_transport.cc)
target_include_directories(sparselink_mpi PUBLIC
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include> $<INSTALL_INTERFACE:include>
  PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_compile_options(sparselink_mpi PRIVATE ${SPARSELINK_WARNINGS})
target_compile_features(sparselink_mpi PUBLIC cxx_std_20)
target_link_libraries(sparselink_mpi PUBLIC MPI::MPI_CXX sparselink::sparselink Threads::Threads)
set_target_properties(sparselink_mpi PROPERTIES POSITION_INDEPENDENT_CODE ON)
add_library(sparselink::mpi ALIAS sparselink_mpi)

if(SPARSELINK_BUILD_TESTS)
  find_package(GTest REQUIRED)
  # mpi_link_test starts MPI in its own main; mpi_world_test leaves that to the transport.
  add_executable(mpi_link_test tests/mpi_link_test.cc)
  target_link_libraries(mpi_link_test PRIVATE sparselink_mpi GTest::gtest)
  add_executable(mpi_world_test tests/mpi_world_test.cc)
  target_link_libraries(mpi_world_test PRIVATE sparselink_mpi GTest::gtest GTest::gtest_main)
  foreach(test mpi_link_test mpi_world_test)
    target_compile_options(${test} PRIVATE ${SPARSELINK_WARNINGS} -Wno-conversion -O1)
    target_include_directories(${test} PRIVATE ${PROJECT_SOURCE_DIR}/src
      ${PROJECT_SOURCE_DIR}/tests)
  endforeach()

  # Each binary runs as two ranks under mpiexec, so a ctest entry is one whole job: mpiexec
  # exits non-zero when either rank fails. With OpenMPI the entries also run as root, with more
  # ranks than cores, unbound (each rank's progress thread then has a core to run on beside the
  # test), with OpenMPI's own time limit under ctest's, and once over each of its two on-host
  # transports: shared memory (vader) and TCP over the loopback.
  execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version OUTPUT_VARIABLE _mpiexec_version
    ERROR_QUIET)
  if(_mpiexec_version MATCHES "Open MPI|OpenRTE")
    set(_mpi_openmpi ON)
    set(_mpi_openmpi_flags --allow-run-as-root --oversubscribe --bind-to none --tag-output
      --timeout 240)
    set(_mpi_variants shm tcp)
    set(_mpi_flags_shm --mca pml ob1 --mca btl vader,self)
    set(_mpi_flags_tcp --mca pml ob1 --mca btl tcp,self)
  else()
    set(_mpi_openmpi OFF)
    set(_mpi_openmpi_flags "")
    set(_mpi_variants default)
    set(_mpi_flags_default "")
  endif()
  set(_mpi_run ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 2 ${MPIEXEC_PREFLAGS}
    ${_mpi_openmpi_flags})
  foreach(variant ${_mpi_variants})
    add_test(NAME mpi_link_test_${variant} COMMAND ${_mpi_run} ${_mpi_flags_${variant}}
      $<TARGET_FILE:mpi_link_test> ${MPIEXEC_POSTFLAGS})
    add_test(NAME mpi_world_test_${variant} COMMAND ${_mpi_run} ${_mpi_flags_${variant}}
      $<TARGET_FILE:mpi_world_test> ${MPIEXEC_POSTFLAGS})
    set_tests_properties(mpi_link_test_${variant} mpi_world_test_${variant} PROPERTIES
      TIMEOUT 300 RESOURCE_LOCK mpi)
  endforeach()

  # One rank that starts MPI below MPI_THREAD_MULTIPLE itself: both factories refuse it.
  add_test(NAME mpi_thread_level_test COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 1
    ${MPIEXEC_PREFLAGS} ${_mpi_openmpi_flags} $<TARGET_FILE:mpi_world_test>
    --gtest_also_run_disabled_tests --gtest_filter=MpiThreadLevel.* ${MPIEXEC_POSTFLAGS})
  set_tests_properties(mpi_thread_level_test PROPERTIES TIMEOUT 120 RESOURCE_LOCK mpi)

  # A rank killed mid-frame (tests/mpi_peer_death_test.sh says what OpenMPI did). OpenMPI's
  # mpirun ends the job: it must exit non-zero within the link's timeout and a few seconds, over
  # either transport. Under --enable-recovery it does not: the survivor's Recv must end with
  # its own timeout (mpirun then exits 0 whatever the ranks did, so the script checks what the
  # survivor said instead).
  if(_mpi_openmpi)
    foreach(variant shm tcp)
      add_test(NAME mpi_peer_death_test_${variant} COMMAND bash
        ${PROJECT_SOURCE_DIR}/tests/mpi_peer_death_test.sh ${_mpi_run} ${_mpi_flags_${variant}}
        $<TARGET_FILE:mpi_link_test>)
    endforeach()
    add_test(NAME mpi_peer_death_test_recovery COMMAND bash
      ${PROJECT_SOURCE_DIR}/tests/mpi_peer_death_test.sh --survivor-times-out ${_mpi_run}
      --enable-recovery ${_mpi_flags_tcp} $<TARGET_FILE:mpi_link_test>)
    set_tests_properties(mpi_peer_death_test_shm mpi_peer_death_test_tcp
      mpi_peer_death_test_recovery PROPERTIES TIMEOUT 120 RESOURCE_LOCK mpi)
  endif()
endif()
