#include "comm/message_slot.h"

#include <algorithm>

#include "runtime/error.h"

namespace asgd {

MessageSlot::MessageSlot(std::int64_t capacity, Backend backend, int device) : capacity_(capacity) {
  ASGD_CHECK(capacity >= 1, "a receive slot for messages of {} elements", capacity);
  for (auto& b : buffers_)
    b = std::make_unique<Message>(0, backend, device);
}

Message& MessageSlot::Writer::message(std::int64_t length) {
  ASGD_CHECK(length >= 0 && length <= slot_.capacity_,
             "a message of {} elements for a receive slot of {}", length, slot_.capacity_);
  Message& m = *slot_.buffers_[slot_.back_];
  if (length > m.capacity())
    m.reserve(std::min(slot_.capacity_, std::max(length, m.capacity() + m.capacity() / 2)));
  return m;
}

std::int64_t MessageSlot::reserved() const {
  std::int64_t n = 0;
  for (const auto& b : buffers_)
    n += b->capacity();
  return n;
}

bool MessageSlot::Writer::publish() {
  // Release: the payload written into the back buffer is visible to the reader that acquires
  // this index.
  const std::uint8_t old = slot_.middle_.exchange(
      static_cast<std::uint8_t>(slot_.back_ | kFresh), std::memory_order_acq_rel);
  slot_.back_ = static_cast<std::uint8_t>(old & ~kFresh);
  slot_.published_.fetch_add(1, std::memory_order_relaxed);
  const bool replaced_unread = (old & kFresh) != 0;
  if (replaced_unread) slot_.overwritten_.fetch_add(1, std::memory_order_relaxed);
  return replaced_unread;
}

const Message* MessageSlot::acquire() {
  if ((middle_.load(std::memory_order_relaxed) & kFresh) == 0) return nullptr;
  const std::uint8_t old = middle_.exchange(front_, std::memory_order_acq_rel);
  front_ = static_cast<std::uint8_t>(old & ~kFresh);
  return buffers_[front_].get();
}

const Message* MessageSlot::peek_unread() const {
  const std::uint8_t middle = middle_.load(std::memory_order_acquire);
  if ((middle & kFresh) == 0) return nullptr;
  return buffers_[middle & ~kFresh].get();
}

}  // namespace asgd
