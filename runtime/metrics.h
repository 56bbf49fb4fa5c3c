// Where a run reports: a JSON-lines metrics file (one object per evaluation) and a live
// progress line on a terminal. Both are owned by the training thread; not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace asgd {

struct EvalPoint;
struct BalanceDecision;

// A run event that is not an evaluation: a divergence recovered from, a checkpoint written, a
// resume. A line with "event": event, "time_s", "worker", "step", each value and "detail".
struct RunEvent {
  std::string event;
  double time_s = 0;
  int worker = -1;
  std::int64_t step = 0;
  std::vector<std::pair<std::string, double>> values;
  std::string detail;
};

class MetricsLog {
 public:
  // An empty path disables the log. Throws InputError when the file cannot be created.
  explicit MetricsLog(const std::string& path);
  void write(const EvalPoint& point, int worker);
  // A load-balancer decision: a line with "event": "balance" (time_s on the run's clock).
  void write(const BalanceDecision& decision, double time_s);
  void write(const RunEvent& event);
  bool enabled() const { return out_.is_open(); }

 private:
  std::string path_;
  std::ofstream out_;
};

// Redraws one status line on stderr at most a few times a second, and only when stderr is a
// terminal, so logs and pipes stay clean.
class ProgressLine {
 public:
  explicit ProgressLine(bool wanted);
  ~ProgressLine();
  // Cheap when called every step: it only formats when the redraw interval has passed.
  void update(std::int64_t step, double epoch, double samples_per_s, double eta_s);
  // Records the latest evaluation to show alongside.
  void set_eval(double train_loss, double test_accuracy);
  // Ends the line (keeps what it shows).
  void finish();

 private:
  bool enabled_;
  bool drawn_ = false;
  double loss_ = -1, accuracy_ = -1;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace asgd
