// Memory owned by asgd: device buffers (on a backend's device) and pinned host buffers
// (page-locked on CUDA builds with a device, so copies to and from them are truly
// asynchronous; plain 64-byte-aligned memory otherwise).
//
// Ownership: each buffer owns its allocation (RAII, move-only). Copies are issued on a Stream
// and are asynchronous on CUDA: the caller keeps both sides alive until the stream has passed
// the copy. Thread-safety: none per object; use a buffer from one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "runtime/device.h"

namespace asgd {

namespace detail {
void* allocate(Backend backend, int device, std::size_t bytes);
void deallocate(Backend backend, int device, void* ptr) noexcept;
void* allocate_pinned(std::size_t bytes, bool* page_locked);
void deallocate_pinned(void* ptr, bool page_locked) noexcept;
}  // namespace detail

// Copies `bytes` from `src` to `dst` in stream order. Either side may be host memory
// (pageable or pinned) or memory of the stream's device.
void copy_async(void* dst, const void* src, std::size_t bytes, const Stream& stream);
// Sets `bytes` bytes at `dst` (memory of the stream's device) to zero in stream order.
void zero_async(void* dst, std::size_t bytes, const Stream& stream);

template <typename T>
class DeviceBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "device buffers hold trivially copyable types");

 public:
  DeviceBuffer() = default;
  // Uninitialised storage for `count` elements on `backend`'s device `device`.
  DeviceBuffer(Backend backend, int device, std::size_t count)
      : backend_(backend), device_(device), count_(count) {
    data_ = static_cast<T*>(detail::allocate(backend, device, count * sizeof(T)));
  }
  DeviceBuffer(DeviceBuffer&& other) noexcept { swap(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    DeviceBuffer(std::move(other)).swap(*this);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { detail::deallocate(backend_, device_, data_); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return count_; }
  std::size_t bytes() const { return count_ * sizeof(T); }
  bool empty() const { return count_ == 0; }
  Backend backend() const { return backend_; }
  int device() const { return device_; }

  void upload(const T* host, std::size_t count, const Stream& stream, std::size_t offset = 0) {
    copy_async(data_ + offset, host, count * sizeof(T), stream);
  }
  void download(T* host, std::size_t count, const Stream& stream, std::size_t offset = 0) const {
    copy_async(host, data_ + offset, count * sizeof(T), stream);
  }
  void zero(const Stream& stream) { zero_async(data_, bytes(), stream); }

  void swap(DeviceBuffer& other) noexcept {
    std::swap(backend_, other.backend_);
    std::swap(device_, other.device_);
    std::swap(data_, other.data_);
    std::swap(count_, other.count_);
  }

 private:
  Backend backend_ = Backend::kHost;
  int device_ = 0;
  T* data_ = nullptr;
  std::size_t count_ = 0;
};

template <typename T>
class PinnedBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "pinned buffers hold trivially copyable types");

 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(std::size_t count) : count_(count) {
    data_ = static_cast<T*>(detail::allocate_pinned(count * sizeof(T), &page_locked_));
  }
  PinnedBuffer(PinnedBuffer&& other) noexcept { swap(other); }
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept {
    PinnedBuffer(std::move(other)).swap(*this);
    return *this;
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() { detail::deallocate_pinned(data_, page_locked_); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  T& operator[](std::size_t i) { return data_[i]; }
  const T& operator[](std::size_t i) const { return data_[i]; }
  std::size_t size() const { return count_; }
  // True when the memory is page-locked (CUDA build with a device).
  bool page_locked() const { return page_locked_; }

  void swap(PinnedBuffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(count_, other.count_);
    std::swap(page_locked_, other.page_locked_);
  }

 private:
  T* data_ = nullptr;
  std::size_t count_ = 0;
  bool page_locked_ = false;
};

}  // namespace asgd
