#include "comm/nccl/payload_plane.h"

#include <climits>
#include <cstring>

namespace asgd {

MpiPayloadPlane::MpiPayloadPlane(const MpiSession& session) {
  ASGD_CHECK_MPI(MPI_Comm_dup(session.comm(), &comm_));
  ASGD_CHECK_MPI(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
}

MpiPayloadPlane::~MpiPayloadPlane() {
  // Requests still pending (abandon() could not end them) would make freeing the communicator
  // erroneous; MPI_Finalize takes care of it then.
  if (requests_.empty()) MPI_Comm_free(&comm_);
}

void MpiPayloadPlane::copy_in(float* dst, const float* src, std::int64_t count) {
  std::memcpy(dst, src, static_cast<std::size_t>(count) * sizeof(float));
}

void MpiPayloadPlane::start_round(const std::vector<Transfer>& sends,
                                  const std::vector<Transfer>& receives) {
  ASGD_CHECK(requests_.empty(), "a round started before the previous one completed");
  receives_ = receives.size();
  expected_.clear();
  for (const Transfer& r : receives) {
    ASGD_CHECK(r.count >= 1 && r.count <= INT_MAX, "receive of {} floats", r.count);
    MPI_Request q;
    ASGD_CHECK_MPI(
        MPI_Irecv(r.data, static_cast<int>(r.count), MPI_FLOAT, r.peer, kPayloadTag, comm_, &q));
    requests_.push_back(q);
    expected_.push_back(r.count);
  }
  for (const Transfer& s : sends) {
    ASGD_CHECK(s.count >= 1 && s.count <= INT_MAX, "send of {} floats", s.count);
    MPI_Request q;
    ASGD_CHECK_MPI(
        MPI_Isend(s.data, static_cast<int>(s.count), MPI_FLOAT, s.peer, kPayloadTag, comm_, &q));
    requests_.push_back(q);
  }
}

bool MpiPayloadPlane::round_complete() {
  if (requests_.empty()) return true;
  int done = 0;
  statuses_.resize(requests_.size());
  const int rc =
      MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done, statuses_.data());
  if (rc != MPI_SUCCESS && rc != MPI_ERR_IN_STATUS) ASGD_CHECK_MPI(rc);
  if (!done) return false;
  // A payload longer than its receive ends that receive with MPI_ERR_TRUNCATE (and the round
  // with MPI_ERR_IN_STATUS); a shorter one completes with a smaller count. Both are the
  // sender's fault and cost only that payload; any other error is the transport's own.
  received_whole_.assign(receives_, 1);
  for (std::size_t i = 0; i < requests_.size(); ++i) {
    const int error = rc == MPI_ERR_IN_STATUS ? statuses_[i].MPI_ERROR : MPI_SUCCESS;
    int error_class = MPI_SUCCESS;
    if (error != MPI_SUCCESS) MPI_Error_class(error, &error_class);
    if (i < receives_ && error_class == MPI_ERR_TRUNCATE) {
      received_whole_[i] = 0;
    } else if (error != MPI_SUCCESS) {
      ASGD_CHECK_MPI(error);
    } else if (i < receives_) {
      int count = 0;
      ASGD_CHECK_MPI(MPI_Get_count(&statuses_[i], MPI_FLOAT, &count));
      received_whole_[i] = count == expected_[i];
    }
    // A request that completed with an error may be left allocated (MPI leaves that to the
    // implementation); one still not null is freed so the communicator can be.
    if (requests_[i] != MPI_REQUEST_NULL) MPI_Request_free(&requests_[i]);
  }
  requests_.clear();
  return true;
}

bool MpiPayloadPlane::abandon() {
  if (requests_.empty()) return true;
  // A receive not yet matched is cancelled at once. Sends are left to finish (cancelling a
  // send is deprecated, and where it works a peer that was told of the payload would wait for
  // it forever): one whose peer takes it ends within the grace period.
  for (std::size_t i = 0; i < receives_; ++i)
    if (requests_[i] != MPI_REQUEST_NULL) MPI_Cancel(&requests_[i]);
  if (!settle_requests(requests_, kTeardownGrace_s)) return false;
  requests_.clear();
  return true;
}

}  // namespace asgd
