// The training configuration: every setting of `asgd train`, with its default. A TOML file
// sets any of them by the flag's name (`lr = 0.1`, `hidden = [256, 256]`,
// `target-accuracy = 0.85`); flags given on the command line override the file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/models/model.h"
#include "runtime/data/dataset.h"
#include "runtime/device.h"

namespace asgd {

struct TrainConfig {
  DataOptions data;
  ModelSpec model;
  std::int64_t batch = 64;
  float lr = 0.05f;
  double epochs = 10.0;          // upper bound on training, in passes over the training set
  double max_seconds = 0.0;      // wall-clock bound; 0 = none
  double target_accuracy = 0.0;  // stop once test accuracy reaches it; 0 = none
  std::int64_t eval_every = 500;  // steps between evaluations on the test set
  Backend backend = Backend::kHost;
  int device = 0;
  int threads = 1;  // host backend: OpenMP/OpenBLAS threads
  std::uint64_t seed = 1;
  std::string metrics_path;  // JSON lines, one per evaluation
  std::string summary_path;  // one JSON object at the end
  bool progress = true;      // a live progress line when stderr is a terminal
};

// Applies the settings of TOML file `path` to `config`. Throws InputError naming the file,
// line and key for a missing or malformed file, an unknown key or a value of the wrong type.
void apply_config_file(const std::string& path, TrainConfig& config);

// Checks values that no single flag parser can (ranges, combinations); throws InputError.
void validate(const TrainConfig& config);

}  // namespace asgd
