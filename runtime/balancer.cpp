#include "runtime/balancer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

namespace asgd {
namespace {

constexpr int kIntervalBits = 24;
constexpr std::uint64_t kIntervalMask = (std::uint64_t{1} << kIntervalBits) - 1;
static_assert(kIntervalMask == static_cast<std::uint64_t>(kMaxSendInterval));

// How long the balancer looks every millisecond while the step times and costs are unknown. A
// worker that never merges anything leaves its cost unknown for the whole run: then it looks
// at a tenth of its period, not every millisecond.
constexpr double kFastStart_s = 0.1;

std::uint64_t pack(const PeerSetting& s) {
  return static_cast<std::uint64_t>(s.message) << kIntervalBits |
         (static_cast<std::uint64_t>(s.interval) & kIntervalMask);
}

PeerSetting unpack(std::uint64_t v) {
  PeerSetting s;
  s.message = static_cast<std::int64_t>(v >> kIntervalBits);
  s.interval = static_cast<std::int64_t>(v & kIntervalMask);
  return s;
}

}  // namespace

PeerBoard::PeerBoard(int workers)
    : workers_(workers),
      settings_(new std::atomic<std::uint64_t>[static_cast<std::size_t>(workers * workers)]),
      bandwidth_(new std::atomic<double>[static_cast<std::size_t>(workers * workers)]) {
  for (int i = 0; i < workers * workers; ++i) {
    settings_[static_cast<std::size_t>(i)].store(pack({0, 1}));
    bandwidth_[static_cast<std::size_t>(i)].store(0.0);
  }
}

PeerSetting PeerBoard::get(int from, int to) const {
  return unpack(
      settings_[static_cast<std::size_t>(from * workers_ + to)].load(std::memory_order_relaxed));
}

void PeerBoard::set(int from, int to, const PeerSetting& s) {
  ASGD_CHECK(s.message >= 0 && s.message < (std::int64_t{1} << 40) && s.interval >= 1 &&
                 s.interval <= static_cast<std::int64_t>(kIntervalMask),
             "setting ({}, {}) out of the board's range", s.message, s.interval);
  settings_[static_cast<std::size_t>(from * workers_ + to)].store(pack(s),
                                                                  std::memory_order_relaxed);
}

double PeerBoard::bandwidth(int from, int to) const {
  return bandwidth_[static_cast<std::size_t>(from * workers_ + to)].load(std::memory_order_relaxed);
}

void PeerBoard::set_bandwidth(int from, int to, double bytes_per_s) {
  bandwidth_[static_cast<std::size_t>(from * workers_ + to)].store(bytes_per_s,
                                                                   std::memory_order_relaxed);
}

LoadBalancer::LoadBalancer(Transport& transport, std::vector<int> local_workers, PeerBoard& board,
                           const std::vector<std::vector<LinkModel>>& probe,
                           std::function<double(int)> step_time,
                           std::function<void(const BalanceDecision&)> log,
                           const BalancerOptions& options)
    : transport_(transport),
      local_(std::move(local_workers)),
      board_(board),
      step_time_(std::move(step_time)),
      log_(std::move(log)),
      options_(options),
      workers_(board.workers()),
      epoch_(std::chrono::steady_clock::now()),
      estimators_(static_cast<std::size_t>(workers_ * workers_)),
      settings_(static_cast<std::size_t>(workers_ * workers_)),
      busy_caps_(static_cast<std::size_t>(workers_ * workers_),
                 std::numeric_limits<double>::infinity()),
      last_logged_s_(static_cast<std::size_t>(workers_ * workers_), -1.0) {
  ASGD_CHECK(options.limits.max_message >= 1, "the balancer needs max_message >= 1");
  for (int from : local_)
    for (int to = 0; to < workers_; ++to) {
      if (to == from) continue;
      const auto i = static_cast<std::size_t>(from * workers_ + to);
      if (!probe.empty()) {
        estimators_[i].start_from(
            probe[static_cast<std::size_t>(from)][static_cast<std::size_t>(to)]);
        board_.set_bandwidth(from, to, estimators_[i].estimate().bandwidth_bytes_per_s);
      }
      settings_[i] = board_.get(from, to);
    }
  step(true);
  if (options_.thread) thread_ = std::thread([this] { loop(); });
}

void LoadBalancer::step_once() {
  ASGD_CHECK(!options_.thread, "step_once() on a balancer that runs its own thread");
  step(false);
}

LoadBalancer::~LoadBalancer() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void LoadBalancer::step(bool force_log) {
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_).count();
  for (const TransferRecord& r : transport_.take_transfers()) {
    if (r.from < 0 || r.from >= workers_ || r.to < 0 || r.to >= workers_ || r.from == r.to)
      continue;
    LinkEstimator& e = estimators_[static_cast<std::size_t>(r.from * workers_ + r.to)];
    e.add({r.bytes, r.seconds, r.resolution_s, r.receiver_wait_s});
    board_.set_bandwidth(r.from, r.to, e.estimate().bandwidth_bytes_per_s);
  }
  bool all_measured = true;
  for (int from : local_) {
    // Before the worker's first steps its step time is unknown: 1 ms stands in.
    const double measured = step_time_ ? step_time_(from) : 0.0;
    all_measured = all_measured && measured > 0;
    const double step_s = measured > 0 ? measured : 1e-3;
    std::vector<PeerState> peers(static_cast<std::size_t>(workers_));
    std::vector<PeerSetting> previous(static_cast<std::size_t>(workers_));
    std::vector<std::int64_t> observed_backlog(static_cast<std::size_t>(workers_));
    for (int to = 0; to < workers_; ++to) {
      if (to == from) continue;
      const auto i = static_cast<std::size_t>(from * workers_ + to);
      PeerState& p = peers[static_cast<std::size_t>(to)];
      p.link_known = estimators_[i].valid();
      p.link = estimators_[i].estimate();
      // A backlog built up under settings decided on guesses (a step of 1 ms before the first
      // steps were timed) says nothing of what the link carries: under mpirun K-Means took
      // its guessed interval of 1 for congestion, and doubled its measured one for the whole
      // of a 10 ms race. It counts once the settings in force stand on measurements.
      observed_backlog[static_cast<std::size_t>(to)] = transport_.backlog(from, to);
      p.backlog = measured_ ? observed_backlog[static_cast<std::size_t>(to)] : 0;
      p.busy_cap = busy_caps_[i];
      previous[static_cast<std::size_t>(to)] = settings_[i];
    }
    BalanceLimits limits = options_.limits;
    if (options_.seconds_per_element) {
      // A cost measured as 0 is known (free), not pending: read as "unknown" it kept a GPU
      // worker at the smallest message, and the controller at its fast start, for the whole run.
      const double cost = options_.seconds_per_element(from);
      limits.cost_pending = !(cost >= 0 && std::isfinite(cost));
      limits.seconds_per_element = limits.cost_pending ? 0.0 : cost;
      limits.compute_share = options_.limits.compute_share / std::max(1, workers_ - 1);
      all_measured = all_measured && !limits.cost_pending;
    }
    const std::vector<PeerSetting> next =
        options_.adjust_settings ? balance(peers, previous, step_s, limits) : previous;
    for (int to = 0; to < workers_; ++to) {
      if (to == from) continue;
      const auto i = static_cast<std::size_t>(from * workers_ + to);
      const PeerSetting& s = next[static_cast<std::size_t>(to)];
      const PeerState& state = peers[static_cast<std::size_t>(to)];
      if (options_.adjust_settings && state.link_known)
        busy_caps_[i] = next_busy_cap(busy_caps_[i], state.backlog > limits.max_backlog, limits);
      const bool changed = s != settings_[i];
      if (changed && s.message > 0) board_.set(from, to, s);
      settings_[i] = s;
      if (log_ && s.message > 0 &&
          (changed || force_log || t - last_logged_s_[i] >= options_.log_every_s)) {
        BalanceDecision d;
        d.time_s = t;
        d.worker = from;
        d.peer = to;
        d.estimate = peers[static_cast<std::size_t>(to)].link;
        d.backlog = observed_backlog[static_cast<std::size_t>(to)];
        d.step_s = step_s;
        d.setting = s;
        d.busy = busy_fraction(d.estimate, s, step_s);
        d.seconds_per_element = limits.seconds_per_element;
        d.busy_bound = std::min(limits.rho, state.busy_cap);
        log_(d);
        last_logged_s_[i] = t;
      }
    }
  }
  measured_ = all_measured;
}

void LoadBalancer::loop() {
  try {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_) {
      // Until the workers' step times and costs are measured the decisions stand on guesses (1
      // ms a step, the smallest useful message): the controller looks every millisecond for
      // the first kFastStart_s, then ten times as often as its period, so a short run is
      // balanced from its first steps rather than after its first period. A K-Means race under
      // mpirun (60 steps, 10 ms) has its measurements after 5-8 ms; at one look per 5 ms
      // its first measured decision could wait until the race was all but over.
      const double since_start =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_).count();
      const double period = measured_                    ? options_.period_s
                            : since_start < kFastStart_s ? std::min(1e-3, options_.period_s / 10)
                                                         : options_.period_s / 10;
      wake_.wait_for(lock, std::chrono::duration<double>(period), [&] { return stop_; });
      if (stop_) break;
      lock.unlock();
      step(false);
      lock.lock();
    }
  } catch (...) {
    error_.capture(std::current_exception());
  }
}

namespace {

// The length (elements) to measure after `points` when the sweep's next one is `length`; 0 to
// stop. Two sizes fit the link, and predict the next; one size alone cannot say how much of
// its time was latency, so the next size is predicted as if none were (the slowest the link
// can be). Where that prediction exceeds the budget, a size in between is taken instead: what
// the budget carries at that rate, or twice the first size if that is more (at worst twice
// the first's time). A link of high latency is so measured on two sizes, where it would
// otherwise be read as all bandwidth (4 KiB in 5 ms as 0.8 MB/s).
std::int64_t next_probe_length(const std::vector<TransferSample>& points, std::int64_t length,
                               double budget_s) {
  const TransferSample& first = points.front();
  const auto bytes = static_cast<double>(length * 4);
  if (bytes <= points.back().bytes) return 0;  // capped at the transport's largest message
  if (points.size() >= 2) {
    const LinkModel fit = fit_link(points);
    return fit.latency_s + bytes / fit.bandwidth_bytes_per_s <= budget_s ? length : 0;
  }
  if (first.seconds * bytes / first.bytes <= budget_s) return length;
  if (first.seconds > budget_s) return 0;  // even the smallest size took longer
  // At least twice the first size (at worst twice its time, were it all bandwidth), so that
  // a link of latency near the budget is fitted too.
  const double fitting = std::max(std::floor(budget_s / first.seconds * first.bytes / 4),
                                  std::ceil(2 * first.bytes / 4));
  return std::min(length, static_cast<std::int64_t>(fitting));
}

}  // namespace

std::vector<std::vector<LinkModel>> probe_links(Transport& transport, int workers,
                                                const std::vector<std::int64_t>& sizes_bytes,
                                                int repeats, const ProbeLimits& limits) {
  using Clock = std::chrono::steady_clock;
  ASGD_CHECK(
      !sizes_bytes.empty() && repeats >= 1 && limits.size_budget_s > 0 && limits.timeout_s > 0,
      "probe_links: needs sizes, repeats >= 1 and positive limits");
  std::vector<std::vector<LinkModel>> out(
      static_cast<std::size_t>(workers), std::vector<LinkModel>(static_cast<std::size_t>(workers)));
  std::vector<float> payload(
      static_cast<std::size_t>(*std::max_element(sizes_bytes.begin(), sizes_bytes.end()) / 4),
      1.0f);
  // Every link is measured at once, one message each per round: the links of the transport
  // are independent (each its own emulated clock), so with latency L the probe takes about
  // sizes x repeats x L whatever the number of workers (one link at a time, 64 workers at
  // 0.1 s took 20 minutes).
  struct Probe {
    int from = 0, to = 0;
    std::vector<TransferSample> points;
    std::size_t next_size = 0;
    std::int64_t length = 0;  // this round's
    double fastest = 0;
    double post_s = 0;
    bool arrived = false;
  };
  std::vector<Probe> probes;
  for (int from = 0; from < workers; ++from)
    for (int to = 0; to < workers; ++to)
      if (from != to) {
        Probe& p = probes.emplace_back();
        p.from = from;
        p.to = to;
      }
  auto index = [&](int from, int to) {
    return static_cast<std::size_t>(from * (workers - 1) + (to < from ? to : to - 1));
  };
  std::vector<Probe*> active;
  const Message* got[64];
  for (;;) {
    // Each link's next size: the sweep's, or what the budget leaves of it (next_probe_length).
    active.clear();
    for (Probe& p : probes) {
      if (p.next_size == sizes_bytes.size()) continue;
      const std::int64_t bytes = sizes_bytes[p.next_size++];
      std::int64_t length =
          std::min<std::int64_t>(std::max<std::int64_t>(1, bytes / 4), transport.max_message());
      if (!p.points.empty()) length = next_probe_length(p.points, length, limits.size_budget_s);
      if (length == 0) {
        p.next_size = sizes_bytes.size();  // a slow link: the larger sizes say nothing new
        continue;
      }
      p.length = length;
      p.fastest = std::numeric_limits<double>::infinity();
      active.push_back(&p);
    }
    if (active.empty()) break;
    for (int repeat = 0; repeat < repeats; ++repeat) {
      transport.take_transfers();  // only this round's records below
      const auto t0 = Clock::now();
      for (Probe* p : active) {
        MessageHeader h;
        h.sender = p->from;
        h.length = p->length;
        const auto posted = Clock::now();
        transport.post(p->to, h, payload.data());
        // An ideal link delivers inside post(), so that is its transfer.
        p->post_s = std::chrono::duration<double>(Clock::now() - posted).count();
        p->arrived = false;
      }
      // The probe owns the receivers' slots before training: nothing else collects.
      std::size_t waiting = active.size();
      while (waiting > 0) {
        for (int to = 0; to < workers; ++to) {
          const int n = transport.collect(to, got, std::min(workers, 64));
          for (int i = 0; i < n; ++i) {
            Probe& p = probes[index(got[i]->header.sender, to)];
            if (!p.arrived) {
              p.arrived = true;
              --waiting;
            }
          }
        }
        if (waiting == 0) break;
        if (std::chrono::duration<double>(Clock::now() - t0).count() > limits.timeout_s) {
          const auto late = std::find_if(active.begin(), active.end(),
                                         [](const Probe* p) { return !p->arrived; });
          ASGD_INPUT_ERROR(
              "measuring the link {}->{}: a message of {} bytes did not arrive within {} s; "
              "check the link settings (--link-bandwidth, --link-latency, the link matrices) "
              "or start with --balance off",
              (*late)->from, (*late)->to, (*late)->length * 4, limits.timeout_s);
        }
        std::this_thread::yield();
      }
      // The transport's own timing of a transfer, where it keeps one (emulated links), is
      // the link's; scheduling delays only ever add, so the fastest repeat counts.
      std::vector<double> recorded(probes.size(), -1);
      for (const TransferRecord& r : transport.take_transfers())
        if (r.from != r.to) recorded[index(r.from, r.to)] = r.seconds;
      for (Probe* p : active) {
        const double r = recorded[index(p->from, p->to)];
        p->fastest = std::min(p->fastest, r >= 0 ? r : p->post_s);
      }
    }
    for (Probe* p : active)
      p->points.push_back({static_cast<double>(p->length * 4), std::max(p->fastest, 1e-12)});
  }
  for (const Probe& p : probes) {
    LinkModel& link = out[static_cast<std::size_t>(p.from)][static_cast<std::size_t>(p.to)];
    if (p.points.size() >= 2) {
      link = fit_link(p.points);
    } else {
      // One size only (a slow link): all of its time is taken as bandwidth, the cautious
      // reading; the running estimate refines it from the transfers of training.
      link.latency_s = 0;
      link.bandwidth_bytes_per_s =
          p.points.front().bytes / std::max(p.points.front().seconds, 1e-12);
    }
  }
  return out;
}

}  // namespace asgd
