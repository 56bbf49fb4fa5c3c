// The in-process transport: workers are threads of one process and messages are copies
// between buffers. It can emulate links: each directed pair has a bandwidth and a latency,
// settable at start and changeable while running, and a message is delivered when a real link
// of that speed would have delivered it (transfers on one link go one at a time; latency
// overlaps, for up to kMaxInFlight messages). So slow and uneven networks can be studied on one
// machine.
//
// Ideal links (infinite bandwidth, no latency), and every link in deterministic mode, deliver
// inside post() on the sender's thread. On emulated links a message that has arrived (in
// virtual time: when the link would have carried it) is published by its receiver's next
// collect(), or, if the receiver has not collected within kPullGrace_s of the arrival, by a
// communication thread that wakes at most once per grace period. A receiver sees a message at
// the same collect() either way; publishing each one from a thread woken for it cost the
// workers about a tenth of their throughput on the 2-core development VM, where a wake-up
// costs tens of microseconds.
//
// Thread-safety: as Transport; set_link() from any thread. collect() never waits for a
// transfer: it publishes arrived messages only if the transport's lock is free at once
// (try-lock) and then holds it only for bookkeeping, never during a copy.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "comm/message_slot.h"
#include "comm/transport.h"
#include "runtime/error.h"

namespace asgd {

struct LocalTransportOptions {
  std::int64_t max_message = 0;  // elements; usually the parameter count
  int queue_capacity = 2;        // unsent messages per link before the oldest is superseded
  bool deterministic = false;    // deliver every message inside post(), links ignored
};

class LocalTransport final : public Transport {
 public:
  // `clock`: seconds on a monotonic clock; empty: the steady clock since the transport was
  // created. Tests drive emulated links with a clock they advance by hand (it is called from
  // every thread that uses the transport, so it must be thread-safe).
  LocalTransport(int workers, const LocalTransportOptions& options,
                 std::function<double()> clock = {});
  ~LocalTransport() override;

  int size() const override { return workers_; }
  std::int64_t max_message() const override { return options_.max_message; }
  void post(int peer, const MessageHeader& header, const float* data) override;
  int collect(int receiver, const Message** out, int max) override;
  LinkStats stats(int from, int to) const override;
  std::vector<TransferRecord> take_transfers() override;

  // Sets the emulated link from -> to; messages that start transmitting later use it (those
  // the old link has started by now, in its virtual time, finish on it).
  void set_link(int from, int to, const LinkModel& link);
  LinkModel link(int from, int to) const;

  // Seconds since the transport was created, or the clock given (the clock of send times and
  // deliveries).
  double now() const;
  // How long an arrived message may wait for its receiver's collect() before the
  // communication thread publishes it.
  static constexpr double kPullGrace_s = 2e-3;
  // Messages an emulated link carries at once (started, not arrived): beyond it the next one
  // waits in the bounded queue, where a newer one supersedes it. Without a window a link of
  // long latency would hold every message sent during that latency, each a buffer.
  static constexpr std::size_t kMaxInFlight = 8;

  // Deterministic mode only (one thread drives every worker): what a checkpoint keeps so that
  // a resumed run reads exactly what the uninterrupted one would — each delivered message no
  // receiver has read yet (f(receiver, message)), and where each receiver's collect() starts.
  void for_each_unread(const std::function<void(int receiver, const Message&)>& f) const;
  std::vector<int> collect_starts() const { return next_sender_; }
  // Puts them back into a fresh transport (the messages through post()).
  void restore_receive_state(const std::vector<int>& collect_starts);

 private:
  struct Pending {
    std::unique_ptr<Message> message;
    double ready_s = 0;   // when post() finished copying
    double start_s = 0;   // when the link started sending it
    double arrive_s = 0;  // when it reaches the receiver
  };
  struct Link {
    LinkModel model;
    std::deque<Pending> queue;      // posted, not started
    std::deque<Pending> in_flight;  // started, not arrived (in start order)
    std::vector<std::unique_ptr<Message>> pool;
    double busy_until_s = 0;
    LinkStats stats;
    bool publishing = false;  // a thread is copying one of its messages out (lock released)
  };

  Link& link_at(int from, int to) { return links_[static_cast<std::size_t>(from * workers_ + to)]; }
  const Link& link_at(int from, int to) const {
    return links_[static_cast<std::size_t>(from * workers_ + to)];
  }
  MessageSlot& slot(int receiver, int sender) {
    return *slots_[static_cast<std::size_t>(receiver * workers_ + sender)];
  }
  // Copies a message into the receiver's slot and publishes it (no lock held).
  void deliver(int to, const MessageHeader& header, const float* data);
  // Publishes, oldest first, the messages of from->to that arrived by `cutoff`; `lock` holds
  // mutex_ and is released around each copy. Returns false when another thread is publishing
  // on that link (it will publish them, in order).
  bool publish_arrived(int from, int to, double t, double cutoff,
                       std::unique_lock<std::mutex>& lock);
  // Starts, in virtual time, the queued messages of `l` that the link has begun sending by
  // time t: they move in flight with their arrival times. Called with mutex_ held.
  static void advance(Link& l, double t);
  // A buffer for a message of `length` elements from the link's pool, or a new one; and back.
  // Called with mutex_ held.
  static std::unique_ptr<Message> take_buffer(Link& l, std::int64_t length);
  void recycle(Link& l, std::unique_ptr<Message> m);
  void communication_loop();
  void check_pair(int from, int to) const;

  const int workers_;
  const LocalTransportOptions options_;
  const std::chrono::steady_clock::time_point epoch_;
  const std::function<double()> clock_;
  std::vector<std::unique_ptr<MessageSlot>> slots_;  // [receiver][sender]
  std::vector<int> next_sender_;                     // per receiver: where collect() starts

  mutable std::mutex mutex_;  // links_ (all fields), transfers_, stop_, generation_, thread_state_
  std::condition_variable wake_;
  std::vector<Link> links_;   // [from][to]
  std::deque<TransferRecord> transfers_;  // emulated links only: ideal ones take no time
  bool stop_ = false;
  std::uint64_t generation_ = 0;  // bumped by posts the thread must see, and link changes
  // The communication thread: in a pass (a post bumps generation_ so that it looks again),
  // asleep until a planned time, or asleep with nothing planned (a post wakes it).
  enum class ThreadState { kInPass, kPlanned, kIdle };
  ThreadState thread_state_ = ThreadState::kInPass;
  std::atomic<bool> emulating_{false};  // some link is emulated: collect() publishes arrivals
  std::thread thread_;
  ErrorSlot error_;
};

}  // namespace asgd
