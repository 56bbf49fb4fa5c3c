#include "runtime/data/device_dataset.h"

#include <algorithm>
#include <numeric>

#include "kernels/gather.h"
#include "runtime/error.h"
#include "runtime/random.h"

namespace asgd {

DeviceDataset::DeviceDataset(const Dataset& data, const Stream& stream)
    : rows_(data.rows),
      cols_(data.cols),
      classes_(data.classes),
      x_(stream.backend(), stream.device(), data.features.size()),
      y_(stream.backend(), stream.device(), data.labels.size()) {
  ASGD_CHECK(static_cast<std::int64_t>(data.features.size()) == rows_ * cols_ &&
                 static_cast<std::int64_t>(data.labels.size()) == rows_,
             "data set '{}' is inconsistent: {} features and {} labels for {}x{}", data.source,
             data.features.size(), data.labels.size(), rows_, cols_);
  x_.upload(data.features.data(), data.features.size(), stream);
  y_.upload(data.labels.data(), data.labels.size(), stream);
  stream.synchronize();
}

BatchSampler::BatchSampler(const DeviceDataset& data, std::int64_t batch, std::uint64_t seed,
                           const Stream& stream)
    : data_(data),
      batch_(batch),
      rng_(seed),
      order_(static_cast<std::size_t>(data.rows())),
      staging_(static_cast<std::size_t>(data.rows())),
      index_(stream.backend(), stream.device(), static_cast<std::size_t>(data.rows())),
      x_(stream.backend(), stream.device(), static_cast<std::size_t>(batch * data.cols())),
      y_(stream.backend(), stream.device(), static_cast<std::size_t>(batch)) {
  if (batch < 1) ASGD_INPUT_ERROR("--batch must be at least 1, got {}", batch);
  if (batch > data.rows())
    ASGD_INPUT_ERROR("--batch {} is larger than the {} training rows this worker holds", batch,
                     data.rows());
  std::iota(order_.begin(), order_.end(), 0);
}

void BatchSampler::start_epoch(const Stream& stream) {
  // The previous epoch's upload must be complete before the staging buffer is rewritten; one
  // synchronisation per epoch, never per step.
  stream.synchronize();
  std::shuffle(order_.begin(), order_.end(), rng_);
  std::copy(order_.begin(), order_.end(), staging_.data());
  index_.upload(staging_.data(), staging_.size(), stream);
  position_ = 0;
  ++epoch_;
}

Batch BatchSampler::next(const Stream& stream) {
  if (epoch_ < 0 || position_ + batch_ > data_.rows()) start_epoch(stream);
  gather_rows(stream, batch_, data_.cols(), data_.x(), data_.y(), data_.rows(),
              index_.data() + position_, x_.data(), y_.data());
  position_ += batch_;
  return {x_.data(), y_.data(), batch_};
}

BatchSampler::State BatchSampler::state() const {
  return {generator_state(rng_), order_, position_, epoch_};
}

void BatchSampler::restore(const State& state, const Stream& stream) {
  if (state.order.size() != order_.size())
    ASGD_INPUT_ERROR("the checkpoint's data order covers {} rows but this worker's shard has {}; "
                     "resume with the same data set, worker count and seed",
                     state.order.size(), order_.size());
  std::vector<char> seen(order_.size(), 0);
  for (const std::int32_t row : state.order) {
    if (row < 0 || static_cast<std::size_t>(row) >= seen.size() || seen[static_cast<std::size_t>(row)])
      ASGD_INPUT_ERROR("the checkpoint's data order is not a permutation of the shard's rows");
    seen[static_cast<std::size_t>(row)] = 1;
  }
  if (state.position < 0 || state.position > data_.rows() || state.epoch < -1)
    ASGD_INPUT_ERROR("the checkpoint's data position {} (epoch {}) is outside the shard of {} rows",
                     state.position, state.epoch, data_.rows());
  rng_ = generator_from_state(state.rng, "sampler");
  order_ = state.order;
  position_ = state.position;
  epoch_ = state.epoch;
  stream.synchronize();  // the staging buffer may still feed an upload
  std::copy(order_.begin(), order_.end(), staging_.data());
  index_.upload(staging_.data(), staging_.size(), stream);
  stream.synchronize();
}

}  // namespace asgd
