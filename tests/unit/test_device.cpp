// The device layer on the host backend, the "no CUDA device" path, and the error policy.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/buffer.h"
#include "runtime/device.h"
#include "runtime/error.h"

namespace asgd {
namespace {
using ::testing::HasSubstr;

TEST(DeviceTest, HostStreamRunsInline) {
  Stream s = Stream::host(3);
  EXPECT_TRUE(s.is_host());
  EXPECT_EQ(s.threads(), 3);
  EXPECT_EQ(s.native(), nullptr);
  EXPECT_EQ(s.blas_handle(), nullptr);
  s.synchronize();
  Stream moved = std::move(s);
  EXPECT_EQ(moved.threads(), 3);
  EXPECT_THROW(Stream::host(0), Error);
}

TEST(DeviceTest, CudaUnavailableIsReportedClearly) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  const std::string why = cuda_unavailable_reason();
  EXPECT_FALSE(why.empty());
  try {
    Stream::cuda(0);
    FAIL() << "Stream::cuda succeeded without a device";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("cuda backend is unavailable"));
    EXPECT_THAT(e.what(), HasSubstr("--backend host"));
  }
  EXPECT_THROW(DeviceBuffer<float>(Backend::kCuda, 0, 16), Error);
  // The host is always listed first.
  const auto devices = list_devices();
  ASSERT_FALSE(devices.empty());
  EXPECT_EQ(devices.front().backend, Backend::kHost);
}

TEST(DeviceTest, ParseBackend) {
  EXPECT_EQ(parse_backend("host"), Backend::kHost);
  EXPECT_EQ(parse_backend("cuda"), Backend::kCuda);
  try {
    parse_backend("tpu");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("'tpu'"));
  }
}

TEST(BufferTest, HostRoundTripAndZero) {
  const Stream s = Stream::host();
  DeviceBuffer<float> buf(Backend::kHost, 0, 1001);
  std::vector<float> in(1001), out(1001, -1.0f);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = 0.5f * static_cast<float>(i) + 1.0f;
  buf.upload(in.data(), in.size(), s);
  buf.download(out.data(), out.size(), s);
  s.synchronize();
  EXPECT_EQ(in, out);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buf.data()) % 64, 0u);
  buf.zero(s);
  buf.download(out.data(), out.size(), s);
  EXPECT_EQ(out, std::vector<float>(1001, 0.0f));

  DeviceBuffer<float> moved = std::move(buf);
  EXPECT_EQ(moved.size(), 1001u);
  EXPECT_EQ(buf.data(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
  DeviceBuffer<float> empty(Backend::kHost, 0, 0);
  EXPECT_TRUE(empty.empty());
}

TEST(BufferTest, PinnedBufferWithoutDeviceIsPlainMemory) {
  PinnedBuffer<int> p(100);
  for (int i = 0; i < 100; ++i) p[i] = i * i;
  EXPECT_EQ(p[99], 99 * 99);
  if (cuda_device_count() == 0) {
    EXPECT_FALSE(p.page_locked());
  }
}

TEST(EventTest, HostEventsMeasureElapsedTime) {
  const Stream s = Stream::host();
  Event a(Backend::kHost), b(Backend::kHost);
  a.record(s);
  volatile double x = 0;
  for (int i = 0; i < 100000; ++i) x = x + 1.0;
  b.record(s);
  b.synchronize();
  EXPECT_GE(b.elapsed_ms_since(a), 0.0);
}

TEST(ErrorTest, CarriesFileLineAndCall) {
  try {
    const int n = 3;
    ASGD_CHECK(n == 4, "n was {}", n);
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.file(), HasSubstr("test_device.cpp"));
    EXPECT_GT(e.line(), 0);
    EXPECT_EQ(e.call(), "n == 4");
    EXPECT_EQ(e.message(), "n was 3");
    EXPECT_THAT(e.what(), HasSubstr("test_device.cpp:"));
    EXPECT_THAT(e.what(), HasSubstr("n == 4 failed: n was 3"));
  }
}

TEST(ErrorTest, InputErrorIsJustTheMessage) {
  try {
    ASGD_INPUT_ERROR("data.csv:3:7: expected a number, got '{}'", "x");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "data.csv:3:7: expected a number, got 'x'");
  }
}

TEST(ErrorTest, SlotKeepsTheFirstErrorOfManyThreads) {
  ErrorSlot slot;
  EXPECT_FALSE(slot.has_error());
  EXPECT_NO_THROW(slot.rethrow_if_set());
  std::atomic<int> go{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      while (go.load() == 0) {
      }
      try {
        ASGD_THROW("worker {} failed", t);
      } catch (...) {
        slot.capture(std::current_exception());
      }
    });
  }
  go = 1;
  for (auto& th : threads) th.join();
  ASSERT_TRUE(slot.has_error());
  std::string first;
  try {
    slot.rethrow_if_set();
  } catch (const Error& e) {
    first = e.message();
  }
  EXPECT_THAT(first, HasSubstr("failed"));
  try {
    slot.rethrow_if_set();  // the slot keeps its error
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), first);
  }
}

}  // namespace
}  // namespace asgd
