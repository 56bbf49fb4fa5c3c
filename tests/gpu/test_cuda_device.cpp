// The device layer on the cuda backend: devices, streams, events, device and pinned buffers.
// Every test skips itself when no CUDA device is usable (and in a build without CUDA).
#include <cstdint>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/sgd.h"
#include "runtime/buffer.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "tests/common/reference.h"

namespace asgd {
namespace {
using ::testing::HasSubstr;

class CudaDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << cuda_unavailable_reason();
  }
};

std::vector<float> download_all(const DeviceBuffer<float>& buf, const Stream& s) {
  std::vector<float> out(buf.size());
  buf.download(out.data(), out.size(), s);
  s.synchronize();
  return out;
}

TEST_F(CudaDeviceTest, ListsEveryDevice) {
  const int count = cuda_device_count();
  EXPECT_EQ(cuda_unavailable_reason(), "");
  EXPECT_TRUE(cuda_compiled());
  const auto devices = list_devices();
  ASSERT_EQ(devices.size(), static_cast<std::size_t>(count) + 1);
  EXPECT_EQ(devices.front().backend, Backend::kHost);
  for (int d = 0; d < count; ++d) {
    const DeviceInfo& info = devices[static_cast<std::size_t>(d) + 1];
    EXPECT_EQ(info.backend, Backend::kCuda);
    EXPECT_EQ(info.ordinal, d);
    EXPECT_FALSE(info.name.empty());
    EXPECT_GT(info.memory_bytes, 0u);
    EXPECT_GE(info.compute_major, 7);  // we build for Turing (sm_75) and newer
    EXPECT_GT(info.processors, 0);
    // domain:bb:dd.0, and distinct per GPU: the NCCL transport tells shared GPUs apart by it.
    const std::string& id = info.bus_id;
    ASSERT_GE(id.size(), 12u) << id;
    EXPECT_EQ(id.substr(id.size() - 8, 1), ":") << id;
    EXPECT_EQ(id.substr(id.size() - 5, 1), ":") << id;
    EXPECT_EQ(id.substr(id.size() - 2), ".0") << id;
    for (int other = 0; other < d; ++other)
      EXPECT_NE(info.bus_id, devices[static_cast<std::size_t>(other) + 1].bus_id);
  }
}

TEST_F(CudaDeviceTest, StreamBasics) {
  Stream s = Stream::cuda(0);
  EXPECT_FALSE(s.is_host());
  EXPECT_EQ(s.backend(), Backend::kCuda);
  EXPECT_EQ(s.device(), 0);
  EXPECT_NE(s.native(), nullptr);
  void* blas = s.blas_handle();
  EXPECT_NE(blas, nullptr);
  EXPECT_EQ(s.blas_handle(), blas);  // created once, then reused
  s.synchronize();
  Stream moved = std::move(s);
  EXPECT_NE(moved.native(), nullptr);
  EXPECT_EQ(moved.blas_handle(), blas);
  moved.synchronize();
  const Stream created = Stream::create(Backend::kCuda, 0, 1);
  EXPECT_EQ(created.backend(), Backend::kCuda);
}

TEST_F(CudaDeviceTest, OutOfRangeOrdinalThrows) {
  const int count = cuda_device_count();
  EXPECT_THROW(Stream::cuda(count), Error);
  EXPECT_THROW(Stream::cuda(-1), Error);
  try {
    Stream::cuda(count + 3);
    FAIL() << "Stream::cuda accepted device " << count + 3;
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("does not exist"));
  }
  EXPECT_THROW(Event(Backend::kCuda, count), Error);
  EXPECT_THROW(DeviceBuffer<float>(Backend::kCuda, count, 16), Error);

  // The failed calls above must not leak into the next launch's error check.
  const Stream s = Stream::cuda(0);
  DeviceBuffer<float> buf(Backend::kCuda, 0, 100);
  fill(s, 100, 2.5f, buf.data());
  EXPECT_EQ(download_all(buf, s), std::vector<float>(100, 2.5f));
}

TEST_F(CudaDeviceTest, BufferRoundTripsAndZero) {
  const Stream s = Stream::cuda(0);
  for (const std::size_t n :
       {std::size_t{1}, std::size_t{7}, std::size_t{1000}, (std::size_t{1} << 20) + 3}) {
    SCOPED_TRACE(n);
    const std::vector<float> in = testing::random_vector(n, 17 + n);
    DeviceBuffer<float> buf(Backend::kCuda, 0, n);
    EXPECT_EQ(buf.size(), n);
    EXPECT_EQ(buf.bytes(), n * sizeof(float));
    EXPECT_EQ(buf.backend(), Backend::kCuda);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buf.data()) % 256, 0u);
    buf.upload(in.data(), n, s);
    EXPECT_EQ(download_all(buf, s), in);

    // Partial copies at an offset.
    if (n > 4) {
      const std::vector<float> patch = testing::random_vector(n - 4, 99);
      buf.upload(patch.data(), patch.size(), s, 2);
      std::vector<float> expected = in;
      std::copy(patch.begin(), patch.end(), expected.begin() + 2);
      EXPECT_EQ(download_all(buf, s), expected);
      std::vector<float> tail(3);
      buf.download(tail.data(), 3, s, n - 3);
      s.synchronize();
      EXPECT_EQ(tail, std::vector<float>(expected.end() - 3, expected.end()));
    }

    // Device to device.
    DeviceBuffer<float> other(Backend::kCuda, 0, n);
    copy_async(other.data(), buf.data(), buf.bytes(), s);
    const std::vector<float> copied = download_all(other, s);
    EXPECT_EQ(copied, download_all(buf, s));

    buf.zero(s);
    EXPECT_EQ(download_all(buf, s), std::vector<float>(n, 0.0f));
  }
  DeviceBuffer<float> empty(Backend::kCuda, 0, 0);
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(empty.data(), nullptr);
}

TEST_F(CudaDeviceTest, BufferMoveTransfersOwnership) {
  const Stream s = Stream::cuda(0);
  const std::vector<float> in = testing::random_vector(333, 5);
  DeviceBuffer<float> a(Backend::kCuda, 0, in.size());
  a.upload(in.data(), in.size(), s);
  const float* p = a.data();
  DeviceBuffer<float> b = std::move(a);
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
  DeviceBuffer<float> c;
  c = std::move(b);
  EXPECT_EQ(download_all(c, s), in);
}

TEST_F(CudaDeviceTest, PinnedBufferIsPageLockedAndRoundTrips) {
  const Stream s = Stream::cuda(0);
  const std::size_t n = (std::size_t{1} << 22) + 5;
  PinnedBuffer<float> src(n), dst(n);
  EXPECT_TRUE(src.page_locked());
  EXPECT_TRUE(dst.page_locked());
  const std::vector<float> in = testing::random_vector(n, 11);
  std::copy(in.begin(), in.end(), src.data());
  std::fill(dst.data(), dst.data() + n, -7.0f);
  DeviceBuffer<float> buf(Backend::kCuda, 0, n);
  buf.upload(src.data(), n, s);
  buf.download(dst.data(), n, s);
  s.synchronize();
  EXPECT_TRUE(std::equal(in.begin(), in.end(), dst.data()));

  PinnedBuffer<float> moved = std::move(src);
  EXPECT_TRUE(moved.page_locked());
  EXPECT_EQ(moved.size(), n);
  EXPECT_EQ(src.data(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
}

TEST_F(CudaDeviceTest, EventsMeasureElapsedTime) {
  const Stream s = Stream::cuda(0);
  Event start(Backend::kCuda, 0), end(Backend::kCuda, 0);
  DeviceBuffer<float> a(Backend::kCuda, 0, std::size_t{1} << 24);
  DeviceBuffer<float> b(Backend::kCuda, 0, std::size_t{1} << 24);
  a.zero(s);
  start.record(s);
  for (int i = 0; i < 4; ++i)
    copy_async(b.data(), a.data(), a.bytes(), s);
  end.record(s);
  end.synchronize();
  const double ms = end.elapsed_ms_since(start);
  EXPECT_GE(ms, 0.0);
  EXPECT_LT(ms, 60'000.0);

  Event moved = std::move(start);
  EXPECT_GE(end.elapsed_ms_since(moved), 0.0);

  // An event of one backend cannot be recorded on a stream of the other.
  const Stream host = Stream::host();
  EXPECT_THROW(end.record(host), Error);
}

TEST_F(CudaDeviceTest, EventOrdersWorkAcrossStreams) {
  const Stream producer = Stream::cuda(0);
  const Stream consumer = Stream::cuda(0);
  const std::size_t n = std::size_t{1} << 24;  // 64 MiB: long enough to lose a race
  PinnedBuffer<float> src(n);
  for (std::size_t i = 0; i < n; ++i)
    src[i] = static_cast<float>(i % 1000) + 0.5f;
  DeviceBuffer<float> buf(Backend::kCuda, 0, n);
  buf.zero(producer);
  producer.synchronize();

  Event ready(Backend::kCuda, 0);
  buf.upload(src.data(), n, producer);
  ready.record(producer);
  ready.wait_on(consumer);
  std::vector<float> out(n);
  buf.download(out.data(), n, consumer);
  consumer.synchronize();
  EXPECT_TRUE(std::equal(out.begin(), out.end(), src.data()));
}

TEST_F(CudaDeviceTest, DestroyingAStreamWaitsForItsWork) {
  const std::size_t n = std::size_t{1} << 24;
  PinnedBuffer<float> src(n);
  for (std::size_t i = 0; i < n; ++i)
    src[i] = static_cast<float>(i % 977);
  DeviceBuffer<float> buf(Backend::kCuda, 0, n);
  {
    const Stream s = Stream::cuda(0);
    buf.upload(src.data(), n, s);
  }
  const Stream reader = Stream::cuda(0);
  const std::vector<float> out = download_all(buf, reader);
  EXPECT_TRUE(std::equal(out.begin(), out.end(), src.data()));
}

TEST_F(CudaDeviceTest, SecondDeviceFromOneThread) {
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs two CUDA devices";
  const Stream s1 = Stream::cuda(1);
  DeviceBuffer<float> buf(Backend::kCuda, 1, 1000);
  const Stream s0 = Stream::cuda(0);  // device 0 is current again
  // Launching on device 1's stream must still work: the launcher makes its device current.
  fill(s1, 1000, 4.0f, buf.data());
  EXPECT_EQ(download_all(buf, s1), std::vector<float>(1000, 4.0f));
  DeviceBuffer<float> buf0(Backend::kCuda, 0, 1000);
  fill(s0, 1000, 1.0f, buf0.data());
  EXPECT_EQ(download_all(buf0, s0), std::vector<float>(1000, 1.0f));
}

}  // namespace
}  // namespace asgd
