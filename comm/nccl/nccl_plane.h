// The NCCL payload plane: payloads in GPU memory, moved by ncclSend/ncclRecv grouped per round
// on a stream of the plane's own, so the workers' compute streams never wait for a transfer.
// Bootstrapped through MPI: rank 0 makes the NCCL unique id and broadcasts it.
//
// Built only with NCCL (ASGD_HAVE_NCCL); the constructor throws where this rank has no GPU,
// and the trainer checks every rank first, so all ranks take NCCL or all fall back to MPI.
// Ownership: owns its NCCL communicator, stream and events; destroyed with the plane after a
// clean end (every rank then destroys), aborted after an error or with a round in flight
// (abandon()). The error path counts on ncclCommAbort returning without the peers, which is
// what it is for; the job then ends anyway (a failing rank takes it down with MPI_Abort).
// Thread-safety: as PayloadPlane.
#pragma once

#include <memory>

#include "comm/nccl/payload_plane.h"

namespace asgd {

class NcclPayloadPlane final : public PayloadPlane {
 public:
  // Collective over the session's communicator: every rank calls it with its own GPU.
  NcclPayloadPlane(const MpiSession& session, int device);
  ~NcclPayloadPlane() override;
  NcclPayloadPlane(const NcclPayloadPlane&) = delete;
  NcclPayloadPlane& operator=(const NcclPayloadPlane&) = delete;

  const char* name() const override { return "nccl"; }
  Backend backend() const override { return Backend::kCuda; }
  int device() const override { return device_; }
  void copy_in(float* dst, const float* src, std::int64_t count) override;
  void start_round(const std::vector<Transfer>& sends,
                   const std::vector<Transfer>& receives) override;
  bool round_complete() override;
  bool received_whole(std::size_t) const override { return true; }
  bool abandon() override;

 private:
  void check_async_error() const;

  const int device_;
  void* comm_ = nullptr;  // ncclComm_t
  Stream stream_;         // the rounds
  Stream copy_stream_;    // copy_in()
  Event round_done_;
  bool in_flight_ = false;
  bool failed_ = false;
};

}  // namespace asgd
