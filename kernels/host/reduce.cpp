#include "kernels/reduce.h"

#include <cmath>
#include <vector>

#include "kernels/detail/host_dispatch.h"

namespace asgd {
namespace {
constexpr std::int64_t kGrain = 1 << 16;
constexpr std::int64_t kBlock = 1024;  // float partial sums over short blocks, double across

// Sums f(i) over [0, n). Each block of kBlock terms is summed in float (vectorisable), blocks
// are summed in double: accurate to ~1e-7 relative for any n, and deterministic for a given
// thread count.
template <typename T, typename Term>
T reduce(const Stream& stream, std::int64_t n, Term&& term) {
  const int threads = detail::host_threads(stream, n, kGrain);
  std::vector<T> partial(threads, T{0});
  auto body = [&](int t, std::int64_t i0, std::int64_t i1) {
    T acc{0};
    for (std::int64_t b = i0; b < i1; b += kBlock) {
      const std::int64_t e = std::min(i1, b + kBlock);
      if constexpr (std::is_floating_point_v<T>) {
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (std::int64_t i = b; i < e; ++i) s += term(i);
        acc += s;
      } else {
        T s{0};
        for (std::int64_t i = b; i < e; ++i) s += term(i);
        acc += s;
      }
    }
    partial[t] = acc;
  };
  detail::run_partitioned(threads, n, body);
  T total{0};
  for (const T& p : partial) total += p;
  return total;
}
}  // namespace

void reduce_sum(const Stream& stream, std::int64_t n, const float* x, double* out) {
  ASGD_CHECK(n >= 0, "reduce over {} elements", n);
  ASGD_DISPATCH_CUDA(stream, reduce_sum(stream, n, x, out));
  *out = reduce<double>(stream, n, [x](std::int64_t i) { return x[i]; });
}

void reduce_dot(const Stream& stream, std::int64_t n, const float* x, const float* y,
                double* out) {
  ASGD_CHECK(n >= 0, "reduce over {} elements", n);
  ASGD_DISPATCH_CUDA(stream, reduce_dot(stream, n, x, y, out));
  *out = reduce<double>(stream, n, [x, y](std::int64_t i) { return x[i] * y[i]; });
}

void reduce_squared_norm(const Stream& stream, std::int64_t n, const float* x, double* out) {
  ASGD_CHECK(n >= 0, "reduce over {} elements", n);
  ASGD_DISPATCH_CUDA(stream, reduce_squared_norm(stream, n, x, out));
  *out = reduce<double>(stream, n, [x](std::int64_t i) { return x[i] * x[i]; });
}

void count_nonfinite(const Stream& stream, std::int64_t n, const float* x, std::int64_t* out) {
  ASGD_CHECK(n >= 0, "reduce over {} elements", n);
  ASGD_DISPATCH_CUDA(stream, count_nonfinite(stream, n, x, out));
  *out = reduce<std::int64_t>(stream, n, [x](std::int64_t i) -> std::int64_t {
    return std::isfinite(x[i]) ? 0 : 1;
  });
}

void copy_count_nonfinite(const Stream& stream, std::int64_t n, const float* x, float* y,
                          std::int64_t* out) {
  ASGD_CHECK(n >= 0, "reduce over {} elements", n);
  ASGD_DISPATCH_CUDA(stream, copy_count_nonfinite(stream, n, x, y, out));
  *out = reduce<std::int64_t>(stream, n, [x, y](std::int64_t i) -> std::int64_t {
    y[i] = x[i];
    return std::isfinite(x[i]) ? 0 : 1;
  });
}

}  // namespace asgd
