#include "comm/mpi/link_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>

#include "comm/mpi/mpi_session.h"
#include "runtime/error.h"

namespace asgd {
namespace {

// Tags on the session's communicator; nothing else runs on it during the benchmark. A size's
// messages carry the size's index, so a message of one size can never complete a receive of
// another.
constexpr int kWrongTag = 1000;

// ---- The data check ----------------------------------------------------------------------
//
// A message of n bytes is ceil(n/8) 64-bit words, the last one possibly partial. Inside the
// timed loop the sender stamps, and the receiver checks, only kStampBuckets + 2 words per
// message: the first, the last, and in each of kStampBuckets equal buckets one word whose
// position changes with the round trip. Writing and reading every byte instead would add a
// pass over the buffer at memory speed on each side, which on shared memory is about as fast
// as the link itself and would halve the bandwidth measured. The stamps depend on (round
// trip, size, sender, receiver), so a lost, stale, repeated or misrouted message fails the
// check; the moving positions cover the whole buffer over the round trips; and after the
// timed loop (untimed) the receiver compares every byte of the last message with the full
// pattern, so a corruption anywhere in a message body is caught at least once per size.
// Messages of up to kStampBuckets + 2 words are checked whole every time.
constexpr std::size_t kStampBuckets = 16;

// The splitmix64 finaliser: a cheap bijective mixer, so distinct inputs give distinct words.
std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The contents of the messages of one size in one direction.
class Pattern {
 public:
  Pattern(std::size_t bytes, int sender, int receiver)
      : bytes_(bytes),
        words_((bytes + 7) / 8),
        seed_(mix(mix(bytes) ^ (static_cast<std::uint64_t>(sender) << 32 |
                                static_cast<std::uint32_t>(receiver)))) {}

  // Writes the base pattern over the whole buffer (untimed).
  void fill(std::byte* buffer) const {
    for (std::size_t w = 0; w < words_; ++w)
      put(buffer, w, base(w));
  }

  // Makes the buffer round trip `round`'s message: the previous stamps (in `stamped`) go back
  // to the base pattern, then this round's are written and left in `stamped`.
  void stamp(std::byte* buffer, std::uint64_t round, std::vector<std::size_t>& stamped) const {
    for (std::size_t w : stamped)
      put(buffer, w, base(w));
    positions(round, stamped);
    for (std::size_t w : stamped)
      put(buffer, w, stamp_word(round, w));
  }

  // True when the stamped words of round trip `round`'s message are right. `scratch` holds the
  // positions, so that the timed loop does not allocate.
  bool check_stamps(const std::byte* buffer, std::uint64_t round,
                    std::vector<std::size_t>& scratch) const {
    positions(round, scratch);
    for (std::size_t w : scratch)
      if (!equal(buffer, w, stamp_word(round, w))) return false;
    return true;
  }

  // True when every byte of round trip `round`'s message is right (untimed).
  bool check_all(const std::byte* buffer, std::uint64_t round) const {
    std::vector<std::size_t> stamped;
    positions(round, stamped);
    std::sort(stamped.begin(), stamped.end());
    auto next = stamped.begin();
    for (std::size_t w = 0; w < words_; ++w) {
      const bool is_stamped = next != stamped.end() && *next == w;
      while (next != stamped.end() && *next == w)
        ++next;
      if (!equal(buffer, w, is_stamped ? stamp_word(round, w) : base(w))) return false;
    }
    return true;
  }

 private:
  std::uint64_t base(std::size_t w) const { return mix(seed_ + w); }
  std::uint64_t stamp_word(std::uint64_t round, std::size_t w) const {
    return mix(base(w) ^ mix(~round));
  }

  void positions(std::uint64_t round, std::vector<std::size_t>& out) const {
    out.clear();
    if (words_ <= kStampBuckets + 2) {
      for (std::size_t w = 0; w < words_; ++w)
        out.push_back(w);
      return;
    }
    out.push_back(0);
    out.push_back(words_ - 1);
    for (std::size_t b = 0; b < kStampBuckets; ++b) {
      const std::size_t lo = b * words_ / kStampBuckets;
      const std::size_t hi = (b + 1) * words_ / kStampBuckets;
      out.push_back(lo + mix(seed_ ^ (round * kStampBuckets + b)) % (hi - lo));
    }
  }

  std::size_t word_bytes(std::size_t w) const { return std::min<std::size_t>(8, bytes_ - 8 * w); }
  void put(std::byte* buffer, std::size_t w, std::uint64_t value) const {
    std::memcpy(buffer + 8 * w, &value, word_bytes(w));
  }
  bool equal(const std::byte* buffer, std::size_t w, std::uint64_t value) const {
    return std::memcmp(buffer + 8 * w, &value, word_bytes(w)) == 0;
  }

  std::size_t bytes_;
  std::size_t words_;
  std::uint64_t seed_;
};

// ---- Waiting without taking a core ------------------------------------------------------

// Completes `request`, polling it and sleeping between polls (backing off from 20 us to 1 ms).
// The ranks outside a pair wait this way: MPI's blocking waits spin, and on an oversubscribed
// node (the mpi test tier runs 4 ranks on 2 cores) the idle ranks' spinning would take the
// cores from the pair being measured and turn its round trips into scheduler time slices. The
// request orders the ranks; the sleep only gives the core away, and costs at most 1 ms per
// pair, outside the timed loop.
void wait_politely(MPI_Request& request) {
  auto pause = std::chrono::microseconds(20);
  for (;;) {
    int done = 0;
    ASGD_CHECK_MPI(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    if (done) return;
    std::this_thread::sleep_for(pause);
    pause = std::min(2 * pause, std::chrono::microseconds(1000));
  }
}

void barrier_politely(MPI_Comm comm) {
  MPI_Request request = MPI_REQUEST_NULL;
  ASGD_CHECK_MPI(MPI_Ibarrier(comm, &request));
  wait_politely(request);
}

// ---- Measuring one pair ------------------------------------------------------------------

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> values) {
  const std::size_t n = values.size();
  std::sort(values.begin(), values.end());
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

int checked_count(std::size_t bytes) {
  ASGD_CHECK(bytes <= static_cast<std::size_t>(std::numeric_limits<int>::max()),
             "message of {} bytes exceeds an MPI count", bytes);
  return static_cast<int>(bytes);
}

// Per size, as measured by one side of a pair.
struct SideResult {
  std::vector<std::vector<double>> one_way_s;  // `from` only: per size, per measured round trip
  std::vector<std::int64_t> wrong;             // per size: messages received that failed
};

// One side of the ping-pong of pair (from -> to): `from` sends first and times the round trips;
// `to` echoes with its own message of the same size.
SideResult ping_pong(const LinkBenchOptions& o, const std::vector<std::size_t>& sizes, int from,
                     int to, bool is_from, std::byte* send, std::byte* recv) {
  const MPI_Comm comm = MpiSession::get().comm();
  const int peer = is_from ? to : from;
  SideResult r;
  r.wrong.assign(sizes.size(), 0);
  if (is_from) r.one_way_s.resize(sizes.size());
  std::vector<std::size_t> stamped, scratch;
  stamped.reserve(kStampBuckets + 2);
  scratch.reserve(kStampBuckets + 2);
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    const std::size_t bytes = sizes[k];
    const int count = checked_count(bytes);
    const int tag = static_cast<int>(k);
    const Pattern outgoing(bytes, is_from ? from : to, peer);
    const Pattern incoming(bytes, peer, is_from ? from : to);
    outgoing.fill(send);
    stamped.clear();
    const int measured = link_bench_iterations(o, bytes);
    const int rounds = o.warmup + measured;
    if (is_from) r.one_way_s[k].reserve(static_cast<std::size_t>(measured));
    bool last_wrong = false;
    for (int round = 0; round < rounds; ++round) {
      const auto u = static_cast<std::uint64_t>(round);
      // A flipped byte for the tests of the check; it does not outlive the message.
      const bool corrupt = o.corrupt_every > 0 && (round + 1) % o.corrupt_every == 0;
      std::byte* const flipped = send + (u * 7919) % bytes;
      if (is_from) {
        const auto start = std::chrono::steady_clock::now();
        outgoing.stamp(send, u, stamped);
        if (corrupt) *flipped ^= std::byte{0xff};
        ASGD_CHECK_MPI(MPI_Send(send, count, MPI_BYTE, peer, tag, comm));
        if (corrupt) *flipped ^= std::byte{0xff};
        ASGD_CHECK_MPI(MPI_Recv(recv, count, MPI_BYTE, peer, tag, comm, MPI_STATUS_IGNORE));
        last_wrong = !incoming.check_stamps(recv, u, scratch);
        const double round_trip = seconds_since(start);
        if (round >= o.warmup) r.one_way_s[k].push_back(0.5 * round_trip);
      } else {
        ASGD_CHECK_MPI(MPI_Recv(recv, count, MPI_BYTE, peer, tag, comm, MPI_STATUS_IGNORE));
        last_wrong = !incoming.check_stamps(recv, u, scratch);
        outgoing.stamp(send, u, stamped);
        if (corrupt) *flipped ^= std::byte{0xff};
        ASGD_CHECK_MPI(MPI_Send(send, count, MPI_BYTE, peer, tag, comm));
        if (corrupt) *flipped ^= std::byte{0xff};
      }
      r.wrong[k] += last_wrong ? 1 : 0;
    }
    // The whole of the last message; a message already counted is not counted twice.
    if (rounds > 0 && !last_wrong &&
        !incoming.check_all(recv, static_cast<std::uint64_t>(rounds - 1)))
      r.wrong[k] += 1;
  }
  return r;
}

// ---- The fit -----------------------------------------------------------------------------
//
// The pair's link is one-way time = latency + bytes / bandwidth, with latency the one-way time
// of the smallest size (what OSU's osu_latency reports) and bandwidth that of the largest size.
// Not a least-squares line through the sweep: the sizes span up to eight orders of magnitude,
// so an unweighted fit is decided by the largest sizes alone and its intercept comes out as
// noise, often negative; a fit on relative error is pulled around by the protocol switches
// (eager to rendezvous, copies that stop fitting a cache) that make the real curve piecewise
// rather than affine. The two ends are what the load balancer's cost a + bytes/B must get
// right: small messages cost latency, large ones bandwidth. Taking the largest size's
// bandwidth as measured (latency included) underestimates B by latency/time, under 0.1% at
// the default 64 MiB.
void fit(LinkBenchPair& p) {
  if (p.points.empty()) return;
  p.latency_us = p.points.front().time_us;
  p.bandwidth_gb_per_s = p.points.back().gb_per_s;
  p.bandwidth_bytes = p.points.back().bytes;
  p.peak_gb_per_s = 0;
  p.wrong = 0;
  for (const LinkBenchPoint& point : p.points) {
    if (point.gb_per_s > p.peak_gb_per_s) {
      p.peak_gb_per_s = point.gb_per_s;
      p.peak_bytes = point.bytes;
    }
    p.wrong += point.wrong;
  }
}

// ---- Ranks and options -------------------------------------------------------------------

}  // namespace

std::vector<LinkBenchRank> link_bench_ranks(const LinkBenchOptions& o) {
  const MpiSession& mpi = MpiSession::get();
  const MPI_Comm comm = mpi.comm();
  const int n = mpi.size();
  // Each rank's strings travel as one buffer, with their lengths beside its local rank.
  const std::string mine = mpi.host() + o.backend + o.device;
  const int lengths[4] = {mpi.local_rank(), static_cast<int>(mpi.host().size()),
                          static_cast<int>(o.backend.size()), static_cast<int>(o.device.size())};
  std::vector<int> all_lengths(4 * static_cast<std::size_t>(n));
  ASGD_CHECK_MPI(MPI_Allgather(lengths, 4, MPI_INT, all_lengths.data(), 4, MPI_INT, comm));
  std::vector<int> counts(static_cast<std::size_t>(n)), displs(static_cast<std::size_t>(n));
  int total = 0;
  for (int r = 0; r < n; ++r) {
    const int* l = &all_lengths[4 * static_cast<std::size_t>(r)];
    counts[static_cast<std::size_t>(r)] = l[1] + l[2] + l[3];
    displs[static_cast<std::size_t>(r)] = total;
    total += counts[static_cast<std::size_t>(r)];
  }
  std::string all(static_cast<std::size_t>(total), '\0');
  ASGD_CHECK_MPI(MPI_Allgatherv(mine.data(), static_cast<int>(mine.size()), MPI_CHAR, all.data(),
                                counts.data(), displs.data(), MPI_CHAR, comm));
  std::vector<LinkBenchRank> ranks(static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r) {
    const int* l = &all_lengths[4 * static_cast<std::size_t>(r)];
    const std::size_t at = static_cast<std::size_t>(displs[static_cast<std::size_t>(r)]);
    LinkBenchRank& info = ranks[static_cast<std::size_t>(r)];
    info.rank = r;
    info.local_rank = l[0];
    info.host = all.substr(at, static_cast<std::size_t>(l[1]));
    info.backend = all.substr(at + static_cast<std::size_t>(l[1]), static_cast<std::size_t>(l[2]));
    info.device =
        all.substr(at + static_cast<std::size_t>(l[1] + l[2]), static_cast<std::size_t>(l[3]));
  }
  return ranks;
}

namespace {

void validate(const LinkBenchOptions& o, int world_size) {
  if (world_size < 2)
    ASGD_INPUT_ERROR("the link benchmark needs at least 2 MPI ranks, this job has {}", world_size);
  if (o.min_bytes < 1)
    ASGD_INPUT_ERROR("link benchmark: the smallest size must be at least 1 byte");
  if (o.max_bytes < o.min_bytes)
    ASGD_INPUT_ERROR("link benchmark: the largest size ({} bytes) is below the smallest ({} bytes)",
                     o.max_bytes, o.min_bytes);
  if (o.max_bytes > kLinkBenchMaxBytes)
    ASGD_INPUT_ERROR("link benchmark: the largest size ({} bytes) exceeds the limit of {} bytes",
                     o.max_bytes, kLinkBenchMaxBytes);
  if (o.factor < 2) ASGD_INPUT_ERROR("link benchmark: the size factor must be at least 2");
  if (o.warmup < 0) ASGD_INPUT_ERROR("link benchmark: warm-up round trips must be >= 0");
  if (o.corrupt_every < 0) ASGD_INPUT_ERROR("link benchmark: corrupt_every must be >= 0");
  if (o.iterations < 1 || o.min_iterations < 1)
    ASGD_INPUT_ERROR("link benchmark: measured round trips must be >= 1");
  for (const auto& [from, to] : o.pairs)
    if (from < 0 || to < 0 || from >= world_size || to >= world_size || from == to)
      ASGD_INPUT_ERROR("link benchmark: pair {}->{} is not two distinct ranks of {}", from, to,
                       world_size);
}

}  // namespace

LinkBenchOptions LinkBenchOptions::quick() {
  LinkBenchOptions o;
  o.max_bytes = std::size_t{1} << 20;
  o.warmup = 2;
  o.iterations = 20;
  o.min_iterations = 5;
  return o;
}

LinkModel LinkBenchPair::link() const {
  LinkModel m;
  m.latency_s = latency_us * 1e-6;
  if (bandwidth_gb_per_s > 0) m.bandwidth_bytes_per_s = bandwidth_gb_per_s * 1e9;
  return m;
}

std::vector<std::vector<double>> LinkBenchResult::bandwidth_matrix() const {
  const std::size_t n = static_cast<std::size_t>(world_size);
  std::vector<std::vector<double>> m(n, std::vector<double>(n, std::nan("")));
  for (const LinkBenchPair& p : pairs)
    m[static_cast<std::size_t>(p.from)][static_cast<std::size_t>(p.to)] = p.bandwidth_gb_per_s;
  return m;
}

std::vector<std::vector<double>> LinkBenchResult::latency_matrix() const {
  const std::size_t n = static_cast<std::size_t>(world_size);
  std::vector<std::vector<double>> m(n, std::vector<double>(n, std::nan("")));
  for (const LinkBenchPair& p : pairs)
    m[static_cast<std::size_t>(p.from)][static_cast<std::size_t>(p.to)] = p.latency_us;
  return m;
}

std::vector<std::size_t> link_bench_sizes(const LinkBenchOptions& o) {
  std::vector<std::size_t> sizes;
  if (o.min_bytes < 1 || o.factor < 2) return sizes;
  for (std::size_t s = o.min_bytes; s <= o.max_bytes; s *= o.factor) {
    sizes.push_back(s);
    if (s > o.max_bytes / o.factor) break;  // the next size would overflow or pass the end
  }
  return sizes;
}

int link_bench_iterations(const LinkBenchOptions& o, std::size_t bytes) {
  const std::size_t by_budget = o.large_budget_bytes / std::max<std::size_t>(bytes, 1);
  const std::size_t capped = std::min(by_budget, static_cast<std::size_t>(o.iterations));
  return static_cast<int>(
      std::max(capped, static_cast<std::size_t>(std::min(o.min_iterations, o.iterations))));
}

LinkBenchResult run_link_bench(const LinkBenchOptions& o) {
  const MpiSession& mpi = MpiSession::get();
  const MPI_Comm comm = mpi.comm();
  validate(o, mpi.size());

  LinkBenchResult result;
  result.world_size = mpi.size();
  result.ranks = link_bench_ranks(o);

  std::vector<std::pair<int, int>> pairs = o.pairs;
  if (pairs.empty())
    for (int from = 0; from < mpi.size(); ++from)
      for (int to = 0; to < mpi.size(); ++to)
        if (from != to) pairs.emplace_back(from, to);
  const std::vector<std::size_t> sizes = link_bench_sizes(o);

  // One send and one receive buffer at the largest size, reused by every pair this rank is in.
  std::vector<std::uint64_t> send_words, recv_words;
  const bool takes_part = std::any_of(pairs.begin(), pairs.end(), [&](const auto& p) {
    return p.first == mpi.rank() || p.second == mpi.rank();
  });
  if (takes_part) {
    send_words.resize((o.max_bytes + 7) / 8);
    recv_words.resize((o.max_bytes + 7) / 8);
  }
  auto* send = reinterpret_cast<std::byte*>(send_words.data());
  auto* recv = reinterpret_cast<std::byte*>(recv_words.data());

  // Per point on the wire: iterations, time_us, min_us, max_us, wrong.
  constexpr std::size_t kFields = 5;
  for (const auto& [from, to] : pairs) {
    // Nobody starts a pair before the previous one has finished everywhere, so a link is
    // measured alone.
    barrier_politely(comm);
    std::vector<double> wire(kFields * sizes.size(), 0.0);
    if (mpi.rank() == from || mpi.rank() == to) {
      const bool is_from = mpi.rank() == from;
      SideResult side = ping_pong(o, sizes, from, to, is_from, send, recv);
      const int count = static_cast<int>(sizes.size());
      if (!is_from) {
        ASGD_CHECK_MPI(MPI_Send(side.wrong.data(), count, MPI_INT64_T, from, kWrongTag, comm));
      } else {
        std::vector<std::int64_t> their_wrong(sizes.size());
        ASGD_CHECK_MPI(MPI_Recv(their_wrong.data(), count, MPI_INT64_T, to, kWrongTag, comm,
                                MPI_STATUS_IGNORE));
        for (std::size_t k = 0; k < sizes.size(); ++k) {
          const std::vector<double>& t = side.one_way_s[k];
          double* f = &wire[kFields * k];
          f[0] = static_cast<double>(t.size());
          f[1] = median(t) * 1e6;
          f[2] = *std::min_element(t.begin(), t.end()) * 1e6;
          f[3] = *std::max_element(t.begin(), t.end()) * 1e6;
          f[4] = static_cast<double>(side.wrong[k] + their_wrong[k]);
        }
      }
    }
    // The ranks outside the pair wait here while it runs.
    MPI_Request request = MPI_REQUEST_NULL;
    ASGD_CHECK_MPI(
        MPI_Ibcast(wire.data(), static_cast<int>(wire.size()), MPI_DOUBLE, from, comm, &request));
    wait_politely(request);

    LinkBenchPair pair;
    pair.from = from;
    pair.to = to;
    for (std::size_t k = 0; k < sizes.size(); ++k) {
      const double* f = &wire[kFields * k];
      LinkBenchPoint point;
      point.bytes = sizes[k];
      point.iterations = static_cast<int>(f[0]);
      point.time_us = f[1];
      point.min_us = f[2];
      point.max_us = f[3];
      point.wrong = static_cast<std::int64_t>(f[4]);
      point.gb_per_s =
          point.time_us > 0 ? static_cast<double>(point.bytes) / point.time_us / 1e3 : 0.0;
      pair.points.push_back(point);
    }
    fit(pair);
    result.wrong += pair.wrong;
    result.pairs.push_back(std::move(pair));
    if (o.on_pair) o.on_pair(result.pairs.back());
  }
  barrier_politely(comm);
  return result;
}

}  // namespace asgd
