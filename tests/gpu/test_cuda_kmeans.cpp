// The K-Means kernels and model on CUDA against the host backend on the same random inputs,
// over shapes that include 1, sizes that are not multiples of the warp, several 256-row chunks
// of the gradient's gather and several column tiles. Every test skips itself when no CUDA
// device is usable (and in a build without CUDA).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/kmeans.h"
#include "kernels/models/model.h"
#include "runtime/buffer.h"
#include "runtime/data/synthetic.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "tests/common/cuda_fixture.h"
#include "tests/common/reference.h"

namespace asgd {
namespace {
using testing::all_close;
using testing::random_labels;
using testing::random_vector;

using CudaKMeansTest = testing::CudaTest;
using testing::DeviceArray;
using testing::to_double;

struct Shape {
  std::int64_t rows, k, d;
};
const Shape kShapes[] = {{1, 1, 1},     {1, 5, 3},     {7, 1, 33},    {33, 3, 1},
                         {100, 10, 64}, {257, 33, 5},  {64, 129, 31}, {1000, 16, 300},
                         {5000, 7, 2},  {600, 40, 784}};

TEST_F(CudaKMeansTest, RowSquaredNorms) {
  std::uint64_t seed = 10;
  for (const Shape& sh : kShapes) {
    SCOPED_TRACE(::testing::Message() << sh.rows << "x" << sh.d);
    const auto x = random_vector(static_cast<std::size_t>(sh.rows * sh.d), ++seed, -2.0f, 2.0f);
    std::vector<float> twin(sh.rows);
    row_squared_norms(host(), sh.rows, sh.d, x.data(), twin.data());
    DeviceArray<float> dx(x, cuda()), dout(std::vector<float>(sh.rows, -1.0f), cuda());
    row_squared_norms(cuda(), sh.rows, sh.d, dx.get(), dout.get());
    EXPECT_TRUE(all_close(dout.download(cuda()), to_double(twin), 1e-5, 1e-6));
  }
}

// Given the same products and norms, the assignment is the same bit for bit, and the loss
// agrees up to the order of summation.
TEST_F(CudaKMeansTest, AssignMatchesHostExactly) {
  std::uint64_t seed = 20;
  for (const Shape& sh : kShapes) {
    SCOPED_TRACE(::testing::Message() << sh.rows << " rows, k=" << sh.k << ", d=" << sh.d);
    const auto x = random_vector(static_cast<std::size_t>(sh.rows * sh.d), ++seed);
    const auto c = random_vector(static_cast<std::size_t>(sh.k * sh.d), ++seed);
    std::vector<float> dots(static_cast<std::size_t>(sh.rows * sh.k)), norms(sh.k);
    std::vector<std::int32_t> twin(sh.rows, -1);
    double twin_loss = 1.25;
    kmeans_nearest(host(), sh.rows, sh.k, sh.d, x.data(), c.data(), dots.data(), norms.data(), 0.5f,
                   twin.data(), &twin_loss);

    DeviceArray<float> dx(x, cuda()), ddots(dots, cuda()), dnorms(norms, cuda());
    DeviceArray<std::int32_t> dassign(std::vector<std::int32_t>(sh.rows, -1), cuda());
    DeviceArray<double> dloss({1.25}, cuda());
    kmeans_assign(cuda(), sh.rows, sh.k, sh.d, dx.get(), ddots.get(), dnorms.get(), 0.5f,
                  dassign.get(), dloss.get());
    EXPECT_EQ(dassign.download(cuda()), twin);
    const double loss = dloss.download(cuda())[0];
    EXPECT_NEAR(loss, twin_loss, 1e-6 * (twin_loss + static_cast<double>(sh.rows * sh.d)));

    // Each output alone.
    DeviceArray<std::int32_t> alone(std::vector<std::int32_t>(sh.rows, -1), cuda());
    DeviceArray<double> loss_alone({0.0}, cuda());
    kmeans_assign(cuda(), sh.rows, sh.k, sh.d, dx.get(), ddots.get(), dnorms.get(), 0.5f,
                  alone.get(), nullptr);
    kmeans_assign(cuda(), sh.rows, sh.k, sh.d, dx.get(), ddots.get(), dnorms.get(), 0.5f, nullptr,
                  loss_alone.get());
    EXPECT_EQ(alone.download(cuda()), twin);
    EXPECT_NEAR(loss_alone.download(cuda())[0], loss - 1.25, 1e-9 * (1.0 + loss));
  }
}

TEST_F(CudaKMeansTest, NearestMatchesHost) {
  std::uint64_t seed = 30;
  for (const Shape& sh : kShapes) {
    SCOPED_TRACE(::testing::Message() << sh.rows << " rows, k=" << sh.k << ", d=" << sh.d);
    // Centres well apart and rows near them, so that cuBLAS and OpenBLAS rounding cannot flip
    // an assignment.
    auto c = random_vector(static_cast<std::size_t>(sh.k * sh.d), ++seed, -1.0f, 1.0f);
    for (std::int64_t j = 0; j < sh.k; ++j)
      c[j * sh.d] += 4.0f * static_cast<float>(j);
    const auto labels = random_labels(sh.rows, static_cast<int>(sh.k), ++seed);
    auto x = random_vector(static_cast<std::size_t>(sh.rows * sh.d), ++seed, -0.05f, 0.05f);
    for (std::int64_t r = 0; r < sh.rows; ++r)
      for (std::int64_t i = 0; i < sh.d; ++i)
        x[r * sh.d + i] += c[labels[r] * sh.d + i];

    std::vector<float> dots(static_cast<std::size_t>(sh.rows * sh.k)), norms(sh.k);
    std::vector<std::int32_t> twin(sh.rows);
    double twin_loss = 0.0;
    kmeans_nearest(host(), sh.rows, sh.k, sh.d, x.data(), c.data(), dots.data(), norms.data(), 1.0f,
                   twin.data(), &twin_loss);
    EXPECT_EQ(twin, labels);

    DeviceArray<float> dx(x, cuda()), dc(c, cuda()), ddots(dots, cuda()), dnorms(norms, cuda());
    DeviceArray<std::int32_t> dassign(std::vector<std::int32_t>(sh.rows, -1), cuda());
    DeviceArray<double> dloss({0.0}, cuda());
    kmeans_nearest(cuda(), sh.rows, sh.k, sh.d, dx.get(), dc.get(), ddots.get(), dnorms.get(), 1.0f,
                   dassign.get(), dloss.get());
    EXPECT_EQ(dassign.download(cuda()), labels);
    double scale = 0.0;  // the expansion's rounding scales with ||x||^2 + ||c||^2
    for (float v : x)
      scale += 2.0 * static_cast<double>(v) * v;
    EXPECT_NEAR(dloss.download(cuda())[0], twin_loss, 1e-5 * scale);
  }
}

TEST_F(CudaKMeansTest, TiesGoToTheLowestCentre) {
  // Centres 5, 37 and 69 (different lanes and strides of a warp) coincide and are nearest.
  const std::int64_t k = 100, d = 3, rows = 3;
  auto c = random_vector(static_cast<std::size_t>(k * d), 40, 50.0f, 60.0f);
  for (std::int64_t j : {37, 69})
    for (std::int64_t i = 0; i < d; ++i)
      c[j * d + i] = c[5 * d + i];
  std::vector<float> x;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t i = 0; i < d; ++i)
      x.push_back(c[5 * d + i] + 0.01f * static_cast<float>(r));
  DeviceArray<float> dx(x, cuda()), dc(c, cuda()), ddots(std::vector<float>(rows * k), cuda()),
      dnorms(std::vector<float>(k), cuda());
  DeviceArray<std::int32_t> dassign(std::vector<std::int32_t>(rows, -1), cuda());
  kmeans_nearest(cuda(), rows, k, d, dx.get(), dc.get(), ddots.get(), dnorms.get(), 1.0f,
                 dassign.get(), nullptr);
  EXPECT_EQ(dassign.download(cuda()), std::vector<std::int32_t>(rows, 5));
}

TEST_F(CudaKMeansTest, GradientMatchesHost) {
  std::uint64_t seed = 50;
  for (const Shape& sh : kShapes) {
    SCOPED_TRACE(::testing::Message() << sh.rows << " rows, k=" << sh.k << ", d=" << sh.d);
    const auto c = random_vector(static_cast<std::size_t>(sh.k * sh.d), ++seed, 20.0f, 30.0f);
    const auto x = random_vector(static_cast<std::size_t>(sh.rows * sh.d), ++seed, 19.0f, 31.0f);
    auto assign = random_labels(sh.rows, static_cast<int>(sh.k), ++seed);
    if (sh.rows >= 3) {  // ignored on both backends
      assign[1] = -1;
      assign[2] = static_cast<std::int32_t>(sh.k);
    }
    const float grad_scale = 1.0f / static_cast<float>(sh.rows);
    std::vector<float> twin(static_cast<std::size_t>(sh.k * sh.d), 77.0f);
    kmeans_gradient(host(), sh.rows, sh.k, sh.d, x.data(), assign.data(), c.data(), grad_scale,
                    twin.data());

    DeviceArray<float> dx(x, cuda()), dc(c, cuda()),
        dgrad(std::vector<float>(twin.size(), 77.0f), cuda());
    DeviceArray<std::int32_t> dassign(assign, cuda());
    kmeans_gradient(cuda(), sh.rows, sh.k, sh.d, dx.get(), dassign.get(), dc.get(), grad_scale,
                    dgrad.get());
    const auto got = dgrad.download(cuda());
    // Float sums of up to rows terms of size <= 11, scaled by 1 / rows.
    EXPECT_TRUE(all_close(got, to_double(twin), 1e-5, 11.0 * 1e-6));

    // Deterministic: a second run gives the same bits.
    kmeans_gradient(cuda(), sh.rows, sh.k, sh.d, dx.get(), dassign.get(), dc.get(), grad_scale,
                    dgrad.get());
    EXPECT_EQ(dgrad.download(cuda()), got);
  }
}

TEST_F(CudaKMeansTest, ModelMatchesHost) {
  const std::int64_t d = 6, max_batch = 128;
  const std::int32_t k = 5;
  const Dataset data = make_blobs(600, d, k, 3);
  auto host_model = make_model(ModelSpec{"kmeans", {}, 0}, d, k, max_batch, host(), &data);
  auto cuda_model = make_model(ModelSpec{"kmeans", {}, 0}, d, k, max_batch, cuda(), &data);
  const std::int64_t n = host_model->parameter_count();

  std::vector<float> params(n);
  host_model->init(params.data(), 8, host());
  DeviceArray<float> dparams(std::vector<float>(n, 0.0f), cuda());
  cuda_model->init(dparams.get(), 8, cuda());
  EXPECT_EQ(dparams.download(cuda()), params);

  const std::vector<float> batch_x(data.features.begin(), data.features.begin() + max_batch * d);
  std::vector<float> grad(n, 9.0f);
  double loss = 0.0;
  host_model->loss_and_gradient(params.data(), {batch_x.data(), nullptr, max_batch}, grad.data(),
                                &loss, host());
  DeviceArray<float> dx(batch_x, cuda()), dgrad(std::vector<float>(n, 9.0f), cuda());
  DeviceArray<double> dloss({0.0}, cuda());
  cuda_model->loss_and_gradient(dparams.get(), {dx.get(), nullptr, max_batch}, dgrad.get(),
                                dloss.get(), cuda());
  EXPECT_TRUE(all_close(dgrad.download(cuda()), to_double(grad), 1e-4, 1e-5));
  EXPECT_NEAR(dloss.download(cuda())[0], loss, 1e-5 * loss);

  double eval = 0.0;
  host_model->evaluate(params.data(), {data.features.data(), nullptr, data.rows}, &eval, nullptr,
                       host());
  DeviceArray<float> dall(data.features, cuda());
  DeviceArray<double> deval({0.0}, cuda());
  DeviceArray<std::int64_t> dcorrect({7}, cuda());
  cuda_model->evaluate(dparams.get(), {dall.get(), nullptr, data.rows}, deval.get(), dcorrect.get(),
                       cuda());
  EXPECT_NEAR(deval.download(cuda())[0], eval, 1e-5 * eval);
  EXPECT_EQ(dcorrect.download(cuda())[0], 7);
}

}  // namespace
}  // namespace asgd
