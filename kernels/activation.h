// Fused bias + activation, forward and backward, on a row-major [rows x cols] matrix whose
// columns are the units (one row per sample). Asynchronous on CUDA.
#pragma once

#include <cstdint>

#include "runtime/device.h"

namespace asgd {

enum class Activation { kIdentity, kRelu };

// z[r][c] <- act(z[r][c] + bias[c]), in place.
void bias_activation_forward(const Stream& stream, Activation act, std::int64_t rows,
                             std::int64_t cols, const float* bias, float* z);

// Backward through the same op. On entry `dy` holds dL/dy for the forward output `y`; on exit
// it holds dL/dz (dy * act'(z), computed from y since relu'(z) = [y > 0]), and `dbias`
// (length cols) is overwritten with the column sums of dL/dz. `dbias` may be null.
void bias_activation_backward(const Stream& stream, Activation act, std::int64_t rows,
                              std::int64_t cols, const float* y, float* dy, float* dbias);

}  // namespace asgd
