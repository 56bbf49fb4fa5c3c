#include "comm/nccl/round_transport.h"

#include <algorithm>
#include <limits>
#include <optional>

namespace asgd {
namespace {

// How long the communication thread sleeps while a round is under way: its group moving data
// (NCCL on the GPU, MPI inside its calls: it only looks for the end), or its frames out and the
// peers' answers due (a peer joins as soon as it sees them). A peer that stays silent (stalled,
// or busy far from its next poll) must not keep it spinning: after kStalledAfter_s without
// progress it slows to kStalledSleep_s.
// Where the communication thread has no core of its own (a slow idle poll says so, see
// idle_poll_seconds()), every wake-up takes one from the compute, so rounds under way are
// polled at the stalled rate: on the 2-core VM with 2 ranks, 20 us cost 15% of the samples/s.
constexpr double kBusySleep_s = 20e-6;
constexpr double kStalledAfter_s = 2e-3;
constexpr double kStalledSleep_s = 200e-6;
constexpr double kFastIdlePoll_s = 400e-6;

}  // namespace

struct RoundTransport::Peer {
  Peer(std::int64_t capacity, bool remote, Backend backend, int device)
      : slot(remote ? std::make_unique<MessageSlot>(capacity, backend, device) : nullptr) {}

  // Send side. The queue and pool are shared with post() under `mutex`.
  mutable std::mutex mutex;
  std::deque<Outgoing*> queue;  // posted, not taken
  std::vector<Outgoing*> pool;  // free buffers
  std::vector<std::unique_ptr<Outgoing>> storage;
  LinkModel link;
  LinkStats send_stats;

  // Owned by the communication thread. `next` is taken from the queue and on its (emulated)
  // link until due_s; `sending` moves in the round under way.
  Outgoing* next = nullptr;
  double start_s = 0;
  double due_s = 0;
  double link_busy_until_s = 0;
  Outgoing* sending = nullptr;
  double sending_start_s = 0;
  EncodedHeader frame_out{};
  MPI_Request frame_send = MPI_REQUEST_NULL;

  // Receive side, owned by the communication thread (the slot's reader is the worker).
  std::deque<EncodedHeader> frames;  // arrived, for this round and the next
  std::unique_ptr<MessageSlot> slot;
  // A frame of the wrong size, taken off the wire so that the peer's send can complete; the
  // transport has ended with an error by then, and its teardown settles the receive.
  std::vector<std::byte> dropped;
  MPI_Request drop = MPI_REQUEST_NULL;
  std::optional<MessageSlot::Writer> writer;  // held while a message is being received
  std::unique_ptr<Message> scratch;           // a rejected frame's payload lands here
  WireHeader incoming;
  bool receiving = false;  // into `writer` this round
  std::size_t receive_index = 0;  // of that receive in the round's list (the plane's order)
  std::int64_t last_step = std::numeric_limits<std::int64_t>::min();
  bool done = false;  // its kDone frame has been seen
  std::atomic<std::int64_t> delivered{0};
  std::atomic<std::int64_t> bytes_delivered{0};
};

RoundTransport::RoundTransport(const MpiSession& session, const RoundTransportOptions& options,
                               std::unique_ptr<PayloadPlane> plane)
    : options_(options),
      rank_(session.rank()),
      size_(session.size()),
      plane_(std::move(plane)),
      epoch_(std::chrono::steady_clock::now()) {
  require_thread_multiple(session, "round transport");
  ASGD_CHECK(plane_ != nullptr, "a round transport needs a payload plane");
  ASGD_CHECK(options.max_message >= 1, "max_message must be positive, got {}", options.max_message);
  ASGD_CHECK(options.queue_capacity >= 1, "queue_capacity must be positive, got {}",
             options.queue_capacity);
  ASGD_CHECK(options.idle_poll_s > 0 && options.idle_poll_s <= 1,
             "idle_poll_s must lie in (0, 1] seconds, got {}", options.idle_poll_s);
  ASGD_CHECK(options.model.parameters >= options.max_message,
             "messages of {} elements for a model of {} parameters", options.max_message,
             options.model.parameters);
  ASGD_CHECK_MPI(MPI_Comm_dup(session.comm(), &comm_));
  ASGD_CHECK_MPI(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  const std::vector<double> polls = all_gather(comm_, options.idle_poll_s);
  for (int p = 0; p < size_; ++p)
    if (p != rank_) peers_poll_s_ = std::max(peers_poll_s_, polls[static_cast<std::size_t>(p)]);
  for (int p = 0; p < size_; ++p)
    peers_.push_back(std::make_unique<Peer>(options.max_message, p != rank_, plane_->backend(),
                                            plane_->device()));
  for (auto& r : rejected_)
    r.store(0);
  if (options.trace && options.trace->enabled())
    trace_ = options.trace->lane(options.trace->add_lane(rank_, 1, "communication"));
  thread_ = std::thread([this] { communication_loop(); });
}

RoundTransport::~RoundTransport() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  // Nothing may be freed that MPI or NCCL can still write or read: frame sends, and a round's
  // payloads when the transport did not end cleanly.
  bool quiet = (ended_ && !error_.has_error()) || plane_->abandon();
  std::vector<MPI_Request> frames;
  for (auto& p : peers_) {
    for (MPI_Request* r : {&p->frame_send, &p->drop}) {
      if (*r != MPI_REQUEST_NULL) {
        frames.push_back(*r);  // the request now lives in `frames` only
        *r = MPI_REQUEST_NULL;
      }
    }
  }
  // Frames go out eagerly: done at once unless MPI itself is stuck, or a peer that sent a
  // frame of the wrong size stopped in the middle of it.
  if (!frames.empty()) quiet = settle_requests(frames, kTeardownGrace_s) && quiet;
  if (!quiet) {
    // Deliberately never freed: a late transfer would write into freed memory. Kept reachable,
    // so that leak checkers see a choice rather than a leak.
    static std::vector<std::unique_ptr<Peer>>* abandoned = new std::vector<std::unique_ptr<Peer>>;
    static std::vector<std::unique_ptr<PayloadPlane>>* abandoned_planes =
        new std::vector<std::unique_ptr<PayloadPlane>>;
    for (auto& p : peers_)
      abandoned->push_back(std::move(p));
    abandoned_planes->push_back(std::move(plane_));
    return;
  }
  plane_.reset();  // its communicator (NCCL: destroyed) before the buffers it moved
  peers_.clear();
  MPI_Comm_free(&comm_);
}

double RoundTransport::now() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_).count();
}

void RoundTransport::set_link(int peer, const LinkModel& link) {
  ASGD_CHECK(peer >= 0 && peer < size_ && peer != rank_, "no link from rank {} to rank {}", rank_,
             peer);
  ASGD_CHECK(link.bandwidth_bytes_per_s > 0 && link.latency_s >= 0,
             "link {}->{}: bandwidth must be positive and latency non-negative", rank_, peer);
  Peer& p = *peers_[static_cast<std::size_t>(peer)];
  std::lock_guard<std::mutex> lock(p.mutex);
  p.link = link;
}

void RoundTransport::post(int peer, const MessageHeader& header, const float* data) {
  error_.rethrow_if_set();
  ASGD_CHECK(peer >= 0 && peer < size_ && peer != rank_ && header.sender == rank_,
             "rank {} cannot post a message from {} to {} among {} ranks", rank_, header.sender,
             peer, size_);
  ASGD_CHECK(header.length >= 1 && header.length <= options_.max_message && header.offset >= 0 &&
                 header.length <= options_.model.parameters - header.offset,
             "message of {} elements at offset {} (the transport carries 1 to {} of {})",
             header.length, header.offset, options_.max_message, options_.model.parameters);
  ASGD_CHECK(!finishing_, "post() after finish()");
  Peer& p = *peers_[static_cast<std::size_t>(peer)];
  Outgoing* out = nullptr;
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    ++p.send_stats.posted;
    if (!p.pool.empty()) {
      out = p.pool.back();
      p.pool.pop_back();
    } else if (static_cast<int>(p.queue.size()) >= options_.queue_capacity) {
      out = p.queue.front();  // the oldest unsent state makes room for the newest
      p.queue.pop_front();
      ++p.send_stats.superseded;
    } else {
      p.storage.push_back(
          std::make_unique<Outgoing>(options_.max_message, plane_->backend(), plane_->device()));
      out = p.storage.back().get();
    }
  }
  WireHeader& h = out->header;
  h.kind = FrameKind::kState;
  h.model = options_.model;
  h.sender = rank_;
  h.flags = 0;
  h.sender_step = header.sender_step;
  h.send_time_s = header.send_time_s;
  h.offset = header.offset;
  h.length = header.length;
  h.payload_checksum = 0;
  if (plane_->backend() == Backend::kHost) {
    thread_local PayloadHasher hasher;  // the copy and its checksum in one pass
    hasher.reset();
    hasher.copy_and_update(out->payload.data(), data,
                           static_cast<std::size_t>(header.length) * sizeof(float));
    h.payload_checksum = hasher.digest();
  } else {
    plane_->copy_in(out->payload.data(), data, header.length);
  }
  out->ready_s = now();
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    p.queue.push_back(out);
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    work_posted_ = true;
  }
  wake_.notify_one();
}

int RoundTransport::collect(int receiver, const Message** out, int max) {
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

LinkStats RoundTransport::stats(int from, int to) const {
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

std::vector<TransferRecord> RoundTransport::take_transfers() {
  std::lock_guard<std::mutex> lock(transfers_mutex_);
  std::vector<TransferRecord> out(transfers_.begin(), transfers_.end());
  transfers_.clear();
  return out;
}

WireRejections RoundTransport::rejections() const {
  WireRejections r{};
  for (int i = 0; i < kWireErrorCount; ++i)
    r[static_cast<std::size_t>(i)] = rejected_[static_cast<std::size_t>(i)].load();
  return r;
}

void RoundTransport::flush(int max_pending) {
  wait_for_sends(mutex_, sent_, options_.peer_timeout_s, max_pending,
                 [&] { return error_.has_error(); });
  error_.rethrow_if_set();
}

void RoundTransport::wait_delivered(int peer, std::int64_t count) {
  wait_for_delivery(mutex_, published_, options_.peer_timeout_s, peer, count,
                    [&] { return error_.has_error(); });
  error_.rethrow_if_set();
}

void RoundTransport::finish(bool stop_everyone) {
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

// Frames that have arrived go to their peer's list in order (MPI keeps each sender's order).
// Each is probed before it is received, so that its size is known first: Open MPI 4.1 writes a
// message longer than its receive past the end of the buffer (measured with shared memory and
// with TCP, from a few KiB up), so a receive posted ahead for 80 bytes would let a peer
// overwrite this rank's memory. One probe for any sender: a pass costs the same at 64 ranks as
// at 2.
bool RoundTransport::receive_frames() {
  bool progress = false;
  while (true) {
    int arrived = 0;
    MPI_Message message = MPI_MESSAGE_NULL;
    MPI_Status status;
    ASGD_CHECK_MPI(improbe(MPI_ANY_SOURCE, kFrameTag, comm_, &arrived, &message, &status));
    if (!arrived) break;
    const int source = status.MPI_SOURCE;
    ASGD_CHECK(source >= 0 && source < size_ && source != rank_,
               "rank {}: a round frame from rank {} of {}", rank_, source, size_);
    Peer& p = *peers_[static_cast<std::size_t>(source)];
    int count = 0;
    ASGD_CHECK_MPI(MPI_Get_count(&status, MPI_BYTE, &count));
    // MPI_UNDEFINED: more bytes than an int counts, more than a receive here can take.
    if (count < 0)
      ASGD_THROW(
          "rank {}: a round frame of more than 2 GiB from rank {} (a frame has {} bytes); the "
          "exchange with it cannot stay in step",
          rank_, source, kWireHeaderBytes);
    if (count != static_cast<int>(kWireHeaderBytes)) {
      // Taken off the wire without waiting for it: over TCP a large one moves only while its
      // sender runs, and a stopped sender must not hold this thread (the teardown settles it).
      p.dropped.resize(static_cast<std::size_t>(std::max(count, 1)));
      ASGD_CHECK_MPI(MPI_Imrecv(p.dropped.data(), count, MPI_BYTE, &message, &p.drop));
      rejected_[static_cast<std::size_t>(WireError::kTruncated)].fetch_add(1);
      ASGD_THROW(
          "rank {}: a round frame of {} bytes from rank {} (a frame has {}); the exchange with "
          "it cannot stay in step",
          rank_, count, source, kWireHeaderBytes);
    }
    EncodedHeader frame;
    ASGD_CHECK_MPI(MPI_Mrecv(frame.data(), count, MPI_BYTE, &message, MPI_STATUS_IGNORE));
    // A peer announces a round only after the previous one, which needs this rank's frame:
    // one frame for the round under way and one for the next are all it can have sent.
    if (p.frames.size() >= 2)
      ASGD_THROW(
          "rank {}: rank {} sent a third round frame before this rank joined its rounds; it "
          "does not follow the round protocol",
          rank_, source);
    p.frames.push_back(frame);
    progress = true;
  }
  return progress;
}

// Puts each peer's oldest queued message on its (emulated) link, unless one is there already.
void RoundTransport::take_from_queues(double t) {
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    Peer& p = *peers_[static_cast<std::size_t>(peer)];
    std::lock_guard<std::mutex> lock(p.mutex);
    if (finishing_) {
      // Nothing more is worth sending: the run is over here.
      for (Outgoing* m : p.queue)
        p.pool.push_back(m);
      p.send_stats.superseded += static_cast<std::int64_t>(p.queue.size());
      p.queue.clear();
      if (p.next) {
        p.pool.push_back(p.next);
        ++p.send_stats.superseded;
        p.next = nullptr;
      }
      continue;
    }
    if (p.next || p.queue.empty()) continue;
    p.next = p.queue.front();
    p.queue.pop_front();
    p.start_s = std::max({p.next->ready_s, p.link_busy_until_s, t});
    p.due_s = p.start_s;
    if (!p.link.ideal()) {
      p.link_busy_until_s = p.start_s + static_cast<double>(p.next->header.payload_bytes()) /
                                            p.link.bandwidth_bytes_per_s;
      p.due_s = p.link_busy_until_s + p.link.latency_s;
    }
  }
}

bool RoundTransport::ready_to_announce(double t) const {
  if (finishing_ && !announced_done_) return true;
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    const Peer& p = *peers_[static_cast<std::size_t>(peer)];
    if (!p.frames.empty()) return true;  // a peer has started the round: join it
    if (p.next && t >= p.due_s) return true;
  }
  return false;
}

bool RoundTransport::frames_sent() {
  for (auto& p : peers_) {
    if (p->frame_send == MPI_REQUEST_NULL) continue;
    int sent = 0;
    ASGD_CHECK_MPI(MPI_Test(&p->frame_send, &sent, MPI_STATUS_IGNORE));
    if (!sent) return false;
  }
  return true;
}

void RoundTransport::announce(double t) {
  const bool done = finishing_;
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    Peer& p = *peers_[static_cast<std::size_t>(peer)];
    // The previous round's frame went out before that round could start; this only frees the
    // request (an 80-byte send completes as soon as MPI has it).
    ASGD_CHECK_MPI(MPI_Wait(&p.frame_send, MPI_STATUS_IGNORE));
    WireHeader h;
    h.model = options_.model;
    h.sender = rank_;
    h.send_time_s = t;
    if (done) {
      h.kind = FrameKind::kDone;
      h.flags = stop_everyone_ ? kFlagStop : 0;
    } else if (p.next && t >= p.due_s) {
      p.sending = p.next;
      p.sending_start_s = p.start_s;
      p.next = nullptr;
      h = p.sending->header;
    } else {
      h.kind = FrameKind::kIdle;
    }
    p.frame_out = encode_header(h);
    ASGD_CHECK_MPI(MPI_Isend(p.frame_out.data(), static_cast<int>(kWireHeaderBytes), MPI_BYTE, peer,
                             kFrameTag, comm_, &p.frame_send));
  }
  announced_done_ = announced_done_ || done;
  round_announced_s_ = t;
  phase_ = Phase::kAnnounced;
}

// Every peer's frame for this round has arrived: validate them and start the group.
void RoundTransport::start_round() {
  std::vector<PayloadPlane::Transfer> sends;
  std::vector<PayloadPlane::Transfer> receives;
  bool all_done = announced_done_;
  for (int source = 0; source < size_; ++source) {
    if (source == rank_) continue;
    Peer& p = *peers_[static_cast<std::size_t>(source)];
    if (p.sending) sends.push_back({source, p.sending->payload.data(), p.sending->header.length});
    const EncodedHeader frame = p.frames.front();
    p.frames.pop_front();
    const Announcement a = read_announcement(frame.data(), frame.size());
    if (a.integrity != WireError::kNone) {
      rejected_[static_cast<std::size_t>(a.integrity)].fetch_add(1);
      ASGD_THROW(
          "rank {}: the round frame from rank {} is damaged ({}); what it announces cannot "
          "be believed, so the exchange with it cannot stay in step",
          rank_, source, to_string(a.integrity));
    }
    if (a.kind == FrameKind::kState && (a.length < 1 || a.length > options_.model.parameters)) {
      rejected_[static_cast<std::size_t>(WireError::kRangeOutOfBounds)].fetch_add(1);
      ASGD_THROW(
          "rank {}: rank {} announced a payload of {} elements for a model of {}; it cannot "
          "be taken off the wire, so the exchange with it cannot stay in step",
          rank_, source, a.length, options_.model.parameters);
    }
    WireHeader h;
    WireError e = decode_header(frame.data(), frame.size(), options_.model, source, h);
    if (e == WireError::kNone && h.kind == FrameKind::kState && h.sender_step <= p.last_step)
      e = WireError::kStale;
    if (e == WireError::kNone && h.kind == FrameKind::kState && h.length > options_.max_message)
      e = WireError::kRangeOutOfBounds;
    if (e != WireError::kNone) rejected_[static_cast<std::size_t>(e)].fetch_add(1);
    // Every rank must see the same last round: a done frame counts as done whatever else is
    // wrong with it (its stop request only when it is valid).
    all_done = all_done && a.kind == FrameKind::kDone;
    if (a.kind == FrameKind::kDone) {
      if (e == WireError::kNone && (h.flags & kFlagStop))
        stop_requested_.store(true, std::memory_order_release);
      p.done = true;
    }
    if (a.length == 0) continue;
    if (e == WireError::kNone) {
      p.incoming = h;
      p.writer.emplace(*p.slot);
      p.receiving = true;
      p.receive_index = receives.size();
      receives.push_back({source, p.writer->message(h.length).data(), h.length});
      continue;
    }
    // Rejected for what it says: its payload still comes, and is dropped.
    if (!p.scratch)
      p.scratch =
          std::make_unique<Message>(options_.model.parameters, plane_->backend(), plane_->device());
    receives.push_back({source, p.scratch->data(), a.length});
  }
  last_round_ = all_done;
  round_trace_ns_ = trace_.now_ns();
  // A round of frames alone (every rank idle or done) is complete as it starts: NCCL is
  // handed only rounds that move something.
  plane_busy_ = !sends.empty() || !receives.empty();
  if (plane_busy_) plane_->start_round(sends, receives);
  phase_ = Phase::kMoving;
}

void RoundTransport::complete_round(double t) {
  // A transfer takes from its frame going out until the round completed, some time after the
  // previous pass and before this one: the records take the midpoint, with that interval as
  // their resolution. The wait for the peers' frames is inside: up to the slowest peer's idle
  // poll, the records' receiver wait.
  const double after_s = std::max(round_announced_s_, previous_pass_s_);
  const double seconds = 0.5 * (after_s + t) - round_announced_s_;
  const double resolution_s = t - after_s;
  bool any_published = false;
  std::int64_t sends = 0;
  std::int64_t round_bytes = 0;
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    Peer& p = *peers_[static_cast<std::size_t>(peer)];
    if (p.sending) {
      const std::int64_t bytes = p.sending->header.payload_bytes();
      round_bytes += bytes;
      {
        std::lock_guard<std::mutex> lock(transfers_mutex_);
        transfers_.push_back(
            {rank_, peer, static_cast<double>(bytes), seconds, resolution_s, peers_poll_s_});
        while (transfers_.size() > static_cast<std::size_t>(kMaxTransferRecords * size_))
          transfers_.pop_front();
      }
      std::lock_guard<std::mutex> lock(p.mutex);
      ++p.send_stats.delivered;
      p.send_stats.bytes_delivered += bytes;
      p.send_stats.busy_seconds += t - p.sending_start_s;
      p.pool.push_back(p.sending);
      p.sending = nullptr;
      ++sends;
    }
    if (!p.receiving) continue;
    p.receiving = false;
    const WireHeader& h = p.incoming;
    if (!plane_->received_whole(p.receive_index)) {
      p.writer.reset();
      rejected_[static_cast<std::size_t>(WireError::kLengthMismatch)].fetch_add(1);
      continue;
    }
    if (plane_->backend() == Backend::kHost &&
        payload_checksum(p.writer->message(h.length).data(),
                         static_cast<std::size_t>(h.payload_bytes())) != h.payload_checksum) {
      p.writer.reset();  // unpublished: the back buffer is written again later
      rejected_[static_cast<std::size_t>(WireError::kChecksumMismatch)].fetch_add(1);
      continue;
    }
    p.writer->message(h.length).header = h.message_header();
    p.writer->publish();
    p.writer.reset();
    p.last_step = h.sender_step;
    p.bytes_delivered.fetch_add(h.payload_bytes(), std::memory_order_relaxed);
    p.delivered.fetch_add(1, std::memory_order_relaxed);
    any_published = true;
  }
  trace_.complete("round", round_trace_ns_, trace_.now_ns(),
                  {"sends", sends, "bytes", round_bytes});
  rounds_.fetch_add(1, std::memory_order_relaxed);
  phase_ = Phase::kIdle;
  plane_busy_ = false;
  if (last_round_) ended_ = true;
  if (sends > 0 || any_published) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (sends > 0) sent_.notify_all();
    if (any_published) published_.notify_all();
  }
}

void RoundTransport::communication_loop() {
  try {
    double finish_started_s = -1;
    double last_progress_s = now();
    while (!quit_ && !ended_) {
      const double t = now();
      bool progress = receive_frames();
      take_from_queues(t);
      if (phase_ == Phase::kIdle && ready_to_announce(t)) {
        announce(t);
        progress = true;
      }
      if (phase_ == Phase::kAnnounced) {
        bool all_arrived = true;
        for (int peer = 0; peer < size_ && all_arrived; ++peer)
          all_arrived = peer == rank_ || !peers_[static_cast<std::size_t>(peer)]->frames.empty();
        // And this rank's frames have left: NCCL connects a pair inside the round's group
        // call and blocks there until the peer joins, while no MPI call here moves a frame
        // the peer still waits for (over TCP the first one waits for the connection).
        if (all_arrived) all_arrived = frames_sent();
        if (all_arrived) {
          start_round();
          progress = true;
        }
      }
      if (phase_ == Phase::kMoving && (!plane_busy_ || plane_->round_complete())) {
        complete_round(now());
        progress = true;
        finish_started_s = -1;  // the peer timeout counts from the last round
      }
      if (ended_) break;
      if (finishing_) {
        if (finish_started_s < 0) finish_started_s = t;
        if (t - finish_started_s > options_.peer_timeout_s) {
          std::string missing;
          for (int peer = 0; peer < size_; ++peer)
            if (peer != rank_ && !peers_[static_cast<std::size_t>(peer)]->done)
              missing += fmt::format("{}{}", missing.empty() ? "" : ", ", peer);
          ASGD_THROW(
              "rank {}: ranks [{}] did not finish, and no round completed, within {} s "
              "(stalled or dead); raise the peer timeout if they are only slow",
              rank_, missing, options_.peer_timeout_s);
        }
      }
      previous_pass_s_ = t;
      if (progress) {
        last_progress_s = t;
        continue;
      }
      double sleep_s = options_.idle_poll_s;
      if (phase_ != Phase::kIdle)
        sleep_s = t - last_progress_s < kStalledAfter_s && options_.idle_poll_s <= kFastIdlePoll_s
                      ? kBusySleep_s
                      : kStalledSleep_s;
      if (phase_ == Phase::kIdle)
        for (int peer = 0; peer < size_; ++peer)
          if (peer != rank_ && peers_[static_cast<std::size_t>(peer)]->next)
            sleep_s =
                std::min(sleep_s, std::max(0.0, peers_[static_cast<std::size_t>(peer)]->due_s - t));
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait_for(lock, std::chrono::duration<double>(sleep_s),
                     [&] { return work_posted_ || quit_.load(); });
      work_posted_ = false;
    }
    if (ended_)
      for (auto& p : peers_)
        if (p->frame_send != MPI_REQUEST_NULL)
          ASGD_CHECK_MPI(MPI_Wait(&p->frame_send, MPI_STATUS_IGNORE));
  } catch (...) {
    error_.capture(std::current_exception());
    std::lock_guard<std::mutex> lock(mutex_);
    sent_.notify_all();
    published_.notify_all();
  }
}

}  // namespace asgd
