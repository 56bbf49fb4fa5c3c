#include "comm/message_slot.h"

namespace asgd {

MessageSlot::MessageSlot(std::int64_t capacity, Backend backend, int device) {
  for (auto& b : buffers_)
    b = std::make_unique<Message>(capacity, backend, device);
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
