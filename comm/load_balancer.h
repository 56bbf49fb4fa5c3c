// The load balancer's mathematics (DESIGN.md section 5), free of threads and clocks so that it
// is unit-tested exactly: a running estimate of each link's latency and bandwidth from the
// transfers it completed, a fit of a probe's ping-pong sweep, and the controller that turns
// the estimates, the send backlog and the worker's step time into each peer's message size
// m_p (elements) and send interval k_p (steps).
//
// The rule the controller satisfies: the link to p is busy at most a fraction rho of the time,
//     (a_p + 4 m_p / B_p) / (k_p T) <= rho,
// its backlog stays bounded, and among the settings that satisfy this it prefers sending more
// often over sending more per message, down to a minimum useful message. It changes a setting
// only when the change is worth it (hysteresis), so noisy estimates do not make it oscillate.
//
// Thread-safety: LinkEstimator is used by one thread; the free functions are pure.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "comm/transport.h"

namespace asgd {

// One completed transfer on a link: `bytes` took `seconds` from the start of sending to the
// arrival (as the transport measured it), give or take resolution_s / 2: a transport whose
// thread sees a completion only when it looks (every 2 ms on a full machine) cannot time a
// 16 KB message on a 10 GB/s link, and says so here. Up to receiver_wait_s of `seconds` may
// have been the receiver's wait to take it (TransferRecord::receiver_wait_s), not link time.
struct TransferSample {
  double bytes = 0;
  double seconds = 0;
  double resolution_s = 0;
  double receiver_wait_s = 0;
};

// A fit of time = latency + bytes / bandwidth over (bytes, seconds) points, e.g. the medians
// of a probe's ping-pong size sweep. Least squares weighted by 1/seconds^2 (relative
// residuals), so that the small sizes count as much as the large ones; the latency is clamped
// at >= 0 (then the best fit through the origin) and the bandwidth to (0, 1e15] bytes/s (a
// sweep whose time does not grow with the size is latency-bound). Needs points of at least two
// distinct sizes, bytes >= 0 and seconds > 0; throws asgd::Error otherwise.
LinkModel fit_link(const std::vector<TransferSample>& points);

// The running estimate of one link. Starts from a probe's fit (or nothing), then follows
// every completed transfer: the bandwidth is an exponentially weighted average in log space
// of bytes / (seconds - latency); a single sample far from the estimate (more than
// `outlier_factor` away) moves it only a little (as much as one just inside the factor would),
// while `outliers_to_follow` in a row in the same direction are a real change: the estimate
// jumps to the latest. The latency is the probe's and stays: transfers mostly come in one
// size, which cannot separate latency from bandwidth. Without a probe (or after an ideal
// one), the first sample sets the bandwidth to bytes / seconds, with latency 0. Samples with
// bytes <= 0 or seconds <= 0 are ignored. A sample with a resolution or a receiver wait is an
// interval, [seconds - resolution_s / 2 - receiver_wait_s, seconds + resolution_s / 2]: when
// the estimate's time for its bytes lies within it the sample agrees and changes nothing;
// otherwise it counts as the nearest end of the interval. So transfers far shorter than the
// resolution can raise a low estimate but never drag a fast link's estimate down to
// bytes / resolution, and a receiver that looks every 2 ms does not make an 8 KB message on
// a 1 GB/s link read as 8 MB/s (under mpirun it did: K-Means then sent a fourth as often as
// the link allowed).
class LinkEstimator {
 public:
  struct Options {
    double weight = 0.3;          // EWMA weight of a new sample
    double outlier_factor = 4.0;  // a sample this many times off the estimate is suspect
    int outliers_to_follow = 3;   // consecutive suspects in one direction that are believed
  };
  LinkEstimator() : LinkEstimator(Options{}) {}
  explicit LinkEstimator(Options options);

  void start_from(const LinkModel& probe);
  void add(const TransferSample& sample);
  bool valid() const { return valid_; }
  LinkModel estimate() const { return model_; }

 private:
  Options options_;
  LinkModel model_;
  bool valid_ = false;
  int suspect_run_ = 0;  // consecutive suspect samples, signed by direction
};

// The longest send interval a decision can carry (the workers read decisions from one packed
// atomic word, runtime/balancer.h).
inline constexpr std::int64_t kMaxSendInterval = (std::int64_t{1} << 24) - 1;

struct BalanceLimits {
  double rho = 0.5;                  // target busy fraction of each link
  std::int64_t min_message = 4096;   // elements: smaller messages are not worth sending
  std::int64_t max_message = 0;      // elements: usually the parameter count (> 0)
  std::int64_t min_interval = 1;     // steps
  std::int64_t max_interval = 1000;  // steps
  int max_backlog = 2;               // messages posted but not completed, per peer
  double hysteresis = 0.25;          // relative change of m / k worth making
  // Sending and merging cost the workers compute: with seconds_per_element > 0 (measured:
  // the sender's copy plus the receiver's test and merge, per element) a link's messages
  // also keep m * seconds_per_element / (k T) <= compute_share. 0: links only.
  double seconds_per_element = 0;
  double compute_share = 0.05;
  // The compute share applies but the cost per element is not measured yet: messages stay at
  // the smallest useful size until it is (a slow start). Sending the whole state before the
  // cost is known took a fifth of the workers' compute on a fast link for the first
  // measurements.
  bool cost_pending = false;
};

// The controller's view of one peer.
struct PeerState {
  LinkModel link;            // the current estimate
  bool link_known = false;   // false: no estimate yet (the peer keeps its previous setting)
  std::int64_t backlog = 0;  // messages posted to it and not completed
  // The busy bound this link has earned, when below rho: see next_busy_cap().
  double busy_cap = std::numeric_limits<double>::infinity();
};

// The busy bound of a link after a decision that saw it `congested` (backlog above its bound)
// or not, from its previous cap: congestion lowers the bound in force (min(cap, rho)) by the
// factor 1 + hysteresis; each calm decision raises it by kBusyCapRecovery x rho, and at rho the
// cap is lifted (infinity). A link whose estimate says it carries the sends but whose backlog
// says it does not (jitter at a busy fraction near 1) so settles below the bound where it
// congested, instead of thinning its sends and taking them back every other decision; the
// cap is a controller state the caller keeps per link (the controller itself stays a pure
// function). Multiplicative decrease, additive increase, as in TCP's congestion control.
inline constexpr double kBusyCapRecovery = 0.01;
double next_busy_cap(double cap, bool congested, const BalanceLimits& limits);

struct PeerSetting {
  std::int64_t message = 0;   // m_p, elements
  std::int64_t interval = 1;  // k_p, steps
  bool operator==(const PeerSetting& o) const {
    return message == o.message && interval == o.interval;
  }
  bool operator!=(const PeerSetting& o) const { return !(*this == o); }
};

// The ideal setting for one link without history: the smallest interval k in
// [min_interval, max_interval] at which a message of at least min_message elements keeps the
// busy fraction <= rho, with the largest such message (capped at max_message); a link too slow
// even for that gets (min_message, max_interval), and an ideal link (max_message,
// min_interval). Messages below max_message are rounded down to a multiple of 1024 elements
// (4 KiB), not below min_message, so that an estimate that moves a little leaves them as they
// were. A max_message below min_message lowers min_message to it; cost_pending caps the
// message at min_message. `step_s` is the worker's step time T (> 0); invalid limits throw
// asgd::Error.
PeerSetting ideal_setting(const LinkModel& link, double step_s, const BalanceLimits& limits);

// One decision for every peer: the ideal setting (under min(rho, busy_cap) as the busy bound),
// thinned out when the backlog exceeds the
// bound (the interval is multiplied by backlog / max_backlog, rounded up, at most
// max_interval), and kept at `previous` unless the change is worth it: it sends more often by
// more than the hysteresis (relative), or more per message by more than the hysteresis at no
// larger interval. A worse setting is taken at once when the previous one would break the busy
// bound or the compute share by more than the hysteresis (a slowing link, a dearer element)
// or the backlog exceeds its bound and asks for a longer interval; otherwise the previous one is
// kept, so an estimate that wanders across the boundary between two intervals does not flip k back
// and forth. A previous setting outside the limits is replaced. An entry with link_known false
// keeps its previous setting, or gets (max_message, min_interval) when it has none yet (message 0;
// min_message while cost_pending); the caller passes the worker's own entry so and ignores what
// comes back for it. previous.size() == peers.size().
std::vector<PeerSetting> balance(const std::vector<PeerState>& peers,
                                 const std::vector<PeerSetting>& previous, double step_s,
                                 const BalanceLimits& limits);

// The compute a worker's messages cost per element its peers merge, for
// BalanceLimits::seconds_per_element: `per_tested` seconds of compute per element tested, of
// which the fraction `acceptance` was accepted. A message the receiver rejects costs as
// much as one it merges and buys nothing, so the cost per tested element is divided by the
// acceptance: on Fashion-MNIST the default test rejects about 60% of an MLP's messages, and
// sending them took a few percent of the workers' steps for no gain. The worker's own
// acceptance as a receiver stands in for its peers' (a sender does not see their decisions in
// another process; the workers run the same test on the same kind of states), and the
// messages the window refuses during its warm-up do not count (they say nothing of a
// message's worth: counting them made a K-Means race, whose first cost measurement covers
// those 8 messages, send six times too rarely). The acceptance counts as at least
// kMinAcceptance, so that a peer being filtered out thins the messages without stopping them
// (which would stop the measurement too). acceptance < 0 or NaN: unknown (a GPU worker, or
// nothing judged yet): the cost per tested element. per_tested negative or not finite: 0 (not
// measured).
inline constexpr double kMinAcceptance = 0.1;
double cost_per_useful_element(double per_tested, double acceptance);

// The compute one kind of communication event (a send's copy, a merge) costs per element: the
// element-weighted median over the last kEvents events. A sum over them would not do: on a
// shared machine a single merge of 10 us now and then reads 1 ms of thread CPU time (the
// hypervisor's steal counts as the thread's), and under mpirun such a spike in the first 8
// merges priced K-Means' messages 2-25 times high, so that auto sent every 10-140 steps for
// the whole of a 60-step race instead of every 4-6. Events of more elements weigh more, as in
// a sum. It is known from the third event on: the median of three is the first that one spike
// cannot move, and waiting for more cost a small model its race (K-Means' first 8 messages,
// 16,384 elements, took half of a 60-step race under mpirun, every one of them sent at the
// fast start's interval of a step). Thread-safety: one thread.
class CostMedian {
 public:
  static constexpr int kEvents = 16;
  static constexpr int kMinEvents = 3;
  // Ignores events of elements <= 0 or a time that is negative or not finite.
  void add(double seconds, std::int64_t elements);
  // Seconds per element; negative while fewer than kMinEvents events were added.
  double per_element() const { return size_ >= kMinEvents ? per_element_ : -1.0; }
  int events() const { return size_; }

 private:
  struct Event {
    double per_element = 0;
    std::int64_t elements = 0;
  };
  Event ring_[kEvents];
  int size_ = 0;
  int next_ = 0;
  double per_element_ = -1;
};

// The busy fraction of a link under a setting: (a + 4 m / B) / (k T).
double busy_fraction(const LinkModel& link, const PeerSetting& setting, double step_s);

}  // namespace asgd
