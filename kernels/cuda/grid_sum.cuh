// Internal to kernels/cuda/: deterministic sums of double partials over a whole grid, in the
// kernel that computes them.
//
// Floating-point atomicAdd adds the blocks' partials in the order the blocks finish, which
// changes from run to run, so a sum would be reproducible only to rounding and deterministic
// mode (bit-for-bit repeatable runs) would not hold on a GPU. Here each block stores its
// partials in the stream's scratch (Stream::reduction_scratch), takes a ticket, and the block
// that finishes last adds all partials in block order (each thread a fixed strided subset, then
// cub::BlockReduce, whose order is fixed) to the output: the same bits every run, still one
// kernel, no extra launch. The ticket counter wraps back to zero as the last block takes it,
// ready for the next kernel on the stream (kernels on one stream never overlap).
#pragma once

#include <cub/block/block_reduce.cuh>

#include "runtime/device.h"
#include "runtime/error.h"

namespace asgd::cuda_ops {

// Blocks and values per block the scratch holds.
inline constexpr int kGridSumMaxBlocks = 4096;
inline constexpr int kGridSumMaxValues = 4;
static_assert(kGridSumMaxBlocks * kGridSumMaxValues * sizeof(double) + sizeof(unsigned) <=
                  Stream::kReductionScratchBytes,
              "the stream's reduction scratch is too small");

struct GridSum {
  double* partials;  // [kGridSumMaxValues][kGridSumMaxBlocks]
  unsigned* ticket;  // blocks done so far in the current kernel
};

// The scratch of `stream` for a grid of `blocks` blocks.
inline GridSum grid_sum_scratch(const Stream& stream, int blocks) {
  ASGD_CHECK(blocks >= 1 && blocks <= kGridSumMaxBlocks,
             "a reduction over {} blocks (the scratch holds {})", blocks, kGridSumMaxBlocks);
  auto* base = static_cast<char*>(stream.reduction_scratch());
  return {
      reinterpret_cast<double*>(base),
      reinterpret_cast<unsigned*>(base + kGridSumMaxBlocks * kGridSumMaxValues * sizeof(double))};
}

// out[k] += the sum over all blocks of total[k], k < N. `total` is read in thread 0 only (where
// cub::BlockReduce leaves a block's result). Every thread of every block must call this, once
// per kernel, with the same `out`.
template <int N, int kThreads>
__device__ void grid_sum_add(const GridSum& scratch, const double (&total)[N], double* out) {
  static_assert(N >= 1 && N <= kGridSumMaxValues, "too many values per block");
  __shared__ bool last;
  if (threadIdx.x == 0) {
    for (int k = 0; k < N; ++k)
      scratch.partials[k * kGridSumMaxBlocks + blockIdx.x] = total[k];
    // Release the partials before the ticket says they are there.
    __threadfence();
    last = atomicInc(scratch.ticket, gridDim.x - 1) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();  // acquire: see every block's partials
  using Reduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  for (int k = 0; k < N; ++k) {
    double acc = 0.0;
    // __ldcg: from L2, where the other blocks' stores are, not from a stale L1 line.
    for (unsigned b = threadIdx.x; b < gridDim.x; b += kThreads)
      acc += __ldcg(scratch.partials + k * kGridSumMaxBlocks + b);
    const double sum = Reduce(temp).Sum(acc);
    if (threadIdx.x == 0) out[k] += sum;
    __syncthreads();  // before temp is reused
  }
}

}  // namespace asgd::cuda_ops
