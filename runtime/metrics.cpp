#include "runtime/metrics.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "runtime/balancer.h"
#include "runtime/error.h"
#include "runtime/trainer.h"

namespace asgd {

MetricsLog::MetricsLog(const std::string& path) : path_(path) {
  if (path.empty()) return;
  out_.open(path, std::ios::out | std::ios::trunc);
  if (!out_) ASGD_INPUT_ERROR("--metrics: cannot create '{}': {}", path, std::strerror(errno));
}

void MetricsLog::write(const EvalPoint& p, int worker) {
  if (!out_.is_open()) return;
  nlohmann::json line = {{"worker", worker},
                         {"time_s", p.time_s},
                         {"eval_s", p.eval_s},
                         {"step", p.step},
                         {"samples", p.samples},
                         {"epoch", p.epoch},
                         {"train_loss", p.train_loss},
                         {"test_loss", p.test_loss},
                         {"test_accuracy", p.test_accuracy},
                         {"samples_per_s", p.samples_per_s},
                         {"messages_sent", p.messages_sent},
                         {"messages_received", p.messages_received},
                         {"messages_accepted", p.messages_accepted},
                         {"messages_rejected", p.messages_rejected},
                         {"messages_rejected_direction", p.messages_rejected_direction},
                         {"messages_rejected_window", p.messages_rejected_window},
                         {"messages_nonfinite", p.messages_nonfinite},
                         {"bytes_sent", p.bytes_sent},
                         {"mean_staleness_s", p.mean_staleness_s},
                         {"mean_step_gap", p.mean_step_gap}};
  out_ << line.dump() << '\n';
  out_.flush();  // a killed run keeps every line it logged
  if (!out_) ASGD_THROW("writing metrics to '{}' failed", path_);
}

void MetricsLog::write(const BalanceDecision& d, double time_s) {
  if (!out_.is_open()) return;
  const double bw = d.estimate.bandwidth_bytes_per_s;
  nlohmann::json line = {
      {"event", "balance"},
      {"time_s", time_s},
      {"worker", d.worker},
      {"peer", d.peer},
      {"bandwidth_bytes_per_s", std::isfinite(bw) ? nlohmann::json(bw) : nlohmann::json()},
      {"latency_s", d.estimate.latency_s},
      {"backlog", d.backlog},
      {"step_s", d.step_s},
      {"message", d.setting.message},
      {"interval", d.setting.interval},
      {"busy", d.busy},
      {"seconds_per_element", d.seconds_per_element},
      {"busy_bound", d.busy_bound}};
  out_ << line.dump() << '\n';
  out_.flush();
  if (!out_) ASGD_THROW("writing metrics to '{}' failed", path_);
}

void MetricsLog::write(const RunEvent& e) {
  if (!out_.is_open()) return;
  nlohmann::json line = {{"event", e.event}, {"time_s", e.time_s}, {"worker", e.worker}, {"step", e.step}};
  for (const auto& [name, value] : e.values)
    if (!std::isfinite(value))
      line[name] = nlohmann::json();
    else if (value == std::floor(value) && std::fabs(value) < 9e15)
      line[name] = static_cast<std::int64_t>(value);  // counts and steps print as integers
    else
      line[name] = value;
  if (!e.detail.empty()) line["detail"] = e.detail;
  out_ << line.dump() << '\n';
  out_.flush();
  if (!out_) ASGD_THROW("writing metrics to '{}' failed", path_);
}

ProgressLine::ProgressLine(bool wanted) : enabled_(wanted && isatty(STDERR_FILENO) == 1) {}

ProgressLine::~ProgressLine() { finish(); }

void ProgressLine::set_eval(double train_loss, double test_accuracy) {
  loss_ = train_loss;
  accuracy_ = test_accuracy;
}

void ProgressLine::update(std::int64_t step, double epoch, double samples_per_s, double eta_s) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (drawn_ && now - last_ < std::chrono::milliseconds(250)) return;
  last_ = now;
  std::string line = fmt::format("step {:>8} | epoch {:6.2f}", step, epoch);
  if (loss_ >= 0) line += fmt::format(" | loss {:.4f} | test acc {:.4f}", loss_, accuracy_);
  line += fmt::format(" | {:>9.0f} samples/s", samples_per_s);
  if (eta_s >= 0) line += fmt::format(" | ETA {:>5.0f}s", eta_s);
  std::fprintf(stderr, "\r%s\033[K", line.c_str());
  drawn_ = true;
}

void ProgressLine::finish() {
  if (enabled_ && drawn_) std::fputc('\n', stderr);
  drawn_ = false;
}

}  // namespace asgd
