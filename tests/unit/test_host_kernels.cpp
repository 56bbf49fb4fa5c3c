// Every host kernel against the float64 references of tests/common/reference.h, on random
// inputs over several shapes, including edge sizes, with 1 and 2 threads.
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/activation.h"
#include "kernels/gather.h"
#include "kernels/gemm.h"
#include "kernels/loss.h"
#include "kernels/reduce.h"
#include "kernels/sgd.h"
#include "runtime/error.h"
#include "tests/common/reference.h"

namespace asgd {
namespace {
using testing::all_close;
using testing::random_labels;
using testing::random_vector;

class GemmTest
    : public ::testing::TestWithParam<std::tuple<int, int, int, bool, bool, int>> {};

TEST_P(GemmTest, MatchesFloat64Reference) {
  const auto [m, n, k, ta, tb, threads] = GetParam();
  const Stream s = Stream::host(threads);
  // Leading dimensions larger than the logical width check strided access.
  const std::int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
  const auto a = random_vector((ta ? k : m) * lda, 1);
  const auto b = random_vector((tb ? n : k) * ldb, 2);
  auto c = random_vector(m * ldc, 3);
  const auto expected = testing::ref_gemm(ta, tb, m, n, k, 0.7, a, lda, b, ldb, -0.3, c, ldc);
  gemm(s, ta ? Trans::kYes : Trans::kNo, tb ? Trans::kYes : Trans::kNo, m, n, k, 0.7f, a.data(),
       lda, b.data(), ldb, -0.3f, c.data(), ldc);
  EXPECT_TRUE(all_close(c, expected, 1e-4, 1e-5 * std::sqrt(static_cast<double>(k))));
}

INSTANTIATE_TEST_SUITE_P(Shapes, GemmTest,
                         ::testing::Values(std::make_tuple(1, 1, 1, false, false, 1),
                                           std::make_tuple(7, 13, 5, false, true, 1),
                                           std::make_tuple(33, 17, 65, true, false, 2),
                                           std::make_tuple(64, 10, 256, false, true, 1),
                                           std::make_tuple(31, 129, 9, true, true, 2),
                                           std::make_tuple(1, 300, 784, false, true, 1)));

TEST(GemmTest, RejectsTooSmallLeadingDimension) {
  std::vector<float> a(16), b(16), c(16);
  EXPECT_THROW(gemm(Stream::host(), Trans::kNo, Trans::kNo, 4, 4, 4, 1.0f, a.data(), 3, b.data(),
                    4, 0.0f, c.data(), 4),
               Error);
}

class ElementwiseTest : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(ElementwiseTest, BiasActivationForward) {
  const auto [rows, cols, threads] = GetParam();
  const Stream s = Stream::host(threads);
  for (bool relu : {false, true}) {
    auto z = random_vector(rows * cols, 4);
    const auto bias = random_vector(cols, 5);
    const auto expected = testing::ref_bias_activation_forward(relu, rows, cols, bias, z);
    bias_activation_forward(s, relu ? Activation::kRelu : Activation::kIdentity, rows, cols,
                            bias.data(), z.data());
    EXPECT_TRUE(all_close(z, expected, 1e-6, 1e-7)) << "relu=" << relu;
  }
}

TEST_P(ElementwiseTest, BiasActivationBackward) {
  const auto [rows, cols, threads] = GetParam();
  const Stream s = Stream::host(threads);
  for (bool relu : {false, true}) {
    auto y = random_vector(rows * cols, 6);
    for (auto& v : y) v = std::max(v, 0.0f);  // a ReLU output: about half exact zeros
    auto dy = random_vector(rows * cols, 7);
    std::vector<float> dbias(cols, 123.0f);  // must be overwritten, not accumulated
    const auto expected = testing::ref_bias_activation_backward(relu, rows, cols, y, dy);
    bias_activation_backward(s, relu ? Activation::kRelu : Activation::kIdentity, rows, cols,
                             y.data(), dy.data(), dbias.data());
    EXPECT_TRUE(all_close(dy, expected.dz, 0, 0)) << "relu=" << relu;
    // Float column sums over `rows` terms: error grows with the number of rows.
    EXPECT_TRUE(all_close(dbias, expected.dbias, 1e-5, 1e-6 * rows)) << "relu=" << relu;
  }
}

TEST_P(ElementwiseTest, SoftmaxCrossEntropy) {
  const auto [rows, cols, threads] = GetParam();
  if (cols < 2) GTEST_SKIP() << "softmax needs two classes";
  const Stream s = Stream::host(threads);
  auto logits = random_vector(rows * cols, 8, -4.0f, 4.0f);
  const auto labels = random_labels(rows, cols, 9);
  const auto expected = testing::ref_softmax_cross_entropy(rows, cols, logits, labels, 0.25);
  std::vector<float> d(logits.size());
  double loss = 1.5;  // accumulates
  std::int64_t correct = 2;
  softmax_cross_entropy(s, rows, cols, logits.data(), labels.data(), 0.25f, d.data(), &loss,
                        &correct);
  EXPECT_TRUE(all_close(d, expected.dlogits, 1e-5, 1e-6));
  EXPECT_NEAR(loss, 1.5 + expected.loss_sum, 1e-5 * rows);
  EXPECT_EQ(correct, 2 + expected.correct);
  // In place (dlogits aliasing logits) gives the same gradient.
  softmax_cross_entropy(s, rows, cols, logits.data(), labels.data(), 0.25f, logits.data(),
                        nullptr, nullptr);
  EXPECT_TRUE(all_close(logits, expected.dlogits, 1e-5, 1e-6));
}

TEST(LossTest, ArgmaxSkipsNaNLogits) {
  const std::int64_t cols = 100;
  std::vector<std::int32_t> labels;
  const std::vector<float> logits = testing::nan_logit_rows(cols, labels);
  const auto rows = static_cast<std::int64_t>(labels.size());
  for (const int threads : {1, 2}) {
    const Stream s = Stream::host(threads);
    std::int64_t softmax = 0, sigmoid = 0;
    softmax_cross_entropy(s, rows, cols, logits.data(), labels.data(), 1.0f, nullptr, nullptr,
                          &softmax);
    sigmoid_cross_entropy(s, rows, cols, logits.data(), labels.data(), 1.0f, nullptr, nullptr,
                          &sigmoid);
    EXPECT_EQ(softmax, rows) << threads << " threads";
    EXPECT_EQ(sigmoid, rows) << threads << " threads";
  }
}

TEST_P(ElementwiseTest, SigmoidCrossEntropy) {
  const auto [rows, cols, threads] = GetParam();
  const Stream s = Stream::host(threads);
  auto logits = random_vector(rows * cols, 10, -6.0f, 6.0f);
  const auto labels = random_labels(rows, cols == 1 ? 2 : cols, 11);
  const auto expected = testing::ref_sigmoid_cross_entropy(rows, cols, logits, labels, 0.5);
  std::vector<float> d(logits.size());
  double loss = 0;
  std::int64_t correct = 0;
  sigmoid_cross_entropy(s, rows, cols, logits.data(), labels.data(), 0.5f, d.data(), &loss,
                        &correct);
  EXPECT_TRUE(all_close(d, expected.dlogits, 1e-5, 1e-6));
  EXPECT_NEAR(loss, expected.loss_sum, 1e-5 * rows * cols);
  EXPECT_EQ(correct, expected.correct);
}

TEST_P(ElementwiseTest, GatherRows) {
  const auto [rows, cols, threads] = GetParam();
  const Stream s = Stream::host(threads);
  const auto x = random_vector(rows * cols, 12);
  const auto y = random_labels(rows, 10, 13);
  const std::int64_t count = 2 * rows + 1;
  std::vector<std::int32_t> index(count);
  for (std::int64_t i = 0; i < count; ++i) index[i] = static_cast<std::int32_t>((i * 7 + 3) % rows);
  std::vector<float> xo(count * cols);
  std::vector<std::int32_t> yo(count);
  gather_rows(s, count, cols, x.data(), y.data(), rows, index.data(), xo.data(), yo.data());
  for (std::int64_t i = 0; i < count; ++i) {
    ASSERT_EQ(yo[i], y[index[i]]) << i;
    for (std::int64_t c = 0; c < cols; ++c) ASSERT_EQ(xo[i * cols + c], x[index[i] * cols + c]);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ElementwiseTest,
                         ::testing::Values(std::make_tuple(1, 1, 1), std::make_tuple(1, 10, 1),
                                           std::make_tuple(7, 3, 2), std::make_tuple(64, 10, 1),
                                           std::make_tuple(65, 257, 2),
                                           std::make_tuple(300, 1031, 2),
                                           std::make_tuple(2049, 33, 2)));

TEST(GatherTest, RejectsIndexOutOfRange) {
  std::vector<float> x(6), xo(3);
  std::vector<std::int32_t> index{0, 6};
  EXPECT_THROW(gather_rows(Stream::host(), 2, 1, x.data(), nullptr, 6, index.data(), xo.data(),
                           nullptr),
               Error);
}

class VectorTest : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(VectorTest, SgdAxpbyFill) {
  const auto [n, threads] = GetParam();
  const Stream s = Stream::host(threads);
  const auto g = random_vector(n, 14);
  auto w = random_vector(n, 15);
  std::vector<double> expected(n);
  for (int i = 0; i < n; ++i) expected[i] = static_cast<double>(w[i]) - 0.05 * g[i];
  sgd_step(s, n, 0.05f, g.data(), w.data());
  EXPECT_TRUE(all_close(w, expected, 1e-6, 1e-7));

  for (int i = 0; i < n; ++i) expected[i] = 2.0 * g[i] - 0.5 * w[i];
  axpby(s, n, 2.0f, g.data(), -0.5f, w.data());
  EXPECT_TRUE(all_close(w, expected, 1e-6, 1e-7));

  // beta == 0 does not read y: a NaN there must not survive.
  std::vector<float> y(n, std::numeric_limits<float>::quiet_NaN());
  axpby(s, n, 0.5f, g.data(), 0.0f, y.data());
  for (int i = 0; i < n; ++i) expected[i] = 0.5 * g[i];
  EXPECT_TRUE(all_close(y, expected, 1e-7, 0));

  fill(s, n, 3.25f, w.data());
  EXPECT_TRUE(all_close(w, std::vector<double>(n, 3.25), 0, 0));
}

TEST_P(VectorTest, Reductions) {
  const auto [n, threads] = GetParam();
  const Stream s = Stream::host(threads);
  const auto x = random_vector(n, 16, -1.0f, 2.0f);
  const auto y = random_vector(n, 17);
  double sum = 0, dot = 0, sq = 0;
  for (int i = 0; i < n; ++i) {
    sum += x[i];
    dot += static_cast<double>(x[i]) * y[i];
    sq += static_cast<double>(x[i]) * x[i];
  }
  double out = -1;
  reduce_sum(s, n, x.data(), &out);
  EXPECT_NEAR(out, sum, 1e-6 * n);
  reduce_dot(s, n, x.data(), y.data(), &out);
  EXPECT_NEAR(out, dot, 1e-6 * n);
  reduce_squared_norm(s, n, x.data(), &out);
  EXPECT_NEAR(out, sq, 1e-6 * sq + 1e-6);
}

TEST_P(VectorTest, CountNonfinite) {
  const auto [n, threads] = GetParam();
  const Stream s = Stream::host(threads);
  auto x = random_vector(n, 18);
  std::int64_t count = -1;
  count_nonfinite(s, n, x.data(), &count);
  EXPECT_EQ(count, 0);
  x[n - 1] = std::numeric_limits<float>::quiet_NaN();
  x[n / 2] = std::numeric_limits<float>::infinity();
  x[0] = -std::numeric_limits<float>::infinity();
  count_nonfinite(s, n, x.data(), &count);
  EXPECT_EQ(count, n >= 3 ? 3 : (n == 2 ? 2 : 1));
}

TEST_P(VectorTest, CopyCountNonfinite) {
  const auto [n, threads] = GetParam();
  const Stream s = Stream::host(threads);
  auto x = random_vector(n, 19);
  x[n - 1] = std::numeric_limits<float>::quiet_NaN();
  x.at(0) = std::numeric_limits<float>::infinity();
  std::vector<float> y(static_cast<std::size_t>(n), 7.0f);
  std::int64_t count = -1;
  copy_count_nonfinite(s, n, x.data(), y.data(), &count);
  EXPECT_EQ(count, n >= 2 ? 2 : 1);
  // Bit for bit, NaN included.
  EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)), 0);
  x[n - 1] = 1.5f;
  x[0] = -2.5f;
  copy_count_nonfinite(s, n, x.data(), y.data(), &count);
  EXPECT_EQ(count, 0);
  EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)), 0);
}

INSTANTIATE_TEST_SUITE_P(Sizes, VectorTest,
                         ::testing::Values(std::make_tuple(1, 1), std::make_tuple(2, 1),
                                           std::make_tuple(7, 2), std::make_tuple(1023, 1),
                                           std::make_tuple(1025, 2),
                                           std::make_tuple(300007, 2),
                                           std::make_tuple(1 << 20, 1)));

}  // namespace
}  // namespace asgd
