// Mini-batch SGD K-Means, the benchmark of the seed papers, as a Model: the parameters are the
// K centres, one tensor "centres" [K x D] (row-major).
//
// The objective. A sample's loss is ½ min_k ||x - c_k||^2, so loss_sum adds half the squared
// distance of each row to its nearest centre, and the reported objective (loss_sum / rows) is
// half the mean squared quantisation error. The half makes the gradient of the mean loss the
// plain (1/rows) sum over the rows assigned to centre k of (c_k - x): an SGD step of size lr
// moves each centre lr * n_k / rows of the way to the mean of its n_k rows in the batch. For
// data drawn as centre + N(0, I_D) noise the objective at the true centres is about D / 2.
// Labels are ignored; evaluate() never touches `correct`.
//
// Initialisation (greedy k-means++): init(seed) takes K distinct rows of the training set as
// the centres. The first is uniform; each next one is the best, by the sum of squared distances
// to the nearest centre chosen so far, of 2 + ceil(4 ln K) rows drawn with probability
// proportional to that squared distance (scikit-learn draws 2 + ln K; see init() for why more);
// all draws from a std::mt19937_64(seed). Uniform picks (Forgy) leave about a third of K
// well-separated blobs without a centre (K (1 - 1/K)^K), a local minimum that SGD does not
// leave; D^2 sampling spreads the centres over the data. The model keeps its own host copy of
// the candidates it chooses from: the distinct rows of an evenly strided sample of the
// training set (every row when it is small, at most about 16 MiB of them otherwise), so it
// never refers to the Dataset after construction and init() needs no data at hand. The seeding
// runs on an evenly strided subset of them (at most 256 KiB of values, at least 32 rows per
// centre where there are that many), so that it costs K x trials x rows x D multiply-adds:
// 0.15 s for K = 64 in 32 dimensions on one core of the 2-core development machine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/models/model.h"
#include "runtime/buffer.h"

namespace asgd {

class KMeans final : public Model {
 public:
  // `clusters` centres in `dim` dimensions, batches of up to `max_batch` rows, scratch on the
  // stream's device. `data` is the training set in host memory ([rows x dim], row-major), read
  // during construction only. Throws InputError when it holds fewer than `clusters` distinct
  // rows among the candidates.
  KMeans(std::int64_t clusters, std::int64_t dim, std::int64_t max_batch, const float* data,
         std::int64_t rows, const Stream& stream);

  std::string describe() const override;
  std::int64_t input_dim() const override { return dim_; }
  std::int32_t num_classes() const override { return static_cast<std::int32_t>(clusters_); }
  const std::vector<TensorInfo>& layout() const override { return layout_; }
  std::int64_t max_batch() const override { return max_batch_; }
  bool is_classifier() const override { return false; }

  void init(float* params, std::uint64_t seed, const Stream& stream) const override;
  void loss_and_gradient(const float* params, const Batch& batch, float* grad, double* loss_sum,
                         const Stream& stream) override;
  void evaluate(const float* params, const Batch& data, double* loss_sum, std::int64_t* correct,
                const Stream& stream) override;

  // Number of candidate rows kept, and how many of them init() chooses from.
  std::int64_t candidate_rows() const { return candidate_rows_; }
  std::int64_t seeding_rows() const;

 private:
  std::int64_t clusters_;
  std::int64_t dim_;
  std::int64_t max_batch_;
  std::vector<TensorInfo> layout_;
  std::vector<float> candidates_;  // [candidate_rows_ x dim_], pairwise distinct rows
  std::int64_t candidate_rows_ = 0;
  DeviceBuffer<float> dots_;           // [max_batch x clusters]: x . c^T
  DeviceBuffer<float> centre_norms_;   // [clusters]
  DeviceBuffer<std::int32_t> assign_;  // [max_batch]
};

}  // namespace asgd
