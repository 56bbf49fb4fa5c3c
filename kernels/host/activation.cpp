#include "kernels/activation.h"

#include <algorithm>

#include "kernels/detail/host_dispatch.h"
#include "kernels/sgd.h"

namespace asgd {
namespace {
constexpr std::int64_t kGrain = 1 << 15;  // elements per thread before threading pays
}

void bias_activation_forward(const Stream& stream, Activation act, std::int64_t rows,
                             std::int64_t cols, const float* bias, float* z) {
  ASGD_CHECK(rows >= 0 && cols >= 0, "negative shape {}x{}", rows, cols);
  if (rows == 0 || cols == 0) return;
  ASGD_DISPATCH_CUDA(stream, bias_activation_forward(stream, act, rows, cols, bias, z));
  const bool relu = act == Activation::kRelu;
  detail::parallel_for(stream, rows, std::max<std::int64_t>(1, kGrain / cols),
                       [&](std::int64_t r0, std::int64_t r1) {
                         for (std::int64_t r = r0; r < r1; ++r) {
                           float* __restrict row = z + r * cols;
                           const float* __restrict b = bias;
                           if (relu) {
                             for (std::int64_t c = 0; c < cols; ++c)
                               row[c] = std::max(row[c] + b[c], 0.0f);
                           } else {
                             for (std::int64_t c = 0; c < cols; ++c) row[c] += b[c];
                           }
                         }
                       });
}

void bias_activation_backward(const Stream& stream, Activation act, std::int64_t rows,
                              std::int64_t cols, const float* y, float* dy, float* dbias) {
  ASGD_CHECK(rows >= 0 && cols >= 0, "negative shape {}x{}", rows, cols);
  if (cols == 0) return;
  if (rows == 0) {
    if (dbias) fill(stream, cols, 0.0f, dbias);
    return;
  }
  ASGD_DISPATCH_CUDA(stream, bias_activation_backward(stream, act, rows, cols, y, dy, dbias));
  const bool relu = act == Activation::kRelu;
  // Threads split the columns so that each owns its slice of dbias and no reduction is needed.
  detail::parallel_for(stream, cols, std::max<std::int64_t>(16, kGrain / rows),
                       [&](std::int64_t c0, std::int64_t c1) {
                         if (dbias) std::fill(dbias + c0, dbias + c1, 0.0f);
                         for (std::int64_t r = 0; r < rows; ++r) {
                           float* __restrict g = dy + r * cols;
                           const float* __restrict out = y + r * cols;
                           if (relu) {
                             for (std::int64_t c = c0; c < c1; ++c)
                               g[c] = out[c] > 0.0f ? g[c] : 0.0f;
                           }
                           if (dbias) {
                             float* __restrict db = dbias;
                             for (std::int64_t c = c0; c < c1; ++c) db[c] += g[c];
                           }
                         }
                       });
}

}  // namespace asgd
