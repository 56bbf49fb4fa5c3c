// Element-wise vector updates. Asynchronous on CUDA.
#pragma once

#include <cstdint>

#include "runtime/device.h"

namespace asgd {

// Plain SGD step: w[i] <- w[i] - lr * g[i].
void sgd_step(const Stream& stream, std::int64_t n, float lr, const float* g, float* w);

// y[i] <- alpha * x[i] + beta * y[i]. With beta == 0, y is not read (as in BLAS), so it may
// hold anything, NaN included.
void axpby(const Stream& stream, std::int64_t n, float alpha, const float* x, float beta,
           float* y);

// x[i] <- value.
void fill(const Stream& stream, std::int64_t n, float value, float* x);

}  // namespace asgd
