// The load-balancer thread (DESIGN.md section 5): it follows every link's latency and
// bandwidth (a probe at start-up, then every completed transfer), each worker's step time and
// send backlog, steps the controller of comm/load_balancer.h periodically, and publishes each
// worker's per-peer message size and send interval on a board that the workers read without
// locks. Every decision is handed to a logger (the metrics file), so a run can be replayed
// and plotted.
//
// Ownership: the LoadBalancer owns its thread and estimators; it borrows the transport, the
// board and the callbacks, which must outlive it. Thread-safety: PeerBoard reads and writes
// are lock-free and safe from any thread; a LoadBalancer is created, checked and destroyed by
// one thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "comm/load_balancer.h"
#include "comm/transport.h"
#include "runtime/error.h"

namespace asgd {

// Each worker's current setting for each peer, and the bandwidth estimates behind them. A
// setting is one 64-bit word (message in the high 40 bits, interval in the low 24), so a
// reader never sees a message from one decision with the interval of another.
class PeerBoard {
 public:
  explicit PeerBoard(int workers);
  PeerSetting get(int from, int to) const;
  void set(int from, int to, const PeerSetting& setting);
  double bandwidth(int from, int to) const;  // bytes/s; +inf for an ideal link; 0: unknown
  void set_bandwidth(int from, int to, double bytes_per_s);
  int workers() const { return workers_; }

 private:
  int workers_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> settings_;
  std::unique_ptr<std::atomic<double>[]> bandwidth_;
};

// One decision of the controller for one link, as logged.
struct BalanceDecision {
  double time_s = 0;  // since the balancer started
  int worker = 0;
  int peer = 0;
  LinkModel estimate;
  std::int64_t backlog = 0;
  double step_s = 0;
  PeerSetting setting;
  double busy = 0;                 // the busy fraction the setting implies
  double seconds_per_element = 0;  // the compute cost the decision assumed
  double busy_bound = 0;           // min(rho, the link's busy cap) the decision kept to
};

struct BalancerOptions {
  BalanceLimits limits;
  double period_s = 0.05;       // between controller steps (until measured: 1 ms for the first
                                // 0.1 s, then a tenth of it)
  double log_every_s = 1.0;     // decisions are logged when they change and at this interval
  bool adjust_settings = true;  // false: estimates only (for bandwidth-weighted peer choice)
  // Worker w's recent compute per element sent and merged (seconds): negative (or NaN) while
  // unknown; 0 is a measurement (a GPU worker, whose launches return at once, spends next to
  // nothing on the host). The controller keeps each worker's messages within
  // limits.compute_share of its steps, split evenly among its peers; while the cost is
  // unknown they stay at the smallest useful size (BalanceLimits::cost_pending). Empty: links
  // only.
  std::function<double(int)> seconds_per_element;
  // false: no thread; the owner steps the controller with LoadBalancer::step_once() (a
  // deterministic driver, a test).
  bool thread = true;
};

class LoadBalancer {
 public:
  // `local_workers`: the workers of this process (their settings are decided here); `probe`:
  // [from][to] initial estimates (empty: none); `step_time(w)`: worker w's recent step time in
  // seconds (0 while unknown). The first decision is made and published before the
  // constructor returns, so workers start from it.
  LoadBalancer(Transport& transport, std::vector<int> local_workers, PeerBoard& board,
               const std::vector<std::vector<LinkModel>>& probe,
               std::function<double(int)> step_time,
               std::function<void(const BalanceDecision&)> log, const BalancerOptions& options);
  ~LoadBalancer();
  LoadBalancer(const LoadBalancer&) = delete;
  LoadBalancer& operator=(const LoadBalancer&) = delete;

  // Rethrows the first error of the balancer's thread.
  void check() const { error_.rethrow_if_set(); }

  // One controller step on the calling thread, as the balancer's thread takes them; only with
  // BalancerOptions::thread false.
  void step_once();

 private:
  void step(bool force_log);
  void loop();

  Transport& transport_;
  const std::vector<int> local_;
  PeerBoard& board_;
  const std::function<double(int)> step_time_;
  const std::function<void(const BalanceDecision&)> log_;
  const BalancerOptions options_;
  const int workers_;
  const std::chrono::steady_clock::time_point epoch_;
  std::vector<LinkEstimator> estimators_;  // [from][to]
  std::vector<PeerSetting> settings_;      // [from][to], as published
  std::vector<double> busy_caps_;          // [from][to], see next_busy_cap()
  std::vector<double> last_logged_s_;      // [from][to]
  // Every local worker's step time (and cost, where it counts) was known at the previous step:
  // the settings in force were decided on measurements, not on guesses.
  bool measured_ = false;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
  ErrorSlot error_;
};

// Measures the links of an in-process transport before training: for every ordered pair (all
// pairs at once, one message each per round), a few messages of each size in `sizes_bytes`
// go from one worker to the other and are timed
// from post() to their arrival in the receiver's slot (or by the transport's own record of
// the transfer, where it keeps one, which leaves out thread wake-ups); fit_link() turns the
// fastest of each size (delays from scheduling only ever add) into a
// LinkModel. Links without emulation measure as what they are, a copy in memory. Must run
// before any worker collects (it consumes what it sends), and its messages count in the
// transport's statistics. [from][to]; the diagonal is ideal.
// Sizes whose transfer the smaller ones predict to take longer than size_budget_s are not
// measured, but a second size is, when the first took no longer than the budget (a link
// measured on one size gets latency 0 and that size's bandwidth); a message
// that has not arrived after timeout_s ends the probe with an InputError naming the link.
struct ProbeLimits {
  double size_budget_s = 0.25;
  double timeout_s = 120;
};
std::vector<std::vector<LinkModel>> probe_links(Transport& transport, int workers,
                                                const std::vector<std::int64_t>& sizes_bytes,
                                                int repeats, const ProbeLimits& limits = {});

}  // namespace asgd
