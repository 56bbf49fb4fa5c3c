// Internal to kernels/cuda/: what every launcher does before it launches.
#pragma once

#include "runtime/device.h"

namespace asgd::cuda_ops::detail {

// A CUDA stream only accepts launches while its device is current, so this makes it current
// (one cheap query when it already is). It also clears the thread's last error: a failed
// runtime call leaves it set after it has thrown, and ASGD_CHECK_LAUNCH must report the
// launch that follows, not that older failure.
void prepare_launch(const Stream& stream);

}  // namespace asgd::cuda_ops::detail
