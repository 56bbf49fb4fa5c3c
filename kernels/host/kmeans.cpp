#include "kernels/kmeans.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/detail/host_dispatch.h"
#include "kernels/gemm.h"

namespace asgd {
namespace {
constexpr std::int64_t kGrain = 1 << 14;
// Columns one gradient work unit sums at once: the double accumulators stay in L1 and a row's
// slice is one or a few cache lines.
constexpr std::int64_t kColumnBlock = 128;

void check_shape(std::int64_t rows, std::int64_t k, std::int64_t d) {
  ASGD_CHECK(rows >= 0 && k >= 1 && d >= 1, "K-Means on {} rows, {} centres, {} dimensions", rows,
             k, d);
}

// Rows per parallel_for unit so that a thread gets at least kGrain elements of `cols` each.
std::int64_t row_grain(std::int64_t cols) {
  return std::max<std::int64_t>(1, kGrain / std::max<std::int64_t>(1, cols));
}
}  // namespace

void row_squared_norms(const Stream& stream, std::int64_t rows, std::int64_t cols, const float* x,
                       float* out) {
  ASGD_CHECK(rows >= 0 && cols >= 1, "row norms of a {}x{} matrix", rows, cols);
  if (rows == 0) return;
  ASGD_CHECK(x && out, "row norms with a null matrix or output");
  ASGD_DISPATCH_CUDA(stream, row_squared_norms(stream, rows, cols, x, out));
  detail::parallel_for(stream, rows, row_grain(cols), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const float* row = x + r * cols;
      double s = 0.0;
      for (std::int64_t c = 0; c < cols; ++c)
        s += static_cast<double>(row[c]) * row[c];
      out[r] = static_cast<float>(s);
    }
  });
}

void kmeans_assign(const Stream& stream, std::int64_t rows, std::int64_t k, std::int64_t d,
                   const float* x, const float* dots, const float* centre_norms, float loss_scale,
                   std::int32_t* assign, double* loss_sum) {
  check_shape(rows, k, d);
  ASGD_CHECK(k <= INT32_MAX, "{} centres do not fit int32 assignments", k);
  if (rows == 0 || (!assign && !loss_sum)) return;
  ASGD_CHECK(dots && centre_norms && (x || !loss_sum),
             "kmeans_assign with null products, centre norms or rows");
  ASGD_DISPATCH_CUDA(stream, kmeans_assign(stream, rows, k, d, x, dots, centre_norms, loss_scale,
                                           assign, loss_sum));
  // Per-thread partial losses summed in thread order: the result does not depend on
  // scheduling for a given thread count.
  const int threads = detail::host_threads(stream, rows * (k + d), kGrain);
  std::vector<double> partial(threads, 0.0);
  auto body = [&](int t, std::int64_t r0, std::int64_t r1) {
    double loss = 0.0;
    for (std::int64_t r = r0; r < r1; ++r) {
      const float* dr = dots + r * k;
      std::int64_t best = 0;
      float best_v = centre_norms[0] - 2.0f * dr[0];
      for (std::int64_t j = 1; j < k; ++j) {
        const float v = centre_norms[j] - 2.0f * dr[j];
        if (v < best_v) {
          best_v = v;
          best = j;
        }
      }
      if (assign) assign[r] = static_cast<std::int32_t>(best);
      if (loss_sum) {
        const float* xr = x + r * d;
        double xx = 0.0;
        for (std::int64_t c = 0; c < d; ++c)
          xx += static_cast<double>(xr[c]) * xr[c];
        const double d2 = xx + best_v;
        // Not std::max: that would turn a NaN distance into 0.
        loss += static_cast<double>(loss_scale) * (d2 < 0.0 ? 0.0 : d2);
      }
    }
    partial[t] = loss;
  };
  detail::run_partitioned(threads, rows, body);
  if (loss_sum) {
    double total = 0.0;
    for (double p : partial)
      total += p;
    *loss_sum += total;
  }
}

void kmeans_gradient(const Stream& stream, std::int64_t rows, std::int64_t k, std::int64_t d,
                     const float* x, const std::int32_t* assign, const float* centres,
                     float grad_scale, float* grad) {
  check_shape(rows, k, d);
  ASGD_CHECK(centres && grad && (rows == 0 || (x && assign)),
             "kmeans_gradient with a null pointer");
  ASGD_DISPATCH_CUDA(stream,
                     kmeans_gradient(stream, rows, k, d, x, assign, centres, grad_scale, grad));
  // A counting sort groups the rows by centre, keeping row order inside each group, so every
  // (centre, column block) unit below sums its rows in the same order whatever the threads.
  std::vector<std::int64_t> start(static_cast<std::size_t>(k) + 1, 0);
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int32_t a = assign[r];
    if (a >= 0 && a < k) ++start[static_cast<std::size_t>(a) + 1];
  }
  for (std::int64_t j = 0; j < k; ++j)
    start[j + 1] += start[j];
  std::vector<std::int64_t> members(static_cast<std::size_t>(start[k]));
  {
    std::vector<std::int64_t> next(start.begin(), start.end() - 1);
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int32_t a = assign[r];
      if (a >= 0 && a < k) members[next[a]++] = r;
    }
  }
  const std::int64_t blocks = (d + kColumnBlock - 1) / kColumnBlock;
  const std::int64_t units = k * blocks;
  const std::int64_t work = std::max<std::int64_t>(1, (rows + k) * d);
  const std::int64_t unit_grain = std::max<std::int64_t>(1, units * kGrain / work);
  detail::parallel_for(stream, units, unit_grain, [&](std::int64_t u0, std::int64_t u1) {
    double acc[kColumnBlock];
    for (std::int64_t u = u0; u < u1; ++u) {
      const std::int64_t j = u / blocks;
      const std::int64_t c0 = (u % blocks) * kColumnBlock;
      const std::int64_t width = std::min(kColumnBlock, d - c0);
      const float* cj = centres + j * d + c0;
      std::fill_n(acc, width, 0.0);
      // Summing c - x rather than n*c - sum(x) keeps the error relative to the spread of the
      // rows around the centre, not to the centre's distance from the origin.
      for (std::int64_t m = start[j]; m < start[j + 1]; ++m) {
        const float* xr = x + members[m] * d + c0;
        for (std::int64_t c = 0; c < width; ++c)
          acc[c] += static_cast<double>(cj[c]) - xr[c];
      }
      float* g = grad + j * d + c0;
      for (std::int64_t c = 0; c < width; ++c)
        g[c] = static_cast<float>(grad_scale * acc[c]);
    }
  });
}

void kmeans_nearest(const Stream& stream, std::int64_t rows, std::int64_t k, std::int64_t d,
                    const float* x, const float* centres, float* dots, float* centre_norms,
                    float loss_scale, std::int32_t* assign, double* loss_sum) {
  check_shape(rows, k, d);
  if (rows == 0) return;
  gemm(stream, Trans::kNo, Trans::kYes, rows, k, d, 1.0f, x, d, centres, d, 0.0f, dots, k);
  row_squared_norms(stream, k, d, centres, centre_norms);
  kmeans_assign(stream, rows, k, d, x, dots, centre_norms, loss_scale, assign, loss_sum);
}

}  // namespace asgd
