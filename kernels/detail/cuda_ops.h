// Internal: the CUDA implementations behind the launchers in kernels/*.h, defined in
// kernels/cuda/*.cu. Arguments have been validated by the launcher; these only launch.
// Every function is asynchronous on `stream` and checks its launch.
#pragma once

#include <cstdint>

#include "kernels/activation.h"
#include "kernels/gemm.h"
#include "kernels/parzen.h"
#include "runtime/device.h"

namespace asgd::cuda_ops {

void gemm(const Stream& stream, Trans trans_a, Trans trans_b, std::int64_t m, std::int64_t n,
          std::int64_t k, float alpha, const float* a, std::int64_t lda, const float* b,
          std::int64_t ldb, float beta, float* c, std::int64_t ldc);
void bias_activation_forward(const Stream& stream, Activation act, std::int64_t rows,
                             std::int64_t cols, const float* bias, float* z);
void bias_activation_backward(const Stream& stream, Activation act, std::int64_t rows,
                              std::int64_t cols, const float* y, float* dy, float* dbias);
void softmax_cross_entropy(const Stream& stream, std::int64_t rows, std::int64_t cols,
                           const float* logits, const std::int32_t* labels, float grad_scale,
                           float* dlogits, double* loss_sum, std::int64_t* correct);
void sigmoid_cross_entropy(const Stream& stream, std::int64_t rows, std::int64_t cols,
                           const float* logits, const std::int32_t* labels, float grad_scale,
                           float* dlogits, double* loss_sum, std::int64_t* correct);
void gather_rows(const Stream& stream, std::int64_t count, std::int64_t cols, const float* x,
                 const std::int32_t* y, std::int64_t rows, const std::int32_t* index,
                 float* x_out, std::int32_t* y_out);
void sgd_step(const Stream& stream, std::int64_t n, float lr, const float* g, float* w);
void axpby(const Stream& stream, std::int64_t n, float alpha, const float* x, float beta,
           float* y);
void fill(const Stream& stream, std::int64_t n, float value, float* x);
void reduce_sum(const Stream& stream, std::int64_t n, const float* x, double* out);
void reduce_dot(const Stream& stream, std::int64_t n, const float* x, const float* y,
                double* out);
void reduce_squared_norm(const Stream& stream, std::int64_t n, const float* x, double* out);
void count_nonfinite(const Stream& stream, std::int64_t n, const float* x, std::int64_t* out);
void copy_count_nonfinite(const Stream& stream, std::int64_t n, const float* x, float* y,
                          std::int64_t* out);
void parzen_statistics(const Stream& stream, std::int64_t length, const float* g, const float* w,
                       const float* e, double* out);
void parzen_decide(const Stream& stream, const ParzenParams& params, int count,
                   const double* stats, const std::int64_t* lengths, float* history,
                   std::int64_t* history_seen, std::int32_t* accept, std::int64_t* counters);
void parzen_merge(const Stream& stream, MergeRule rule, float eps, float alpha, std::int64_t n,
                  const float* g, float* w, const MergeRange* ranges, int count,
                  const std::int32_t* accept);

void row_squared_norms(const Stream& stream, std::int64_t rows, std::int64_t cols, const float* x,
                       float* out);
void kmeans_assign(const Stream& stream, std::int64_t rows, std::int64_t k, std::int64_t d,
                   const float* x, const float* dots, const float* centre_norms, float loss_scale,
                   std::int32_t* assign, double* loss_sum);
void kmeans_gradient(const Stream& stream, std::int64_t rows, std::int64_t k, std::int64_t d,
                     const float* x, const std::int32_t* assign, const float* centres,
                     float grad_scale, float* grad);

}  // namespace asgd::cuda_ops
