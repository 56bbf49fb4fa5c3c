# Generates <asgd/config.h>, the one place that says which backends this build has.
set(ASGD_HAVE_CUDA ${ASGD_CUDA_ENABLED})
set(ASGD_HAVE_MPI ${ASGD_MPI_ENABLED})
set(ASGD_HAVE_NCCL ${ASGD_NCCL_ENABLED})
execute_process(COMMAND git rev-parse --short=12 HEAD
  WORKING_DIRECTORY "${CMAKE_SOURCE_DIR}" OUTPUT_VARIABLE ASGD_GIT_COMMIT
  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT ASGD_GIT_COMMIT)
  set(ASGD_GIT_COMMIT "unknown")
endif()
set(ASGD_GENERATED_INCLUDE_DIR "${CMAKE_BINARY_DIR}/generated")
configure_file("${CMAKE_CURRENT_LIST_DIR}/config.h.in" "${ASGD_GENERATED_INCLUDE_DIR}/asgd/config.h" @ONLY)
