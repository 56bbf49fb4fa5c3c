// `asgd bench-link`: latency and bandwidth of every ordered pair of MPI ranks (see
// comm/mpi/link_bench.h), printed as nccl-tests / OSU style tables and N x N matrices by rank
// 0, and optionally written as JSON.
//
// The command exists in every build so that `asgd bench-link` in a build without MPI says
// what is missing instead of "unknown command"; only the measuring part needs MPI.
#include <cstdint>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include <asgd/config.h>

#include "runtime/cli/commands.h"
#include "runtime/error.h"

#if ASGD_HAVE_MPI
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <ctime>
#include <exception>
#include <fstream>
#include <limits>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/mpi/link_bench.h"
#include "comm/mpi/mpi_session.h"
#include "runtime/build_info.h"
#include "runtime/device.h"
#include "runtime/distributed.h"
#include "runtime/output_path.h"
#endif

namespace asgd::cli {

namespace {
constexpr const char* kUsage = "mpirun -np N asgd bench-link";
}  // namespace

void add_bench_link_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "bench-link",
      "Measure latency and bandwidth between every pair of MPI ranks (mpirun -np N asgd "
      "bench-link).");
  cmd->footer(
      "Run under mpirun with N >= 2 ranks; rank 0 prints an OSU / nccl-tests style table per "
      "ordered pair,\nthen the N x N bandwidth and latency matrices, and writes --json. Sizes "
      "take the suffixes K, M, G\n(binary: 4K = 4096 bytes). Large sizes run fewer measured "
      "round trips, at least 10 (5 with --quick),\nso that a sweep stays short. The exit status "
      "is non-zero when any message fails the data check.");
  // The values are read back in run_bench_link(), where --quick decides the defaults.
  cmd->add_option("-b,--min-size", "smallest message (default 8)")->type_name("BYTES");
  cmd->add_option("-e,--max-size", "largest message (default 64M; 1M with --quick)")
      ->type_name("BYTES");
  cmd->add_option("-f,--factor", "size multiplier between steps (default 2)")->type_name("INT");
  cmd->add_option("-n,--iterations",
                  "measured round trips per size, fewer for large sizes (default 100; 20 with "
                  "--quick)")
      ->type_name("INT");
  cmd->add_option("-w,--warmup", "warm-up round trips per size (default 5; 2 with --quick)")
      ->type_name("INT");
  cmd->add_option("--json", "write the results as JSON to FILE (rank 0)")->type_name("FILE");
  // For the tests: proves that a corrupted message is counted and fails the command.
  cmd->add_option("--inject-corruption", "flip a byte in every K-th message sent")
      ->type_name("K")
      ->group("");
  cmd->add_flag("--quick", "short sweep for a first look and for tests: 8 B .. 1 MiB");
}

#if !ASGD_HAVE_MPI

int run_bench_link(CLI::App& /*cmd*/) {
  ASGD_INPUT_ERROR(
      "bench-link measures MPI links, and this build of asgd has no MPI: install an MPI "
      "(Debian: libopenmpi-dev), rebuild with -DASGD_MPI=ON, then run `{}`",
      kUsage);
}

#else

namespace {

// "64M" -> 67108864. Suffixes K, M, G (optionally KB, KiB, ...), binary, case-insensitive.
std::size_t parse_bytes(const std::string& text, const char* flag) {
  std::uint64_t value = 0;
  const char* first = text.data();
  const char* last = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(first, last, value);
  std::string suffix(ptr, last);
  std::transform(suffix.begin(), suffix.end(), suffix.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  if (suffix.size() > 1 && (suffix.substr(1) == "B" || suffix.substr(1) == "IB")) suffix.resize(1);
  int shift = -1;
  if (suffix.empty() || suffix == "B") shift = 0;
  if (suffix == "K") shift = 10;
  if (suffix == "M") shift = 20;
  if (suffix == "G") shift = 30;
  if (ec != std::errc() || ptr == first || shift < 0 || value == 0 ||
      value > (std::numeric_limits<std::uint64_t>::max() >> shift))
    ASGD_INPUT_ERROR("{} '{}': expected a positive number of bytes, e.g. 8, 4K, 64M or 1G", flag,
                     text);
  return static_cast<std::size_t>(value << shift);
}

int parse_count(CLI::App& cmd, const char* flag, int minimum) {
  const std::string text = cmd.get_option(flag)->as<std::string>();
  int value = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || value < minimum)
    ASGD_INPUT_ERROR("{} '{}': expected a whole number >= {}", flag, text, minimum);
  return value;
}

std::string format_bytes(std::size_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  int u = 0;
  while (u < 3 && bytes >= 1024 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++u;
  }
  return fmt::format("{} {}", bytes, units[u]);
}

// The options as typed; --quick changes the defaults, and explicit flags override it.
LinkBenchOptions options_from(CLI::App& cmd) {
  LinkBenchOptions o = cmd.count("--quick") ? LinkBenchOptions::quick() : LinkBenchOptions{};
  if (cmd.count("--min-size"))
    o.min_bytes = parse_bytes(cmd.get_option("--min-size")->as<std::string>(), "--min-size");
  if (cmd.count("--max-size"))
    o.max_bytes = parse_bytes(cmd.get_option("--max-size")->as<std::string>(), "--max-size");
  if (cmd.count("--factor")) o.factor = static_cast<std::size_t>(parse_count(cmd, "--factor", 2));
  if (cmd.count("--iterations")) {
    o.iterations = parse_count(cmd, "--iterations", 1);
    o.min_iterations = std::min(o.min_iterations, o.iterations);
  }
  if (cmd.count("--warmup")) o.warmup = parse_count(cmd, "--warmup", 0);
  if (cmd.count("--inject-corruption"))
    o.corrupt_every = parse_count(cmd, "--inject-corruption", 1);
  if (o.max_bytes < o.min_bytes)
    ASGD_INPUT_ERROR("--max-size ({}) is below --min-size ({})", format_bytes(o.max_bytes),
                     format_bytes(o.min_bytes));
  if (o.max_bytes > kLinkBenchMaxBytes)
    ASGD_INPUT_ERROR("--max-size {}: at most {}", format_bytes(o.max_bytes),
                     format_bytes(kLinkBenchMaxBytes));
  return o;
}

// "model name" of /proc/cpuinfo; the device layer names the host only "host CPU".
std::string cpu_model() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos)
      return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

// What this rank would train on. The benchmark itself moves host memory (the mpi transport
// sends from pinned host staging buffers), so this labels the rank rather than the buffers.
void describe_device(const MpiSession& mpi, LinkBenchOptions& o) {
  const int gpus = cuda_device_count();
  if (gpus > 0) {
    const int ordinal = mpi.local_rank() % gpus;
    for (const DeviceInfo& d : list_devices())
      if (d.backend == Backend::kCuda && d.ordinal == ordinal) {
        o.backend = "cuda";
        o.device = fmt::format("cuda:{} {}", ordinal, d.name);
        return;
      }
  }
  o.backend = "host";
  o.device = fmt::format("{} ({} threads)", cpu_model(), std::thread::hardware_concurrency());
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32] = {};
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

void print_header(const LinkBenchOptions& o, const std::vector<LinkBenchRank>& ranks) {
  const std::vector<std::size_t> sizes = link_bench_sizes(o);
  std::printf("# asgd bench-link: MPI ping-pong between host buffers, %zu ranks\n", ranks.size());
  const int fewest = link_bench_iterations(o, sizes.back());
  std::printf("# sizes %s .. %s (x%zu), %d warm-up and %d measured round trips per size%s\n",
              format_bytes(o.min_bytes).c_str(), format_bytes(sizes.back()).c_str(), o.factor,
              o.warmup, o.iterations,
              fewest < o.iterations
                  ? fmt::format(" ({} at {})", fewest, format_bytes(sizes.back())).c_str()
                  : "");
  std::printf(
      "# time_us: median one-way time (round trip / 2); GB/s: size / time_us / 1e3; #wrong: "
      "messages failing the data check\n#\n");
  std::printf("# %4s  %-20s  %5s  %-7s  %s\n", "rank", "host", "local", "backend", "device");
  for (const LinkBenchRank& r : ranks)
    std::printf("# %4d  %-20s  %5d  %-7s  %s\n", r.rank, r.host.c_str(), r.local_rank,
                r.backend.c_str(), r.device.c_str());
  std::fflush(stdout);
}

void print_pair(const LinkBenchPair& p, const std::vector<LinkBenchRank>& ranks) {
  std::printf("#\n# rank %d (%s) -> rank %d (%s)\n", p.from,
              ranks[static_cast<std::size_t>(p.from)].host.c_str(), p.to,
              ranks[static_cast<std::size_t>(p.to)].host.c_str());
  std::printf("# %12s  %10s  %9s  %7s\n", "size", "time_us", "GB/s", "#wrong");
  for (const LinkBenchPoint& point : p.points)
    std::printf("  %12zu  %10.2f  %9.3f  %7lld\n", point.bytes, point.time_us, point.gb_per_s,
                static_cast<long long>(point.wrong));
  std::fflush(stdout);
}

void print_matrix(const char* title, const std::vector<std::vector<double>>& m, int decimals) {
  std::printf("#\n# %s, row = from, column = to\n# %7s", title, "from\\to");
  for (std::size_t to = 0; to < m.size(); ++to)
    std::printf("  %9zu", to);
  std::printf("\n");
  for (std::size_t from = 0; from < m.size(); ++from) {
    std::printf("  %7zu", from);
    for (double v : m[from]) {
      if (std::isnan(v))
        std::printf("  %9s", "-");
      else
        std::printf("  %9.*f", decimals, v);
    }
    std::printf("\n");
  }
}

nlohmann::json matrix_json(const std::vector<std::vector<double>>& m) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& row : m) {
    nlohmann::json r = nlohmann::json::array();
    for (double v : row)
      r.push_back(std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v));
    rows.push_back(r);
  }
  return rows;
}

nlohmann::json result_json(const LinkBenchOptions& o, const LinkBenchResult& r, bool quick) {
  using nlohmann::json;
  json j;
  j["benchmark"] = "bench_link";
  j["asgd_version"] = ASGD_VERSION;
  j["commit"] = git_commit();
  j["date"] = utc_now();
  j["machine"] = {{"hostname", r.ranks.front().host},
                  {"cores", std::thread::hardware_concurrency()},
                  {"cpu", cpu_model()}};
  j["transport"] = "MPI_Send/MPI_Recv ping-pong between host buffers";
  j["settings"] = {{"min_bytes", o.min_bytes},
                   {"max_bytes", o.max_bytes},
                   {"factor", o.factor},
                   {"warmup", o.warmup},
                   {"iterations", o.iterations},
                   {"min_iterations", o.min_iterations},
                   {"large_budget_bytes", o.large_budget_bytes},
                   {"quick", quick}};
  j["definitions"] = {
      {"time_us", "median over the measured round trips of round trip / 2"},
      {"gb_per_s", "bytes / time_us / 1e3 (1 GB = 1e9 bytes)"},
      {"wrong", "messages, both directions, warm-up included, whose data check failed"},
      {"latency_us", "time_us of the smallest size"},
      {"bandwidth_gb_per_s", "gb_per_s of the largest size (bandwidth_bytes)"},
      {"matrices", "[from][to], null where not measured"}};
  json ranks = json::array();
  for (const LinkBenchRank& k : r.ranks)
    ranks.push_back({{"rank", k.rank},
                     {"host", k.host},
                     {"local_rank", k.local_rank},
                     {"backend", k.backend},
                     {"device", k.device}});
  j["ranks"] = ranks;
  json pairs = json::array();
  for (const LinkBenchPair& p : r.pairs) {
    json points = json::array();
    for (const LinkBenchPoint& q : p.points)
      points.push_back({{"bytes", q.bytes},
                        {"iterations", q.iterations},
                        {"time_us", q.time_us},
                        {"min_us", q.min_us},
                        {"max_us", q.max_us},
                        {"gb_per_s", q.gb_per_s},
                        {"wrong", q.wrong}});
    pairs.push_back({{"from", p.from},
                     {"to", p.to},
                     {"latency_us", p.latency_us},
                     {"bandwidth_gb_per_s", p.bandwidth_gb_per_s},
                     {"bandwidth_bytes", p.bandwidth_bytes},
                     {"peak_gb_per_s", p.peak_gb_per_s},
                     {"peak_bytes", p.peak_bytes},
                     {"wrong", p.wrong},
                     {"results", points}});
  }
  j["pairs"] = pairs;
  j["bandwidth_gb_per_s"] = matrix_json(r.bandwidth_matrix());
  j["latency_us"] = matrix_json(r.latency_matrix());
  j["wrong"] = r.wrong;
  return j;
}

// Every rank returns rank 0's verdict, so that the job's ranks agree on the exit status.
int agree_on_root(const MpiSession& mpi, int code) {
  ASGD_CHECK_MPI(MPI_Bcast(&code, 1, MPI_INT, 0, mpi.comm()));
  return code;
}

// Finalises MPI however run_bench_link() leaves, so that mpirun sees a clean exit.
struct FinalizeMpi {
  ~FinalizeMpi() { MpiSession::finalize(); }
};

}  // namespace

int run_bench_link(CLI::App& cmd) {
  MpiSession* session = nullptr;
  try {
    session = &MpiSession::get();
  } catch (const Error& e) {
    ASGD_INPUT_ERROR("bench-link could not start MPI ({}); launch it as `{}` with N >= 2",
                     e.message(), kUsage);
  }
  const MpiSession& mpi = *session;
  FinalizeMpi finalize;
  const bool root = mpi.rank() == 0;
  if (mpi.size() < 2)
    ASGD_INPUT_ERROR(
        "bench-link measures the links between MPI ranks and this run has only {}: launch it as "
        "`{}` with N >= 2",
        mpi.size(), kUsage);

  // Bad flags are the same on every rank: rank 0 reports them, the others only exit.
  LinkBenchOptions o;
  std::string json_path;
  try {
    o = options_from(cmd);
    if (cmd.count("--json")) json_path = cmd.get_option("--json")->as<std::string>();
  } catch (const InputError&) {
    if (root) throw;
    return 2;
  }
  // Only rank 0 writes the JSON file; it finds out whether it can before measuring, and the
  // others learn its answer.
  std::exception_ptr json_error;
  if (root) {
    try {
      check_output_path(json_path, "--json");
    } catch (const InputError&) {
      json_error = std::current_exception();
    }
  }
  if (!agree_on_root(mpi, json_error ? 0 : 1)) {
    if (root) std::rethrow_exception(json_error);
    return 2;
  }

  // Ranks launched with different flags (an MPMD command line) would exchange messages of
  // different sizes, and Open MPI writes a message longer than its receive past the buffer.
  distributed::check_same_settings(mpi, {{"--min-size", std::to_string(o.min_bytes)},
                                         {"--max-size", std::to_string(o.max_bytes)},
                                         {"--factor", std::to_string(o.factor)},
                                         {"--iterations", std::to_string(o.iterations)},
                                         {"--min-iterations", std::to_string(o.min_iterations)},
                                         {"--warmup", std::to_string(o.warmup)},
                                         {"--inject-corruption", std::to_string(o.corrupt_every)}});

  describe_device(mpi, o);
  try {
    const std::vector<LinkBenchRank> ranks = link_bench_ranks(o);
    if (root) {
      print_header(o, ranks);
      o.on_pair = [&ranks](const LinkBenchPair& p) { print_pair(p, ranks); };
    }
    const LinkBenchResult result = run_link_bench(o);

    int code = 0;
    if (root) {
      const std::size_t largest = result.pairs.front().bandwidth_bytes;
      const std::size_t smallest = result.pairs.front().points.front().bytes;
      print_matrix(fmt::format("bandwidth GB/s at {}", format_bytes(largest)).c_str(),
                   result.bandwidth_matrix(), 3);
      print_matrix(fmt::format("latency us (one-way, {})", format_bytes(smallest)).c_str(),
                   result.latency_matrix(), 2);
      std::printf("#\n# #wrong in all: %lld\n", static_cast<long long>(result.wrong));
      std::fflush(stdout);
      if (!json_path.empty()) {
        std::ofstream out(json_path, std::ios::trunc);
        out << result_json(o, result, cmd.count("--quick") > 0).dump(2) << '\n';
        if (!out.good()) {
          std::fprintf(stderr, "asgd: error: --json %s: writing failed\n", json_path.c_str());
          code = 1;
        }
      }
      if (result.wrong > 0) {
        std::fprintf(stderr, "asgd: error: bench-link: %lld messages failed the data check\n",
                     static_cast<long long>(result.wrong));
        code = 1;
      }
    }
    return agree_on_root(mpi, code);
  } catch (const InputError&) {
    // Options the benchmark refuses are refused on every rank before any message moves.
    if (root) throw;
    return 2;
  } catch (const std::exception& e) {
    // A failure on one rank (an MPI call) leaves the others blocked in the benchmark: end the
    // job rather than wait forever.
    std::fprintf(stderr, "asgd: error: bench-link, rank %d: %s\n", mpi.rank(), e.what());
    MpiSession::abort(1);
  }
}

#endif  // ASGD_HAVE_MPI

}  // namespace asgd::cli
