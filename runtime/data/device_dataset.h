// A data set resident on a worker's device, and the sampler that draws mini-batches from it
// there: one host-side shuffle and one upload per epoch, then a device gather per step.
//
// Ownership: DeviceDataset owns its device copy; a BatchSampler refers to a DeviceDataset that
// must outlive it and owns its index and batch buffers. Thread-safety: one worker thread.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/models/model.h"
#include "runtime/buffer.h"
#include "runtime/data/dataset.h"

namespace asgd {

class DeviceDataset {
 public:
  // Uploads `data` to the stream's device; returns once the copy is complete.
  DeviceDataset(const Dataset& data, const Stream& stream);

  std::int64_t rows() const { return rows_; }
  std::int64_t cols() const { return cols_; }
  std::int32_t classes() const { return classes_; }
  // The whole set as one batch (for evaluation).
  Batch all() const { return {x_.data(), y_.data(), rows_}; }
  const float* x() const { return x_.data(); }
  const std::int32_t* y() const { return y_.data(); }

 private:
  std::int64_t rows_, cols_;
  std::int32_t classes_;
  DeviceBuffer<float> x_;
  DeviceBuffer<std::int32_t> y_;
};

// Draws batches without replacement within an epoch (a fresh seeded permutation per epoch);
// the rows left over at the end of an epoch that do not fill a batch are skipped, as with
// PyTorch's drop_last.
class BatchSampler {
 public:
  BatchSampler(const DeviceDataset& data, std::int64_t batch, std::uint64_t seed,
               const Stream& stream);

  // Gathers the next batch into this sampler's buffers (asynchronous on CUDA) and returns it.
  // The returned batch is valid until the next call.
  Batch next(const Stream& stream);
  std::int64_t batch() const { return batch_; }
  // Completed epochs.
  std::int64_t epoch() const { return epoch_; }

  // Where the sampler is (for checkpoints): its generator, this epoch's order and position.
  struct State {
    std::string rng;  // std::mt19937_64 in its text form
    std::vector<std::int32_t> order;
    std::int64_t position = 0;
    std::int64_t epoch = -1;
  };
  State state() const;
  // Continues from `state`; throws InputError when it does not fit this sampler's data.
  void restore(const State& state, const Stream& stream);

 private:
  void start_epoch(const Stream& stream);

  const DeviceDataset& data_;
  std::int64_t batch_;
  std::mt19937_64 rng_;
  std::vector<std::int32_t> order_;
  PinnedBuffer<std::int32_t> staging_;  // the host side of the per-epoch index upload
  DeviceBuffer<std::int32_t> index_;
  DeviceBuffer<float> x_;
  DeviceBuffer<std::int32_t> y_;
  std::int64_t position_ = 0;
  std::int64_t epoch_ = -1;
};

}  // namespace asgd
