// The transport interface: how workers' messages move. Written against it, the engine runs
// unchanged over the in-process transport (comm/local/), MPI (comm/mpi/) and NCCL (comm/nccl/).
//
// Thread-safety: post() may be called concurrently by different senders; collect() only by
// the receiver's own thread, and it never blocks or takes a lock (the compute path).
#pragma once

#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "comm/message.h"

namespace asgd {

// An emulated or measured link: a transfer of b bytes takes latency + b / bandwidth.
struct LinkModel {
  double bandwidth_bytes_per_s = std::numeric_limits<double>::infinity();
  double latency_s = 0.0;
  bool ideal() const { return latency_s <= 0.0 && bandwidth_bytes_per_s == std::numeric_limits<double>::infinity(); }
  // Seconds to move `bytes` over this link.
  double transfer_seconds(double bytes) const { return latency_s + bytes / bandwidth_bytes_per_s; }
};

// Counters of one directed link, since the transport was created.
struct LinkStats {
  std::int64_t posted = 0;      // messages handed to post()
  std::int64_t superseded = 0;  // dropped unsent from a full send queue by a newer one
  std::int64_t delivered = 0;   // published into the receiver's slot
  std::int64_t overwritten = 0; // replaced in the slot before the receiver took them
  std::int64_t bytes_delivered = 0;
  double busy_seconds = 0;      // sum of the transfer times of delivered messages
};

// A transfer the transport completed: for the load balancer's running estimates.
struct TransferRecord {
  int from = 0;
  int to = 0;
  double bytes = 0;
  double seconds = 0;  // from the start of sending to the arrival (or the send's completion)
  // How far apart the two looks were between which the transport saw it complete: `seconds`
  // is the midpoint, so the true time lies within resolution_s / 2 of it. 0: exact.
  double resolution_s = 0;
  // Up to this much of `seconds` may have been the receiver's wait to take the message rather
  // than link time: an MPI send above the eager limit completes only once the receiving rank's
  // communication thread looks, every idle poll interval when it has nothing else to do. The
  // link's time so lies in [seconds - resolution_s / 2 - receiver_wait_s, seconds +
  // resolution_s / 2]. 0: the transport times the link alone.
  double receiver_wait_s = 0;
};

class Transport;

// A send buffer lent by a transport (Transport::lend()): the caller fills it in place and
// sends it with Transport::post_lent(), which saves post()'s copy. Pinned host memory, so
// that a GPU can copy into it asynchronously. Destroyed or reset() without being posted, it
// goes back to its transport unused.
// Ownership: the memory stays the transport's, and a loan must end (posted or dropped) before
// the transport is destroyed.
// Thread-safety: one thread at a time per buffer; loans may end on any thread.
class LentBuffer {
 public:
  LentBuffer() = default;
  ~LentBuffer() { reset(); }
  LentBuffer(LentBuffer&& other) noexcept { swap(other); }
  LentBuffer& operator=(LentBuffer&& other) noexcept {
    LentBuffer(std::move(other)).swap(*this);
    return *this;
  }
  LentBuffer(const LentBuffer&) = delete;
  LentBuffer& operator=(const LentBuffer&) = delete;

  float* data() const { return data_; }
  std::int64_t capacity() const { return capacity_; }  // elements
  int peer() const { return peer_; }
  const Transport* lender() const { return lender_; }
  explicit operator bool() const { return lender_ != nullptr; }
  // Gives the buffer back unused.
  void reset() {
    if (lender_) end_loan();
    forget();
  }

 private:
  friend class Transport;
  inline void end_loan();
  void forget() {
    lender_ = nullptr;
    peer_ = -1;
    data_ = nullptr;
    capacity_ = 0;
    loan_ = nullptr;
  }
  LentBuffer(Transport* lender, int peer, float* data, std::int64_t capacity, void* loan)
      : lender_(lender), peer_(peer), data_(data), capacity_(capacity), loan_(loan) {}
  void swap(LentBuffer& other) noexcept {
    std::swap(lender_, other.lender_);
    std::swap(peer_, other.peer_);
    std::swap(data_, other.data_);
    std::swap(capacity_, other.capacity_);
    std::swap(loan_, other.loan_);
  }

  Transport* lender_ = nullptr;
  int peer_ = -1;
  float* data_ = nullptr;
  std::int64_t capacity_ = 0;
  void* loan_ = nullptr;  // the lender's own record of the buffer
};

class Transport {
 public:
  virtual ~Transport() = default;

  virtual int size() const = 0;
  // The largest message (elements) the transport carries.
  virtual std::int64_t max_message() const = 0;

  // True when payloads travel in GPU memory (the NCCL transport): post() then also takes data
  // on the sending worker's GPU, and collect() hands out messages whose payload is on the
  // receiving worker's GPU (Message::on_device()).
  virtual bool device_payloads() const { return false; }

  // Sends header.length floats at `data` from header.sender to `peer`. The data is copied
  // before post() returns; post() never waits for the link. A full send queue drops its
  // oldest unsent message (counted as superseded). Rethrows the first error of the
  // transport's background thread, if any.
  virtual void post(int peer, const MessageHeader& header, const float* data) = 0;

  // Posting without post()'s copy, where lends_buffers() (the MPI transport, whose send
  // buffers are pinned): lend() hands out a send buffer for a message of up to `length` floats
  // to `peer`, its contents undefined; the caller fills it (a copy into it, e.g. from a GPU,
  // must have completed) and post_lent() sends header.length floats from its start to its
  // peer, with post()'s semantics and checks. Transports that do not lend throw from both:
  // use post() there.
  virtual bool lends_buffers() const { return false; }
  virtual LentBuffer lend(int peer, std::int64_t length);
  virtual void post_lent(LentBuffer buffer, const MessageHeader& header);

  // Takes the newest unread message from each sender to `receiver`, at most `max` of them,
  // into out[0..returned). Each message stays valid and unchanged until the receiver's next
  // collect(). Lock-free.
  virtual int collect(int receiver, const Message** out, int max) = 0;

  virtual LinkStats stats(int from, int to) const = 0;

  // Transfers completed since the previous call, oldest first (at most the last
  // kMaxTransferRecords per link are kept between calls). Thread-safe; for one consumer.
  static constexpr int kMaxTransferRecords = 256;
  virtual std::vector<TransferRecord> take_transfers() = 0;
  // Messages from `from` to `to` posted and neither completed nor superseded.
  std::int64_t backlog(int from, int to) const {
    const LinkStats s = stats(from, to);
    return s.posted - s.delivered - s.superseded;
  }

 protected:
  // For lending transports: a loan of `data` (room for `capacity` floats) for a message to
  // `peer`, and, back from the caller, the loan record (`buffer` is then empty).
  LentBuffer make_loan(int peer, float* data, std::int64_t capacity, void* loan) {
    return LentBuffer(this, peer, data, capacity, loan);
  }
  static void* take_loan(LentBuffer& buffer) {
    void* loan = buffer.loan_;
    buffer.forget();
    return loan;
  }
  // A loan came back unposted.
  virtual void end_loan(int peer, void* loan);

 private:
  friend class LentBuffer;
};

void LentBuffer::end_loan() {
  lender_->end_loan(peer_, loan_);
}

}  // namespace asgd
