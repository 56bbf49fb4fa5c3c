// The CUDA side of the device layer (declared in runtime/detail/cuda_api.h).
//
// Device selection: the functions that create something on a device (stream, cuBLAS handle,
// event, allocation) make that device current on the calling thread and leave it current, so
// the thread that creates a worker's stream is ready to launch on it. The destroy/free
// functions restore the caller's current device afterwards: tearing down an object of another
// device must not redirect the caller's later work.
#include <string>
#include <vector>

#include "runtime/detail/cuda_api.h"
#include "runtime/detail/cuda_check.cuh"

namespace asgd::cuda_api {
namespace {

struct DeviceCount {
  int count = 0;
  std::string reason;
};

DeviceCount query_device_count() {
  DeviceCount out;
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  // A failed runtime call also sets the thread's last error, which the next launch check
  // would otherwise report as its own.
  (void)cudaGetLastError();
  if (status != cudaSuccess) {
    out.reason = fmt::format("no CUDA device found (cudaGetDeviceCount: {} ({}))",
                             cudaGetErrorString(status), cudaGetErrorName(status));
    return out;
  }
  if (count <= 0) {
    out.reason = "no CUDA device found (cudaGetDeviceCount reported 0 devices)";
    return out;
  }
  out.count = count;
  return out;
}

const DeviceCount& cached_device_count() {
  // Devices cannot appear while a process runs, so one query serves every caller; the static
  // makes the first query thread-safe.
  static const DeviceCount result = query_device_count();
  return result;
}

// Makes `device` current for the lifetime of the scope, then restores the previous device.
class DeviceScope {
 public:
  explicit DeviceScope(int device) noexcept {
    if (cudaGetDevice(&previous_) != cudaSuccess) {
      (void)cudaGetLastError();
      previous_ = -1;
    }
    if (previous_ != device) ASGD_CHECK_CUDA_NOTHROW(cudaSetDevice(device));
  }
  ~DeviceScope() {
    int current = -1;
    if (previous_ >= 0 && cudaGetDevice(&current) == cudaSuccess && current != previous_)
      ASGD_CHECK_CUDA_NOTHROW(cudaSetDevice(previous_));
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = -1;
};

void set_device(int device) {
  int current = -1;
  ASGD_CHECK_CUDA(cudaGetDevice(&current));
  if (current != device) ASGD_CHECK_CUDA(cudaSetDevice(device));
}

}  // namespace

int device_count(std::string* reason) {
  const DeviceCount& result = cached_device_count();
  if (reason) *reason = result.reason;
  return result.count;
}

std::vector<DeviceInfo> devices() {
  const int count = cached_device_count().count;
  std::vector<DeviceInfo> out;
  out.reserve(static_cast<std::size_t>(count));
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp prop{};
    ASGD_CHECK_CUDA(cudaGetDeviceProperties(&prop, d));
    DeviceInfo info;
    info.backend = Backend::kCuda;
    info.ordinal = d;
    info.name = prop.name;
    info.memory_bytes = prop.totalGlobalMem;
    info.compute_major = prop.major;
    info.compute_minor = prop.minor;
    info.processors = prop.multiProcessorCount;
    info.bus_id =
        fmt::format("{:04x}:{:02x}:{:02x}.0", prop.pciDomainID, prop.pciBusID, prop.pciDeviceID);
    out.push_back(std::move(info));
  }
  return out;
}

void* stream_create(int device) {
  set_device(device);
  cudaStream_t stream = nullptr;
  // Non-blocking: the legacy default stream must not serialise the workers' streams.
  ASGD_CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return stream;
}

void stream_destroy(int device, void* stream) noexcept {
  if (!stream) return;
  DeviceScope scope(device);
  auto s = static_cast<cudaStream_t>(stream);
  // Stream's contract: destroying it waits for its queued work.
  ASGD_CHECK_CUDA_NOTHROW(cudaStreamSynchronize(s));
  ASGD_CHECK_CUDA_NOTHROW(cudaStreamDestroy(s));
}

void stream_synchronize(void* stream) {
  ASGD_CHECK_CUDA(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}

void* blas_create(int device, void* stream) {
  set_device(device);
  cublasHandle_t handle = nullptr;
  ASGD_CHECK_CUBLAS(cublasCreate(&handle));
  try {
    ASGD_CHECK_CUBLAS(cublasSetStream(handle, static_cast<cudaStream_t>(stream)));
    // Plain FP32 (no TF32) so that GEMM agrees with the host backend to float tolerance.
    ASGD_CHECK_CUBLAS(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
    ASGD_CHECK_CUBLAS(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST));
  } catch (...) {
    cublasDestroy(handle);
    throw;
  }
  return handle;
}

void blas_destroy(int device, void* handle) noexcept {
  if (!handle) return;
  DeviceScope scope(device);
  const cublasStatus_t status = cublasDestroy(static_cast<cublasHandle_t>(handle));
  if (status != CUBLAS_STATUS_SUCCESS)
    std::fprintf(stderr, "%s:%d: cublasDestroy failed: %s\n", __FILE__, __LINE__,
                 cublasGetStatusString(status));
}

void* event_create(int device) {
  set_device(device);
  cudaEvent_t event = nullptr;
  // Default flags: timing stays enabled so that elapsed_ms works on every event.
  ASGD_CHECK_CUDA(cudaEventCreate(&event));
  return event;
}

void event_destroy(int device, void* event) noexcept {
  if (!event) return;
  DeviceScope scope(device);
  ASGD_CHECK_CUDA_NOTHROW(cudaEventDestroy(static_cast<cudaEvent_t>(event)));
}

void event_record(void* event, void* stream) {
  ASGD_CHECK_CUDA(
      cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)));
}

void event_wait(void* event, void* stream) {
  ASGD_CHECK_CUDA(
      cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(event), 0));
}

void event_synchronize(void* event) {
  ASGD_CHECK_CUDA(cudaEventSynchronize(static_cast<cudaEvent_t>(event)));
}

bool event_query(void* event) {
  const cudaError_t e = cudaEventQuery(static_cast<cudaEvent_t>(event));
  if (e == cudaErrorNotReady) {
    (void)cudaGetLastError();  // not an error: clear it so that later checks do not see it
    return false;
  }
  ASGD_CHECK_CUDA(e);
  return true;
}

float event_elapsed_ms(void* start, void* end) {
  float ms = 0.0f;
  ASGD_CHECK_CUDA(
      cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end)));
  return ms;
}

void* malloc_device(int device, std::size_t bytes) {
  set_device(device);
  void* ptr = nullptr;
  ASGD_CHECK_CUDA(cudaMalloc(&ptr, bytes));
  return ptr;
}

void free_device(int device, void* ptr) noexcept {
  if (!ptr) return;
  DeviceScope scope(device);
  ASGD_CHECK_CUDA_NOTHROW(cudaFree(ptr));
}

void* malloc_pinned(std::size_t bytes) {
  void* ptr = nullptr;
  // With unified addressing (every 64-bit platform we support) this memory is portable: any
  // device's streams may copy to and from it.
  ASGD_CHECK_CUDA(cudaMallocHost(&ptr, bytes));
  return ptr;
}

void free_pinned(void* ptr) noexcept {
  if (!ptr) return;
  ASGD_CHECK_CUDA_NOTHROW(cudaFreeHost(ptr));
}

void memcpy_async(void* dst, const void* src, std::size_t bytes, void* stream) {
  ASGD_CHECK_CUDA(
      cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, static_cast<cudaStream_t>(stream)));
}

void memset_async(void* dst, std::size_t bytes, void* stream) {
  ASGD_CHECK_CUDA(cudaMemsetAsync(dst, 0, bytes, static_cast<cudaStream_t>(stream)));
}

}  // namespace asgd::cuda_api
