// The MPI transport: one worker per rank, messages in the wire format (comm/wire_format.h)
// over standard (not CUDA-aware) MPI point-to-point.
//
// One communication thread owns every MPI call of the data path. post() copies the range into
// a pinned send buffer of that peer's bounded queue (hashing it in the same pass) and returns;
// lend() hands such a buffer out to be filled in place, and post_lent() hashes and queues it;
// the thread sends the 80-byte header and then the payload in chunks of `chunk_bytes` from
// that buffer with MPI_Isend. Receives are matched with MPI_Improbe and received with
// MPI_Imrecv straight into the receive slot of the sender (comm/message_slot.h: latest wins,
// consume once); each chunk is hashed as soon as it has arrived, while it is still in cache,
// and a message is published only when its header was valid, its length matched and its
// checksum agreed. Nothing malformed reaches the worker; every rejection is counted by reason.
//
// Frames from one sender arrive in the order they were sent (MPI's non-overtaking rule holds
// because every probe matches any tag), so a chunk always belongs to the last header from its
// sender; chunks after a rejected header are drained and dropped. The last chunk of a payload
// goes with its own tag, so where a payload ends is known from the frames themselves, not from
// the length its header claims: a claim longer or shorter than the payload is found at the
// chunk where they part, rejected once, and the rest of that payload dropped uncounted.
//
// Ending a run (finish()): each rank sends a "done" frame to every peer after its last
// message, and keeps receiving until every peer's done frame has arrived and its own sends
// have completed; no rank leaves while a peer may still be sending to it. Rank 0's done frame
// carries a stop flag (target reached), which the others see through stop_requested().
//
// Links can be emulated as in the local transport (set_link): a message is handed to MPI only
// when a link of that bandwidth and latency would have delivered it.
//
// Faults can be injected on the wire (MpiTransportOptions::fault) for reliability experiments:
// the damage is done on the communication thread when a message is taken from its queue, so
// post() costs the same with or without it, and a message superseded in the queue (never sent)
// is never counted.
//
// Ownership: owns its communicator (a duplicate of the session's), buffers and thread.
// Thread-safety: post(), lend() and post_lent() from any thread (the worker's, the balancer's
// probes); collect() from the receiving worker's thread only, lock-free; stats(), stop_requested(),
// rejections(), faults_injected() and set_link() from any thread. The constructor and destructor
// are collective over the session's communicator.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include "comm/message_slot.h"
#include "comm/mpi/mpi_session.h"
#include "comm/rank_transport.h"
#include "comm/wire_format.h"
#include "runtime/trace.h"

namespace asgd {

// Fault injection for reliability experiments (--fault): this rank damages every `every`-th
// message it sends (the 1st damaged one is message number `every`), in one way; receivers
// must reject and count each one, and nothing damaged may reach their model.
//
// Messages are counted per peer, in the order they go on the wire, so that every receiver
// sees exactly one damaged message in `every` from this rank. Each kind is rejected for
// exactly one reason (WireError) by the receiver:
//   kCorrupt           a valid header with the checksum of the true payload, one payload byte
//                      flipped on the wire                                  -> kChecksumMismatch
//   kForgeOffset       a valid header (its own checksum recomputed) whose offset + length
//                      runs past the parameter count                        -> kRangeOutOfBounds
//   kForgeLength       a valid header claiming one element fewer than the payload has (two
//                      for a single element)                               -> kLengthMismatch
//   kForgeFingerprint  a valid header of another model (layout hash)        -> kWrongFingerprint
//   kReplay            instead of the message, the last undamaged message sent to that peer,
//                      verbatim: the receiver has taken it already          -> kStale
// The sender counts a damaged message as sent (LinkStats::delivered) like any other.
// (WireFaultKind and its names are in comm/wire_format.h.)
struct WireFault {
  WireFaultKind kind = WireFaultKind::kNone;
  std::int64_t every = 0;  // > 0 when kind != kNone
};
// "corrupt", "forge-offset", "forge-length", "forge-fingerprint", "replay" (throws asgd
// InputError via ASGD_INPUT_ERROR for anything else)
WireFaultKind parse_wire_fault(std::string_view name);

struct MpiTransportOptions {
  std::int64_t max_message = 0;        // elements; usually the parameter count
  int queue_capacity = 2;              // unsent messages per peer before the oldest is superseded
  ModelFingerprint model;              // every message must carry this
  std::int64_t chunk_bytes = 1 << 20;  // payload pieces: hashed on arrival while in cache
  // finish(): how long a peer may send nothing before its done frame (a slower peer still
  // sending is waited for); and how long the rest of a message may take once its sender has
  // stopped in the middle of it.
  double peer_timeout_s = 120;
  // How often the communication thread looks for arrivals when nothing is moving (post()
  // wakes it at once for sends). Each look costs a wake-up; see idle_poll_seconds().
  double idle_poll_s = 400e-6;
  TraceRecorder* trace = nullptr;      // records transfers on a lane of its own (--trace)
  // Damage sent messages (see WireFault). The constructor throws InputError for every <= 0;
  // for kReplay, every >= 2 (there must be an earlier message to replay) and for
  // kForgeLength, max_message >= 2 (there must be another length within bounds).
  WireFault fault;
};

// The idle poll period for a rank whose host has `cores` cores shared by `local_ranks` ranks of
// `threads_per_rank` compute threads each: 400 us when a core is left for the communication
// threads, else 2 ms. Where the communication thread shares a core with the compute, every
// wake-up takes that core from it: on the 2-core development VM with 2 ranks, polling every
// 400 us cost 10% of the samples/s (MLP, no messages at all), and 2 ms reached 85% sooner at
// both step sizes measured, though messages then wait 1 ms longer on average.
double idle_poll_seconds(int cores, int local_ranks, int threads_per_rank);

class MpiTransport final : public RankTransport {
 public:
  MpiTransport(const MpiSession& session, const MpiTransportOptions& options);
  ~MpiTransport() override;
  MpiTransport(const MpiTransport&) = delete;
  MpiTransport& operator=(const MpiTransport&) = delete;

  int size() const override { return size_; }
  int rank() const override { return rank_; }
  std::int64_t max_message() const override { return options_.max_message; }
  void post(int peer, const MessageHeader& header, const float* data) override;
  // Posting in place (Transport::lend()): the loan is one of the peer's send buffers, and
  // post_lent() hashes it where it lies and queues it, so nothing is copied.
  bool lends_buffers() const override { return true; }
  LentBuffer lend(int peer, std::int64_t length) override;
  void post_lent(LentBuffer buffer, const MessageHeader& header) override;
  int collect(int receiver, const Message** out, int max) override;
  // from == rank(): the send side (posted, superseded, delivered = sends completed, busy);
  // to == rank(): the receive side (delivered = published, overwritten, bytes).
  LinkStats stats(int from, int to) const override;
  // The sends of this rank: start of sending to completion (the receiver has the data).
  std::vector<TransferRecord> take_transfers() override;

  // Emulates the link to `peer` (see the file comment).
  void set_link(int peer, const LinkModel& link) override;
  void flush(int max_pending = 0) override;
  void wait_delivered(int peer, std::int64_t count) override;

  // Ends this rank's part of the exchange (see the file comment); `stop_everyone` asks every
  // peer to stop training. Blocks until done; throws if a peer sends nothing for the timeout
  // without its done frame, or the communication thread failed.
  void finish(bool stop_everyone) override;
  // A peer asked everyone to stop (its done frame carried the stop flag).
  bool stop_requested() const override { return stop_requested_.load(std::memory_order_acquire); }
  // True once `peer` has sent its done frame.
  bool peer_done(int peer) const;
  // Messages posted to `peer` that the communication thread has not taken yet (the send queue;
  // taken messages are on the wire or held by an emulated link). Thread-safe.
  std::int64_t queued(int peer) const;
  WireRejections rejections() const override;
  // Send buffers lent (lend()) and neither posted nor given back yet. Thread-safe.
  std::int64_t loans_out() const { return loans_.load(std::memory_order_relaxed); }
  // How many damaged messages this rank has sent (options.fault), to all peers together.
  std::int64_t faults_injected() const { return faults_injected_.load(std::memory_order_relaxed); }
  // Rethrows the first error of the communication thread, if any.
  void check() const override { error_.rethrow_if_set(); }

  // The transport's own communicator and frame tags. Raw frames sent there reach the receiver
  // as if from a peer: tests inject forged and corrupted frames this way.
  MPI_Comm communicator() const { return comm_; }
  static constexpr int kHeaderTag = 0x5A5;
  static constexpr int kChunkTag = 0x5A6;      // a payload chunk but the last
  static constexpr int kLastChunkTag = 0x5A7;  // the last (or only) chunk of a payload

 private:
  struct Outgoing {
    explicit Outgoing(std::int64_t capacity) : payload(static_cast<std::size_t>(capacity)) {}
    WireHeader header;
    EncodedHeader encoded{};
    PinnedBuffer<float> payload;
    double ready_s = 0;
  };
  struct Peer;  // per-peer send and receive state (mpi_transport.cpp)

  void end_loan(int peer, void* loan) override;
  // What post() and post_lent() check before taking anything.
  void check_post(int peer, const MessageHeader& header) const;
  // A free send buffer for `peer`: from its pool, or a new one.
  Outgoing* take_free(int peer);
  // Fills in the wire header of `out`, holding `header`'s message with `checksum`, and queues
  // it for `peer`, superseding the oldest unsent message when the queue is full.
  void enqueue(int peer, const MessageHeader& header, Outgoing* out, std::uint64_t checksum);

  void communication_loop();
  bool pump_sends(double now);
  bool pump_receives();
  bool complete_chunks(int source, bool all_landed = false);
  void start_send(int peer, const Outgoing& message, std::vector<MPI_Request>& requests);
  Outgoing* damage(Peer& p, Outgoing& message);
  void release(Peer& p, Outgoing* message);
  void start_done(int peer);
  // Something other than the next chunk came from `source`: the message being received ends,
  // published or checksum-rejected when all its chunks were matched, else abandoned as a
  // length mismatch.
  void end_incoming(int source);
  void abandon_incoming(int source, WireError reason);
  void drain(MPI_Message* message, int count, int source);
  // Waits for a receive whose data `source` still has to push: over a network a large message
  // moves only while its sender's MPI makes progress, so a peer stopped in the middle of one
  // would hold this thread for as long as it stays stopped. Bounded by the peer timeout: after
  // it, an error names the peer. Leaves *request pending when it throws.
  void wait_on_peer(MPI_Request* request, int source, const char* what);
  bool all_finished() const;
  double now() const;

  const MpiTransportOptions options_;
  const int rank_;
  const int size_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  const std::chrono::steady_clock::time_point epoch_;
  std::vector<std::unique_ptr<Peer>> peers_;
  int next_sender_ = 0;  // collect(): where the round starts

  std::mutex mutex_;  // wakes the thread; finishing_
  std::condition_variable wake_;
  std::condition_variable sent_;       // a send completed (flush() waits on it)
  std::condition_variable published_;  // a message was published (wait_delivered())
  bool work_posted_ = false;
  std::atomic<bool> finishing_{false};
  std::atomic<bool> stop_everyone_{false};
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> quit_{false};  // destructor without finish(): leave at once
  double previous_pass_s_ = 0;     // communication thread: when its previous pass began
  std::vector<double> peer_poll_s_;  // every rank's idle_poll_s: its receiver's longest wait
  std::mutex transfers_mutex_;
  std::deque<TransferRecord> transfers_;
  std::vector<std::byte> scratch_;  // frames that are drained and dropped
  MPI_Request drain_request_ = MPI_REQUEST_NULL;  // into scratch_, pending only after an error
  TraceLane trace_;                 // the communication thread's lane
  std::array<std::atomic<std::int64_t>, kWireErrorCount> rejected_{};
  std::atomic<std::int64_t> faults_injected_{0};
  std::atomic<std::int64_t> loans_{0};  // lent buffers not yet posted or given back
  std::thread thread_;
  ErrorSlot error_;
};

}  // namespace asgd
