// A small labelled data set for training tests: Gaussian clusters around well-separated
// centres, linearly separable with high probability, so every model learns it in seconds.
#pragma once

#include <cstdint>
#include <random>

#include "runtime/data/dataset.h"

namespace asgd::testing {

inline Dataset separable(std::int64_t rows, std::int64_t cols, int classes, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.3f);
  Dataset d;
  d.source = "separable";
  d.rows = rows;
  d.cols = cols;
  d.classes = classes;
  for (std::int64_t r = 0; r < rows; ++r) {
    const int label = static_cast<int>(r % classes);
    d.labels.push_back(label);
    for (std::int64_t c = 0; c < cols; ++c)
      d.features.push_back((c % classes == label ? 2.0f : 0.0f) + noise(rng));
  }
  return d;
}

inline TrainTest separable_train_test() {
  return {separable(2000, 12, 4, 1), separable(400, 12, 4, 2)};
}

}  // namespace asgd::testing
