// The load balancer's mathematics (comm/load_balancer.h): the probe's fit, the running link
// estimate, the ideal setting and the controller's decisions, without threads or clocks.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "comm/load_balancer.h"
#include "runtime/error.h"

namespace asgd {
namespace {

constexpr double kRelTol = 1e-9;

LinkModel make_link(double bandwidth, double latency) {
  LinkModel l;
  l.bandwidth_bytes_per_s = bandwidth;
  l.latency_s = latency;
  return l;
}

BalanceLimits test_limits() {
  BalanceLimits l;
  l.max_message = std::int64_t{1} << 22;  // 16 MiB of floats
  return l;
}

// Sizes of a probe's sweep: 1 KiB to 64 MiB.
std::vector<double> sweep_sizes() {
  std::vector<double> sizes;
  for (double b = 1024; b <= 64.0 * 1024 * 1024; b *= 4)
    sizes.push_back(b);
  return sizes;
}

std::vector<double> log_spaced(double from, double to, int count) {
  std::vector<double> out;
  for (int i = 0; i < count; ++i)
    out.push_back(from * std::pow(to / from, static_cast<double>(i) / (count - 1)));
  return out;
}

// The transfer of one message of `setting` over the true link.
TransferSample transfer(const LinkModel& truth, const PeerSetting& setting) {
  const double bytes = 4.0 * static_cast<double>(setting.message);
  return {bytes, truth.transfer_seconds(bytes)};
}

// One decision of the controller for a single peer.
PeerSetting decide(const LinkModel& estimate, std::int64_t backlog, const PeerSetting& previous,
                   double step_s, const BalanceLimits& limits) {
  PeerState p;
  p.link = estimate;
  p.link_known = true;
  p.backlog = backlog;
  return balance({p}, {previous}, step_s, limits)[0];
}

// --- fit_link ---------------------------------------------------------------------------------

TEST(FitLink, RecoversNoiselessPointsExactly) {
  for (const LinkModel truth :
       {make_link(3e9, 25e-6), make_link(1.2e7, 3e-3), make_link(8e10, 0)}) {
    std::vector<TransferSample> points;
    for (double b : sweep_sizes())
      points.push_back({b, truth.transfer_seconds(b)});
    const LinkModel fit = fit_link(points);
    EXPECT_NEAR(fit.bandwidth_bytes_per_s, truth.bandwidth_bytes_per_s,
                kRelTol * truth.bandwidth_bytes_per_s);
    EXPECT_NEAR(fit.latency_s, truth.latency_s, kRelTol * truth.latency_s + 1e-15);
    EXPECT_GE(fit.latency_s, 0.0);
  }
}

TEST(FitLink, NoisyPointsWithinAFewPercent) {
  const LinkModel truth = make_link(3e9, 25e-6);
  std::uniform_real_distribution<double> noise(-0.05, 0.05);
  for (unsigned seed = 1; seed <= 20; ++seed) {
    std::mt19937 rng(seed);
    std::vector<TransferSample> points;
    for (double b : sweep_sizes())
      points.push_back({b, truth.transfer_seconds(b) * (1 + noise(rng))});
    const LinkModel fit = fit_link(points);
    EXPECT_NEAR(fit.bandwidth_bytes_per_s / truth.bandwidth_bytes_per_s, 1.0, 0.05) << seed;
    EXPECT_NEAR(fit.latency_s / truth.latency_s, 1.0, 0.05) << seed;
  }
}

TEST(FitLink, ClampsLatencyAndBandwidth) {
  // Times below a line through the origin: the latency would come out negative.
  std::vector<TransferSample> points;
  for (double b : sweep_sizes())
    points.push_back({b, b / 1e9 * (b < 1e5 ? 0.5 : 1.0)});
  LinkModel fit = fit_link(points);
  EXPECT_EQ(fit.latency_s, 0.0);
  // Between the two slopes the points lie on (relative residuals weigh both halves).
  EXPECT_GT(fit.bandwidth_bytes_per_s, 1e9);
  EXPECT_LT(fit.bandwidth_bytes_per_s, 2e9);

  // The same time for every size, then times that fall with the size: latency-bound.
  for (double slope : {0.0, -1e-12}) {
    points.clear();
    for (double b : sweep_sizes())
      points.push_back({b, 1e-3 + slope * b});
    fit = fit_link(points);
    EXPECT_TRUE(std::isfinite(fit.bandwidth_bytes_per_s));
    EXPECT_GE(fit.bandwidth_bytes_per_s, 1e14);
    EXPECT_GT(fit.latency_s, 0.0);
    EXPECT_LT(fit.latency_s, 1e-3 * 1.01);
  }
}

TEST(FitLink, NeedsTwoDistinctSizes) {
  EXPECT_THROW(fit_link({}), Error);
  EXPECT_THROW(fit_link({{4096, 1e-4}}), Error);
  try {
    fit_link({{4096, 1e-4}, {4096, 2e-4}, {4096, 1.5e-4}});
    ADD_FAILURE() << "no error for one size";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("two distinct sizes"), std::string::npos) << e.message();
  }
  EXPECT_THROW(fit_link({{4096, 1e-4}, {8192, 0.0}}), Error);
  EXPECT_THROW(fit_link({{-1, 1e-4}, {8192, 1e-4}}), Error);
  EXPECT_NO_THROW(fit_link({{0, 1e-5}, {8192, 2e-5}}));
}

// --- LinkEstimator ----------------------------------------------------------------------------

TEST(LinkEstimator, KeepsTheProbesLatencyAndAveragesInLogSpace) {
  LinkEstimator e;
  EXPECT_FALSE(e.valid());
  const LinkModel probe = make_link(1e9, 1e-4);
  e.start_from(probe);
  ASSERT_TRUE(e.valid());
  EXPECT_EQ(e.estimate().bandwidth_bytes_per_s, 1e9);
  EXPECT_EQ(e.estimate().latency_s, 1e-4);

  // The link is twice as fast as probed: within the outlier factor, so averaged.
  const LinkModel truth = make_link(2e9, 1e-4);
  e.add({4e6, truth.transfer_seconds(4e6)});
  EXPECT_NEAR(e.estimate().bandwidth_bytes_per_s, 1e9 * std::pow(2.0, 0.3), 1e9 * kRelTol);
  for (int i = 0; i < 40; ++i)
    e.add({4e6, truth.transfer_seconds(4e6)});
  EXPECT_NEAR(e.estimate().bandwidth_bytes_per_s / 2e9, 1.0, 1e-5);
  EXPECT_EQ(e.estimate().latency_s, 1e-4);
}

TEST(LinkEstimator, WithoutAProbeTheFirstSampleInitialises) {
  LinkEstimator e;
  e.add({1e6, 1e-3});
  ASSERT_TRUE(e.valid());
  EXPECT_EQ(e.estimate().latency_s, 0.0);
  EXPECT_NEAR(e.estimate().bandwidth_bytes_per_s, 1e9, 1e9 * kRelTol);

  // After an ideal probe too, but the probe's latency stays.
  LinkEstimator ideal;
  ideal.start_from(make_link(std::numeric_limits<double>::infinity(), 2e-6));
  ideal.add({1e6, 1e-3 + 2e-6});
  EXPECT_EQ(ideal.estimate().latency_s, 2e-6);
  EXPECT_NEAR(ideal.estimate().bandwidth_bytes_per_s, 1e9, 1e9 * 1e-6);
}

TEST(LinkEstimator, IgnoresEmptyAndNonPositiveSamples) {
  LinkEstimator e;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const TransferSample s : std::vector<TransferSample>{
           {0, 1e-3}, {1e6, 0}, {-1e6, 1e-3}, {1e6, -1e-3}, {nan, 1e-3}, {1e6, nan}})
    e.add(s);
  EXPECT_FALSE(e.valid());
  e.start_from(make_link(1e9, 1e-5));
  e.add({0, 1e-3});
  e.add({1e6, 0});
  EXPECT_EQ(e.estimate().bandwidth_bytes_per_s, 1e9);
}

// A transport that looks for completions every 2 ms times a 16 KB message on a 10 GB/s link
// as about 1 ms, give or take 1 ms: such samples must not drag the estimate down to 16 MB/s
// (under mpirun they did, to 7-57 MB/s on shared memory), but samples that do resolve the
// link still move it, and a link that really slows shows through the resolution.
TEST(LinkEstimator, SamplesAreIntervalsAsWideAsTheirResolution) {
  const LinkModel fast = make_link(1e10, 2e-6);
  LinkEstimator e;
  e.start_from(fast);
  for (int i = 0; i < 50; ++i)
    e.add({16384, 1e-3, 2e-3});  // [0, 2 ms] holds the true 3.6 us: nothing learnt
  EXPECT_EQ(e.estimate().bandwidth_bytes_per_s, 1e10);

  // The same samples without their resolution are believed, after three in a row.
  LinkEstimator naive;
  naive.start_from(fast);
  for (int i = 0; i < 3; ++i)
    naive.add({16384, 1e-3});
  EXPECT_LT(naive.estimate().bandwidth_bytes_per_s, 2e7);

  // The link drops to 10 MB/s: 16 KB now takes 1.64 ms, and 1 MB messages 100 ms, measured
  // with the same 2 ms resolution. The estimate follows to the nearest end of each interval.
  const LinkModel slow = make_link(1e7, 2e-6);
  for (int i = 0; i < 3; ++i)
    e.add({1e6, slow.transfer_seconds(1e6), 2e-3});
  const double after_drop = e.estimate().bandwidth_bytes_per_s;
  EXPECT_GT(after_drop, 1e7);  // the shortest time the interval allows: a little faster
  EXPECT_LT(after_drop, 1.02e7);
  // Once it agrees with the interval, such samples leave it alone.
  e.add({1e6, slow.transfer_seconds(1e6), 2e-3});
  EXPECT_EQ(e.estimate().bandwidth_bytes_per_s, after_drop);

  // A low estimate (a slow probe) is raised by samples whose longest time is still shorter
  // than it expects.
  LinkEstimator low;
  low.start_from(make_link(1e6, 2e-6));  // 16 KB expected to take 16 ms
  double previous = low.estimate().bandwidth_bytes_per_s;
  for (int i = 0; i < 30; ++i) {
    low.add({16384, 1e-3, 2e-3});  // at most 2 ms
    EXPECT_GE(low.estimate().bandwidth_bytes_per_s, previous) << i;
    previous = low.estimate().bandwidth_bytes_per_s;
  }
  // Raised as far as the longest time allows, and no further.
  const double bound = 16384 / (2e-3 - 2e-6);
  EXPECT_NEAR(low.estimate().bandwidth_bytes_per_s, bound, bound * 1e-3);
}

// Under mpirun an 8 KB message completes only when the receiver's thread looks, every 2 ms on
// a full machine: about 1 ms on a 1 GB/s link whose wire takes 8 us. Read as bandwidth that
// was 8 MB/s, and K-Means sent a fourth as often as the link allowed. With the wait declared,
// such samples change nothing, while a link that really slows still shows through it.
TEST(LinkEstimator, TheReceiversWaitToLookIsNotReadAsBandwidth) {
  const LinkModel fast = make_link(1e9, 5e-6);
  LinkEstimator e;
  e.start_from(fast);
  for (int i = 0; i < 50; ++i)
    e.add({8192, 1e-3 + 1e-5 * (i % 7), 1e-4, 2e-3});  // [0, ~1.06 ms] holds the true 13 us
  EXPECT_EQ(e.estimate().bandwidth_bytes_per_s, 1e9);

  // The same samples without the wait are believed, after three in a row.
  LinkEstimator naive;
  naive.start_from(fast);
  for (int i = 0; i < 3; ++i)
    naive.add({8192, 1e-3, 1e-4});
  EXPECT_LT(naive.estimate().bandwidth_bytes_per_s, 1e7);

  // The link drops to 10 MB/s: 400 KB messages now take 41 ms, plus up to 2 ms of waiting.
  // The estimate follows to the shortest time the interval allows, the wait all taken off.
  const LinkModel slow = make_link(1e7, 5e-6);
  const double bytes = 4e5;
  for (int i = 0; i < 3; ++i)
    e.add({bytes, slow.transfer_seconds(bytes) + 1e-3, 1e-4, 2e-3});
  const double shortest = slow.transfer_seconds(bytes) + 1e-3 - 0.5e-4 - 2e-3;
  const double expected = bytes / (shortest - 5e-6);
  EXPECT_NEAR(e.estimate().bandwidth_bytes_per_s, expected, expected * 1e-9);
  EXPECT_LT(e.estimate().bandwidth_bytes_per_s, 1.03e7);
  EXPECT_GT(e.estimate().bandwidth_bytes_per_s, 1e7);
  // A wait of NaN or below 0 is none.
  LinkEstimator odd;
  odd.start_from(fast);
  for (int i = 0; i < 3; ++i)
    odd.add({8192, 1e-3, 0, std::numeric_limits<double>::quiet_NaN()});
  EXPECT_LT(odd.estimate().bandwidth_bytes_per_s, 1e7);
}

// The element-weighted median against a float64 reference that sorts every element's cost
// (each event's cost repeated once per element) on random events, and what it is for: a few
// events hundreds of times dearer than the rest do not move it, where a sum would.
TEST(CostMedian, IsTheElementWeightedMedianOfTheLastEvents) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> cost(1e-9, 1e-8);
  std::uniform_int_distribution<std::int64_t> size(1, 40);
  for (int trial = 0; trial < 50; ++trial) {
    CostMedian m;
    std::vector<std::pair<double, std::int64_t>> events;
    const int n = 1 + trial % 40;
    for (int i = 0; i < n; ++i) {
      const std::int64_t e = size(rng);
      const double per = cost(rng);
      m.add(per * static_cast<double>(e), e);
      events.push_back({per, e});
    }
    std::vector<double> each;  // the last kEvents events, one entry per element
    for (int i = std::max(0, n - CostMedian::kEvents); i < n; ++i)
      each.insert(each.end(), static_cast<std::size_t>(events[static_cast<std::size_t>(i)].second),
                  events[static_cast<std::size_t>(i)].first);
    std::sort(each.begin(), each.end());
    const double reference = each[(each.size() - 1) / 2];  // the lower median
    if (n < CostMedian::kMinEvents)
      EXPECT_LT(m.per_element(), 0) << trial;  // too few events to trust
    else
      EXPECT_NEAR(m.per_element(), reference, reference * 1e-12) << trial;
    EXPECT_EQ(m.events(), std::min(n, CostMedian::kEvents));
  }

  // Merges of 2,048 elements at about 6 ns each, two of them slowed to 1 ms by the machine.
  // Known from the third on, where one spike among the three leaves it among the usual ones.
  CostMedian merges;
  EXPECT_LT(merges.per_element(), 0);  // nothing yet
  for (int i = 0; i < 8; ++i) {
    const double seconds = i == 1 || i == 5 ? 1e-3 : 2048 * 6e-9 * (1 + 0.01 * i);
    merges.add(seconds, 2048);
    if (i + 1 < CostMedian::kMinEvents) {
      EXPECT_LT(merges.per_element(), 0) << i;  // a spike would be half of two events
    } else {
      EXPECT_GT(merges.per_element(), 6e-9) << i;
      EXPECT_LT(merges.per_element(), 6.5e-9) << i;  // the spikes are 80 times dearer
    }
  }

  // Events that say nothing are left out.
  merges.add(-1, 2048);
  merges.add(std::numeric_limits<double>::quiet_NaN(), 2048);
  merges.add(1.0, 0);
  EXPECT_EQ(merges.events(), 8);
}

TEST(LinkEstimator, IgnoresASingleOutlierButFollowsThreeInARow) {
  const LinkModel fast = make_link(1e9, 0);
  const LinkModel slow = make_link(1e8, 0);
  for (const bool down : {true, false}) {
    const LinkModel from = down ? fast : slow;
    const LinkModel to = down ? slow : fast;
    LinkEstimator e;
    e.start_from(from);
    const double b0 = from.bandwidth_bytes_per_s;
    // Lone 10x outliers between normal samples: each moves the estimate by much less than 2x
    // (a plain average would move it 10^0.3 = 1.995x), and the estimate never follows them.
    for (int i = 0; i < 10; ++i) {
      const double before = e.estimate().bandwidth_bytes_per_s;
      e.add({1e6, to.transfer_seconds(1e6)});
      const double moved = e.estimate().bandwidth_bytes_per_s / before;
      EXPECT_LT(std::max(moved, 1 / moved), 1.6) << i;
      const double drift = e.estimate().bandwidth_bytes_per_s / b0;
      EXPECT_LT(std::max(drift, 1 / drift), 2.0) << i;
      for (int j = 0; j < 5; ++j)
        e.add({1e6, from.transfer_seconds(1e6)});
    }
    // Two in a row, then one the other way: still not a change.
    e.add({1e6, to.transfer_seconds(1e6)});
    e.add({1e6, to.transfer_seconds(1e6)});
    e.add({1e6, from.transfer_seconds(1e6) * (down ? 0.1 : 10)});
    e.add({1e6, to.transfer_seconds(1e6)});
    double moved = e.estimate().bandwidth_bytes_per_s / b0;
    EXPECT_LT(std::max(moved, 1 / moved), 4.0);
    for (int j = 0; j < 10; ++j)
      e.add({1e6, from.transfer_seconds(1e6)});
    // Three in a row: followed.
    for (int i = 0; i < 3; ++i)
      e.add({1e6, to.transfer_seconds(1e6)});
    EXPECT_NEAR(e.estimate().bandwidth_bytes_per_s, to.bandwidth_bytes_per_s,
                to.bandwidth_bytes_per_s * kRelTol);
  }
}

// --- ideal_setting ----------------------------------------------------------------------------

TEST(BalanceIdealSetting, IdealLinkGetsTheLargestMessageAtTheSmallestInterval) {
  BalanceLimits limits = test_limits();
  EXPECT_EQ(ideal_setting(LinkModel{}, 1e-3, limits), (PeerSetting{limits.max_message, 1}));
  limits.min_interval = 3;
  EXPECT_EQ(ideal_setting(LinkModel{}, 1e-3, limits), (PeerSetting{limits.max_message, 3}));
}

TEST(BalanceIdealSetting, HandWorkedCases) {
  const BalanceLimits limits = test_limits();
  // Budget rho T = 5 ms: k = 1, m = (5 ms - 0.1 ms) * 1e9 / 4 = 1225000 -> 1196 * 1024.
  EXPECT_EQ(ideal_setting(make_link(1e9, 1e-4), 1e-2, limits), (PeerSetting{1224704, 1}));
  // Latency 12 ms: k = ceil((12 ms + 16 us) / 5 ms) = 3, m = 3 ms * 1e9 / 4 = 750000 -> 732 * 1024.
  EXPECT_EQ(ideal_setting(make_link(1e9, 12e-3), 1e-2, limits), (PeerSetting{749568, 3}));
  // Too slow even for the smallest message at the largest interval.
  EXPECT_EQ(ideal_setting(make_link(1e3, 0), 1e-3, limits),
            (PeerSetting{limits.min_message, limits.max_interval}));
  // A model smaller than the smallest message sends all of itself.
  BalanceLimits tiny = limits;
  tiny.max_message = 1000;
  EXPECT_EQ(ideal_setting(make_link(1e9, 1e-4), 1e-2, tiny), (PeerSetting{1000, 1}));
  EXPECT_THROW(ideal_setting(make_link(1e9, 1e-4), 0, limits), Error);
  EXPECT_THROW(ideal_setting(make_link(0, 1e-4), 1e-3, limits), Error);
  BalanceLimits bad = limits;
  bad.min_interval = 0;
  EXPECT_THROW(ideal_setting(make_link(1e9, 1e-4), 1e-3, bad), Error);
}

// Where sending and merging cost compute, the messages also keep within the compute share:
// on an ideal link with c = 1 ns/element, T = 1 ms and share 0.05, at most 50,000 elements per
// step; a cost that grows tenfold gives a tenth of the volume.
TEST(BalanceIdealSetting, ComputeCostBoundsTheVolumeOnFastLinks) {
  BalanceLimits limits = test_limits();
  limits.compute_share = 0.05;
  limits.seconds_per_element = 1e-9;
  const PeerSetting cheap = ideal_setting(LinkModel{}, 1e-3, limits);
  EXPECT_EQ(cheap, (PeerSetting{49152, 1}));  // 50000 rounded down to 1024s
  limits.seconds_per_element = 1e-8;
  const PeerSetting dear = ideal_setting(LinkModel{}, 1e-3, limits);
  EXPECT_EQ(dear.interval, 1);
  EXPECT_EQ(dear.message, 4096);  // 5000 -> the smallest useful message
  // So dear that even the smallest message needs a longer interval: 4096 * 1e-7 / (0.05 * 1e-3)
  // = 8.2 -> 9 steps.
  limits.seconds_per_element = 1e-7;
  const PeerSetting dearer = ideal_setting(LinkModel{}, 1e-3, limits);
  EXPECT_EQ(dearer, (PeerSetting{4096, 9}));
  // On a slow link the link's bound is the tighter one and the cost changes nothing.
  limits.seconds_per_element = 1e-9;
  BalanceLimits links_only = limits;
  links_only.seconds_per_element = 0;
  EXPECT_EQ(ideal_setting(make_link(1e7, 1e-3), 1e-3, limits),
            ideal_setting(make_link(1e7, 1e-3), 1e-3, links_only));
  limits.seconds_per_element = -1;
  EXPECT_THROW(ideal_setting(LinkModel{}, 1e-3, limits), Error);
}

TEST(BalanceIdealSetting, FasterLinkSendsMoreOrMoreOften) {
  const BalanceLimits limits = test_limits();
  // Bandwidth-bound: the same interval, a tenth of the message.
  PeerSetting fast = ideal_setting(make_link(1e9, 1e-4), 1e-2, limits);
  PeerSetting slow = ideal_setting(make_link(1e8, 1e-4), 1e-2, limits);
  EXPECT_EQ(fast.interval, slow.interval);
  EXPECT_GT(fast.message, 5 * slow.message);
  // Latency-heavy: the slow link sends smaller messages less often.
  fast = ideal_setting(make_link(1e8, 2e-3), 1e-3, limits);
  slow = ideal_setting(make_link(1e7, 2e-3), 1e-3, limits);
  EXPECT_EQ(fast, (PeerSetting{12288, 5}));
  EXPECT_EQ(slow, (PeerSetting{4096, 8}));

  // Everywhere: never a longer interval for the faster link, never a smaller message at the same
  // interval, and a different setting unless both are pinned at a limit.
  for (double latency : {0.0, 1e-5, 1e-3, 1e-2})
    for (double step_s : {1e-4, 1e-3, 1e-2})
      for (double bandwidth : log_spaced(1e5, 1e11, 25)) {
        fast = ideal_setting(make_link(bandwidth, latency), step_s, limits);
        slow = ideal_setting(make_link(bandwidth / 10, latency), step_s, limits);
        SCOPED_TRACE(testing::Message()
                     << "B " << bandwidth << " a " << latency << " T " << step_s);
        EXPECT_LE(fast.interval, slow.interval);
        if (fast.interval == slow.interval) {
          EXPECT_GE(fast.message, slow.message);
        }
        const bool both_capped = fast.message == limits.max_message && fast == slow;
        const bool both_too_slow = slow == fast && fast.interval == limits.max_interval;
        if (!both_capped && !both_too_slow) {
          EXPECT_NE(fast, slow);
        }
      }
}

TEST(BalanceIdealSetting, KeepsTheBusyBoundAndTheLimitsAcrossASweep) {
  std::vector<BalanceLimits> variants(4, test_limits());
  variants[1].rho = 0.2;
  variants[1].min_interval = 2;
  variants[1].max_interval = 50;
  variants[2].min_message = 1000;  // not a multiple of the granularity
  variants[2].max_message = 100000;
  variants[3].max_message = 3000;  // below min_message
  int too_slow = 0, bound = 0;
  for (const BalanceLimits& limits : variants)
    for (double latency : {0.0, 1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2})
      for (double step_s : {1e-4, 1e-3, 1e-2, 1e-1})
        for (double bandwidth : log_spaced(1e5, 1e11, 37)) {
          const LinkModel link = make_link(bandwidth, latency);
          const PeerSetting s = ideal_setting(link, step_s, limits);
          SCOPED_TRACE(testing::Message()
                       << "B " << bandwidth << " a " << latency << " T " << step_s << " rho "
                       << limits.rho << " m " << s.message << " k " << s.interval);
          const std::int64_t smallest = std::min(limits.min_message, limits.max_message);
          ASSERT_GE(s.message, smallest);
          ASSERT_LE(s.message, limits.max_message);
          ASSERT_GE(s.interval, limits.min_interval);
          ASSERT_LE(s.interval, limits.max_interval);
          if (s.message != smallest && s.message != limits.max_message) {
            EXPECT_EQ(s.message % 1024, 0);
          }
          const double busy = busy_fraction(link, s, step_s);
          if (busy_fraction(link, {smallest, limits.max_interval}, step_s) > limits.rho) {
            // The documented exception: too slow for the smallest message at the largest interval.
            EXPECT_EQ(s, (PeerSetting{smallest, limits.max_interval}));
            ++too_slow;
            continue;
          }
          ++bound;
          EXPECT_LE(busy, limits.rho * (1 + kRelTol));
          // The smallest interval: one step less does not fit the smallest message.
          if (s.interval > limits.min_interval) {
            EXPECT_GT(busy_fraction(link, {smallest, s.interval - 1}, step_s),
                      limits.rho * (1 - kRelTol));
          }
          // The largest message: one more granule would break the bound.
          if (s.message < limits.max_message) {
            EXPECT_GT(busy_fraction(link, {s.message + 1024, s.interval}, step_s), limits.rho);
          }
        }
  EXPECT_GT(too_slow, 0);  // the sweep reaches both regimes
  EXPECT_GT(bound, too_slow);
}

// --- balance ----------------------------------------------------------------------------------

// Steps estimator and controller as the balancer thread does, one transfer per decision over
// the true link; returns the settings decided.
std::vector<PeerSetting> simulate(LinkEstimator& estimator, PeerSetting& setting,
                                  const LinkModel& truth, int decisions, double step_s,
                                  const BalanceLimits& limits) {
  std::vector<PeerSetting> out;
  for (int i = 0; i < decisions; ++i) {
    estimator.add(transfer(truth, setting));
    setting = decide(estimator.estimate(), 0, setting, step_s, limits);
    out.push_back(setting);
  }
  return out;
}

TEST(Balance, FollowsABandwidthDropWithinThreeDecisionsAndRecovers) {
  const BalanceLimits limits = test_limits();
  struct Case {
    double bandwidth, latency, step_s;
  };
  // Bandwidth-bound (the message shrinks) and latency-heavy (the interval grows too).
  for (const Case c : {Case{1e9, 1e-4, 1e-2}, Case{1e8, 2e-3, 1e-3}}) {
    SCOPED_TRACE(testing::Message() << "B " << c.bandwidth << " a " << c.latency);
    const LinkModel fast = make_link(c.bandwidth, c.latency);
    const LinkModel slow = make_link(c.bandwidth / 10, c.latency);
    const PeerSetting fast_setting = ideal_setting(fast, c.step_s, limits);
    const PeerSetting slow_setting = ideal_setting(slow, c.step_s, limits);
    ASSERT_NE(fast_setting, slow_setting);
    LinkEstimator estimator;
    estimator.start_from(fast);
    PeerSetting setting = fast_setting;
    for (const PeerSetting& s : simulate(estimator, setting, fast, 10, c.step_s, limits))
      EXPECT_EQ(s, fast_setting);

    std::vector<PeerSetting> after = simulate(estimator, setting, slow, 3, c.step_s, limits);
    EXPECT_EQ(after.back(), slow_setting);
    EXPECT_LE(busy_fraction(slow, after.back(), c.step_s), limits.rho * (1 + kRelTol));
    for (const PeerSetting& s : simulate(estimator, setting, slow, 10, c.step_s, limits))
      EXPECT_EQ(s, slow_setting);

    after = simulate(estimator, setting, fast, 4, c.step_s, limits);
    EXPECT_EQ(after.back(), fast_setting);
    for (const PeerSetting& s : simulate(estimator, setting, fast, 10, c.step_s, limits))
      EXPECT_EQ(s, fast_setting);
  }
}

TEST(Balance, BacklogAboveTheBoundThinsTheSends) {
  const BalanceLimits limits = test_limits();  // max_backlog 2
  const LinkModel link = make_link(1e9, 12e-3);
  const double step_s = 1e-2;
  const PeerSetting ideal = ideal_setting(link, step_s, limits);
  ASSERT_EQ(ideal, (PeerSetting{749568, 3}));
  EXPECT_EQ(decide(link, 0, ideal, step_s, limits), ideal);
  EXPECT_EQ(decide(link, 2, ideal, step_s, limits), ideal);
  EXPECT_EQ(decide(link, 3, ideal, step_s, limits), (PeerSetting{749568, 5}));  // ceil(4.5)
  EXPECT_EQ(decide(link, 5, ideal, step_s, limits), (PeerSetting{749568, 8}));  // ceil(7.5)
  EXPECT_EQ(decide(link, 1000000, ideal, step_s, limits),
            (PeerSetting{749568, limits.max_interval}));
  // Followed even when the growth is within the hysteresis.
  BalanceLimits loose = limits;
  loose.max_backlog = 8;
  EXPECT_EQ(decide(link, 9, ideal, step_s, loose), (PeerSetting{749568, 4}));  // ceil(3.375)
  // Once the backlog drains, the sends come back.
  EXPECT_EQ(decide(link, 0, PeerSetting{749568, 8}, step_s, limits), ideal);
}

TEST(Balance, CongestionLowersTheBusyCapWhichCalmRaisesBack) {
  BalanceLimits l = test_limits();
  l.rho = 0.9;
  l.hysteresis = 0.25;
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_DOUBLE_EQ(next_busy_cap(inf, true, l), 0.72);
  EXPECT_DOUBLE_EQ(next_busy_cap(0.72, true, l), 0.576);
  EXPECT_DOUBLE_EQ(next_busy_cap(0.72, false, l), 0.729);
  EXPECT_EQ(next_busy_cap(0.895, false, l), inf);  // back at rho: lifted
  EXPECT_EQ(next_busy_cap(inf, false, l), inf);
  EXPECT_GT(next_busy_cap(1e-9, true, l), 0);  // never closes the link
}

// A link that congests above 80% busy (jitter), run at rho 0.9 with a backlog bound of 1: the
// backlog alone made k flip every decision (thinned, then taken back at once); with the cap
// the controller settles below the congestion point and tries higher only now and then.
TEST(Balance, ALinkThatCongestsBelowRhoSettlesInsteadOfFlipping) {
  BalanceLimits l = test_limits();
  l.rho = 0.9;
  l.max_backlog = 1;
  const LinkModel link = make_link(1e8, 0);
  const double step_s = 1e-3;
  auto run = [&](bool with_cap) {
    PeerState p;
    p.link = link;
    p.link_known = true;
    PeerSetting setting = ideal_setting(link, step_s, l);
    int changes = 0, congested = 0;
    for (int i = 0; i < 200; ++i) {
      p.backlog = busy_fraction(link, setting, step_s) > 0.8 ? 2 : 0;
      congested += p.backlog > l.max_backlog;
      const PeerSetting next = balance({p}, {setting}, step_s, l)[0];
      changes += next != setting;
      if (with_cap) p.busy_cap = next_busy_cap(p.busy_cap, p.backlog > l.max_backlog, l);
      setting = next;
    }
    return std::make_pair(changes, congested);
  };
  const auto [flips, congested_before] = run(false);
  EXPECT_GE(flips, 150);  // the behaviour this guards against
  const auto [changes, congested] = run(true);
  SCOPED_TRACE(testing::Message() << changes << " changes, " << congested << " congested");
  EXPECT_LE(changes, 40);
  EXPECT_LE(congested, 20);
  EXPECT_LT(congested, congested_before / 4);
}

// The compute bound is followed like the link's: a setting that costs more than the share
// (the cost per element was measured higher) is cut at once, not kept by the hysteresis; one
// within the hysteresis of the share stays; and a cheaper cost lets the volume grow again.
TEST(Balance, FollowsTheComputeShareAtOnce) {
  BalanceLimits limits = test_limits();
  limits.compute_share = 0.05;
  limits.seconds_per_element = 1e-9;
  const double step_s = 1e-3;
  const LinkModel ideal;
  const PeerSetting cheap = ideal_setting(ideal, step_s, limits);
  ASSERT_EQ(cheap, (PeerSetting{49152, 1}));
  // Whole state every step (as before the first cost reading): 10x the share.
  const PeerSetting whole{limits.max_message, 1};
  ASSERT_GT(limits.max_message, 10 * cheap.message);
  EXPECT_EQ(decide(ideal, 0, whole, step_s, limits), cheap);
  // The cost per element doubles: the volume halves at the next decision.
  limits.seconds_per_element = 2e-9;
  EXPECT_EQ(decide(ideal, 0, cheap, step_s, limits), (PeerSetting{24576, 1}));
  // A 5% rise (inside the hysteresis) keeps the setting.
  limits.seconds_per_element = 1.05e-9;
  EXPECT_EQ(decide(ideal, 0, cheap, step_s, limits), cheap);
  // Cheaper again: more per message.
  limits.seconds_per_element = 0.5e-9;
  EXPECT_EQ(decide(ideal, 0, cheap, step_s, limits), (PeerSetting{99328, 1}));
}

// Before the compute cost per element has been measured, every link (fast, slow, unknown)
// sends the smallest useful message; once it is known, the next decision grows a fast link's
// messages to what the share allows, and a slow link keeps what its bandwidth allows.
TEST(Balance, SlowStartUntilTheComputeCostIsMeasured) {
  BalanceLimits limits = test_limits();
  limits.compute_share = 0.05;
  limits.cost_pending = true;
  const double step_s = 1e-3;
  const LinkModel ideal, slow = make_link(1e7, 1e-3);
  EXPECT_EQ(ideal_setting(ideal, step_s, limits), (PeerSetting{limits.min_message, 1}));
  EXPECT_EQ(ideal_setting(make_link(1e9, 1e-5), step_s, limits),
            (PeerSetting{limits.min_message, 1}));
  // The slow link's own bound is tighter than the slow start: unchanged by it.
  BalanceLimits measured = limits;
  measured.cost_pending = false;
  measured.seconds_per_element = 1e-9;
  EXPECT_EQ(ideal_setting(slow, step_s, limits), ideal_setting(slow, step_s, measured));
  std::vector<PeerState> peers(3);
  peers[1].link = ideal;
  peers[1].link_known = true;  // peers[2]: no estimate yet
  const std::vector<PeerSetting> start = balance(peers, {{0, 1}, {0, 1}, {0, 1}}, step_s, limits);
  EXPECT_EQ(start[1], (PeerSetting{limits.min_message, 1}));
  EXPECT_EQ(start[2], (PeerSetting{limits.min_message, 1}));
  // Measured: 1 ns/element, share 5% of 1 ms -> 50,000 elements, rounded down to 1024s.
  EXPECT_EQ(decide(ideal, 0, start[1], step_s, measured), (PeerSetting{49152, 1}));
  // A larger previous setting is outside the slow start's limits and is replaced at once.
  EXPECT_EQ(decide(ideal, 0, PeerSetting{limits.max_message, 1}, step_s, limits),
            (PeerSetting{limits.min_message, 1}));
}

TEST(Balance, KeepsSmallChangesAndFollowsLargeOnes) {
  const BalanceLimits limits = test_limits();
  const double step_s = 1e-2;
  const LinkModel link = make_link(1e9, 1e-4);
  const PeerSetting ideal = ideal_setting(link, step_s, limits);
  // 10% either way: kept (busy at most 1.1 rho).
  EXPECT_EQ(decide(make_link(1.1e9, 1e-4), 0, ideal, step_s, limits), ideal);
  EXPECT_EQ(decide(make_link(0.9e9, 1e-4), 0, ideal, step_s, limits), ideal);
  // 2x faster: a much larger message is worth it.
  const LinkModel faster = make_link(2e9, 1e-4);
  EXPECT_EQ(decide(faster, 0, ideal, step_s, limits), ideal_setting(faster, step_s, limits));
  // 30% slower: the previous setting would be 1.4x over the bound, followed at once.
  const LinkModel slower = make_link(0.7e9, 1e-4);
  EXPECT_GT(busy_fraction(slower, ideal, step_s), limits.rho * (1 + limits.hysteresis));
  EXPECT_EQ(decide(slower, 0, ideal, step_s, limits), ideal_setting(slower, step_s, limits));
  // A previous setting outside the limits is replaced.
  EXPECT_EQ(decide(link, 0, PeerSetting{ideal.message, 0}, step_s, limits), ideal);
  EXPECT_EQ(decide(link, 0, PeerSetting{limits.max_message * 2, 1}, step_s, limits), ideal);
}

TEST(Balance, UnknownLinksKeepTheirSettingOrStartAtTheIdealOne) {
  const BalanceLimits limits = test_limits();
  std::vector<PeerState> peers(3);
  peers[2].link = make_link(1e9, 1e-4);
  peers[2].link_known = true;
  const std::vector<PeerSetting> previous = {{0, 1}, {8192, 7}, {0, 1}};
  const std::vector<PeerSetting> next = balance(peers, previous, 1e-2, limits);
  ASSERT_EQ(next.size(), 3u);
  EXPECT_EQ(next[0], (PeerSetting{limits.max_message, limits.min_interval}));
  EXPECT_EQ(next[1], (PeerSetting{8192, 7}));
  EXPECT_EQ(next[2], ideal_setting(peers[2].link, 1e-2, limits));
  EXPECT_THROW(balance(peers, {{0, 1}}, 1e-2, limits), Error);
  EXPECT_TRUE(balance({}, {}, 1e-2, limits).empty());
}

TEST(Balance, DoesNotOscillateUnderNoisyEstimates) {
  const BalanceLimits limits = test_limits();
  struct Case {
    double bandwidth, latency, step_s;
  };
  std::vector<Case> cases;
  for (double bandwidth : log_spaced(1e6, 1e10, 13))
    for (double latency : {0.0, 1e-4, 2e-3})
      cases.push_back({bandwidth, latency, 1e-3});
  // Where the smallest message needs exactly 5 steps: the estimate wanders across the boundary
  // between k = 5 and k = 6 all the time.
  const double boundary = 16384 / (5 * 0.5 * 1e-3 - 2e-3);
  cases.push_back({boundary, 2e-3, 1e-3});
  std::uniform_real_distribution<double> noise(-0.2, 0.2);
  for (std::size_t n = 0; n < cases.size(); ++n) {
    const Case& c = cases[n];
    SCOPED_TRACE(testing::Message() << "B " << c.bandwidth << " a " << c.latency);
    std::mt19937 rng(static_cast<unsigned>(n + 1));
    LinkEstimator estimator;
    estimator.start_from(make_link(c.bandwidth, c.latency));
    PeerSetting setting = ideal_setting(estimator.estimate(), c.step_s, limits);
    int changes = 0, ideal_changes = 0;
    PeerSetting last_ideal = setting;
    for (int decision = 0; decision < 200; ++decision) {
      const LinkModel truth = make_link(c.bandwidth * (1 + noise(rng)), c.latency);
      estimator.add(transfer(truth, setting));
      const PeerSetting next = decide(estimator.estimate(), 0, setting, c.step_s, limits);
      if (decision >= 5 && next != setting) ++changes;
      const PeerSetting ideal = ideal_setting(estimator.estimate(), c.step_s, limits);
      if (ideal != last_ideal) ++ideal_changes;
      last_ideal = ideal;
      setting = next;
      EXPECT_LE(busy_fraction(make_link(c.bandwidth, c.latency), setting, c.step_s),
                limits.rho * (1 + limits.hysteresis) * 1.2);
    }
    EXPECT_LE(changes, 2);
    // The boundary case does exercise the hysteresis: the ideal setting flips many times.
    if (n + 1 == cases.size()) {
      EXPECT_GT(ideal_changes, 20);
    }
  }
}

TEST(Balance, RespectsTheLimitsAcrossASweep) {
  BalanceLimits limits = test_limits();
  limits.min_interval = 2;
  limits.max_interval = 200;
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> backlog(0, 12);
  for (double latency : {0.0, 1e-5, 1e-4, 1e-3, 1e-2})
    for (double step_s : {1e-4, 1e-3, 1e-2}) {
      PeerSetting setting{0, 1};
      for (double bandwidth : log_spaced(1e5, 1e11, 49)) {
        setting = decide(make_link(bandwidth, latency), backlog(rng), setting, step_s, limits);
        EXPECT_GE(setting.message, limits.min_message);
        EXPECT_LE(setting.message, limits.max_message);
        EXPECT_GE(setting.interval, limits.min_interval);
        EXPECT_LE(setting.interval, limits.max_interval);
      }
    }
}

// The compute share buys merged elements: rejected ones cost the same and count for nothing.
TEST(CostPerUsefulElement, DividesByTheAcceptanceRate) {
  // 2 ns per element tested.
  EXPECT_DOUBLE_EQ(cost_per_useful_element(2e-9, 1.0), 2e-9);
  EXPECT_DOUBLE_EQ(cost_per_useful_element(2e-9, 0.4), 5e-9);   // 40% accepted
  EXPECT_DOUBLE_EQ(cost_per_useful_element(2e-9, -1.0), 2e-9);  // unknown
  EXPECT_DOUBLE_EQ(cost_per_useful_element(2e-9, std::nan("")), 2e-9);
  // Acceptance counts as at least kMinAcceptance: a filtered-out peer thins the messages
  // tenfold, it does not stop them.
  EXPECT_DOUBLE_EQ(cost_per_useful_element(2e-9, 0.0), 2e-9 / kMinAcceptance);
  EXPECT_DOUBLE_EQ(cost_per_useful_element(2e-9, 0.05), 2e-9 / kMinAcceptance);
  // Above 1 (counters read at slightly different moments) is all accepted.
  EXPECT_DOUBLE_EQ(cost_per_useful_element(2e-9, 1.0001), 2e-9);
  // No valid cost: unknown (0).
  EXPECT_EQ(cost_per_useful_element(-1e-9, 1.0), 0.0);
  EXPECT_EQ(cost_per_useful_element(std::nan(""), 1.0), 0.0);
  EXPECT_EQ(cost_per_useful_element(std::numeric_limits<double>::infinity(), 1.0), 0.0);
}

// Fewer accepted elements mean a dearer element, hence rarer or smaller messages under the same
// compute share: the controller sends a fifth as much to a peer when a fifth of its elements
// are accepted.
TEST(CostPerUsefulElement, ThinsTheMessagesUnderTheComputeShare) {
  BalanceLimits limits = test_limits();
  limits.compute_share = 0.02;
  const LinkModel fast = make_link(1e10, 1e-6);
  limits.seconds_per_element = cost_per_useful_element(1e-9, 1.0);
  const PeerSetting all = ideal_setting(fast, 1e-3, limits);
  limits.seconds_per_element = cost_per_useful_element(1e-9, 0.2);
  const PeerSetting fifth = ideal_setting(fast, 1e-3, limits);
  const double per_step_all = static_cast<double>(all.message) / static_cast<double>(all.interval);
  const double per_step_fifth =
      static_cast<double>(fifth.message) / static_cast<double>(fifth.interval);
  EXPECT_NEAR(per_step_fifth / per_step_all, 0.2, 0.02);
}

}  // namespace
}  // namespace asgd
