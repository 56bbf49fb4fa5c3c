// Reductions to one device scalar. Each overwrites its output (memory of the stream's device).
// Asynchronous on CUDA. Terms are float products; partial sums are float within blocks of 1024
// on the host (fast, vectorised) and double on CUDA, and the blocks are summed in double. So a
// sum whose block partials pass the float range (|x| above ~1.8e19 in a squared norm) is +-inf
// or NaN on the host and finite on CUDA; callers that must tell use count_nonfinite first.
#pragma once

#include <cstdint>

#include "runtime/device.h"

namespace asgd {

void reduce_sum(const Stream& stream, std::int64_t n, const float* x, double* out);
void reduce_dot(const Stream& stream, std::int64_t n, const float* x, const float* y,
                double* out);
void reduce_squared_norm(const Stream& stream, std::int64_t n, const float* x, double* out);
// Number of elements that are NaN or +-Inf.
void count_nonfinite(const Stream& stream, std::int64_t n, const float* x, std::int64_t* out);
// y[i] <- x[i], and *out <- the number of those elements that are NaN or +-Inf: a snapshot and
// its finiteness check in one pass over memory (the divergence check's last good state).
void copy_count_nonfinite(const Stream& stream, std::int64_t n, const float* x, float* y,
                          std::int64_t* out);

}  // namespace asgd
