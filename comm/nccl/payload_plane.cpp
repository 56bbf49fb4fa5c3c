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
  for (const Transfer& r : receives) {
    ASGD_CHECK(r.count >= 1 && r.count <= INT_MAX, "receive of {} floats", r.count);
    MPI_Request q;
    ASGD_CHECK_MPI(
        MPI_Irecv(r.data, static_cast<int>(r.count), MPI_FLOAT, r.peer, kPayloadTag, comm_, &q));
    requests_.push_back(q);
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
  ASGD_CHECK_MPI(MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done,
                             MPI_STATUSES_IGNORE));
  if (done) requests_.clear();
  return done != 0;
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
