#include "comm/local/local_transport.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

namespace asgd {
namespace {
constexpr double kNever = std::numeric_limits<double>::infinity();
// The communication thread sleeps at most this long: an arrival planned further out (a link
// of absurd latency) is looked at again later rather than turned into a time point that
// overflows the clock.
constexpr double kLongestSleep_s = 1.0;
}

LocalTransport::LocalTransport(int workers, const LocalTransportOptions& options,
                               std::function<double()> clock)
    : workers_(workers),
      options_(options),
      epoch_(std::chrono::steady_clock::now()),
      clock_(std::move(clock)),
      next_sender_(static_cast<std::size_t>(workers), 0),
      links_(static_cast<std::size_t>(workers) * static_cast<std::size_t>(workers)) {
  ASGD_CHECK(workers >= 1, "a transport for {} workers", workers);
  ASGD_CHECK(options.max_message >= 1, "max_message must be positive, got {}",
             options.max_message);
  ASGD_CHECK(options.queue_capacity >= 1, "queue_capacity must be positive, got {}",
             options.queue_capacity);
  slots_.reserve(static_cast<std::size_t>(workers) * static_cast<std::size_t>(workers));
  for (int r = 0; r < workers; ++r)
    for (int s = 0; s < workers; ++s)
      slots_.push_back(r == s ? nullptr : std::make_unique<MessageSlot>(options.max_message));
  thread_ = std::thread([this] { communication_loop(); });
}

LocalTransport::~LocalTransport() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

double LocalTransport::now() const {
  if (clock_) return clock_();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_).count();
}

void LocalTransport::check_pair(int from, int to) const {
  ASGD_CHECK(from >= 0 && from < workers_ && to >= 0 && to < workers_ && from != to,
             "no link from worker {} to worker {} among {}", from, to, workers_);
}

void LocalTransport::set_link(int from, int to, const LinkModel& model) {
  check_pair(from, to);
  ASGD_CHECK(model.bandwidth_bytes_per_s > 0 && model.latency_s >= 0,
             "link {}->{}: bandwidth must be positive and latency non-negative", from, to);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    Link& l = link_at(from, to);
    advance(l, now());  // what the old link has started by now, it carries to the end
    l.model = model;
    if (!model.ideal()) emulating_.store(true, std::memory_order_relaxed);
    ++generation_;
  }
  wake_.notify_all();
}

LinkModel LocalTransport::link(int from, int to) const {
  check_pair(from, to);
  std::lock_guard<std::mutex> lock(mutex_);
  return link_at(from, to).model;
}

LinkStats LocalTransport::stats(int from, int to) const {
  check_pair(from, to);
  LinkStats s;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const Link& l = link_at(from, to);
    s = l.stats;
    // Arrived and waiting for their receiver's collect(): done as far as the link is concerned.
    const double t = now();
    for (const Pending& p : l.in_flight) {
      if (p.arrive_s > t) break;  // in order: one link carries one message at a time
      ++s.delivered;
      s.bytes_delivered += p.message->header.length * static_cast<std::int64_t>(sizeof(float));
      s.busy_seconds += p.arrive_s - p.start_s;
    }
  }
  s.overwritten = slots_[static_cast<std::size_t>(to * workers_ + from)]->overwritten();
  return s;
}

void LocalTransport::deliver(int to, const MessageHeader& header, const float* data) {
  MessageSlot::Writer writer(slot(to, header.sender));
  Message& out = writer.message(header.length);
  out.header = header;
  std::memcpy(out.payload.data(), data, static_cast<std::size_t>(header.length) * sizeof(float));
  writer.publish();
}

bool LocalTransport::publish_arrived(int from, int to, double t, double cutoff,
                                     std::unique_lock<std::mutex>& lock) {
  Link& l = link_at(from, to);
  if (l.publishing) return false;
  advance(l, t);
  while (!l.in_flight.empty() && l.in_flight.front().arrive_s <= cutoff) {
    Pending p = std::move(l.in_flight.front());
    l.in_flight.pop_front();
    const double transfer_s = p.arrive_s - p.start_s;
    const auto bytes = p.message->header.length * static_cast<std::int64_t>(sizeof(float));
    ++l.stats.delivered;
    l.stats.bytes_delivered += bytes;
    l.stats.busy_seconds += transfer_s;
    transfers_.push_back({from, to, static_cast<double>(bytes), transfer_s});
    const auto cap = static_cast<std::size_t>(kMaxTransferRecords * workers_ * workers_);
    while (transfers_.size() > cap)
      transfers_.pop_front();
    // Publishing in order: nobody else takes this link's messages while the lock is released.
    l.publishing = true;
    lock.unlock();
    deliver(to, p.message->header, p.message->payload.data());
    lock.lock();
    l.publishing = false;
    recycle(l, std::move(p.message));
  }
  return true;
}

std::vector<TransferRecord> LocalTransport::take_transfers() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<TransferRecord> out(transfers_.begin(), transfers_.end());
  transfers_.clear();
  return out;
}

void LocalTransport::post(int peer, const MessageHeader& header, const float* data) {
  error_.rethrow_if_set();
  const int from = header.sender;
  check_pair(from, peer);
  ASGD_CHECK(header.length >= 1 && header.length <= options_.max_message && header.offset >= 0,
             "message of {} elements at offset {} (the transport carries 1 to {})", header.length,
             header.offset, options_.max_message);
  std::unique_ptr<Message> buffer;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    Link& l = link_at(from, peer);
    ++l.stats.posted;
    if (options_.deterministic ||
        (l.model.ideal() && l.queue.empty() && l.in_flight.empty() && !l.publishing)) {
      // Delivered below, on this thread, without the lock (on a link made ideal while
      // messages were still on it, those go first, in order, including one being published
      // right now: delivered beside it, this one could land first and be overwritten by it).
    } else {
      buffer = take_buffer(l, header.length);
    }
  }
  if (!buffer) {
    deliver(peer, header, data);
    std::lock_guard<std::mutex> lock(mutex_);
    LinkStats& s = link_at(from, peer).stats;
    ++s.delivered;
    s.bytes_delivered += header.length * static_cast<std::int64_t>(sizeof(float));
    return;
  }
  buffer->header = header;
  std::memcpy(buffer->payload.data(), data, static_cast<std::size_t>(header.length) * sizeof(float));
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    Link& l = link_at(from, peer);
    const double t = now();
    advance(l, t);  // what the link has started by now is no longer in the queue
    if (static_cast<int>(l.queue.size()) >= options_.queue_capacity) {
      // Stale states are worth less than fresh ones: the oldest unsent one makes room.
      recycle(l, std::move(l.queue.front().message));
      l.queue.pop_front();
      ++l.stats.superseded;
    }
    Pending p;
    p.message = std::move(buffer);
    p.ready_s = t;
    l.queue.push_back(std::move(p));
    advance(l, t);  // an idle link starts it at once
    // Each wake-up of the thread takes a core from the workers (on a VM, also a trip through
    // the hypervisor). The receiver's collect() publishes the message; the thread, the
    // fallback, is woken only when it sleeps with nothing planned, and a pass under way is
    // told to look again.
    if (thread_state_ != ThreadState::kPlanned) {
      ++generation_;
      wake = thread_state_ == ThreadState::kIdle;
    }
  }
  if (wake) wake_.notify_all();
}

std::unique_ptr<Message> LocalTransport::take_buffer(Link& l, std::int64_t length) {
  for (auto it = l.pool.begin(); it != l.pool.end(); ++it)
    if ((*it)->capacity() >= length) {
      std::unique_ptr<Message> m = std::move(*it);
      l.pool.erase(it);
      return m;
    }
  // Sized to the message, not the state: partial messages on many links stay small.
  return std::make_unique<Message>(length);
}

void LocalTransport::recycle(Link& l, std::unique_ptr<Message> m) {
  l.pool.push_back(std::move(m));
  // No more buffers than a link can hold at once (its queue and its window); the smallest go.
  const auto most = static_cast<std::size_t>(options_.queue_capacity) + kMaxInFlight;
  if (l.pool.size() > most) {
    auto smallest = std::min_element(
        l.pool.begin(), l.pool.end(),
        [](const auto& a, const auto& b) { return a->capacity() < b->capacity(); });
    l.pool.erase(smallest);
  }
}

void LocalTransport::advance(Link& l, double t) {
  // In virtual time, so a late pass does not slow the link.
  while (!l.queue.empty()) {
    Pending& head = l.queue.front();
    double start = std::max(l.busy_until_s, head.ready_s);
    // At most kMaxInFlight messages on the link at once: the next starts when the one
    // kMaxInFlight places ahead of it has arrived (a sender's window, as the MPI transport's).
    if (l.in_flight.size() >= kMaxInFlight)
      start = std::max(start, l.in_flight[l.in_flight.size() - kMaxInFlight].arrive_s);
    if (start > t) return;
    head.start_s = start;
    l.busy_until_s = start + static_cast<double>(head.message->header.length * sizeof(float)) /
                                 l.model.bandwidth_bytes_per_s;
    head.arrive_s = l.busy_until_s + l.model.latency_s;
    l.in_flight.push_back(std::move(head));
    l.queue.pop_front();
  }
}

void LocalTransport::for_each_unread(
    const std::function<void(int receiver, const Message&)>& f) const {
  ASGD_CHECK(options_.deterministic, "unread messages are only defined in deterministic mode");
  for (int receiver = 0; receiver < workers_; ++receiver)
    for (int sender = 0; sender < workers_; ++sender)
      if (sender != receiver)
        if (const Message* m = slots_[static_cast<std::size_t>(receiver * workers_ + sender)]->peek_unread())
          f(receiver, *m);
}

void LocalTransport::restore_receive_state(const std::vector<int>& collect_starts) {
  ASGD_CHECK(options_.deterministic, "receive state is only restored in deterministic mode");
  if (collect_starts.size() != next_sender_.size())
    ASGD_INPUT_ERROR("the checkpoint holds receive state for {} workers, this run has {}",
                     collect_starts.size(), next_sender_.size());
  for (const int s : collect_starts)
    if (s < 0 || s >= workers_)
      ASGD_INPUT_ERROR("the checkpoint's receive state names worker {} of {}", s, workers_);
  next_sender_ = collect_starts;
}

int LocalTransport::collect(int receiver, const Message** out, int max) {
  if (emulating_.load(std::memory_order_relaxed)) {
    std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
    if (lock.owns_lock()) {
      const double t = now();
      for (int sender = 0; sender < workers_; ++sender)
        if (sender != receiver) publish_arrived(sender, receiver, t, t, lock);
    }
  }
  int n = 0;
  int& start = next_sender_[static_cast<std::size_t>(receiver)];
  int last = start;
  for (int i = 0; i < workers_ && n < max; ++i) {
    const int sender = (start + i) % workers_;
    if (sender == receiver) continue;
    if (const Message* m = slot(receiver, sender).acquire()) {
      out[n++] = m;
      last = sender;
    }
  }
  // The next call starts after the last sender served, so every sender gets its turn even when
  // more have fresh messages than `max`.
  start = (last + 1) % workers_;
  return n;
}

void LocalTransport::communication_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  try {
    while (!stop_) {
      // Posts that arrive while this pass has the lock released (deliveries copy without it)
      // bump the generation, so the wait below cannot miss them.
      thread_state_ = ThreadState::kInPass;
      const std::uint64_t generation = generation_;
      const double t = now();
      double next = kNever;
      for (int from = 0; from < workers_; ++from) {
        for (int to = 0; to < workers_; ++to) {
          if (from == to) continue;
          Link& l = link_at(from, to);
          // What the receiver has left uncollected for the grace period.
          if (!publish_arrived(from, to, t, t - kPullGrace_s, lock)) {
            next = std::min(next, t + kPullGrace_s);  // being published; look again
            continue;
          }
          // A queued message starts before the one in flight ahead of it arrives, so the
          // arrivals are the whole plan.
          if (!l.in_flight.empty())
            next = std::min(next, l.in_flight.front().arrive_s + kPullGrace_s);
        }
      }
      // At most one pass per grace period while messages flow.
      if (next != kNever) next = std::clamp(next, t + kPullGrace_s, t + kLongestSleep_s);
      const auto changed = [&] { return stop_ || generation_ != generation; };
      thread_state_ = next == kNever ? ThreadState::kIdle : ThreadState::kPlanned;
      if (next == kNever) {
        wake_.wait(lock, changed);
      } else {
        // A relative wait (at most kLongestSleep_s), so that a clock given in the options,
        // which need not follow the steady clock, cannot turn it into a spin.
        wake_.wait_for(lock, std::chrono::duration<double>(next - t), changed);
      }
    }
  } catch (...) {
    error_.capture(std::current_exception());
  }
}

}  // namespace asgd
