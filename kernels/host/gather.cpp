#include "kernels/gather.h"

#include <cstring>

#include "kernels/detail/host_dispatch.h"

namespace asgd {

void gather_rows(const Stream& stream, std::int64_t count, std::int64_t cols, const float* x,
                 const std::int32_t* y, std::int64_t rows, const std::int32_t* index,
                 float* x_out, std::int32_t* y_out) {
  ASGD_CHECK(count >= 0 && cols >= 0 && rows >= 0, "gather of {} rows of {} from {} rows",
             count, cols, rows);
  ASGD_CHECK((y == nullptr) == (y_out == nullptr), "gather: labels in and out must both be given");
  if (count == 0) return;
  ASGD_DISPATCH_CUDA(stream, gather_rows(stream, count, cols, x, y, rows, index, x_out, y_out));
  // Checked up front: an exception must not escape an OpenMP region.
  for (std::int64_t i = 0; i < count; ++i)
    ASGD_CHECK(index[i] >= 0 && index[i] < rows, "gather index {} at position {} outside [0, {})",
               index[i], i, rows);
  const std::size_t row_bytes = static_cast<std::size_t>(cols) * sizeof(float);
  detail::parallel_for(stream, count, std::max<std::int64_t>(1, (1 << 16) / (cols + 1)),
                       [&](std::int64_t i0, std::int64_t i1) {
                         for (std::int64_t i = i0; i < i1; ++i) {
                           const std::int64_t src = index[i];
                           std::memcpy(x_out + i * cols, x + src * cols, row_bytes);
                           if (y) y_out[i] = y[src];
                         }
                       });
}

}  // namespace asgd
