// Loss functions (kernels/loss.h) on CUDA: one warp per row, 8 rows per block at a time.
// The lanes stride over the row's columns, so a row of any width works (for the usual 10
// classes most lanes idle, but the whole batch is a few kB). Each thread keeps its share of
// the loss (double) and of the correct count; a block reduces them with cub::BlockReduce, adds
// its count with an integer atomicAdd and its loss through grid_sum.cuh (the last block adds
// every block's loss in block order), so the loss is the same bits every run.
//
// Reads 4 bytes per logit (softmax reads the row three times, from cache after the first),
// writes 4 bytes per gradient.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include <cub/block/block_reduce.cuh>

#include "kernels/cuda/grid_sum.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/detail/cuda_ops.h"
#include "runtime/detail/cuda_check.cuh"

namespace asgd::cuda_ops {
namespace {
constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int kRowsPerBlock = kThreads / kWarp;
constexpr std::int64_t kMaxBlocks = 2048;
constexpr unsigned kFullMask = 0xffffffffu;

// The first maximal element among the non-NaN columns seen so far. `index` is -1 before any
// (and stays -1 for a row of NaNs, which then predicts class 0, as on the host).
struct ArgMax {
  float value;
  std::int64_t index;
};

__device__ void argmax_update(ArgMax& a, float v, std::int64_t c) {
  // Columns arrive in increasing order per lane, so a strict > keeps the first maximum. A NaN
  // is never a candidate: kept, it would stop every later column of its lane from winning.
  if (isnan(v)) return;
  if (a.index < 0 || v > a.value) a = ArgMax{v, c};
}

// After the butterfly every lane holds the warp's first maximum: the larger value wins, a tie
// goes to the lower index.
__device__ ArgMax warp_argmax(ArgMax a) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const float v = __shfl_xor_sync(kFullMask, a.value, offset);
    const std::int64_t i = __shfl_xor_sync(kFullMask, a.index, offset);
    if (i >= 0 && (a.index < 0 || v > a.value || (v == a.value && i < a.index))) a = ArgMax{v, i};
  }
  return a;
}

__device__ float warp_sum(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// Adds the block's totals to the outputs; every thread of the block must call it.
__device__ void block_accumulate(double loss, long long correct, const GridSum& scratch,
                                 double* loss_sum, std::int64_t* correct_out) {
  using LossReduce = cub::BlockReduce<double, kThreads>;
  using CountReduce = cub::BlockReduce<long long, kThreads>;
  __shared__ typename LossReduce::TempStorage loss_temp;
  __shared__ typename CountReduce::TempStorage count_temp;
  const double block_loss = LossReduce(loss_temp).Sum(loss);
  const long long block_correct = CountReduce(count_temp).Sum(correct);
  if (threadIdx.x == 0 && correct_out)
    atomicAdd(reinterpret_cast<unsigned long long*>(correct_out),
              static_cast<unsigned long long>(block_correct));
  if (loss_sum) {
    const double values[1] = {block_loss};
    grid_sum_add<1, kThreads>(scratch, values, loss_sum);
  }
}

__global__ void __launch_bounds__(kThreads)
    softmax_cross_entropy_kernel(std::int64_t rows, std::int64_t cols, const float* logits,
                                 const std::int32_t* __restrict__ labels, float grad_scale,
                                 float* dlogits, GridSum scratch, double* loss_sum,
                                 std::int64_t* correct) {
  const int lane = threadIdx.x % kWarp;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * kRowsPerBlock;
  double loss = 0.0;
  long long hits = 0;
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
       r < rows; r += warps) {
    const float* z = logits + r * cols;
    const std::int32_t label = labels[r];
    const bool label_ok = label >= 0 && label < cols;

    ArgMax best{0.0f, -1};
    for (std::int64_t c = lane; c < cols; c += kWarp)
      argmax_update(best, z[c], c);
    best = warp_argmax(best);
    const float row_max = best.value;

    // Every lane reads the label's logit now, before any lane may overwrite it (dlogits may
    // alias logits); the shuffles below and the __syncwarp order these reads before the writes.
    const float z_label = label_ok ? z[label] : NAN;
    float s = 0.0f;
    for (std::int64_t c = lane; c < cols; c += kWarp)
      s += expf(z[c] - row_max);
    s = warp_sum(s);

    if (lane == 0) {
      loss += static_cast<double>(row_max) + log(static_cast<double>(s)) - z_label;
      hits += (best.index < 0 ? 0 : best.index) == label ? 1 : 0;
    }
    if (dlogits) {
      __syncwarp();
      float* d = dlogits + r * cols;
      const float inv_s = 1.0f / s;
      for (std::int64_t c = lane; c < cols; c += kWarp) {
        const float p = expf(z[c] - row_max) * inv_s;
        d[c] = grad_scale * (p - (c == label ? 1.0f : 0.0f));
      }
    }
  }
  block_accumulate(loss, hits, scratch, loss_sum, correct);
}

__device__ float sigmoid(float x) {
  // Two branches so that expf never overflows.
  if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
  const float e = expf(x);
  return e / (1.0f + e);
}

__global__ void __launch_bounds__(kThreads)
    sigmoid_cross_entropy_kernel(std::int64_t rows, std::int64_t cols, const float* logits,
                                 const std::int32_t* __restrict__ labels, float grad_scale,
                                 float* dlogits, GridSum scratch, double* loss_sum,
                                 std::int64_t* correct) {
  const int lane = threadIdx.x % kWarp;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * kRowsPerBlock;
  double loss = 0.0;
  long long hits = 0;
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
       r < rows; r += warps) {
    const float* z = logits + r * cols;
    float* d = dlogits ? dlogits + r * cols : nullptr;
    const std::int32_t label = labels[r];
    ArgMax best{0.0f, -1};
    // Each column is read and then written by the same lane, so aliasing is harmless here.
    for (std::int64_t c = lane; c < cols; c += kWarp) {
      const float x = z[c];
      const float t = (cols == 1 ? label == 1 : label == c) ? 1.0f : 0.0f;
      // log(1 + exp(-|x|)) + max(x, 0) - x t: the logistic loss without overflow.
      loss += static_cast<double>(log1pf(expf(-fabsf(x))) + (x > 0.0f ? x : 0.0f) - x * t);
      if (d) d[c] = grad_scale * (sigmoid(x) - t);
      argmax_update(best, x, c);
    }
    best = warp_argmax(best);
    if (lane == 0) {
      const bool ok = cols == 1 ? ((best.value > 0.0f) == (label == 1))
                                : (best.index < 0 ? 0 : best.index) == label;
      hits += ok ? 1 : 0;
    }
  }
  block_accumulate(loss, hits, scratch, loss_sum, correct);
}

int blocks_for(std::int64_t rows) {
  return static_cast<int>(
      std::clamp<std::int64_t>((rows + kRowsPerBlock - 1) / kRowsPerBlock, 1, kMaxBlocks));
}
}  // namespace

void softmax_cross_entropy(const Stream& stream, std::int64_t rows, std::int64_t cols,
                           const float* logits, const std::int32_t* labels, float grad_scale,
                           float* dlogits, double* loss_sum, std::int64_t* correct) {
  if (rows <= 0 || cols <= 0 || (!dlogits && !loss_sum && !correct)) return;
  detail::prepare_launch(stream);
  const int blocks = blocks_for(rows);
  const GridSum scratch = loss_sum ? grid_sum_scratch(stream, blocks) : GridSum{nullptr, nullptr};
  softmax_cross_entropy_kernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream.native())>>>(
      rows, cols, logits, labels, grad_scale, dlogits, scratch, loss_sum, correct);
  ASGD_CHECK_LAUNCH();
}

void sigmoid_cross_entropy(const Stream& stream, std::int64_t rows, std::int64_t cols,
                           const float* logits, const std::int32_t* labels, float grad_scale,
                           float* dlogits, double* loss_sum, std::int64_t* correct) {
  if (rows <= 0 || cols <= 0 || (!dlogits && !loss_sum && !correct)) return;
  detail::prepare_launch(stream);
  const int blocks = blocks_for(rows);
  const GridSum scratch = loss_sum ? grid_sum_scratch(stream, blocks) : GridSum{nullptr, nullptr};
  sigmoid_cross_entropy_kernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream.native())>>>(
      rows, cols, logits, labels, grad_scale, dlogits, scratch, loss_sum, correct);
  ASGD_CHECK_LAUNCH();
}

}  // namespace asgd::cuda_ops
