// General matrix multiply on either backend: C = alpha * op(A) * op(B) + beta * C, all
// matrices row-major. op(A) is m x k, op(B) is k x n, C is m x n. Host: OpenBLAS cblas_sgemm;
// cuda: cuBLAS on the stream's handle. Asynchronous on CUDA; all pointers are memory of the
// stream's device.
#pragma once

#include <cstdint>

#include "runtime/device.h"

namespace asgd {

enum class Trans { kNo, kYes };

void gemm(const Stream& stream, Trans trans_a, Trans trans_b, std::int64_t m, std::int64_t n,
          std::int64_t k, float alpha, const float* a, std::int64_t lda, const float* b,
          std::int64_t ldb, float beta, float* c, std::int64_t ldc);

}  // namespace asgd
