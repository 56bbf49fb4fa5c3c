// The NCCL transport: one worker per rank, payloads moved GPU to GPU by NCCL point-to-point
// (comm/nccl/nccl_plane.h) in rounds, headers over MPI in the wire format
// (comm/wire_format.h). The same protocol runs over MPI with host memory
// (MpiPayloadPlane), which is how CI tests it on machines without a GPU.
//
// Why rounds: NCCL's point-to-point operations block their stream until the peer posts the
// matching one, so two ranks that each send to the other first would wait forever. Here every
// transfer belongs to a round that every rank joins, and a round's sends and receives go to
// NCCL as one group, which NCCL completes as a whole: no order of posts can deadlock.
//
// A round, on the communication thread of each rank:
//   1. announce: one 80-byte frame to every peer (MPI), in round order: kState (a message for
//      that peer, header and length, its payload moves in this round), kIdle (nothing), or
//      kDone (nothing now or later; kFlagStop asks everyone to stop). A rank announces when it
//      has a message whose (emulated) link is free, when a peer has announced (it joins), or
//      once when it finishes.
//   2. once every peer's frame for the round has arrived: validate each (decode_header: model,
//      sender, range; a step not newer than the last taken is stale), then start the group
//      with one send per kState frame sent and one receive per kState frame received. A frame
//      rejected for what it says still has its payload taken off the wire (into scratch) and
//      dropped, so the peers stay in step; a frame whose integrity fails (header checksum,
//      magic, version, kind) or whose payload could not be received ends the transport with
//      an error naming the peer, since nothing it says can then be believed.
//   3. when the group completes: receives are published into the senders' slots (latest wins,
//      consume once; comm/message_slot.h), in GPU memory for the NCCL plane; sends are
//      counted as delivered and their buffers reused.
// The compute never waits for any of this: post() copies into a buffer of the peer's bounded
// queue (the newest supersedes the oldest unsent) and returns; collect() is lock-free. Every
// rank joins every round, so a rank that stalls holds up the exchange between all pairs (not
// only its own, as on the MPI transport), but not training: messages queue and supersede
// until it is back.
// A round in which every frame is kDone is the last one on every rank (they all saw the same
// frames), so finish() returns everywhere without a barrier.
//
// Payload integrity: with the MPI plane (host memory) payloads carry the XXH3 checksum and are
// verified before publication, as in the MPI transport. With the NCCL plane they do not: NCCL's
// transports deliver what was sent or fail, hashing GPU memory would need a device hash or a
// copy to the host for every message, and a non-finite payload is still rejected and counted by
// the Parzen test. Headers are validated on both.
//
// Links can be emulated (set_link) as in the other transports: a message joins a round only
// when a link of that bandwidth and latency would have delivered it. Wire fault injection is
// the MPI transport's (the trainer refuses --fault wire kinds here).
//
// Ownership: owns its frame communicator (a duplicate of the session's), the plane, buffers
// and thread. The constructor and destructor are collective over the session's communicator.
// Destroyed after an error or without finish(), it abandons the round in flight (the plane
// cancels or aborts it) and, if MPI or NCCL might still touch a buffer, leaks the buffers
// rather than free them under a transfer.
// Thread-safety: post() from the worker's thread; collect() from the worker's thread only,
// lock-free; stats(), stop_requested(), rejections(), rounds() and set_link() from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "comm/message_slot.h"
#include "comm/mpi/mpi_session.h"
#include "comm/nccl/payload_plane.h"
#include "comm/rank_transport.h"
#include "comm/wire_format.h"
#include "runtime/error.h"
#include "runtime/trace.h"

namespace asgd {

struct RoundTransportOptions {
  std::int64_t max_message = 0;  // elements; usually the parameter count
  int queue_capacity = 2;        // unsent messages per peer before the oldest is superseded
  ModelFingerprint model;        // every message must carry this
  double peer_timeout_s = 120;   // finish(): how long to wait for the peers' done frames
  // How often the communication thread looks for frames when nothing is moving (post() wakes
  // it at once); see idle_poll_seconds() in comm/mpi/mpi_transport.h.
  double idle_poll_s = 400e-6;
  TraceRecorder* trace = nullptr;  // rounds on a lane of their own (--trace)
};

class RoundTransport final : public RankTransport {
 public:
  RoundTransport(const MpiSession& session, const RoundTransportOptions& options,
                 std::unique_ptr<PayloadPlane> plane);
  ~RoundTransport() override;
  RoundTransport(const RoundTransport&) = delete;
  RoundTransport& operator=(const RoundTransport&) = delete;

  int size() const override { return size_; }
  int rank() const override { return rank_; }
  std::int64_t max_message() const override { return options_.max_message; }
  // With a GPU plane, `data` may be in host memory or in the memory of the plane's device, and
  // collect() hands out messages whose payload is on that device (Message::on_device()).
  bool device_payloads() const override { return plane_->backend() != Backend::kHost; }
  void post(int peer, const MessageHeader& header, const float* data) override;
  int collect(int receiver, const Message** out, int max) override;
  LinkStats stats(int from, int to) const override;
  // This rank's sends: from their round's frames going out to the round's completion.
  std::vector<TransferRecord> take_transfers() override;

  void set_link(int peer, const LinkModel& link) override;
  void flush(int max_pending = 0) override;
  void wait_delivered(int peer, std::int64_t count) override;
  void finish(bool stop_everyone) override;
  bool stop_requested() const override { return stop_requested_.load(std::memory_order_acquire); }
  WireRejections rejections() const override;
  void check() const override { error_.rethrow_if_set(); }

  const PayloadPlane& plane() const { return *plane_; }
  // Rounds completed on this rank.
  std::int64_t rounds() const { return rounds_.load(std::memory_order_relaxed); }
  // The frame communicator: a test that speaks the protocol by hand sends its frames here.
  MPI_Comm communicator() const { return comm_; }
  static constexpr int kFrameTag = 0x5B1;

 private:
  struct Outgoing {
    Outgoing(std::int64_t capacity, Backend backend, int device)
        : payload(capacity, backend, device) {}
    WireHeader header;
    Message payload;  // only its buffer is used
    double ready_s = 0;
  };
  struct Peer;  // per-peer send and receive state (round_transport.cpp)
  enum class Phase { kIdle, kAnnounced, kMoving };

  void communication_loop();
  bool receive_frames();
  bool frames_sent();
  void take_from_queues(double now);
  bool ready_to_announce(double now) const;
  void announce(double now);
  void start_round();
  void complete_round(double now);
  double now() const;

  const RoundTransportOptions options_;
  const int rank_;
  const int size_;
  std::unique_ptr<PayloadPlane> plane_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  const std::chrono::steady_clock::time_point epoch_;
  std::vector<std::unique_ptr<Peer>> peers_;
  int next_sender_ = 0;  // collect(): where the round starts

  // Communication thread only.
  Phase phase_ = Phase::kIdle;
  bool announced_done_ = false;  // this rank's frames are kDone from now on
  bool last_round_ = false;      // every frame of the round in flight is kDone
  bool plane_busy_ = false;      // the round in flight moves payloads (the plane has it)
  bool ended_ = false;
  double round_announced_s_ = 0;  // the frames of the round in flight went out
  double previous_pass_s_ = 0;    // when the loop last looked, for the transfers' resolution
  double peers_poll_s_ = 0;       // the longest idle_poll_s of the other ranks
  std::int64_t round_trace_ns_ = 0;

  std::mutex mutex_;  // wakes the thread; finishing_
  std::condition_variable wake_;
  std::condition_variable sent_;       // a send completed (flush() waits on it)
  std::condition_variable published_;  // a message was published (wait_delivered())
  bool work_posted_ = false;
  std::atomic<bool> finishing_{false};
  std::atomic<bool> stop_everyone_{false};
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> quit_{false};  // destructor without finish(): leave at once
  std::atomic<std::int64_t> rounds_{0};
  std::mutex transfers_mutex_;
  std::deque<TransferRecord> transfers_;
  TraceLane trace_;
  std::array<std::atomic<std::int64_t>, kWireErrorCount> rejected_{};
  std::thread thread_;
  ErrorSlot error_;
};

}  // namespace asgd
