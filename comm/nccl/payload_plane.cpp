#include "comm/nccl/payload_plane.h"

#include <algorithm>
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
  if (requests_.empty() && receives_.empty()) MPI_Comm_free(&comm_);
}

void MpiPayloadPlane::copy_in(float* dst, const float* src, std::int64_t count) {
  std::memcpy(dst, src, static_cast<std::size_t>(count) * sizeof(float));
}

void MpiPayloadPlane::start_round(const std::vector<Transfer>& sends,
                                  const std::vector<Transfer>& receives) {
  ASGD_CHECK(requests_.empty() && receives_.empty(),
             "a round started before the previous one completed");
  for (const Transfer& r : receives) {
    ASGD_CHECK(r.count >= 1 && r.count <= INT_MAX, "receive of {} floats", r.count);
    receives_.push_back({r, MPI_REQUEST_NULL, false, true, {}});
  }
  for (const Transfer& s : sends) {
    ASGD_CHECK(s.count >= 1 && s.count <= INT_MAX, "send of {} floats", s.count);
    MPI_Request q;
    ASGD_CHECK_MPI(
        MPI_Isend(s.data, static_cast<int>(s.count), MPI_FLOAT, s.peer, kPayloadTag, comm_, &q));
    requests_.push_back(q);
  }
  match_receives();
}

// A payload is received only once its size is known (probed): Open MPI 4.1 writes a message
// longer than its receive past the end of the buffer, so a receive posted ahead would let a
// peer that sends more than it announced overwrite this rank's memory. One of another size
// than announced lands in a buffer of its own size and is reported as not whole.
void MpiPayloadPlane::match_receives() {
  for (Receive& r : receives_) {
    if (r.matched) continue;
    int flag = 0;
    MPI_Message message = MPI_MESSAGE_NULL;
    MPI_Status status;
    ASGD_CHECK_MPI(improbe(r.transfer.peer, kPayloadTag, comm_, &flag, &message, &status));
    if (!flag) continue;
    // In 64 bits: a payload of 2 GiB or more (a model of 537M parameters) has more bytes
    // than an int counts, so it is received as floats.
    MPI_Count bytes = 0;
    ASGD_CHECK_MPI(MPI_Get_elements_x(&status, MPI_BYTE, &bytes));
    r.matched = true;
    r.whole =
        bytes == static_cast<MPI_Count>(r.transfer.count) * static_cast<MPI_Count>(sizeof(float));
    if (r.whole) {
      ASGD_CHECK_MPI(MPI_Imrecv(r.transfer.data, static_cast<int>(r.transfer.count), MPI_FLOAT,
                                &message, &r.request));
      continue;
    }
    if (bytes > INT_MAX)
      ASGD_THROW(
          "a payload of {} bytes from rank {}, which announced {} floats: one over 2 GiB and "
          "of another length cannot be set aside, so the exchange with it cannot stay in step",
          static_cast<long long>(bytes), r.transfer.peer, r.transfer.count);
    r.drop.resize(static_cast<std::size_t>(std::max<MPI_Count>(bytes, 1)));
    ASGD_CHECK_MPI(
        MPI_Imrecv(r.drop.data(), static_cast<int>(bytes), MPI_BYTE, &message, &r.request));
  }
}

bool MpiPayloadPlane::round_complete() {
  if (requests_.empty() && receives_.empty()) return true;
  match_receives();
  for (const Receive& r : receives_)
    if (!r.matched) return false;
  std::vector<MPI_Request> all = requests_;
  for (const Receive& r : receives_)
    all.push_back(r.request);
  int done = 0;
  const int rc = MPI_Testall(static_cast<int>(all.size()), all.data(), &done, MPI_STATUSES_IGNORE);
  // When one request fails, Testall frees those that completed: their handles are now null,
  // and the ones kept here must be too, or the teardown would test freed requests again.
  std::copy(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(requests_.size()),
            requests_.begin());
  for (std::size_t i = 0; i < receives_.size(); ++i)
    receives_[i].request = all[requests_.size() + i];
  ASGD_CHECK_MPI(rc);
  // Testall completes all or none; until then the requests stay as they were.
  if (!done) return false;
  received_whole_.clear();
  for (const Receive& r : receives_)
    received_whole_.push_back(r.whole ? 1 : 0);
  requests_.clear();
  receives_.clear();
  return true;
}

bool MpiPayloadPlane::abandon() {
  if (requests_.empty() && receives_.empty()) return true;
  // A receive not yet matched has nothing posted; a matched one takes a payload that is on its
  // way. Sends are left to finish (cancelling a send is deprecated, and where it works a peer
  // that was told of the payload would wait for it forever): one whose peer takes it ends
  // within the grace period.
  std::vector<MPI_Request> pending = requests_;
  for (const Receive& r : receives_)
    if (r.matched) pending.push_back(r.request);
  if (!settle_requests(pending, kTeardownGrace_s)) return false;
  requests_.clear();
  receives_.clear();
  return true;
}

}  // namespace asgd
