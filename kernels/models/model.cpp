#include "kernels/models/model.h"

#include <cmath>
#include <random>

#include <xxhash.h>

#include "kernels/models/feed_forward.h"
#include "kernels/models/kmeans.h"
#include "runtime/buffer.h"
#include "runtime/data/dataset.h"
#include "runtime/error.h"

namespace asgd {

std::int64_t TensorInfo::size() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::int64_t Model::parameter_count() const {
  std::int64_t n = 0;
  for (const auto& t : layout()) n = std::max(n, t.offset + t.size());
  return n;
}

std::uint64_t Model::fingerprint() const {
  std::string key = describe();
  for (const auto& t : layout()) {
    key += fmt::format("|{}@{}:", t.name, t.offset);
    for (auto d : t.shape) key += fmt::format("{},", d);
  }
  return XXH64(key.data(), key.size(), 0);
}

void Model::init(float* params, std::uint64_t seed, const Stream& stream) const {
  std::vector<float> host(static_cast<std::size_t>(parameter_count()));
  std::mt19937_64 rng(seed);
  for (const auto& t : layout()) {
    const float bound = 1.0f / std::sqrt(static_cast<float>(std::max<std::int64_t>(1, t.fan_in)));
    std::uniform_real_distribution<float> dist(-bound, bound);
    for (std::int64_t i = 0; i < t.size(); ++i) host[t.offset + i] = dist(rng);
  }
  copy_async(params, host.data(), host.size() * sizeof(float), stream);
  stream.synchronize();  // `host` dies here
}

void check_model(const Model* model, std::int64_t input_dim, std::int32_t classes,
                 std::int64_t batch) {
  if (model == nullptr) ASGD_INPUT_ERROR("the model factory returned no model (a null pointer)");
  const std::string name = model->describe();
  const std::vector<TensorInfo>& layout = model->layout();
  if (layout.empty()) ASGD_INPUT_ERROR("model '{}': its layout lists no tensors", name);
  for (const TensorInfo& t : layout) {
    if (t.offset < 0 || t.offset > kMaxModelParameters)
      ASGD_INPUT_ERROR("model '{}': tensor '{}' starts at offset {}, outside [0, {}]", name, t.name,
                       t.offset, kMaxModelParameters);
    std::int64_t size = 1;
    for (std::int64_t d : t.shape) {
      if (d < 1)
        ASGD_INPUT_ERROR("model '{}': tensor '{}' has a dimension of {}; each must be >= 1", name,
                         t.name, d);
      // size * d > room, tested without forming the product (it could overflow).
      if (d > (kMaxModelParameters - t.offset) / size)
        ASGD_INPUT_ERROR(
            "model '{}': tensor '{}' ends beyond {} parameters, the most a state may "
            "have",
            name, t.name, kMaxModelParameters);
      size *= d;
    }
  }
  if (model->input_dim() != input_dim)
    ASGD_INPUT_ERROR("the model '{}' expects {} features but the data has {}", name,
                     model->input_dim(), input_dim);
  if (model->max_batch() < batch)
    ASGD_INPUT_ERROR("model '{}' takes batches of up to {} rows, but training uses {} (--batch)",
                     name, model->max_batch(), batch);
  if (model->is_classifier() && model->num_classes() < classes)
    ASGD_INPUT_ERROR(
        "model '{}' has {} classes, but the data's labels run to {}; a label beyond "
        "the model's outputs cannot be scored",
        name, model->num_classes(), classes - 1);
}

std::unique_ptr<Model> make_model(const ModelSpec& spec, std::int64_t input_dim,
                                  std::int32_t classes, std::int64_t max_batch,
                                  const Stream& stream, const Dataset* init_data) {
  if (input_dim < 1) ASGD_INPUT_ERROR("the data has {} features; a model needs at least 1", input_dim);
  // Before the class check: K-Means ignores labels, so one class is fine when K is given.
  if (spec.kind == "kmeans") {
    if (init_data == nullptr)
      ASGD_INPUT_ERROR(
          "kmeans draws its initial centres from the training set, but none was given");
    if (spec.clusters < 0)
      ASGD_INPUT_ERROR("kmeans: {} clusters; give K >= 1, or 0 for the data's class count",
                       spec.clusters);
    if (spec.clusters == 0 && !init_data->label_problem.empty())
      ASGD_INPUT_ERROR("{}: {}, so the labels cannot give kmeans its K; give --clusters K",
                       init_data->source, init_data->label_problem);
    const std::int64_t k = spec.clusters > 0 ? spec.clusters : classes;
    if (k < 1 || k > INT32_MAX)
      ASGD_INPUT_ERROR("kmeans: K={} is out of range; it must lie in [1, {}]", k, INT32_MAX);
    if (init_data->cols != input_dim)
      ASGD_INPUT_ERROR("{}: {} feature(s) per row, but the kmeans model was asked for {}",
                       init_data->source, init_data->cols, input_dim);
    if (init_data->rows < k)
      ASGD_INPUT_ERROR("{}: kmeans with K={} needs at least {} training rows, but there are {}",
                       init_data->source, k, k, init_data->rows);
    return std::make_unique<KMeans>(k, input_dim, max_batch, init_data->features.data(),
                                    init_data->rows, stream);
  }
  if (init_data != nullptr && !init_data->label_problem.empty())
    ASGD_INPUT_ERROR(
        "{}: {}, which is not a class: model {} needs whole-number class labels; "
        "pick the column that holds the classes (--csv-label-column for CSV), or "
        "train --model kmeans, which ignores labels",
        init_data->source, init_data->label_problem, spec.kind);
  if (classes < 2)
    ASGD_INPUT_ERROR("the data has {} class(es); a classifier needs at least 2", classes);
  if (spec.kind == "softmax")
    return std::make_unique<FeedForward>("softmax", std::vector<std::int64_t>{input_dim, classes},
                                         classes, OutputLoss::kSoftmax, max_batch, stream);
  if (spec.kind == "logistic") {
    const std::int64_t outputs = classes == 2 ? 1 : classes;
    return std::make_unique<FeedForward>("logistic", std::vector<std::int64_t>{input_dim, outputs},
                                         classes, OutputLoss::kSigmoid, max_batch, stream);
  }
  if (spec.kind == "mlp") {
    std::vector<std::int64_t> widths{input_dim};
    for (auto h : spec.hidden) {
      if (h < 1) ASGD_INPUT_ERROR("--hidden: layer width {} is not positive", h);
      widths.push_back(h);
    }
    widths.push_back(classes);
    // Counted in double so that absurd widths cannot overflow the count they are refused by.
    double parameters = 0;
    for (std::size_t i = 1; i < widths.size(); ++i)
      parameters += static_cast<double>(widths[i - 1] + 1) * static_cast<double>(widths[i]);
    if (parameters > kMaxModelParameters)
      ASGD_INPUT_ERROR(
          "--hidden {}: the MLP would have {:.3g} parameters, more than the {:.3g} "
          "one state may hold; use narrower layers",
          fmt::join(spec.hidden, ","), parameters, static_cast<double>(kMaxModelParameters));
    try {
      return std::make_unique<FeedForward>("mlp", std::move(widths), classes, OutputLoss::kSoftmax,
                                           max_batch, stream);
    } catch (const std::bad_alloc&) {
      ASGD_INPUT_ERROR(
          "--hidden {}: the MLP's {:.3g} parameters, gradients and activations "
          "(batch {}) do not fit in this device's memory; use narrower layers or a "
          "smaller batch",
          fmt::join(spec.hidden, ","), parameters, max_batch);
    }
  }
  ASGD_INPUT_ERROR("unknown model '{}': expected softmax, logistic, mlp or kmeans", spec.kind);
}

}  // namespace asgd
