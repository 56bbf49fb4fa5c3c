// The Parzen decision on hand-made cases with exact answers, shared by the host tier
// (tests/unit/test_parzen.cpp) and the gpu tier (tests/gpu/test_cuda_parzen.cpp): each
// instantiates ParzenDecisionCases with a fixture of its backend that provides
//   ParzenParams params_;
//   ParzenDecision decide(g, w, messages);  // statistics + decision, each message the whole state
//   std::int64_t seen();                     // values pushed into the window's history
// Include it from one file per test binary: it defines tests. It also holds the float64
// reference of the merge rules that both tiers check their merge against.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/parzen.h"

namespace asgd {

struct ParzenDecision {
  std::vector<std::int32_t> accept;
  std::vector<std::int64_t> counters;
};

// The merge case of both tiers: a state of 6; message a covers [0, 4), b covers [2, 6).
struct MergeCase {
  MergeRule rule;
  std::vector<std::int32_t> accept;
};

// The merge rules of DESIGN.md section 1 in float64, element by element, for that case.
inline std::vector<double> expected_merge(const MergeCase& mc, float eps, float alpha,
                                          const std::vector<float>& g, const std::vector<float>& w,
                                          const std::vector<float>& a,
                                          const std::vector<float>& b) {
  std::vector<double> expected(6);
  for (int i = 0; i < 6; ++i) {
    std::vector<double> e;
    if (mc.accept[0] && i < 4) e.push_back(a[static_cast<std::size_t>(i)]);
    if (mc.accept[1] && i >= 2) e.push_back(b[static_cast<std::size_t>(i - 2)]);
    const double c = static_cast<double>(e.size()), wi = w[static_cast<std::size_t>(i)],
                 gi = g[static_cast<std::size_t>(i)];
    double sum = 0;
    for (double v : e) sum += v;
    const double local = wi - eps * gi;
    double& x = expected[static_cast<std::size_t>(i)];
    if (e.empty())
      x = local;
    else if (mc.rule == MergeRule::kSeed)
      x = wi - eps / (c + 1) * gi -
          std::min(1.0, static_cast<double>(eps)) / (c + 1) * (c * wi - sum);
    else if (mc.rule == MergeRule::kAverage)
      x = (local + sum) / (c + 1);
    else
      x = local - alpha * (local - sum / c);
  }
  return expected;
}

template <typename Backend>
class ParzenDecisionCases : public Backend {
 protected:
  static constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
  static constexpr float kInf = std::numeric_limits<float>::infinity();
};

TYPED_TEST_SUITE_P(ParzenDecisionCases);

TYPED_TEST_P(ParzenDecisionCases, AcceptsAStateTheStepMovesTowards) {
  this->params_.eps = 0.5f;
  this->params_.window = TestFixture::kInf;
  // w - eps*g = [0.5, 0.5] is closer to e = [0, 0] than w = [1, 1] is.
  const ParzenDecision d = this->decide({1, 1}, {1, 1}, {{0, 0}, {2, 2}});
  EXPECT_EQ(d.accept, (std::vector<std::int32_t>{1, 0}));
  EXPECT_EQ(d.counters[kAccepted], 1);
  EXPECT_EQ(d.counters[kRejectedDirection], 1);
  EXPECT_EQ(this->seen(), 2);  // both distances enter the history
}

TYPED_TEST_P(ParzenDecisionCases, ATieIsRejected) {
  this->params_.eps = 0.5f;
  this->params_.window = TestFixture::kInf;
  // dot(g, w - e) = 0.25 == eps/2 * ||g||^2: equally far before and after the step.
  const ParzenDecision d = this->decide({1, 0}, {0.25f, 0}, {{0, 0}});
  EXPECT_EQ(d.accept[0], 0);
  EXPECT_EQ(d.counters[kRejectedDirection], 1);
}

// The margin scales the step's term: dot(g, w - e) > margin * eps/2 * ||g||^2.
TYPED_TEST_P(ParzenDecisionCases, MarginScalesTheStepTerm) {
  this->params_.eps = 0.5f;
  this->params_.window = TestFixture::kInf;
  const std::vector<float> g{1, 0}, w{0.25f, 0};
  // e = [0, 0]: dot 0.25 (the tie above at margin 1); e = [0.2, 0]: dot 0.05, a state the
  // step overshoots but moves towards to first order; e = [0.5, 0]: dot -0.25, behind.
  const std::vector<std::vector<float>> messages{{0, 0}, {0.2f, 0}, {0.5f, 0}};
  EXPECT_EQ(this->decide(g, w, messages).accept, (std::vector<std::int32_t>{0, 0, 0}));
  this->params_.margin = 0.5f;  // threshold 0.125
  EXPECT_EQ(this->decide(g, w, messages).accept, (std::vector<std::int32_t>{1, 0, 0}));
  this->params_.margin = 0.0f;  // threshold 0: the sign of the dot product
  const ParzenDecision d = this->decide(g, w, messages);
  EXPECT_EQ(d.accept, (std::vector<std::int32_t>{1, 1, 0}));
  EXPECT_EQ(d.counters[kAccepted], 2);
  EXPECT_EQ(d.counters[kRejectedDirection], 1);
  // A zero gradient says nothing about any state: dot 0 is not above 0.
  EXPECT_EQ(this->decide({0, 0}, w, {{0, 0}}).accept[0], 0);
}

TYPED_TEST_P(ParzenDecisionCases, NonFiniteValuesAreRejectedAndCounted) {
  this->params_.window = TestFixture::kInf;
  const ParzenDecision d = this->decide(
      {1, 1}, {1, 1},
      {{0, TestFixture::kNaN}, {TestFixture::kInf, 0}, {-TestFixture::kInf, 0}, {0, 3e38f}});
  EXPECT_EQ(d.accept, (std::vector<std::int32_t>{0, 0, 0, 0}));
  EXPECT_EQ(d.counters[kNonFinite], 4);  // 3e38 squared overflows: counted as non-finite
  EXPECT_EQ(d.counters[kAccepted] + d.counters[kRejectedDirection], 0);
  EXPECT_EQ(this->seen(), 0);  // nothing non-finite enters the history
}

TYPED_TEST_P(ParzenDecisionCases, WindowWarmsUpThenRejectsFarStates) {
  this->params_.eps = 0.5f;
  this->params_.window = 4.0f;
  this->params_.warmup = 3;
  const std::vector<float> g{1, 1}, w{1, 1};
  // d2 = ||w - e||^2 / 2 = 1 for e = [0, 0]; each passes the direction test.
  ParzenDecision d = this->decide(g, w, {{0, 0}, {0, 0}, {0, 0}});
  EXPECT_EQ(d.counters[kRejectedWindow], 3) << "nothing is accepted during the warm-up";
  d = this->decide(g, w, {{0, 0}});
  EXPECT_EQ(d.accept[0], 1);
  // e = [-2, -2]: d2 = 9 > 4 * median(1, 1, 1, 1) but the direction test passes.
  d = this->decide(g, w, {{-2, -2}, {-0.5f, -0.5f}});
  EXPECT_EQ(d.accept, (std::vector<std::int32_t>{0, 1}));  // 2.25 <= 4
  EXPECT_EQ(d.counters[kRejectedWindow], 1);
  EXPECT_EQ(this->seen(), 6);
}

TYPED_TEST_P(ParzenDecisionCases, MedianIsOverTheLastHistoryMessages) {
  this->params_.eps = 0.5f;
  this->params_.window = 2.0f;
  this->params_.warmup = 0;
  this->params_.history = 2;
  const std::vector<float> g{1, 1}, w{1, 1};
  this->decide(g, w, {{0, 0}, {0, 0}});  // history {1, 1}
  // d2 = 4 for e = [-1, -1]: rejected against median 1 ...
  EXPECT_EQ(this->decide(g, w, {{-1, -1}}).accept[0], 0);
  // ... which pushed 4 out the oldest 1: the history is {4, 1}, median 2.5: now accepted.
  EXPECT_EQ(this->decide(g, w, {{-1, -1}}).accept[0], 1);
}

TYPED_TEST_P(ParzenDecisionCases, FilterOffAcceptsEverything) {
  this->params_.filter = false;
  const ParzenDecision d = this->decide({1, 1}, {1, 1}, {{2, 2}, {TestFixture::kNaN, 0}});
  EXPECT_EQ(d.accept, (std::vector<std::int32_t>{1, 1}));
  EXPECT_EQ(d.counters[kAccepted], 2);
  EXPECT_EQ(this->seen(), 0);
}

REGISTER_TYPED_TEST_SUITE_P(ParzenDecisionCases, AcceptsAStateTheStepMovesTowards, ATieIsRejected,
                            MarginScalesTheStepTerm, NonFiniteValuesAreRejectedAndCounted,
                            WindowWarmsUpThenRejectsFarStates, MedianIsOverTheLastHistoryMessages,
                            FilterOffAcceptsEverything);

}  // namespace asgd
