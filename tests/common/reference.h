// Float64 reference implementations of every kernel, and helpers shared by the host and GPU
// test tiers. Plain loops, written for obviousness rather than speed.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace asgd::testing {

// Uniform random values in [lo, hi); never all zeros.
inline std::vector<float> random_vector(std::size_t n, std::uint64_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline std::vector<std::int32_t> random_labels(std::size_t n, int classes, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> dist(0, classes - 1);
  std::vector<std::int32_t> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// Checks |actual - expected| <= atol + rtol * |expected| element-wise; reports the first few
// mismatches with their index.
inline ::testing::AssertionResult all_close(const std::vector<float>& actual,
                                            const std::vector<double>& expected, double rtol,
                                            double atol) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure()
           << "size " << actual.size() << " != expected " << expected.size();
  int bad = 0;
  auto failure = ::testing::AssertionFailure();
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double diff = std::abs(static_cast<double>(actual[i]) - expected[i]);
    if (!(diff <= atol + rtol * std::abs(expected[i]))) {
      if (bad < 5)
        failure << "[" << i << "] got " << actual[i] << " expected " << expected[i] << "; ";
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return failure << bad << " of " << actual.size() << " elements differ";
}

// Row-major C = alpha * op(A) op(B) + beta * C in double.
inline std::vector<double> ref_gemm(bool ta, bool tb, std::int64_t m, std::int64_t n,
                                    std::int64_t k, double alpha, const std::vector<float>& a,
                                    std::int64_t lda, const std::vector<float>& b,
                                    std::int64_t ldb, double beta, const std::vector<float>& c,
                                    std::int64_t ldc) {
  std::vector<double> out(c.begin(), c.end());
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (std::int64_t p = 0; p < k; ++p) {
        const double av = ta ? a[p * lda + i] : a[i * lda + p];
        const double bv = tb ? b[j * ldb + p] : b[p * ldb + j];
        acc += av * bv;
      }
      out[i * ldc + j] = alpha * acc + beta * static_cast<double>(c[i * ldc + j]);
    }
  return out;
}

inline std::vector<double> ref_bias_activation_forward(bool relu, std::int64_t rows,
                                                       std::int64_t cols,
                                                       const std::vector<float>& bias,
                                                       const std::vector<float>& z) {
  std::vector<double> out(z.size());
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      const double v = static_cast<double>(z[r * cols + c]) + bias[c];
      out[r * cols + c] = relu ? std::max(v, 0.0) : v;
    }
  return out;
}

struct RefBackward {
  std::vector<double> dz;
  std::vector<double> dbias;
};
inline RefBackward ref_bias_activation_backward(bool relu, std::int64_t rows, std::int64_t cols,
                                                const std::vector<float>& y,
                                                const std::vector<float>& dy) {
  RefBackward out{std::vector<double>(dy.size()), std::vector<double>(cols, 0.0)};
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      const double g = (!relu || y[r * cols + c] > 0) ? dy[r * cols + c] : 0.0;
      out.dz[r * cols + c] = g;
      out.dbias[c] += g;
    }
  return out;
}

struct RefLoss {
  std::vector<double> dlogits;
  double loss_sum = 0;
  std::int64_t correct = 0;
};

// The first maximum among the non-NaN entries; 0 when all are NaN (kernels/loss.h).
inline std::int64_t ref_argmax(const float* row, std::int64_t cols) {
  std::int64_t best = -1;
  for (std::int64_t c = 0; c < cols; ++c)
    if (!std::isnan(row[c]) && (best < 0 || row[c] > row[best])) best = c;
  return best < 0 ? 0 : best;
}

// Rows of `cols` (>= 72) logits with NaNs where a warp's lanes and strides would meet them: each
// label is the class the contract predicts (kernels/loss.h: a NaN is never the maximum, a row of
// NaNs predicts 0), so every row counts as correct.
inline std::vector<float> nan_logit_rows(std::int64_t cols, std::vector<std::int32_t>& labels) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> logits;
  auto row = [&](std::initializer_list<std::pair<std::int64_t, float>> set, std::int32_t label) {
    std::vector<float> z(static_cast<std::size_t>(cols));
    for (std::int64_t c = 0; c < cols; ++c)
      z[c] = -1.0f + 0.01f * static_cast<float>(c % 17);
    for (const auto& [c, v] : set)
      z[c] = v;
    logits.insert(logits.end(), z.begin(), z.end());
    labels.push_back(label);
  };
  row({{1, nan}, {33, 5.0f}}, 33);              // lane 1 holds a NaN, then the maximum
  row({{0, nan}, {40, 5.0f}}, 40);              // a NaN in the first column
  row({{2, 5.0f}, {34, nan}, {66, nan}}, 2);    // NaNs after the maximum
  row({{7, nan}, {39, 5.0f}, {71, 5.0f}}, 39);  // tied maxima behind a NaN
  logits.insert(logits.end(), static_cast<std::size_t>(cols), nan);  // all NaN: class 0
  labels.push_back(0);
  return logits;
}

inline RefLoss ref_softmax_cross_entropy(std::int64_t rows, std::int64_t cols,
                                         const std::vector<float>& logits,
                                         const std::vector<std::int32_t>& labels,
                                         double grad_scale) {
  RefLoss out{std::vector<double>(logits.size()), 0.0, 0};
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* z = &logits[r * cols];
    double mx = z[0];
    for (std::int64_t c = 1; c < cols; ++c) mx = std::max(mx, static_cast<double>(z[c]));
    double s = 0;
    for (std::int64_t c = 0; c < cols; ++c) s += std::exp(z[c] - mx);
    const double lse = mx + std::log(s);
    out.loss_sum += lse - z[labels[r]];
    for (std::int64_t c = 0; c < cols; ++c)
      out.dlogits[r * cols + c] = grad_scale * (std::exp(z[c] - lse) - (c == labels[r] ? 1 : 0));
    if (ref_argmax(z, cols) == labels[r]) ++out.correct;
  }
  return out;
}

inline RefLoss ref_sigmoid_cross_entropy(std::int64_t rows, std::int64_t cols,
                                         const std::vector<float>& logits,
                                         const std::vector<std::int32_t>& labels,
                                         double grad_scale) {
  RefLoss out{std::vector<double>(logits.size()), 0.0, 0};
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* z = &logits[r * cols];
    for (std::int64_t c = 0; c < cols; ++c) {
      const double t = cols == 1 ? (labels[r] == 1 ? 1.0 : 0.0) : (labels[r] == c ? 1.0 : 0.0);
      const double x = z[c];
      // log(1 + exp(-|x|)) + max(x, 0) - x * t, the stable form of the logistic loss.
      out.loss_sum += std::log1p(std::exp(-std::abs(x))) + std::max(x, 0.0) - x * t;
      out.dlogits[r * cols + c] = grad_scale * (1.0 / (1.0 + std::exp(-x)) - t);
    }
    const bool ok = cols == 1 ? ((z[0] > 0) == (labels[r] == 1)) : ref_argmax(z, cols) == labels[r];
    if (ok) ++out.correct;
  }
  return out;
}

}  // namespace asgd::testing
