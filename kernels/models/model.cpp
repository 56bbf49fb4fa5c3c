#include "kernels/models/model.h"

#include <cmath>
#include <random>

#include <xxhash.h>

#include "kernels/models/feed_forward.h"
#include "runtime/buffer.h"
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

std::unique_ptr<Model> make_model(const ModelSpec& spec, std::int64_t input_dim,
                                  std::int32_t classes, std::int64_t max_batch,
                                  const Stream& stream, const Dataset* init_data) {
  (void)init_data;
  if (input_dim < 1) ASGD_INPUT_ERROR("the data has {} features; a model needs at least 1", input_dim);
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
    return std::make_unique<FeedForward>("mlp", std::move(widths), classes, OutputLoss::kSoftmax,
                                         max_batch, stream);
  }
  ASGD_INPUT_ERROR("unknown model '{}': expected softmax, logistic, mlp or kmeans", spec.kind);
}

}  // namespace asgd
