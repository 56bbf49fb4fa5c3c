#include "runtime/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include <unistd.h>

#include <asgd/config.h>
#include <nlohmann/json.hpp>

#include "comm/local/local_transport.h"
#include "runtime/build_info.h"
#include "runtime/error.h"
#include "runtime/metrics.h"

namespace asgd {
namespace {
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void idle_for(double seconds) {
  if (seconds > 0) std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

// A reusable barrier for the sync baseline (C++17 has none). Blocking is the point of it.
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const std::int64_t generation = generation_;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != generation || broken_; });
    if (broken_) throw std::runtime_error("a worker failed; the barrier was broken");
  }
  // Releases every waiter with an error (a worker failed and will never arrive).
  void break_all() {
    std::lock_guard<std::mutex> lock(mutex_);
    broken_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int count_;
  int arrived_ = 0;
  std::int64_t generation_ = 0;
  bool broken_ = false;
};

LinkModel link_between(const LinkSettings& s, int from, int to) {
  LinkModel l;
  const double bw = s.bandwidth_matrix.empty() ? s.bandwidth : s.bandwidth_matrix[from][to];
  if (bw > 0) l.bandwidth_bytes_per_s = bw;
  l.latency_s = s.latency_matrix.empty() ? s.latency : s.latency_matrix[from][to];
  return l;
}

// Seconds a ring allreduce of `bytes` takes over the slowest of the emulated links.
double emulated_allreduce_seconds(const LinkSettings& s, int workers, double bytes) {
  if (workers < 2) return 0;
  double bw = std::numeric_limits<double>::infinity(), latency = 0;
  for (int i = 0; i < workers; ++i)
    for (int j = 0; j < workers; ++j)
      if (i != j) {
        const LinkModel l = link_between(s, i, j);
        bw = std::min(bw, l.bandwidth_bytes_per_s);
        latency = std::max(latency, l.latency_s);
      }
  const double n = workers;
  return 2 * (n - 1) / n * bytes / bw + 2 * (n - 1) * latency;
}

class Run {
 public:
  Run(const TrainConfig& c, const TrainTest& data, const ModelFactory& factory)
      : c_(c), metrics_(c.metrics_path), progress_(c.progress), barrier_(c.workers) {
    if (c.algorithm == Algorithm::kSync && c.backend == Backend::kCuda && c.workers > 1 &&
        cuda_device_count() > 1)
      ASGD_INPUT_ERROR("--algo sync with several GPUs in one process is not supported; use one "
                       "GPU or the MPI transport");
    for (int i = 0; i < c.workers; ++i) {
      shards_.push_back(c.workers == 1 ? data.train : shard(data.train, i, c.workers, c.seed));
      workers_.push_back(
          std::make_unique<Worker>(i, c, data.train, shards_.back(), data.test, factory));
    }
    Worker& w0 = *workers_.front();
    result_.model = w0.model().describe();
    result_.parameters = w0.parameter_count();
    result_.fingerprint = w0.model().fingerprint();
    result_.classifier = w0.model().is_classifier();
    result_.train_rows = data.train.rows;
    result_.test_rows = data.test.rows;
    result_.workers = c.workers;
    result_.algorithm = std::string(to_string(c.algorithm));
    for (auto& w : workers_) {
      if (w->parameter_count() != w0.parameter_count() ||
          w->model().fingerprint() != w0.model().fingerprint())
        ASGD_INPUT_ERROR("worker {} built model '{}' but worker 0 built '{}': every worker must "
                         "hold the same model",
                         w->id(), w->model().describe(), w0.model().describe());
    }
    if (communicates(c.algorithm) && c.workers > 1) {
      LocalTransportOptions o;
      o.max_message = w0.parameter_count();
      o.queue_capacity = c.queue_capacity;
      o.deterministic = c.deterministic;
      transport_ = std::make_unique<LocalTransport>(c.workers, o);
      for (int i = 0; i < c.workers; ++i)
        for (int j = 0; j < c.workers; ++j)
          if (i != j) transport_->set_link(i, j, link_between(c.links, i, j));
      for (auto& w : workers_) w->attach(transport_.get());
    }
    sync_comm_s_ = emulated_allreduce_seconds(
        c.links, c.workers, static_cast<double>(w0.parameter_count()) * sizeof(float));
    last_eval_.assign(workers_.size(), {0.0, 0});
    eval_seconds_.assign(workers_.size(), 0.0);
  }

  TrainResult run() {
    start_ = Clock::now();
    if (c_.deterministic) {
      run_deterministic();
    } else {
      std::vector<std::thread> threads;
      for (auto& w : workers_)
        threads.emplace_back([this, &w] {
          try {
            if (c_.algorithm == Algorithm::kSync)
              run_sync(*w);
            else
              run_async(*w);
          } catch (...) {
            errors_.capture(std::current_exception());
            stop_ = true;
            barrier_.break_all();
          }
        });
      for (auto& t : threads) t.join();
      errors_.rethrow_if_set();
    }
    if (c_.algorithm == Algorithm::kSimu && c_.workers > 1) average_states();
    return finish();
  }

 private:
  // Worker w's evaluation: logged for every worker; worker 0's decide the target.
  void evaluate(Worker& w, int as_worker) {
    const auto t0 = Clock::now();
    const WorkerEval e = w.evaluate();
    const WorkerCounters k = communicates(c_.algorithm) ? w.counters() : WorkerCounters{};
    const double eval_s = seconds_since(t0);
    const std::size_t i = static_cast<std::size_t>(w.id());
    eval_seconds_[i] += eval_s;

    EvalPoint p;
    p.worker = as_worker;
    p.time_s = seconds_since(start_);
    p.step = w.steps();
    p.samples = w.steps() * c_.batch;
    p.epoch = static_cast<double>(p.samples) / static_cast<double>(shards_[i].rows);
    p.train_loss = e.train_loss;
    p.test_loss = e.loss;
    p.test_accuracy = result_.classifier ? e.accuracy : 0.0;
    const double busy = p.time_s - last_eval_[i].first - eval_s;
    p.samples_per_s =
        busy > 0 ? static_cast<double>((p.step - last_eval_[i].second) * c_.batch) / busy : 0;
    last_eval_[i] = {p.time_s, p.step};
    p.messages_sent = k.sent;
    p.messages_received = k.received;
    p.messages_accepted = k.accepted;
    p.messages_rejected = k.rejected_direction + k.rejected_window;
    p.messages_nonfinite = k.nonfinite;
    p.bytes_sent = k.bytes_sent;
    const double used = static_cast<double>(k.received - k.malformed);
    p.mean_staleness_s = used > 0 ? k.staleness_sum_s / used : 0;
    p.mean_step_gap = used > 0 ? k.step_gap_sum / used : 0;

    const bool diverged =
        !std::isfinite(p.test_loss) || (e.train_steps > 0 && !std::isfinite(p.train_loss));
    std::lock_guard<std::mutex> lock(mutex_);
    metrics_.write(p, p.worker);
    if (diverged) {
      progress_.finish();
      ASGD_THROW(
          "training diverged: worker {} at step {} has a {} loss of {}; lower the step size "
          "(--lr {}) or check the data for extreme values",
          w.id(), w.steps(), std::isfinite(p.test_loss) ? "training" : "test",
          std::isfinite(p.test_loss) ? p.train_loss : p.test_loss, c_.lr);
    }
    if (as_worker == 0 || as_worker == -1) {
      result_.history.push_back(p);
      progress_.set_eval(p.train_loss, result_.classifier ? p.test_accuracy : p.test_loss);
      if (result_.classifier && c_.target_accuracy > 0 && !result_.time_to_target_s &&
          p.test_accuracy >= c_.target_accuracy &&
          (c_.algorithm != Algorithm::kSimu || as_worker == -1 || c_.workers == 1)) {
        result_.time_to_target_s = p.time_s;
        stop_reason_ = "target";
        stop_ = true;
      }
    }
    if (as_worker >= 0) final_[i] = p;
  }

  bool eval_due(const Worker& w) const {
    return w.steps() % c_.eval_every == 0 || w.steps() >= w.max_steps();
  }

  void check_time() {
    if (c_.max_seconds > 0 && seconds_since(start_) >= c_.max_seconds) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stop_reason_.empty()) stop_reason_ = "max-seconds";
      stop_ = true;
    }
  }

  void show_progress(const Worker& w) {
    if (w.id() != 0) return;
    const double elapsed = seconds_since(start_);
    const double rate = static_cast<double>(w.steps() * c_.batch) / std::max(elapsed, 1e-9);
    double eta = static_cast<double>((w.max_steps() - w.steps()) * c_.batch) / rate;
    if (c_.max_seconds > 0) eta = std::min(eta, c_.max_seconds - elapsed);
    std::lock_guard<std::mutex> lock(mutex_);
    progress_.update(w.steps(), static_cast<double>(w.steps() * c_.batch) / shards_[0].rows,
                     rate * c_.workers, eta);
  }

  // Emulates a slower device: the worker idles (F-1) times the duration of its step.
  void straggle(const Worker& w, Clock::time_point step_start) {
    if (c_.straggler.worker != w.id() || c_.straggler.factor <= 1.0) return;
    w.stream().synchronize();
    idle_for((c_.straggler.factor - 1.0) * seconds_since(step_start));
  }

  void run_async(Worker& w) {
    while (!stop_ && w.steps() < w.max_steps()) {
      const auto t0 = Clock::now();
      w.step();
      straggle(w, t0);
      if (eval_due(w)) evaluate(w, w.id());
      if (w.id() == 0 && w.steps() >= w.max_steps()) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stop_reason_.empty()) stop_reason_ = "epochs";
        stop_ = true;
      }
      check_time();
      show_progress(w);
    }
    if (w.steps() != last_eval_[static_cast<std::size_t>(w.id())].second) evaluate(w, w.id());
  }

  void run_sync(Worker& w) {
    std::vector<Worker*> all;
    for (auto& x : workers_) all.push_back(x.get());
    while (true) {
      const auto t0 = Clock::now();
      w.compute_gradient();
      w.stream().synchronize();  // others read this gradient after the barrier
      straggle(w, t0);
      barrier_.arrive_and_wait();
      idle_for(sync_comm_s_);  // the emulated allreduce
      w.apply_mean_gradient(all);
      w.stream().synchronize();
      // The states are identical: worker 0 evaluates for all and decides the stop.
      if (w.id() == 0) {
        if (eval_due(w)) evaluate(w, 0);
        if (w.steps() >= w.max_steps()) {
          std::lock_guard<std::mutex> lock(mutex_);
          if (stop_reason_.empty()) stop_reason_ = "epochs";
          stop_ = true;
        }
        check_time();
        show_progress(w);
      }
      barrier_.arrive_and_wait();  // nobody overwrites its gradient before all have read
      if (stop_) break;
    }
    if (w.id() == 0 && w.steps() != last_eval_[0].second) evaluate(w, 0);
  }

  // One thread steps the workers, each round in a seeded random order; a straggler with
  // factor F takes part in a round with probability 1/F. Every message is delivered inside
  // post(), so the run is a pure function of the configuration.
  void run_deterministic() {
    std::mt19937_64 rng(c_.seed ^ 0xD1B54A32D192ED03ull);
    std::vector<Worker*> order;
    for (auto& w : workers_) order.push_back(w.get());
    std::uniform_real_distribution<double> u(0.0, 1.0);
    while (!stop_) {
      if (c_.algorithm == Algorithm::kSync) {
        for (Worker* w : order) w->compute_gradient();
        for (Worker* w : order) w->apply_mean_gradient(order);
        Worker& w0 = *workers_.front();
        if (eval_due(w0)) evaluate(w0, 0);
        if (w0.steps() >= w0.max_steps() && stop_reason_.empty()) stop_reason_ = "epochs";
        if (w0.steps() >= w0.max_steps()) stop_ = true;
        continue;
      }
      std::shuffle(order.begin(), order.end(), rng);
      bool any = false;
      for (Worker* w : order) {
        if (stop_ || w->steps() >= w->max_steps()) continue;
        const bool slow = c_.straggler.worker == w->id() && c_.straggler.factor > 1.0;
        if (slow && u(rng) >= 1.0 / c_.straggler.factor) continue;
        any = true;
        w->step();
        if (eval_due(*w)) evaluate(*w, w->id());
        if (w->id() == 0 && w->steps() >= w->max_steps()) {
          if (stop_reason_.empty()) stop_reason_ = "epochs";
          stop_ = true;
        }
      }
      if (!any && workers_.front()->steps() >= workers_.front()->max_steps()) break;
    }
    for (auto& w : workers_)
      if (w->steps() != last_eval_[static_cast<std::size_t>(w->id())].second &&
          (c_.algorithm != Algorithm::kSync || w->id() == 0))
        evaluate(*w, w->id());
  }

  // SimuParallelSGD's result: the mean of all workers' states, evaluated as worker -1.
  void average_states() {
    std::vector<double> sum(static_cast<std::size_t>(workers_.front()->parameter_count()), 0.0);
    for (auto& w : workers_) {
      const std::vector<float> s = w->download_state();
      for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += s[i];
    }
    std::vector<float> mean(sum.size());
    for (std::size_t i = 0; i < sum.size(); ++i)
      mean[i] = static_cast<float>(sum[i] / static_cast<double>(workers_.size()));
    Worker& w0 = *workers_.front();
    w0.upload_state(mean);
    evaluate(w0, -1);
  }

  TrainResult finish() {
    progress_.finish();
    TrainResult& r = result_;
    r.train_seconds = seconds_since(start_);
    r.stop_reason = stop_reason_.empty() ? "epochs" : stop_reason_;
    Worker& w0 = *workers_.front();
    r.steps = w0.steps();
    r.samples = w0.steps() * c_.batch;
    r.eval_seconds = eval_seconds_.front();
    const double busy = r.train_seconds - r.eval_seconds;
    for (auto& w : workers_) r.total_samples += w->steps() * c_.batch;
    r.samples_per_s = busy > 0 ? static_cast<double>(r.total_samples) / busy : 0;
    for (std::size_t i = 0; i < workers_.size(); ++i) {
      auto it = final_.find(i);
      if (it != final_.end()) r.worker_final.push_back(it->second);
      if (communicates(c_.algorithm)) {
        const WorkerCounters k = workers_[i]->counters();
        r.messages_sent += k.sent;
        r.messages_received += k.received;
        r.messages_accepted += k.accepted;
        r.messages_rejected += k.rejected_direction + k.rejected_window;
        r.messages_nonfinite += k.nonfinite;
        r.bytes_sent += k.bytes_sent;
      }
    }
    if (transport_)
      for (int i = 0; i < c_.workers; ++i)
        for (int j = 0; j < c_.workers; ++j)
          if (i != j) r.messages_superseded += transport_->stats(i, j).superseded;
    r.final_test_accuracy = r.history.back().test_accuracy;
    r.final_test_loss = r.history.back().test_loss;
    return std::move(r);
  }

  const TrainConfig& c_;
  std::vector<Dataset> shards_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<LocalTransport> transport_;
  MetricsLog metrics_;
  ProgressLine progress_;
  Barrier barrier_;
  double sync_comm_s_ = 0;
  Clock::time_point start_;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;  // metrics_, progress_, result_, stop_reason_, final_
  std::string stop_reason_;
  TrainResult result_;
  std::map<std::size_t, EvalPoint> final_;
  // Per worker, touched only by its own thread: (time, step) of the last evaluation.
  std::vector<std::pair<double, std::int64_t>> last_eval_;
  std::vector<double> eval_seconds_;
  ErrorSlot errors_;
};

}  // namespace

TrainResult train(const TrainConfig& config) {
  validate(config);
  return train(config, load_dataset(config.data));
}

TrainResult train(const TrainConfig& config, const TrainTest& data) {
  return train(config, data, builtin_model_factory(config.model));
}

TrainResult train(const TrainConfig& config, const TrainTest& data, const ModelFactory& factory) {
  validate(config);
  if (data.train.cols != data.test.cols)
    ASGD_INPUT_ERROR("train and test sets differ in width: {} has {} features, {} has {}",
                     data.train.source, data.train.cols, data.test.source, data.test.cols);
  if (data.train.rows < config.workers)
    ASGD_INPUT_ERROR("{} training rows cannot be shared among {} workers", data.train.rows,
                     config.workers);
  Run run(config, data, factory);
  return run.run();
}

void write_summary(const std::string& path, const TrainConfig& c, const TrainResult& r) {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  nlohmann::json workers = nlohmann::json::array();
  for (const EvalPoint& p : r.worker_final)
    workers.push_back({{"worker", p.worker},
                       {"steps", p.step},
                       {"test_accuracy", p.test_accuracy},
                       {"test_loss", p.test_loss},
                       {"messages_sent", p.messages_sent},
                       {"messages_received", p.messages_received},
                       {"messages_accepted", p.messages_accepted},
                       {"messages_rejected", p.messages_rejected},
                       {"messages_nonfinite", p.messages_nonfinite},
                       {"mean_staleness_s", p.mean_staleness_s},
                       {"mean_step_gap", p.mean_step_gap}});
  auto number_or_null = [](bool ok, double v) { return ok ? nlohmann::json(v) : nlohmann::json(); };
  nlohmann::json j = {
      {"final_test_accuracy", number_or_null(r.classifier, r.final_test_accuracy)},
      {"final_test_loss", r.final_test_loss},
      {"final_objective", r.final_test_loss},
      {"time_to_target_s", number_or_null(r.time_to_target_s.has_value(),
                                          r.time_to_target_s.value_or(0.0))},
      {"target_accuracy", number_or_null(c.target_accuracy > 0, c.target_accuracy)},
      {"train_seconds", r.train_seconds},
      {"eval_seconds", r.eval_seconds},
      {"samples_per_s", r.samples_per_s},
      {"steps", r.steps},
      {"samples", r.samples},
      {"total_samples", r.total_samples},
      {"stop_reason", r.stop_reason},
      {"backend", std::string(to_string(c.backend))},
      {"workers", r.workers},
      {"algo", r.algorithm},
      {"merge", to_string(c.merge)},
      {"window", number_or_null(std::isfinite(c.window), c.window)},
      {"message_size", c.message_size},
      {"send_interval", c.send_interval},
      {"deterministic", c.deterministic},
      {"messages_sent", r.messages_sent},
      {"messages_received", r.messages_received},
      {"messages_accepted", r.messages_accepted},
      {"messages_rejected", r.messages_rejected},
      {"messages_nonfinite", r.messages_nonfinite},
      {"messages_superseded", r.messages_superseded},
      {"bytes_sent", r.bytes_sent},
      {"per_worker", workers},
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
      {"commit", git_commit()},
  };
  std::ofstream out(path, std::ios::out | std::ios::trunc);
  if (!out) ASGD_INPUT_ERROR("--summary: cannot create '{}'", path);
  out << j.dump(2) << '\n';
  if (!out) ASGD_THROW("writing the summary to '{}' failed", path);
}

}  // namespace asgd
