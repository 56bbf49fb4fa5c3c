// Internal: how a launcher in kernels/host/*.cpp hands work to the CUDA implementation, and the
// OpenMP helpers its host implementation uses.
#pragma once

#include <algorithm>
#include <cstdint>

#include <omp.h>

#include <asgd/config.h>

#include "runtime/device.h"
#include "runtime/error.h"
#if ASGD_HAVE_CUDA
#include "kernels/detail/cuda_ops.h"
#endif

// Runs `cuda_ops::CALL` and returns from the launcher when `stream` is a CUDA stream.
#if ASGD_HAVE_CUDA
#define ASGD_DISPATCH_CUDA(stream, ...) \
  do {                                  \
    if (!(stream).is_host()) {          \
      ::asgd::cuda_ops::__VA_ARGS__;    \
      return;                           \
    }                                   \
  } while (0)
#else
#define ASGD_DISPATCH_CUDA(stream, ...)                                                   \
  do {                                                                                    \
    if (!(stream).is_host())                                                              \
      ASGD_THROW("a CUDA stream was passed to a kernel but this build has no CUDA backend"); \
  } while (0)
#endif

namespace asgd::detail {

// Threads to use for `work` units of work when each thread should get at least `grain`.
inline int host_threads(const Stream& stream, std::int64_t work, std::int64_t grain) {
  const std::int64_t useful = grain > 0 ? work / grain : work;
  return static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(stream.threads(), useful)));
}

// Calls body(begin, end) over a static partition of [0, n) on up to stream.threads() OpenMP
// threads; serially (no OpenMP region at all) when one thread is enough, because the region
// itself costs more than the small loops of a training step.
template <typename Body>
void parallel_for(const Stream& stream, std::int64_t n, std::int64_t grain, Body&& body) {
  const int threads = host_threads(stream, n, grain);
  if (threads <= 1) {
    body(std::int64_t{0}, n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const std::int64_t t = omp_get_thread_num();
    const std::int64_t nt = omp_get_num_threads();
    body(n * t / nt, n * (t + 1) / nt);
  }
}

}  // namespace asgd::detail
