#include "runtime/buffer.h"

#include <cstdlib>
#include <cstring>

#include <sys/mman.h>

#include <asgd/config.h>

#include "runtime/error.h"
#if ASGD_HAVE_CUDA
#include "runtime/detail/cuda_api.h"
#endif

namespace asgd {
namespace {
constexpr std::size_t kHostAlignment = 64;
constexpr std::size_t kHugePage = std::size_t{2} << 20;

void* host_alloc(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  // Large buffers (states, gradients, data sets) are streamed through in every step: on huge
  // pages the kernels do not stall on TLB misses.
  const std::size_t align = bytes >= 2 * kHugePage ? kHugePage : kHostAlignment;
  const std::size_t rounded = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, rounded);
  if (!p) ASGD_THROW("out of host memory allocating {} bytes", bytes);
  if (align == kHugePage) madvise(p, rounded, MADV_HUGEPAGE);  // advice only: failure is fine
  return p;
}
}  // namespace

namespace detail {
void* allocate(Backend backend, int device, std::size_t bytes) {
  if (bytes == 0) return nullptr;
  if (backend == Backend::kHost) return host_alloc(bytes);
#if ASGD_HAVE_CUDA
  return cuda_api::malloc_device(device, bytes);
#else
  (void)device;
  ASGD_THROW("cannot allocate CUDA memory: {}", cuda_unavailable_reason());
#endif
}

void deallocate(Backend backend, int device, void* ptr) noexcept {
  if (!ptr) return;
  if (backend == Backend::kHost) {
    std::free(ptr);
    return;
  }
#if ASGD_HAVE_CUDA
  cuda_api::free_device(device, ptr);
#else
  (void)device;
#endif
}

void* allocate_pinned(std::size_t bytes, bool* page_locked) {
  *page_locked = false;
  if (bytes == 0) return nullptr;
#if ASGD_HAVE_CUDA
  if (cuda_device_count() > 0) {
    *page_locked = true;
    return cuda_api::malloc_pinned(bytes);
  }
#endif
  return host_alloc(bytes);
}

void deallocate_pinned(void* ptr, bool page_locked) noexcept {
  if (!ptr) return;
#if ASGD_HAVE_CUDA
  if (page_locked) {
    cuda_api::free_pinned(ptr);
    return;
  }
#else
  (void)page_locked;
#endif
  std::free(ptr);
}
}  // namespace detail

void copy_async(void* dst, const void* src, std::size_t bytes, const Stream& stream) {
  if (bytes == 0) return;
  ASGD_CHECK(dst && src, "copy of {} bytes with a null pointer", bytes);
#if ASGD_HAVE_CUDA
  if (!stream.is_host()) {
    cuda_api::memcpy_async(dst, src, bytes, stream.native());
    return;
  }
#endif
  (void)stream;
  std::memcpy(dst, src, bytes);
}

void zero_async(void* dst, std::size_t bytes, const Stream& stream) {
  if (bytes == 0) return;
  ASGD_CHECK(dst != nullptr, "zeroing {} bytes at a null pointer", bytes);
#if ASGD_HAVE_CUDA
  if (!stream.is_host()) {
    cuda_api::memset_async(dst, bytes, stream.native());
    return;
  }
#endif
  (void)stream;
  std::memset(dst, 0, bytes);
}

}  // namespace asgd
