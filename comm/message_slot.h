// A receive slot: the newest message from one sender to one receiver.
//
// Semantics: "latest wins" — publishing a message replaces an unread older one (counted), and
// "consume once" — acquire() hands out each published message at most once.
//
// It is a triple buffer: writers fill a private back buffer and publish it by exchanging it
// with the shared middle buffer; the reader takes the middle buffer in exchange for the one it
// held. The reader's side is one atomic exchange, with no lock and no wait, so the compute
// path never blocks on communication. Writers are serialised among themselves by a mutex
// (normally there is one writer, the sender or the communication thread).
//
// Memory: a buffer grows to the largest message written into it, up to the slot's capacity, so
// a slot costs three times the messages its sender actually sends (the load balancer's m_p, a
// fraction of the state by default), not three whole states: n workers in one process hold
// n(n-1) slots.
//
// Thread-safety: any number of writer threads (message() ... publish() under the writer lock,
// see Writer), one reader thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "comm/message.h"

namespace asgd {

class MessageSlot {
 public:
  // For messages of up to `capacity` elements, in pinned host memory or (kCuda) in the memory
  // of GPU `device`. Allocates nothing until the first message.
  explicit MessageSlot(std::int64_t capacity, Backend backend = Backend::kHost, int device = 0);
  MessageSlot(const MessageSlot&) = delete;
  MessageSlot& operator=(const MessageSlot&) = delete;

  // Exclusive access for one writer: fill message(), then publish().
  class Writer {
   public:
    explicit Writer(MessageSlot& slot) : slot_(slot), lock_(slot.writer_mutex_) {}
    // The buffer to fill, with room for `length` elements (<= the slot's capacity; a smaller
    // buffer is replaced, its contents lost, growing by at least half so that a sender whose
    // messages grow step by step does not reallocate at every step).
    Message& message(std::int64_t length);
    // Makes the message the latest. Returns true when it replaced one the reader never took.
    bool publish();

   private:
    MessageSlot& slot_;
    std::lock_guard<std::mutex> lock_;
  };

  // Reader: the newest message not handed out before, or nullptr. The returned message stays
  // valid and unchanged until the next acquire() call.
  const Message* acquire();
  // The message acquire() would return next, left unread; nullptr if none. Only while no
  // writer runs (a checkpoint of a deterministic run, where one thread does everything).
  const Message* peek_unread() const;

  std::int64_t capacity() const { return capacity_; }
  // Elements allocated in the three buffers; only while no writer runs.
  std::int64_t reserved() const;

  std::int64_t published() const { return published_.load(std::memory_order_relaxed); }
  std::int64_t overwritten() const { return overwritten_.load(std::memory_order_relaxed); }

 private:
  static constexpr std::uint8_t kFresh = 0x4;  // in middle_: the buffer there is unread

  std::int64_t capacity_;
  std::array<std::unique_ptr<Message>, 3> buffers_;
  std::mutex writer_mutex_;
  std::uint8_t back_ = 0;                // writers' buffer (under writer_mutex_)
  std::atomic<std::uint8_t> middle_{1};  // index | kFresh
  std::uint8_t front_ = 2;               // the reader's buffer
  std::atomic<std::int64_t> published_{0};
  std::atomic<std::int64_t> overwritten_{0};
};

}  // namespace asgd
