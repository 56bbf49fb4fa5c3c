#include "kernels/loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/detail/host_dispatch.h"

namespace asgd {
namespace {
constexpr std::int64_t kGrain = 1 << 14;

void check_args(std::int64_t rows, std::int64_t cols, const float* logits,
                const std::int32_t* labels) {
  ASGD_CHECK(rows >= 0 && cols >= 1, "loss on a {}x{} logit matrix", rows, cols);
  ASGD_CHECK(rows == 0 || (logits && labels), "loss with null logits or labels");
}

// Sums per-row (loss, correct) over a row partition; each thread keeps its own partials so the
// result does not depend on scheduling for a given thread count.
template <typename RowFn>
void rows_reduce(const Stream& stream, std::int64_t rows, std::int64_t cols, RowFn&& row_fn,
                 double* loss_sum, std::int64_t* correct) {
  const int threads = detail::host_threads(stream, rows * cols, kGrain);
  std::vector<double> loss(threads, 0.0);
  std::vector<std::int64_t> hits(threads, 0);
  auto body = [&](int t, std::int64_t r0, std::int64_t r1) {
    double l = 0.0;
    std::int64_t h = 0;
    for (std::int64_t r = r0; r < r1; ++r) row_fn(r, l, h);
    loss[t] = l;
    hits[t] = h;
  };
  detail::run_partitioned(threads, rows, body);
  double l = 0.0;
  std::int64_t h = 0;
  for (int t = 0; t < threads; ++t) {
    l += loss[t];
    h += hits[t];
  }
  if (loss_sum) *loss_sum += l;
  if (correct) *correct += h;
}

// The first maximum among the non-NaN columns; 0 for a row of NaNs (the CUDA kernels agree).
inline std::int64_t argmax(const float* z, std::int64_t cols) {
  std::int64_t best = -1;
  for (std::int64_t c = 0; c < cols; ++c)
    if (!std::isnan(z[c]) && (best < 0 || z[c] > z[best])) best = c;
  return best < 0 ? 0 : best;
}
}  // namespace

void softmax_cross_entropy(const Stream& stream, std::int64_t rows, std::int64_t cols,
                           const float* logits, const std::int32_t* labels, float grad_scale,
                           float* dlogits, double* loss_sum, std::int64_t* correct) {
  check_args(rows, cols, logits, labels);
  if (rows == 0) return;
  ASGD_DISPATCH_CUDA(stream, softmax_cross_entropy(stream, rows, cols, logits, labels, grad_scale,
                                                   dlogits, loss_sum, correct));
  auto row_fn = [&](std::int64_t r, double& loss, std::int64_t& hits) {
    const float* z = logits + r * cols;
    const std::int32_t label = labels[r];
    float mx = z[0];
    for (std::int64_t c = 1; c < cols; ++c) mx = std::max(mx, z[c]);
    float sum = 0.0f;
    for (std::int64_t c = 0; c < cols; ++c) sum += std::exp(z[c] - mx);
    const float log_sum = std::log(sum);
    loss += static_cast<double>(log_sum) - static_cast<double>(z[label] - mx);
    if (argmax(z, cols) == label) ++hits;
    if (dlogits) {
      // Written after the reads above because dlogits may alias logits.
      float* d = dlogits + r * cols;
      const float inv = 1.0f / sum;
      for (std::int64_t c = 0; c < cols; ++c) d[c] = grad_scale * std::exp(z[c] - mx) * inv;
      d[label] -= grad_scale;
    }
  };
  rows_reduce(stream, rows, cols, row_fn, loss_sum, correct);
}

void sigmoid_cross_entropy(const Stream& stream, std::int64_t rows, std::int64_t cols,
                           const float* logits, const std::int32_t* labels, float grad_scale,
                           float* dlogits, double* loss_sum, std::int64_t* correct) {
  check_args(rows, cols, logits, labels);
  if (rows == 0) return;
  ASGD_DISPATCH_CUDA(stream, sigmoid_cross_entropy(stream, rows, cols, logits, labels, grad_scale,
                                                   dlogits, loss_sum, correct));
  auto row_fn = [&](std::int64_t r, double& loss, std::int64_t& hits) {
    const float* z = logits + r * cols;
    const std::int32_t label = labels[r];
    const bool hit = cols == 1 ? ((z[0] > 0.0f) == (label == 1)) : argmax(z, cols) == label;
    if (hit) ++hits;
    float* d = dlogits ? dlogits + r * cols : nullptr;
    for (std::int64_t c = 0; c < cols; ++c) {
      const float x = z[c];
      const float t = (cols == 1 ? label == 1 : label == c) ? 1.0f : 0.0f;
      loss += static_cast<double>(std::log1p(std::exp(-std::abs(x))) + std::max(x, 0.0f) - x * t);
      if (d) d[c] = grad_scale * (1.0f / (1.0f + std::exp(-x)) - t);
    }
  };
  rows_reduce(stream, rows, cols, row_fn, loss_sum, correct);
}

}  // namespace asgd
