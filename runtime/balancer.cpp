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
  thread_ = std::thread([this] { loop(); });
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
    e.add({r.bytes, r.seconds, r.resolution_s});
    board_.set_bandwidth(r.from, r.to, e.estimate().bandwidth_bytes_per_s);
  }
  for (int from : local_) {
    // Before the worker's first steps its step time is unknown: 1 ms stands in.
    const double measured = step_time_ ? step_time_(from) : 0.0;
    const double step_s = measured > 0 ? measured : 1e-3;
    std::vector<PeerState> peers(static_cast<std::size_t>(workers_));
    std::vector<PeerSetting> previous(static_cast<std::size_t>(workers_));
    for (int to = 0; to < workers_; ++to) {
      if (to == from) continue;
      const auto i = static_cast<std::size_t>(from * workers_ + to);
      PeerState& p = peers[static_cast<std::size_t>(to)];
      p.link_known = estimators_[i].valid();
      p.link = estimators_[i].estimate();
      p.backlog = transport_.backlog(from, to);
      previous[static_cast<std::size_t>(to)] = settings_[i];
    }
    BalanceLimits limits = options_.limits;
    if (options_.seconds_per_element) {
      limits.seconds_per_element = std::max(0.0, options_.seconds_per_element(from));
      limits.compute_share = options_.limits.compute_share / std::max(1, workers_ - 1);
      limits.cost_pending = limits.seconds_per_element == 0;
    }
    const std::vector<PeerSetting> next =
        options_.adjust_settings ? balance(peers, previous, step_s, limits) : previous;
    for (int to = 0; to < workers_; ++to) {
      if (to == from) continue;
      const auto i = static_cast<std::size_t>(from * workers_ + to);
      const PeerSetting& s = next[static_cast<std::size_t>(to)];
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
        d.backlog = peers[static_cast<std::size_t>(to)].backlog;
        d.step_s = step_s;
        d.setting = s;
        d.busy = busy_fraction(d.estimate, s, step_s);
        d.seconds_per_element = limits.seconds_per_element;
        log_(d);
        last_logged_s_[i] = t;
      }
    }
  }
}

void LoadBalancer::loop() {
  try {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_) {
      wake_.wait_for(lock, std::chrono::duration<double>(options_.period_s), [&] { return stop_; });
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
// can be). Where that prediction exceeds the budget, a size in between that fits it is taken
// instead when it is at least twice the first: a link of high latency is then still measured
// on two sizes, where it would otherwise be read as all bandwidth (4 KiB in 5 ms as 0.8 MB/s).
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
  const double fitting = std::floor(budget_s / first.seconds * first.bytes / 4);
  return fitting * 4 >= 2 * first.bytes ? static_cast<std::int64_t>(fitting) : 0;
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
  for (int from = 0; from < workers; ++from)
    for (int to = 0; to < workers; ++to) {
      if (from == to) continue;
      std::vector<TransferSample> points;
      for (std::int64_t bytes : sizes_bytes) {
        std::int64_t length =
            std::min<std::int64_t>(std::max<std::int64_t>(1, bytes / 4), transport.max_message());
        // A slow link is measured on the sizes it carries within the budget: the larger ones
        // would only take longer to say the same. See next_probe_length().
        if (!points.empty()) {
          length = next_probe_length(points, length, limits.size_budget_s);
          if (length == 0) break;
        }
        // Scheduling delays only ever add time: the fastest of the repeats is the link's.
        double fastest = std::numeric_limits<double>::infinity();
        for (int repeat = 0; repeat < repeats; ++repeat) {
          MessageHeader h;
          h.sender = from;
          h.length = length;
          transport.take_transfers();  // only this message's record below
          const auto t0 = Clock::now();
          transport.post(to, h, payload.data());
          const Message* got[1];
          // The probe owns the receiver's slots before training: nothing else collects.
          while (transport.collect(to, got, 1) == 0) {
            if (std::chrono::duration<double>(Clock::now() - t0).count() > limits.timeout_s)
              ASGD_INPUT_ERROR(
                  "measuring the link {}->{}: a message of {} bytes did not arrive within {} s; "
                  "check the link settings (--link-bandwidth, --link-latency, the link matrices) "
                  "or start with --balance off",
                  from, to, length * 4, limits.timeout_s);
            std::this_thread::yield();
          }
          double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
          // The transport's own timing of the transfer, where it has one, leaves out the
          // probe's thread wake-ups (tens of microseconds, which would swamp fast links).
          for (const TransferRecord& record : transport.take_transfers())
            if (record.from == from && record.to == to) seconds = record.seconds;
          fastest = std::min(fastest, seconds);
        }
        points.push_back({static_cast<double>(length * 4), fastest});
      }
      LinkModel& link = out[static_cast<std::size_t>(from)][static_cast<std::size_t>(to)];
      if (points.size() >= 2 && points.front().bytes != points.back().bytes) {
        link = fit_link(points);
      } else {
        // One size only (a slow link): all of its time is taken as bandwidth, the cautious
        // reading; the running estimate refines it from the transfers of training.
        link.latency_s = 0;
        link.bandwidth_bytes_per_s = points.front().bytes / std::max(points.front().seconds, 1e-12);
      }
    }
  return out;
}

}  // namespace asgd
