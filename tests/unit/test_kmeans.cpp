// K-Means on the host: the kernels against float64 references over many shapes, the model's
// gradient against central finite differences of a float64 loss, its initialisation and
// evaluation, the Gaussian-blobs generator and its data-set spec, and a short SGD run that
// brings the objective down to the noise floor of the blobs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/kmeans.h"
#include "kernels/models/kmeans.h"
#include "kernels/models/model.h"
#include "kernels/sgd.h"
#include "runtime/data/dataset.h"
#include "runtime/data/synthetic.h"
#include "runtime/error.h"
#include "runtime/random.h"
#include "runtime/trainer.h"
#include "tests/common/input_error.h"
#include "tests/common/reference.h"

namespace asgd {
namespace {
using testing::all_close;
using testing::random_labels;
using testing::random_vector;

// ---------------------------------------------------------------------------------------------
// Float64 references

template <typename T>
double ref_squared_distance(const float* x, const T* c, std::int64_t d) {
  double s = 0.0;
  for (std::int64_t i = 0; i < d; ++i) {
    const double diff = static_cast<double>(x[i]) - static_cast<double>(c[i]);
    s += diff * diff;
  }
  return s;
}

double ref_squared_norm(const float* x, std::int64_t d) {
  double s = 0.0;
  for (std::int64_t i = 0; i < d; ++i)
    s += static_cast<double>(x[i]) * x[i];
  return s;
}

struct RefNearest {
  std::vector<std::int32_t> assign;  // exact nearest centre, the lowest index among ties
  std::vector<double> d2;            // squared distance to it
  std::vector<double> scale;         // ||x||^2 + ||c||^2: what the expansion's rounding scales with
};

RefNearest ref_nearest(std::int64_t rows, std::int64_t k, std::int64_t d,
                       const std::vector<float>& x, const std::vector<float>& c) {
  RefNearest out;
  for (std::int64_t r = 0; r < rows; ++r) {
    std::int64_t best = 0;
    double best_d2 = ref_squared_distance(&x[r * d], &c[0], d);
    for (std::int64_t j = 1; j < k; ++j) {
      const double d2 = ref_squared_distance(&x[r * d], &c[j * d], d);
      if (d2 < best_d2) {
        best_d2 = d2;
        best = j;
      }
    }
    out.assign.push_back(static_cast<std::int32_t>(best));
    out.d2.push_back(best_d2);
    out.scale.push_back(ref_squared_norm(&x[r * d], d) + ref_squared_norm(&c[best * d], d));
  }
  return out;
}

std::vector<double> ref_gradient(std::int64_t rows, std::int64_t k, std::int64_t d,
                                 const std::vector<float>& x,
                                 const std::vector<std::int32_t>& assign,
                                 const std::vector<float>& c, double grad_scale) {
  std::vector<double> g(static_cast<std::size_t>(k * d), 0.0);
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int32_t a = assign[r];
    if (a < 0 || a >= k) continue;
    for (std::int64_t i = 0; i < d; ++i)
      g[a * d + i] += grad_scale * (static_cast<double>(c[a * d + i]) - x[r * d + i]);
  }
  return g;
}

// The model's summed loss, sum_r ½ min_j ||x_r - c_j||^2, in float64.
double ref_kmeans_loss(std::int64_t rows, std::int64_t k, std::int64_t d,
                       const std::vector<float>& x, const std::vector<double>& c) {
  double loss = 0.0;
  for (std::int64_t r = 0; r < rows; ++r) {
    double best = std::numeric_limits<double>::infinity();
    for (std::int64_t j = 0; j < k; ++j)
      best = std::min(best, ref_squared_distance(&x[r * d], &c[j * d], d));
    loss += 0.5 * best;
  }
  return loss;
}

// The kernel's assignment is right when its centre is as near as the nearest up to the
// expansion's rounding: exact ties and near-ties may go either way, nothing else may.
::testing::AssertionResult assignments_near(const std::vector<std::int32_t>& got,
                                            const RefNearest& ref, std::int64_t k, std::int64_t d,
                                            const std::vector<float>& x,
                                            const std::vector<float>& c) {
  for (std::size_t r = 0; r < got.size(); ++r) {
    if (got[r] < 0 || got[r] >= k)
      return ::testing::AssertionFailure() << "row " << r << " assigned to " << got[r];
    const double d2 = ref_squared_distance(&x[r * d], &c[got[r] * d], d);
    if (!(d2 <= ref.d2[r] + 1e-5 * ref.scale[r]))
      return ::testing::AssertionFailure()
             << "row " << r << " assigned to " << got[r] << " at squared distance " << d2
             << ", but centre " << ref.assign[r] << " is at " << ref.d2[r];
  }
  return ::testing::AssertionSuccess();
}

double sum(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v)
    s += x;
  return s;
}

using testing::expect_input_error;

// ---------------------------------------------------------------------------------------------
// Kernels

// rows, k, d, threads
class KMeansKernelTest : public ::testing::TestWithParam<std::tuple<int, int, int, int>> {};

TEST_P(KMeansKernelTest, RowSquaredNorms) {
  const auto [rows, k, d, threads] = GetParam();
  (void)k;
  const Stream s = Stream::host(threads);
  const auto x = random_vector(static_cast<std::size_t>(rows * d), 1, -2.0f, 2.0f);
  std::vector<float> out(rows, -1.0f);
  row_squared_norms(s, rows, d, x.data(), out.data());
  std::vector<double> expected;
  for (int r = 0; r < rows; ++r)
    expected.push_back(ref_squared_norm(&x[r * d], d));
  EXPECT_TRUE(all_close(out, expected, 1e-6, 1e-7));
}

TEST_P(KMeansKernelTest, NearestCentreAndLoss) {
  const auto [rows, k, d, threads] = GetParam();
  const Stream s = Stream::host(threads);
  const auto x = random_vector(static_cast<std::size_t>(rows * d), 2);
  const auto c = random_vector(static_cast<std::size_t>(k * d), 3);
  const RefNearest ref = ref_nearest(rows, k, d, x, c);

  std::vector<float> dots(static_cast<std::size_t>(rows * k)), norms(k);
  std::vector<std::int32_t> assign(rows, -7);
  double loss = 1.5;  // accumulates
  kmeans_nearest(s, rows, k, d, x.data(), c.data(), dots.data(), norms.data(), 0.5f, assign.data(),
                 &loss);
  EXPECT_TRUE(assignments_near(assign, ref, k, d, x, c));
  EXPECT_NEAR(loss - 1.5, 0.5 * sum(ref.d2), 1e-6 * sum(ref.scale));

  // Each output alone gives the same as both together.
  std::vector<std::int32_t> alone(rows, -7);
  kmeans_assign(s, rows, k, d, x.data(), dots.data(), norms.data(), 0.5f, alone.data(), nullptr);
  EXPECT_EQ(alone, assign);
  double loss_alone = 0.0;
  kmeans_assign(s, rows, k, d, nullptr, dots.data(), norms.data(), 2.0f, nullptr, nullptr);
  kmeans_assign(s, rows, k, d, x.data(), dots.data(), norms.data(), 2.0f, nullptr, &loss_alone);
  EXPECT_NEAR(loss_alone, 4.0 * (loss - 1.5), 1e-12 * (1.0 + loss_alone));
}

TEST_P(KMeansKernelTest, GradientOverwritesAndIgnoresOutOfRangeAssignments) {
  const auto [rows, k, d, threads] = GetParam();
  const Stream s = Stream::host(threads);
  // Centres far from the origin and rows near them, as in training: the sum of c - x must not
  // lose the small differences to the large coordinates.
  auto c = random_vector(static_cast<std::size_t>(k * d), 4, 20.0f, 30.0f);
  auto x = random_vector(static_cast<std::size_t>(rows * d), 5, 19.0f, 31.0f);
  auto assign = random_labels(rows, k, 6);
  if (rows >= 3) {
    assign[1] = -1;
    assign[2] = static_cast<std::int32_t>(k);
  }
  const float grad_scale = 1.0f / static_cast<float>(rows);
  std::vector<float> grad(static_cast<std::size_t>(k * d), 77.0f);
  kmeans_gradient(s, rows, k, d, x.data(), assign.data(), c.data(), grad_scale, grad.data());
  EXPECT_TRUE(all_close(grad, ref_gradient(rows, k, d, x, assign, c, grad_scale), 1e-6, 1e-7));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, KMeansKernelTest,
    ::testing::Values(std::make_tuple(1, 1, 1, 1), std::make_tuple(1, 4, 3, 1),
                      std::make_tuple(5, 1, 7, 2), std::make_tuple(9, 3, 1, 1),
                      std::make_tuple(13, 5, 9, 2), std::make_tuple(33, 7, 17, 1),
                      std::make_tuple(100, 10, 130, 3), std::make_tuple(257, 33, 5, 2),
                      std::make_tuple(64, 129, 31, 3), std::make_tuple(2000, 16, 40, 3),
                      std::make_tuple(1500, 3, 300, 3)),
    [](const auto& tp) {
      return "r" + std::to_string(std::get<0>(tp.param)) + "_k" +
             std::to_string(std::get<1>(tp.param)) + "_d" + std::to_string(std::get<2>(tp.param)) +
             "_t" + std::to_string(std::get<3>(tp.param));
    });

TEST(KMeansKernel, TiesGoToTheLowestCentre) {
  const Stream s = Stream::host();
  // Centres 0 and 2 coincide; the first row is equally far from all three centres.
  const std::vector<float> c = {1, 0, 0, 1, 1, 0};
  const std::vector<float> x = {0.5f, 0.5f, 1, 0, 0, 1, 0.9f, 0.1f};
  std::vector<float> dots(12), norms(3);
  std::vector<std::int32_t> assign(4, -1);
  kmeans_nearest(s, 4, 3, 2, x.data(), c.data(), dots.data(), norms.data(), 1.0f, assign.data(),
                 nullptr);
  EXPECT_EQ(assign, (std::vector<std::int32_t>{0, 0, 1, 0}));
}

TEST(KMeansKernel, LossIsClampedAtZeroButKeepsNaN) {
  const Stream s = Stream::host();
  // Rows equal to centres far from the origin: the expansion cancels to a rounding error that
  // may be negative; the loss is clamped at 0.
  const std::int64_t k = 5, d = 7;
  auto c = random_vector(k * d, 8, 900.0f, 1100.0f);
  std::vector<float> dots(k * k), norms(k);
  double loss = 0.0;
  kmeans_nearest(s, k, k, d, c.data(), c.data(), dots.data(), norms.data(), 1.0f, nullptr, &loss);
  EXPECT_GE(loss, 0.0);
  EXPECT_LE(loss, 1e-6 * k * 2 * d * 1100.0 * 1100.0);

  std::vector<float> x(c.begin(), c.begin() + 2 * d);
  x[d + 3] = std::numeric_limits<float>::quiet_NaN();
  loss = 0.0;
  kmeans_nearest(s, 2, k, d, x.data(), c.data(), dots.data(), norms.data(), 1.0f, nullptr, &loss);
  EXPECT_TRUE(std::isnan(loss));
}

TEST(KMeansKernel, EmptyBatchGivesZeroGradient) {
  const Stream s = Stream::host();
  const auto c = random_vector(6, 9);
  std::vector<float> grad(6, 5.0f);
  kmeans_gradient(s, 0, 3, 2, nullptr, nullptr, c.data(), 1.0f, grad.data());
  EXPECT_EQ(grad, std::vector<float>(6, 0.0f));
}

TEST(KMeansKernel, RejectsBadShapes) {
  const Stream s = Stream::host();
  std::vector<float> v(16);
  std::vector<std::int32_t> a(4);
  EXPECT_THROW(kmeans_assign(s, 2, 0, 2, v.data(), v.data(), v.data(), 1.0f, a.data(), nullptr),
               Error);
  EXPECT_THROW(kmeans_gradient(s, 2, 2, 0, v.data(), a.data(), v.data(), 1.0f, v.data()), Error);
  EXPECT_THROW(row_squared_norms(s, 2, 0, v.data(), v.data()), Error);
  EXPECT_THROW(
      kmeans_nearest(s, -1, 2, 2, v.data(), v.data(), v.data(), v.data(), 1.0f, a.data(), nullptr),
      Error);
}

// ---------------------------------------------------------------------------------------------
// Model

Dataset dataset_from(std::vector<float> features, std::int64_t cols, std::int32_t classes = 2) {
  Dataset data;
  data.source = "test rows";
  data.cols = cols;
  data.rows = static_cast<std::int64_t>(features.size()) / cols;
  data.classes = classes;
  data.features = std::move(features);
  data.labels.assign(static_cast<std::size_t>(data.rows), 0);
  return data;
}

TEST(KMeansModel, Identity) {
  const Stream s = Stream::host();
  const Dataset data = dataset_from(random_vector(60, 1), 3, 4);
  auto model = make_model(ModelSpec{"kmeans", {}, 5}, 3, 4, 8, s, &data);
  EXPECT_EQ(model->describe(), "kmeans K=5 D=3");
  EXPECT_EQ(model->input_dim(), 3);
  EXPECT_EQ(model->num_classes(), 5);
  EXPECT_EQ(model->max_batch(), 8);
  EXPECT_FALSE(model->is_classifier());
  EXPECT_EQ(model->parameter_count(), 15);
  ASSERT_EQ(model->layout().size(), 1u);
  EXPECT_EQ(model->layout()[0].name, "centres");
  EXPECT_EQ(model->layout()[0].shape, (std::vector<std::int64_t>{5, 3}));
  EXPECT_EQ(model->layout()[0].offset, 0);

  // clusters = 0 takes the class count.
  auto by_classes = make_model(ModelSpec{"kmeans", {}, 0}, 3, 4, 8, s, &data);
  EXPECT_EQ(by_classes->describe(), "kmeans K=4 D=3");
  EXPECT_NE(by_classes->fingerprint(), model->fingerprint());
  EXPECT_EQ(make_model(ModelSpec{"kmeans", {}, 5}, 3, 4, 16, s, &data)->fingerprint(),
            model->fingerprint());
}

TEST(KMeansModel, RejectsBadSpecsAndData) {
  const Stream s = Stream::host();
  const Dataset data = dataset_from(random_vector(12, 2), 3);  // 4 rows
  expect_input_error(
      [&] {
        make_model(ModelSpec{"kmeans", {}, 2}, 3, 2, 8, s, nullptr);
      },
      {"kmeans", "training set"});
  expect_input_error(
      [&] {
        make_model(ModelSpec{"kmeans", {}, -1}, 3, 2, 8, s, &data);
      },
      {"-1 clusters"});
  expect_input_error(
      [&] {
        make_model(ModelSpec{"kmeans", {}, 5}, 3, 2, 8, s, &data);
      },
      {"test rows", "K=5", "4"});
  expect_input_error(
      [&] {
        make_model(ModelSpec{"kmeans", {}, 2}, 4, 2, 8, s, &data);
      },
      {"test rows", "3 feature(s)", "4"});
  // One class is fine when K is given: K-Means ignores labels.
  EXPECT_EQ(make_model(ModelSpec{"kmeans", {}, 2}, 3, 1, 8, s, &data)->num_classes(), 2);

  auto model = make_model(ModelSpec{"kmeans", {}, 2}, 3, 2, 2, s, &data);
  std::vector<float> p(6), g(6);
  EXPECT_THROW(
      model->loss_and_gradient(p.data(), {data.features.data(), nullptr, 3}, g.data(), nullptr, s),
      Error);
}

// Centres spaced 4 apart along the first coordinate (plus noise in [-1, 1]) and rows within
// 0.2 per coordinate of their centre: for d <= 8 every row is nearer its own centre by more
// than 1.7 in squared distance, so no assignment changes under the finite-difference steps.
// The last centre gets no rows when k >= 3, to check its zero gradient.
struct SeparatedData {
  std::vector<float> centres;
  std::vector<float> x;
};
SeparatedData separated_data(std::int64_t rows, std::int64_t k, std::int64_t d,
                             std::uint64_t seed) {
  SeparatedData out;
  out.centres = random_vector(static_cast<std::size_t>(k * d), seed);
  for (std::int64_t j = 0; j < k; ++j)
    out.centres[j * d] += 4.0f * static_cast<float>(j);
  const auto noise = random_vector(static_cast<std::size_t>(rows * d), seed + 1, -0.2f, 0.2f);
  const std::int64_t used = k >= 3 ? k - 1 : k;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t i = 0; i < d; ++i)
      out.x.push_back(out.centres[(r % used) * d + i] + noise[r * d + i]);
  return out;
}

// rows, k, d
class KMeansGradientTest : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(KMeansGradientTest, MatchesFiniteDifferencesOfFloat64Loss) {
  const auto [rows, k, d] = GetParam();
  const Stream s = Stream::host(2);
  const SeparatedData sd = separated_data(rows, k, d, 40 + rows);
  const RefNearest ref = ref_nearest(rows, k, d, sd.x, sd.centres);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t j = 0; j < k; ++j) {
      if (j == ref.assign[r]) continue;
      ASSERT_GT(ref_squared_distance(&sd.x[r * d], &sd.centres[j * d], d), ref.d2[r] + 1.0)
          << "row " << r << " is near a tie; the test data is not separated";
    }
  }
  // The centres are given, so the initial data only has to hold k distinct rows.
  const Dataset data = dataset_from(sd.centres, d);
  auto model = make_model(ModelSpec{"kmeans", {}, k}, d, 2, rows, s, &data);

  std::vector<float> grad(static_cast<std::size_t>(k * d), 99.0f);
  double loss = 0.5;  // accumulates
  model->loss_and_gradient(sd.centres.data(), {sd.x.data(), nullptr, rows}, grad.data(), &loss, s);
  std::vector<double> p(sd.centres.begin(), sd.centres.end());
  EXPECT_NEAR(loss - 0.5, ref_kmeans_loss(rows, k, d, sd.x, p), 1e-6 * sum(ref.scale));

  // The loss is quadratic in each centre while no assignment changes, so central differences
  // are exact up to rounding; h only has to stay clear of the float64 noise.
  const double h = 1e-3;
  std::vector<double> fd(p.size());
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double keep = p[i];
    p[i] = keep + h;
    const double up = ref_kmeans_loss(rows, k, d, sd.x, p);
    p[i] = keep - h;
    const double down = ref_kmeans_loss(rows, k, d, sd.x, p);
    p[i] = keep;
    fd[i] = (up - down) / (2 * h) / rows;
  }
  EXPECT_TRUE(all_close(grad, fd, 1e-5, 1e-6));
  if (k >= 3) {
    for (std::int64_t i = 0; i < d; ++i)
      EXPECT_EQ(grad[(k - 1) * d + i], 0.0f);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, KMeansGradientTest,
                         ::testing::Values(std::make_tuple(1, 1, 1), std::make_tuple(6, 1, 3),
                                           std::make_tuple(7, 3, 1), std::make_tuple(1, 2, 2),
                                           std::make_tuple(9, 4, 5), std::make_tuple(13, 5, 8),
                                           std::make_tuple(40, 3, 8)));

TEST(KMeansModel, EvaluateMatchesReferenceAcrossChunks) {
  const Stream s = Stream::host(2);
  const std::int64_t k = 3, d = 5, max_batch = 4, rows = 11;  // three chunks, the last partial
  const Dataset data = dataset_from(random_vector(rows * d, 11, -3.0f, 3.0f), d);
  auto model = make_model(ModelSpec{"kmeans", {}, k}, d, 2, max_batch, s, &data);
  std::vector<float> params(static_cast<std::size_t>(k * d));
  model->init(params.data(), 5, s);
  const std::vector<std::int32_t> labels(rows, 0);
  double loss = 0.25;
  std::int64_t correct = 7;
  model->evaluate(params.data(), {data.features.data(), labels.data(), rows}, &loss, &correct, s);
  const double expected =
      ref_kmeans_loss(rows, k, d, data.features, std::vector<double>(params.begin(), params.end()));
  EXPECT_NEAR(loss - 0.25, expected, 1e-5 * (1.0 + expected));
  EXPECT_EQ(correct, 7);  // a quantiser classifies nothing

  // The training loss of the same rows, one batch at a time, agrees.
  double train_loss = 0.0;
  std::vector<float> grad(params.size());
  for (std::int64_t r0 = 0; r0 < rows; r0 += max_batch)
    model->loss_and_gradient(
        params.data(), {data.features.data() + r0 * d, nullptr, std::min(max_batch, rows - r0)},
        grad.data(), &train_loss, s);
  EXPECT_NEAR(train_loss, loss - 0.25, 1e-9 * (1.0 + expected));
  model->evaluate(params.data(), {data.features.data(), nullptr, rows}, nullptr, nullptr, s);
}

std::vector<std::vector<float>> rows_of(const std::vector<float>& v, std::int64_t d) {
  std::vector<std::vector<float>> out;
  for (std::size_t i = 0; i < v.size(); i += static_cast<std::size_t>(d))
    out.emplace_back(v.begin() + static_cast<std::ptrdiff_t>(i),
                     v.begin() + static_cast<std::ptrdiff_t>(i) + d);
  return out;
}

TEST(KMeansModel, InitPicksDistinctTrainingRowsBySeed) {
  const Stream s = Stream::host();
  const std::int64_t d = 4, k = 7;
  const Dataset data = dataset_from(random_vector(50 * d, 12), d);
  auto model = make_model(ModelSpec{"kmeans", {}, k}, d, 2, 8, s, &data);
  std::vector<float> a(k * d), b(k * d), c(k * d);
  model->init(a.data(), 1, s);
  model->init(b.data(), 1, s);
  model->init(c.data(), 2, s);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  const auto training = rows_of(data.features, d);
  const std::set<std::vector<float>> training_set(training.begin(), training.end());
  const auto centres = rows_of(a, d);
  for (const auto& centre : centres)
    EXPECT_EQ(training_set.count(centre), 1u);
  EXPECT_EQ(std::set<std::vector<float>>(centres.begin(), centres.end()).size(),
            static_cast<std::size_t>(k));

  // Over many seeds every training row gets picked: the choice covers the whole set.
  std::set<std::vector<float>> picked;
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    model->init(a.data(), seed, s);
    for (const auto& centre : rows_of(a, d))
      picked.insert(centre);
  }
  EXPECT_EQ(picked, training_set);
}

// k-means++ draws each next centre with probability proportional to the squared distance to
// the nearest centre so far: one far row among many close ones is always among two centres.
TEST(KMeansModel, InitDrawsFarRowsFirst) {
  const Stream s = Stream::host();
  const std::int64_t d = 2, n = 101;
  std::vector<float> features;
  for (std::int64_t i = 0; i < n - 1; ++i) {  // distinct rows within 0.1 of the origin
    features.push_back(1e-3f * static_cast<float>(i));
    features.push_back(-1e-3f * static_cast<float>(i % 7));
  }
  features.push_back(1000.0f);
  features.push_back(1000.0f);
  const Dataset data = dataset_from(features, d);
  auto model = make_model(ModelSpec{"kmeans", {}, 2}, d, 2, 8, s, &data);
  std::vector<float> params(2 * d);
  for (std::uint64_t seed = 0; seed < 50; ++seed) {
    model->init(params.data(), seed, s);
    const bool far = (params[0] == 1000.0f && params[1] == 1000.0f) ||
                     (params[2] == 1000.0f && params[3] == 1000.0f);
    EXPECT_TRUE(far) << "seed " << seed << ": " << params[0] << "," << params[1] << " " << params[2]
                     << "," << params[3];
  }
}

// On well-separated blobs D^2 sampling puts the centres one in each blob for most seeds, and
// its starting objective is far below that of uniform picks (Forgy), which almost never cover
// every blob (16 picks cover 16 blobs with probability 16!/16^16, about 1e-6).
TEST(KMeansModel, InitSpreadsTheCentresOverWellSeparatedBlobs) {
  const Stream s = Stream::host();
  const std::int64_t n = 3200, d = 8;
  const std::int32_t k = 16;
  const Dataset data = make_blobs(n, d, k, 3);
  auto model = make_model(ModelSpec{"kmeans", {}, 0}, d, k, 8, s, &data);
  std::map<std::vector<float>, std::int32_t> blob_of;
  const auto rows = rows_of(data.features, d);
  for (std::int64_t r = 0; r < n; ++r)
    blob_of[rows[r]] = data.labels[r];
  auto covers_every_blob = [&](const std::vector<float>& centres) {
    std::set<std::int32_t> blobs;
    for (const auto& centre : rows_of(centres, d))
      blobs.insert(blob_of.at(centre));
    return blobs.size() == static_cast<std::size_t>(k);
  };
  auto objective_of = [&](const std::vector<float>& centres) {
    return ref_kmeans_loss(n, k, d, data.features,
                           std::vector<double>(centres.begin(), centres.end())) /
           static_cast<double>(n);
  };
  std::vector<float> params(static_cast<std::size_t>(k * d)), uniform(params.size());
  int covering = 0, uniform_covering = 0;
  double objective = 0, uniform_objective = 0;
  constexpr int kSeeds = 20;
  for (std::uint64_t seed = 0; seed < kSeeds; ++seed) {
    model->init(params.data(), seed, s);
    covering += covers_every_blob(params);
    objective += objective_of(params) / kSeeds;
    std::vector<std::int64_t> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), std::int64_t{0});
    std::mt19937_64 rng(seed);
    portable_shuffle(order.data(), n, rng);
    for (std::int64_t c = 0; c < k; ++c)
      std::copy_n(rows[static_cast<std::size_t>(order[static_cast<std::size_t>(c)])].begin(), d,
                  uniform.begin() + c * d);
    uniform_covering += covers_every_blob(uniform);
    uniform_objective += objective_of(uniform) / kSeeds;
  }
  std::printf(
      "k-means++: %d of %d seeds cover every blob, mean objective %.2f; uniform: %d, %.2f\n",
      covering, kSeeds, objective, uniform_covering, uniform_objective);
  EXPECT_GE(covering, 14);
  EXPECT_LE(uniform_covering, 1);
  EXPECT_LT(objective, 0.5 * uniform_objective);
}

TEST(KMeansModel, InitSkipsDuplicateAndNonFiniteRows) {
  const Stream s = Stream::host();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Three distinct rows, each twice (once with -0 for 0), and a row holding a NaN.
  const std::vector<float> features = {1,     2, 0, 3, 4, 5, 6, 7, 8,   1, 2,
                                       -0.0f, 3, 4, 5, 6, 7, 8, 1, nan, 2};
  const Dataset data = dataset_from(features, 3);
  auto model = make_model(ModelSpec{"kmeans", {}, 3}, 3, 2, 8, s, &data);
  const std::set<std::vector<float>> distinct = {{1, 2, 0}, {3, 4, 5}, {6, 7, 8}};
  std::vector<float> params(9);
  for (std::uint64_t seed = 0; seed < 20; ++seed) {
    model->init(params.data(), seed, s);
    const auto centres = rows_of(params, 3);
    EXPECT_EQ(std::set<std::vector<float>>(centres.begin(), centres.end()), distinct);
  }
  expect_input_error(
      [&] {
        make_model(ModelSpec{"kmeans", {}, 4}, 3, 2, 8, s, &data);
      },
      {"K=4", "only 3 distinct"});
}

TEST(KMeansModel, LargeTrainingSetsAreSampledForInit) {
  const Stream s = Stream::host();
  // 4.8M values, more than the 4M (16 MiB) the model keeps: an even sample of 262144 rows.
  const std::int64_t n = 300000, d = 16;
  const Dataset data = make_blobs(n, d, 3, 5);
  auto model = make_model(ModelSpec{"kmeans", {}, 0}, d, 3, 8, s, &data);
  const auto* kmeans = dynamic_cast<const KMeans*>(model.get());
  ASSERT_NE(kmeans, nullptr);
  EXPECT_EQ(kmeans->candidate_rows(), (std::int64_t{1} << 22) / d);
  std::vector<float> params(3 * d);
  model->init(params.data(), 1, s);
  const auto training = rows_of(data.features, d);
  const std::set<std::vector<float>> training_set(training.begin(), training.end());
  for (const auto& centre : rows_of(params, d))
    EXPECT_EQ(training_set.count(centre), 1u);
}

// ---------------------------------------------------------------------------------------------
// Gaussian blobs

TEST(Blobs, ShapeLabelsAndNoise) {
  std::vector<float> centres;
  const std::int64_t n = 1000, d = 3;
  const std::int32_t k = 4;
  const Dataset data = make_blobs(n, d, k, 7, &centres);
  EXPECT_EQ(data.source, "blobs:1000,3,4");
  EXPECT_EQ(data.rows, n);
  EXPECT_EQ(data.cols, d);
  EXPECT_EQ(data.classes, k);
  ASSERT_EQ(data.features.size(), static_cast<std::size_t>(n * d));
  ASSERT_EQ(data.labels.size(), static_cast<std::size_t>(n));
  ASSERT_EQ(centres.size(), static_cast<std::size_t>(k * d));
  for (float c : centres) {
    EXPECT_GE(c, -10.0f);
    EXPECT_LE(c, 10.0f);
  }

  std::vector<std::int64_t> count(k, 0);
  std::vector<double> residual_sum(static_cast<std::size_t>(k * d), 0.0);
  double squares = 0.0;
  bool in_order = true;
  for (std::int64_t r = 0; r < n; ++r) {
    const std::int32_t label = data.labels[r];
    ASSERT_GE(label, 0);
    ASSERT_LT(label, k);
    in_order = in_order && label == r % k;
    ++count[label];
    for (std::int64_t i = 0; i < d; ++i) {
      const double e = data.features[r * d + i] - centres[label * d + i];
      residual_sum[label * d + i] += e;
      squares += e * e;
    }
  }
  EXPECT_EQ(count, std::vector<std::int64_t>(k, n / k));
  EXPECT_FALSE(in_order) << "the points are not shuffled";
  // Each blob's mean is its centre (250 points: the mean's std is 0.063) and the noise has
  // unit variance (3000 values: the estimate's std is 0.026).
  for (std::int64_t j = 0; j < k; ++j)
    for (std::int64_t i = 0; i < d; ++i)
      EXPECT_NEAR(residual_sum[j * d + i] / count[j], 0.0, 0.3) << "blob " << j << " dim " << i;
  EXPECT_NEAR(squares / static_cast<double>(n * d), 1.0, 0.12);

  const Dataset small = make_blobs(10, 2, 3, 1);
  std::vector<int> small_count(3, 0);
  for (std::int32_t label : small.labels)
    ++small_count[label];
  EXPECT_EQ(small_count, (std::vector<int>{4, 3, 3}));
}

TEST(Blobs, DeterministicBySeed) {
  // Enough rows for several generator blocks.
  const Dataset a = make_blobs(10000, 3, 5, 42);
  const Dataset b = make_blobs(10000, 3, 5, 42);
  const Dataset c = make_blobs(10000, 3, 5, 43);
  EXPECT_EQ(a.features, b.features);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_NE(a.features, c.features);
  EXPECT_NE(a.labels, c.labels);
  for (float v : a.features)
    ASSERT_TRUE(std::isfinite(v));
}

TEST(Blobs, RejectsBadArguments) {
  expect_input_error([] { make_blobs(0, 2, 1, 1); }, {"positive"});
  expect_input_error([] { make_blobs(5, 0, 1, 1); }, {"positive"});
  expect_input_error([] { make_blobs(5, 2, 0, 1); }, {"positive"});
  expect_input_error([] { make_blobs(2, 2, 3, 1); }, {"3 blobs", "2 points"});
  expect_input_error([] { make_blobs(1 << 20, 1 << 12, 2, 1); }, {"values"});
  // One dimension, but 2^30 + 1 labels beside the features: refused before allocating.
  expect_input_error([] { make_blobs((1 << 30) + 1, 1, 2, 1); }, {"a label", "values"});
}

TEST(Blobs, LoadDatasetSplitsAndDoesNotNormalise) {
  DataOptions options;
  options.spec = "blobs:1000,8,4";
  options.seed = 9;
  const TrainTest data = load_dataset(options);
  EXPECT_EQ(data.train.rows, 900);
  EXPECT_EQ(data.test.rows, 100);
  EXPECT_EQ(data.train.cols, 8);
  EXPECT_EQ(data.test.cols, 8);
  EXPECT_EQ(data.train.classes, 4);
  EXPECT_EQ(data.test.classes, 4);

  // Every row is a generated row, unchanged, and together they are all of them.
  const Dataset all = make_blobs(1000, 8, 4, options.seed);
  const auto generated = rows_of(all.features, 8);
  const std::multiset<std::vector<float>> expected(generated.begin(), generated.end());
  std::multiset<std::vector<float>> got;
  for (const Dataset* part : {&data.train, &data.test})
    for (const auto& row : rows_of(part->features, 8))
      got.insert(row);
  EXPECT_EQ(got, expected);
  EXPECT_EQ(load_dataset(options).train.features, data.train.features);

  // Normalisation applies when asked for.
  options.normalize = Normalize::kStandard;
  const TrainTest standard = load_dataset(options);
  double mean = 0.0;
  for (std::int64_t r = 0; r < standard.train.rows; ++r)
    mean += standard.train.features[r * 8];
  EXPECT_NEAR(mean / standard.train.rows, 0.0, 1e-4);
}

TEST(Blobs, BadSpecsAreNamed) {
  for (const char* spec : {"blobs:", "blobs:10,2", "blobs:10,2,3,4", "blobs:a,2,3", "blobs:10,-2,3",
                           "blobs:10,+2,3", "blobs: 10,2,3", "blobs:10,2,3 ", "blobs:10,,3",
                           "blobs:1e3,2,3", "blobs:99999999999999999999,2,3"}) {
    DataOptions options;
    options.spec = spec;
    expect_input_error([&] { load_dataset(options); },
                       {std::string("'") + spec + "'", "blobs:N,D,K"});
  }
  DataOptions options;
  options.spec = "blobs:10,2,99999999999";
  expect_input_error([&] { load_dataset(options); }, {"blobs:10,2,99999999999", "too many"});
  options.spec = "blobs:10,0,3";
  expect_input_error([&] { load_dataset(options); }, {"positive"});
  options.spec = "blobs:2,2,3";
  expect_input_error([&] { load_dataset(options); }, {"3 blobs"});
  options.spec = "blobs:10,2,3";
  options.test_spec = "blobs:10,2,3";
  expect_input_error([&] { load_dataset(options); }, {"blobs:10,2,3", "no separate test set"});
  options.test_spec = "";
  options.test_fraction = 1.0;
  expect_input_error([&] { load_dataset(options); }, {"test fraction"});
  options.spec = "mnist";
  expect_input_error([&] { load_dataset(options); }, {"blobs:N,D,K"});
}

// ---------------------------------------------------------------------------------------------
// Training

double objective(Model& model, const std::vector<float>& params, const Dataset& data,
                 const Stream& s) {
  double loss = 0.0;
  model.evaluate(params.data(), {data.features.data(), data.labels.data(), data.rows}, &loss,
                 nullptr, s);
  return loss / static_cast<double>(data.rows);
}

TEST(KMeansTraining, SgdReachesTheNoiseFloorOfBlobs) {
  const std::int64_t n = 4096, d = 8, batch = 64;
  const std::int32_t k = 4;
  const Dataset data = make_blobs(n, d, k, 11);
  const Stream s = Stream::host(2);
  auto model = make_model(ModelSpec{"kmeans", {}, 0}, d, k, batch, s, &data);
  std::vector<float> params(model->parameter_count()), grad(params.size());

  // An initialisation can start two centres in one blob, a local minimum that SGD does not
  // leave; this is about SGD, so take the first seed whose centres come from four blobs.
  std::map<std::vector<float>, std::int32_t> blob_of;
  const auto rows = rows_of(data.features, d);
  for (std::int64_t r = 0; r < n; ++r)
    blob_of[rows[r]] = data.labels[r];
  std::uint64_t seed = 0;
  for (;; ++seed) {
    ASSERT_LT(seed, 100u);
    model->init(params.data(), seed, s);
    std::set<std::int32_t> blobs;
    for (const auto& centre : rows_of(params, d))
      blobs.insert(blob_of.at(centre));
    if (blobs.size() == static_cast<std::size_t>(k)) break;
  }

  // At the true centres the objective, ½ E||noise||^2, is D / 2; a centre that is a data point
  // of its blob starts it near D. Allow 20% over the floor for the centres' SGD jitter.
  const double threshold = 1.2 * 0.5 * static_cast<double>(d);
  const double start = objective(*model, params, data, s);
  EXPECT_GT(start, threshold);
  for (int step = 0; step < 128; ++step) {
    const std::int64_t r0 = (step * batch) % n;
    model->loss_and_gradient(params.data(), {data.features.data() + r0 * d, nullptr, batch},
                             grad.data(), nullptr, s);
    sgd_step(s, model->parameter_count(), 1.0f, grad.data(), params.data());
  }
  const double end = objective(*model, params, data, s);
  EXPECT_LT(end, threshold) << "started at " << start;
  EXPECT_GT(end, 0.8 * 0.5 * static_cast<double>(d));  // below the floor would be overfitting
}

// K-Means trains at step sizes of 1 and more. Two workers merging with the default rule at
// lr 5 used to diverge (NaN within 100 steps without the filter) because the seed rule's pull
// overshot the peer's state; now they end where one worker does.
TEST(KMeansTraining, TwoWorkersMergingAtLargeStepSizesStayStable) {
  TrainConfig c;
  c.data.spec = "blobs:8000,8,4";
  c.model = ModelSpec{"kmeans", {}, 4};
  c.batch = 64;
  c.lr = 5.0f;
  c.epochs = 4;
  c.eval_every = 100;
  c.progress = false;
  c.deterministic = true;
  c.algorithm = Algorithm::kLocal;
  const TrainResult one = train(c);
  ASSERT_TRUE(std::isfinite(one.final_test_loss));
  for (Algorithm algo : {Algorithm::kAsgd, Algorithm::kAsgdNoFilter}) {
    SCOPED_TRACE(std::string(to_string(algo)));
    c.algorithm = algo;
    c.workers = 2;
    const TrainResult two = train(c);
    EXPECT_GT(two.messages_accepted, 0);
    for (const EvalPoint& p : two.history)
      ASSERT_TRUE(std::isfinite(p.test_loss)) << p.step;
    EXPECT_LT(two.final_test_loss, 1.1 * one.final_test_loss);
  }
}

}  // namespace
}  // namespace asgd
