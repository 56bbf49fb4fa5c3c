// Shared by the gpu test tier: a fixture that skips without a CUDA device, and device copies
// of host vectors. Compiles without CUDA (every test then skips).
#pragma once

#include <algorithm>
#include <cstddef>
#include <optional>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/buffer.h"
#include "runtime/device.h"

namespace asgd::testing {

inline std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// A device copy of a host vector, optionally starting `offset` elements into its allocation
// so that the kernels see a pointer that is not 16-byte aligned.
template <typename T>
class DeviceArray {
 public:
  DeviceArray(const std::vector<T>& host, const Stream& s, std::size_t offset = 0)
      : buf_(Backend::kCuda, s.device(), std::max<std::size_t>(1, host.size() + offset)),
        offset_(offset),
        size_(host.size()) {
    buf_.upload(host.data(), host.size(), s, offset);
  }
  T* get() { return buf_.data() + offset_; }
  std::vector<T> download(const Stream& s) const {
    std::vector<T> out(size_);
    buf_.download(out.data(), size_, s, offset_);
    s.synchronize();
    return out;
  }

 private:
  DeviceBuffer<T> buf_;
  std::size_t offset_;
  std::size_t size_;
};

// Skips every test without a CUDA device; gives a CUDA stream and a 4-thread host stream.
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << cuda_unavailable_reason();
    cuda_.emplace(Stream::cuda(0));
  }
  const Stream& cuda() const { return *cuda_; }
  const Stream& host() const { return host_; }

 private:
  std::optional<Stream> cuda_;
  Stream host_ = Stream::host(4);
};

}  // namespace asgd::testing
