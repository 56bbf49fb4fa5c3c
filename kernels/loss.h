// Loss functions on a row-major [rows x cols] matrix of logits with int32 class labels.
// Accumulating outputs (`loss_sum`, `correct`) are single device scalars that the caller
// zeroes and reads when it chooses, so a training step needs no host round trip.
// Asynchronous on CUDA. Labels must lie in [0, cols) (the data readers guarantee it); the
// predicted class is the first index of the largest logit.
#pragma once

#include <cstdint>

#include "runtime/device.h"

namespace asgd {

// Softmax cross-entropy over `cols` classes. Adds sum_r -log softmax(logits_r)[label_r] to
// *loss_sum, adds the number of rows whose argmax (the first maximum among the non-NaN logits;
// class 0 for a row of NaNs) equals the label to *correct, and writes
// grad_scale * (softmax(logits) - onehot(label)) to dlogits. Any of loss_sum, correct and
// dlogits may be null. dlogits may alias logits.
void softmax_cross_entropy(const Stream& stream, std::int64_t rows, std::int64_t cols,
                           const float* logits, const std::int32_t* labels, float grad_scale,
                           float* dlogits, double* loss_sum, std::int64_t* correct);

// Sigmoid (logistic) cross-entropy. With cols == 1 it is binary: label 1 is the positive class
// and a row counts as correct when (logit > 0) == (label == 1). With cols > 1 it is
// one-vs-rest: each column is a binary problem whose target is [label == c], the loss is
// summed over columns, and a row is correct when its argmax equals the label. Outputs as in
// softmax_cross_entropy.
void sigmoid_cross_entropy(const Stream& stream, std::int64_t rows, std::int64_t cols,
                           const float* logits, const std::int32_t* labels, float grad_scale,
                           float* dlogits, double* loss_sum, std::int64_t* correct);

}  // namespace asgd
