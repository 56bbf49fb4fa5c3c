// The Parzen-window test and merge on hand-made cases with exact answers, and against a
// float64 reference on random inputs.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/parzen.h"
#include "runtime/error.h"
#include "tests/common/parzen_decision_cases.h"
#include "tests/common/reference.h"

namespace asgd {
namespace {

// Statistics + decision on the host for messages that each cover the whole (small) state.
class HostParzen : public ::testing::Test {
 protected:
  ParzenDecision decide(const std::vector<float>& g, const std::vector<float>& w,
                        const std::vector<std::vector<float>>& messages) {
    const auto n = static_cast<std::int64_t>(w.size());
    std::vector<double> stats(4 * messages.size());
    std::vector<std::int64_t> lengths(messages.size(), n);
    for (std::size_t m = 0; m < messages.size(); ++m)
      parzen_statistics(stream_, n, g.data(), w.data(), messages[m].data(), &stats[4 * m]);
    ParzenDecision d{std::vector<std::int32_t>(messages.size(), -1),
                     std::vector<std::int64_t>(kParzenCounterCount, 0)};
    parzen_decide(stream_, params_, static_cast<int>(messages.size()), stats.data(), lengths.data(),
                  history_.data(), &seen_, d.accept.data(), d.counters.data());
    return d;
  }
  std::int64_t seen() const { return seen_; }

  ParzenParams params_;

 private:
  Stream stream_ = Stream::host();
  std::vector<float> history_ = std::vector<float>(64, 0.0f);
  std::int64_t seen_ = 0;
};

INSTANTIATE_TYPED_TEST_SUITE_P(Host, ParzenDecisionCases, HostParzen);

// Merge: state of 6, message A covers [0, 4), B covers [2, 6) (MergeCase).
class MergeTest : public ::testing::TestWithParam<MergeCase> {};

TEST_P(MergeTest, MatchesTheRuleElementByElement) {
  const MergeCase mc = GetParam();
  const float eps = 0.3f, alpha = 0.4f;
  const auto g = testing::random_vector(6, 1);
  auto w = testing::random_vector(6, 2);
  const auto a = testing::random_vector(4, 3), b = testing::random_vector(4, 4);
  const MergeRange ranges[2] = {{a.data(), 0, 4}, {b.data(), 2, 4}};
  const std::vector<double> expected = expected_merge(mc, eps, alpha, g, w, a, b);
  parzen_merge(Stream::host(), mc.rule, eps, alpha, 6, g.data(), w.data(), ranges, 2,
               mc.accept.data());
  EXPECT_TRUE(testing::all_close(w, expected, 1e-6, 1e-6));
}

std::string merge_case_name(const ::testing::TestParamInfo<MergeCase>& info) {
  static const char* const kNames[] = {"seed", "average", "elastic"};
  std::string n = kNames[static_cast<int>(info.param.rule)];
  for (auto a : info.param.accept)
    n += a ? "_1" : "_0";
  return n;
}

INSTANTIATE_TEST_SUITE_P(Rules, MergeTest,
                         ::testing::Values(MergeCase{MergeRule::kSeed, {1, 1}},
                                           MergeCase{MergeRule::kSeed, {1, 0}},
                                           MergeCase{MergeRule::kSeed, {0, 0}},
                                           MergeCase{MergeRule::kAverage, {1, 1}},
                                           MergeCase{MergeRule::kAverage, {0, 1}},
                                           MergeCase{MergeRule::kElastic, {1, 1}},
                                           MergeCase{MergeRule::kElastic, {1, 0}}),
                         merge_case_name);

// K-Means runs at step sizes of 1 and more: the seed rule's pull stops at the mean of w and
// the accepted states instead of overshooting them.
TEST(MergeSeed, PullIsCappedForStepSizesAboveOne) {
  const float eps = 5.0f;
  const auto g = testing::random_vector(6, 21);
  auto w = testing::random_vector(6, 22);
  const auto a = testing::random_vector(4, 23), b = testing::random_vector(4, 24);
  const MergeRange ranges[2] = {{a.data(), 0, 4}, {b.data(), 2, 4}};
  const MergeCase mc{MergeRule::kSeed, {1, 1}};
  const std::vector<double> expected = expected_merge(mc, eps, 0, g, w, a, b);
  const auto w0 = w;
  parzen_merge(Stream::host(), mc.rule, eps, 0, 6, g.data(), w.data(), ranges, 2, mc.accept.data());
  EXPECT_TRUE(testing::all_close(w, expected, 1e-5, 1e-5));
  // Element 0 is covered by a alone: the mean of w and a, then half the gradient step.
  EXPECT_NEAR(w[0], 0.5 * (w0[0] + a[0]) - 0.5 * eps * g[0], 1e-5);
}

TEST(MergeSeed, RepeatedMergesWithLargeStepSizesContract) {
  // Two states merging with each other, no gradient: the gap shrinks at every step size.
  for (float eps : {0.1f, 1.0f, 5.0f, 50.0f}) {
    std::vector<float> x = {1.0f, -2.0f}, y = {-1.0f, 3.0f};
    const std::vector<float> zero(2, 0.0f);
    const std::int32_t accept[1] = {1};
    const double gap0 = std::hypot(x[0] - y[0], x[1] - y[1]);
    for (int i = 0; i < 20; ++i) {
      const std::vector<float> x_sent = x, y_sent = y;
      const MergeRange from_y[1] = {{y_sent.data(), 0, 2}}, from_x[1] = {{x_sent.data(), 0, 2}};
      parzen_merge(Stream::host(), MergeRule::kSeed, eps, 0, 2, zero.data(), x.data(), from_y, 1,
                   accept);
      parzen_merge(Stream::host(), MergeRule::kSeed, eps, 0, 2, zero.data(), y.data(), from_x, 1,
                   accept);
    }
    const double gap = std::hypot(x[0] - y[0], x[1] - y[1]);
    EXPECT_LT(gap, 0.9 * gap0) << "eps " << eps;
    EXPECT_TRUE(std::isfinite(x[0]) && std::isfinite(y[1])) << "eps " << eps;
  }
}

TEST(ParzenKernels, StatisticsMatchFloat64OnLargeRandomInputs) {
  for (int threads : {1, 2}) {
    const std::int64_t n = 300001;
    const auto g = testing::random_vector(n, 5), w = testing::random_vector(n, 6);
    const auto e = testing::random_vector(n, 7);
    double dot = 0, gg = 0, dd = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      const double d = static_cast<double>(w[i]) - e[i];
      dot += g[i] * d;
      gg += static_cast<double>(g[i]) * g[i];
      dd += d * d;
    }
    double out[4];
    parzen_statistics(Stream::host(threads), n, g.data(), w.data(), e.data(), out);
    EXPECT_NEAR(out[0], dot, 1e-6 * n);
    EXPECT_NEAR(out[1], gg, 1e-6 * gg);
    EXPECT_NEAR(out[2], dd, 1e-6 * dd);
  }
}

TEST(ParzenKernels, MergeOnLargeStateWithThreadsMatchesOneThread) {
  const std::int64_t n = 200003;
  const auto g = testing::random_vector(n, 8);
  const auto w0 = testing::random_vector(n, 9);
  const auto e1 = testing::random_vector(70000, 10), e2 = testing::random_vector(n, 11);
  const MergeRange ranges[2] = {{e1.data(), 100000, 70000}, {e2.data(), 0, n}};
  const std::int32_t accept[2] = {1, 1};
  auto w1 = w0, w2 = w0;
  parzen_merge(Stream::host(1), MergeRule::kSeed, 0.1f, 0, n, g.data(), w1.data(), ranges, 2,
               accept);
  parzen_merge(Stream::host(2), MergeRule::kSeed, 0.1f, 0, n, g.data(), w2.data(), ranges, 2,
               accept);
  EXPECT_EQ(w1, w2);
  // Spot checks against the formula on elements covered once and twice.
  for (std::int64_t i :
       {std::int64_t{5}, std::int64_t{100000}, std::int64_t{169999}, std::int64_t{170000}, n - 1}) {
    const bool both = i >= 100000 && i < 170000;
    const double c = both ? 2 : 1;
    const double sum = e2[i] + (both ? e1[i - 100000] : 0.0);
    const double expect = w0[i] - 0.1 / (c + 1) * (g[i] + c * w0[i] - sum);
    EXPECT_NEAR(w1[i], expect, 1e-6) << i;
  }
}

TEST(ParzenKernels, RejectsRangesOutsideTheState) {
  std::vector<float> g(4), w(4), e(4);
  const MergeRange bad[1] = {{e.data(), 2, 4}};
  const std::int32_t accept[1] = {1};
  EXPECT_THROW(parzen_merge(Stream::host(), MergeRule::kSeed, 0.1f, 0, 4, g.data(), w.data(), bad,
                            1, accept),
               Error);
}

}  // namespace
}  // namespace asgd
