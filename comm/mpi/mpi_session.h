// The process's MPI session: initialised once (the first call to MpiSession::get()), with the
// thread level the transports need (MPI_THREAD_MULTIPLE when the library offers it; the
// communication thread owns the data path, but set-up and tear-down collectives run on the
// main thread). It duplicates MPI_COMM_WORLD so that asgd's traffic never mixes with the
// application's, and knows the rank's place on its node (for choosing a GPU).
//
// Ownership: one per process, alive until MpiSession::finalize() or the end of main().
// Thread-safety: get() is thread-safe; the accessors are const and safe from any thread.
//
// This header needs MPI: it exists only in builds with ASGD_MPI enabled (ASGD_HAVE_MPI).
#pragma once

#include <string>
#include <vector>

#include <mpi.h>

#include <asgd/config.h>

#include "runtime/error.h"

#if !ASGD_HAVE_MPI
#error "comm/mpi/ needs a build with MPI (-DASGD_MPI=ON)"
#endif

namespace asgd {

class MpiSession {
 public:
  // Initialises MPI on first use. Throws Error when MPI cannot give the thread level needed.
  static MpiSession& get();
  // Finalises MPI (idempotent). Every thread that calls MPI must have stopped.
  static void finalize();
  // Ends every rank of the job: for an error on one rank that the others cannot see.
  [[noreturn]] static void abort(int code);

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }  // among the ranks on this host
  int local_size() const { return local_size_; }
  const std::string& host() const { return host_; }
  MPI_Comm comm() const { return comm_; }
  int thread_level() const { return thread_level_; }

  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  MpiSession();
  ~MpiSession();

  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
  int thread_level_ = MPI_THREAD_SINGLE;
  std::string host_;
  MPI_Comm comm_ = MPI_COMM_NULL;
};

// Every rank's `value` on `comm`, by rank. Collective (MPI_Allgather); for set-up, where
// each rank must know a setting of the others (e.g. how often their threads look).
std::vector<double> all_gather(MPI_Comm comm, double value);

// Lets MPI progress `requests` until all have completed or `seconds` have passed (yielding the
// core between tests); true when all completed. For teardown, where a request that cannot be
// cancelled (a send, a matched receive) may still be finishing.
bool settle_requests(std::vector<MPI_Request>& requests, double seconds);
// Throws unless the session has MPI_THREAD_MULTIPLE: a transport's communication thread calls
// MPI while the main thread runs set-up and tear-down collectives. `who` names the transport.
void require_thread_multiple(const MpiSession& session, const char* who);
// MPI_Improbe that also finds a message brought in by its own progress. Open MPI 4.1 looks for
// a match, and only when there is none makes progress, and returns without looking again: a
// message that arrives in that progress is found only by the next call, one sleep of the
// communication thread later (a pre-posted receive completes in the same call; measured: the
// round transport at 4 MiB delivered half the bandwidth with one probe per look). Same
// arguments and result as MPI_Improbe.
int improbe(int source, int tag, MPI_Comm comm, int* flag, MPI_Message* message,
            MPI_Status* status);

// How long a teardown lets transfers that cannot be cancelled finish before it gives up on them.
constexpr double kTeardownGrace_s = 1.0;

namespace detail {
// The text of an MPI error code.
std::string mpi_error_string(int code);
}  // namespace detail

}  // namespace asgd

// Checks an MPI call; throws asgd::Error with the call's text and MPI's message.
#define ASGD_CHECK_MPI(call)                                                       \
  do {                                                                             \
    const int asgd_mpi_rc_ = (call);                                               \
    if (asgd_mpi_rc_ != MPI_SUCCESS)                                               \
      ::asgd::detail::throw_error(__FILE__, __LINE__, #call,                       \
                                  ::asgd::detail::mpi_error_string(asgd_mpi_rc_)); \
  } while (0)
