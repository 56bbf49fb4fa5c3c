// The Parzen-window test and merge (kernels/parzen.h) on CUDA.
//
// parzen_statistics: one grid-stride pass reads g, w and e once (12 bytes per element, nothing
// written but 3 doubles) and accumulates dot(g, w - e), ||g||^2 and ||w - e||^2 per thread in
// double; each block reduces its three partials with cub::BlockReduce and the last block adds
// all blocks' partials in block order to `out`, zeroed by a cudaMemsetAsync before (grid_sum.cuh,
// the scheme of reduce.cu): the same bits every run, as deterministic mode needs.
// g and w are offset pointers into the state, so alignment is checked at run time: when g and
// w share their position within 16 bytes they are read as float4 after at most 3 leading
// scalars, and e too when it shares that position, else e is read as 4 scalars. The grid is
// one resident wave (more blocks would only form a partial second wave of the grid-stride
// loop), which keeps enough loads in flight to be bandwidth-bound; the double arithmetic
// (3 conversions and 4 operations per element) stays far below the FP64 rate of datacenter
// GPUs. Sums are the same bits every run (grid_sum.cuh). Non-finite values:
// a NaN or Inf input propagates; a square that would overflow float, which makes the host's
// float arithmetic infinite, sets ||w - e||^2 to +Inf. Unlike the host, a sum that exceeds the
// float range only through accumulation stays finite (the host adds up to 1024 terms in
// float first).
//
// parzen_decide: one block of 256 threads; the messages are decided one after another, in
// index order, exactly as the host does (same double comparisons, same float median, same
// counter and history-ring updates). For the window it keeps the last `history` distances as
// a sorted copy in shared memory: the ring is sorted once per call (a bitonic network padded
// virtually with +Inf: log2(P)(log2(P)+1)/2 barrier-separated steps over P = next power of
// two >= H, O(H log^2 H / 256) work), then each message reads the median in O(1) and replaces
// the value it evicts from the ring by its own with two binary searches (O(log H)) and a
// shift of the values between the two positions (O(|shift| / 256), one barrier per 256
// values). The history needs H * 4 bytes of shared memory, at most kMaxParzenHistory * 4 =
// 32 KiB: with the kernel's static 2.4 KB within the 48 KiB every GPU gives a block without
// opting in (the caller checks H against kMaxParzenHistory for both backends).
// The `lengths` and the parameters travel in the kernel's parameter block; the statistics,
// the values the first pushes evict and the values pushed are staged in shared memory, so
// global memory is read once at the start and written only for results.
//
// parzen_merge: every element i takes w <- a*w - b*g + e*(sum of the accepted ranges covering
// it), with (a, b, e) for the number c of such ranges from a table of kMaxMergeMessages + 1
// coefficient triples computed on the host by the host implementation's own float formulas.
// The ranges (pointer, first and last element) and the table travel in the kernel's
// parameter block (about 2.4 KB, under the 4 KB limit) and are copied into shared memory once
// per block, with the accept flags. The grid walks tiles of 256 float4 groups (or 256
// elements when g and w are not co-aligned); per tile, threads 0..63 mark with a warp ballot
// the accepted ranges that intersect the tile, and each thread loops over those only, in
// index order, counting c per element and then adding each covering range's value: a range
// that covers a whole group and shares w's alignment is read as one float4, else per element.
// The arithmetic is the host's, in the host's order, with the rounding intrinsics that forbid
// FMA contraction: on a host build without FMA (x86-64 by default) both backends agree
// bitwise. Reads g and w, and each accepted range once where it covers; writes w once:
// 12 + 4 * c bytes per element.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include <cub/block/block_reduce.cuh>

#include "kernels/cuda/grid_sum.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/detail/cuda_ops.h"
#include "runtime/detail/cuda_check.cuh"

namespace asgd::cuda_ops {
namespace {
constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
// Each thread of the statistics pass should get at least this many elements.
constexpr std::int64_t kElementsPerThread = 16;
// Shared memory a block may use without opting in: the largest history and the decision's
// static arrays (about 2.4 KB) must fit.
constexpr std::size_t kDefaultSharedBytes = 48 * 1024;
static_assert(kMaxParzenHistory * sizeof(float) + 4096 <= kDefaultSharedBytes,
              "the largest Parzen history no longer fits the default shared memory of a block");
constexpr double kFloatMax = std::numeric_limits<float>::max();
constexpr double kInfinity = std::numeric_limits<double>::infinity();

static_assert(kThreads >= 2 * kWarp && 2 * kWarp >= kMaxMergeMessages,
              "two warps vote on the ranges");

std::uintptr_t address(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p);
}

// The grid of a grid-stride kernel: `wanted` blocks, at most one resident wave on the stream's
// device. Every block gets the same share of the loop, so blocks beyond one wave would run as
// a partial second wave with most multiprocessors idle.
template <typename Kernel>
int resident_grid(const Stream& stream, Kernel kernel, std::int64_t wanted) {
  int processors = 0, per_processor = 0;
  ASGD_CHECK_CUDA(
      cudaDeviceGetAttribute(&processors, cudaDevAttrMultiProcessorCount, stream.device()));
  ASGD_CHECK_CUDA(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_processor, kernel, kThreads, 0));
  const std::int64_t wave = std::max<std::int64_t>(1, std::int64_t{processors} * per_processor);
  return static_cast<int>(std::clamp<std::int64_t>(wanted, 1, wave));
}

// ---------------------------------------------------------------------------------------------
// Statistics

struct Moments {
  double dot;
  double gg;
  double dd;
};

struct AddMoments {
  __device__ Moments operator()(const Moments& x, const Moments& y) const {
    return {x.dot + y.dot, x.gg + y.gg, x.dd + y.dd};
  }
};

// One element's terms in double (w - e is exact there unless the exponents are far apart;
// each product rounds once). `overflow` records a square beyond the float range.
__device__ __forceinline__ void add_element(float g, float w, float e, Moments& m, bool& overflow) {
  const double gd = g;
  const double d = static_cast<double>(w) - static_cast<double>(e);
  const double gg = gd * gd, dd = d * d;
  m.dot += gd * d;
  m.gg += gg;
  m.dd += dd;
  overflow |= gg > kFloatMax || dd > kFloatMax;
}

// kVector: g and w are read as float4 from element `head` on (they share their alignment),
// e too with kVectorE. The elements before `head` and after the last whole float4 (at most 3
// each) go to the first threads of the grid.
template <bool kVector, bool kVectorE>
__global__ void __launch_bounds__(kThreads)
    statistics_kernel(std::int64_t n, std::int64_t head, const float* __restrict__ g,
                      const float* __restrict__ w, const float* __restrict__ e, GridSum scratch,
                      double* out) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t start = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  Moments m{0.0, 0.0, 0.0};
  bool overflow = false;
  if constexpr (kVector) {
    const std::int64_t groups = (n - head) / 4;
    const auto* g4 = reinterpret_cast<const float4*>(g + head);
    const auto* w4 = reinterpret_cast<const float4*>(w + head);
    const float* eh = e + head;
    for (std::int64_t j = start; j < groups; j += stride) {
      const float4 gv = g4[j];
      const float4 wv = w4[j];
      float4 ev;
      if constexpr (kVectorE) {
        ev = reinterpret_cast<const float4*>(eh)[j];
      } else {
        ev = make_float4(eh[4 * j], eh[4 * j + 1], eh[4 * j + 2], eh[4 * j + 3]);
      }
      add_element(gv.x, wv.x, ev.x, m, overflow);
      add_element(gv.y, wv.y, ev.y, m, overflow);
      add_element(gv.z, wv.z, ev.z, m, overflow);
      add_element(gv.w, wv.w, ev.w, m, overflow);
    }
    const std::int64_t tail = head + 4 * groups;
    if (start < head) add_element(g[start], w[start], e[start], m, overflow);
    if (start < n - tail)
      add_element(g[tail + start], w[tail + start], e[tail + start], m, overflow);
  } else {
    for (std::int64_t i = start; i < n; i += stride)
      add_element(g[i], w[i], e[i], m, overflow);
  }
  if (overflow) m.dd = kInfinity;

  using BlockReduce = cub::BlockReduce<Moments, kThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  const Moments total = BlockReduce(temp).Reduce(m, AddMoments{});
  const double values[3] = {total.dot, total.gg, total.dd};
  grid_sum_add<3, kThreads>(scratch, values, out);
}

template <bool kVector, bool kVectorE>
void launch_statistics(const Stream& stream, std::int64_t n, std::int64_t head, const float* g,
                       const float* w, const float* e, double* out) {
  auto s = static_cast<cudaStream_t>(stream.native());
  auto* kernel = statistics_kernel<kVector, kVectorE>;
  const std::int64_t per_block = kThreads * kElementsPerThread;
  const int blocks = resident_grid(stream, kernel, (n + per_block - 1) / per_block);
  // Fetched before the launch: its first use allocates and may throw, which must not happen
  // between pushing the launch configuration and the launch.
  const GridSum scratch = grid_sum_scratch(stream, blocks);
  kernel<<<blocks, kThreads, 0, s>>>(n, head, g, w, e, scratch, out);
  ASGD_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------------------------
// Decisions

struct DecideArgs {
  const double* stats;
  float* history;
  std::int64_t* history_seen;
  std::int32_t* accept;
  std::int64_t* counters;
  float eps;
  float margin;
  float window;
  int history_size;
  int warmup;
  int count;
  bool filter;
  bool bare;
  std::int64_t lengths[kMaxMergeMessages];
};
static_assert(sizeof(DecideArgs) <= 4096, "kernel parameters are limited to 4 KB");

// The first position in the ascending s[0, n) whose value is not below v. Every thread of the
// block searches alike (the reads are broadcasts).
__device__ int lower_bound(const float* s, int n, float v) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (s[mid] < v) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Sorts s[0, n) ascending: a bitonic network whose merges start with a mirrored compare, so
// that every compare puts the smaller value first and the positions from n up to the next
// power of two can stand for +Inf without being stored (a compare with one of them is a no-op).
__device__ void sort_block(float* s, int n) {
  for (int k = 2; k < 2 * n; k *= 2) {
    for (int j = k / 2; j > 0; j /= 2) {
      for (int i = static_cast<int>(threadIdx.x); i < n; i += kThreads) {
        const int partner = j == k / 2 ? (i ^ (k - 1)) : (i ^ j);
        if (partner > i && partner < n) {
          const float x = s[i], y = s[partner];
          if (y < x) {
            s[i] = y;
            s[partner] = x;
          }
        }
      }
      __syncthreads();
    }
  }
}

// s[i + 1] = s[i] for i in [lo, hi), 256 values at a time from the top down, one barrier
// each: a chunk reads below what the chunk before it wrote, and writes the one value that
// chunk read only after the barrier that follows the read. The caller's next barrier
// publishes the last chunk's writes.
__device__ void shift_up(float* s, int lo, int hi) {
  for (int top = hi; top > lo; top -= kThreads) {
    const int i = top - 1 - static_cast<int>(threadIdx.x);
    const bool active = i >= lo;
    const float v = active ? s[i] : 0.0f;
    __syncthreads();
    if (active) s[i + 1] = v;
  }
}

// s[i - 1] = s[i] for i in [lo, hi), 256 values at a time from the bottom up, one barrier
// each (the mirror image of shift_up).
__device__ void shift_down(float* s, int lo, int hi) {
  for (int base = lo; base < hi; base += kThreads) {
    const int i = base + static_cast<int>(threadIdx.x);
    const bool active = i < hi;
    const float v = active ? s[i] : 0.0f;
    __syncthreads();
    if (active) s[i - 1] = v;
  }
}

// Adds v to the ascending s[0, n) (n grows by one).
__device__ void insert_sorted(float* s, int n, float v) {
  const int q = lower_bound(s, n, v);
  __syncthreads();  // every thread has read s before it changes
  shift_up(s, q, n);
  if (threadIdx.x == 0) s[q] = v;
  __syncthreads();
}

// Replaces one value equal to `old` in the ascending s[0, n) by v, keeping it sorted. The
// clamps only matter for values that compare unordered (NaN), which never enter the history.
__device__ void replace_sorted(float* s, int n, float old, float v) {
  const int found = lower_bound(s, n, old);
  const int p = found < n ? found : n - 1;  // s[p] == old
  const int below = lower_bound(s, n, v);   // values < v, `old` among them if old < v
  __syncthreads();                          // every thread has read s before it changes
  int q;
  if (old < v) {
    q = below - 1 > p ? below - 1 : p;
    shift_down(s, p + 1, q + 1);
  } else {
    q = below < p ? below : p;
    shift_up(s, q, p);
  }
  if (threadIdx.x == 0) s[q] = v;
  __syncthreads();
}

// The host's median of n values: the middle one, or for even n the float mean of the two
// middle ones.
__device__ float median_of_sorted(const float* s, int n) {
  const int mid = n / 2;
  if (n % 2 == 1) return s[mid];
  return __fmul_rn(0.5f, __fadd_rn(s[mid], s[mid - 1]));
}

// One block. Every thread walks the messages alike (uniform control flow, so the barriers in
// the sorted-history updates are reached by all); thread 0 writes the results.
__global__ void __launch_bounds__(kThreads) decide_kernel(const __grid_constant__ DecideArgs a) {
  __shared__ double s_stats[3 * kMaxMergeMessages];
  __shared__ float s_evicted[kMaxMergeMessages];  // ring values the first pushes overwrite
  __shared__ float s_pushed[kMaxMergeMessages];   // values pushed by this call, in order
  extern __shared__ float s_sorted[];             // the ring's values in ascending order
  const int t = static_cast<int>(threadIdx.x);

  if (!a.filter) {
    for (int m = t; m < a.count; m += kThreads)
      a.accept[m] = 1;
    if (t == 0) a.counters[kAccepted] += a.count;
    return;
  }

  const int h = a.history_size;
  const bool window = !a.bare;
  const std::int64_t seen0 = *a.history_seen;
  for (int m = t; m < a.count; m += kThreads) {
    s_stats[3 * m] = a.stats[4 * m];
    s_stats[3 * m + 1] = a.stats[4 * m + 1];
    s_stats[3 * m + 2] = a.stats[4 * m + 2];
  }
  if (window) {
    // Push k of this call overwrites slot (seen0 + k) % h: a value from before the call for
    // k < h (when the ring is full), the value of push k - h after that.
    for (int k = t; k < a.count && k < h; k += kThreads)
      s_evicted[k] = a.history[(seen0 + k) % h];
    const int filled = seen0 < h ? static_cast<int>(seen0) : h;
    for (int i = t; i < filled; i += kThreads)
      s_sorted[i] = a.history[i];
    __syncthreads();
    sort_block(s_sorted, filled);
  }
  __syncthreads();

  std::int64_t seen = seen0;
  long long accepted = 0, rejected_direction = 0, rejected_window = 0, nonfinite = 0;
  for (int m = 0; m < a.count; ++m) {
    const double dot = s_stats[3 * m], gg = s_stats[3 * m + 1], dd = s_stats[3 * m + 2];
    std::int32_t verdict = 0;
    if (!isfinite(dot) || !isfinite(gg) || !isfinite(dd)) {
      ++nonfinite;
    } else {
      const double d2 = dd / static_cast<double>(a.lengths[m]);
      const float v = __double2float_rn(d2);
      bool window_ok = true;
      if (window) {
        const int filled = seen < h ? static_cast<int>(seen) : h;
        window_ok = seen >= a.warmup && filled > 0 &&
                    d2 <= static_cast<double>(a.window) *
                              static_cast<double>(median_of_sorted(s_sorted, filled));
        const int push = static_cast<int>(seen - seen0);
        if (t == 0) s_pushed[push] = v;  // read by later messages, after a barrier below
        if (seen >= h) {
          replace_sorted(s_sorted, h, push >= h ? s_pushed[push - h] : s_evicted[push], v);
        } else {
          insert_sorted(s_sorted, filled, v);
        }
      }
      if (t == 0) a.history[seen % h] = v;
      ++seen;
      if (!(dot > 0.5 * static_cast<double>(a.margin) * static_cast<double>(a.eps) * gg)) {
        ++rejected_direction;
      } else if (!window_ok) {
        ++rejected_window;
      } else {
        verdict = 1;
        ++accepted;
      }
    }
    if (t == 0) a.accept[m] = verdict;
  }
  if (t == 0) {
    a.counters[kAccepted] += accepted;
    a.counters[kRejectedDirection] += rejected_direction;
    a.counters[kRejectedWindow] += rejected_window;
    a.counters[kNonFinite] += nonfinite;
    *a.history_seen = seen;
  }
}

// ---------------------------------------------------------------------------------------------
// Merge

// w <- a*w - b*g + e * (each covering accepted range's value).
using Coefficients = MergeCoefficients;

// Element i of [lo, hi) of the state is data[i - lo].
struct RangeBounds {
  const float* data;
  std::int64_t lo;
  std::int64_t hi;
};

struct MergeArgs {
  const float* g;
  float* w;
  const std::int32_t* accept;
  std::int64_t n;
  std::int64_t head;      // elements before the first float4 (vector kernel only)
  std::uint64_t aligned;  // bit m: range m's data shares w's alignment (vector kernel only)
  int count;
  Coefficients coefficients[kMaxMergeMessages + 1];  // by the number of covering ranges
  RangeBounds ranges[kMaxMergeMessages];
};
static_assert(sizeof(MergeArgs) <= 4096, "kernel parameters are limited to 4 KB");

__device__ __forceinline__ bool covers(const RangeBounds& r, std::int64_t i) {
  return i >= r.lo && i < r.hi;
}

// Merges the kLanes elements from i0 (a float4 group when kLanes == 4: g + i0 and w + i0 are
// 16-byte aligned) with the ranges in `mask`, in index order, as the host does: first
// a*w - b*g with the coefficients of each element's count, then + e*value per range.
template <int kLanes>
__device__ __forceinline__ void merge_elements(const float* __restrict__ g, float* __restrict__ w,
                                               const RangeBounds* ranges,
                                               const Coefficients* coefficients, std::uint64_t mask,
                                               std::uint64_t aligned, std::int64_t i0) {
  float gv[kLanes], wv[kLanes];
  if constexpr (kLanes == 4) {
    const float4 g4 = *reinterpret_cast<const float4*>(g + i0);
    const float4 w4 = *reinterpret_cast<const float4*>(w + i0);
    gv[0] = g4.x, gv[1] = g4.y, gv[2] = g4.z, gv[3] = g4.w;
    wv[0] = w4.x, wv[1] = w4.y, wv[2] = w4.z, wv[3] = w4.w;
  } else {
    gv[0] = g[i0];
    wv[0] = w[i0];
  }
  int c[kLanes];
#pragma unroll
  for (int l = 0; l < kLanes; ++l)
    c[l] = 0;
  for (std::uint64_t rest = mask; rest != 0; rest &= rest - 1) {
    const RangeBounds& r = ranges[__ffsll(static_cast<long long>(rest)) - 1];
#pragma unroll
    for (int l = 0; l < kLanes; ++l)
      c[l] += covers(r, i0 + l) ? 1 : 0;
  }
  float acc[kLanes], scale[kLanes];
#pragma unroll
  for (int l = 0; l < kLanes; ++l) {
    const Coefficients k = coefficients[c[l]];
    acc[l] = __fsub_rn(__fmul_rn(k.a, wv[l]), __fmul_rn(k.b, gv[l]));
    scale[l] = k.e;
  }
  for (std::uint64_t rest = mask; rest != 0; rest &= rest - 1) {
    const int m = __ffsll(static_cast<long long>(rest)) - 1;
    const RangeBounds& r = ranges[m];
    if constexpr (kLanes == 4) {
      if (r.lo <= i0 && i0 + 4 <= r.hi && ((aligned >> m) & 1u) != 0) {
        const float4 e4 = *reinterpret_cast<const float4*>(r.data + (i0 - r.lo));
        acc[0] = __fadd_rn(acc[0], __fmul_rn(scale[0], e4.x));
        acc[1] = __fadd_rn(acc[1], __fmul_rn(scale[1], e4.y));
        acc[2] = __fadd_rn(acc[2], __fmul_rn(scale[2], e4.z));
        acc[3] = __fadd_rn(acc[3], __fmul_rn(scale[3], e4.w));
        continue;
      }
    }
#pragma unroll
    for (int l = 0; l < kLanes; ++l)
      if (covers(r, i0 + l)) acc[l] = __fadd_rn(acc[l], __fmul_rn(scale[l], r.data[i0 + l - r.lo]));
  }
  if constexpr (kLanes == 4) {
    *reinterpret_cast<float4*>(w + i0) = make_float4(acc[0], acc[1], acc[2], acc[3]);
  } else {
    w[i0] = acc[0];
  }
}

// kVector: g and w share their alignment and hold at least 8 elements; float4 groups start at
// element `head`, and block 0 also merges the at most 3 elements before and after them.
template <bool kVector>
__global__ void __launch_bounds__(kThreads) merge_kernel(const __grid_constant__ MergeArgs a) {
  constexpr int kLanes = kVector ? 4 : 1;
  __shared__ Coefficients s_coefficients[kMaxMergeMessages + 1];
  __shared__ RangeBounds s_ranges[kMaxMergeMessages];
  __shared__ std::uint32_t s_accepted[2];
  __shared__ std::uint32_t s_tile[2][2];  // double-buffered: one barrier per tile
  const int t = static_cast<int>(threadIdx.x);

  for (int c = t; c <= a.count; c += kThreads)
    s_coefficients[c] = a.coefficients[c];
  // Thread m < count keeps range m's flag and bounds for the votes.
  bool mine = false;
  std::int64_t my_lo = 0, my_hi = 0;
  if (t < a.count) {
    s_ranges[t] = a.ranges[t];
    mine = a.accept[t] != 0;
    my_lo = a.ranges[t].lo;
    my_hi = a.ranges[t].hi;
  }
  if (t < 2 * kWarp) {
    const unsigned votes = __ballot_sync(kFullMask, mine);
    if (t % kWarp == 0) s_accepted[t / kWarp] = votes;
  }
  __syncthreads();

  const std::int64_t first = kVector ? a.head : 0;
  const std::int64_t groups = (a.n - first) / kLanes;
  if constexpr (kVector) {
    if (blockIdx.x == 0) {
      const std::uint64_t accepted = s_accepted[0] | (std::uint64_t{s_accepted[1]} << 32);
      const std::int64_t tail = first + 4 * groups;
      std::int64_t i = -1;
      if (t < a.head) {
        i = t;
      } else if (t >= 4 && t - 4 < a.n - tail) {
        i = tail + (t - 4);
      }
      if (i >= 0) merge_elements<1>(a.g, a.w, s_ranges, s_coefficients, accepted, 0, i);
    }
  }

  int buffer = 0;
  for (std::int64_t tile = blockIdx.x; tile * kThreads < groups; tile += gridDim.x) {
    const std::int64_t g0 = tile * kThreads;
    const std::int64_t lo = first + g0 * kLanes;
    const std::int64_t hi = first + (g0 + kThreads < groups ? g0 + kThreads : groups) * kLanes;
    if (t < 2 * kWarp) {
      const unsigned votes = __ballot_sync(kFullMask, mine && my_lo < hi && my_hi > lo);
      if (t % kWarp == 0) s_tile[buffer][t / kWarp] = votes;
    }
    __syncthreads();
    const std::uint64_t mask = s_tile[buffer][0] | (std::uint64_t{s_tile[buffer][1]} << 32);
    buffer ^= 1;
    if (g0 + t < groups)
      merge_elements<kLanes>(a.g, a.w, s_ranges, s_coefficients, mask, a.aligned,
                             first + (g0 + t) * kLanes);
  }
}

template <bool kVector>
void launch_merge(const Stream& stream, const MergeArgs& args) {
  auto s = static_cast<cudaStream_t>(stream.native());
  auto* kernel = merge_kernel<kVector>;
  const std::int64_t groups = kVector ? (args.n - args.head) / 4 : args.n;
  const int blocks = resident_grid(stream, kernel, (groups + kThreads - 1) / kThreads);
  kernel<<<blocks, kThreads, 0, s>>>(args);
  ASGD_CHECK_LAUNCH();
}
}  // namespace

void parzen_statistics(const Stream& stream, std::int64_t length, const float* g, const float* w,
                       const float* e, double* out) {
  detail::prepare_launch(stream);
  ASGD_CHECK_CUDA(
      cudaMemsetAsync(out, 0, 3 * sizeof(double), static_cast<cudaStream_t>(stream.native())));
  if (length <= 0) return;
  const std::uintptr_t misalign = address(w) % 16;
  const bool vector = length >= 8 && misalign % 4 == 0 && address(g) % 16 == misalign;
  if (!vector) {
    launch_statistics<false, false>(stream, length, 0, g, w, e, out);
    return;
  }
  const auto head = static_cast<std::int64_t>((16 - misalign) % 16 / 4);
  if (address(e) % 16 == misalign) {
    launch_statistics<true, true>(stream, length, head, g, w, e, out);
  } else {
    launch_statistics<true, false>(stream, length, head, g, w, e, out);
  }
}

void parzen_decide(const Stream& stream, const ParzenParams& params, int count, const double* stats,
                   const std::int64_t* lengths, float* history, std::int64_t* history_seen,
                   std::int32_t* accept, std::int64_t* counters) {
  if (count <= 0) return;
  DecideArgs args{};
  args.stats = stats;
  args.history = history;
  args.history_seen = history_seen;
  args.accept = accept;
  args.counters = counters;
  args.eps = params.eps;
  args.margin = params.margin;
  args.window = params.window;
  args.history_size = params.history;
  args.warmup = params.warmup;
  args.count = count;
  args.filter = params.filter;
  args.bare = std::isinf(params.window);
  for (int m = 0; m < count; ++m) {
    // A message covers at least one element; a zero length would push a NaN distance.
    ASGD_CHECK(lengths[m] >= 1, "message {} of a Parzen decision has length {}", m, lengths[m]);
    args.lengths[m] = lengths[m];
  }

  detail::prepare_launch(stream);
  const bool sorted = args.filter && !args.bare;
  const std::size_t shared = sorted ? static_cast<std::size_t>(params.history) * sizeof(float) : 0;
  decide_kernel<<<1, kThreads, shared, static_cast<cudaStream_t>(stream.native())>>>(args);
  ASGD_CHECK_LAUNCH();
}

void parzen_merge(const Stream& stream, MergeRule rule, float eps, float alpha, std::int64_t n,
                  const float* g, float* w, const MergeRange* ranges, int count,
                  const std::int32_t* accept) {
  if (n <= 0) return;
  MergeArgs args{};
  args.g = g;
  args.w = w;
  args.accept = accept;
  args.n = n;
  args.count = count;
  for (int c = 0; c <= count; ++c)
    args.coefficients[c] = merge_coefficients(rule, eps, alpha, c);

  const std::uintptr_t misalign = address(w) % 16;
  const bool vector = n >= 8 && misalign % 4 == 0 && address(g) % 16 == misalign;
  args.head = vector ? static_cast<std::int64_t>((16 - misalign) % 16 / 4) : 0;
  for (int m = 0; m < count; ++m) {
    const MergeRange& r = ranges[m];
    args.ranges[m] = {r.data, r.offset, r.offset + r.length};
    // Element i of the range sits at r.data + (i - offset): at w + i's offset within 16 bytes
    // when r.data - offset does (unsigned arithmetic is exact modulo 16).
    const std::uintptr_t base = address(r.data) - 4 * static_cast<std::uintptr_t>(r.offset);
    if (vector && (base - address(w)) % 16 == 0) args.aligned |= std::uint64_t{1} << m;
  }

  detail::prepare_launch(stream);
  if (vector) {
    launch_merge<true>(stream, args);
  } else {
    launch_merge<false>(stream, args);
  }
}

}  // namespace asgd::cuda_ops
