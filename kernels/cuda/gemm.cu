// Row-major GEMM (kernels/gemm.h) on cuBLAS, which is column-major. A row-major matrix read
// column-major is its transpose, so C^T = op(B)^T op(A)^T is computed instead: the operands
// swap places and m and n swap, while each keeps its own transpose flag.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "kernels/cuda/launch.cuh"
#include "kernels/detail/cuda_ops.h"
#include "runtime/detail/cuda_check.cuh"

namespace asgd::cuda_ops {
namespace {
cublasOperation_t to_cublas(Trans t) {
  return t == Trans::kYes ? CUBLAS_OP_T : CUBLAS_OP_N;
}

int to_int(std::int64_t v, const char* what) {
  ASGD_CHECK(v >= 0 && v <= std::numeric_limits<int>::max(),
             "GEMM {} = {} exceeds the 32-bit range of cublasSgemm", what, v);
  return static_cast<int>(v);
}
}  // namespace

void gemm(const Stream& stream, Trans trans_a, Trans trans_b, std::int64_t m, std::int64_t n,
          std::int64_t k, float alpha, const float* a, std::int64_t lda, const float* b,
          std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  detail::prepare_launch(stream);
  auto handle = static_cast<cublasHandle_t>(stream.blas_handle());
  // cuBLAS rejects a leading dimension of 0 even when the matrix is empty (k == 0), where
  // nothing is read; the launcher has checked every other leading dimension.
  ASGD_CHECK_CUBLAS(
      cublasSgemm(handle, to_cublas(trans_b), to_cublas(trans_a), to_int(n, "n"), to_int(m, "m"),
                  to_int(k, "k"), &alpha, b, to_int(std::max<std::int64_t>(ldb, 1), "ldb"), a,
                  to_int(std::max<std::int64_t>(lda, 1), "lda"), &beta, c, to_int(ldc, "ldc")));
}

}  // namespace asgd::cuda_ops
