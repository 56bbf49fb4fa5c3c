// Internal: error checks for CUDA and cuBLAS calls. Include only from .cu files.
#pragma once

#include <asgd/config.h>
#if !ASGD_HAVE_CUDA
#error "runtime/detail/cuda_check.cuh needs a build with the CUDA backend (ASGD_CUDA)"
#endif

#include <cstdio>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "runtime/error.h"

#define ASGD_CHECK_CUDA(call)                                                              \
  do {                                                                                     \
    cudaError_t asgd_status_ = (call);                                                     \
    if (asgd_status_ != cudaSuccess)                                                       \
      ::asgd::detail::throw_error(__FILE__, __LINE__, #call,                               \
                                  fmt::format("{} ({})", cudaGetErrorString(asgd_status_), \
                                              cudaGetErrorName(asgd_status_)));            \
  } while (0)

// For destructors and other noexcept paths: reports and carries on.
#define ASGD_CHECK_CUDA_NOTHROW(call)                                                    \
  do {                                                                                   \
    cudaError_t asgd_status_ = (call);                                                   \
    if (asgd_status_ != cudaSuccess)                                                     \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call,          \
                   cudaGetErrorString(asgd_status_));                                    \
  } while (0)

#define ASGD_CHECK_CUBLAS(call)                                                          \
  do {                                                                                   \
    cublasStatus_t asgd_status_ = (call);                                                \
    if (asgd_status_ != CUBLAS_STATUS_SUCCESS)                                           \
      ::asgd::detail::throw_error(__FILE__, __LINE__, #call,                             \
                                  fmt::format("{} ({})", cublasGetStatusString(asgd_status_), \
                                              cublasGetStatusName(asgd_status_)));       \
  } while (0)

// Checks the launch of the kernel just issued (configuration errors are reported here;
// faults inside the kernel surface at the next synchronising call).
#define ASGD_CHECK_LAUNCH() ASGD_CHECK_CUDA(cudaGetLastError())
