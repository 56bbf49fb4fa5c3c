#include "kernels/sgd.h"

#include "kernels/detail/host_dispatch.h"

namespace asgd {
namespace {
constexpr std::int64_t kGrain = 1 << 16;
}

void sgd_step(const Stream& stream, std::int64_t n, float lr, const float* g, float* w) {
  ASGD_CHECK(n >= 0, "sgd_step on {} elements", n);
  if (n == 0) return;
  ASGD_DISPATCH_CUDA(stream, sgd_step(stream, n, lr, g, w));
  detail::parallel_for(stream, n, kGrain, [&](std::int64_t i0, std::int64_t i1) {
    const float* __restrict gg = g;
    float* __restrict ww = w;
    for (std::int64_t i = i0; i < i1; ++i) ww[i] -= lr * gg[i];
  });
}

void axpby(const Stream& stream, std::int64_t n, float alpha, const float* x, float beta,
           float* y) {
  ASGD_CHECK(n >= 0, "axpby on {} elements", n);
  if (n == 0) return;
  ASGD_DISPATCH_CUDA(stream, axpby(stream, n, alpha, x, beta, y));
  detail::parallel_for(stream, n, kGrain, [&](std::int64_t i0, std::int64_t i1) {
    const float* __restrict xx = x;
    float* __restrict yy = y;
    if (beta == 0.0f) {
      for (std::int64_t i = i0; i < i1; ++i) yy[i] = alpha * xx[i];
    } else {
      for (std::int64_t i = i0; i < i1; ++i) yy[i] = alpha * xx[i] + beta * yy[i];
    }
  });
}

void fill(const Stream& stream, std::int64_t n, float value, float* x) {
  ASGD_CHECK(n >= 0, "fill of {} elements", n);
  if (n == 0) return;
  ASGD_DISPATCH_CUDA(stream, fill(stream, n, value, x));
  detail::parallel_for(stream, n, kGrain, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i) x[i] = value;
  });
}

}  // namespace asgd
