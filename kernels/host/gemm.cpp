#include "kernels/gemm.h"

#include <cblas.h>

#include "kernels/detail/host_dispatch.h"

namespace asgd {

void gemm(const Stream& stream, Trans trans_a, Trans trans_b, std::int64_t m, std::int64_t n,
          std::int64_t k, float alpha, const float* a, std::int64_t lda, const float* b,
          std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  ASGD_CHECK(m >= 0 && n >= 0 && k >= 0, "gemm with negative size m={} n={} k={}", m, n, k);
  const std::int64_t a_cols = trans_a == Trans::kNo ? k : m;
  const std::int64_t b_cols = trans_b == Trans::kNo ? n : k;
  ASGD_CHECK(lda >= std::max<std::int64_t>(1, a_cols) && ldb >= std::max<std::int64_t>(1, b_cols) &&
                 ldc >= std::max<std::int64_t>(1, n),
             "gemm leading dimensions too small: lda={} (needs {}), ldb={} (needs {}), ldc={} "
             "(needs {})",
             lda, a_cols, ldb, b_cols, ldc, n);
  if (m == 0 || n == 0) return;
  ASGD_DISPATCH_CUDA(stream, gemm(stream, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta,
                                  c, ldc));
  // OpenBLAS's OpenMP build sizes its team from the calling thread's ICV, so this keeps each
  // worker thread within its own share of cores.
  if (omp_get_max_threads() != stream.threads()) omp_set_num_threads(stream.threads());
  cblas_sgemm(CblasRowMajor, trans_a == Trans::kNo ? CblasNoTrans : CblasTrans,
              trans_b == Trans::kNo ? CblasNoTrans : CblasTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

}  // namespace asgd
