# User-facing options. Backends are AUTO by default: on when their toolkit is found.
set(ASGD_CUDA AUTO CACHE STRING "Build the CUDA backend (AUTO, ON, OFF)")
set(ASGD_MPI AUTO CACHE STRING "Build the MPI transport (AUTO, ON, OFF)")
set(ASGD_NCCL AUTO CACHE STRING "Build the NCCL transport (AUTO, ON, OFF)")
set_property(CACHE ASGD_CUDA ASGD_MPI ASGD_NCCL PROPERTY STRINGS AUTO ON OFF)
option(ASGD_BUILD_TESTS "Build the tests" ON)
option(ASGD_BUILD_BENCH "Build the benchmarks" ON)
option(ASGD_WERROR "Treat warnings as errors" OFF)

foreach(opt ASGD_CUDA ASGD_MPI ASGD_NCCL)
  if(NOT ${opt} MATCHES "^(AUTO|ON|OFF)$")
    message(FATAL_ERROR "${opt} must be AUTO, ON or OFF, not '${${opt}}'")
  endif()
endforeach()

# Default GPU targets: Volta (V100) through Hopper (H100). CUDA 13 no longer compiles for
# Volta, so with nvcc >= 13 the list starts at Turing; sm_90 also ships PTX for newer GPUs.
# Override with -DCMAKE_CUDA_ARCHITECTURES=...
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT ASGD_CUDA STREQUAL "OFF")
  find_program(ASGD_NVCC nvcc HINTS /usr/local/cuda/bin ENV CUDA_PATH PATH_SUFFIXES bin)
  set(_asgd_archs "70-real;75-real;80-real;86-real;89-real;90")
  if(ASGD_NVCC)
    execute_process(COMMAND "${ASGD_NVCC}" --version OUTPUT_VARIABLE _nvcc_out ERROR_QUIET)
    if(_nvcc_out MATCHES "release ([0-9]+)\\.")
      if(CMAKE_MATCH_1 GREATER_EQUAL 13)
        set(_asgd_archs "75-real;80-real;86-real;89-real;90")
      endif()
    endif()
    if(NOT DEFINED CMAKE_CUDA_COMPILER)
      set(CMAKE_CUDA_COMPILER "${ASGD_NVCC}")
    endif()
  endif()
  set(CMAKE_CUDA_ARCHITECTURES "${_asgd_archs}" CACHE STRING "CUDA architectures to build for")
endif()
