// A model written outside the library and trained with ASGD on several workers.
//
// The model is multinomial logistic regression with L2 weight decay, built from asgd's public
// kernels (kernels/*.h), so the same code runs on the host and, given a GPU, on CUDA.
#include <cstdio>
#include <memory>
#include <string>

#include "kernels/gemm.h"
#include "kernels/loss.h"
#include "kernels/models/model.h"
#include "kernels/sgd.h"
#include "runtime/buffer.h"
#include "runtime/trainer.h"

namespace {

// Step 1: the model. Its parameters are one flat vector: the weight matrix W [classes x d].
class DecayedSoftmax final : public asgd::Model {
 public:
  DecayedSoftmax(std::int64_t d, std::int32_t classes, std::int64_t max_batch, float decay,
                 const asgd::Stream& stream)
      : d_(d),
        classes_(classes),
        max_batch_(max_batch),
        decay_(decay),
        logits_(stream.backend(), stream.device(), static_cast<std::size_t>(max_batch * classes)) {
    layout_ = {{"weight", {classes, d}, 0, d}};
  }

  std::string describe() const override { return "decayed-softmax"; }
  std::int64_t input_dim() const override { return d_; }
  std::int32_t num_classes() const override { return classes_; }
  const std::vector<asgd::TensorInfo>& layout() const override { return layout_; }
  std::int64_t max_batch() const override { return max_batch_; }

  // grad = dL/dW of the mean cross-entropy plus decay * W. All on `stream`, no host sync.
  void loss_and_gradient(const float* w, const asgd::Batch& batch, float* grad,
                         double* loss_sum, const asgd::Stream& stream) override {
    using asgd::Trans;
    asgd::gemm(stream, Trans::kNo, Trans::kYes, batch.rows, classes_, d_, 1.0f, batch.x, d_, w,
               d_, 0.0f, logits_.data(), classes_);
    asgd::softmax_cross_entropy(stream, batch.rows, classes_, logits_.data(), batch.y,
                                1.0f / static_cast<float>(batch.rows), logits_.data(), loss_sum,
                                nullptr);
    asgd::gemm(stream, Trans::kYes, Trans::kNo, classes_, d_, batch.rows, 1.0f, logits_.data(),
               classes_, batch.x, d_, 0.0f, grad, d_);
    asgd::axpby(stream, parameter_count(), decay_, w, 1.0f, grad);
  }

  void evaluate(const float* w, const asgd::Batch& data, double* loss_sum,
                std::int64_t* correct, const asgd::Stream& stream) override {
    for (std::int64_t r0 = 0; r0 < data.rows; r0 += max_batch_) {
      const std::int64_t rows = std::min(max_batch_, data.rows - r0);
      asgd::gemm(stream, asgd::Trans::kNo, asgd::Trans::kYes, rows, classes_, d_, 1.0f,
                 data.x + r0 * d_, d_, w, d_, 0.0f, logits_.data(), classes_);
      asgd::softmax_cross_entropy(stream, rows, classes_, logits_.data(), data.y + r0, 1.0f,
                                  nullptr, loss_sum, correct);
    }
  }

 private:
  std::int64_t d_;
  std::int32_t classes_;
  std::int64_t max_batch_;
  float decay_;
  std::vector<asgd::TensorInfo> layout_;
  asgd::DeviceBuffer<float> logits_;  // scratch on the worker's device
};

}  // namespace

int main(int argc, char** argv) {
  // Step 2: the run: 2 workers, ASGD with the Parzen-window filter.
  asgd::TrainConfig config;
  config.data.spec = argc > 1 ? argv[1] : "blobs:20000,16,4";
  config.workers = 2;
  config.algorithm = asgd::Algorithm::kAsgd;
  config.batch = 32;
  config.lr = 0.1f;
  config.epochs = 4;
  config.eval_every = 200;
  config.deterministic = true;  // the same output on every machine
  config.progress = false;

  // Step 3: a factory that builds the model on each worker's device.
  const asgd::ModelFactory factory = [](const asgd::Stream& stream, std::int64_t d,
                                        std::int32_t classes, std::int64_t max_batch,
                                        const asgd::Dataset&) {
    return std::make_unique<DecayedSoftmax>(d, classes, max_batch, 1e-4f, stream);
  };

  // Step 4: load the data and train.
  try {
    const asgd::TrainTest data = asgd::load_dataset(config.data);
    const asgd::TrainResult r = asgd::train(config, data, factory);
    std::printf("%s on %d workers (%s): test accuracy %.4f; messages sent %lld, accepted %lld, "
                "rejected %lld\n",
                r.model.c_str(), r.workers, r.algorithm.c_str(), r.final_test_accuracy,
                static_cast<long long>(r.messages_sent),
                static_cast<long long>(r.messages_accepted),
                static_cast<long long>(r.messages_rejected));
    return r.final_test_accuracy > 0.9 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
