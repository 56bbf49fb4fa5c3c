// K-Means kernels (kernels/kmeans.h) on CUDA.
//
// row_squared_norms and kmeans_assign give one warp to a row, 8 rows per block at a time, as
// the loss kernels do: lanes stride over the row's k products (and its d features for the
// loss), so any k and d work; a row of products is read coalesced once. Reads 4 * k bytes per
// row for the assignment plus 4 * d for the loss, writes 4 bytes per row.
//
// kmeans_gradient is a per-centre gather rather than an atomic scatter, so that it is
// deterministic like the host: block (j, t) owns centre j and a tile of its columns. It walks
// the assignments in chunks of 256 rows, compacts the rows of centre j in row order with a
// block scan, and its threads, laid out as lanes x columns, sum c_j - x_r over those rows;
// the lanes are then combined by a fixed tree. Every block reads all `rows` assignments (from
// L2 after the first), so the cost is k * rows * 4 bytes of assignments plus rows * d * 4
// bytes of features: negligible against the GEMM for the batch sizes and k of mini-batch
// K-Means, and never contended as atomics on a few hot centres would be.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

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
// The y grid dimension's limit; the gradient kernel strides over further column tiles.
constexpr std::int64_t kMaxGridY = 65535;
constexpr std::int64_t kMaxGridX = std::int64_t{1} << 20;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ float warp_sum(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// Sum of squares of a row, strided over the warp's lanes; every lane gets the total.
__device__ float warp_squared_norm(const float* __restrict__ row, std::int64_t cols, int lane) {
  float s = 0.0f;
  for (std::int64_t c = lane; c < cols; c += kWarp)
    s += row[c] * row[c];
  return warp_sum(s);
}

// The smallest value among the centres seen so far and its index; `index` is -1 before any.
struct ArgMin {
  float value;
  std::int64_t index;
};

__device__ void argmin_update(ArgMin& a, float v, std::int64_t j) {
  // Centres arrive in increasing order per lane, so a strict < keeps the first minimum.
  if (a.index < 0 || v < a.value) a = ArgMin{v, j};
}

// After the butterfly every lane holds the warp's first minimum: the smaller value wins, a tie
// goes to the lower index.
__device__ ArgMin warp_argmin(ArgMin a) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const float v = __shfl_xor_sync(kFullMask, a.value, offset);
    const std::int64_t i = __shfl_xor_sync(kFullMask, a.index, offset);
    if (i >= 0 && (a.index < 0 || v < a.value || (v == a.value && i < a.index))) a = ArgMin{v, i};
  }
  return a;
}

__global__ void __launch_bounds__(kThreads)
    row_squared_norms_kernel(std::int64_t rows, std::int64_t cols, const float* __restrict__ x,
                             float* __restrict__ out) {
  const int lane = threadIdx.x % kWarp;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * kRowsPerBlock;
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
       r < rows; r += warps) {
    const float s = warp_squared_norm(x + r * cols, cols, lane);
    if (lane == 0) out[r] = s;
  }
}

__global__ void __launch_bounds__(kThreads)
    kmeans_assign_kernel(std::int64_t rows, std::int64_t k, std::int64_t d,
                         const float* __restrict__ x, const float* __restrict__ dots,
                         const float* __restrict__ centre_norms, float loss_scale,
                         std::int32_t* __restrict__ assign, GridSum scratch, double* loss_sum) {
  const int lane = threadIdx.x % kWarp;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * kRowsPerBlock;
  double loss = 0.0;
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
       r < rows; r += warps) {
    const float* dr = dots + r * k;
    ArgMin best{0.0f, -1};
    // 2 * dot is exact, so a fused multiply-add gives the host's value bit for bit.
    for (std::int64_t j = lane; j < k; j += kWarp)
      argmin_update(best, centre_norms[j] - 2.0f * dr[j], j);
    best = warp_argmin(best);
    if (loss_sum) {
      const float xx = warp_squared_norm(x + r * d, d, lane);
      if (lane == 0) {
        const double d2 = static_cast<double>(xx) + best.value;
        // Not fmax: that would turn a NaN distance into 0.
        loss += static_cast<double>(loss_scale) * (d2 < 0.0 ? 0.0 : d2);
      }
    }
    if (assign && lane == 0) assign[r] = static_cast<std::int32_t>(best.index);
  }
  if (loss_sum) {
    using LossReduce = cub::BlockReduce<double, kThreads>;
    __shared__ typename LossReduce::TempStorage temp;
    const double values[1] = {LossReduce(temp).Sum(loss)};
    grid_sum_add<1, kThreads>(scratch, values, loss_sum);  // the same bits every run
  }
}

// Block (blockIdx.x, blockIdx.y) handles centres blockIdx.x + i * gridDim.x and column tiles
// blockIdx.y + i * gridDim.y; a tile is `width` columns (a power of two dividing kThreads), and
// the kThreads / width lanes split each centre's rows between them.
__global__ void __launch_bounds__(kThreads)
    kmeans_gradient_kernel(std::int64_t rows, std::int64_t k, std::int64_t d, int width,
                           const float* __restrict__ x, const std::int32_t* __restrict__ assign,
                           const float* __restrict__ centres, float grad_scale,
                           float* __restrict__ grad) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage scan_temp;
  __shared__ int members[kThreads];  // offsets within the current chunk, in row order
  __shared__ float partial[kThreads];
  const int lanes = kThreads / width;
  const int lane = threadIdx.x / width;
  const std::int64_t tiles = (d + width - 1) / width;
  for (std::int64_t j = blockIdx.x; j < k; j += gridDim.x) {
    for (std::int64_t tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
      const std::int64_t col = tile * width + threadIdx.x % width;
      const bool active = col < d;
      const float c = active ? centres[j * d + col] : 0.0f;
      float acc = 0.0f;
      for (std::int64_t r0 = 0; r0 < rows; r0 += kThreads) {
        const std::int64_t r = r0 + threadIdx.x;
        const int mine = (r < rows && assign[r] == j) ? 1 : 0;
        int slot = 0, count = 0;
        Scan(scan_temp).ExclusiveSum(mine, slot, count);
        if (mine) members[slot] = static_cast<int>(threadIdx.x);
        __syncthreads();
        // Summing c - x rather than n*c - sum(x): the error then scales with the spread of the
        // rows around the centre, not with the centre's distance from the origin.
        if (active)
          for (int i = lane; i < count; i += lanes)
            acc += c - x[(r0 + members[i]) * d + col];
        __syncthreads();  // members and scan_temp are rewritten for the next chunk
      }
      partial[threadIdx.x] = acc;
      __syncthreads();
      for (int half = lanes / 2; half > 0; half /= 2) {
        if (lane < half) partial[threadIdx.x] += partial[threadIdx.x + half * width];
        __syncthreads();
      }
      if (lane == 0 && active) grad[j * d + col] = grad_scale * partial[threadIdx.x];
      __syncthreads();  // partial is rewritten for the next tile
    }
  }
}

int row_blocks(std::int64_t rows) {
  return static_cast<int>(
      std::clamp<std::int64_t>((rows + kRowsPerBlock - 1) / kRowsPerBlock, 1, kMaxBlocks));
}

// Columns per gradient tile: d rounded up to a power of two, at most a block, so that small d
// still fills the block with lanes and large d reads whole rows coalesced.
int tile_width(std::int64_t d) {
  int w = 1;
  while (w < d && w < kThreads)
    w *= 2;
  return w;
}
}  // namespace

void row_squared_norms(const Stream& stream, std::int64_t rows, std::int64_t cols, const float* x,
                       float* out) {
  if (rows <= 0 || cols <= 0) return;
  detail::prepare_launch(stream);
  row_squared_norms_kernel<<<row_blocks(rows), kThreads, 0,
                             static_cast<cudaStream_t>(stream.native())>>>(rows, cols, x, out);
  ASGD_CHECK_LAUNCH();
}

void kmeans_assign(const Stream& stream, std::int64_t rows, std::int64_t k, std::int64_t d,
                   const float* x, const float* dots, const float* centre_norms, float loss_scale,
                   std::int32_t* assign, double* loss_sum) {
  if (rows <= 0 || k <= 0 || (!assign && !loss_sum)) return;
  detail::prepare_launch(stream);
  const int blocks = row_blocks(rows);
  const GridSum scratch = loss_sum ? grid_sum_scratch(stream, blocks) : GridSum{nullptr, nullptr};
  kmeans_assign_kernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream.native())>>>(
      rows, k, d, x, dots, centre_norms, loss_scale, assign, scratch, loss_sum);
  ASGD_CHECK_LAUNCH();
}

void kmeans_gradient(const Stream& stream, std::int64_t rows, std::int64_t k, std::int64_t d,
                     const float* x, const std::int32_t* assign, const float* centres,
                     float grad_scale, float* grad) {
  if (k <= 0 || d <= 0) return;
  detail::prepare_launch(stream);
  const int width = tile_width(d);
  const std::int64_t tiles = (d + width - 1) / width;
  const dim3 grid(static_cast<unsigned>(std::min(k, kMaxGridX)),
                  static_cast<unsigned>(std::min(tiles, kMaxGridY)));
  kmeans_gradient_kernel<<<grid, kThreads, 0, static_cast<cudaStream_t>(stream.native())>>>(
      rows, k, d, width, x, assign, centres, grad_scale, grad);
  ASGD_CHECK_LAUNCH();
}

}  // namespace asgd::cuda_ops
