// The MPI transport's delivered bandwidth against a raw MPI_Isend/MPI_Irecv loop, between
// two ranks, in the same run:
//
//   mpirun -np 2 asgd_bench_mpi_transport [--sizes 4M,64M] [--messages N] [--repeats R]
//                                          [--json FILE]
//
// raw        rank 0 sends N messages of the size back to back (MPI_Isend + MPI_Wait), rank 1
//            receives them (MPI_Irecv + MPI_Wait) into one buffer and checks two words of each.
// transport  rank 0 posts N messages of the size to rank 1 through MpiTransport, waiting
//            (flush) whenever its queue is full so that none is superseded; rank 1 counts a
//            message when it has been published into its slot: received, hashed, checked;
//            the last one is checked word for word at its ends.
//            The payload checksum, the copy in post() and the header are all inside the time.
// in place  the same through the transport's lent send buffers (lend() / post_lent()): rank 0
//            writes the two marked words into the lent buffer, as the raw loop does into its
//            own, and the rest stays as it was; the transport still hashes the whole payload on
//            both sides and moves all of it. This is how a GPU worker posts (its copy from the
//            device lands in the lent buffer): the transport's cost without the producer's.
// rounds     the same through the NCCL transport's round protocol over its MPI plane
//            (RoundTransport + MpiPayloadPlane, host memory: --transport rounds): a header
//            frame each way per round, then the payload, hashed after it has arrived.
//            (Over NCCL the payload would be GPU memory; that is for a GPU machine.)
//
// Both clocks run on rank 1, from a barrier to the arrival of the last message; bandwidth is
// N * size / time. The median over the repeats is reported, and the ratio transport / raw.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench/json_output.h"
#include "comm/mpi/mpi_session.h"
#include "comm/mpi/mpi_transport.h"
#include "comm/nccl/round_transport.h"
#include "runtime/build_info.h"

namespace {
using asgd::MpiSession;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::int64_t parse_size(const std::string& text) {
  std::size_t end = 0;
  const double v = std::stod(text, &end);
  const std::string unit = text.substr(end);
  const double scale = unit == "K"   ? 1024.0
                       : unit == "M" ? 1048576.0
                       : unit == "G" ? 1073741824.0
                                     : 1.0;
  return static_cast<std::int64_t>(v * scale);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One timed raw run; returns seconds on rank 1 (0 on rank 0) and counts wrong messages.
double raw_run(const MpiSession& s, std::vector<float>& buffer, int messages, int& wrong) {
  const int bytes = static_cast<int>(buffer.size() * sizeof(float));
  MPI_Barrier(s.comm());
  const auto t0 = Clock::now();
  for (int m = 0; m < messages; ++m) {
    MPI_Request r;
    if (s.rank() == 0) {
      buffer.front() = static_cast<float>(m);
      buffer.back() = static_cast<float>(-m);
      MPI_Isend(buffer.data(), bytes, MPI_BYTE, 1, 7, s.comm(), &r);
    } else {
      MPI_Irecv(buffer.data(), bytes, MPI_BYTE, 0, 7, s.comm(), &r);
    }
    MPI_Wait(&r, MPI_STATUS_IGNORE);
    if (s.rank() == 1 &&
        (buffer.front() != static_cast<float>(m) || buffer.back() != static_cast<float>(-m)))
      ++wrong;
  }
  const double t = s.rank() == 1 ? seconds_since(t0) : 0.0;
  MPI_Barrier(s.comm());
  return t;
}

constexpr int kQueue = 4;  // room for a stream of messages; flush() keeps it from filling

std::unique_ptr<asgd::RankTransport> make_mpi(const MpiSession& s, std::int64_t n,
                                              std::int64_t chunk_bytes) {
  asgd::MpiTransportOptions o;
  o.max_message = n;
  o.model = {n, 0x5EED};
  o.chunk_bytes = chunk_bytes;
  o.queue_capacity = kQueue;
  return std::make_unique<asgd::MpiTransport>(s, o);
}

std::unique_ptr<asgd::RankTransport> make_rounds(const MpiSession& s, std::int64_t n) {
  asgd::RoundTransportOptions o;
  o.max_message = n;
  o.model = {n, 0x5EED};
  o.queue_capacity = kQueue;
  return std::make_unique<asgd::RoundTransport>(s, o, std::make_unique<asgd::MpiPayloadPlane>(s));
}

double transport_run(const MpiSession& s, std::vector<float>& buffer, int messages,
                     asgd::RankTransport& t, int& wrong, bool in_place = false) {
  const auto n = static_cast<std::int64_t>(buffer.size());
  MPI_Barrier(s.comm());
  const auto t0 = Clock::now();
  double seconds = 0;
  if (s.rank() == 0) {
    for (int m = 0; m < messages; ++m) {
      asgd::MessageHeader h;
      h.sender = 0;
      h.sender_step = m + 1;
      h.length = n;
      buffer.front() = static_cast<float>(m);
      buffer.back() = static_cast<float>(-m);
      // Keep at most kQueue messages waiting, so that none is superseded.
      t.flush(kQueue - 1);
      if (in_place) {
        asgd::LentBuffer lent = t.lend(1, n);
        lent.data()[0] = static_cast<float>(m);
        lent.data()[n - 1] = static_cast<float>(-m);
        t.post_lent(std::move(lent), h);
      } else {
        t.post(1, h, buffer.data());
      }
    }
    t.flush();
  } else {
    // Blocks (no spinning: the receiving thread must not take a core from the transfer).
    t.wait_delivered(0, messages);
    seconds = seconds_since(t0);
    const asgd::Message* got[1];
    if (t.collect(1, got, 1) != 1 || got[0]->header.sender_step != messages ||
        got[0]->data()[0] != static_cast<float>(messages - 1) ||
        got[0]->data()[n - 1] != static_cast<float>(1 - messages))
      ++wrong;
  }
  t.finish(false);
  return seconds;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"MPI transport bandwidth vs a raw MPI_Isend/MPI_Irecv loop (2 ranks)"};
  std::string sizes_text = "4M,64M";
  int repeats = 5;
  double seconds_per_run = 0.5;
  std::int64_t chunk_bytes = 1 << 20;
  std::string json_path;
  app.add_option("--sizes", sizes_text, "message sizes, comma separated (K, M, G suffixes)");
  app.add_option("--repeats", repeats, "timed runs per size and system (median reported)");
  app.add_option("--seconds", seconds_per_run, "approximate length of one run");
  app.add_option("--chunk-bytes", chunk_bytes, "the transport's chunk size");
  app.add_option("--json", json_path, "also write the results here (rank 0)");
  CLI11_PARSE(app, argc, argv);

  MpiSession& s = MpiSession::get();
  if (s.size() != 2) {
    if (s.rank() == 0) std::fprintf(stderr, "run with mpirun -np 2\n");
    MpiSession::finalize();
    return 2;
  }
  // Rank 0 writes the results; both ranks leave together if it cannot.
  int writable = s.rank() == 0 ? asgd::bench::json_path_writable(json_path) : 1;
  MPI_Bcast(&writable, 1, MPI_INT, 0, s.comm());
  if (!writable) {
    MpiSession::finalize();
    return 1;
  }
  std::vector<std::int64_t> sizes;
  for (std::size_t at = 0; at <= sizes_text.size();) {
    const std::size_t end = std::min(sizes_text.find(',', at), sizes_text.size());
    sizes.push_back(parse_size(sizes_text.substr(at, end - at)));
    at = end + 1;
  }
  nlohmann::json rows = nlohmann::json::array();
  if (s.rank() == 0)
    std::printf("%12s %10s %10s %16s %8s %15s %8s %13s %8s %7s\n", "size", "messages", "raw GB/s",
                "transport GB/s", "ratio", "in place GB/s", "ratio", "rounds GB/s", "ratio",
                "#wrong");
  int total_wrong = 0;
  for (std::int64_t size : sizes) {
    std::vector<float> buffer(static_cast<std::size_t>(size / 4), 1.0f);
    const auto n = static_cast<std::int64_t>(buffer.size());
    // Messages per run: about `seconds_per_run` at ~5 GB/s, at least 5.
    const int messages =
        static_cast<int>(std::max<double>(5, seconds_per_run * 5e9 / static_cast<double>(size)));
    int wrong = 0;
    std::vector<double> raw, transport, in_place, rounds;
    auto run_mpi = [&](int count, bool lent) {
      const auto t = make_mpi(s, n, chunk_bytes);
      return transport_run(s, buffer, count, *t, wrong, lent);
    };
    auto run_rounds = [&](int count) {
      const auto t = make_rounds(s, n);
      return transport_run(s, buffer, count, *t, wrong);
    };
    raw_run(s, buffer, 2, wrong);  // warm-up: pages, connections
    run_mpi(2, false);
    run_mpi(2, true);
    run_rounds(2);
    for (int r = 0; r < repeats; ++r) {
      raw.push_back(raw_run(s, buffer, messages, wrong));
      transport.push_back(run_mpi(messages, false));
      in_place.push_back(run_mpi(messages, true));
      rounds.push_back(run_rounds(messages));
    }
    // Rank 1 timed; rank 0 reports, with rank 1's repeats (its own are zeros).
    MPI_Bcast(raw.data(), repeats, MPI_DOUBLE, 1, s.comm());
    MPI_Bcast(transport.data(), repeats, MPI_DOUBLE, 1, s.comm());
    MPI_Bcast(in_place.data(), repeats, MPI_DOUBLE, 1, s.comm());
    MPI_Bcast(rounds.data(), repeats, MPI_DOUBLE, 1, s.comm());
    double result[5] = {median(raw), median(transport), median(in_place), median(rounds),
                        static_cast<double>(wrong)};
    MPI_Bcast(result, 5, MPI_DOUBLE, 1, s.comm());
    const double bytes = static_cast<double>(size) * messages;
    const double raw_gbs = bytes / result[0] / 1e9, transport_gbs = bytes / result[1] / 1e9,
                 in_place_gbs = bytes / result[2] / 1e9, rounds_gbs = bytes / result[3] / 1e9;
    total_wrong += static_cast<int>(result[4]);
    if (s.rank() == 0) {
      std::printf("%12lld %10d %10.2f %16.2f %8.3f %15.2f %8.3f %13.2f %8.3f %7d\n",
                  static_cast<long long>(size), messages, raw_gbs, transport_gbs,
                  transport_gbs / raw_gbs, in_place_gbs, in_place_gbs / raw_gbs, rounds_gbs,
                  rounds_gbs / raw_gbs, static_cast<int>(result[4]));
      rows.push_back({{"bytes", size},
                      {"messages", messages},
                      {"raw_gb_per_s", raw_gbs},
                      {"transport_gb_per_s", transport_gbs},
                      {"ratio", transport_gbs / raw_gbs},
                      {"in_place_gb_per_s", in_place_gbs},
                      {"in_place_ratio", in_place_gbs / raw_gbs},
                      {"rounds_gb_per_s", rounds_gbs},
                      {"rounds_ratio", rounds_gbs / raw_gbs},
                      {"wrong", static_cast<int>(result[4])},
                      {"raw_seconds", raw},
                      {"transport_seconds", transport},
                      {"in_place_seconds", in_place},
                      {"rounds_seconds", rounds}});
    }
  }
  if (s.rank() == 0 && !json_path.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    nlohmann::json out = {
        {"benchmark", "mpi_transport"},
        {"commit", asgd::git_commit()},
        {"machine", {{"host", host}, {"cores", std::thread::hardware_concurrency()}}},
        {"peer", "raw MPI_Isend/MPI_Irecv loop, same run"},
        {"systems",
         "transport: MpiTransport post() (copies); in_place: MpiTransport lend()/post_lent() "
         "(the two marked words written, as by the raw loop); rounds: RoundTransport over "
         "MpiPayloadPlane"},
        {"chunk_bytes", chunk_bytes},
        {"repeats", repeats},
        {"rows", rows}};
    if (!asgd::bench::write_json(json_path, out)) total_wrong = -1;  // a failed run
  }
  MpiSession::finalize();
  return total_wrong == 0 ? 0 : 1;
}
