// Internal: the CUDA side of the device layer, implemented in runtime/device_cuda.cu with
// plain C++ types so that device.cpp compiles without CUDA headers. Only called when
// ASGD_HAVE_CUDA is 1. Every function throws asgd::Error (file, line, failing call) on
// failure, except the *_destroy/free ones, which are noexcept and report to stderr.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "runtime/device.h"

namespace asgd::cuda_api {

// Number of devices; 0 with `reason` set when there is none or the driver is unusable.
int device_count(std::string* reason);
std::vector<DeviceInfo> devices();

void* stream_create(int device);
void stream_destroy(int device, void* stream) noexcept;
void stream_synchronize(void* stream);
void* blas_create(int device, void* stream);
void blas_destroy(int device, void* handle) noexcept;

void* event_create(int device);
void event_destroy(int device, void* event) noexcept;
void event_record(void* event, void* stream);
void event_wait(void* event, void* stream);
void event_synchronize(void* event);
// True when the event has completed; false while work before it is pending.
bool event_query(void* event);
float event_elapsed_ms(void* start, void* end);

void* malloc_device(int device, std::size_t bytes);
void free_device(int device, void* ptr) noexcept;
void* malloc_pinned(std::size_t bytes);
void free_pinned(void* ptr) noexcept;
void memcpy_async(void* dst, const void* src, std::size_t bytes, void* stream);
void memset_async(void* dst, std::size_t bytes, void* stream);

}  // namespace asgd::cuda_api
