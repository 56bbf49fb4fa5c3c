# Generates <asgd/config.h>, the one place that says which backends this build has, and
# build_info.cpp, which holds the git commit. The commit is refreshed at every build (not only
# at configure time) and rewritten only when it changes, so a new commit recompiles one file.
set(ASGD_HAVE_CUDA ${ASGD_CUDA_ENABLED})
set(ASGD_HAVE_MPI ${ASGD_MPI_ENABLED})
set(ASGD_HAVE_NCCL ${ASGD_NCCL_ENABLED})
set(ASGD_GENERATED_INCLUDE_DIR "${CMAKE_BINARY_DIR}/generated")
configure_file("${CMAKE_CURRENT_LIST_DIR}/config.h.in" "${ASGD_GENERATED_INCLUDE_DIR}/asgd/config.h" @ONLY)

set(ASGD_BUILD_INFO_CPP "${ASGD_GENERATED_INCLUDE_DIR}/build_info.cpp")
add_custom_target(asgd_build_info
  COMMAND "${CMAKE_COMMAND}" -DSOURCE_DIR=${CMAKE_SOURCE_DIR} -DOUT=${ASGD_BUILD_INFO_CPP}
          -P "${CMAKE_CURRENT_LIST_DIR}/AsgdBuildInfo.cmake"
  BYPRODUCTS "${ASGD_BUILD_INFO_CPP}"
  COMMENT "Recording the git commit"
  VERBATIM)
