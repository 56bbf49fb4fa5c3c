# Installs asgd::asgd, its public headers and a package config so that an outside project can
# find_package(asgd) and link it. Internal headers (*.cuh, detail/) stay out of the install.
include(CMakePackageConfigHelpers)
set(ASGD_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/asgd")

install(TARGETS asgd_core asgd_cli EXPORT asgdTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY runtime kernels comm DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/asgd
  FILES_MATCHING PATTERN "*.h" PATTERN "detail" EXCLUDE PATTERN "cli" EXCLUDE)
install(FILES "${ASGD_GENERATED_INCLUDE_DIR}/asgd/config.h"
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/asgd/asgd)
install(EXPORT asgdTargets NAMESPACE asgd:: DESTINATION ${ASGD_INSTALL_CMAKEDIR})

configure_package_config_file(cmake/asgdConfig.cmake.in
  "${CMAKE_BINARY_DIR}/asgdConfig.cmake" INSTALL_DESTINATION ${ASGD_INSTALL_CMAKEDIR})
write_basic_package_version_file("${CMAKE_BINARY_DIR}/asgdConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_BINARY_DIR}/asgdConfig.cmake" "${CMAKE_BINARY_DIR}/asgdConfigVersion.cmake"
  cmake/FindOpenBLAS.cmake cmake/FindXXHash.cmake cmake/FindNCCL.cmake DESTINATION ${ASGD_INSTALL_CMAKEDIR})
