// The collective steps of a multi-process run (one worker per MPI rank): checks at start-up
// that every rank holds the same model, reports where each rank runs, and combines values
// across ranks. The data path does not go through here: it is comm/mpi/mpi_transport.h.
//
// Every function is collective over the session's communicator and is called from the main
// thread of each rank. Builds without MPI do not have this header's functions.
#pragma once

#include <asgd/config.h>

#include <string>
#include <utility>
#include <vector>

namespace asgd::distributed {
// The settings that must agree across ranks, as (name, value), in the same order on every rank
// (kept by checkpoints too, so defined with or without MPI).
using Settings = std::vector<std::pair<std::string, std::string>>;
}  // namespace asgd::distributed

#if ASGD_HAVE_MPI

#include <cstdint>
#include <type_traits>

#include "comm/mpi/mpi_session.h"

namespace asgd::distributed {

// Throws CollectiveInputError on every rank, with the same message naming each rank's model, when
// the ranks built different models (parameter count or layout fingerprint).
void check_same_model(const MpiSession& session, std::int64_t parameters, std::uint64_t fingerprint,
                      const std::string& description);

// Throws CollectiveInputError on every rank, with the same message, when the ranks were given
// different settings (e.g. algorithm, step size, data): for each rank that differs from rank 0,
// the first setting that differs and both values.
void check_same_settings(const MpiSession& session, const Settings& settings);

// Each rank's host, rank on the node and device; rank 0 prints them as a table when `print`.
void report_topology(const MpiSession& session, const std::string& device, bool print);

// Sums `data` over all ranks, in place (every rank gets the sum).
void allreduce_sum(const MpiSession& session, float* data, std::int64_t count);
double allreduce_max(const MpiSession& session, double value);

// Rank 0 receives every rank's `value`, in rank order; the others get an empty vector.
template <typename T>
std::vector<T> gather_to_root(const MpiSession& session, const T& value) {
  static_assert(std::is_trivially_copyable_v<T>, "gathered as bytes");
  std::vector<T> all(session.rank() == 0 ? static_cast<std::size_t>(session.size()) : 0);
  ASGD_CHECK_MPI(MPI_Gather(&value, static_cast<int>(sizeof(T)), MPI_BYTE, all.data(),
                            static_cast<int>(sizeof(T)), MPI_BYTE, 0, session.comm()));
  return all;
}

// Rank 0 receives every rank's string, in rank order; the others get an empty vector.
std::vector<std::string> gather_strings(const MpiSession& session, const std::string& value);

// Blocks until every rank has arrived (start-of-run alignment, e.g. of trace clocks).
void barrier(const MpiSession& session);

// Rank 0's string, on every rank.
std::string broadcast_string(const MpiSession& session, const std::string& value);

}  // namespace asgd::distributed

#endif  // ASGD_HAVE_MPI
