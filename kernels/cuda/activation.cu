// Fused bias + activation (kernels/activation.h) on CUDA.
//
// Both kernels tile the row-major [rows x cols] matrix with 2-D blocks: threadIdx.x walks
// columns (so each thread loads its bias once and keeps its column's sum in a register),
// threadIdx.y walks rows.
//
// The backward column sums (dbias) use one block per tile of kBackwardCols columns that
// covers every row: partial sums per thread, then a fixed-shape tree in shared memory. This
// needs no temporary buffer and no atomics, so dbias is bitwise reproducible. The price is
// ceil(cols / 8) blocks in the grid, which suits the shapes it serves: rows is a mini-batch
// (tens to a few thousand) and a warp reading 8 consecutive floats of each of 4 rows still
// uses every 32-byte sector it loads.
#include <algorithm>
#include <cstdint>

#include "kernels/cuda/launch.cuh"
#include "kernels/detail/cuda_ops.h"
#include "runtime/detail/cuda_check.cuh"

namespace asgd::cuda_ops {
namespace {
constexpr int kForwardThreads = 256;
constexpr int kBackwardThreads = 512;
constexpr int kBackwardCols = 8;
constexpr std::int64_t kMaxRowBlocks = 65535;  // gridDim.y limit

int pow2_at_least(std::int64_t v, int cap) {
  int p = 1;
  while (p < v && p < cap)
    p *= 2;
  return p;
}

template <bool kRelu>
__device__ float activate(float v) {
  // Written as std::max(v, 0) is on the host, so a NaN passes through (fmaxf would hide it).
  return kRelu ? (v < 0.0f ? 0.0f : v) : v;
}

// 8 bytes per element: read and write z (bias reads hit in cache).
template <bool kRelu>
__global__ void bias_activation_forward_kernel(std::int64_t rows, std::int64_t cols,
                                               const float* __restrict__ bias,
                                               float* __restrict__ z) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const float b = bias[c];
  const std::int64_t row_stride = static_cast<std::int64_t>(gridDim.y) * blockDim.y;
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; r < rows;
       r += row_stride) {
    float* p = z + r * cols + c;
    *p = activate<kRelu>(*p + b);
  }
}

// 12 bytes per element: read y and dy, write dz over dy. With kSums, gridDim.y == 1 and the
// block's blockDim.y threads per column cover every row; blockDim.y is a power of two.
template <bool kRelu, bool kSums>
__global__ void bias_activation_backward_kernel(std::int64_t rows, std::int64_t cols,
                                                const float* __restrict__ y, float* __restrict__ dy,
                                                float* __restrict__ dbias) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  float sum = 0.0f;
  if (c < cols) {
    const std::int64_t row_stride = static_cast<std::int64_t>(gridDim.y) * blockDim.y;
    for (std::int64_t r = static_cast<std::int64_t>(blockIdx.y) * blockDim.y + threadIdx.y;
         r < rows; r += row_stride) {
      const std::int64_t i = r * cols + c;
      // relu'(z) = [z > 0] = [y > 0].
      const float g = (!kRelu || y[i] > 0.0f) ? dy[i] : 0.0f;
      dy[i] = g;
      sum += g;
    }
  }
  if constexpr (kSums) {
    extern __shared__ float partial[];  // [blockDim.y][blockDim.x]
    const int t = threadIdx.y * blockDim.x + threadIdx.x;
    partial[t] = sum;
    __syncthreads();
    for (int half = blockDim.y / 2; half > 0; half /= 2) {
      if (threadIdx.y < half) partial[t] += partial[t + half * blockDim.x];
      __syncthreads();
    }
    if (threadIdx.y == 0 && c < cols) dbias[c] = partial[threadIdx.x];
  }
}

template <bool kRelu>
void launch_forward(cudaStream_t s, std::int64_t rows, std::int64_t cols, const float* bias,
                    float* z) {
  const int tx = pow2_at_least(cols, 32);
  const int ty = kForwardThreads / tx;
  const dim3 grid(static_cast<unsigned>((cols + tx - 1) / tx),
                  static_cast<unsigned>(std::min((rows + ty - 1) / ty, kMaxRowBlocks)));
  bias_activation_forward_kernel<kRelu><<<grid, dim3(tx, ty), 0, s>>>(rows, cols, bias, z);
  ASGD_CHECK_LAUNCH();
}

template <bool kRelu>
void launch_backward(cudaStream_t s, std::int64_t rows, std::int64_t cols, const float* y,
                     float* dy, float* dbias) {
  if (dbias) {
    const int tx = pow2_at_least(cols, kBackwardCols);
    const int ty = pow2_at_least(rows, kBackwardThreads / tx);
    const dim3 grid(static_cast<unsigned>((cols + tx - 1) / tx), 1);
    const std::size_t shared = sizeof(float) * static_cast<std::size_t>(tx) * ty;
    bias_activation_backward_kernel<kRelu, true>
        <<<grid, dim3(tx, ty), shared, s>>>(rows, cols, y, dy, dbias);
  } else {
    const int tx = pow2_at_least(cols, 32);
    const int ty = kForwardThreads / tx;
    const dim3 grid(static_cast<unsigned>((cols + tx - 1) / tx),
                    static_cast<unsigned>(std::min((rows + ty - 1) / ty, kMaxRowBlocks)));
    bias_activation_backward_kernel<kRelu, false>
        <<<grid, dim3(tx, ty), 0, s>>>(rows, cols, y, dy, nullptr);
  }
  ASGD_CHECK_LAUNCH();
}
}  // namespace

void bias_activation_forward(const Stream& stream, Activation act, std::int64_t rows,
                             std::int64_t cols, const float* bias, float* z) {
  if (rows <= 0 || cols <= 0) return;
  detail::prepare_launch(stream);
  auto s = static_cast<cudaStream_t>(stream.native());
  if (act == Activation::kRelu) {
    launch_forward<true>(s, rows, cols, bias, z);
  } else {
    launch_forward<false>(s, rows, cols, bias, z);
  }
}

void bias_activation_backward(const Stream& stream, Activation act, std::int64_t rows,
                              std::int64_t cols, const float* y, float* dy, float* dbias) {
  if (cols <= 0) return;
  detail::prepare_launch(stream);
  auto s = static_cast<cudaStream_t>(stream.native());
  if (rows <= 0) {
    // No rows: dL/dz is empty and the column sums are zero.
    if (dbias) ASGD_CHECK_CUDA(cudaMemsetAsync(dbias, 0, sizeof(float) * cols, s));
    return;
  }
  if (act == Activation::kRelu) {
    launch_backward<true>(s, rows, cols, y, dy, dbias);
  } else {
    launch_backward<false>(s, rows, cols, y, dy, dbias);
  }
}

}  // namespace asgd::cuda_ops
