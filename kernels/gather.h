// Mini-batch gather on the device: rows of a resident data set picked by an index vector.
// Asynchronous on CUDA.
#pragma once

#include <cstdint>

#include "runtime/device.h"

namespace asgd {

// For i in [0, count): x_out[i][:] = x[index[i]][:] (cols features) and y_out[i] = y[index[i]].
// Every index must lie in [0, rows); y and y_out may be null.
void gather_rows(const Stream& stream, std::int64_t count, std::int64_t cols, const float* x,
                 const std::int32_t* y, std::int64_t rows, const std::int32_t* index,
                 float* x_out, std::int32_t* y_out);

}  // namespace asgd
