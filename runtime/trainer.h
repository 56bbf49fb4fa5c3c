// Training one model on one worker: the loop of local SGD steps with periodic evaluation on a
// held-out set, stop conditions (epochs, wall time, target accuracy) and metrics.
//
// Thread-safety: train() may run on any thread; it owns everything it creates. All device
// work is issued on one stream; the host reads device results only at evaluations.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/config.h"
#include "runtime/data/dataset.h"

namespace asgd {

// One evaluation on the test set.
struct EvalPoint {
  double time_s = 0;         // wall time since training started
  std::int64_t step = 0;
  std::int64_t samples = 0;  // training samples processed
  double epoch = 0;          // samples / training rows
  double train_loss = 0;     // mean training loss since the previous evaluation
  double test_loss = 0;
  double test_accuracy = 0;
  double samples_per_s = 0;  // training throughput since the previous evaluation
};

struct TrainResult {
  std::vector<EvalPoint> history;
  double final_test_accuracy = 0;
  double final_test_loss = 0;
  std::optional<double> time_to_target_s;  // first evaluation at or above the target
  double train_seconds = 0;  // wall time of the training loop, evaluations included
  double eval_seconds = 0;   // of which spent evaluating
  std::int64_t steps = 0;
  std::int64_t samples = 0;
  double samples_per_s = 0;  // samples / (train_seconds - eval_seconds)
  std::string stop_reason;   // "target", "epochs" or "max-seconds"
  std::string model;         // Model::describe()
  std::int64_t parameters = 0;
  std::uint64_t fingerprint = 0;
  std::int64_t train_rows = 0;
  std::int64_t test_rows = 0;
};

// Loads the data set that config.data names, then trains. Throws InputError for bad input and
// Error when training diverges (a non-finite loss) or a device call fails.
TrainResult train(const TrainConfig& config);
// Trains on data already in memory.
TrainResult train(const TrainConfig& config, const TrainTest& data);

// Writes `result` and the configuration as one JSON object to `path`.
void write_summary(const std::string& path, const TrainConfig& config, const TrainResult& result);

}  // namespace asgd
