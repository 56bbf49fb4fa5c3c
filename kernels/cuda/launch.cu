#include "kernels/cuda/launch.cuh"

#include "runtime/detail/cuda_check.cuh"

namespace asgd::cuda_ops::detail {

void prepare_launch(const Stream& stream) {
  int current = -1;
  ASGD_CHECK_CUDA(cudaGetDevice(&current));
  if (current != stream.device()) ASGD_CHECK_CUDA(cudaSetDevice(stream.device()));
  (void)cudaGetLastError();
}

}  // namespace asgd::cuda_ops::detail
