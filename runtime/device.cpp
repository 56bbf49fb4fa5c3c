#include "runtime/device.h"

#include <chrono>
#include <cstdio>
#include <thread>
#include <utility>

#include <asgd/config.h>

#include "runtime/error.h"
#if ASGD_HAVE_CUDA
#include "runtime/detail/cuda_api.h"
#endif

namespace asgd {
namespace {
double host_now_ms() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double, std::milli>(clock::now().time_since_epoch()).count();
}

[[noreturn]] void throw_cuda_unavailable(const char* file, int line) {
  detail::throw_error(file, line, {},
                      fmt::format("the cuda backend is unavailable: {}; use --backend host",
                                  cuda_unavailable_reason()));
}
}  // namespace

std::string_view to_string(Backend backend) {
  return backend == Backend::kCuda ? "cuda" : "host";
}

Backend parse_backend(std::string_view name) {
  if (name == "host") return Backend::kHost;
  if (name == "cuda") return Backend::kCuda;
  ASGD_INPUT_ERROR("unknown backend '{}': expected 'host' or 'cuda'", name);
}

bool cuda_compiled() {
  return ASGD_HAVE_CUDA != 0;
}

int cuda_device_count() {
#if ASGD_HAVE_CUDA
  std::string reason;
  return cuda_api::device_count(&reason);
#else
  return 0;
#endif
}

std::string cuda_unavailable_reason() {
#if ASGD_HAVE_CUDA
  std::string reason;
  if (cuda_api::device_count(&reason) > 0) return {};
  return reason.empty() ? std::string("no CUDA device") : reason;
#else
  return "this build of asgd has no CUDA backend (configured with ASGD_CUDA=OFF or no CUDA "
         "toolkit found)";
#endif
}

std::vector<DeviceInfo> list_devices() {
  std::vector<DeviceInfo> out;
  DeviceInfo host;
  host.backend = Backend::kHost;
  host.name = "host CPU";
  host.processors = static_cast<int>(std::thread::hardware_concurrency());
  out.push_back(host);
#if ASGD_HAVE_CUDA
  if (cuda_device_count() > 0) {
    for (auto& d : cuda_api::devices())
      out.push_back(d);
  }
#endif
  return out;
}

// ---------------------------------------------------------------------------------------------
// Stream

Stream::Stream(Backend backend, int device, int threads, void* native)
    : backend_(backend), device_(device), threads_(threads), native_(native) {}

Stream Stream::host(int threads) {
  ASGD_CHECK(threads >= 1, "a host stream needs at least one thread, got {}", threads);
  return Stream(Backend::kHost, 0, threads, nullptr);
}

Stream Stream::cuda(int device) {
#if ASGD_HAVE_CUDA
  const int count = cuda_device_count();
  if (count == 0) throw_cuda_unavailable(__FILE__, __LINE__);
  ASGD_CHECK(device >= 0 && device < count, "CUDA device {} does not exist ({} present)", device,
             count);
  return Stream(Backend::kCuda, device, 1, cuda_api::stream_create(device));
#else
  (void)device;
  throw_cuda_unavailable(__FILE__, __LINE__);
#endif
}

Stream Stream::create(Backend backend, int device, int threads) {
  return backend == Backend::kCuda ? cuda(device) : host(threads);
}

Stream::Stream(Stream&& other) noexcept {
  *this = std::move(other);
}

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    release();
    backend_ = other.backend_;
    device_ = other.device_;
    threads_ = other.threads_;
    native_ = std::exchange(other.native_, nullptr);
    blas_ = std::exchange(other.blas_, nullptr);
    scratch_ = std::exchange(other.scratch_, nullptr);
  }
  return *this;
}

Stream::~Stream() {
  release();
}

void Stream::release() noexcept {
#if ASGD_HAVE_CUDA
  if (blas_) cuda_api::blas_destroy(device_, blas_);
  // The stream's queued work may still use the scratch: the stream goes (waiting) first.
  if (native_) cuda_api::stream_destroy(device_, native_);
  if (scratch_) cuda_api::free_device(device_, scratch_);
#endif
  blas_ = nullptr;
  scratch_ = nullptr;
  native_ = nullptr;
}

void Stream::synchronize() const {
#if ASGD_HAVE_CUDA
  if (native_) cuda_api::stream_synchronize(native_);
#endif
}

void* Stream::blas_handle() const {
#if ASGD_HAVE_CUDA
  if (backend_ == Backend::kCuda && !blas_) blas_ = cuda_api::blas_create(device_, native_);
#endif
  return blas_;
}

void* Stream::reduction_scratch() const {
#if ASGD_HAVE_CUDA
  if (backend_ == Backend::kCuda && !scratch_) {
    void* p = cuda_api::malloc_device(device_, kReductionScratchBytes);
    try {
      cuda_api::memset_async(p, kReductionScratchBytes, native_);
      cuda_api::stream_synchronize(native_);
    } catch (...) {
      cuda_api::free_device(device_, p);
      throw;
    }
    scratch_ = p;
  }
#endif
  return scratch_;
}

// ---------------------------------------------------------------------------------------------
// Event

Event::Event(Backend backend, int device) : backend_(backend), device_(device) {
#if ASGD_HAVE_CUDA
  if (backend == Backend::kCuda) native_ = cuda_api::event_create(device);
#else
  if (backend == Backend::kCuda) throw_cuda_unavailable(__FILE__, __LINE__);
#endif
}

Event::Event(Event&& other) noexcept
    : backend_(other.backend_),
      device_(other.device_),
      native_(std::exchange(other.native_, nullptr)),
      host_time_ms_(other.host_time_ms_) {}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    release();
    backend_ = other.backend_;
    device_ = other.device_;
    native_ = std::exchange(other.native_, nullptr);
    host_time_ms_ = other.host_time_ms_;
  }
  return *this;
}

Event::~Event() {
  release();
}

void Event::release() noexcept {
#if ASGD_HAVE_CUDA
  if (native_) cuda_api::event_destroy(device_, native_);
#endif
  native_ = nullptr;
}

void Event::record(const Stream& stream) {
  ASGD_CHECK(stream.backend() == backend_, "event for {} recorded on a {} stream",
             to_string(backend_), to_string(stream.backend()));
#if ASGD_HAVE_CUDA
  if (native_) {
    cuda_api::event_record(native_, stream.native());
    return;
  }
#endif
  host_time_ms_ = host_now_ms();
}

void Event::wait_on(const Stream& stream) const {
#if ASGD_HAVE_CUDA
  if (native_ && stream.native()) cuda_api::event_wait(native_, stream.native());
#else
  (void)stream;
#endif
}

void Event::synchronize() const {
#if ASGD_HAVE_CUDA
  if (native_) cuda_api::event_synchronize(native_);
#endif
}

bool Event::ready() const {
#if ASGD_HAVE_CUDA
  if (native_) return cuda_api::event_query(native_);
#endif
  return true;
}

double Event::elapsed_ms_since(const Event& start) const {
#if ASGD_HAVE_CUDA
  if (native_ && start.native_) return cuda_api::event_elapsed_ms(start.native_, native_);
#endif
  return host_time_ms_ - start.host_time_ms_;
}

}  // namespace asgd
