#include "kernels/models/feed_forward.h"

#include <algorithm>

#include "kernels/activation.h"
#include "kernels/gemm.h"
#include "kernels/loss.h"
#include "runtime/error.h"

namespace asgd {

FeedForward::FeedForward(std::string name, std::vector<std::int64_t> widths,
                         std::int32_t classes, OutputLoss loss, std::int64_t max_batch,
                         const Stream& stream)
    : name_(std::move(name)),
      widths_(std::move(widths)),
      classes_(classes),
      loss_(loss),
      max_batch_(max_batch) {
  ASGD_CHECK(widths_.size() >= 2, "a feed-forward model needs input and output widths");
  ASGD_CHECK(max_batch_ >= 1, "max_batch must be positive, got {}", max_batch_);
  std::int64_t offset = 0;
  std::int64_t widest = 0;
  for (int l = 0; l < layers(); ++l) {
    const std::int64_t in = widths_[l], out = widths_[l + 1];
    layout_.push_back({fmt::format("layer{}.weight", l + 1), {out, in}, offset, in});
    offset += out * in;
    layout_.push_back({fmt::format("layer{}.bias", l + 1), {out}, offset, in});
    offset += out;
    activations_.emplace_back(stream.backend(), stream.device(),
                              static_cast<std::size_t>(max_batch_ * out));
    widest = std::max(widest, out);
    if (l > 0) widest = std::max(widest, in);
  }
  for (auto& d : delta_)
    d = DeviceBuffer<float>(stream.backend(), stream.device(),
                            static_cast<std::size_t>(max_batch_ * widest));
}

std::string FeedForward::describe() const {
  std::string s = name_ + " ";
  for (std::size_t i = 0; i < widths_.size(); ++i) s += (i ? "-" : "") + std::to_string(widths_[i]);
  return s;
}

const float* FeedForward::forward(const float* params, const float* x, std::int64_t rows,
                                  const Stream& stream) {
  const float* in = x;
  for (int l = 0; l < layers(); ++l) {
    const std::int64_t n_in = widths_[l], n_out = widths_[l + 1];
    const float* w = params + layout_[2 * l].offset;
    const float* b = params + layout_[2 * l + 1].offset;
    float* out = activations_[l].data();
    // out = in . W^T: [rows x n_in] x [n_in x n_out]
    gemm(stream, Trans::kNo, Trans::kYes, rows, n_out, n_in, 1.0f, in, n_in, w, n_in, 0.0f, out,
         n_out);
    bias_activation_forward(stream, l + 1 < layers() ? Activation::kRelu : Activation::kIdentity,
                            rows, n_out, b, out);
    in = out;
  }
  return in;
}

void FeedForward::apply_loss(const float* logits, const Batch& batch, float grad_scale,
                             float* dlogits, double* loss_sum, std::int64_t* correct,
                             const Stream& stream) const {
  const std::int64_t outputs = widths_.back();
  if (loss_ == OutputLoss::kSoftmax)
    softmax_cross_entropy(stream, batch.rows, outputs, logits, batch.y, grad_scale, dlogits,
                          loss_sum, correct);
  else
    sigmoid_cross_entropy(stream, batch.rows, outputs, logits, batch.y, grad_scale, dlogits,
                          loss_sum, correct);
}

void FeedForward::loss_and_gradient(const float* params, const Batch& batch, float* grad,
                                    double* loss_sum, const Stream& stream) {
  ASGD_CHECK(batch.rows >= 1 && batch.rows <= max_batch_,
             "batch of {} rows; this model was built for 1 to {}", batch.rows, max_batch_);
  const std::int64_t rows = batch.rows;
  const float* logits = forward(params, batch.x, rows, stream);
  int cur = 0;
  apply_loss(logits, batch, 1.0f / static_cast<float>(rows), delta_[cur].data(), loss_sum,
             nullptr, stream);
  for (int l = layers() - 1; l >= 0; --l) {
    const std::int64_t n_in = widths_[l], n_out = widths_[l + 1];
    float* dz = delta_[cur].data();
    const float* in = l == 0 ? batch.x : activations_[l - 1].data();
    // dL/dz from dL/dy: identity for the output layer, ReLU mask below; bias gradient alongside.
    bias_activation_backward(stream, l + 1 < layers() ? Activation::kRelu : Activation::kIdentity,
                             rows, n_out, activations_[l].data(), dz,
                             grad + layout_[2 * l + 1].offset);
    // dW = dz^T . in: [n_out x rows] x [rows x n_in]
    gemm(stream, Trans::kYes, Trans::kNo, n_out, n_in, rows, 1.0f, dz, n_out, in, n_in, 0.0f,
         grad + layout_[2 * l].offset, n_in);
    if (l > 0) {
      // dL/d(in) = dz . W: [rows x n_out] x [n_out x n_in]; the input layer needs none.
      gemm(stream, Trans::kNo, Trans::kNo, rows, n_in, n_out, 1.0f, dz, n_out,
           params + layout_[2 * l].offset, n_in, 0.0f, delta_[1 - cur].data(), n_in);
      cur = 1 - cur;
    }
  }
}

void FeedForward::evaluate(const float* params, const Batch& data, double* loss_sum,
                           std::int64_t* correct, const Stream& stream) {
  const std::int64_t cols = widths_.front();
  for (std::int64_t r0 = 0; r0 < data.rows; r0 += max_batch_) {
    Batch chunk{data.x + r0 * cols, data.y + r0, std::min(max_batch_, data.rows - r0)};
    const float* logits = forward(params, chunk.x, chunk.rows, stream);
    apply_loss(logits, chunk, 1.0f, nullptr, loss_sum, correct, stream);
  }
}

}  // namespace asgd
