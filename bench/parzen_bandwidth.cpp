// Achieved memory bandwidth of the Parzen test and merge against a plain copy, measured in the
// same process on vectors far larger than the last-level cache: on the host against memcpy on
// as many threads as the kernels get, on CUDA against a device-to-device cudaMemcpyAsync.
//
// Bytes moved per element (float32): copy 8 (read + write); statistics 12 (read g, w, e);
// merge with one accepted full-state message 16 (read g, w, e, write w); test + merge 28.
// GB/s = bytes / seconds / 1e9; each figure is the median of --repeats timed runs, timed with
// the stream's events (CUDA events on a GPU).
//   asgd_bench_parzen [--backend host|cuda] [--elements N] [--repeats R] [--threads T]
//                     [--json FILE]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <omp.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench/json_output.h"
#include "kernels/parzen.h"
#include "runtime/buffer.h"
#include "runtime/build_info.h"

namespace {
template <typename F>
double median_seconds(const asgd::Stream& s, int repeats, F&& body) {
  body();  // warm-up: page faults, caches, CUDA module loading
  s.synchronize();
  asgd::Event start(s.backend(), s.device()), stop(s.backend(), s.device());
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    start.record(s);
    body();
    stop.record(s);
    stop.synchronize();
    t.push_back(stop.elapsed_ms_since(start) / 1e3);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Host Parzen test and merge bandwidth against memcpy."};
  std::int64_t n = 32 << 20;
  int repeats = 9, threads = 1;
  std::string json_path, backend_name = "host";
  app.add_option("--backend", backend_name, "host or cuda")->capture_default_str();
  app.add_option("--elements", n, "floats per vector")->capture_default_str();
  app.add_option("--repeats", repeats)->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("--json", json_path, "also write the results here");
  CLI11_PARSE(app, argc, argv);
  if (!asgd::bench::json_path_writable(json_path)) return 1;

  const asgd::Backend backend = asgd::parse_backend(backend_name);
  const bool on_host = backend == asgd::Backend::kHost;
  const asgd::Stream s = asgd::Stream::create(backend, 0, threads);
  std::vector<float> init(static_cast<std::size_t>(n));
  auto make = [&](float v) {
    asgd::DeviceBuffer<float> b(backend, 0, static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i)
      init[i] = v + 1e-3f * static_cast<float>(i % 977);
    b.upload(init.data(), init.size(), s);
    s.synchronize();
    return b;
  };
  auto g = make(0.01f), w = make(1.0f), e = make(0.9f), dst = make(0.0f);
  asgd::DeviceBuffer<double> stats(backend, 0, 4);
  asgd::DeviceBuffer<std::int32_t> accept(backend, 0, 1);
  const std::int32_t one = 1;
  accept.upload(&one, 1, s);
  const asgd::MergeRange range[1] = {{e.data(), 0, n}};
  const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(float);
  asgd::ParzenParams params;
  params.window = 1e30f;

  // The peer: memcpy on as many threads as the kernels get, each copying its contiguous share;
  // on CUDA one device-to-device copy.
  const double t_copy = median_seconds(s, repeats, [&] {
    if (!on_host) {
      asgd::copy_async(dst.data(), w.data(), static_cast<std::size_t>(n) * sizeof(float), s);
      return;
    }
#pragma omp parallel num_threads(threads)
    {
      const std::size_t t = static_cast<std::size_t>(omp_get_thread_num());
      const std::size_t nt = static_cast<std::size_t>(omp_get_num_threads());
      const std::size_t lo = static_cast<std::size_t>(n) * t / nt;
      const std::size_t hi = static_cast<std::size_t>(n) * (t + 1) / nt;
      std::memcpy(dst.data() + lo, w.data() + lo, (hi - lo) * sizeof(float));
    }
  });
  const double t_stats = median_seconds(s, repeats, [&] {
    asgd::parzen_statistics(s, n, g.data(), w.data(), e.data(), stats.data());
  });
  // Merging the same message repeatedly moves w towards e; the cost does not depend on values.
  const double t_merge = median_seconds(s, repeats, [&] {
    asgd::parzen_merge(s, asgd::MergeRule::kSeed, 1e-6f, 0.5f, n, g.data(), w.data(), range, 1,
                       accept.data());
  });
  const double t_both = median_seconds(s, repeats, [&] {
    asgd::parzen_statistics(s, n, g.data(), w.data(), e.data(), stats.data());
    asgd::parzen_merge(s, asgd::MergeRule::kSeed, 1e-6f, 0.5f, n, g.data(), w.data(), range, 1,
                       accept.data());
  });
  const double b = static_cast<double>(bytes);
  struct Row {
    const char* name;
    double bytes, seconds;
  } rows[] = {{on_host ? "memcpy" : "cudaMemcpy", 2 * b, t_copy},
              {"statistics", 3 * b, t_stats},
              {"merge", 4 * b, t_merge},
              {"test+merge", 7 * b, t_both}};
  const double copy_gbs = 2 * b / t_copy / 1e9;
  std::printf("%12s %12s %10s %8s %10s\n", "op", "bytes", "time_ms", "GB/s", "of copy");
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
                        {"backend", backend_name},
                        {"device", on_host ? cpu : asgd::list_devices().at(1).name},
                        {"peer", on_host ? "memcpy" : "cudaMemcpyAsync device to device"},
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
                              {"fraction_of_copy", gbs / copy_gbs}});
  }
  return asgd::bench::write_json(json_path, out) ? 0 : 1;
}
