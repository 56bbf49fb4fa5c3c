#include "comm/load_balancer.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "runtime/error.h"

namespace asgd {
namespace {
// A link congested again and again keeps at least this busy bound (its messages still go).
constexpr double kMinBusyCap = 1e-3;

constexpr double kBytesPerElement = 4.0;  // float32 payload
// Messages are whole multiples of this many elements (4 KiB): an estimate that moves a little
// leaves m where it was, and a message is whole pages of the staging buffers.
constexpr std::int64_t kMessageGranularity = 1024;
// The fastest link a fit or an estimate reports (1 PB/s): a sweep whose time does not grow
// with the size is latency-bound, and a finite bandwidth keeps the log-space average finite.
constexpr double kMaxBandwidth = 1e15;
// A transfer's time net of the latency counts as at least this fraction of its time, so a
// latency estimate slightly above a short transfer's time cannot make its bandwidth infinite.
constexpr double kMinNetFraction = 1e-3;

void check_limits(const BalanceLimits& l) {
  ASGD_CHECK(l.rho > 0 && l.rho <= 1, "load balancer: rho {} is not in (0, 1]", l.rho);
  ASGD_CHECK(l.min_message >= 1 && l.max_message >= 1,
             "load balancer: message limits [{}, {}] must be >= 1 element", l.min_message,
             l.max_message);
  ASGD_CHECK(l.min_interval >= 1 && l.max_interval >= l.min_interval,
             "load balancer: interval limits [{}, {}] are not 1 <= min <= max", l.min_interval,
             l.max_interval);
  ASGD_CHECK(l.max_backlog >= 1, "load balancer: max_backlog {} is not >= 1", l.max_backlog);
  ASGD_CHECK(l.hysteresis >= 0, "load balancer: hysteresis {} is negative", l.hysteresis);
  ASGD_CHECK(l.seconds_per_element >= 0 && std::isfinite(l.seconds_per_element) &&
                 l.compute_share > 0 && l.compute_share <= 1,
             "load balancer: compute cost {} s/element and share {} are not >= 0 and in (0, 1]",
             l.seconds_per_element, l.compute_share);
}

void check_link(const LinkModel& link) {
  ASGD_CHECK(link.latency_s >= 0 && std::isfinite(link.latency_s),
             "load balancer: link latency {} s is not finite and >= 0", link.latency_s);
  ASGD_CHECK(link.bandwidth_bytes_per_s > 0, "load balancer: link bandwidth {} bytes/s is not > 0",
             link.bandwidth_bytes_per_s);
}

void check_step(double step_s) {
  ASGD_CHECK(step_s > 0 && std::isfinite(step_s), "load balancer: step time {} s is not > 0",
             step_s);
}

// The smallest message worth sending; a model smaller than min_message sends all of itself.
std::int64_t smallest_message(const BalanceLimits& l) {
  return std::min(l.min_message, l.max_message);
}

// The largest message the limits allow now.
std::int64_t largest_message(const BalanceLimits& l) {
  return l.cost_pending ? smallest_message(l) : l.max_message;
}

bool within_limits(const PeerSetting& s, const BalanceLimits& l) {
  return s.message >= smallest_message(l) && s.message <= largest_message(l) &&
         s.interval >= l.min_interval && s.interval <= l.max_interval;
}

double relative_change(std::int64_t from, std::int64_t to) {
  return std::abs(static_cast<double>(to - from)) / static_cast<double>(from);
}

PeerSetting decide(const PeerState& peer, const PeerSetting& previous, double step_s,
                   const BalanceLimits& limits) {
  if (!peer.link_known) {
    if (previous.message == 0) return {largest_message(limits), limits.min_interval};
    return previous;
  }
  BalanceLimits l = limits;
  l.rho = std::min(limits.rho, peer.busy_cap);
  PeerSetting target = ideal_setting(peer.link, step_s, l);
  const bool congested = peer.backlog > l.max_backlog;
  if (congested) {
    // The link does not keep up with the sends: thin them out by the backlog's excess factor.
    const double grown = std::ceil(static_cast<double>(target.interval) *
                                   static_cast<double>(peer.backlog) / l.max_backlog);
    target.interval = grown >= static_cast<double>(l.max_interval)
                          ? l.max_interval
                          : static_cast<std::int64_t>(grown);
  }
  if (target == previous || !within_limits(previous, l)) return target;
  // The link slowed enough that the previous setting overloads it: follow at once.
  if (busy_fraction(peer.link, previous, step_s) > l.rho * (1 + l.hysteresis)) return target;
  // Likewise when its messages cost the worker more compute than its share (the cost per
  // element was measured higher, or the steps got shorter).
  if (l.seconds_per_element > 0 && static_cast<double>(previous.message) * l.seconds_per_element /
                                           (static_cast<double>(previous.interval) * step_s) >
                                       l.compute_share * (1 + l.hysteresis))
    return target;
  if (congested && target.interval > previous.interval) return target;
  const double dk = relative_change(previous.interval, target.interval);
  const double dm = relative_change(previous.message, target.message);
  // A change worth making sends noticeably more often, or noticeably more per message at no
  // larger interval. A worse target is not followed while the previous setting stays within
  // the hysteresis of the busy bound (checked above): an estimate that wanders across the
  // boundary between two intervals would otherwise flip k (by 1/k, large for small k) each way.
  const bool more_often = target.interval < previous.interval && dk > l.hysteresis;
  const bool more_per_message = target.interval <= previous.interval &&
                                target.message > previous.message && dm > l.hysteresis;
  return more_often || more_per_message ? target : previous;
}

}  // namespace

LinkModel fit_link(const std::vector<TransferSample>& points) {
  double smallest = std::numeric_limits<double>::infinity();
  double largest = -smallest;
  for (const TransferSample& p : points) {
    ASGD_CHECK(std::isfinite(p.bytes) && p.bytes >= 0,
               "fit_link: a point of {} bytes (sizes are finite and >= 0)", p.bytes);
    ASGD_CHECK(std::isfinite(p.seconds) && p.seconds > 0, "fit_link: a point of {} bytes took {} s",
               p.bytes, p.seconds);
    smallest = std::min(smallest, p.bytes);
    largest = std::max(largest, p.bytes);
  }
  if (points.empty()) ASGD_THROW("fit_link: no points (needs at least two distinct sizes)");
  if (largest == smallest)
    ASGD_THROW(
        "fit_link: all {} point(s) are of {} bytes; separating latency from bandwidth needs at "
        "least two distinct sizes",
        points.size(), smallest);

  // Weights 1/t^2 minimise the relative residuals: a sweep's times span orders of magnitude,
  // and unweighted the largest sizes would decide the latency too. Centred sums keep the
  // 2x2 system well conditioned when the sizes are large.
  double w_sum = 0, x_mean = 0, t_mean = 0;
  for (const TransferSample& p : points) {
    const double w = 1 / (p.seconds * p.seconds);
    w_sum += w;
    x_mean += w * p.bytes;
    t_mean += w * p.seconds;
  }
  x_mean /= w_sum;
  t_mean /= w_sum;
  double sxx = 0, sxt = 0;
  for (const TransferSample& p : points) {
    const double w = 1 / (p.seconds * p.seconds);
    sxx += w * (p.bytes - x_mean) * (p.bytes - x_mean);
    sxt += w * (p.bytes - x_mean) * (p.seconds - t_mean);
  }
  constexpr double kMinSlope = 1 / kMaxBandwidth;  // seconds per byte
  double slope = sxt / sxx;
  double latency = t_mean - slope * x_mean;
  if (!(slope >= kMinSlope)) {
    slope = kMinSlope;
    latency = t_mean - slope * x_mean;
  }
  if (latency < 0) {
    // The best fit through the origin.
    double sxx0 = 0, sxt0 = 0;
    for (const TransferSample& p : points) {
      const double w = 1 / (p.seconds * p.seconds);
      sxx0 += w * p.bytes * p.bytes;
      sxt0 += w * p.bytes * p.seconds;
    }
    latency = 0;
    slope = std::max(sxt0 / sxx0, kMinSlope);
  }
  LinkModel link;
  link.latency_s = latency;
  link.bandwidth_bytes_per_s = 1 / slope;
  return link;
}

LinkEstimator::LinkEstimator(Options options) : options_(options) {
  ASGD_CHECK(options_.weight > 0 && options_.weight <= 1,
             "LinkEstimator: weight {} is not in (0, 1]", options_.weight);
  ASGD_CHECK(options_.outlier_factor > 1, "LinkEstimator: outlier_factor {} is not > 1",
             options_.outlier_factor);
  ASGD_CHECK(options_.outliers_to_follow >= 1, "LinkEstimator: outliers_to_follow {} is not >= 1",
             options_.outliers_to_follow);
}

void LinkEstimator::start_from(const LinkModel& probe) {
  check_link(probe);
  model_ = probe;
  valid_ = true;
  suspect_run_ = 0;
}

void LinkEstimator::add(const TransferSample& sample) {
  if (!(sample.bytes > 0 && sample.seconds > 0) || !std::isfinite(sample.bytes) ||
      !std::isfinite(sample.seconds))
    return;
  if (!valid_) {
    model_.latency_s = 0;
    valid_ = true;
  }
  auto bandwidth_for = [&](double seconds) {
    const double net = std::max(seconds - model_.latency_s, kMinNetFraction * seconds);
    return std::min(sample.bytes / net, kMaxBandwidth);
  };
  double& bandwidth = model_.bandwidth_bytes_per_s;
  if (!std::isfinite(bandwidth)) {
    // Started from nothing, or from a probe that found the link ideal.
    bandwidth = bandwidth_for(sample.seconds);
    suspect_run_ = 0;
    return;
  }
  double seconds = sample.seconds;
  const double resolution =
      sample.resolution_s > 0 && std::isfinite(sample.resolution_s) ? sample.resolution_s : 0.0;
  const double wait = sample.receiver_wait_s > 0 && std::isfinite(sample.receiver_wait_s)
                          ? sample.receiver_wait_s
                          : 0.0;
  if (resolution > 0 || wait > 0) {
    const double shortest = std::max(sample.seconds - 0.5 * resolution - wait, 0.0);
    const double longest = sample.seconds + 0.5 * resolution;
    const double expected = model_.transfer_seconds(sample.bytes);
    if (expected >= shortest && expected <= longest) {
      suspect_run_ = 0;  // as far as this sample can tell, the estimate is right
      return;
    }
    // The link is at least as slow as the shortest time allows, or at least as fast as the
    // longest does: the nearest end is all the sample is sure of.
    seconds = expected < shortest ? shortest : longest;
  }
  const double measured = bandwidth_for(seconds);
  const double log_ratio = std::log(measured / bandwidth);
  const double log_factor = std::log(options_.outlier_factor);
  if (std::abs(log_ratio) <= log_factor) {
    suspect_run_ = 0;
    bandwidth *= std::exp(options_.weight * log_ratio);
    return;
  }
  const int direction = log_ratio > 0 ? 1 : -1;
  suspect_run_ = suspect_run_ * direction > 0 ? suspect_run_ + direction : direction;
  if (std::abs(suspect_run_) >= options_.outliers_to_follow) {
    // Several in a row the same way: the link changed. Start again from where it is now.
    bandwidth = measured;
    suspect_run_ = 0;
    return;
  }
  // A lone suspect counts as if it were just inside the outlier factor: it moves the estimate
  // no more than the most distant believable sample would.
  bandwidth *= std::exp(options_.weight * direction * log_factor);
}

double next_busy_cap(double cap, bool congested, const BalanceLimits& limits) {
  check_limits(limits);
  const double in_force = std::min(cap, limits.rho);
  if (congested) return std::max(in_force / (1 + limits.hysteresis), kMinBusyCap);
  const double raised = in_force + kBusyCapRecovery * limits.rho;
  return raised >= limits.rho ? std::numeric_limits<double>::infinity() : raised;
}

double cost_per_useful_element(double per_tested, double acceptance) {
  if (!(per_tested >= 0) || !std::isfinite(per_tested)) return 0.0;
  if (!(acceptance >= 0)) return per_tested;
  return per_tested / std::clamp(acceptance, kMinAcceptance, 1.0);
}

void CostMedian::add(double seconds, std::int64_t elements) {
  if (elements <= 0 || !(seconds >= 0) || !std::isfinite(seconds)) return;
  ring_[next_] = {seconds / static_cast<double>(elements), elements};
  next_ = (next_ + 1) % kEvents;
  size_ = std::min(size_ + 1, kEvents);
  Event sorted[kEvents];
  std::copy(ring_, ring_ + size_, sorted);
  std::sort(sorted, sorted + size_,
            [](const Event& a, const Event& b) { return a.per_element < b.per_element; });
  std::int64_t total = 0;
  for (int i = 0; i < size_; ++i)
    total += sorted[i].elements;
  // The lowest cost at which the events up to it hold at least half of the elements.
  std::int64_t below = 0;
  for (int i = 0; i < size_; ++i) {
    below += sorted[i].elements;
    if (2 * below >= total) {
      per_element_ = sorted[i].per_element;
      return;
    }
  }
}

double busy_fraction(const LinkModel& link, const PeerSetting& setting, double step_s) {
  check_step(step_s);
  ASGD_CHECK(setting.interval >= 1, "busy_fraction: interval {} is not >= 1", setting.interval);
  return link.transfer_seconds(kBytesPerElement * static_cast<double>(setting.message)) /
         (static_cast<double>(setting.interval) * step_s);
}

PeerSetting ideal_setting(const LinkModel& link, double step_s, const BalanceLimits& limits) {
  check_link(link);
  check_step(step_s);
  check_limits(limits);
  const std::int64_t smallest = smallest_message(limits);
  const double bandwidth = link.bandwidth_bytes_per_s;
  // The interval at which the smallest message fills the budget: (a + 4 m / B) / (k T) = rho,
  // and, where sending and merging cost compute, m c / (k T) = compute_share.
  const double cost = limits.seconds_per_element;
  double needed = link.transfer_seconds(kBytesPerElement * static_cast<double>(smallest)) /
                  (limits.rho * step_s);
  if (cost > 0)
    needed =
        std::max(needed, static_cast<double>(smallest) * cost / (limits.compute_share * step_s));
  if (!(needed <= static_cast<double>(limits.max_interval))) return {smallest, limits.max_interval};
  const std::int64_t interval =
      std::max(limits.min_interval, static_cast<std::int64_t>(std::ceil(needed)));
  // The largest message in that interval's budgets.
  double fits = std::numeric_limits<double>::infinity();
  if (!std::isinf(bandwidth))
    fits = (limits.rho * static_cast<double>(interval) * step_s - link.latency_s) * bandwidth /
           kBytesPerElement;
  if (cost > 0)
    fits = std::min(fits, limits.compute_share * static_cast<double>(interval) * step_s / cost);
  const std::int64_t largest = largest_message(limits);
  std::int64_t message = largest;
  if (fits < static_cast<double>(largest)) {
    const auto whole = static_cast<std::int64_t>(std::floor(fits / kMessageGranularity));
    message = std::max(smallest, whole * kMessageGranularity);
  }
  return {message, interval};
}

std::vector<PeerSetting> balance(const std::vector<PeerState>& peers,
                                 const std::vector<PeerSetting>& previous, double step_s,
                                 const BalanceLimits& limits) {
  ASGD_CHECK(previous.size() == peers.size(), "balance: {} previous settings for {} peers",
             previous.size(), peers.size());
  check_step(step_s);
  check_limits(limits);
  std::vector<PeerSetting> next(peers.size());
  for (std::size_t p = 0; p < peers.size(); ++p)
    next[p] = decide(peers[p], previous[p], step_s, limits);
  return next;
}

}  // namespace asgd
