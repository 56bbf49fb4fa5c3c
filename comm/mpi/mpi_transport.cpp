#include "comm/mpi/mpi_transport.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <thread>

namespace asgd {
namespace {

constexpr int kMaxProbesPerPass = 64;
// How long the communication thread sleeps after a pass that moved nothing. MPI progresses
// only inside MPI calls, so it must poll; but every wake-up takes a core from a compute thread,
// so it polls fast only where polling moves data: while chunks are being received (the
// receiver's MPI calls do the copy) or its sends are backed up. A peer that stalls must not
// keep it spinning, so after kStalledAfter_s without progress it slows to kStalledSleep_s.
// Otherwise it looks for arrivals every options.idle_poll_s (woken at once by post()): a
// message then waits on average half of that before its receive starts.
constexpr double kBusySleep_s = 20e-6;
constexpr double kStalledAfter_s = 2e-3;
constexpr double kStalledSleep_s = 200e-6;
constexpr int kMaxInFlight = 2;  // messages per peer handed to MPI at once

// kForgeLength: a length other than the true one that stays within bounds, so that nothing but
// the length is wrong: one element fewer, or two instead of a single one (moved back where
// needed to stay within the state; the constructor made sure that max_message >= 2).
void forge_length(WireHeader& h, std::int64_t parameters) {
  if (h.length == 1) {
    h.length = 2;
    h.offset = std::min(h.offset, parameters - 2);
    return;
  }
  h.length -= 1;
}

}  // namespace

double idle_poll_seconds(int cores, int local_ranks, int threads_per_rank) {
  const long busy = static_cast<long>(std::max(local_ranks, 1)) * std::max(threads_per_rank, 1);
  return cores > busy ? 400e-6 : 2e-3;
}

WireFaultKind parse_wire_fault(std::string_view name) {
  const WireFaultKind kind = wire_fault_named(name);
  if (kind != WireFaultKind::kNone) return kind;
  ASGD_INPUT_ERROR(
      "unknown fault '{}': expected corrupt, forge-offset, forge-length, forge-fingerprint or "
      "replay",
      name);
}

struct MpiTransport::Peer {
  Peer(std::int64_t capacity, bool remote)
      : slot(remote ? std::make_unique<MessageSlot>(capacity) : nullptr) {}

  // Send side. The queue and pool are shared with post() under `mutex`.
  mutable std::mutex mutex;
  std::deque<Outgoing*> queue;  // posted, not started
  std::vector<Outgoing*> pool;  // free buffers
  std::vector<std::unique_ptr<Outgoing>> storage;
  LinkModel link;
  LinkStats send_stats;  // posted, superseded, delivered (completed), bytes, busy
  // Owned by the communication thread: messages taken from the queue, oldest first. Up to
  // kMaxInFlight are handed to MPI at once, so the next one is on its way while the receiver
  // copies the previous one; an emulated link holds a message until it is due.
  struct InFlight {
    Outgoing* message = nullptr;
    bool started = false;  // handed to MPI
    double start_s = 0;    // when the (emulated) link started carrying it
    double due_s = 0;      // when an emulated link would have delivered it
    // What goes on the wire: `message`, or for a replay the earlier message it repeats.
    Outgoing* wire = nullptr;
    std::int64_t trace_ns = 0;
    std::vector<MPI_Request> requests;
  };
  std::deque<InFlight> in_flight;
  double link_busy_until_s = 0;
  std::vector<MPI_Request> done_request;
  EncodedHeader done_frame{};
  bool done_started = false;
  bool done_completed = false;
  // Fault injection, owned by the communication thread: messages taken for sending, and
  // (kReplay) the last undamaged one, kept out of the pool so that it can be sent again.
  std::int64_t taken = 0;
  Outgoing* replay_source = nullptr;

  // Receive side, owned by the communication thread (the slot's reader is the worker).
  std::unique_ptr<MessageSlot> slot;
  std::optional<MessageSlot::Writer> writer;  // held while a message is being received
  WireHeader incoming;
  bool receiving = false;   // a valid header arrived; its chunks are coming
  bool discarding = false;  // drop chunks until that payload's last chunk or the next header
  std::int64_t expected_bytes = 0;
  std::int64_t posted_bytes = 0;
  std::int64_t header_trace_ns = 0;  // when the header arrived
  struct Chunk {
    MPI_Request request;
    std::int64_t offset;
    std::int64_t bytes;
  };
  std::deque<Chunk> chunks;
  PayloadHasher hasher;
  std::int64_t last_step = std::numeric_limits<std::int64_t>::min();
  double last_heard_s = 0;  // when a frame from it last arrived (finish() times out from it)
  std::atomic<bool> done_received{false};
  std::atomic<std::int64_t> delivered{0};
  std::atomic<std::int64_t> bytes_delivered{0};
};

MpiTransport::MpiTransport(const MpiSession& session, const MpiTransportOptions& options)
    : options_(options),
      rank_(session.rank()),
      size_(session.size()),
      epoch_(std::chrono::steady_clock::now()) {
  require_thread_multiple(session, "MPI transport");
  ASGD_CHECK(options.max_message >= 1, "max_message must be positive, got {}", options.max_message);
  ASGD_CHECK(options.queue_capacity >= 1, "queue_capacity must be positive, got {}",
             options.queue_capacity);
  ASGD_CHECK(options.chunk_bytes >= 4096 && options.chunk_bytes % 4 == 0 &&
                 options.chunk_bytes <= (std::int64_t{1} << 30),
             "chunk_bytes must be a multiple of 4 between 4 KiB and 1 GiB, got {}",
             options.chunk_bytes);
  ASGD_CHECK(options.idle_poll_s > 0 && options.idle_poll_s <= 1,
             "idle_poll_s must lie in (0, 1] seconds, got {}", options.idle_poll_s);
  ASGD_CHECK(options.model.parameters >= options.max_message,
             "messages of {} elements for a model of {} parameters", options.max_message,
             options.model.parameters);
  // Before any collective call, so that ranks given the same bad settings all fail alike.
  const WireFault& fault = options.fault;
  if (fault.kind != WireFaultKind::kNone) {
    if (fault.every < 1)
      ASGD_INPUT_ERROR("fault '{}': every must be a positive number of messages, got {}",
                       to_string(fault.kind), fault.every);
    if (fault.kind == WireFaultKind::kReplay && fault.every < 2)
      ASGD_INPUT_ERROR(
          "fault 'replay' every {}: needs every >= 2, so that an earlier message precedes each "
          "replay",
          fault.every);
    if (fault.kind == WireFaultKind::kForgeLength && options.max_message < 2)
      ASGD_INPUT_ERROR("fault 'forge-length' needs messages of 2 elements or more, got {}",
                       options.max_message);
  }
  ASGD_CHECK_MPI(MPI_Comm_dup(session.comm(), &comm_));
  ASGD_CHECK_MPI(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  peer_poll_s_ = all_gather(comm_, options.idle_poll_s);
  for (int p = 0; p < size_; ++p)
    peers_.push_back(std::make_unique<Peer>(options.max_message, p != rank_));
  for (auto& r : rejected_)
    r.store(0);
  if (options.trace && options.trace->enabled())
    trace_ = options.trace->lane(options.trace->add_lane(rank_, 1, "communication"));
  thread_ = std::thread([this] { communication_loop(); });
}

MpiTransport::~MpiTransport() {
  if (const std::int64_t loans = loans_.load(); loans != 0)
    std::fprintf(stderr,
                 "asgd: the MPI transport was destroyed with %lld lent send buffers still out "
                 "(a caller's bug: they must be posted or dropped first)\n",
                 static_cast<long long>(loans));
  if (thread_.joinable()) {
    quit_ = true;
    wake_.notify_all();
    thread_.join();
  }
  if (finishing_ && !error_.has_error()) {
    MPI_Comm_free(&comm_);
    return;
  }
  // Destroyed without finish() (an error elsewhere) or after it failed: chunks matched into
  // receive slots and sends from the queue's buffers may still be under way, and those cannot
  // be cancelled. They get a grace period; if MPI may still touch a buffer after it, the
  // buffers are never freed (the process is about to end anyway), nor is the communicator
  // (left to MPI_Finalize).
  std::vector<MPI_Request> pending;
  if (drain_request_ != MPI_REQUEST_NULL) pending.push_back(drain_request_);
  for (auto& p : peers_) {
    for (auto& c : p->chunks)
      if (c.request != MPI_REQUEST_NULL) pending.push_back(c.request);
    for (auto& f : p->in_flight)
      for (MPI_Request r : f.requests)
        if (r != MPI_REQUEST_NULL) pending.push_back(r);
    for (MPI_Request r : p->done_request)
      if (r != MPI_REQUEST_NULL) pending.push_back(r);
  }
  if (pending.empty() || settle_requests(pending, kTeardownGrace_s)) return;
  // Kept reachable, so that leak checkers see a choice rather than a leak.
  static auto* abandoned = new std::vector<std::unique_ptr<Peer>>;
  for (auto& p : peers_)
    abandoned->push_back(std::move(p));
  static auto* abandoned_scratch = new std::vector<std::vector<std::byte>>;
  abandoned_scratch->push_back(std::move(scratch_));
}

double MpiTransport::now() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_).count();
}

void MpiTransport::set_link(int peer, const LinkModel& link) {
  ASGD_CHECK(peer >= 0 && peer < size_ && peer != rank_, "no link from rank {} to rank {}", rank_,
             peer);
  ASGD_CHECK(link.bandwidth_bytes_per_s > 0 && link.latency_s >= 0,
             "link {}->{}: bandwidth must be positive and latency non-negative", rank_, peer);
  Peer& p = *peers_[static_cast<std::size_t>(peer)];
  std::lock_guard<std::mutex> lock(p.mutex);
  p.link = link;
}

void MpiTransport::check_post(int peer, const MessageHeader& header) const {
  error_.rethrow_if_set();
  ASGD_CHECK(peer >= 0 && peer < size_ && peer != rank_ && header.sender == rank_,
             "rank {} cannot post a message from {} to {} among {} ranks", rank_, header.sender,
             peer, size_);
  ASGD_CHECK(header.length >= 1 && header.length <= options_.max_message && header.offset >= 0 &&
                 header.length <= options_.model.parameters - header.offset,
             "message of {} elements at offset {} (the transport carries 1 to {} of {})",
             header.length, header.offset, options_.max_message, options_.model.parameters);
  ASGD_CHECK(!finishing_, "post() after finish()");
}

MpiTransport::Outgoing* MpiTransport::take_free(int peer) {
  Peer& p = *peers_[static_cast<std::size_t>(peer)];
  std::lock_guard<std::mutex> lock(p.mutex);
  if (!p.pool.empty()) {
    Outgoing* out = p.pool.back();  // the last one freed: the likeliest to be in cache
    p.pool.pop_back();
    return out;
  }
  p.storage.push_back(std::make_unique<Outgoing>(options_.max_message));
  return p.storage.back().get();
}

void MpiTransport::enqueue(int peer, const MessageHeader& header, Outgoing* out,
                           std::uint64_t checksum) {
  WireHeader& h = out->header;
  h.kind = FrameKind::kState;
  h.model = options_.model;
  h.sender = rank_;
  h.flags = 0;
  h.sender_step = header.sender_step;
  h.send_time_s = header.send_time_s;
  h.offset = header.offset;
  h.length = header.length;
  h.payload_checksum = checksum;
  out->encoded = encode_header(h);
  out->ready_s = now();
  Peer& p = *peers_[static_cast<std::size_t>(peer)];
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    ++p.send_stats.posted;
    // Stale states are worth less than fresh ones: the oldest unsent one makes room.
    if (static_cast<int>(p.queue.size()) >= options_.queue_capacity) {
      p.pool.push_back(p.queue.front());
      p.queue.pop_front();
      ++p.send_stats.superseded;
    }
    p.queue.push_back(out);
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    work_posted_ = true;
  }
  wake_.notify_one();
}

void MpiTransport::post(int peer, const MessageHeader& header, const float* data) {
  check_post(peer, header);
  Outgoing* out = take_free(peer);
  // The copy and its checksum run on the caller's thread, outside any lock, in one pass.
  thread_local PayloadHasher hasher;  // its state is allocated once per posting thread
  hasher.reset();
  hasher.copy_and_update(out->payload.data(), data,
                         static_cast<std::size_t>(header.length) * sizeof(float));
  enqueue(peer, header, out, hasher.digest());
}

LentBuffer MpiTransport::lend(int peer, std::int64_t length) {
  error_.rethrow_if_set();
  ASGD_CHECK(peer >= 0 && peer < size_ && peer != rank_, "rank {} has no peer {} among {} ranks",
             rank_, peer, size_);
  ASGD_CHECK(length >= 1 && length <= options_.max_message,
             "a loan for {} elements (the transport carries 1 to {})", length,
             options_.max_message);
  ASGD_CHECK(!finishing_, "lend() after finish()");
  Outgoing* out = take_free(peer);
  loans_.fetch_add(1, std::memory_order_relaxed);
  return make_loan(peer, out->payload.data(), options_.max_message, out);
}

void MpiTransport::post_lent(LentBuffer buffer, const MessageHeader& header) {
  // Every check comes first: a throw hands the buffer back unposted (its destructor).
  ASGD_CHECK(buffer.lender() == this, "post_lent() with a buffer {}",
             buffer ? "another transport lent" : "that holds no loan");
  const int peer = buffer.peer();
  check_post(peer, header);
  ASGD_CHECK(header.length <= buffer.capacity(), "a message of {} elements in a lent buffer of {}",
             header.length, buffer.capacity());
  auto* out = static_cast<Outgoing*>(take_loan(buffer));
  loans_.fetch_sub(1, std::memory_order_relaxed);
  enqueue(peer, header, out,
          payload_checksum(out->payload.data(),
                           static_cast<std::size_t>(header.length) * sizeof(float)));
}

void MpiTransport::end_loan(int peer, void* loan) {
  loans_.fetch_sub(1, std::memory_order_relaxed);
  Peer& p = *peers_[static_cast<std::size_t>(peer)];
  std::lock_guard<std::mutex> lock(p.mutex);
  p.pool.push_back(static_cast<Outgoing*>(loan));
}

int MpiTransport::collect(int receiver, const Message** out, int max) {
  ASGD_CHECK(receiver == rank_, "rank {} cannot collect for worker {}", rank_, receiver);
  int n = 0;
  int last = next_sender_;
  for (int i = 0; i < size_ && n < max; ++i) {
    const int sender = (next_sender_ + i) % size_;
    if (sender == rank_) continue;
    if (const Message* m = peers_[static_cast<std::size_t>(sender)]->slot->acquire()) {
      out[n++] = m;
      last = sender;
    }
  }
  next_sender_ = (last + 1) % size_;
  return n;
}

LinkStats MpiTransport::stats(int from, int to) const {
  ASGD_CHECK((from == rank_) != (to == rank_) && from >= 0 && to >= 0 && from < size_ && to < size_,
             "rank {} knows only its own links, not {}->{}", rank_, from, to);
  if (from == rank_) {
    const Peer& p = *peers_[static_cast<std::size_t>(to)];
    std::lock_guard<std::mutex> lock(p.mutex);
    return p.send_stats;
  }
  const Peer& p = *peers_[static_cast<std::size_t>(from)];
  LinkStats s;
  s.delivered = p.delivered.load(std::memory_order_relaxed);
  s.bytes_delivered = p.bytes_delivered.load(std::memory_order_relaxed);
  s.overwritten = p.slot->overwritten();
  return s;
}

std::vector<TransferRecord> MpiTransport::take_transfers() {
  std::lock_guard<std::mutex> lock(transfers_mutex_);
  std::vector<TransferRecord> out(transfers_.begin(), transfers_.end());
  transfers_.clear();
  return out;
}

bool MpiTransport::peer_done(int peer) const {
  return peers_[static_cast<std::size_t>(peer)]->done_received.load(std::memory_order_acquire);
}

std::int64_t MpiTransport::queued(int peer) const {
  ASGD_CHECK(peer >= 0 && peer < size_ && peer != rank_, "rank {} has no peer {} among {} ranks",
             rank_, peer, size_);
  const Peer& p = *peers_[static_cast<std::size_t>(peer)];
  std::lock_guard<std::mutex> lock(p.mutex);
  return static_cast<std::int64_t>(p.queue.size());
}

WireRejections MpiTransport::rejections() const {
  WireRejections r{};
  for (int i = 0; i < kWireErrorCount; ++i)
    r[static_cast<std::size_t>(i)] = rejected_[static_cast<std::size_t>(i)].load();
  return r;
}

void MpiTransport::flush(int max_pending) {
  wait_for_sends(mutex_, sent_, options_.peer_timeout_s, max_pending,
                 [&] { return error_.has_error(); });
  error_.rethrow_if_set();
}

void MpiTransport::wait_delivered(int peer, std::int64_t count) {
  wait_for_delivery(mutex_, published_, options_.peer_timeout_s, peer, count,
                    [&] { return error_.has_error(); });
  error_.rethrow_if_set();
}

void MpiTransport::finish(bool stop_everyone) {
  stop_everyone_ = stop_everyone;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    finishing_ = true;
    work_posted_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
  error_.rethrow_if_set();
}

// --- the communication thread -----------------------------------------------------------

void MpiTransport::start_send(int peer, const Outgoing& m, std::vector<MPI_Request>& requests) {
  requests.clear();
  MPI_Request r;
  ASGD_CHECK_MPI(MPI_Isend(m.encoded.data(), static_cast<int>(kWireHeaderBytes), MPI_BYTE, peer,
                           kHeaderTag, comm_, &r));
  requests.push_back(r);
  const auto* bytes = reinterpret_cast<const char*>(m.payload.data());
  const std::int64_t total = m.header.payload_bytes();
  for (std::int64_t at = 0; at < total; at += options_.chunk_bytes) {
    const int n = static_cast<int>(std::min(options_.chunk_bytes, total - at));
    const int tag = at + n == total ? kLastChunkTag : kChunkTag;
    ASGD_CHECK_MPI(MPI_Isend(bytes + at, n, MPI_BYTE, peer, tag, comm_, &r));
    requests.push_back(r);
  }
}

void MpiTransport::start_done(int peer) {
  Peer& p = *peers_[static_cast<std::size_t>(peer)];
  WireHeader h;
  h.kind = FrameKind::kDone;
  h.model = options_.model;
  h.sender = rank_;
  h.flags = stop_everyone_ ? kFlagStop : 0;
  h.send_time_s = now();
  h.length = 0;
  p.done_frame = encode_header(h);
  p.done_request.assign(1, MPI_REQUEST_NULL);
  ASGD_CHECK_MPI(MPI_Isend(p.done_frame.data(), static_cast<int>(kWireHeaderBytes), MPI_BYTE, peer,
                           kHeaderTag, comm_, p.done_request.data()));
  p.done_started = true;
}

// Damages a message taken for sending (the fault kinds of the header). Its true header stays in
// `header`, so the payload goes out at its real length; the buffer goes back to the pool after
// the send and post() rewrites all of it. Returns what goes on the wire instead of `m`.
MpiTransport::Outgoing* MpiTransport::damage(Peer& p, Outgoing& m) {
  WireHeader forged = m.header;
  switch (options_.fault.kind) {
    case WireFaultKind::kNone:
      return &m;
    case WireFaultKind::kCorrupt:
      // post() hashed the payload already: the header carries the true payload's checksum.
      reinterpret_cast<unsigned char*>(m.payload.data())[m.header.payload_bytes() / 2] ^= 0x10;
      return &m;
    case WireFaultKind::kForgeOffset:
      forged.offset = options_.model.parameters - forged.length + 1;  // one element past the end
      break;
    case WireFaultKind::kForgeLength:
      forge_length(forged, options_.model.parameters);
      break;
    case WireFaultKind::kForgeFingerprint:
      forged.model.layout_hash = ~forged.model.layout_hash;
      break;
    case WireFaultKind::kReplay:
      // every >= 2: an undamaged message to this peer was taken before this one. It goes on the
      // wire before the replay, and frames from one sender are processed in order, so the
      // receiver has taken its step when the replay comes.
      ASGD_CHECK(p.replay_source != nullptr, "rank {}: nothing to replay", rank_);
      return p.replay_source;
  }
  m.encoded = encode_header(forged);  // a forger who knows the format: the header checks out
  return &m;
}

// Puts a buffer whose send completed (or that stopped being the replay source) back into the
// pool unless the communication thread still needs it. Called with p.mutex held.
void MpiTransport::release(Peer& p, Outgoing* m) {
  if (m == p.replay_source) return;
  for (const Peer::InFlight& f : p.in_flight)
    if (f.message == m || f.wire == m) return;
  p.pool.push_back(m);
}

bool MpiTransport::pump_sends(double t) {
  bool progress = false;
  bool notify_sent = false;
  auto start = [&](int peer, Peer::InFlight& f) {
    start_send(peer, *f.wire, f.requests);
    f.started = true;
    f.trace_ns = trace_.now_ns();
  };
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    Peer& p = *peers_[static_cast<std::size_t>(peer)];
    // Completed sends, in order: their buffers go back to the pool.
    while (!p.in_flight.empty() && p.in_flight.front().started) {
      Peer::InFlight& f = p.in_flight.front();
      int done = 0;
      ASGD_CHECK_MPI(MPI_Testall(static_cast<int>(f.requests.size()), f.requests.data(), &done,
                                 MPI_STATUSES_IGNORE));
      if (!done) break;
      const std::int64_t bytes = f.wire->header.payload_bytes();
      trace_.complete("transfer", f.trace_ns, trace_.now_ns(), {"peer", peer, "bytes", bytes});
      {
        // It completed after it started and after the previous pass, and before this one: the
        // record is the midpoint, and the width of that interval its resolution. A send above
        // the eager limit completes only once the peer's thread looks for it, up to its idle
        // poll later, and that wait is not the link's.
        const double after_s = std::max(f.start_s, previous_pass_s_);
        std::lock_guard<std::mutex> lock(transfers_mutex_);
        transfers_.push_back({rank_, peer, static_cast<double>(bytes),
                              0.5 * (after_s + t) - f.start_s, t - after_s,
                              peer_poll_s_[static_cast<std::size_t>(peer)]});
        while (transfers_.size() > static_cast<std::size_t>(kMaxTransferRecords * size_))
          transfers_.pop_front();
      }
      Outgoing* const message = f.message;
      Outgoing* const wire = f.wire;
      const double start_s = f.start_s;
      p.in_flight.pop_front();
      {
        std::lock_guard<std::mutex> lock(p.mutex);
        ++p.send_stats.delivered;
        p.send_stats.bytes_delivered += bytes;
        p.send_stats.busy_seconds += t - start_s;
        release(p, message);
        if (wire != message) release(p, wire);
      }
      progress = notify_sent = true;
    }
    // Held messages that an emulated link has delivered by now.
    for (auto& f : p.in_flight)
      if (!f.started && t >= f.due_s) {
        start(peer, f);
        progress = true;
      }
    if (p.done_started) {
      if (!p.done_completed) {
        int done = 0;
        ASGD_CHECK_MPI(MPI_Test(p.done_request.data(), &done, MPI_STATUS_IGNORE));
        if (done) p.done_completed = progress = true;
      }
      continue;
    }
    // Take queued messages while fewer than kMaxInFlight are out.
    while (static_cast<int>(p.in_flight.size()) < kMaxInFlight) {
      Outgoing* next = nullptr;
      LinkModel link;
      {
        std::lock_guard<std::mutex> lock(p.mutex);
        if (finishing_) {
          // Nothing more is worth sending: the run is over here.
          for (Outgoing* m : p.queue)
            p.pool.push_back(m);
          p.send_stats.superseded += static_cast<std::int64_t>(p.queue.size());
          p.queue.clear();
        } else if (!p.queue.empty()) {
          next = p.queue.front();
          p.queue.pop_front();
          link = p.link;
        }
      }
      if (!next) break;
      Outgoing* wire = next;
      Outgoing* retired = nullptr;  // the replay source this message replaces
      if (options_.fault.kind != WireFaultKind::kNone) {
        if (++p.taken % options_.fault.every == 0) {
          wire = damage(p, *next);
          faults_injected_.fetch_add(1, std::memory_order_relaxed);
        } else if (options_.fault.kind == WireFaultKind::kReplay) {
          retired = p.replay_source;
          p.replay_source = next;
        }
      }
      Peer::InFlight& f = p.in_flight.emplace_back();
      f.message = next;
      f.wire = wire;
      if (retired) {
        std::lock_guard<std::mutex> lock(p.mutex);
        release(p, retired);
      }
      // The link starts on it when it is free and the message is taken (a message waiting
      // behind kMaxInFlight others has not been on the link).
      f.start_s = std::max({next->ready_s, p.link_busy_until_s, t});
      f.due_s = f.start_s;
      if (!link.ideal()) {
        p.link_busy_until_s = f.start_s + static_cast<double>(wire->header.payload_bytes()) /
                                              link.bandwidth_bytes_per_s;
        f.due_s = p.link_busy_until_s + link.latency_s;
      }
      // Never before the message ahead of it: after set_link() lowered the latency a later
      // message would overtake, and its receiver would reject the earlier one as a replay.
      if (p.in_flight.size() > 1)
        f.due_s = std::max(f.due_s, std::prev(p.in_flight.end(), 2)->due_s);
      if (t >= f.due_s) start(peer, f);
      progress = true;
    }
    // The done frame follows the last message to that peer.
    if (finishing_ && p.in_flight.empty()) {
      start_done(peer);
      progress = true;
    }
  }
  if (notify_sent) {
    std::lock_guard<std::mutex> lock(mutex_);
    sent_.notify_all();
  }
  return progress;
}

void MpiTransport::wait_on_peer(MPI_Request* request, int source, const char* what) {
  const double start = now();
  for (int looks = 0;; ++looks) {
    int done = 0;
    ASGD_CHECK_MPI(MPI_Test(request, &done, MPI_STATUS_IGNORE));
    if (done) return;
    if (quit_)
      ASGD_THROW("rank {}: transport destroyed while {} from rank {}", rank_, what, source);
    if (now() - start > options_.peer_timeout_s)
      ASGD_THROW(
          "rank {}: rank {} stopped in the middle of a message: {} has waited {} s for the rest "
          "of it (stalled or dead); raise the peer timeout if it is only slow",
          rank_, source, what, options_.peer_timeout_s);
    // Landing a chunk already on its way takes microseconds; a peer that takes longer is
    // stopped, and is looked at without taking a core from the worker.
    if (looks >= 1000) std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

void MpiTransport::drain(MPI_Message* message, int count, int source) {
  // MPI_Get_count gives MPI_UNDEFINED for more bytes than an int counts: 2 GiB, far beyond
  // anything this protocol sends, and beyond what a receive here can take.
  if (count < 0)
    ASGD_THROW(
        "rank {}: rank {} sent a message of more than 2 GiB, which this protocol never sends "
        "(a frame has {} bytes, a chunk at most {}); it cannot be taken off the wire",
        rank_, source, kWireHeaderBytes, options_.chunk_bytes);
  if (scratch_.size() < static_cast<std::size_t>(std::max(count, 1)))
    scratch_.resize(static_cast<std::size_t>(std::max(count, 1)));
  ASGD_CHECK_MPI(MPI_Imrecv(scratch_.data(), count, MPI_BYTE, message, &drain_request_));
  wait_on_peer(&drain_request_, source, "dropping a frame");
  // What a peer made this rank set aside is not kept beyond the size of a chunk.
  if (scratch_.size() > static_cast<std::size_t>(options_.chunk_bytes)) {
    scratch_.clear();
    scratch_.shrink_to_fit();
  }
}

void MpiTransport::end_incoming(int source) {
  Peer& p = *peers_[static_cast<std::size_t>(source)];
  if (!p.receiving) return;
  if (p.posted_bytes != p.expected_bytes) {
    abandon_incoming(source, WireError::kLengthMismatch);  // it came short
    return;
  }
  // Complete on the wire, its chunks matched: they land, and the message is published (or
  // rejected by its checksum) before anything else from this peer claims the slot's buffer.
  for (auto& c : p.chunks)
    wait_on_peer(&c.request, source, "completing a message");
  complete_chunks(source, /*all_landed=*/true);
}

void MpiTransport::abandon_incoming(int source, WireError reason) {
  Peer& p = *peers_[static_cast<std::size_t>(source)];
  // Chunks already handed to MPI must land before the buffer is reused.
  for (auto& c : p.chunks)
    wait_on_peer(&c.request, source, "abandoning a message");
  p.chunks.clear();
  p.writer.reset();  // unpublished: the slot's back buffer is simply written again later
  p.receiving = false;
  p.discarding = true;
  rejected_[static_cast<std::size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
}

bool MpiTransport::pump_receives() {
  bool progress = false;
  for (int probes = 0; probes < kMaxProbesPerPass; ++probes) {
    int flag = 0;
    MPI_Message message;
    MPI_Status status;
    ASGD_CHECK_MPI(improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm_, &flag, &message, &status));
    if (!flag) break;
    progress = true;
    int count = 0;
    ASGD_CHECK_MPI(MPI_Get_count(&status, MPI_BYTE, &count));
    const int source = status.MPI_SOURCE;
    Peer& p = *peers_[static_cast<std::size_t>(source)];
    p.last_heard_s = now();

    if (status.MPI_TAG == kChunkTag || status.MPI_TAG == kLastChunkTag) {
      const bool last = status.MPI_TAG == kLastChunkTag;
      // A chunk after a payload whose chunks are all matched belongs to no message; that
      // payload is whole, and ends (published, or rejected by its checksum) before this chunk
      // is counted against nothing.
      if (p.receiving && p.posted_bytes == p.expected_bytes) end_incoming(source);
      const std::int64_t want =
          p.receiving ? std::min(options_.chunk_bytes, p.expected_bytes - p.posted_bytes) : 0;
      // The chunk fits the claim only if it has the size the claim expects next and ends the
      // payload exactly where the claim does.
      if (p.receiving && want > 0 && count == want &&
          last == (p.posted_bytes + count == p.expected_bytes)) {
        auto* base = reinterpret_cast<char*>(p.writer->message(p.incoming.length).payload.data());
        Peer::Chunk c{MPI_REQUEST_NULL, p.posted_bytes, count};
        ASGD_CHECK_MPI(MPI_Imrecv(base + p.posted_bytes, count, MPI_BYTE, &message, &c.request));
        p.chunks.push_back(c);
        p.posted_bytes += count;
      } else {
        drain(&message, count, source);
        // The message this chunk belongs to is lost and counted once: the one being received
        // (its claim and its payload part here), or a run of chunks that no header announced;
        // the rest of its payload is then dropped uncounted, as are the chunks after a
        // rejected header.
        if (p.receiving) {
          abandon_incoming(source, WireError::kLengthMismatch);
        } else if (!p.discarding) {
          rejected_[static_cast<std::size_t>(WireError::kLengthMismatch)].fetch_add(
              1, std::memory_order_relaxed);
          p.discarding = true;
        }
        if (last) p.discarding = false;  // that payload is over
      }
      continue;
    }

    if (status.MPI_TAG != kHeaderTag) {  // not part of the protocol: dropped, counted
      drain(&message, count, source);
      rejected_[static_cast<std::size_t>(WireError::kBadKind)].fetch_add(1,
                                                                         std::memory_order_relaxed);
      continue;
    }
    if (count != static_cast<int>(kWireHeaderBytes)) {
      drain(&message, count, source);
      end_incoming(source);
      p.discarding = true;  // the chunks of whatever it announced follow
      rejected_[static_cast<std::size_t>(WireError::kTruncated)].fetch_add(
          1, std::memory_order_relaxed);
      continue;
    }
    EncodedHeader bytes;
    ASGD_CHECK_MPI(MPI_Mrecv(bytes.data(), count, MPI_BYTE, &message, MPI_STATUS_IGNORE));
    end_incoming(source);
    WireHeader h;
    WireError e = decode_header(bytes.data(), bytes.size(), options_.model, source, h);
    // Idle frames belong to the NCCL transport's rounds; nothing on this protocol sends one.
    if (e == WireError::kNone && h.kind == FrameKind::kIdle) e = WireError::kBadKind;
    if (e == WireError::kNone && h.kind == FrameKind::kState) {
      if (h.sender_step <= p.last_step) e = WireError::kStale;
      if (h.length > options_.max_message) e = WireError::kRangeOutOfBounds;
    }
    if (e != WireError::kNone) {
      rejected_[static_cast<std::size_t>(e)].fetch_add(1, std::memory_order_relaxed);
      p.discarding = true;
      continue;
    }
    p.discarding = false;
    if (h.kind == FrameKind::kDone) {
      if (h.flags & kFlagStop) stop_requested_.store(true, std::memory_order_release);
      p.done_received.store(true, std::memory_order_release);
      continue;
    }
    p.incoming = h;
    p.header_trace_ns = trace_.now_ns();
    p.receiving = true;
    p.expected_bytes = h.payload_bytes();
    p.posted_bytes = 0;
    p.hasher.reset();
    p.writer.emplace(*p.slot);
  }
  for (int source = 0; source < size_; ++source)
    if (source != rank_ && complete_chunks(source)) progress = true;
  return progress;
}

// Hashes the chunks of `source`'s message that have arrived, in order, and publishes the
// message once all of it has arrived and matches its checksum.
bool MpiTransport::complete_chunks(int source, bool all_landed) {
  Peer& p = *peers_[static_cast<std::size_t>(source)];
  bool progress = false;
  while (!p.chunks.empty()) {
    Peer::Chunk& c = p.chunks.front();
    int done = all_landed ? 1 : 0;
    if (!all_landed) ASGD_CHECK_MPI(MPI_Test(&c.request, &done, MPI_STATUS_IGNORE));
    if (!done) break;
    const auto* base =
        reinterpret_cast<const char*>(p.writer->message(p.incoming.length).payload.data());
    p.hasher.update(base + c.offset, static_cast<std::size_t>(c.bytes));
    p.chunks.pop_front();
    progress = true;
  }
  if (p.receiving && p.chunks.empty() && p.posted_bytes == p.expected_bytes) {
    if (p.hasher.digest() != p.incoming.payload_checksum) {
      p.writer.reset();
      p.receiving = false;
      rejected_[static_cast<std::size_t>(WireError::kChecksumMismatch)].fetch_add(
          1, std::memory_order_relaxed);
      return true;
    }
    p.writer->message(p.incoming.length).header = p.incoming.message_header();
    p.writer->publish();
    trace_.complete("receive", p.header_trace_ns, trace_.now_ns(),
                    {"peer", source, "bytes", p.expected_bytes});
    p.writer.reset();
    p.receiving = false;
    p.last_step = p.incoming.sender_step;
    p.bytes_delivered.fetch_add(p.expected_bytes, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      p.delivered.fetch_add(1, std::memory_order_relaxed);
      published_.notify_all();
    }
    progress = true;
  }
  return progress;
}

bool MpiTransport::all_finished() const {
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    const Peer& p = *peers_[static_cast<std::size_t>(peer)];
    if (!p.done_completed || !p.done_received.load(std::memory_order_relaxed) || p.receiving)
      return false;
  }
  return true;
}

void MpiTransport::communication_loop() {
  try {
    double idle_s = 0;
    double last_progress_s = now();
    double finish_started_s = -1;
    while (!quit_) {
      const double t = now();
      bool progress = pump_sends(t);
      previous_pass_s_ = t;
      if (pump_receives()) progress = true;
      if (finishing_) {
        if (finish_started_s < 0) finish_started_s = t;
        if (all_finished()) break;
        // A peer still training (a straggler, a slower GPU, a larger shard) keeps sending: only
        // one silent for the whole timeout, since this rank finished or since its last frame,
        // is taken for stalled or dead.
        // One that finished but has not taken this rank's last messages for as long has left
        // without them (its process ended without ending the job).
        std::string missing, untaken;
        for (int peer = 0; peer < size_; ++peer) {
          const Peer& p = *peers_[static_cast<std::size_t>(peer)];
          if (peer == rank_ ||
              t - std::max(finish_started_s, p.last_heard_s) <= options_.peer_timeout_s)
            continue;
          if (!p.done_received)
            missing += fmt::format("{}{}", missing.empty() ? "" : ", ", peer);
          else if (!p.done_completed)
            untaken += fmt::format("{}{}", untaken.empty() ? "" : ", ", peer);
        }
        if (!missing.empty()) {
          ASGD_THROW(
              "rank {}: ranks [{}] sent nothing for {} s and did not finish (stalled or "
              "dead); raise the peer timeout if they are only slow",
              rank_, missing, options_.peer_timeout_s);
        }
        if (!untaken.empty()) {
          ASGD_THROW(
              "rank {}: ranks [{}] finished but have not taken this rank's last messages "
              "within {} s (gone without ending the job); raise the peer timeout if they are "
              "only slow",
              rank_, untaken, options_.peer_timeout_s);
        }
      }
      if (progress) {
        idle_s = 0;
        last_progress_s = t;
        continue;
      }
      bool busy = false;
      for (int peer = 0; peer < size_ && !busy; ++peer) {
        if (peer == rank_) continue;
        const Peer& p = *peers_[static_cast<std::size_t>(peer)];
        busy = !p.chunks.empty() || p.receiving ||
               static_cast<int>(p.in_flight.size()) >= kMaxInFlight;
      }
      if (!busy)
        idle_s = options_.idle_poll_s;
      else
        idle_s = t - last_progress_s < kStalledAfter_s ? kBusySleep_s : kStalledSleep_s;
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait_for(lock, std::chrono::duration<double>(idle_s),
                     [&] { return work_posted_ || quit_.load(); });
      work_posted_ = false;
    }
  } catch (...) {
    error_.capture(std::current_exception());
    std::lock_guard<std::mutex> lock(mutex_);
    sent_.notify_all();
    published_.notify_all();
  }
  // A slot's writer holds a mutex locked on this thread: unlocked here, not by the destructor
  // on another thread (undefined behaviour). Chunks still landing keep the slot's buffer, which
  // the destructor settles or abandons.
  for (auto& p : peers_)
    if (p) p->writer.reset();
}

}  // namespace asgd
