// Achieved memory bandwidth of the host Parzen test and merge against memcpy, measured in the
// same process on vectors far larger than the last-level cache.
//
// Bytes moved per element (float32): memcpy 8 (read + write); statistics 12 (read g, w, e);
// merge with one accepted full-state message 16 (read g, w, e, write w); test + merge 28.
// GB/s = bytes / seconds / 1e9; each figure is the median of --repeats timed runs. memcpy runs
// on the same number of threads as the kernels.
//   asgd_bench_parzen [--elements N] [--repeats R] [--threads T] [--json FILE]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <omp.h>
#include <nlohmann/json.hpp>

#include "kernels/parzen.h"
#include "runtime/buffer.h"
#include "runtime/build_info.h"

namespace {
template <typename F>
double median_seconds(int repeats, F&& body) {
  body();  // warm-up: page faults and caches
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    body();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Host Parzen test and merge bandwidth against memcpy."};
  std::int64_t n = 32 << 20;
  int repeats = 9, threads = 1;
  std::string json_path;
  app.add_option("--elements", n, "floats per vector")->capture_default_str();
  app.add_option("--repeats", repeats)->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("--json", json_path, "also write the results here");
  CLI11_PARSE(app, argc, argv);

  const asgd::Stream s = asgd::Stream::host(threads);
  auto make = [&](float v) {
    asgd::DeviceBuffer<float> b(asgd::Backend::kHost, 0, static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) b.data()[i] = v + 1e-3f * static_cast<float>(i % 977);
    return b;
  };
  auto g = make(0.01f), w = make(1.0f), e = make(0.9f), dst = make(0.0f);
  double stats[4];
  const std::int32_t accept[1] = {1};
  const asgd::MergeRange range[1] = {{e.data(), 0, n}};
  const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(float);
  asgd::ParzenParams params;
  params.window = 1e30f;

  // memcpy on as many threads as the kernels get, each copying its contiguous share.
  const double t_copy = median_seconds(repeats, [&] {
#pragma omp parallel num_threads(threads)
    {
      const std::size_t t = static_cast<std::size_t>(omp_get_thread_num());
      const std::size_t nt = static_cast<std::size_t>(omp_get_num_threads());
      const std::size_t lo = static_cast<std::size_t>(n) * t / nt;
      const std::size_t hi = static_cast<std::size_t>(n) * (t + 1) / nt;
      std::memcpy(dst.data() + lo, w.data() + lo, (hi - lo) * sizeof(float));
    }
  });
  const double t_stats = median_seconds(
      repeats, [&] { asgd::parzen_statistics(s, n, g.data(), w.data(), e.data(), stats); });
  // Merging the same message repeatedly moves w towards e; the cost does not depend on values.
  const double t_merge = median_seconds(repeats, [&] {
    asgd::parzen_merge(s, asgd::MergeRule::kSeed, 1e-6f, 0.5f, n, g.data(), w.data(), range, 1,
                       accept);
  });
  const double t_both = median_seconds(repeats, [&] {
    asgd::parzen_statistics(s, n, g.data(), w.data(), e.data(), stats);
    asgd::parzen_merge(s, asgd::MergeRule::kSeed, 1e-6f, 0.5f, n, g.data(), w.data(), range, 1,
                       accept);
  });
  const double b = static_cast<double>(bytes);
  struct Row {
    const char* name;
    double bytes, seconds;
  } rows[] = {{"memcpy", 2 * b, t_copy},
              {"statistics", 3 * b, t_stats},
              {"merge", 4 * b, t_merge},
              {"test+merge", 7 * b, t_both}};
  const double copy_gbs = 2 * b / t_copy / 1e9;
  std::printf("%12s %12s %10s %8s %10s\n", "op", "bytes", "time_ms", "GB/s", "of memcpy");
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  std::string cpu = "unknown";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  nlohmann::json out = {{"benchmark", "parzen_bandwidth"},
                        {"commit", asgd::git_commit()},
                        {"machine", {{"host", host}, {"cpu", cpu}}},
                        {"peer", "memcpy"},
                        {"elements", n},
                        {"threads", threads},
                        {"repeats", repeats}};
  for (const Row& r : rows) {
    const double gbs = r.bytes / r.seconds / 1e9;
    std::printf("%12s %12.0f %10.2f %8.2f %10.3f\n", r.name, r.bytes, r.seconds * 1e3, gbs,
                gbs / copy_gbs);
    out["results"].push_back({{"op", r.name},
                              {"bytes", r.bytes},
                              {"seconds", r.seconds},
                              {"gb_per_s", gbs},
                              {"fraction_of_memcpy", gbs / copy_gbs}});
  }
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << '\n';
  return 0;
}
