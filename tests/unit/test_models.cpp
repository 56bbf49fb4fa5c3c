// Every built-in model's gradient against central finite differences of a float64 reference
// forward pass, its loss and accuracy against the same reference, and its identity
// (layout, fingerprint, initialisation).
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/models/model.h"
#include "runtime/error.h"
#include "tests/common/reference.h"

namespace asgd {
namespace {
using testing::all_close;

// Float64 forward pass of a FeedForward model described by its layout: returns the summed loss
// and counts correct predictions.
struct RefResult {
  double loss_sum = 0;
  std::int64_t correct = 0;
};
RefResult reference_forward(const Model& model, bool sigmoid, const std::vector<double>& p,
                            const std::vector<float>& x, const std::vector<std::int32_t>& y,
                            std::int64_t rows) {
  const auto& layout = model.layout();
  const int layers = static_cast<int>(layout.size() / 2);
  RefResult out;
  for (std::int64_t r = 0; r < rows; ++r) {
    std::vector<double> a(x.begin() + r * model.input_dim(),
                          x.begin() + (r + 1) * model.input_dim());
    for (int l = 0; l < layers; ++l) {
      const auto& w = layout[2 * l];
      const auto& b = layout[2 * l + 1];
      const std::int64_t n_out = w.shape[0], n_in = w.shape[1];
      std::vector<double> z(n_out);
      for (std::int64_t o = 0; o < n_out; ++o) {
        double acc = p[b.offset + o];
        for (std::int64_t i = 0; i < n_in; ++i) acc += p[w.offset + o * n_in + i] * a[i];
        z[o] = (l + 1 < layers) ? std::max(acc, 0.0) : acc;
      }
      a = std::move(z);
    }
    const std::int64_t label = y[r];
    const std::int64_t best = std::max_element(a.begin(), a.end()) - a.begin();
    if (!sigmoid) {
      const double mx = a[best];
      double s = 0;
      for (double v : a) s += std::exp(v - mx);
      out.loss_sum += mx + std::log(s) - a[label];
      out.correct += best == label;
    } else {
      const std::int64_t cols = static_cast<std::int64_t>(a.size());
      for (std::int64_t c = 0; c < cols; ++c) {
        const double t = cols == 1 ? (label == 1) : (label == c);
        out.loss_sum += std::log1p(std::exp(-std::abs(a[c]))) + std::max(a[c], 0.0) - a[c] * t;
      }
      out.correct += cols == 1 ? ((a[0] > 0) == (label == 1)) : best == label;
    }
  }
  return out;
}

struct ModelCase {
  const char* kind;
  std::vector<std::int64_t> hidden;
  std::int64_t input;
  std::int32_t classes;
};

class ModelGradientTest : public ::testing::TestWithParam<ModelCase> {};

TEST_P(ModelGradientTest, MatchesFiniteDifferencesOfFloat64Reference) {
  const ModelCase c = GetParam();
  const Stream s = Stream::host(1);
  const std::int64_t rows = 6;
  auto model = make_model({c.kind, c.hidden}, c.input, c.classes, rows, s);
  const bool sigmoid = std::string(c.kind) == "logistic";
  const std::int64_t n = model->parameter_count();

  std::vector<float> params(n);
  model->init(params.data(), 42, s);
  const auto x = testing::random_vector(rows * c.input, 7, -2.0f, 2.0f);
  const auto y = testing::random_labels(rows, c.classes, 8);

  std::vector<float> grad(n, 99.0f);
  double loss_sum = 0.5;  // accumulates
  model->loss_and_gradient(params.data(), {x.data(), y.data(), rows}, grad.data(), &loss_sum, s);

  std::vector<double> p(params.begin(), params.end());
  const RefResult ref = reference_forward(*model, sigmoid, p, x, y, rows);
  EXPECT_NEAR(loss_sum - 0.5, ref.loss_sum, 1e-5 * rows);

  // Central differences of the mean loss in float64; h is small enough that no ReLU changes
  // side for these random inputs, large enough to stay far above rounding.
  const double h = 1e-6;
  std::vector<double> fd(n);
  for (std::int64_t i = 0; i < n; ++i) {
    const double keep = p[i];
    p[i] = keep + h;
    const double up = reference_forward(*model, sigmoid, p, x, y, rows).loss_sum;
    p[i] = keep - h;
    const double down = reference_forward(*model, sigmoid, p, x, y, rows).loss_sum;
    p[i] = keep;
    fd[i] = (up - down) / (2 * h) / rows;
  }
  EXPECT_TRUE(all_close(grad, fd, 1e-3, 1e-5));
}

TEST_P(ModelGradientTest, EvaluateMatchesReferenceAcrossChunks) {
  const ModelCase c = GetParam();
  const Stream s = Stream::host(2);
  const std::int64_t max_batch = 4, rows = 11;  // three chunks, the last one partial
  auto model = make_model({c.kind, c.hidden}, c.input, c.classes, max_batch, s);
  const bool sigmoid = std::string(c.kind) == "logistic";
  std::vector<float> params(model->parameter_count());
  model->init(params.data(), 3, s);
  const auto x = testing::random_vector(rows * c.input, 9, -2.0f, 2.0f);
  const auto y = testing::random_labels(rows, c.classes, 10);
  double loss = 0;
  std::int64_t correct = 0;
  model->evaluate(params.data(), {x.data(), y.data(), rows}, &loss, &correct, s);
  const RefResult ref = reference_forward(
      *model, sigmoid, std::vector<double>(params.begin(), params.end()), x, y, rows);
  EXPECT_NEAR(loss, ref.loss_sum, 1e-5 * rows);
  EXPECT_EQ(correct, ref.correct);
}

INSTANTIATE_TEST_SUITE_P(
    Models, ModelGradientTest,
    ::testing::Values(ModelCase{"softmax", {}, 7, 3}, ModelCase{"logistic", {}, 5, 2},
                      ModelCase{"logistic", {}, 6, 4}, ModelCase{"mlp", {5}, 7, 3},
                      ModelCase{"mlp", {9, 4}, 6, 5}, ModelCase{"mlp", {1, 3, 2}, 3, 2}),
    [](const auto& tp) {
      std::string name = tp.param.kind;
      for (auto h : tp.param.hidden) name += "_" + std::to_string(h);
      return name + "_c" + std::to_string(tp.param.classes);
    });

TEST(ModelTest, LayoutAndParameterCount) {
  const Stream s = Stream::host();
  auto mlp = make_model({"mlp", {256, 256}}, 784, 10, 64, s);
  EXPECT_EQ(mlp->describe(), "mlp 784-256-256-10");
  EXPECT_EQ(mlp->parameter_count(), 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10);
  ASSERT_EQ(mlp->layout().size(), 6u);
  EXPECT_EQ(mlp->layout()[2].name, "layer2.weight");
  EXPECT_EQ(mlp->layout()[2].offset, 784 * 256 + 256);
  auto logistic = make_model({"logistic", {}}, 20, 2, 8, s);
  EXPECT_EQ(logistic->parameter_count(), 21);  // one sigmoid output for two classes
}

TEST(ModelTest, FingerprintIdentifiesLayout) {
  const Stream s = Stream::host();
  const auto a = make_model({"mlp", {256, 256}}, 784, 10, 64, s)->fingerprint();
  EXPECT_EQ(a, make_model({"mlp", {256, 256}}, 784, 10, 128, s)->fingerprint());
  EXPECT_NE(a, make_model({"mlp", {256, 128}}, 784, 10, 64, s)->fingerprint());
  EXPECT_NE(a, make_model({"mlp", {256, 256}}, 784, 9, 64, s)->fingerprint());
  EXPECT_NE(make_model({"softmax", {}}, 784, 10, 64, s)->fingerprint(),
            make_model({"logistic", {}}, 784, 10, 64, s)->fingerprint());
}

TEST(ModelTest, InitIsSeededAndBounded) {
  const Stream s = Stream::host();
  auto model = make_model({"mlp", {16}}, 100, 10, 4, s);
  std::vector<float> a(model->parameter_count()), b(a.size()), c(a.size());
  model->init(a.data(), 1, s);
  model->init(b.data(), 1, s);
  model->init(c.data(), 2, s);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  for (const auto& t : model->layout()) {
    const float bound = 1.0f / std::sqrt(static_cast<float>(t.fan_in));
    for (std::int64_t i = 0; i < t.size(); ++i) ASSERT_LE(std::abs(a[t.offset + i]), bound);
  }
}

TEST(ModelTest, RejectsBadSpecs) {
  const Stream s = Stream::host();
  EXPECT_THROW(make_model({"resnet", {}}, 10, 2, 4, s), InputError);
  EXPECT_THROW(make_model({"mlp", {8, 0}}, 10, 2, 4, s), InputError);
  EXPECT_THROW(make_model({"softmax", {}}, 10, 1, 4, s), InputError);
  auto model = make_model({"softmax", {}}, 3, 2, 4, s);
  std::vector<float> p(model->parameter_count()), g(p.size()), x(15);
  std::vector<std::int32_t> y(5);
  EXPECT_THROW(model->loss_and_gradient(p.data(), {x.data(), y.data(), 5}, g.data(), nullptr, s),
               Error);
}

}  // namespace
}  // namespace asgd
