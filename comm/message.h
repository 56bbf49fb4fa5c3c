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

// A header with its payload, in host memory that is page-locked on CUDA builds with a device
// so that copies to a GPU are asynchronous.
struct Message {
  explicit Message(std::int64_t capacity) : payload(static_cast<std::size_t>(capacity)) {}
  MessageHeader header;
  PinnedBuffer<float> payload;
  std::int64_t capacity() const { return static_cast<std::int64_t>(payload.size()); }
};

}  // namespace asgd
