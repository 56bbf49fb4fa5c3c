// The Parzen-window test and merge on CUDA: the hand-made cases of tests/unit/test_parzen.cpp
// on a CUDA stream with the same exact expectations; the statistics against float64 and the
// host on random inputs at aligned and misaligned offsets; decisions, counters and history
// over long message sequences compared exactly with the host on identical statistics; the
// merge against the host and a float64 reference on overlapping ranges, for every rule.
// Every test skips itself when no CUDA device is usable (and in a build without CUDA).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/parzen.h"
#include "runtime/buffer.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "tests/common/cuda_fixture.h"
#include "tests/common/parzen_decision_cases.h"
#include "tests/common/reference.h"

namespace asgd {
namespace {
using testing::all_close;
using testing::random_vector;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// The CUDA merge rounds every product and sum on its own, in the host's order. Where the host
// compiler cannot contract a*b + c into an FMA (x86-64 without -mfma, the default) the two
// backends agree bitwise; elsewhere they agree to a few float ulps.
#if (defined(__x86_64__) || defined(__i386__)) && !defined(__FMA__)
constexpr bool kMergeBitwiseAsHost = true;
#else
constexpr bool kMergeBitwiseAsHost = false;
#endif

using CudaParzenTest = testing::CudaTest;
using testing::DeviceArray;
using testing::to_double;

// ---------------------------------------------------------------------------------------------
// The hand-made decisions of tests/unit/test_parzen.cpp

// Runs statistics + decision on the device for messages that each cover the whole (small)
// state; the history and its count stay on the device between calls.
class CudaParzenDecisionTest : public CudaParzenTest {
 protected:
  void SetUp() override {
    CudaParzenTest::SetUp();
    if (IsSkipped()) return;
    history_.emplace(std::vector<float>(64, 0.0f), cuda());
    seen_.emplace(std::vector<std::int64_t>{0}, cuda());
  }

  ParzenDecision decide(const std::vector<float>& g, const std::vector<float>& w,
                        const std::vector<std::vector<float>>& messages) {
    const auto n = static_cast<std::int64_t>(w.size());
    const std::size_t count = messages.size();
    DeviceArray<float> dg(g, cuda()), dw(w, cuda());
    DeviceArray<double> stats(std::vector<double>(4 * count, -1.0), cuda());
    std::vector<DeviceArray<float>> de;
    de.reserve(count);
    for (std::size_t m = 0; m < count; ++m) {
      de.emplace_back(messages[m], cuda());
      parzen_statistics(cuda(), n, dg.get(), dw.get(), de.back().get(), stats.get() + 4 * m);
    }
    const std::vector<std::int64_t> lengths(count, n);
    DeviceArray<std::int32_t> accept(std::vector<std::int32_t>(count, -1), cuda());
    DeviceArray<std::int64_t> counters(std::vector<std::int64_t>(kParzenCounterCount, 0), cuda());
    parzen_decide(cuda(), params_, static_cast<int>(count), stats.get(), lengths.data(),
                  history_->get(), seen_->get(), accept.get(), counters.get());
    return {accept.download(cuda()), counters.download(cuda())};
  }
  std::int64_t seen() const { return seen_->download(cuda())[0]; }

  ParzenParams params_;

 private:
  std::optional<DeviceArray<float>> history_;
  std::optional<DeviceArray<std::int64_t>> seen_;
};

INSTANTIATE_TYPED_TEST_SUITE_P(Cuda, ParzenDecisionCases, CudaParzenDecisionTest);

// ---------------------------------------------------------------------------------------------
// The hand-made merge of tests/unit/test_parzen.cpp: state of 6, A covers [0, 4), B [2, 6).

class CudaMergeRuleTest : public ::testing::TestWithParam<MergeCase> {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << cuda_unavailable_reason();
  }
};

TEST_P(CudaMergeRuleTest, MatchesTheRuleElementByElement) {
  const Stream cuda = Stream::cuda(0);
  const MergeCase mc = GetParam();
  const float eps = 0.3f, alpha = 0.4f;
  const auto g = random_vector(6, 1);
  const auto w = random_vector(6, 2);
  const auto a = random_vector(4, 3), b = random_vector(4, 4);
  const std::vector<double> expected = expected_merge(mc, eps, alpha, g, w, a, b);
  DeviceArray<float> dg(g, cuda), dw(w, cuda), da(a, cuda), db(b, cuda);
  DeviceArray<std::int32_t> daccept(mc.accept, cuda);
  const MergeRange ranges[2] = {{da.get(), 0, 4}, {db.get(), 2, 4}};
  parzen_merge(cuda, mc.rule, eps, alpha, 6, dg.get(), dw.get(), ranges, 2, daccept.get());
  const auto got = dw.download(cuda);
  EXPECT_TRUE(all_close(got, expected, 1e-6, 1e-6));

  std::vector<float> host_w = w;
  const MergeRange host_ranges[2] = {{a.data(), 0, 4}, {b.data(), 2, 4}};
  parzen_merge(Stream::host(), mc.rule, eps, alpha, 6, g.data(), host_w.data(), host_ranges, 2,
               mc.accept.data());
  EXPECT_TRUE(all_close(got, to_double(host_w), 1e-6, 1e-6));
  if (kMergeBitwiseAsHost) {
    EXPECT_EQ(got, host_w);
  }
}

std::string merge_case_name(const ::testing::TestParamInfo<MergeCase>& info) {
  static const char* const kNames[] = {"seed", "average", "elastic"};
  std::string n = kNames[static_cast<int>(info.param.rule)];
  for (auto a : info.param.accept)
    n += a ? "_1" : "_0";
  return n;
}

INSTANTIATE_TEST_SUITE_P(Rules, CudaMergeRuleTest,
                         ::testing::Values(MergeCase{MergeRule::kSeed, {1, 1}},
                                           MergeCase{MergeRule::kSeed, {1, 0}},
                                           MergeCase{MergeRule::kSeed, {0, 0}},
                                           MergeCase{MergeRule::kAverage, {1, 1}},
                                           MergeCase{MergeRule::kAverage, {0, 1}},
                                           MergeCase{MergeRule::kElastic, {1, 1}},
                                           MergeCase{MergeRule::kElastic, {1, 0}}),
                         merge_case_name);

// ---------------------------------------------------------------------------------------------
// Statistics

// Element offsets of g, w and e in their allocations: all aligned, g and w sharing an
// alignment that e has or lacks, and all three different (the scalar path).
struct Offsets {
  std::size_t g, w, e;
};
const Offsets kOffsets[] = {{0, 0, 0}, {1, 1, 0}, {3, 3, 3}, {2, 2, 1}, {0, 1, 2}};

TEST_F(CudaParzenTest, StatisticsMatchFloat64AndHost) {
  const std::int64_t sizes[] = {1, 7, 8, 11, 1000, (1 << 20) + 3};
  std::uint64_t seed = 100;
  for (const std::int64_t n : sizes) {
    for (const Offsets& off : kOffsets) {
      SCOPED_TRACE(::testing::Message()
                   << "n=" << n << " offsets=" << off.g << "," << off.w << "," << off.e);
      const auto g = random_vector(n, ++seed), w = random_vector(n, ++seed);
      // Half the messages lie close to w, where w - e cancels.
      auto e = random_vector(n, ++seed);
      if (seed % 2 == 0) {
        const auto noise = random_vector(n, ++seed, -1e-3f, 1e-3f);
        for (std::int64_t i = 0; i < n; ++i)
          e[i] = w[i] + noise[i];
      }
      double dot = 0, gg = 0, dd = 0, dot_magnitude = 0;
      for (std::int64_t i = 0; i < n; ++i) {
        const double d = static_cast<double>(w[i]) - e[i];
        dot += g[i] * d;
        dot_magnitude += std::abs(g[i] * d);
        gg += static_cast<double>(g[i]) * g[i];
        dd += d * d;
      }
      DeviceArray<float> dg(g, cuda(), off.g), dw(w, cuda(), off.w), de(e, cuda(), off.e);
      DeviceArray<double> out({-5.0, -5.0, -5.0, 42.0}, cuda());  // overwritten but out[3]
      parzen_statistics(cuda(), n, dg.get(), dw.get(), de.get(), out.get());
      const auto got = out.download(cuda());
      double twin[3];
      parzen_statistics(Stream::host(), n, g.data(), w.data(), e.data(), twin);

      // Double accumulation of terms that are exact or rounded once in double.
      EXPECT_NEAR(got[0], dot, 1e-11 * dot_magnitude + 1e-300);
      EXPECT_NEAR(got[1], gg, 1e-11 * gg);
      EXPECT_NEAR(got[2], dd, 1e-11 * dd);
      EXPECT_EQ(got[3], 42.0);
      // The host sums blocks of 1024 terms in float.
      EXPECT_NEAR(got[0], twin[0], 1e-6 * dot_magnitude + 1e-300);
      EXPECT_NEAR(got[1], twin[1], 1e-6 * gg);
      EXPECT_NEAR(got[2], twin[2], 1e-6 * dd);
    }
  }
}

// Deterministic mode needs the same bits every run: the blocks' partials are added in block
// order (grid_sum.cuh), not in the order the blocks finish. Also for sums far larger than one
// wave of blocks covers and across several streams, which have scratch of their own.
TEST_F(CudaParzenTest, StatisticsAreTheSameBitsEveryRun) {
  const std::int64_t n = (std::int64_t{1} << 24) + 5;
  const auto g = random_vector(n, 901), w = random_vector(n, 902), e = random_vector(n, 903);
  DeviceArray<float> dg(g, cuda(), 1), dw(w, cuda(), 1), de(e, cuda(), 2);
  Stream other = Stream::cuda(0);
  std::vector<double> first;
  for (int run = 0; run < 20; ++run) {
    const Stream& s = run % 2 ? other : cuda();
    DeviceArray<double> out({0.0, 0.0, 0.0, 0.0}, s);
    parzen_statistics(s, n, dg.get(), dw.get(), de.get(), out.get());
    const auto got = out.download(s);
    if (run == 0) first = got;
    ASSERT_EQ(std::memcmp(got.data(), first.data(), 3 * sizeof(double)), 0) << "run " << run;
  }
}

TEST_F(CudaParzenTest, StatisticsFlagNonFiniteValuesAndFloatOverflow) {
  enum Bad { kNaNInE, kInfInG, kMinusInfInW, kOverflowingE, kOverflowingG, kLargeButFine };
  std::uint64_t seed = 200;
  for (const std::int64_t n : {std::int64_t{5}, std::int64_t{1000}, std::int64_t{(1 << 20) + 3}}) {
    for (const Offsets& off : kOffsets) {
      for (const std::int64_t at : {std::int64_t{0}, n / 2, n - 1}) {
        for (const Bad bad :
             {kNaNInE, kInfInG, kMinusInfInW, kOverflowingE, kOverflowingG, kLargeButFine}) {
          SCOPED_TRACE(::testing::Message() << "n=" << n << " offsets=" << off.g << "," << off.w
                                            << "," << off.e << " at=" << at << " bad=" << bad);
          auto g = random_vector(n, ++seed), w = random_vector(n, ++seed),
               e = random_vector(n, ++seed);
          switch (bad) {
            case kNaNInE:
              e[at] = kNaN;
              break;
            case kInfInG:
              g[at] = kInf;
              break;
            case kMinusInfInW:
              w[at] = -kInf;
              break;
            case kOverflowingE:
              e[at] = 3e38f;
              break;  // (w - e)^2 overflows float
            case kOverflowingG:
              g[at] = 2e19f;
              break;  // g^2 = 4e38 overflows float
            case kLargeButFine:
              e[at] = 1e19f;
              break;  // (w - e)^2 ~ 1e38 does not
          }
          DeviceArray<float> dg(g, cuda(), off.g), dw(w, cuda(), off.w), de(e, cuda(), off.e);
          DeviceArray<double> out({0.0, 0.0, 0.0, 0.0}, cuda());
          parzen_statistics(cuda(), n, dg.get(), dw.get(), de.get(), out.get());
          const auto got = out.download(cuda());
          double twin[3];
          parzen_statistics(Stream::host(), n, g.data(), w.data(), e.data(), twin);
          const bool finite =
              std::isfinite(got[0]) && std::isfinite(got[1]) && std::isfinite(got[2]);
          const bool twin_finite =
              std::isfinite(twin[0]) && std::isfinite(twin[1]) && std::isfinite(twin[2]);
          EXPECT_EQ(finite, bad == kLargeButFine);
          EXPECT_EQ(twin_finite, bad == kLargeButFine);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Decision sequences against the host

struct DecideScenario {
  const char* name;
  ParzenParams params;
  bool discrete;              // distances from a small set: ties, equal medians, d2 == r*median
  std::int64_t preload_seen;  // > 0: the ring starts with random values and this count
  std::uint64_t seed;
};

ParzenParams make_params(float eps, float window, int history, int warmup, bool filter = true,
                         float margin = 1.0f) {
  ParzenParams p;
  p.eps = eps;
  p.margin = margin;
  p.window = window;
  p.history = history;
  p.warmup = warmup;
  p.filter = filter;
  return p;
}

float random_distance(bool discrete, std::mt19937_64& rng) {
  static const float kSet[] = {0.25f, 0.5f, 1.0f, 1.0f, 2.0f, 4.0f, 8.0f};
  if (discrete) return kSet[std::uniform_int_distribution<int>(0, 6)(rng)];
  return static_cast<float>(std::exp(std::normal_distribution<double>(0.0, 1.5)(rng)));
}

// Statistics for `count` messages: mostly finite, with direction ties and non-finite values.
void random_statistics(int count, bool discrete, const ParzenParams& params, std::mt19937_64& rng,
                       std::vector<double>& stats, std::vector<std::int64_t>& lengths) {
  static const std::int64_t kLengths[] = {1, 3, 1000, 123457};
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  stats.assign(4 * count, -7.0);
  lengths.resize(count);
  for (int m = 0; m < count; ++m) {
    lengths[m] = kLengths[std::uniform_int_distribution<int>(0, 3)(rng)];
    const double gg = 0.1 + 10.0 * unit(rng);
    const double dd = static_cast<double>(random_distance(discrete, rng)) * lengths[m];
    const double eps = params.eps;
    double dot = eps * gg * (2.0 * unit(rng) - 0.5);
    const double kind = unit(rng);
    // A tie, rejected: the threshold as both decisions compute it.
    if (kind < 0.05) dot = 0.5 * static_cast<double>(params.margin) * eps * gg;
    stats[4 * m] = dot;
    stats[4 * m + 1] = gg;
    stats[4 * m + 2] = dd;
    if (kind > 0.95) {
      const double bad[] = {nan, inf, -inf};
      stats[4 * m + std::uniform_int_distribution<int>(0, 2)(rng)] =
          bad[std::uniform_int_distribution<int>(0, 2)(rng)];
    }
  }
}

// 200 messages in calls of 1 to 64 (the first of 64); after each call the accept flags, the
// counters, the ring and its count must equal the host's exactly.
void check_scenario(const Stream& cuda, const DecideScenario& sc) {
  SCOPED_TRACE(sc.name);
  std::mt19937_64 rng(sc.seed);
  const int h = sc.params.history;
  std::vector<float> history(h, 0.0f);
  std::int64_t seen = 0;
  if (sc.preload_seen > 0) {
    for (float& v : history)
      v = random_distance(sc.discrete, rng);
    seen = sc.preload_seen;
  }
  std::vector<std::int64_t> counters(kParzenCounterCount, 0);
  DeviceArray<float> dhistory(history, cuda);
  DeviceArray<std::int64_t> dseen({seen}, cuda), dcounters(counters, cuda);

  int done = 0;
  for (int call = 0; done < 200; ++call) {
    SCOPED_TRACE(::testing::Message() << "call " << call << " after " << done << " messages");
    const int count =
        std::min(200 - done, call == 0 ? 64 : std::uniform_int_distribution<int>(1, 64)(rng));
    std::vector<double> stats;
    std::vector<std::int64_t> lengths;
    random_statistics(count, sc.discrete, sc.params, rng, stats, lengths);

    DeviceArray<double> dstats(stats, cuda);
    DeviceArray<std::int32_t> daccept(std::vector<std::int32_t>(count, -1), cuda);
    parzen_decide(cuda, sc.params, count, dstats.get(), lengths.data(), dhistory.get(), dseen.get(),
                  daccept.get(), dcounters.get());
    std::vector<std::int32_t> accept(count, -1);
    parzen_decide(Stream::host(), sc.params, count, stats.data(), lengths.data(), history.data(),
                  &seen, accept.data(), counters.data());

    ASSERT_EQ(daccept.download(cuda), accept);
    ASSERT_EQ(dcounters.download(cuda), counters);
    ASSERT_EQ(dseen.download(cuda)[0], seen);
    ASSERT_EQ(dhistory.download(cuda), history);
    done += count;
  }
  // The sequences must exercise every outcome the parameters allow.
  if (sc.params.filter) {
    EXPECT_GT(counters[kNonFinite], 0);
    EXPECT_GT(counters[kRejectedDirection], 0);
    if (!std::isinf(sc.params.window)) {
      EXPECT_GT(counters[kRejectedWindow], 0);
    }
  }
  if (!std::isnan(sc.params.window)) {
    EXPECT_GT(counters[kAccepted], 0);
  }
}

TEST_F(CudaParzenTest, DecisionsAndHistoryMatchHostExactly) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const DecideScenario scenarios[] = {
      {"defaults", ParzenParams{}, false, 0, 1},
      {"ring of 5, ties", make_params(0.05f, 2.0f, 5, 3), true, 0, 2},
      {"ring of 1", make_params(0.05f, 2.0f, 1, 0), true, 0, 3},
      {"ring of 7", make_params(0.1f, 4.0f, 7, 2), false, 0, 4},
      {"ring of 100, ties", make_params(0.1f, 3.0f, 100, 10), true, 0, 5},
      {"bare direction test", make_params(0.05f, kInf, 16, 8), false, 0, 6},
      {"window -inf is bare too", make_params(0.05f, -kInf, 16, 8), false, 0, 7},
      {"window NaN rejects", make_params(0.05f, nan, 16, 0), false, 0, 8},
      {"filter off", make_params(0.05f, 4.0f, 64, 8, false), false, 0, 9},
      {"first-order direction test", make_params(0.05f, 4.0f, 64, 8, true, 0.0f), true, 0, 14},
      {"direction margin 0.5", make_params(0.1f, 2.0f, 16, 4, true, 0.5f), false, 0, 15},
      {"full ring of 4096", make_params(0.05f, 4.0f, 4096, 8), false, 1000003, 10},
      {"ring of 3000 filling up, ties", make_params(0.05f, 2.0f, 3000, 8), true, 2950, 11},
      {"the largest ring, full", make_params(0.05f, 4.0f, kMaxParzenHistory, 8), false,
       3 * kMaxParzenHistory + 5, 12},
      {"the largest ring filling up, ties", make_params(0.05f, 2.0f, kMaxParzenHistory, 8), true,
       kMaxParzenHistory - 17, 13},
  };
  for (const DecideScenario& sc : scenarios)
    check_scenario(cuda(), sc);
}

TEST_F(CudaParzenTest, HistoryBeyondTheLimitIsAnError) {
  const int h = kMaxParzenHistory + 1;
  DeviceArray<float> history(std::vector<float>(h, 0.0f), cuda());
  DeviceArray<std::int64_t> seen({0}, cuda()), counters({0, 0, 0, 0}, cuda());
  DeviceArray<double> stats({1.0, 1.0, 1.0, 0.0}, cuda());
  DeviceArray<std::int32_t> accept({-1}, cuda());
  const std::int64_t lengths[1] = {1};
  EXPECT_THROW(parzen_decide(cuda(), make_params(0.05f, 4.0f, h, 8), 1, stats.get(), lengths,
                             history.get(), seen.get(), accept.get(), counters.get()),
               Error);
}

// ---------------------------------------------------------------------------------------------
// Merge against the host

struct RangeSpec {
  std::int64_t offset, length;
  std::size_t misalign;  // element offset of the range's data in its allocation
};

std::vector<RangeSpec> random_ranges(std::int64_t n, int count, std::mt19937_64& rng) {
  std::vector<RangeSpec> out;
  const auto misalign = [&] { return std::uniform_int_distribution<std::size_t>(0, 3)(rng); };
  // The whole state, its first and its last element, then random intervals.
  out.push_back({0, n, misalign()});
  out.push_back({0, 1, misalign()});
  out.push_back({n - 1, 1, misalign()});
  while (static_cast<int>(out.size()) < count) {
    const std::int64_t offset = std::uniform_int_distribution<std::int64_t>(0, n - 1)(rng);
    // Mostly short ranges, some long.
    const std::int64_t most =
        std::uniform_int_distribution<int>(0, 3)(rng) == 0 ? n - offset : (n - offset + 7) / 8;
    const std::int64_t length = std::uniform_int_distribution<std::int64_t>(1, most)(rng);
    out.push_back({offset, length, misalign()});
  }
  out.resize(count);
  return out;
}

// The rule in double, element by element (as tests/unit/test_parzen.cpp writes it).
std::vector<double> reference_merge(MergeRule rule, double eps, double alpha,
                                    const std::vector<float>& g, const std::vector<float>& w,
                                    const std::vector<RangeSpec>& specs,
                                    const std::vector<std::vector<float>>& data,
                                    const std::vector<std::int32_t>& accept) {
  const auto n = static_cast<std::int64_t>(w.size());
  std::vector<double> sum(n, 0.0), c(n, 0.0);
  for (std::size_t m = 0; m < specs.size(); ++m) {
    if (!accept[m]) continue;
    for (std::int64_t k = 0; k < specs[m].length; ++k) {
      sum[specs[m].offset + k] += data[m][k];
      c[specs[m].offset + k] += 1.0;
    }
  }
  std::vector<double> out(n);
  for (std::int64_t i = 0; i < n; ++i) {
    const double wi = w[i], gi = g[i], local = wi - eps * gi;
    if (c[i] == 0) {
      out[i] = local;
    } else if (rule == MergeRule::kSeed) {
      out[i] = wi - eps / (c[i] + 1) * gi -
               std::min(1.0, static_cast<double>(eps)) / (c[i] + 1) * (c[i] * wi - sum[i]);
    } else if (rule == MergeRule::kAverage) {
      out[i] = (local + sum[i]) / (c[i] + 1);
    } else {
      out[i] = local - alpha * (local - sum[i] / c[i]);
    }
  }
  return out;
}

enum class AcceptPattern { kRandom, kAll, kNone };

void check_merge(const Stream& cuda, std::int64_t n, std::size_t g_offset, std::size_t w_offset,
                 int count, AcceptPattern pattern, MergeRule rule, std::uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << "n=" << n << " g/w offsets=" << g_offset << "," << w_offset << " count=" << count
               << " pattern=" << static_cast<int>(pattern) << " rule=" << static_cast<int>(rule));
  std::mt19937_64 rng(seed);
  const float eps = 0.05f, alpha = 0.3f;
  const auto g = random_vector(n, seed + 1), w = random_vector(n, seed + 2);
  const std::vector<RangeSpec> specs = random_ranges(n, count, rng);
  std::vector<std::vector<float>> data;
  std::vector<std::int32_t> accept(count);
  for (int m = 0; m < count; ++m) {
    data.push_back(random_vector(specs[m].length, seed + 10 + m, -2.0f, 2.0f));
    accept[m] = pattern == AcceptPattern::kAll    ? 1
                : pattern == AcceptPattern::kNone ? 0
                                                  : std::uniform_int_distribution<int>(0, 1)(rng);
  }

  std::vector<DeviceArray<float>> ddata;
  ddata.reserve(count);
  std::vector<MergeRange> dranges, hranges;
  for (int m = 0; m < count; ++m) {
    ddata.emplace_back(data[m], cuda, specs[m].misalign);
    dranges.push_back({ddata.back().get(), specs[m].offset, specs[m].length});
    hranges.push_back({data[m].data(), specs[m].offset, specs[m].length});
  }
  DeviceArray<float> dg(g, cuda, g_offset), dw(w, cuda, w_offset);
  std::optional<DeviceArray<std::int32_t>> daccept;
  if (count > 0) daccept.emplace(accept, cuda);
  parzen_merge(cuda, rule, eps, alpha, n, dg.get(), dw.get(), dranges.data(), count,
               count > 0 ? daccept->get() : nullptr);
  const auto got = dw.download(cuda);

  std::vector<float> host_w = w;
  parzen_merge(Stream::host(), rule, eps, alpha, n, g.data(), host_w.data(), hranges.data(), count,
               accept.data());
  // Float rounding of up to `count` terms of magnitude <= 2.
  const double atol = 1e-6 * (1 + count / 4);
  EXPECT_TRUE(all_close(got, to_double(host_w), 1e-6, atol));
  if (kMergeBitwiseAsHost) {
    EXPECT_EQ(got, host_w);
  }
  EXPECT_TRUE(
      all_close(got, reference_merge(rule, eps, alpha, g, w, specs, data, accept), 1e-5, 2 * atol));
}

const MergeRule kRules[] = {MergeRule::kSeed, MergeRule::kAverage, MergeRule::kElastic};

TEST_F(CudaParzenTest, MergeMatchesHostOnOverlappingRanges) {
  // g and w aligned, sharing a misalignment (float4 after a head), or not sharing one (scalar).
  const std::size_t gw_offsets[][2] = {{0, 0}, {1, 1}, {3, 3}, {0, 1}};
  std::uint64_t seed = 1000;
  for (const std::int64_t n : {std::int64_t{1}, std::int64_t{7}, std::int64_t{8},
                               std::int64_t{1000}, std::int64_t{(1 << 20) + 5}}) {
    for (const auto& off : gw_offsets) {
      for (const AcceptPattern pattern :
           {AcceptPattern::kRandom, AcceptPattern::kAll, AcceptPattern::kNone}) {
        for (const MergeRule rule : kRules)
          check_merge(cuda(), n, off[0], off[1], 8, pattern, rule, seed += 100);
      }
    }
  }
}

TEST_F(CudaParzenTest, MergeWithTheMostRangesAndWithNone) {
  std::uint64_t seed = 5000;
  for (const MergeRule rule : kRules) {
    for (const std::size_t offset : {std::size_t{0}, std::size_t{2}}) {
      for (const AcceptPattern pattern : {AcceptPattern::kRandom, AcceptPattern::kAll}) {
        check_merge(cuda(), 100003, offset, offset, kMaxMergeMessages, pattern, rule, seed += 100);
      }
      // No messages at all: the plain SGD step, with no accept array.
      check_merge(cuda(), 100003, offset, offset, 0, AcceptPattern::kAll, rule, seed += 100);
    }
  }
}

}  // namespace
}  // namespace asgd
