// Payload planes: how the round transport (comm/nccl/round_transport.h) moves the payloads of
// one round between ranks, and where payloads live.
//
//   NcclPayloadPlane (comm/nccl/nccl_plane.h)  GPU memory, NCCL point-to-point on a stream of
//                                               its own: GPU to GPU, no host copies.
//   MpiPayloadPlane (here)                      pinned host memory, MPI_Isend/MPI_Imrecv: the
//                                               same protocol on machines without a GPU, which
//                                               is how the protocol is tested in CI.
//
// A round is one group of sends and receives that every rank starts (each with its own part)
// once all ranks have agreed what moves in it, so the group can never deadlock: that is NCCL's
// rule for point-to-point operations, and the round transport keeps it for both planes.
//
// Ownership: a plane owns its communicator (and, for NCCL, its stream and events); the round
// transport owns the plane. The constructors are collective over the session's communicator.
// Thread-safety: copy_in() from the posting thread, concurrently with start_round() and
// round_complete() from the transport's thread; nothing else concurrently.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/mpi/mpi_session.h"
#include "runtime/device.h"

namespace asgd {

class PayloadPlane {
 public:
  virtual ~PayloadPlane() = default;

  // "nccl" or "mpi", for messages and the summary.
  virtual const char* name() const = 0;
  // Where payload buffers live: kHost (pinned host memory) or kCuda on device().
  virtual Backend backend() const = 0;
  virtual int device() const = 0;

  // Copies `count` floats from `src` (host memory, or memory of device() for a kCuda plane)
  // into `dst`, a payload buffer of this plane; complete when it returns.
  virtual void copy_in(float* dst, const float* src, std::int64_t count) = 0;

  struct Transfer {
    int peer = -1;
    float* data = nullptr;   // a payload buffer of this plane
    std::int64_t count = 0;  // floats, >= 1
  };
  // Starts one round: all of `sends` and `receives` as one group, at most one of each per peer.
  // The previous round must have completed. Returns at once.
  virtual void start_round(const std::vector<Transfer>& sends,
                           const std::vector<Transfer>& receives) = 0;
  // True once the round started last has completed on this rank: its send buffers may be
  // reused and its receive buffers hold the data (for a kCuda plane, ordered before any work
  // submitted to any stream after this returns true).
  virtual bool round_complete() = 0;
  // After round_complete() returned true: whether receive `i` (in the order start_round() was
  // given them) was exactly the count announced for it. A peer that sends a payload of
  // another length than its frame announced is broken or hostile; its payload must not reach
  // the model, and the exchange stays in step (one payload per pair and round either way).
  // NCCL cannot tell (its receives have no status): a length mismatch there is undefined, and
  // only the payload checksum can catch what it leaves behind.
  virtual bool received_whole(std::size_t i) const = 0;
  // Gives up on the round in flight, if any, for a teardown that cannot wait for it (an error,
  // or the transport destroyed without finish()): cancels what can be cancelled (MPI) or aborts
  // the communicator (NCCL: the plane is unusable afterwards). Returns true when nothing can
  // touch the round's buffers any more; false when something still may, and the caller must
  // then never free them (leak them: a process in this state is about to end anyway).
  virtual bool abandon() = 0;
};

// Payloads in pinned host memory, moved with MPI_Isend and (once probed) MPI_Imrecv on a
// communicator of its own.
class MpiPayloadPlane final : public PayloadPlane {
 public:
  explicit MpiPayloadPlane(const MpiSession& session);
  ~MpiPayloadPlane() override;
  MpiPayloadPlane(const MpiPayloadPlane&) = delete;
  MpiPayloadPlane& operator=(const MpiPayloadPlane&) = delete;

  const char* name() const override { return "mpi"; }
  Backend backend() const override { return Backend::kHost; }
  int device() const override { return 0; }
  void copy_in(float* dst, const float* src, std::int64_t count) override;
  void start_round(const std::vector<Transfer>& sends,
                   const std::vector<Transfer>& receives) override;
  bool round_complete() override;
  bool received_whole(std::size_t i) const override { return received_whole_.at(i) != 0; }
  bool abandon() override;

  // The plane's communicator: a test that speaks the protocol by hand sends payloads here
  // (tag kPayloadTag).
  MPI_Comm communicator() const { return comm_; }
  static constexpr int kPayloadTag = 0x5B0;

 private:
  struct Receive {
    Transfer transfer;
    MPI_Request request = MPI_REQUEST_NULL;  // posted once matched
    bool matched = false;
    bool whole = true;       // the matched payload has the size announced
    std::vector<char> drop;  // where a payload of another size lands
  };
  void match_receives();

  MPI_Comm comm_ = MPI_COMM_NULL;
  std::vector<MPI_Request> requests_;  // the round's sends
  std::vector<Receive> receives_;      // the round's receives, in start_round()'s order
  std::vector<char> received_whole_;   // per receive of the last completed round
};

}  // namespace asgd
