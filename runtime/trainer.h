// Training a model with N workers: ASGD or a baseline (runtime/config.h), one thread per
// worker over the in-process transport, or all workers stepped by one thread in a fixed
// seeded order (deterministic mode). Each worker evaluates its own state on the test set
// every --eval-every of its steps; worker 0's evaluations decide the stop (target accuracy)
// and make up the run's history.
//
// Thread-safety: train() may run on any thread; it owns everything it creates and joins every
// thread it starts before returning or throwing (the first error of any worker is rethrown).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/config.h"
#include "runtime/data/dataset.h"
#include "runtime/worker.h"

namespace asgd {

// One evaluation of one worker's state on the test set.
struct EvalPoint {
  int worker = 0;            // -1: the average of all workers' states (simu's result)
  double time_s = 0;         // wall time since training started
  double eval_s = 0;         // of which this worker spent evaluating, this evaluation included
  std::int64_t step = 0;
  std::int64_t samples = 0;  // training samples processed
  double epoch = 0;          // samples / training rows
  double train_loss = 0;     // mean training loss since the previous evaluation
  double test_loss = 0;
  double test_accuracy = 0;  // classifiers; 0 otherwise
  double samples_per_s = 0;  // this worker's training throughput since its previous evaluation
  // Communication since the start (workers that communicate).
  std::int64_t messages_sent = 0;
  std::int64_t messages_received = 0;
  std::int64_t messages_accepted = 0;
  std::int64_t messages_rejected = 0;  // by direction or window: the sum of the next two
  std::int64_t messages_rejected_direction = 0;
  std::int64_t messages_rejected_window = 0;
  std::int64_t messages_nonfinite = 0;
  std::int64_t bytes_sent = 0;
  double mean_staleness_s = 0;  // seconds between a message's sending and its use
  double mean_step_gap = 0;     // receiver's step - sender's step (negative: sender ahead)
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
  bool classifier = true;    // false: test_loss is the objective, accuracy is meaningless
  int workers = 1;
  int rank = 0;  // across processes: this rank (only rank 0 holds the totals and history of 0)
  std::string algorithm;
  std::string transport = "local";  // "local", "mpi", "nccl" or "rounds": what carried the messages
  // Totals over all workers.
  std::int64_t total_samples = 0;
  std::int64_t messages_sent = 0;
  std::int64_t messages_received = 0;
  std::int64_t messages_accepted = 0;
  std::int64_t messages_rejected = 0;
  std::int64_t messages_rejected_direction = 0;
  std::int64_t messages_rejected_window = 0;
  std::int64_t messages_nonfinite = 0;
  std::int64_t messages_superseded = 0;  // dropped unsent from full send queues
  std::int64_t bytes_sent = 0;
  std::vector<EvalPoint> worker_final;   // each worker's last evaluation
  // Reliability.
  std::int64_t divergence_restores = 0;  // over all workers (--on-divergence restore)
  std::int64_t checkpoints_written = 0;  // by this process
  std::int64_t resumed_step = -1;        // worker 0's step in the checkpoint resumed from
  std::vector<std::pair<std::string, std::int64_t>> wire_rejections;  // MPI: by reason, all ranks
  std::string model;         // Model::describe()
  std::int64_t parameters = 0;
  std::uint64_t fingerprint = 0;
  std::int64_t train_rows = 0;
  std::int64_t test_rows = 0;
};

// Loads the data set that config.data names, then trains. Throws InputError for bad input and
// Error when training diverges (a non-finite loss) or a device call fails.
TrainResult train(const TrainConfig& config);
// Trains on data already in memory (sharded across the workers).
TrainResult train(const TrainConfig& config, const TrainTest& data);
// Trains a model of the caller's own (see kernels/models/model.h and runtime/worker.h).
TrainResult train(const TrainConfig& config, const TrainTest& data,
                  const ModelFactory& factory);

// Writes `result` and the configuration as one JSON object to `path` (check it before
// training with check_output_path(), runtime/output_path.h).
void write_summary(const std::string& path, const TrainConfig& config, const TrainResult& result);

}  // namespace asgd
