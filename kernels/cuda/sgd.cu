// Element-wise vector updates (kernels/sgd.h) on CUDA: memory-bound grid-stride loops, with
// float4 accesses when every pointer is 16-byte aligned (a buffer offset by a non-multiple of
// four elements falls back to scalar accesses).
#include <algorithm>
#include <cstdint>

#include "kernels/cuda/launch.cuh"
#include "kernels/detail/cuda_ops.h"
#include "runtime/detail/cuda_check.cuh"

namespace asgd::cuda_ops {

namespace {
constexpr int kThreads = 256;
// Four waves of full occupancy on the largest current GPUs; grid-stride loops cover the rest.
constexpr std::int64_t kMaxBlocks = 4096;

int blocks_for(std::int64_t work) {
  const std::int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<int>(std::clamp<std::int64_t>(blocks, 1, kMaxBlocks));
}

bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

__device__ std::int64_t global_thread() {
  return static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ std::int64_t grid_threads() {
  return static_cast<std::int64_t>(gridDim.x) * blockDim.x;
}

// Applies `op` to every element: op.scalar(i) for element i, op.vector(j) for the float4 at
// element 4j. With kVector the float4 part covers [0, 4*(n/4)) and the tail goes scalar.
template <bool kVector, typename Op>
__global__ void map_kernel(std::int64_t n, Op op) {
  const std::int64_t stride = grid_threads();
  std::int64_t first_scalar = 0;
  if constexpr (kVector) {
    const std::int64_t n4 = n / 4;
    for (std::int64_t j = global_thread(); j < n4; j += stride)
      op.vector(j);
    first_scalar = n4 * 4;
  }
  for (std::int64_t i = first_scalar + global_thread(); i < n; i += stride)
    op.scalar(i);
}

template <typename Op>
void launch_map(const Stream& stream, std::int64_t n, bool vector, const Op& op) {
  if (n <= 0) return;
  detail::prepare_launch(stream);
  auto s = static_cast<cudaStream_t>(stream.native());
  if (vector) {
    map_kernel<true><<<blocks_for((n + 3) / 4), kThreads, 0, s>>>(n, op);
  } else {
    map_kernel<false><<<blocks_for(n), kThreads, 0, s>>>(n, op);
  }
  ASGD_CHECK_LAUNCH();
}

// 12 bytes per element: read g and w, write w.
struct SgdStep {
  float lr;
  const float* g;
  float* w;
  __device__ void scalar(std::int64_t i) const { w[i] -= lr * g[i]; }
  __device__ void vector(std::int64_t j) const {
    const float4 gv = reinterpret_cast<const float4*>(g)[j];
    float4 wv = reinterpret_cast<float4*>(w)[j];
    wv.x -= lr * gv.x;
    wv.y -= lr * gv.y;
    wv.z -= lr * gv.z;
    wv.w -= lr * gv.w;
    reinterpret_cast<float4*>(w)[j] = wv;
  }
};

// 12 bytes per element (8 when beta == 0: then y is write-only, as in BLAS).
struct Scale {
  float alpha;
  const float* x;
  float* y;
  __device__ void scalar(std::int64_t i) const { y[i] = alpha * x[i]; }
  __device__ void vector(std::int64_t j) const {
    const float4 xv = reinterpret_cast<const float4*>(x)[j];
    reinterpret_cast<float4*>(y)[j] =
        make_float4(alpha * xv.x, alpha * xv.y, alpha * xv.z, alpha * xv.w);
  }
};

struct Axpby {
  float alpha;
  float beta;
  const float* x;
  float* y;
  __device__ void scalar(std::int64_t i) const { y[i] = alpha * x[i] + beta * y[i]; }
  __device__ void vector(std::int64_t j) const {
    const float4 xv = reinterpret_cast<const float4*>(x)[j];
    float4 yv = reinterpret_cast<const float4*>(y)[j];
    yv.x = alpha * xv.x + beta * yv.x;
    yv.y = alpha * xv.y + beta * yv.y;
    yv.z = alpha * xv.z + beta * yv.z;
    yv.w = alpha * xv.w + beta * yv.w;
    reinterpret_cast<float4*>(y)[j] = yv;
  }
};

// 4 bytes written per element.
struct Fill {
  float value;
  float* x;
  __device__ void scalar(std::int64_t i) const { x[i] = value; }
  __device__ void vector(std::int64_t j) const {
    reinterpret_cast<float4*>(x)[j] = make_float4(value, value, value, value);
  }
};
}  // namespace

void sgd_step(const Stream& stream, std::int64_t n, float lr, const float* g, float* w) {
  launch_map(stream, n, aligned16(g) && aligned16(w), SgdStep{lr, g, w});
}

void axpby(const Stream& stream, std::int64_t n, float alpha, const float* x, float beta,
           float* y) {
  if (beta == 0.0f)
    launch_map(stream, n, aligned16(x) && aligned16(y), Scale{alpha, x, y});
  else
    launch_map(stream, n, aligned16(x) && aligned16(y), Axpby{alpha, beta, x, y});
}

void fill(const Stream& stream, std::int64_t n, float value, float* x) {
  launch_map(stream, n, aligned16(x), Fill{value, x});
}

}  // namespace asgd::cuda_ops
