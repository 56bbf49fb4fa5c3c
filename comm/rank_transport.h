// A transport with one worker per process (MPI rank): what a multi-process run needs beyond
// the Transport interface. Implemented by the MPI transport (comm/mpi/mpi_transport.h) and
// the NCCL transport (comm/nccl/round_transport.h), so the trainer runs over either.
//
// Thread-safety: as Transport; finish(), flush() and wait_delivered() from the worker's thread;
// the accessors from any thread.
#pragma once

#include <array>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include "comm/transport.h"
#include "comm/wire_format.h"

namespace asgd {

// Rejected frames by reason (index: WireError).
using WireRejections = std::array<std::int64_t, kWireErrorCount>;

class RankTransport : public Transport {
 public:
  virtual int rank() const = 0;
  // Emulates the link to `peer`: a message is handed on only when a link of that bandwidth and
  // latency would have delivered it.
  virtual void set_link(int peer, const LinkModel& link) = 0;
  // Blocks until at most `max_pending` messages per peer are posted but neither completed nor
  // superseded (0: all out). For benchmarks and tests that must not lose messages. Throws,
  // naming the peers, when none of the messages waited for completes within the transport's
  // peer timeout.
  virtual void flush(int max_pending = 0) = 0;
  // Blocks until `count` messages from `peer` have been published (benchmarks and tests).
  // Throws when none arrives within the transport's peer timeout.
  virtual void wait_delivered(int peer, std::int64_t count) = 0;
  // Ends this rank's part of the exchange; `stop_everyone` asks every peer to stop training.
  // Blocks until no peer can still send to this rank; throws if the peers do not finish within
  // the transport's timeout, or its thread failed. Collective in effect: every rank calls it.
  virtual void finish(bool stop_everyone) = 0;
  // A peer asked everyone to stop.
  virtual bool stop_requested() const = 0;
  virtual WireRejections rejections() const = 0;
  // Rethrows the first error of the transport's thread, if any.
  virtual void check() const = 0;

 protected:
  // The bodies of flush() and wait_delivered(), over stats(), for a transport that notifies
  // `sent` when a send completes and `published` when a message is published, under `mutex`;
  // `failed` ends the wait early (the caller then rethrows its thread's error).
  void wait_for_sends(std::mutex& mutex, std::condition_variable& sent, double timeout_s,
                      int max_pending, const std::function<bool()>& failed) const;
  void wait_for_delivery(std::mutex& mutex, std::condition_variable& published, double timeout_s,
                         int peer, std::int64_t count, const std::function<bool()>& failed) const;
};

// What flush() and wait_delivered() share: blocks on `cv` (notified under `mutex`) until
// done(), evaluated under the lock; throws asgd::Error with describe() when progress(), a count
// that grows as messages complete, has not grown for `timeout_s` seconds.
void wait_for_progress(std::mutex& mutex, std::condition_variable& cv, double timeout_s,
                       const std::function<bool()>& done,
                       const std::function<std::int64_t()>& progress,
                       const std::function<std::string()>& describe);

}  // namespace asgd
