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

// Calls body(t, begin, end) for each thread t of a team of `threads` over a static partition
// of [0, n); serially (no OpenMP region at all) when one thread is enough, because the region
// itself costs more than the small loops of a training step. The partition depends only on
// the team size, so per-thread partial sums combine the same way every time.
template <typename Body>
void run_partitioned(int threads, std::int64_t n, Body&& body) {
  if (threads <= 1) {
    body(0, std::int64_t{0}, n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const std::int64_t t = omp_get_thread_num();
    const std::int64_t nt = omp_get_num_threads();
    body(static_cast<int>(t), n * t / nt, n * (t + 1) / nt);
  }
}

// Calls body(begin, end) over a static partition of [0, n) on up to stream.threads() threads,
// each getting at least `grain` units.
template <typename Body>
void parallel_for(const Stream& stream, std::int64_t n, std::int64_t grain, Body&& body) {
  run_partitioned(host_threads(stream, n, grain), n,
                  [&](int, std::int64_t begin, std::int64_t end) { body(begin, end); });
}

}  // namespace asgd::detail
