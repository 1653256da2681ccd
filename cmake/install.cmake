# `cmake --install`: headers, the static libraries and a CMake package, so that a project finds
# sparselink with find_package(sparselink [COMPONENTS torch mpi]) and links sparselink::<name>.
# Included last from CMakeLists.txt, once every target exists. Three export sets, one per
# component, so that a consumer of the core never needs LibTorch or MPI:
#   core  sparselink::sparselink (and its modules sparselink::core, ::codec, ...; ::data)
#   torch sparselink::torch (the adapter) and sparselink::process_group (its transport)
#   mpi   sparselink::mpi
# A pkg-config file, sparselink.pc, gives the core to builds without CMake.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(SPARSELINK_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/sparselink)
set(_core_modules simd core sensitivity contract routing codec transport)
if(TARGET sparselink_data)
  list(APPEND _core_modules data)
endif()

set(_core_targets sparselink)
foreach(module ${_core_modules})
  set_target_properties(sparselink_${module} PROPERTIES EXPORT_NAME ${module})
  list(APPEND _core_targets sparselink_${module})
endforeach()
install(TARGETS ${_core_targets} EXPORT sparselinkCoreTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(EXPORT sparselinkCoreTargets NAMESPACE sparselink:: DESTINATION ${SPARSELINK_CMAKE_DIR})
install(DIRECTORY include/sparselink DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(SPARSELINK_COMPONENTS "")
if(TARGET sparselink_torch)
  set_target_properties(sparselink_torch PROPERTIES EXPORT_NAME torch)
  set_target_properties(sparselink_process_group PROPERTIES EXPORT_NAME process_group)
  install(TARGETS sparselink_torch sparselink_process_group EXPORT sparselinkTorchTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT sparselinkTorchTargets NAMESPACE sparselink::
          DESTINATION ${SPARSELINK_CMAKE_DIR})
  list(APPEND SPARSELINK_COMPONENTS torch)
endif()
if(TARGET sparselink_mpi)
  set_target_properties(sparselink_mpi PROPERTIES EXPORT_NAME mpi)
  install(TARGETS sparselink_mpi EXPORT sparselinkMpiTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT sparselinkMpiTargets NAMESPACE sparselink:: DESTINATION ${SPARSELINK_CMAKE_DIR})
  list(APPEND SPARSELINK_COMPONENTS mpi)
endif()

if(TARGET sparselink_data)
  set(SPARSELINK_NEEDS_ZLIB TRUE)
else()
  set(SPARSELINK_NEEDS_ZLIB FALSE)
endif()
configure_package_config_file(cmake/sparselinkConfig.cmake.in
  ${PROJECT_BINARY_DIR}/sparselinkConfig.cmake INSTALL_DESTINATION ${SPARSELINK_CMAKE_DIR})
# Pre-1.0: a minor version may change the API, so only the same minor version is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/sparselinkConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/sparselinkConfig.cmake
  ${PROJECT_BINARY_DIR}/sparselinkConfigVersion.cmake DESTINATION ${SPARSELINK_CMAKE_DIR})

# pkg-config: the core's libraries in link order (dependents first), its dependencies by
# their own .pc files, and OpenMP's flag, which has none.
set(SPARSELINK_PC_LIBS "")
foreach(module codec routing contract sensitivity transport core simd)
  string(APPEND SPARSELINK_PC_LIBS " -lsparselink_${module}")
endforeach()
# Relocatable: the prefix is found from the .pc file's own place, so that `cmake --install
# --prefix` anywhere gives a working file.
file(RELATIVE_PATH SPARSELINK_PC_TO_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
configure_file(cmake/sparselink.pc.in ${PROJECT_BINARY_DIR}/sparselink.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/sparselink.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
