// The built-in feed-forward classifiers: a stack of dense layers with ReLU between them and a
// softmax or sigmoid cross-entropy loss. Softmax regression and logistic regression are the
// zero-hidden-layer cases. Layer l has weight [out x in] (row-major, PyTorch's nn.Linear
// layout) followed by bias [out] in the flat vector.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/models/model.h"
#include "runtime/buffer.h"

namespace asgd {

enum class OutputLoss { kSoftmax, kSigmoid };

class FeedForward final : public Model {
 public:
  // widths = {input, hidden..., outputs}; `name` is the describe() prefix ("mlp", ...).
  FeedForward(std::string name, std::vector<std::int64_t> widths, std::int32_t classes,
              OutputLoss loss, std::int64_t max_batch, const Stream& stream);

  std::string describe() const override;
  std::int64_t input_dim() const override { return widths_.front(); }
  std::int32_t num_classes() const override { return classes_; }
  const std::vector<TensorInfo>& layout() const override { return layout_; }
  std::int64_t max_batch() const override { return max_batch_; }

  void loss_and_gradient(const float* params, const Batch& batch, float* grad, double* loss_sum,
                         const Stream& stream) override;
  void evaluate(const float* params, const Batch& data, double* loss_sum, std::int64_t* correct,
                const Stream& stream) override;

 private:
  int layers() const { return static_cast<int>(widths_.size()) - 1; }
  // Runs the forward pass of `rows` rows of x; returns the logits.
  const float* forward(const float* params, const float* x, std::int64_t rows,
                       const Stream& stream);
  void apply_loss(const float* logits, const Batch& batch, float grad_scale, float* dlogits,
                  double* loss_sum, std::int64_t* correct, const Stream& stream) const;

  std::string name_;
  std::vector<std::int64_t> widths_;
  std::int32_t classes_;
  OutputLoss loss_;
  std::int64_t max_batch_;
  std::vector<TensorInfo> layout_;
  std::vector<DeviceBuffer<float>> activations_;  // one [max_batch x width] per layer output
  DeviceBuffer<float> delta_[2];                  // back-propagated gradients, ping-pong
};

}  // namespace asgd
