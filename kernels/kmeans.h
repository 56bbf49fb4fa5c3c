// Mini-batch K-Means on either backend: nearest-centre assignment through a GEMM, and the
// gradient of the quantisation loss with respect to the centres.
//
// Shapes, all row-major: a batch x [rows x d], centres c [k x d], the GEMM product
// dots = x . c^T [rows x k], one int32 assignment per row. The nearest centre is found from
// ||x - c_k||^2 = ||x||^2 - 2 x.c_k + ||c_k||^2, so the expensive part is one GEMM (as fast as
// the BLAS) and the rest reads each row's k products once. The expansion loses precision when
// ||x|| and ||c_k|| are large against the distance; the loss is clamped at 0 for that reason,
// and an assignment can only differ from the exact one between centres whose distances agree
// to about 1e-7 of ||x||^2 + ||c_k||^2.
//
// Accumulating outputs (`loss_sum`) are device scalars that the caller zeroes and reads when it
// chooses. All pointers are memory of the stream's device; everything is asynchronous on CUDA.
// Non-finite inputs give unspecified assignments; a NaN distance is not clamped away, so a
// diverged state shows up in the loss.
#pragma once

#include <cstdint>

#include "runtime/device.h"

namespace asgd {

// out[r] <- ||x_r||^2 for each of `rows` rows of x [rows x cols] (overwritten; float result,
// accumulated in double on the host and in float on CUDA). Used for the centre norms.
void row_squared_norms(const Stream& stream, std::int64_t rows, std::int64_t cols, const float* x,
                       float* out);

// Per row r: assign[r] <- argmin_j (centre_norms[j] - 2 * dots[r][j]), the lowest j among
// exact ties, and *loss_sum += loss_scale * max(0, ||x_r||^2 + that minimum), the row's squared
// distance to its nearest centre. `dots` is x . c^T and `centre_norms` is ||c_j||^2, as
// kmeans_nearest computes them. Either of assign and loss_sum may be null; x is read only for
// the loss.
void kmeans_assign(const Stream& stream, std::int64_t rows, std::int64_t k, std::int64_t d,
                   const float* x, const float* dots, const float* centre_norms, float loss_scale,
                   std::int32_t* assign, double* loss_sum);

// grad [k x d] <- grad_scale * sum over rows r with assign[r] == j of (c_j - x_r), for every
// centre j (overwritten; a centre no row is assigned to gets zeros). Assignments outside
// [0, k) are ignored. With loss ½||x - c||^2 per sample and grad_scale = 1 / rows this is the
// gradient of the mean loss.
//
// Deterministic on both backends: the host sums each centre's rows in row order in double;
// CUDA gathers each centre's rows in one block and reduces them in a fixed order (no
// atomics), in float, reading the assignments once per centre.
void kmeans_gradient(const Stream& stream, std::int64_t rows, std::int64_t k, std::int64_t d,
                     const float* x, const std::int32_t* assign, const float* centres,
                     float grad_scale, float* grad);

// The whole assignment: dots <- x . c^T (gemm), centre_norms <- ||c_j||^2, then
// kmeans_assign. `dots` [rows x k] and `centre_norms` [k] are caller-owned scratch.
void kmeans_nearest(const Stream& stream, std::int64_t rows, std::int64_t k, std::int64_t d,
                    const float* x, const float* centres, float* dots, float* centre_norms,
                    float loss_scale, std::int32_t* assign, double* loss_sum);

}  // namespace asgd
