#include "kernels/parzen.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/detail/host_dispatch.h"

namespace asgd {
namespace {
constexpr std::int64_t kGrain = 1 << 16;
constexpr std::int64_t kBlock = 1024;  // float partial sums within, double across blocks
constexpr std::int64_t kChunk = 2048;  // merge works chunk by chunk so w stays in L1

struct Stats {
  double dot = 0, gg = 0, dd = 0;
};

// Sixteen independent lanes per sum: one accumulator per quantity would make every addition
// wait for the previous one, which caps the loop at one element per cycle even in cache.
constexpr int kLanes = 16;
// Software prefetch distance in elements: the three streams run ahead of the hardware
// prefetcher on one core, which otherwise leaves DRAM bandwidth unused. 512 (2 KiB per
// stream) measured best of 256 to 4096 (asgd_bench_parzen, 512 Mi floats, paired runs).
constexpr std::int64_t kPrefetch = 512;

__attribute__((target_clones("avx2", "default")))
Stats statistics_range(const float* __restrict g, const float* __restrict w,
                       const float* __restrict e, std::int64_t i0, std::int64_t i1) {
  Stats s;
  for (std::int64_t b = i0; b < i1; b += kBlock) {
    const std::int64_t end = std::min(i1, b + kBlock);
    float dot[kLanes] = {}, gg[kLanes] = {}, dd[kLanes] = {};
    std::int64_t i = b;
    for (; i + kLanes <= end; i += kLanes) {
      __builtin_prefetch(g + i + kPrefetch);
      __builtin_prefetch(w + i + kPrefetch);
      __builtin_prefetch(e + i + kPrefetch);
      for (int l = 0; l < kLanes; ++l) {
        const float d = w[i + l] - e[i + l];
        dot[l] += g[i + l] * d;
        gg[l] += g[i + l] * g[i + l];
        dd[l] += d * d;
      }
    }
    for (int l = 0; i < end; ++i, ++l) {
      const float d = w[i] - e[i];
      dot[l] += g[i] * d;
      gg[l] += g[i] * g[i];
      dd[l] += d * d;
    }
    for (int l = 0; l < kLanes; ++l) {
      s.dot += dot[l];
      s.gg += gg[l];
      s.dd += dd[l];
    }
  }
  return s;
}

float median(const float* values, int n) {
  // Reused across calls: the decision runs every step and must not allocate.
  thread_local std::vector<float> v;
  v.assign(values, values + n);
  const auto mid = v.begin() + n / 2;
  std::nth_element(v.begin(), mid, v.end());
  if (n % 2 == 1) return *mid;
  return 0.5f * (*mid + *std::max_element(v.begin(), mid));
}

// w <- a*w - b*g + c * sum of the active ranges' values, over [lo, hi) (all inside every
// active range). One pass per chunk: the first range is fused with the local step.
__attribute__((target_clones("avx2", "default")))
void merge_interval(float a, float b, float c, const float* __restrict g, float* __restrict w,
                    const MergeRange* const* active, int count, std::int64_t lo,
                    std::int64_t hi) {
  for (std::int64_t c0 = lo; c0 < hi; c0 += kChunk) {
    const std::int64_t c1 = std::min(hi, c0 + kChunk);
    if (count == 0) {
#pragma omp simd
      for (std::int64_t i = c0; i < c1; ++i) w[i] = a * w[i] - b * g[i];
      continue;
    }
    const float* __restrict e0 = active[0]->data - active[0]->offset;
#pragma omp simd
    for (std::int64_t i = c0; i < c1; ++i) w[i] = a * w[i] - b * g[i] + c * e0[i];
    for (int m = 1; m < count; ++m) {
      const float* __restrict em = active[m]->data - active[m]->offset;
#pragma omp simd
      for (std::int64_t i = c0; i < c1; ++i) w[i] += c * em[i];
    }
  }
}
}  // namespace

void parzen_statistics(const Stream& stream, std::int64_t length, const float* g, const float* w,
                       const float* e, double* out) {
  ASGD_CHECK(length >= 1, "Parzen statistics over {} elements", length);
  ASGD_DISPATCH_CUDA(stream, parzen_statistics(stream, length, g, w, e, out));
  const int threads = detail::host_threads(stream, length, kGrain);
  std::vector<Stats> partial(threads);
  detail::run_partitioned(threads, length, [&](int t, std::int64_t i0, std::int64_t i1) {
    partial[t] = statistics_range(g, w, e, i0, i1);
  });
  Stats total;
  for (const Stats& p : partial) {
    total.dot += p.dot;
    total.gg += p.gg;
    total.dd += p.dd;
  }
  out[0] = total.dot;
  out[1] = total.gg;
  out[2] = total.dd;
}

void parzen_decide(const Stream& stream, const ParzenParams& params, int count,
                   const double* stats, const std::int64_t* lengths, float* history,
                   std::int64_t* history_seen, std::int32_t* accept, std::int64_t* counters) {
  ASGD_CHECK(count >= 0 && count <= kMaxMergeMessages, "{} messages in one decision (max {})",
             count, kMaxMergeMessages);
  ASGD_CHECK(params.history >= 1 && params.history <= kMaxParzenHistory && params.warmup >= 0,
             "Parzen history {} (1 to {}) / warm-up {}", params.history, kMaxParzenHistory,
             params.warmup);
  for (int m = 0; m < count; ++m)
    ASGD_CHECK(lengths[m] >= 1, "message {} has length {}", m, lengths[m]);
  if (count == 0) return;
  ASGD_DISPATCH_CUDA(stream, parzen_decide(stream, params, count, stats, lengths, history,
                                           history_seen, accept, counters));
  const bool bare = std::isinf(params.window);
  for (int m = 0; m < count; ++m) {
    const double dot = stats[4 * m], gg = stats[4 * m + 1], dd = stats[4 * m + 2];
    if (!params.filter) {
      accept[m] = 1;
      ++counters[kAccepted];
      continue;
    }
    accept[m] = 0;
    if (!std::isfinite(dot) || !std::isfinite(gg) || !std::isfinite(dd)) {
      ++counters[kNonFinite];
      continue;
    }
    const double d2 = dd / static_cast<double>(lengths[m]);
    const std::int64_t seen = *history_seen;
    const int filled = static_cast<int>(std::min<std::int64_t>(seen, params.history));
    bool window_ok = true;
    if (!bare) {
      window_ok = seen >= params.warmup && filled > 0 &&
                  d2 <= static_cast<double>(params.window) * median(history, filled);
    }
    history[seen % params.history] = static_cast<float>(d2);
    *history_seen = seen + 1;
    if (!(dot > 0.5 * static_cast<double>(params.margin) * static_cast<double>(params.eps) * gg)) {
      ++counters[kRejectedDirection];
    } else if (!window_ok) {
      ++counters[kRejectedWindow];
    } else {
      accept[m] = 1;
      ++counters[kAccepted];
    }
  }
}

void parzen_merge(const Stream& stream, MergeRule rule, float eps, float alpha, std::int64_t n,
                  const float* g, float* w, const MergeRange* ranges, int count,
                  const std::int32_t* accept) {
  ASGD_CHECK(n >= 0 && count >= 0 && count <= kMaxMergeMessages,
             "Parzen merge of {} messages into {} elements", count, n);
  for (int m = 0; m < count; ++m)
    ASGD_CHECK(ranges[m].offset >= 0 && ranges[m].length >= 1 &&
                   ranges[m].offset + ranges[m].length <= n,
               "message range [{}, {}) outside the state of {} elements", ranges[m].offset,
               ranges[m].offset + ranges[m].length, n);
  if (n == 0) return;
  ASGD_DISPATCH_CUDA(stream, parzen_merge(stream, rule, eps, alpha, n, g, w, ranges, count, accept));

  // Cut [0, n) where an accepted range starts or ends: inside each piece the same set of
  // ranges covers every element, so the rule has the same coefficients throughout.
  const MergeRange* taken[kMaxMergeMessages];
  int taken_count = 0;
  std::int64_t cut_storage[2 * kMaxMergeMessages + 2] = {0, n};
  int cut_count = 2;
  for (int m = 0; m < count; ++m) {
    if (!accept[m]) continue;
    taken[taken_count++] = &ranges[m];
    cut_storage[cut_count++] = ranges[m].offset;
    cut_storage[cut_count++] = ranges[m].offset + ranges[m].length;
  }
  std::sort(cut_storage, cut_storage + cut_count);
  const std::int64_t* const cuts = cut_storage;
  const int pieces = static_cast<int>(std::unique(cut_storage, cut_storage + cut_count) - cut_storage) - 1;

  detail::parallel_for(stream, n, kGrain, [&](std::int64_t lo, std::int64_t hi) {
    const MergeRange* active[kMaxMergeMessages];
    for (int p = 0; p < pieces; ++p) {
      const std::int64_t a = std::max(lo, cuts[p]), b = std::min(hi, cuts[p + 1]);
      if (a >= b) continue;
      int c = 0;
      for (int t = 0; t < taken_count; ++t)
        if (taken[t]->offset <= a && taken[t]->offset + taken[t]->length >= b) active[c++] = taken[t];
      const MergeCoefficients k = merge_coefficients(rule, eps, alpha, c);
      merge_interval(k.a, k.b, k.e, g, w, active, c, a, b);
    }
  });
}

}  // namespace asgd
