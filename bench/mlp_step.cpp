// Times asgd's MLP training step on one worker: batch gather from a resident data set,
// forward, backward and SGD update, exactly the per-step work of `asgd train`.
// Prints one JSON object: the median samples/s over the repeats and every repeat.
//   asgd_bench_mlp_step --hidden 256,256 --batch 64 [--backend host] [--threads 1]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "kernels/models/model.h"
#include "kernels/sgd.h"
#include "runtime/buffer.h"
#include "runtime/data/device_dataset.h"

int main(int argc, char** argv) {
  CLI::App app{"Times one worker's MLP training step (gather, forward, backward, SGD)."};
  std::vector<std::int64_t> hidden{256, 256};
  std::int64_t batch = 64, input = 784, rows = 60000, steps = 300, warmup = 50;
  int classes = 10, repeats = 5, threads = 1;
  std::string backend = "host";
  app.add_option("--hidden", hidden, "hidden widths")->delimiter(',')->capture_default_str();
  app.add_option("--batch", batch)->capture_default_str();
  app.add_option("--input", input)->capture_default_str();
  app.add_option("--classes", classes)->capture_default_str();
  app.add_option("--rows", rows, "rows of the resident training set")->capture_default_str();
  app.add_option("--steps", steps, "steps per timed repeat")->capture_default_str();
  app.add_option("--warmup", warmup)->capture_default_str();
  app.add_option("--repeats", repeats)->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("--backend", backend)->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const asgd::Stream stream = asgd::Stream::create(asgd::parse_backend(backend), 0, threads);
  asgd::Dataset data;
  data.rows = rows;
  data.cols = input;
  data.classes = classes;
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  data.features.resize(static_cast<std::size_t>(rows * input));
  for (auto& v : data.features) v = u(rng);
  data.labels.resize(static_cast<std::size_t>(rows));
  for (auto& l : data.labels) l = static_cast<std::int32_t>(rng() % classes);

  const asgd::DeviceDataset resident(data, stream);
  auto model = asgd::make_model({"mlp", hidden}, input, classes, batch, stream);
  const std::int64_t n = model->parameter_count();
  asgd::DeviceBuffer<float> params(stream.backend(), 0, n), grad(stream.backend(), 0, n);
  asgd::DeviceBuffer<double> loss(stream.backend(), 0, 1);
  loss.zero(stream);
  model->init(params.data(), 1, stream);
  asgd::BatchSampler sampler(resident, batch, 2, stream);

  auto run = [&](std::int64_t count) {
    for (std::int64_t s = 0; s < count; ++s) {
      const asgd::Batch b = sampler.next(stream);
      model->loss_and_gradient(params.data(), b, grad.data(), loss.data(), stream);
      asgd::sgd_step(stream, n, 0.05f, grad.data(), params.data());
    }
    stream.synchronize();
  };
  run(warmup);
  std::vector<double> rates;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    run(steps);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rates.push_back(static_cast<double>(steps * batch) / secs);
  }
  std::vector<double> sorted = rates;
  std::sort(sorted.begin(), sorted.end());
  nlohmann::json out = {{"impl", "asgd"},
                        {"backend", backend},
                        {"threads", threads},
                        {"model", model->describe()},
                        {"parameters", n},
                        {"batch", batch},
                        {"samples_per_s", sorted[sorted.size() / 2]},
                        {"repeats", rates}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
