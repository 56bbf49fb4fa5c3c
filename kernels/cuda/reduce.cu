// Reductions to one device scalar (kernels/reduce.h) on CUDA.
//
// Scheme: zero the output with cudaMemsetAsync, then one kernel in which each thread
// accumulates a grid-stride slice in double (int64 for counts) and each block reduces with
// cub::BlockReduce; a count adds its block's partial with an integer atomicAdd (exact in any
// order), a sum goes through grid_sum.cuh (the last block adds every block's partial in block
// order), so sums are the same bits every run. Two stream operations, no temporary storage
// beyond the stream's scratch.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include <cub/block/block_reduce.cuh>

#include "kernels/cuda/grid_sum.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/detail/cuda_ops.h"
#include "runtime/detail/cuda_check.cuh"

namespace asgd::cuda_ops {
namespace {
constexpr int kThreads = 256;
// About one resident wave of 256-thread blocks on the largest current GPUs, which bounds the
// atomics per call.
constexpr std::int64_t kMaxBlocks = 1024;
// Each thread should get at least this many elements before another block is worth it.
constexpr std::int64_t kElementsPerThread = 16;

bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

__device__ void atomic_accumulate(std::int64_t* out, long long v) {
  static_assert(sizeof(std::int64_t) == sizeof(unsigned long long), "int64 atomics");
  // Two's complement: adding the unsigned image adds the signed value.
  atomicAdd(reinterpret_cast<unsigned long long*>(out), static_cast<unsigned long long>(v));
}

// Op::scalar(i) is element i's contribution, Op::vector(j) that of elements [4j, 4j+4).
template <typename Acc, bool kVector, typename Op, typename Out>
__global__ void __launch_bounds__(kThreads)
    reduce_kernel(std::int64_t n, Op op, GridSum scratch, Out* out) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t start = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  Acc acc = 0;
  std::int64_t first_scalar = 0;
  if constexpr (kVector) {
    const std::int64_t n4 = n / 4;
    for (std::int64_t j = start; j < n4; j += stride)
      acc += op.vector(j);
    first_scalar = n4 * 4;
  }
  for (std::int64_t i = first_scalar + start; i < n; i += stride)
    acc += op.scalar(i);

  using BlockReduce = cub::BlockReduce<Acc, kThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  const Acc block_total = BlockReduce(temp).Sum(acc);
  if constexpr (std::is_floating_point_v<Acc>) {
    const double values[1] = {block_total};
    grid_sum_add<1, kThreads>(scratch, values, out);
  } else {
    if (threadIdx.x == 0) atomic_accumulate(out, block_total);
  }
}

template <typename Acc, typename Op, typename Out>
void launch_reduce(const Stream& stream, std::int64_t n, bool vector, const Op& op, Out* out) {
  auto s = static_cast<cudaStream_t>(stream.native());
  detail::prepare_launch(stream);
  ASGD_CHECK_CUDA(cudaMemsetAsync(out, 0, sizeof(Out), s));
  if (n <= 0) return;
  const std::int64_t per_block = kThreads * kElementsPerThread;
  const int blocks =
      static_cast<int>(std::clamp<std::int64_t>((n + per_block - 1) / per_block, 1, kMaxBlocks));
  const GridSum scratch =
      std::is_floating_point_v<Acc> ? grid_sum_scratch(stream, blocks) : GridSum{nullptr, nullptr};
  if (vector) {
    reduce_kernel<Acc, true><<<blocks, kThreads, 0, s>>>(n, op, scratch, out);
  } else {
    reduce_kernel<Acc, false><<<blocks, kThreads, 0, s>>>(n, op, scratch, out);
  }
  ASGD_CHECK_LAUNCH();
}

// 4 bytes read per element.
struct Sum {
  const float* x;
  __device__ double scalar(std::int64_t i) const { return static_cast<double>(x[i]); }
  __device__ double vector(std::int64_t j) const {
    const float4 v = reinterpret_cast<const float4*>(x)[j];
    return (static_cast<double>(v.x) + static_cast<double>(v.y)) +
           (static_cast<double>(v.z) + static_cast<double>(v.w));
  }
};

// 8 bytes read per element. A product of two floats is exact in double.
struct Dot {
  const float* x;
  const float* y;
  __device__ double scalar(std::int64_t i) const {
    return static_cast<double>(x[i]) * static_cast<double>(y[i]);
  }
  __device__ double vector(std::int64_t j) const {
    const float4 a = reinterpret_cast<const float4*>(x)[j];
    const float4 b = reinterpret_cast<const float4*>(y)[j];
    return (static_cast<double>(a.x) * b.x + static_cast<double>(a.y) * b.y) +
           (static_cast<double>(a.z) * b.z + static_cast<double>(a.w) * b.w);
  }
};

// 4 bytes read per element.
struct SquaredNorm {
  const float* x;
  __device__ double scalar(std::int64_t i) const {
    const double v = x[i];
    return v * v;
  }
  __device__ double vector(std::int64_t j) const {
    const float4 a = reinterpret_cast<const float4*>(x)[j];
    return (static_cast<double>(a.x) * a.x + static_cast<double>(a.y) * a.y) +
           (static_cast<double>(a.z) * a.z + static_cast<double>(a.w) * a.w);
  }
};

// 4 bytes read per element.
struct NonFinite {
  const float* x;
  __device__ long long scalar(std::int64_t i) const { return isfinite(x[i]) ? 0 : 1; }
  __device__ long long vector(std::int64_t j) const {
    const float4 a = reinterpret_cast<const float4*>(x)[j];
    return (isfinite(a.x) ? 0 : 1) + (isfinite(a.y) ? 0 : 1) + (isfinite(a.z) ? 0 : 1) +
           (isfinite(a.w) ? 0 : 1);
  }
};

// 8 bytes moved per element: the copy is the pass, the count rides along.
struct CopyNonFinite {
  const float* x;
  float* y;
  __device__ long long scalar(std::int64_t i) const {
    const float v = x[i];
    y[i] = v;
    return isfinite(v) ? 0 : 1;
  }
  __device__ long long vector(std::int64_t j) const {
    const float4 a = reinterpret_cast<const float4*>(x)[j];
    reinterpret_cast<float4*>(y)[j] = a;
    return (isfinite(a.x) ? 0 : 1) + (isfinite(a.y) ? 0 : 1) + (isfinite(a.z) ? 0 : 1) +
           (isfinite(a.w) ? 0 : 1);
  }
};
}  // namespace

void reduce_sum(const Stream& stream, std::int64_t n, const float* x, double* out) {
  launch_reduce<double>(stream, n, aligned16(x), Sum{x}, out);
}

void reduce_dot(const Stream& stream, std::int64_t n, const float* x, const float* y, double* out) {
  launch_reduce<double>(stream, n, aligned16(x) && aligned16(y), Dot{x, y}, out);
}

void reduce_squared_norm(const Stream& stream, std::int64_t n, const float* x, double* out) {
  launch_reduce<double>(stream, n, aligned16(x), SquaredNorm{x}, out);
}

void count_nonfinite(const Stream& stream, std::int64_t n, const float* x, std::int64_t* out) {
  launch_reduce<long long>(stream, n, aligned16(x), NonFinite{x}, out);
}

void copy_count_nonfinite(const Stream& stream, std::int64_t n, const float* x, float* y,
                          std::int64_t* out) {
  launch_reduce<long long>(stream, n, aligned16(x) && aligned16(y), CopyNonFinite{x, y}, out);
}

}  // namespace asgd::cuda_ops
