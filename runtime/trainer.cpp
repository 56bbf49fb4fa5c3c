#include "runtime/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>

#include <unistd.h>

#include <asgd/config.h>
#include <nlohmann/json.hpp>

#include "kernels/models/model.h"
#include "kernels/sgd.h"
#include "runtime/buffer.h"
#include "runtime/data/device_dataset.h"
#include "runtime/error.h"
#include "runtime/metrics.h"

namespace asgd {
namespace {
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Device scalars the step accumulates into, read back only at evaluations.
struct Accumulators {
  explicit Accumulators(const Stream& s)
      : loss(s.backend(), s.device(), 2), correct(s.backend(), s.device(), 1) {
    loss.zero(s);
    correct.zero(s);
  }
  DeviceBuffer<double> loss;  // [0] training loss sum since last read, [1] test loss sum
  DeviceBuffer<std::int64_t> correct;
};
}  // namespace

TrainResult train(const TrainConfig& config) {
  validate(config);
  return train(config, load_dataset(config.data));
}

TrainResult train(const TrainConfig& config, const TrainTest& data) {
  validate(config);
  if (data.train.cols != data.test.cols)
    ASGD_INPUT_ERROR("train and test sets differ in width: {} has {} features, {} has {}",
                     data.train.source, data.train.cols, data.test.source, data.test.cols);
  const Stream stream = Stream::create(config.backend, config.device, config.threads);
  const DeviceDataset train_set(data.train, stream);
  const DeviceDataset test_set(data.test, stream);
  const std::int32_t classes = std::max(data.train.classes, data.test.classes);

  // Evaluation runs in chunks of the model's largest batch; larger chunks make it cheaper.
  const std::int64_t max_batch = std::max<std::int64_t>(config.batch, 1024);
  auto model = make_model(config.model, data.train.cols, classes, max_batch, stream);
  const std::int64_t n = model->parameter_count();
  DeviceBuffer<float> params(stream.backend(), stream.device(), static_cast<std::size_t>(n));
  DeviceBuffer<float> grad(stream.backend(), stream.device(), static_cast<std::size_t>(n));
  model->init(params.data(), config.seed, stream);
  BatchSampler sampler(train_set, config.batch, config.seed + 1, stream);
  Accumulators acc(stream);
  double host_loss[2];
  std::int64_t host_correct = 0;

  const std::int64_t steps_per_epoch = train_set.rows() / config.batch;
  const auto max_steps = std::max<std::int64_t>(
      1, static_cast<std::int64_t>(std::llround(config.epochs * static_cast<double>(steps_per_epoch))));

  TrainResult result;
  result.model = model->describe();
  result.parameters = n;
  result.fingerprint = model->fingerprint();
  result.train_rows = train_set.rows();
  result.test_rows = test_set.rows();

  MetricsLog metrics(config.metrics_path);
  ProgressLine progress(config.progress);
  std::int64_t step = 0, last_eval_step = 0;
  double last_eval_time = 0;
  const auto start = Clock::now();

  auto evaluate = [&]() -> const EvalPoint& {
    const auto eval_start = Clock::now();
    model->evaluate(params.data(), test_set.all(), acc.loss.data() + 1, acc.correct.data(),
                    stream);
    acc.loss.download(host_loss, 2, stream);
    acc.correct.download(&host_correct, 1, stream);
    stream.synchronize();
    acc.loss.zero(stream);
    acc.correct.zero(stream);

    EvalPoint p;
    p.step = step;
    p.samples = step * config.batch;
    p.epoch = static_cast<double>(p.samples) / static_cast<double>(train_set.rows());
    const std::int64_t steps_since = step - last_eval_step;
    p.train_loss = steps_since > 0 ? host_loss[0] / static_cast<double>(steps_since * config.batch)
                                   : std::nan("");
    p.test_loss = host_loss[1] / static_cast<double>(test_set.rows());
    p.test_accuracy = static_cast<double>(host_correct) / static_cast<double>(test_set.rows());
    result.eval_seconds += seconds_since(eval_start);
    p.time_s = seconds_since(start);
    const double compute_s = p.time_s - last_eval_time - seconds_since(eval_start);
    p.samples_per_s = compute_s > 0 ? static_cast<double>(steps_since * config.batch) / compute_s : 0;
    last_eval_step = step;
    last_eval_time = p.time_s;

    if ((steps_since > 0 && !std::isfinite(p.train_loss)) || !std::isfinite(p.test_loss)) {
      progress.finish();
      ASGD_THROW(
          "training diverged by step {}: the {} loss is {}; lower the step size (--lr {}) or "
          "check the data for extreme values",
          step, std::isfinite(p.test_loss) ? "training" : "test",
          std::isfinite(p.test_loss) ? p.train_loss : p.test_loss, config.lr);
    }
    metrics.write(p, 0);
    progress.set_eval(p.train_loss, p.test_accuracy);
    result.history.push_back(p);
    if (config.target_accuracy > 0 && !result.time_to_target_s &&
        p.test_accuracy >= config.target_accuracy)
      result.time_to_target_s = p.time_s;
    return result.history.back();
  };

  while (true) {
    const Batch batch = sampler.next(stream);
    model->loss_and_gradient(params.data(), batch, grad.data(), acc.loss.data(), stream);
    sgd_step(stream, n, config.lr, grad.data(), params.data());
    ++step;

    const double elapsed = seconds_since(start);
    const bool out_of_time = config.max_seconds > 0 && elapsed >= config.max_seconds;
    const bool out_of_steps = step >= max_steps;
    if (step % config.eval_every == 0 || out_of_time || out_of_steps) {
      evaluate();
      if (result.time_to_target_s) {
        result.stop_reason = "target";
        break;
      }
    }
    if (out_of_steps || out_of_time) {
      result.stop_reason = out_of_steps ? "epochs" : "max-seconds";
      break;
    }
    const double rate = static_cast<double>(step * config.batch) / std::max(elapsed, 1e-9);
    double eta = static_cast<double>((max_steps - step) * config.batch) / rate;
    if (config.max_seconds > 0) eta = std::min(eta, config.max_seconds - elapsed);
    progress.update(step, static_cast<double>(step * config.batch) / train_set.rows(), rate, eta);
  }
  progress.finish();

  result.train_seconds = seconds_since(start);
  result.steps = step;
  result.samples = step * config.batch;
  const double compute = result.train_seconds - result.eval_seconds;
  result.samples_per_s = compute > 0 ? static_cast<double>(result.samples) / compute : 0;
  result.final_test_accuracy = result.history.back().test_accuracy;
  result.final_test_loss = result.history.back().test_loss;
  return result;
}

void write_summary(const std::string& path, const TrainConfig& c, const TrainResult& r) {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  nlohmann::json j = {
      {"final_test_accuracy", r.final_test_accuracy},
      {"final_test_loss", r.final_test_loss},
      {"time_to_target_s", r.time_to_target_s ? nlohmann::json(*r.time_to_target_s) : nullptr},
      {"target_accuracy", c.target_accuracy > 0 ? nlohmann::json(c.target_accuracy) : nullptr},
      {"train_seconds", r.train_seconds},
      {"eval_seconds", r.eval_seconds},
      {"samples_per_s", r.samples_per_s},
      {"steps", r.steps},
      {"samples", r.samples},
      {"stop_reason", r.stop_reason},
      {"backend", std::string(to_string(c.backend))},
      {"workers", 1},
      {"threads", c.threads},
      {"model", r.model},
      {"parameters", r.parameters},
      {"fingerprint", fmt::format("{:016x}", r.fingerprint)},
      {"dataset", c.data.spec},
      {"train_rows", r.train_rows},
      {"test_rows", r.test_rows},
      {"batch", c.batch},
      {"lr", std::stod(fmt::format("{}", c.lr))},  // the float as typed, not widened
      {"seed", c.seed},
      {"host", host},
      {"asgd_version", ASGD_VERSION},
      {"commit", ASGD_GIT_COMMIT},
  };
  std::ofstream out(path, std::ios::out | std::ios::trunc);
  if (!out) ASGD_INPUT_ERROR("--summary: cannot create '{}'", path);
  out << j.dump(2) << '\n';
  if (!out) ASGD_THROW("writing the summary to '{}' failed", path);
}

}  // namespace asgd
