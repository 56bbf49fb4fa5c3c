// Every CUDA kernel against the float64 references in tests/common/reference.h and against the
// host launcher on the same random inputs, over shapes that include 1, sizes that are not
// multiples of the warp or of the float4 width, and buffers offset from their alignment.
// Every test skips itself when no CUDA device is usable (and in a build without CUDA).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/activation.h"
#include "kernels/gather.h"
#include "kernels/gemm.h"
#include "kernels/loss.h"
#include "kernels/reduce.h"
#include "kernels/sgd.h"
#include "runtime/buffer.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "tests/common/cuda_fixture.h"
#include "tests/common/reference.h"

namespace asgd {
namespace {
using testing::all_close;
using testing::random_labels;
using testing::random_vector;

using CudaKernelTest = testing::CudaTest;
using testing::DeviceArray;
using testing::to_double;

// ---------------------------------------------------------------------------------------------
// GEMM

struct GemmShape {
  std::int64_t m, n, k;
};

TEST_F(CudaKernelTest, GemmMatchesReferenceAndHost) {
  const GemmShape shapes[] = {{1, 1, 1},     {7, 33, 1},   {33, 7, 65},     {64, 10, 784},
                              {1000, 33, 7}, {5, 1, 1000}, {257, 129, 1000}};
  std::uint64_t seed = 1;
  for (const GemmShape& sh : shapes) {
    for (const bool ta : {false, true}) {
      for (const bool tb : {false, true}) {
        for (const float beta : {0.0f, -0.5f}) {
          const std::int64_t pad = (sh.m + sh.n) % 2 == 0 ? 3 : 0;  // ld > minimal too
          const std::int64_t a_rows = ta ? sh.k : sh.m, a_cols = ta ? sh.m : sh.k;
          const std::int64_t b_rows = tb ? sh.n : sh.k, b_cols = tb ? sh.k : sh.n;
          const std::int64_t lda = a_cols + pad, ldb = b_cols + pad, ldc = sh.n + pad;
          SCOPED_TRACE(::testing::Message()
                       << "m=" << sh.m << " n=" << sh.n << " k=" << sh.k << " ta=" << ta
                       << " tb=" << tb << " beta=" << beta << " pad=" << pad);
          const auto a = random_vector(static_cast<std::size_t>(a_rows * lda), ++seed);
          const auto b = random_vector(static_cast<std::size_t>(b_rows * ldb), ++seed);
          const auto c0 = random_vector(static_cast<std::size_t>(sh.m * ldc), ++seed);
          const float alpha = 0.75f;
          const auto expected =
              testing::ref_gemm(ta, tb, sh.m, sh.n, sh.k, alpha, a, lda, b, ldb, beta, c0, ldc);

          DeviceArray<float> da(a, cuda()), db(b, cuda()), dc(c0, cuda());
          const Trans tra = ta ? Trans::kYes : Trans::kNo, trb = tb ? Trans::kYes : Trans::kNo;
          gemm(cuda(), tra, trb, sh.m, sh.n, sh.k, alpha, da.get(), lda, db.get(), ldb, beta,
               dc.get(), ldc);
          const auto got = dc.download(cuda());

          std::vector<float> host_c = c0;
          gemm(host(), tra, trb, sh.m, sh.n, sh.k, alpha, a.data(), lda, b.data(), ldb, beta,
               host_c.data(), ldc);

          // FP32 accumulation error grows like sqrt(k) on random data; TF32 (10-bit
          // mantissa) would exceed this by an order of magnitude at large k.
          const double atol = 1e-5 + 2e-5 * std::sqrt(static_cast<double>(sh.k));
          EXPECT_TRUE(all_close(got, expected, 1e-4, atol));
          EXPECT_TRUE(all_close(got, to_double(host_c), 1e-4, 2 * atol));
        }
      }
    }
  }
}

TEST_F(CudaKernelTest, GemmWithEmptyInnerDimensionScalesC) {
  const std::int64_t m = 5, n = 3, k = 0;
  const auto c0 = random_vector(m * n, 3);
  DeviceArray<float> dc(c0, cuda());
  DeviceArray<float> dummy(std::vector<float>(4, 1.0f), cuda());
  gemm(cuda(), Trans::kNo, Trans::kNo, m, n, k, 1.0f, dummy.get(), 1, dummy.get(), n, 2.0f,
       dc.get(), n);
  std::vector<double> expected(c0.size());
  for (std::size_t i = 0; i < c0.size(); ++i)
    expected[i] = 2.0 * c0[i];
  EXPECT_TRUE(all_close(dc.download(cuda()), expected, 1e-6, 0.0));
}

// ---------------------------------------------------------------------------------------------
// Bias + activation

struct MatShape {
  std::int64_t rows, cols;
};
const MatShape kMatShapes[] = {{1, 1},     {1, 7},    {7, 1},      {33, 10}, {64, 256},
                               {1000, 33}, {3, 4096}, {257, 1000}, {2048, 3}};

TEST_F(CudaKernelTest, BiasActivationForward) {
  std::uint64_t seed = 100;
  for (const MatShape& sh : kMatShapes) {
    for (const Activation act : {Activation::kIdentity, Activation::kRelu}) {
      const bool relu = act == Activation::kRelu;
      SCOPED_TRACE(::testing::Message()
                   << sh.rows << "x" << sh.cols << (relu ? " relu" : " identity"));
      const auto bias = random_vector(sh.cols, ++seed, -0.5f, 0.5f);
      const auto z = random_vector(sh.rows * sh.cols, ++seed);
      const auto expected = testing::ref_bias_activation_forward(relu, sh.rows, sh.cols, bias, z);

      DeviceArray<float> dbias(bias, cuda()), dz(z, cuda());
      bias_activation_forward(cuda(), act, sh.rows, sh.cols, dbias.get(), dz.get());
      const auto got = dz.download(cuda());
      std::vector<float> host_z = z;
      bias_activation_forward(host(), act, sh.rows, sh.cols, bias.data(), host_z.data());

      EXPECT_TRUE(all_close(got, expected, 1e-6, 1e-7));
      EXPECT_TRUE(all_close(got, to_double(host_z), 0.0, 0.0));  // one rounding each
    }
  }
}

TEST_F(CudaKernelTest, BiasActivationBackward) {
  std::uint64_t seed = 200;
  for (const MatShape& sh : kMatShapes) {
    for (const Activation act : {Activation::kIdentity, Activation::kRelu}) {
      for (const bool with_dbias : {true, false}) {
        const bool relu = act == Activation::kRelu;
        SCOPED_TRACE(::testing::Message()
                     << sh.rows << "x" << sh.cols << (relu ? " relu" : " identity")
                     << (with_dbias ? " dbias" : " no dbias"));
        // ReLU outputs: about half exactly zero, the rest positive.
        auto y = random_vector(sh.rows * sh.cols, ++seed);
        for (auto& v : y)
          v = v < 0.0f ? 0.0f : v;
        const auto dy = random_vector(sh.rows * sh.cols, ++seed);
        const auto expected = testing::ref_bias_activation_backward(relu, sh.rows, sh.cols, y, dy);

        DeviceArray<float> dyv(y, cuda()), ddy(dy, cuda());
        // Garbage in dbias: the kernel must overwrite, not accumulate.
        DeviceArray<float> ddbias(random_vector(sh.cols, ++seed, 5.0f, 9.0f), cuda());
        bias_activation_backward(cuda(), act, sh.rows, sh.cols, dyv.get(), ddy.get(),
                                 with_dbias ? ddbias.get() : nullptr);
        const auto got_dz = ddy.download(cuda());
        EXPECT_TRUE(all_close(got_dz, expected.dz, 0.0, 0.0));  // selection, no arithmetic

        std::vector<float> host_dy = dy, host_dbias(sh.cols, 0.0f);
        bias_activation_backward(host(), act, sh.rows, sh.cols, y.data(), host_dy.data(),
                                 with_dbias ? host_dbias.data() : nullptr);
        EXPECT_TRUE(all_close(got_dz, to_double(host_dy), 0.0, 0.0));
        if (with_dbias) {
          // Float sums of `rows` terms of magnitude <= 1.
          const double atol = 1e-6 + 2e-7 * static_cast<double>(sh.rows);
          const auto got_db = ddbias.download(cuda());
          EXPECT_TRUE(all_close(got_db, expected.dbias, 1e-5, atol));
          EXPECT_TRUE(all_close(got_db, to_double(host_dbias), 1e-5, 2 * atol));
        }
      }
    }
  }
}

TEST_F(CudaKernelTest, ReluLetsNaNThrough) {
  const std::vector<float> bias = {0.0f, 1.0f, -1.0f};
  std::vector<float> z = {std::numeric_limits<float>::quiet_NaN(), -5.0f, 0.5f};
  DeviceArray<float> dbias(bias, cuda()), dz(z, cuda());
  bias_activation_forward(cuda(), Activation::kRelu, 1, 3, dbias.get(), dz.get());
  const auto got = dz.download(cuda());
  EXPECT_TRUE(std::isnan(got[0]));
  EXPECT_EQ(got[1], 0.0f);
  EXPECT_EQ(got[2], 0.0f);
}

// ---------------------------------------------------------------------------------------------
// Losses

struct LossCase {
  std::int64_t rows, cols;
};
const LossCase kLossCases[] = {{1, 1},  {7, 1},     {1000, 1}, {1, 2},    {33, 2},   {1, 10},
                               {7, 10}, {1000, 10}, {33, 33},  {1, 4096}, {7, 4096}, {100, 37}};

enum class LossKind { kSoftmax, kSigmoid };

struct LossResult {
  std::vector<float> dlogits;
  double loss_sum;
  std::int64_t correct;
};

// Runs the loss on `stream` over host data (host stream) or device copies of it (cuda stream),
// starting from loss_sum = 1.25 and correct = 5 so that accumulation is checked too.
LossResult run_loss(LossKind kind, const Stream& stream, std::int64_t rows, std::int64_t cols,
                    const std::vector<float>& logits, const std::vector<std::int32_t>& labels,
                    float grad_scale, bool alias) {
  auto op = kind == LossKind::kSoftmax ? &softmax_cross_entropy : &sigmoid_cross_entropy;
  LossResult r{std::vector<float>(logits.size(), -3.0f), 1.25, 5};
  if (stream.is_host()) {
    std::vector<float> z = logits;
    op(stream, rows, cols, z.data(), labels.data(), grad_scale, alias ? z.data() : r.dlogits.data(),
       &r.loss_sum, &r.correct);
    if (alias) r.dlogits = z;
    return r;
  }
  DeviceArray<float> dz(logits, stream), dd(r.dlogits, stream);
  DeviceArray<std::int32_t> dl(labels, stream);
  DeviceArray<double> dloss({r.loss_sum}, stream);
  DeviceArray<std::int64_t> dcorrect({r.correct}, stream);
  op(stream, rows, cols, dz.get(), dl.get(), grad_scale, alias ? dz.get() : dd.get(), dloss.get(),
     dcorrect.get());
  r.dlogits = alias ? dz.download(stream) : dd.download(stream);
  r.loss_sum = dloss.download(stream)[0];
  r.correct = dcorrect.download(stream)[0];
  return r;
}

void check_loss(LossKind kind, const Stream& cuda, const Stream& host) {
  std::uint64_t seed = kind == LossKind::kSoftmax ? 300 : 400;
  for (const LossCase& lc : kLossCases) {
    for (const bool alias : {false, true}) {
      SCOPED_TRACE(::testing::Message() << lc.rows << "x" << lc.cols << (alias ? " aliased" : ""));
      const auto logits = random_vector(lc.rows * lc.cols, ++seed, -5.0f, 5.0f);
      // One column is the binary case for the sigmoid (labels 0 and 1), a single class for
      // the softmax.
      const int classes =
          kind == LossKind::kSigmoid && lc.cols == 1 ? 2 : static_cast<int>(lc.cols);
      const auto labels = random_labels(lc.rows, classes, ++seed);
      const float grad_scale = 1.0f / static_cast<float>(lc.rows);
      const testing::RefLoss ref =
          kind == LossKind::kSoftmax
              ? testing::ref_softmax_cross_entropy(lc.rows, lc.cols, logits, labels, grad_scale)
              : testing::ref_sigmoid_cross_entropy(lc.rows, lc.cols, logits, labels, grad_scale);
      const LossResult got =
          run_loss(kind, cuda, lc.rows, lc.cols, logits, labels, grad_scale, alias);
      const LossResult twin =
          run_loss(kind, host, lc.rows, lc.cols, logits, labels, grad_scale, alias);

      const double atol = 1e-6 * grad_scale;
      EXPECT_TRUE(all_close(got.dlogits, ref.dlogits, 1e-4, atol));
      EXPECT_TRUE(all_close(got.dlogits, to_double(twin.dlogits), 1e-4, 2 * atol));
      // Per-row float log-sum-exp is good to ~1e-6 for logits in [-5, 5].
      const double loss_tol =
          1e-6 * static_cast<double>(lc.rows * (kind == LossKind::kSoftmax ? 1 : lc.cols)) + 1e-9;
      EXPECT_NEAR(got.loss_sum, 1.25 + ref.loss_sum, loss_tol);
      EXPECT_NEAR(got.loss_sum, twin.loss_sum, 2 * loss_tol);
      EXPECT_EQ(got.correct, 5 + ref.correct);
      EXPECT_EQ(got.correct, twin.correct);
    }
  }
}

TEST_F(CudaKernelTest, SoftmaxCrossEntropy) {
  check_loss(LossKind::kSoftmax, cuda(), host());
}

TEST_F(CudaKernelTest, SigmoidCrossEntropy) {
  check_loss(LossKind::kSigmoid, cuda(), host());
}

TEST_F(CudaKernelTest, LossOutputsMayBeNull) {
  // Each output is produced by a call that leaves the other two null.
  const std::int64_t rows = 65, cols = 10;
  const auto logits = random_vector(rows * cols, 7, -3.0f, 3.0f);
  const auto labels = random_labels(rows, cols, 8);
  for (const LossKind kind : {LossKind::kSoftmax, LossKind::kSigmoid}) {
    SCOPED_TRACE(kind == LossKind::kSoftmax ? "softmax" : "sigmoid");
    auto op = kind == LossKind::kSoftmax ? &softmax_cross_entropy : &sigmoid_cross_entropy;
    const auto ref = kind == LossKind::kSoftmax
                         ? testing::ref_softmax_cross_entropy(rows, cols, logits, labels, 0.5)
                         : testing::ref_sigmoid_cross_entropy(rows, cols, logits, labels, 0.5);
    DeviceArray<float> dz(logits, cuda()), dd(std::vector<float>(logits.size(), 0.0f), cuda());
    DeviceArray<std::int32_t> dl(labels, cuda());
    DeviceArray<double> dloss({0.0}, cuda());
    DeviceArray<std::int64_t> dcorrect({0}, cuda());
    op(cuda(), rows, cols, dz.get(), dl.get(), 0.5f, nullptr, dloss.get(), nullptr);
    op(cuda(), rows, cols, dz.get(), dl.get(), 0.5f, nullptr, nullptr, dcorrect.get());
    op(cuda(), rows, cols, dz.get(), dl.get(), 0.5f, dd.get(), nullptr, nullptr);
    op(cuda(), rows, cols, dz.get(), dl.get(), 0.5f, nullptr, nullptr, nullptr);
    EXPECT_EQ(dz.download(cuda()), logits);  // never written
    EXPECT_NEAR(dloss.download(cuda())[0], ref.loss_sum, 1e-4);
    EXPECT_EQ(dcorrect.download(cuda())[0], ref.correct);
    EXPECT_TRUE(all_close(dd.download(cuda()), ref.dlogits, 1e-4, 1e-7));
  }
}

TEST_F(CudaKernelTest, ArgmaxTakesTheFirstOfTiedMaxima) {
  // The maximum 3.0 appears at columns 5, 37 and 69: in different lanes and different strides
  // of a warp. Only label 5 counts as correct.
  const std::int64_t cols = 100;
  std::vector<float> row(cols);
  for (std::int64_t c = 0; c < cols; ++c)
    row[c] = -1.0f + 0.01f * static_cast<float>(c % 50);
  row[5] = row[37] = row[69] = 3.0f;
  const std::vector<std::int32_t> labels = {5, 37, 69, 0, 5, 69};
  const std::int64_t rows = static_cast<std::int64_t>(labels.size());
  std::vector<float> logits;
  for (std::int64_t r = 0; r < rows; ++r)
    logits.insert(logits.end(), row.begin(), row.end());
  for (const LossKind kind : {LossKind::kSoftmax, LossKind::kSigmoid}) {
    const LossResult got = run_loss(kind, cuda(), rows, cols, logits, labels, 1.0f, false);
    const LossResult twin = run_loss(kind, host(), rows, cols, logits, labels, 1.0f, false);
    EXPECT_EQ(got.correct, 5 + 2);  // rows 0 and 4
    EXPECT_EQ(got.correct, twin.correct);
  }
}

TEST_F(CudaKernelTest, ArgmaxSkipsNaNLogits) {
  const std::int64_t cols = 100;
  std::vector<std::int32_t> labels;
  const std::vector<float> logits = testing::nan_logit_rows(cols, labels);
  const auto rows = static_cast<std::int64_t>(labels.size());
  for (const LossKind kind : {LossKind::kSoftmax, LossKind::kSigmoid}) {
    const LossResult got = run_loss(kind, cuda(), rows, cols, logits, labels, 1.0f, false);
    const LossResult twin = run_loss(kind, host(), rows, cols, logits, labels, 1.0f, false);
    EXPECT_EQ(got.correct, 5 + rows);  // run_loss starts the count at 5
    EXPECT_EQ(got.correct, twin.correct);
  }
}

TEST_F(CudaKernelTest, LossIsStableForLargeLogits) {
  const std::int64_t rows = 4, cols = 3;
  const std::vector<float> logits = {80.0f, -80.0f, 0.0f,  -90.0f,  95.0f,   10.0f,
                                     1e4f,  1e4f,   -1e4f, -200.0f, -300.0f, -250.0f};
  const std::vector<std::int32_t> labels = {0, 2, 1, 0};
  for (const LossKind kind : {LossKind::kSoftmax, LossKind::kSigmoid}) {
    const auto ref = kind == LossKind::kSoftmax
                         ? testing::ref_softmax_cross_entropy(rows, cols, logits, labels, 1.0)
                         : testing::ref_sigmoid_cross_entropy(rows, cols, logits, labels, 1.0);
    const LossResult got = run_loss(kind, cuda(), rows, cols, logits, labels, 1.0f, false);
    EXPECT_TRUE(std::isfinite(got.loss_sum));
    EXPECT_NEAR(got.loss_sum, 1.25 + ref.loss_sum, 1e-6 * std::abs(ref.loss_sum) + 1e-4);
    EXPECT_TRUE(all_close(got.dlogits, ref.dlogits, 1e-5, 1e-6));
  }
}

// ---------------------------------------------------------------------------------------------
// Gather

TEST_F(CudaKernelTest, GatherRows) {
  const std::int64_t rows = 1000;
  std::uint64_t seed = 500;
  for (const std::int64_t cols : {1, 3, 4, 7, 33, 784, 1000}) {
    for (const std::int64_t count : {1, 7, 33, 256}) {
      for (const std::size_t offset : {std::size_t{0}, std::size_t{1}}) {
        for (const bool labels : {true, false}) {
          SCOPED_TRACE(::testing::Message() << "cols=" << cols << " count=" << count
                                            << " offset=" << offset << " labels=" << labels);
          const auto x = random_vector(rows * cols, ++seed);
          const auto y = random_labels(rows, 10, ++seed);
          const auto index = random_labels(count, static_cast<int>(rows), ++seed);
          std::vector<double> expected_x;
          std::vector<std::int32_t> expected_y;
          for (const std::int32_t i : index) {
            expected_x.insert(expected_x.end(), x.begin() + i * cols, x.begin() + (i + 1) * cols);
            expected_y.push_back(y[i]);
          }

          DeviceArray<float> dx(x, cuda(), offset);
          DeviceArray<std::int32_t> dy(y, cuda()), dindex(index, cuda());
          DeviceArray<float> dxo(std::vector<float>(count * cols, -9.0f), cuda(), offset);
          DeviceArray<std::int32_t> dyo(std::vector<std::int32_t>(count, -9), cuda());
          gather_rows(cuda(), count, cols, dx.get(), labels ? dy.get() : nullptr, rows,
                      dindex.get(), dxo.get(), labels ? dyo.get() : nullptr);
          const auto got_x = dxo.download(cuda());
          EXPECT_TRUE(all_close(got_x, expected_x, 0.0, 0.0));

          std::vector<float> host_x(count * cols);
          std::vector<std::int32_t> host_y(count, -9);
          gather_rows(host(), count, cols, x.data(), labels ? y.data() : nullptr, rows,
                      index.data(), host_x.data(), labels ? host_y.data() : nullptr);
          EXPECT_EQ(got_x, host_x);
          if (labels) {
            EXPECT_EQ(dyo.download(cuda()), expected_y);
            EXPECT_EQ(host_y, expected_y);
          } else {
            EXPECT_EQ(dyo.download(cuda()), std::vector<std::int32_t>(count, -9));
          }
        }
      }
    }
  }
}

TEST_F(CudaKernelTest, GatherOutOfRangeIndexDoesNotFault) {
  // The device cannot throw, so the CUDA gather marks a row with a bad index (NaN features,
  // label -1) instead of reading outside the data set.
  const std::int64_t rows = 5, cols = 8, count = 3;
  const auto x = random_vector(rows * cols, 1);
  const std::vector<std::int32_t> y = {0, 1, 2, 3, 4};
  const std::vector<std::int32_t> index = {4, 5, -1};
  DeviceArray<float> dx(x, cuda()), dxo(std::vector<float>(count * cols, 0.0f), cuda());
  DeviceArray<std::int32_t> dy(y, cuda()), dindex(index, cuda()),
      dyo(std::vector<std::int32_t>(count, 0), cuda());
  gather_rows(cuda(), count, cols, dx.get(), dy.get(), rows, dindex.get(), dxo.get(), dyo.get());
  const auto got_x = dxo.download(cuda());
  EXPECT_EQ(dyo.download(cuda()), (std::vector<std::int32_t>{4, -1, -1}));
  for (std::int64_t c = 0; c < cols; ++c) {
    EXPECT_EQ(got_x[c], x[4 * cols + c]);
    EXPECT_TRUE(std::isnan(got_x[cols + c]));
    EXPECT_TRUE(std::isnan(got_x[2 * cols + c]));
  }
}

// ---------------------------------------------------------------------------------------------
// Element-wise updates

const std::int64_t kVectorSizes[] = {1, 7, 33, 1000, (1 << 20) + 3};
// A few float ulps at magnitude ~1: the device contracts a * x + b * y into an FMA, the host
// may not, and near-cancelling sums keep only that absolute error.
constexpr double kElementwiseAtol = 4e-7;

TEST_F(CudaKernelTest, SgdStep) {
  std::uint64_t seed = 600;
  for (const std::int64_t n : kVectorSizes) {
    for (const std::size_t offset : {std::size_t{0}, std::size_t{1}}) {
      SCOPED_TRACE(::testing::Message() << "n=" << n << " offset=" << offset);
      const auto g = random_vector(n, ++seed), w = random_vector(n, ++seed);
      const float lr = 0.37f;
      std::vector<double> expected(n);
      for (std::int64_t i = 0; i < n; ++i)
        expected[i] = static_cast<double>(w[i]) - lr * g[i];
      DeviceArray<float> dg(g, cuda(), offset), dw(w, cuda(), offset);
      sgd_step(cuda(), n, lr, dg.get(), dw.get());
      const auto got = dw.download(cuda());
      std::vector<float> host_w = w;
      sgd_step(host(), n, lr, g.data(), host_w.data());
      EXPECT_TRUE(all_close(got, expected, 1e-6, kElementwiseAtol));
      EXPECT_TRUE(all_close(got, to_double(host_w), 1e-6, kElementwiseAtol));
    }
  }
}

TEST_F(CudaKernelTest, Axpby) {
  std::uint64_t seed = 700;
  for (const std::int64_t n : kVectorSizes) {
    for (const std::size_t offset : {std::size_t{0}, std::size_t{1}}) {
      for (const float beta : {-1.3f, 0.0f}) {
        SCOPED_TRACE(::testing::Message() << "n=" << n << " offset=" << offset << " beta=" << beta);
        const auto x = random_vector(n, ++seed), y = random_vector(n, ++seed);
        const float alpha = 0.7f;
        std::vector<double> expected(n);
        for (std::int64_t i = 0; i < n; ++i)
          expected[i] = static_cast<double>(alpha) * x[i] + static_cast<double>(beta) * y[i];
        DeviceArray<float> dx(x, cuda(), offset), dy(y, cuda(), offset);
        axpby(cuda(), n, alpha, dx.get(), beta, dy.get());
        const auto got = dy.download(cuda());
        std::vector<float> host_y = y;
        axpby(host(), n, alpha, x.data(), beta, host_y.data());
        EXPECT_TRUE(all_close(got, expected, 1e-6, kElementwiseAtol));
        EXPECT_TRUE(all_close(got, to_double(host_y), 1e-6, kElementwiseAtol));
      }
    }
  }
}

TEST_F(CudaKernelTest, Fill) {
  for (const std::int64_t n : kVectorSizes) {
    for (const std::size_t offset : {std::size_t{0}, std::size_t{1}, std::size_t{2}}) {
      SCOPED_TRACE(::testing::Message() << "n=" << n << " offset=" << offset);
      // One guard element after the range must survive.
      std::vector<float> init = random_vector(n + 1, 800 + n);
      DeviceArray<float> dx(init, cuda(), offset);
      fill(cuda(), n, -2.5f, dx.get());
      std::vector<float> expected(n, -2.5f);
      expected.push_back(init.back());
      EXPECT_EQ(dx.download(cuda()), expected);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Reductions

const std::int64_t kReduceSizes[] = {1, 7, 33, 1000, 4099, (1 << 20) + 3, 3 * (1 << 20) + 1};

enum class ReduceKind { kSum, kDot, kSquaredNorm };

double run_reduce(ReduceKind kind, const Stream& s, std::int64_t n, const float* x,
                  const float* y) {
  if (s.is_host()) {
    double out = 0.0;
    if (kind == ReduceKind::kSum) reduce_sum(s, n, x, &out);
    if (kind == ReduceKind::kDot) reduce_dot(s, n, x, y, &out);
    if (kind == ReduceKind::kSquaredNorm) reduce_squared_norm(s, n, x, &out);
    return out;
  }
  DeviceArray<double> out({42.0}, s);  // garbage: reductions overwrite
  if (kind == ReduceKind::kSum) reduce_sum(s, n, x, out.get());
  if (kind == ReduceKind::kDot) reduce_dot(s, n, x, y, out.get());
  if (kind == ReduceKind::kSquaredNorm) reduce_squared_norm(s, n, x, out.get());
  return out.download(s)[0];
}

TEST_F(CudaKernelTest, Reductions) {
  std::uint64_t seed = 900;
  for (const std::int64_t n : kReduceSizes) {
    for (const std::size_t offset : {std::size_t{0}, std::size_t{1}}) {
      const auto x = random_vector(n, ++seed), y = random_vector(n, ++seed);
      DeviceArray<float> dx(x, cuda(), offset), dy(y, cuda(), offset);
      for (const ReduceKind kind : {ReduceKind::kSum, ReduceKind::kDot, ReduceKind::kSquaredNorm}) {
        SCOPED_TRACE(::testing::Message()
                     << "n=" << n << " offset=" << offset << " kind=" << static_cast<int>(kind));
        double expected = 0.0, magnitude = 0.0;
        for (std::int64_t i = 0; i < n; ++i) {
          const double term = kind == ReduceKind::kSum   ? static_cast<double>(x[i])
                              : kind == ReduceKind::kDot ? static_cast<double>(x[i]) * y[i]
                                                         : static_cast<double>(x[i]) * x[i];
          expected += term;
          magnitude += std::abs(term);
        }
        const double got = run_reduce(kind, cuda(), n, dx.get(), dy.get());
        const double twin = run_reduce(kind, host(), n, x.data(), y.data());
        // The CUDA path sums in double throughout; the host sums blocks in float.
        EXPECT_NEAR(got, expected, 1e-11 * magnitude + 1e-12);
        EXPECT_NEAR(got, twin, 1e-6 * magnitude + 1e-9);
      }
    }
  }
}

// Sums (and the losses built the same way) are the same bits every run, as deterministic mode
// needs, whichever block finishes last.
TEST_F(CudaKernelTest, ReductionsAreTheSameBitsEveryRun) {
  const std::int64_t n = 3 * (std::int64_t{1} << 22) + 1;
  const auto x = random_vector(n, 950), y = random_vector(n, 951);
  DeviceArray<float> dx(x, cuda(), 1), dy(y, cuda(), 1);
  for (const ReduceKind kind : {ReduceKind::kSum, ReduceKind::kDot, ReduceKind::kSquaredNorm}) {
    const double first = run_reduce(kind, cuda(), n, dx.get(), dy.get());
    for (int run = 1; run < 20; ++run) {
      const double again = run_reduce(kind, cuda(), n, dx.get(), dy.get());
      ASSERT_EQ(std::memcmp(&again, &first, sizeof(double)), 0)
          << "kind " << static_cast<int>(kind) << ", run " << run;
    }
  }
}

TEST_F(CudaKernelTest, ReductionOfNothingIsZero) {
  DeviceArray<double> out({42.0}, cuda());
  DeviceArray<std::int64_t> count({42}, cuda());
  DeviceArray<float> x(std::vector<float>(1, 1.0f), cuda());
  reduce_sum(cuda(), 0, x.get(), out.get());
  EXPECT_EQ(out.download(cuda())[0], 0.0);
  count_nonfinite(cuda(), 0, x.get(), count.get());
  EXPECT_EQ(count.download(cuda())[0], 0);
}

TEST_F(CudaKernelTest, CountNonfinite) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::uint64_t seed = 1000;
  for (const std::int64_t n : kReduceSizes) {
    for (const std::size_t offset : {std::size_t{0}, std::size_t{1}}) {
      SCOPED_TRACE(::testing::Message() << "n=" << n << " offset=" << offset);
      auto x = random_vector(n, ++seed);
      const bool with_large = n >= 8;
      if (with_large) x[n / 2] = std::numeric_limits<float>::max();  // large but finite
      const std::int64_t positions[] = {0, n - 1, n / 3, n / 2 + 1, 4 * (n / 7) + 1};
      const float bad[] = {nan, inf, -inf, -nan, nan};
      for (int p = 0; p < 5; ++p)
        if (positions[p] < n && !(with_large && positions[p] == n / 2)) x[positions[p]] = bad[p];
      std::int64_t expected = 0;
      for (const float v : x)
        expected += std::isfinite(v) ? 0 : 1;
      ASSERT_GT(expected, 0);

      DeviceArray<float> dx(x, cuda(), offset);
      DeviceArray<std::int64_t> out({12345}, cuda());
      count_nonfinite(cuda(), n, dx.get(), out.get());
      std::int64_t host_count = -1;
      count_nonfinite(host(), n, x.data(), &host_count);
      EXPECT_EQ(out.download(cuda())[0], expected);
      EXPECT_EQ(host_count, expected);

      // The snapshot pass: the same count, and a bit-exact copy (NaN payloads included).
      DeviceArray<float> dy(std::vector<float>(x.size(), 3.0f), cuda(), offset);
      copy_count_nonfinite(cuda(), n, dx.get(), dy.get(), out.get());
      EXPECT_EQ(out.download(cuda())[0], expected);
      const std::vector<float> copied = dy.download(cuda());
      EXPECT_EQ(std::memcmp(copied.data(), x.data(), x.size() * sizeof(float)), 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Faults

// A kernel that writes to an unmapped address faults on the device; the fault must come back
// as an asgd::Error from the next synchronising call. A fault poisons the CUDA context for the
// rest of the process, so it runs in a child process (a re-executed death test) and is left
// out of the compute-sanitizer run (scripts/gpu_checks.sh filters CudaFaultTest.*).
[[noreturn]] void fault_and_report() {
  const Stream s = Stream::cuda(0);
  auto* bad = reinterpret_cast<float*>(std::uintptr_t{0x1000});
  try {
    fill(s, 1 << 20, 1.0f, bad);
    s.synchronize();
  } catch (const Error& e) {
    std::fprintf(stderr, "caught asgd::Error: %s\n", e.what());
    std::fflush(stderr);
    std::_Exit(3);
  }
  std::fprintf(stderr, "no error reported\n");
  std::fflush(stderr);
  std::_Exit(4);
}

TEST(CudaFaultTest, KernelFaultSurfacesAsError) {
  if (cuda_device_count() == 0) GTEST_SKIP() << cuda_unavailable_reason();
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(fault_and_report(), ::testing::ExitedWithCode(3),
              "caught asgd::Error: .*failed: .*cudaError");
}

}  // namespace
}  // namespace asgd
