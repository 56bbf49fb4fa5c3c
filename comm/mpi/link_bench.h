// The link benchmark behind `asgd bench-link`: latency and bandwidth of every ordered pair of
// MPI ranks over a size sweep, by ping-pong, with the data checked inside the timed runs.
//
// For each ordered pair (from -> to), only those two ranks work; the others wait for it without
// spinning (see link_bench.cpp), so one link is measured at a time. For each size: `warmup` round
// trips, then the measured ones; `from` times each round trip and one-way time = round trip / 2.
// The table reports the median one-way time over the measured round trips and bandwidth = bytes /
// one-way time. Both directions carry `bytes`: each side stamps its message with a pattern that
// depends on (round trip, size, sender, receiver) and the other side verifies it (see
// link_bench.cpp for what is checked and what that costs).
//
// It moves host memory with MPI_Send/MPI_Recv, as the mpi transport does from its pinned
// staging buffers; it does not touch a GPU. The caller names the rank's backend and device in
// the options so that the report says which worker each rank stands for.
//
// Collective: every rank of MpiSession::get().comm() calls run_link_bench() with the same
// options. Call it from one thread while no other thread uses that communicator (no transport
// running). It throws InputError for bad options (on every rank alike) and Error for a failing
// MPI call; after an Error the other ranks may be blocked in the benchmark, so the caller
// should end the job (MpiSession::abort()).
//
// Built only with MPI (ASGD_HAVE_MPI), like the rest of comm/mpi/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <asgd/config.h>

#include "comm/transport.h"

#if !ASGD_HAVE_MPI
#error "comm/mpi/ needs a build with MPI (-DASGD_MPI=ON)"
#endif

namespace asgd {

struct LinkBenchPair;

struct LinkBenchOptions {
  std::size_t min_bytes = 8;
  std::size_t max_bytes = std::size_t{64} << 20;  // at most kLinkBenchMaxBytes
  std::size_t factor = 2;                         // sizes min, min*f, min*f^2, ... <= max
  int warmup = 5;                                 // round trips per size before timing
  // Measured round trips per size. Sizes where that many would move more than
  // `large_budget_bytes` one way run budget/bytes round trips instead, but never fewer than
  // `min_iterations` (nor more than `iterations`): a 64 MiB sweep then stays within seconds.
  int iterations = 100;
  int min_iterations = 10;
  std::size_t large_budget_bytes = std::size_t{512} << 20;
  // Ordered pairs (from, to) to measure, in this order; empty: every ordered pair, by `from`
  // then `to`.
  std::vector<std::pair<int, int>> pairs;
  // What this rank stands for, for the report: "host" or "cuda", and the device's name.
  std::string backend = "host";
  std::string device;
  // For tests of the data check: in every `corrupt_every`-th round trip of each size, both
  // messages have one byte flipped, at a position that moves through the buffer (0: never).
  int corrupt_every = 0;
  // Called on every rank after each pair, in order, before the next pair starts (e.g. to
  // print its table as the sweep goes). Optional.
  std::function<void(const LinkBenchPair&)> on_pair;

  // A short sweep for tests and a first look: 8 B .. 1 MiB, 2 warm-up and 20 measured round
  // trips per size.
  static LinkBenchOptions quick();
};

// The largest message: MPI counts are int, and the benchmark keeps two buffers of this size.
inline constexpr std::size_t kLinkBenchMaxBytes = std::size_t{1} << 30;

// Who a rank is.
struct LinkBenchRank {
  int rank = 0;
  std::string host;
  int local_rank = 0;  // among the ranks on its host
  std::string backend;
  std::string device;
};

// One size of one pair.
struct LinkBenchPoint {
  std::size_t bytes = 0;
  int iterations = 0;  // measured round trips
  double time_us = 0;  // median one-way time
  double min_us = 0;   // fastest and slowest one-way time among the round trips
  double max_us = 0;
  double gb_per_s = 0;     // bytes / time_us / 1e3 (decimal GB/s, as nccl-tests and OSU)
  std::int64_t wrong = 0;  // messages, both directions, warm-up included, that failed the check
};

// One ordered pair: its sweep and the link fitted to it.
struct LinkBenchPair {
  int from = 0;
  int to = 0;
  std::vector<LinkBenchPoint> points;  // by increasing size
  // The fit of one-way time = latency + bytes / bandwidth (see link_bench.cpp for why these
  // two points rather than a least-squares line): latency is the one-way time of the smallest
  // size, bandwidth the one of the largest size.
  double latency_us = 0;
  double bandwidth_gb_per_s = 0;
  std::size_t bandwidth_bytes = 0;  // the size the bandwidth was measured at
  // The highest bandwidth of the sweep and its size (mid sizes can beat the largest one when
  // they fit a cache).
  double peak_gb_per_s = 0;
  std::size_t peak_bytes = 0;
  std::int64_t wrong = 0;  // sum over the points

  // The fit as the transports and the load balancer describe a link.
  LinkModel link() const;
};

struct LinkBenchResult {
  int world_size = 0;
  std::vector<LinkBenchRank> ranks;  // by rank
  std::vector<LinkBenchPair> pairs;  // in the order measured
  std::int64_t wrong = 0;            // over every pair

  // world_size x world_size matrices indexed [from][to]; NaN where no pair was measured (the
  // diagonal, and pairs left out by the options).
  std::vector<std::vector<double>> bandwidth_matrix() const;  // GB/s, the fit's bandwidth
  std::vector<std::vector<double>> latency_matrix() const;    // us, the fit's latency
};

// Runs the benchmark. Collective (see the top of this file). The result is complete and the
// same on every rank.
LinkBenchResult run_link_bench(const LinkBenchOptions& options);

// Every rank's identity (options.backend and options.device on each), by rank: what
// run_link_bench() puts in LinkBenchResult::ranks, for a report before the run. Collective.
std::vector<LinkBenchRank> link_bench_ranks(const LinkBenchOptions& options);

// The sizes a sweep visits.
std::vector<std::size_t> link_bench_sizes(const LinkBenchOptions& options);
// The measured round trips at `bytes`.
int link_bench_iterations(const LinkBenchOptions& options, std::size_t bytes);

}  // namespace asgd
