// A message between workers: a contiguous range of the sender's flat parameter vector and the
// header that says where it belongs. In one process the header travels as this struct; the
// wire encoding for other processes (magic, fingerprint, checksum) is in comm/wire_format.h.
#pragma once

#include <cstdint>

#include "runtime/buffer.h"

namespace asgd {

struct MessageHeader {
  std::int32_t sender = -1;
  std::int64_t sender_step = 0;  // the sender's step when it took the copy (for staleness)
  std::int64_t offset = 0;       // first element of the range in the flat vector
  std::int64_t length = 0;       // elements
  double send_time_s = 0;        // the sender's steady clock, in seconds
};

// A header with its payload: in host memory that is page-locked on CUDA builds with a device
// (so that copies to a GPU are asynchronous), or, for transports that move payloads from GPU
// to GPU (the NCCL transport), in the memory of a GPU. Exactly one of the two is allocated.
struct Message {
  explicit Message(std::int64_t capacity) : payload(static_cast<std::size_t>(capacity)) {}
  // On `backend`'s device `device` (kHost: the pinned host buffer, as above).
  Message(std::int64_t capacity, Backend backend, int device) : backend_(backend), device_(device) {
    reserve(capacity);
  }
  MessageHeader header;
  PinnedBuffer<float> payload;         // host memory (empty when the payload is on a GPU)
  DeviceBuffer<float> device_payload;  // GPU memory (empty when the payload is on the host)

  bool on_device() const { return backend_ != Backend::kHost; }
  float* data() { return on_device() ? device_payload.data() : payload.data(); }
  const float* data() const { return on_device() ? device_payload.data() : payload.data(); }
  std::int64_t capacity() const {
    return static_cast<std::int64_t>(on_device() ? device_payload.size() : payload.size());
  }
  // Room for at least `elements`: a smaller buffer is replaced (its contents are not kept).
  void reserve(std::int64_t elements) {
    if (elements <= capacity()) return;
    const auto n = static_cast<std::size_t>(elements);
    if (on_device()) {
      device_payload = DeviceBuffer<float>();  // the old one goes before the new one comes
      device_payload = DeviceBuffer<float>(backend_, device_, n);
    } else {
      payload = PinnedBuffer<float>();
      payload = PinnedBuffer<float>(n);
    }
  }

 private:
  Backend backend_ = Backend::kHost;
  int device_ = 0;
};

}  // namespace asgd
