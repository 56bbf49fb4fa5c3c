// The device layer: backends, streams and events. Everything else in asgd stands on it and it
// includes nothing else of ours but error.h. No CUDA types appear here, so every file can
// include it in a build without CUDA.
//
// Execution model. Work is issued on a Stream. On the cuda backend it is queued on a CUDA
// stream and runs asynchronously; on the host backend it runs synchronously on the calling
// thread, using up to Stream::threads() OpenMP threads. Code written against Stream is
// correct on both as long as it synchronises before it reads results on the host.
//
// Thread-safety: a Stream or Event is used by one thread at a time (the worker that owns it).
// The free functions are thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace asgd {

enum class Backend { kHost, kCuda };

std::string_view to_string(Backend backend);
// Parses "host" or "cuda"; throws InputError naming the value otherwise.
Backend parse_backend(std::string_view name);

// True when this build includes the CUDA backend.
bool cuda_compiled();
// Number of usable CUDA devices: 0 when there is none or the build has no CUDA.
int cuda_device_count();
// Why the cuda backend cannot be used ("no CUDA device: ..." or "built without CUDA"), or ""
// when it can.
std::string cuda_unavailable_reason();

struct DeviceInfo {
  Backend backend = Backend::kHost;
  int ordinal = 0;
  std::string name;
  std::size_t memory_bytes = 0;
  int compute_major = 0;  // CUDA compute capability; 0 on the host
  int compute_minor = 0;
  int processors = 0;  // CUDA multiprocessors, or host hardware threads
  // PCI address of a CUDA device ("0000:3b:00.0"): names one GPU on its host whatever
  // CUDA_VISIBLE_DEVICES renumbers; "" on the host.
  std::string bus_id;
};
// The host CPU first, then every CUDA device.
std::vector<DeviceInfo> list_devices();

// A queue of work on one device. Move-only; destroying it waits for its queued work.
class Stream {
 public:
  // A host stream using `threads` OpenMP threads (>= 1) for its kernels.
  static Stream host(int threads = 1);
  // A new non-blocking CUDA stream on `device`; throws Error naming the reason when the cuda
  // backend is unavailable (see cuda_unavailable_reason()).
  static Stream cuda(int device = 0);
  // host(threads) or cuda(device) as `backend` says.
  static Stream create(Backend backend, int device, int threads);

  Stream(Stream&&) noexcept;
  Stream& operator=(Stream&&) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream();

  Backend backend() const { return backend_; }
  bool is_host() const { return backend_ == Backend::kHost; }
  int device() const { return device_; }
  int threads() const { return threads_; }
  // Blocks until all work queued so far has finished (a no-op on the host).
  void synchronize() const;
  // The cudaStream_t, or nullptr on the host.
  void* native() const { return native_; }
  // The cublasHandle_t bound to this stream, created on first use; nullptr on the host.
  void* blas_handle() const;
  // Device memory of kReductionScratchBytes, zeroed, owned by this stream and allocated on
  // first use, for the kernels' deterministic grid reductions (kernels/cuda/grid_sum.cuh):
  // kernels queued on one stream run one after another, so they can share it. nullptr on the
  // host. Like every Stream member, for the thread that owns the stream.
  void* reduction_scratch() const;
  static constexpr std::size_t kReductionScratchBytes = 4096 * 4 * sizeof(double) + 64;

 private:
  Stream(Backend backend, int device, int threads, void* native);
  void release() noexcept;

  Backend backend_ = Backend::kHost;
  int device_ = 0;
  int threads_ = 1;
  void* native_ = nullptr;
  mutable void* blas_ = nullptr;
  mutable void* scratch_ = nullptr;
};

// A point in a stream's work. On the host an Event is a timestamp taken when record() runs,
// which (host work being synchronous) is when everything before it has finished.
class Event {
 public:
  explicit Event(Backend backend, int device = 0);
  Event(Event&&) noexcept;
  Event& operator=(Event&&) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event();

  void record(const Stream& stream);
  // Makes future work on `stream` wait for this event (no host blocking).
  void wait_on(const Stream& stream) const;
  // Blocks the host until the event has completed.
  void synchronize() const;
  // True when the event has completed (without blocking); always true on the host.
  bool ready() const;
  // Milliseconds between `start` and this event; both must have completed.
  double elapsed_ms_since(const Event& start) const;

 private:
  void release() noexcept;
  Backend backend_;
  int device_;
  void* native_ = nullptr;
  double host_time_ms_ = 0.0;
};

}  // namespace asgd
