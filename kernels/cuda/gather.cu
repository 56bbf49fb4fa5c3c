// Mini-batch gather (kernels/gather.h) on CUDA. Moves 2 * count * cols * 4 bytes plus the
// index and labels; rows are copied as float4 when cols is a multiple of four and both
// matrices are 16-byte aligned (every row then is), else as floats.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/launch.cuh"
#include "kernels/detail/cuda_ops.h"
#include "runtime/detail/cuda_check.cuh"

namespace asgd::cuda_ops {
namespace {
constexpr int kThreads = 256;
constexpr std::int64_t kMaxBlocks = 4096;

bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

int next_pow2(std::int64_t v) {
  int p = 1;
  while (p < v && p < kThreads)
    p *= 2;
  return p;
}

template <typename V>
__device__ V nan_value();
template <>
__device__ float nan_value<float>() {
  return __int_as_float(0x7fc00000);
}
template <>
__device__ float4 nan_value<float4>() {
  const float q = __int_as_float(0x7fc00000);
  return make_float4(q, q, q, q);
}

// A block is blockDim.y rows of blockDim.x threads each; a row's threads stride over its
// `width` elements of type V. An index outside [0, rows) would read out of bounds: such a row
// is written as NaN with label -1 instead, which the trainer's finiteness checks then catch,
// rather than faulting the context or reading another allocation.
template <typename V>
__global__ void gather_kernel(std::int64_t count, std::int64_t width, const V* __restrict__ x,
                              const std::int32_t* __restrict__ y, std::int64_t rows,
                              const std::int32_t* __restrict__ index, V* __restrict__ x_out,
                              std::int32_t* __restrict__ y_out) {
  const std::int64_t row_stride = static_cast<std::int64_t>(gridDim.x) * blockDim.y;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; i < count;
       i += row_stride) {
    const std::int64_t src = index[i];
    const bool valid = src >= 0 && src < rows;
    V* dst = x_out + i * width;
    if (valid) {
      const V* from = x + src * width;
      for (std::int64_t c = threadIdx.x; c < width; c += blockDim.x)
        dst[c] = from[c];
    } else {
      for (std::int64_t c = threadIdx.x; c < width; c += blockDim.x)
        dst[c] = nan_value<V>();
    }
    if (y_out && threadIdx.x == 0) y_out[i] = valid ? y[src] : -1;
  }
}

template <typename V>
void launch_gather(cudaStream_t s, std::int64_t count, std::int64_t width, const float* x,
                   const std::int32_t* y, std::int64_t rows, const std::int32_t* index,
                   float* x_out, std::int32_t* y_out) {
  // Threads along a row up to the row's width (narrow rows leave fewer lanes idle), the rest
  // of the block's 256 threads on further rows.
  const int tx = next_pow2(width);
  const int ty = kThreads / tx;
  const std::int64_t blocks = std::clamp<std::int64_t>((count + ty - 1) / ty, 1, kMaxBlocks);
  gather_kernel<V><<<static_cast<int>(blocks), dim3(tx, ty), 0, s>>>(
      count, width, reinterpret_cast<const V*>(x), y, rows, index, reinterpret_cast<V*>(x_out),
      y_out);
  ASGD_CHECK_LAUNCH();
}
}  // namespace

void gather_rows(const Stream& stream, std::int64_t count, std::int64_t cols, const float* x,
                 const std::int32_t* y, std::int64_t rows, const std::int32_t* index, float* x_out,
                 std::int32_t* y_out) {
  if (count <= 0) return;
  detail::prepare_launch(stream);
  auto s = static_cast<cudaStream_t>(stream.native());
  // Labels are gathered only when there are both a source and a destination for them.
  if (!y) y_out = nullptr;
  if (cols % 4 == 0 && aligned16(x) && aligned16(x_out)) {
    launch_gather<float4>(s, count, cols / 4, x, y, rows, index, x_out, y_out);
  } else {
    launch_gather<float>(s, count, cols, x, y, rows, index, x_out, y_out);
  }
}

}  // namespace asgd::cuda_ops
