// The Parzen-window test and merge of DESIGN.md section 1, steps 3 and 4: how a worker decides
// which received states to take and folds them into its own state in the same pass as its
// SGD step.
//
// A received message e covers the range R = [offset, offset + length) of the flat state. It
// is accepted iff
//   direction:  dot(g_R, w_R - e) > margin * (eps/2) * ||g_R||^2
//               (margin 1, the default: the local step moves w towards e; margin 0: moving w
//               towards e is a descent direction, to first order)
//   window:     d2 = ||w_R - e||^2 / length <= window * median(d2 of the last `history`
//               messages received), after `warmup` messages have been seen
//   finite:     every value involved is finite (a NaN/Inf, or a value so large that its square
//               overflows, rejects the message and is counted as non-finite)
// window = +-inf is the bare direction test (no warm-up). With `filter` off every message is
// accepted (the "asgd-nofilter" baseline). A message rejected for several reasons is counted
// once: non-finite first, then direction, then window.
//
// The three launchers below are asynchronous on CUDA; decisions and counters stay on the
// device and are read by the host only at logging intervals.
#pragma once

#include <algorithm>
#include <cstdint>

#include "runtime/device.h"

namespace asgd {

// At most this many messages are tested and merged in one step; more stay in their slots.
inline constexpr int kMaxMergeMessages = 64;
// The largest window history H: the CUDA decision keeps a sorted copy in shared memory.
inline constexpr int kMaxParzenHistory = 8192;

enum class MergeRule {
  kSeed,     // w <- w - eps/(c+1) * g - min(eps, 1)/(c+1) * sum_e (w - e)
  kAverage,  // w <- ((w - eps*g) + sum_e e) / (c+1)
  kElastic,  // w' = w - eps*g;  w <- w' - alpha * (w' - mean_e e)
};

struct ParzenParams {
  float eps = 0.05f;     // the step size of this step
  float window = 4.0f;   // r; +inf: direction test only
  float margin = 1.0f;   // of the direction test, in [0, 1]
  int history = 64;      // H, in [1, kMaxParzenHistory]
  int warmup = 8;        // messages seen before the window can accept
  bool filter = true;
};

// Counters, in this order, in an int64 array of kParzenCounterCount on the device.
enum ParzenCounter : int {
  kAccepted = 0,
  kRejectedDirection = 1,
  kRejectedWindow = 2,
  kNonFinite = 3,
  kParzenCounterCount = 4,
};

// One pass over a range: out[0] = dot(g, w - e), out[1] = ||g||^2, out[2] = ||w - e||^2
// (overwritten; out[3] is padding, never written, so that messages sit 4 doubles apart).
// g and w point at the range's first element. Partial sums are float within blocks of 1024 on
// the host and double on CUDA, so a range whose squares sum past the float range can be
// non-finite on the host only; either way such a message is rejected.
void parzen_statistics(const Stream& stream, std::int64_t length, const float* g, const float* w,
                       const float* e, double* out);

// The decisions for `count` messages whose statistics are stats[4*m .. 4*m+2] and whose
// lengths (host array) are `lengths`: writes accept[m] (0 or 1), adds to counters, and pushes
// each finite d2 into the history ring. `history` holds params.history floats and
// `history_seen` (one int64) the number of values pushed so far; both start zeroed.
void parzen_decide(const Stream& stream, const ParzenParams& params, int count,
                   const double* stats, const std::int64_t* lengths, float* history,
                   std::int64_t* history_seen, std::int32_t* accept, std::int64_t* counters);

// One received range for parzen_merge: `data` is memory of the stream's device.
struct MergeRange {
  const float* data = nullptr;
  std::int64_t offset = 0;
  std::int64_t length = 0;
};

// The rule for an element covered by c accepted ranges, as w <- a*w - b*g + e*sum(e_m):
// both backends use these float formulas, so they agree bit for bit without FMA.
struct MergeCoefficients {
  float a = 1.0f;
  float b = 0.0f;
  float e = 0.0f;
};
inline MergeCoefficients merge_coefficients(MergeRule rule, float eps, float alpha, int c) {
  if (c == 0) return {1.0f, eps, 0.0f};  // the plain SGD step
  const float k = static_cast<float>(c);
  switch (rule) {
    case MergeRule::kSeed: {
      // The pull's strength is capped at 1/(c+1), where w lands on the mean of itself and the
      // c states: beyond that it would overshoot them, and a step size of 1 or more (normal for
      // K-Means) made a pair of workers diverge within 100 steps.
      const float pull = std::min(eps, 1.0f);
      return {1.0f - pull * k / (k + 1.0f), eps / (k + 1.0f), pull / (k + 1.0f)};
    }
    case MergeRule::kAverage:
      return {1.0f / (k + 1.0f), eps / (k + 1.0f), 1.0f / (k + 1.0f)};
    case MergeRule::kElastic:
      return {1.0f - alpha, (1.0f - alpha) * eps, alpha / k};
  }
  return {1.0f, eps, 0.0f};
}

// Applies the merge rule and the SGD step to all n elements of w: an element covered by c
// accepted ranges (accept[m] != 0, a device array) takes the rule with those c states, an
// element covered by none takes w - eps*g. `ranges` is a host array of `count` entries.
void parzen_merge(const Stream& stream, MergeRule rule, float eps, float alpha, std::int64_t n,
                  const float* g, float* w, const MergeRange* ranges, int count,
                  const std::int32_t* accept);

}  // namespace asgd
