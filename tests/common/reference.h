// Float64 reference implementations of every kernel, and helpers shared by the host and GPU
// test tiers. Plain loops, written for obviousness rather than speed.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
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

inline std::int64_t ref_argmax(const float* row, std::int64_t cols) {
  return std::max_element(row, row + cols) - row;
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
