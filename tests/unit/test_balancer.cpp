// The load-balancer thread's plumbing, without clocks: the settings board, the first decision
// published from a probe, and that workers follow the board's per-peer schedule.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "comm/local/local_transport.h"
#include "runtime/balancer.h"
#include "runtime/error.h"

namespace asgd {
namespace {

// A transport with no traffic: the balancer sees only what the test gives it.
class QuietTransport final : public Transport {
 public:
  explicit QuietTransport(int n) : n_(n) {}
  int size() const override { return n_; }
  std::int64_t max_message() const override { return 1 << 20; }
  void post(int, const MessageHeader&, const float*) override {}
  int collect(int, const Message**, int) override { return 0; }
  LinkStats stats(int, int) const override {
    LinkStats s;
    s.posted = backlog;
    return s;
  }
  std::vector<TransferRecord> take_transfers() override { return {}; }

  std::int64_t backlog = 0;  // on every link

 private:
  int n_;
};

// A 10 GB/s link, and two workers joined by it both ways as a probe found them.
LinkModel fast_link() {
  LinkModel fast;
  fast.bandwidth_bytes_per_s = 1e10;
  return fast;
}

std::vector<std::vector<LinkModel>> fast_pair_probe() {
  return std::vector<std::vector<LinkModel>>(2, std::vector<LinkModel>(2, fast_link()));
}

// A balancer that keeps messages within `share` of the compute and may send every step; its
// thread (if any) does not step within a test.
BalancerOptions share_options(std::int64_t max_message, double share) {
  BalancerOptions o;
  o.limits.max_message = max_message;
  o.limits.min_interval = 1;
  o.limits.compute_share = share;
  o.period_s = 3600;
  return o;
}

TEST(PeerBoard, SettingsRoundTripWholeAndIndependently) {
  PeerBoard board(3);
  board.set(0, 1, {(std::int64_t{1} << 39) + 5, 1000});
  board.set(1, 0, {4096, 1});
  board.set(2, 1, {1, (1 << 24) - 1});
  EXPECT_EQ(board.get(0, 1), (PeerSetting{(std::int64_t{1} << 39) + 5, 1000}));
  EXPECT_EQ(board.get(1, 0), (PeerSetting{4096, 1}));
  EXPECT_EQ(board.get(2, 1), (PeerSetting{1, (1 << 24) - 1}));
  EXPECT_EQ(board.get(0, 2), (PeerSetting{0, 1}));  // never set
  EXPECT_THROW(board.set(0, 1, {5, 0}), Error);
  EXPECT_THROW(board.set(0, 1, {std::int64_t{1} << 40, 1}), Error);
  board.set_bandwidth(0, 1, 1e9);
  EXPECT_EQ(board.bandwidth(0, 1), 1e9);
  EXPECT_EQ(board.bandwidth(1, 0), 0.0);
}

TEST(LoadBalancerThread, FirstDecisionFollowsTheProbeAndIsLogged) {
  constexpr int kWorkers = 3;
  QuietTransport transport(kWorkers);
  LinkModel fast, slow;
  fast.bandwidth_bytes_per_s = 1e9;
  fast.latency_s = 50e-6;
  slow.bandwidth_bytes_per_s = 1e7;
  slow.latency_s = 1e-3;
  std::vector<std::vector<LinkModel>> probe(kWorkers, std::vector<LinkModel>(kWorkers, fast));
  probe[0][2] = slow;
  PeerBoard board(kWorkers);
  BalancerOptions o;
  o.limits.max_message = 269322;
  o.limits.min_interval = 1;
  o.period_s = 3600;  // only the constructor's decision happens within the test
  std::vector<BalanceDecision> logged;
  {
    LoadBalancer balancer(
        transport, {0, 1, 2}, board, probe, [](int) { return 2e-3; },
        [&](const BalanceDecision& d) { logged.push_back(d); }, o);
  }
  const PeerSetting to_fast = board.get(0, 1), to_slow = board.get(0, 2);
  EXPECT_EQ(to_fast, ideal_setting(fast, 2e-3, o.limits));
  EXPECT_EQ(to_slow, ideal_setting(slow, 2e-3, o.limits));
  EXPECT_TRUE(to_slow.message < to_fast.message || to_slow.interval > to_fast.interval);
  ASSERT_EQ(logged.size(), static_cast<std::size_t>(kWorkers * (kWorkers - 1)));
  for (const BalanceDecision& d : logged) {
    EXPECT_EQ(d.setting, board.get(d.worker, d.peer));
    EXPECT_LE(d.busy, o.limits.rho * (1 + 1e-9));
  }
  EXPECT_EQ(board.bandwidth(0, 2), 1e7);
}

// With a compute share and no cost measured yet, the first decision sends the smallest useful
// message even on a fast link, and the decision says which cost it assumed (none).
TEST(LoadBalancerThread, FirstDecisionWithAComputeShareStartsSmall) {
  QuietTransport transport(2);
  const std::vector<std::vector<LinkModel>> probe = fast_pair_probe();
  PeerBoard board(2);
  BalancerOptions o = share_options(269322, 0.1);
  o.seconds_per_element = [](int) { return -1.0; };  // not measured yet
  std::vector<BalanceDecision> logged;
  {
    LoadBalancer balancer(
        transport, {0, 1}, board, probe, [](int) { return 1e-3; },
        [&](const BalanceDecision& d) { logged.push_back(d); }, o);
  }
  EXPECT_EQ(board.get(0, 1), (PeerSetting{o.limits.min_message, 1}));
  EXPECT_EQ(board.get(1, 0), (PeerSetting{o.limits.min_message, 1}));
  ASSERT_EQ(logged.size(), 2u);
  EXPECT_EQ(logged[0].seconds_per_element, 0.0);
  // Links only (no compute share): the fast link gets the whole state at once.
  o.seconds_per_element = nullptr;
  PeerBoard links_only(2);
  {
    LoadBalancer balancer(
        transport, {0, 1}, links_only, probe, [](int) { return 1e-3; }, nullptr, o);
  }
  EXPECT_EQ(links_only.get(0, 1), (PeerSetting{o.limits.max_message, 1}));
}

// A cost measured as 0 (a GPU worker's launches return at once) is a measurement, not a cost
// still pending: the fast link gets the whole state every step, as with links only, and the
// decision logs the cost it assumed. NaN counts as unknown, like a negative cost.
TEST(LoadBalancerThread, ACostMeasuredAsZeroIsKnown) {
  QuietTransport transport(2);
  const std::vector<std::vector<LinkModel>> probe = fast_pair_probe();
  BalancerOptions o = share_options(269322, 0.1);
  for (const double cost : {0.0, std::nan("")}) {
    o.seconds_per_element = [cost](int) { return cost; };
    PeerBoard board(2);
    std::vector<BalanceDecision> logged;
    {
      LoadBalancer balancer(
          transport, {0, 1}, board, probe, [](int) { return 1e-3; },
          [&](const BalanceDecision& d) { logged.push_back(d); }, o);
    }
    const std::int64_t expected = cost == 0 ? o.limits.max_message : o.limits.min_message;
    EXPECT_EQ(board.get(0, 1), (PeerSetting{expected, 1})) << cost;
    ASSERT_EQ(logged.size(), 2u);
    EXPECT_EQ(logged[0].seconds_per_element, 0.0);
  }
}

// Before the first steps are timed the controller decides on a guessed step of 1 ms; a worker
// stepping every 0.16 ms then sends six times as often as the link was meant to carry, and
// the backlog that builds says nothing of the link. The first decision on measurements takes
// no congestion from it (the setting is the ideal one, the busy bound stays); the next one,
// with the backlog still there under a measured setting, thins the sends out by its excess.
TEST(LoadBalancerThread, ABacklogBuiltOnGuessesIsNotCongestion) {
  QuietTransport transport(2);
  PeerBoard board(2);
  BalancerOptions o = share_options(2048, 0.02);
  o.seconds_per_element = [](int) { return 7e-9; };
  o.thread = false;
  double step_s = 0;  // not timed yet
  std::vector<BalanceDecision> logged;
  LoadBalancer balancer(
      transport, {0, 1}, board, fast_pair_probe(), [&](int) { return step_s; },
      [&](const BalanceDecision& d) { logged.push_back(d); }, o);
  EXPECT_EQ(board.get(0, 1), (PeerSetting{2048, 1}));  // on the guess of 1 ms a step

  step_s = 1.6e-4;
  transport.backlog = 2 * o.limits.max_backlog;
  BalanceLimits measured = o.limits;
  measured.seconds_per_element = 7e-9;
  const PeerSetting ideal = ideal_setting(fast_link(), step_s, measured);
  ASSERT_EQ(ideal, (PeerSetting{2048, 5}));
  balancer.step_once();
  EXPECT_EQ(board.get(0, 1), ideal);
  EXPECT_EQ(board.get(1, 0), ideal);
  ASSERT_FALSE(logged.empty());
  EXPECT_EQ(logged.back().backlog, transport.backlog);  // logged as seen
  EXPECT_EQ(logged.back().busy_bound, o.limits.rho);

  balancer.step_once();
  EXPECT_EQ(board.get(0, 1), (PeerSetting{2048, 10}));
  // That congestion lowered the link's busy bound, which the next decision keeps to.
  transport.backlog = 0;
  balancer.step_once();
  EXPECT_LT(logged.back().busy_bound, o.limits.rho);
  balancer.check();
}

TEST(LoadBalancerThread, StepOnceNeedsABalancerWithoutItsThread) {
  QuietTransport transport(2);
  PeerBoard board(2);
  BalancerOptions o;
  o.limits.max_message = 5000;
  o.period_s = 3600;
  LoadBalancer balancer(transport, {0, 1}, board, {}, nullptr, nullptr, o);
  EXPECT_THROW(balancer.step_once(), Error);
}

TEST(LoadBalancerThread, EstimatesOnlyLeavesTheSettingsAlone) {
  QuietTransport transport(2);
  PeerBoard board(2);
  board.set(0, 1, {1000, 7});
  board.set(1, 0, {1000, 7});
  BalancerOptions o;
  o.limits.max_message = 5000;
  o.adjust_settings = false;
  o.period_s = 3600;
  LinkModel l;
  l.bandwidth_bytes_per_s = 3e8;
  std::vector<std::vector<LinkModel>> probe(2, std::vector<LinkModel>(2, l));
  { LoadBalancer balancer(transport, {0, 1}, board, probe, nullptr, nullptr, o); }
  EXPECT_EQ(board.get(0, 1), (PeerSetting{1000, 7}));
  EXPECT_EQ(board.bandwidth(0, 1), 3e8);
}

// Probes two workers joined both ways by `link`, with the trainer's sizes for a state of 1 MiB,
// once each, within `budget_s` per size.
std::vector<std::vector<LinkModel>> probe_two(LocalTransport& t, const LinkModel& link,
                                              double budget_s) {
  t.set_link(0, 1, link);
  t.set_link(1, 0, link);
  ProbeLimits limits;
  limits.size_budget_s = budget_s;
  return probe_links(t, 2, {4096, 262144, 1048576}, 1, limits);
}

// A link too slow for the larger sizes is measured on the ones it carries within the budget:
// the first, and one in between that fits the budget (the emulated transfers are timed
// exactly, so the fit is exact).
TEST(ProbeLinks, ASlowLinkIsMeasuredOnTheSizesItCarries) {
  LocalTransport t(2, {1 << 18, 2, false});
  LinkModel slow;
  slow.bandwidth_bytes_per_s = 200e3;  // 4 KiB in 20 ms; 1 MiB would take 5 s
  const auto probe = probe_two(t, slow, 0.1);
  for (const LinkModel& l : {probe[0][1], probe[1][0]}) {
    EXPECT_NEAR(l.bandwidth_bytes_per_s, 200e3, 1e-6 * 200e3);
    EXPECT_NEAR(l.latency_s, 0.0, 1e-9);
  }
  // 4 KiB, then 0.1 s worth (20,000 bytes) instead of 256 KiB; 1 MiB never.
  EXPECT_EQ(t.stats(0, 1).posted, 2);
  EXPECT_GT(t.stats(0, 1).bytes_delivered, 4096 + 19000);
  EXPECT_LE(t.stats(0, 1).bytes_delivered, 4096 + 20000);
}

// Latency that takes most of the budget: 4 KiB costs 10 ms, which read as bandwidth alone
// predicts 0.64 s for 256 KiB. A size in between separates latency from bandwidth, and the
// fit then shows the larger sizes to be cheap.
TEST(ProbeLinks, AHighLatencyLinkIsMeasuredOnTwoSizesAtLeast) {
  LocalTransport t(2, {1 << 18, 2, false});
  LinkModel far;
  far.bandwidth_bytes_per_s = 1e9;
  far.latency_s = 10e-3;
  const auto probe = probe_two(t, far, 0.25);
  for (const LinkModel& l : {probe[0][1], probe[1][0]}) {
    EXPECT_NEAR(l.bandwidth_bytes_per_s, 1e9, 1e-3 * 1e9);
    EXPECT_NEAR(l.latency_s, 10e-3, 1e-3 * 10e-3);
  }
  // 4 KiB; about 100 KB (what 0.25 s carries if 10 ms were all bandwidth) instead of 256 KiB;
  // 1 MiB, which the fit predicts at 11 ms.
  EXPECT_EQ(t.stats(0, 1).posted, 3);
  EXPECT_GT(t.stats(0, 1).bytes_delivered, 4096 + 2 * 4096 + 1048576);
}

// All links are measured at once; each gets its own figures, however the messages of a round
// interleave at the receivers.
TEST(ProbeLinks, EveryLinkOfSeveralWorkersGetsItsOwnFigures) {
  constexpr int kWorkers = 4;
  LocalTransport t(kWorkers, {1 << 16, 2, false});
  auto model = [](int from, int to) {
    LinkModel l;
    l.bandwidth_bytes_per_s = 1e8 * (1 + from);
    l.latency_s = 1e-3 * (1 + to + kWorkers * from);
    return l;
  };
  for (int from = 0; from < kWorkers; ++from)
    for (int to = 0; to < kWorkers; ++to)
      if (from != to) t.set_link(from, to, model(from, to));
  const auto probe = probe_links(t, kWorkers, {4096, 65536, 262144}, 2);
  for (int from = 0; from < kWorkers; ++from)
    for (int to = 0; to < kWorkers; ++to) {
      if (from == to) continue;
      SCOPED_TRACE(testing::Message() << from << "->" << to);
      const LinkModel want = model(from, to);
      const LinkModel& got = probe[static_cast<std::size_t>(from)][static_cast<std::size_t>(to)];
      EXPECT_NEAR(got.bandwidth_bytes_per_s, want.bandwidth_bytes_per_s,
                  1e-3 * want.bandwidth_bytes_per_s);
      EXPECT_NEAR(got.latency_s, want.latency_s, 1e-3 * want.latency_s);
      EXPECT_EQ(t.stats(from, to).posted, 6);  // 3 sizes x 2 repeats, nothing more
    }
}

TEST(ProbeLinks, AMessageThatNeverArrivesIsAClearError) {
  LocalTransport t(2, {1024, 2, false});
  LinkModel stuck;
  stuck.latency_s = 1e6;
  t.set_link(0, 1, stuck);
  ProbeLimits limits;
  limits.timeout_s = 0.05;
  try {
    probe_links(t, 2, {1024, 4096}, 1, limits);
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("measuring the link 0->1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--balance off"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace asgd
