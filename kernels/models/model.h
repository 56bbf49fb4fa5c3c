// The model interface: what every model (built in or written by a user) provides so that asgd
// can train it. A model's parameters are ONE flat float32 vector in device memory, laid out as
// the tensors of layout() say; that vector is the unit workers exchange.
//
// Ownership and threads: a Model object owns its scratch memory (activations) on one device
// and is used by one worker thread at a time. It does not own the parameter or gradient
// vectors it is given. All work is issued on the given Stream and never waits for it: a
// training step makes no host round trip.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/device.h"

namespace asgd {

// A batch resident on the model's device: `rows` samples of input_dim() features (row-major)
// and their int32 labels in [0, num_classes()).
struct Batch {
  const float* x = nullptr;
  const std::int32_t* y = nullptr;
  std::int64_t rows = 0;
};

// One tensor of the flat parameter vector.
struct TensorInfo {
  std::string name;                 // e.g. "layer1.weight"
  std::vector<std::int64_t> shape;  // row-major
  std::int64_t offset = 0;          // first element in the flat vector
  std::int64_t fan_in = 1;          // for the default initialisation
  std::int64_t size() const;
};

class Model {
 public:
  virtual ~Model() = default;

  // A one-line description that determines the layout, e.g. "mlp 784-256-256-10".
  virtual std::string describe() const = 0;
  virtual std::int64_t input_dim() const = 0;
  virtual std::int32_t num_classes() const = 0;
  virtual const std::vector<TensorInfo>& layout() const = 0;
  // The largest batch loss_and_gradient() accepts.
  virtual std::int64_t max_batch() const = 0;
  // Classifiers count correct predictions in evaluate(); other models (K-Means) leave
  // `correct` alone and are judged by their loss alone (the objective).
  virtual bool is_classifier() const { return true; }

  // Total number of parameters (the length of the flat vector).
  std::int64_t parameter_count() const;
  // A 64-bit hash of describe() and layout(): two workers hold the same model iff equal.
  std::uint64_t fingerprint() const;

  // Writes initial parameters for `seed` into `params` (memory of the stream's device). The
  // default draws every tensor from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the default of
  // PyTorch's nn.Linear, and returns when the parameters are in place.
  virtual void init(float* params, std::uint64_t seed, const Stream& stream) const;

  // Writes the gradient of the mean loss over `batch` into `grad` (overwritten) and adds the
  // batch's summed loss to *loss_sum (a device scalar; may be null). batch.rows must be in
  // [1, max_batch()].
  virtual void loss_and_gradient(const float* params, const Batch& batch, float* grad,
                                 double* loss_sum, const Stream& stream) = 0;

  // Forward pass over any number of rows (in chunks of max_batch()): adds the summed loss to
  // *loss_sum and the number of correctly classified rows to *correct (device scalars; either
  // may be null).
  virtual void evaluate(const float* params, const Batch& data, double* loss_sum,
                        std::int64_t* correct, const Stream& stream) = 0;
};

// The built-in models.
struct ModelSpec {
  // "softmax" (multinomial logistic regression), "logistic" (sigmoid outputs: binary when the
  // data has 2 classes, one-vs-rest otherwise), "mlp" (ReLU hidden layers, softmax output) or
  // "kmeans" (mini-batch SGD K-Means; the objective is half the mean squared distance of a
  // sample to its nearest centre).
  std::string kind = "mlp";
  std::vector<std::int64_t> hidden = {256, 256};  // mlp only
  std::int64_t clusters = 0;                      // kmeans: K; 0 = the data's class count
};

struct Dataset;

// The most parameters a state may have: the load balancer's decisions carry message sizes of
// up to 40 bits (runtime/balancer.h).
inline constexpr std::int64_t kMaxModelParameters = (std::int64_t{1} << 40) - 1;

// Checks a model (a built-in or one from research code) against what training will ask of it:
// present, a layout of tensors with positive dimensions at non-negative offsets and 1 to
// kMaxModelParameters parameters, `input_dim` features, batches of `batch` rows, and, for a
// classifier, at least `classes` outputs. Throws InputError naming the model and what is wrong,
// so that a faulty model is refused before any memory is sized from it.
void check_model(const Model* model, std::int64_t input_dim, std::int32_t classes,
                 std::int64_t batch);

// Builds a built-in model for `input_dim` features and `classes` classes whose scratch memory
// lives on the stream's device and holds batches of up to `max_batch` rows. `init_data` is the
// training set, which K-Means draws its initial centres from (others ignore it). Throws
// InputError for an unknown kind, a bad width, or an MLP too large to count or to allocate.
std::unique_ptr<Model> make_model(const ModelSpec& spec, std::int64_t input_dim,
                                  std::int32_t classes, std::int64_t max_batch,
                                  const Stream& stream, const Dataset* init_data = nullptr);

}  // namespace asgd
