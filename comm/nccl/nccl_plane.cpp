#include "comm/nccl/nccl_plane.h"

#include <cstdio>
#include <cstring>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "runtime/buffer.h"

#define ASGD_CHECK_NCCL(call)                                                  \
  do {                                                                         \
    const ncclResult_t asgd_nccl_rc_ = (call);                                 \
    if (asgd_nccl_rc_ != ncclSuccess)                                          \
      ::asgd::detail::throw_error(                                             \
          __FILE__, __LINE__, #call,                                           \
          fmt::format("{} (ncclResult {})", ncclGetErrorString(asgd_nccl_rc_), \
                      static_cast<int>(asgd_nccl_rc_)));                       \
  } while (0)

#define ASGD_CHECK_CUDA_RT(call)                                                            \
  do {                                                                                      \
    const cudaError_t asgd_cuda_rc_ = (call);                                               \
    if (asgd_cuda_rc_ != cudaSuccess)                                                       \
      ::asgd::detail::throw_error(__FILE__, __LINE__, #call,                                \
                                  fmt::format("{} ({})", cudaGetErrorString(asgd_cuda_rc_), \
                                              cudaGetErrorName(asgd_cuda_rc_)));            \
  } while (0)

namespace asgd {
namespace {

ncclComm_t native(void* comm) {
  return static_cast<ncclComm_t>(comm);
}

// NCCL's id is made on rank 0 and must reach every rank before any of them initialises.
ncclUniqueId shared_unique_id(const MpiSession& session) {
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  int ok = 1;
  if (session.rank() == 0) ok = ncclGetUniqueId(&id) == ncclSuccess ? 1 : 0;
  // Rank 0's failure must reach the others before they wait in ncclCommInitRank.
  ASGD_CHECK_MPI(MPI_Bcast(&ok, 1, MPI_INT, 0, session.comm()));
  if (!ok)
    ASGD_THROW("ncclGetUniqueId failed on rank 0; NCCL cannot start (NCCL_DEBUG=INFO says why)");
  ASGD_CHECK_MPI(MPI_Bcast(&id, static_cast<int>(sizeof id), MPI_BYTE, 0, session.comm()));
  return id;
}

}  // namespace

NcclPayloadPlane::NcclPayloadPlane(const MpiSession& session, int device)
    : device_(device),
      stream_(Stream::cuda(device)),
      copy_stream_(Stream::cuda(device)),
      round_done_(Backend::kCuda, device) {
  const ncclUniqueId id = shared_unique_id(session);
  ASGD_CHECK_CUDA_RT(cudaSetDevice(device_));
  ncclComm_t comm = nullptr;
  ASGD_CHECK_NCCL(ncclCommInitRank(&comm, session.size(), id, session.rank()));
  comm_ = comm;
}

NcclPayloadPlane::~NcclPayloadPlane() {
  if (!comm_) return;
  if (failed_ || in_flight_) {
    // A clean destroy would wait for a round, or for peers, that may never come.
    abandon();
    return;
  }
  cudaSetDevice(device_);
  const ncclResult_t rc = ncclCommDestroy(native(comm_));
  if (rc != ncclSuccess)
    std::fprintf(stderr, "asgd: closing the NCCL communicator failed: %s\n",
                 ncclGetErrorString(rc));
}

bool NcclPayloadPlane::abandon() {
  if (!comm_) return true;
  cudaSetDevice(device_);
  // Ends the communicator's kernels, so that the round's buffers are free once it returns.
  const ncclResult_t rc = ncclCommAbort(native(comm_));
  comm_ = nullptr;
  failed_ = true;
  in_flight_ = false;
  if (rc == ncclSuccess) return true;
  std::fprintf(stderr, "asgd: aborting the NCCL communicator failed: %s\n", ncclGetErrorString(rc));
  return false;
}

void NcclPayloadPlane::copy_in(float* dst, const float* src, std::int64_t count) {
  ASGD_CHECK_CUDA_RT(cudaSetDevice(device_));
  copy_async(dst, src, static_cast<std::size_t>(count) * sizeof(float), copy_stream_);
  copy_stream_.synchronize();
}

void NcclPayloadPlane::check_async_error() const {
  ncclResult_t state = ncclSuccess;
  ASGD_CHECK_NCCL(ncclCommGetAsyncError(native(comm_), &state));
  if (state != ncclSuccess && state != ncclInProgress)
    ASGD_THROW("NCCL reported an asynchronous error: {} (ncclResult {})", ncclGetErrorString(state),
               static_cast<int>(state));
}

void NcclPayloadPlane::start_round(const std::vector<Transfer>& sends,
                                   const std::vector<Transfer>& receives) {
  ASGD_CHECK(!in_flight_, "a round started before the previous one completed");
  ASGD_CHECK_CUDA_RT(cudaSetDevice(device_));
  auto* stream = static_cast<cudaStream_t>(stream_.native());
  ASGD_CHECK(comm_ != nullptr, "the NCCL plane was abandoned");
  ASGD_CHECK_NCCL(ncclGroupStart());
  try {
    for (const Transfer& r : receives)
      ASGD_CHECK_NCCL(ncclRecv(r.data, static_cast<std::size_t>(r.count), ncclFloat32, r.peer,
                               native(comm_), stream));
    for (const Transfer& s : sends)
      ASGD_CHECK_NCCL(ncclSend(s.data, static_cast<std::size_t>(s.count), ncclFloat32, s.peer,
                               native(comm_), stream));
  } catch (...) {
    failed_ = true;
    ncclGroupEnd();  // the group must be closed on this thread, whatever it then reports
    throw;
  }
  try {
    ASGD_CHECK_NCCL(ncclGroupEnd());
    round_done_.record(stream_);
  } catch (...) {
    failed_ = true;  // a round may be queued: the destructor must abort, not destroy
    throw;
  }
  in_flight_ = true;
}

bool NcclPayloadPlane::round_complete() {
  if (!in_flight_) return true;
  try {
    ASGD_CHECK_CUDA_RT(cudaSetDevice(device_));
    // A peer that failed would otherwise leave the round pending forever; and kernels ended by
    // an abort complete without their data, so an error seen at completion fails the round
    // too. (The transport hands the plane only rounds that move something: after the last of
    // those every peer is still waiting for the done frames, not destroying its communicator.)
    const bool ready = round_done_.ready();
    check_async_error();
    if (!ready) return false;
  } catch (...) {
    failed_ = true;
    throw;
  }
  in_flight_ = false;
  return true;
}

}  // namespace asgd
