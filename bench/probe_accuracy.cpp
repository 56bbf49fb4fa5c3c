// How well the load balancer's start-up probe measures links: emulated links of the in-process
// transport with known bandwidth and latency, probed as a training run probes them
// (runtime/balancer.h probe_links), estimate against truth. The issue asks for 10%.
//
//   asgd_bench_probe [--json FILE]
#include <cmath>
#include <cstdio>
#include <fstream>
#include <thread>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench/json_output.h"
#include "comm/local/local_transport.h"
#include "runtime/balancer.h"
#include "runtime/build_info.h"

int main(int argc, char** argv) {
  CLI::App app{"The balancer's probe against emulated links"};
  std::string json_path;
  int repeats = 5;
  app.add_option("--json", json_path, "also write the results here");
  app.add_option("--repeats", repeats, "messages per size and link (median)");
  CLI11_PARSE(app, argc, argv);
  if (!asgd::bench::json_path_writable(json_path)) return 1;

  struct Case {
    double bandwidth, latency;
  };
  const std::vector<Case> cases = {{10e9, 20e-6}, {1e9, 50e-6},  {100e6, 1e-3},
                                   {10e6, 1e-3},  {20e6, 5e-3}, {1e9, 10e-3}};
  // The sizes a run of the 269,322-parameter MLP probes with (runtime/trainer.cpp).
  const std::vector<std::int64_t> sizes = {4096, 262144, 1048576};
  asgd::LocalTransportOptions o;
  o.max_message = 1 << 18;
  nlohmann::json rows = nlohmann::json::array();
  std::printf("%14s %12s %16s %14s %10s %10s\n", "bandwidth B/s", "latency s", "estimate B/s",
              "estimate s", "B error", "a error");
  double worst = 0;
  for (const Case& c : cases) {
    asgd::LocalTransport t(2, o);
    asgd::LinkModel link;
    link.bandwidth_bytes_per_s = c.bandwidth;
    link.latency_s = c.latency;
    t.set_link(0, 1, link);
    t.set_link(1, 0, link);
    const auto probe = asgd::probe_links(t, 2, sizes, repeats);
    const asgd::LinkModel e = probe[0][1];
    const double b_err = e.bandwidth_bytes_per_s / c.bandwidth - 1;
    const double a_err = e.latency_s / c.latency - 1;
    worst = std::max({worst, std::abs(b_err), std::abs(a_err)});
    std::printf("%14.3g %12.3g %16.4g %14.4g %9.1f%% %9.1f%%\n", c.bandwidth, c.latency,
                e.bandwidth_bytes_per_s, e.latency_s, 100 * b_err, 100 * a_err);
    rows.push_back({{"bandwidth", c.bandwidth},
                    {"latency", c.latency},
                    {"estimated_bandwidth", e.bandwidth_bytes_per_s},
                    {"estimated_latency", e.latency_s},
                    {"bandwidth_error", b_err},
                    {"latency_error", a_err}});
  }
  std::printf("worst relative error: %.1f%% (target <= 10%%)\n", 100 * worst);
  if (!json_path.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    nlohmann::json out = {{"benchmark", "probe_accuracy"},
                          {"commit", asgd::git_commit()},
                          {"machine", {{"host", host}, {"cores", std::thread::hardware_concurrency()}}},
                          {"sizes_bytes", sizes},
                          {"repeats", repeats},
                          {"worst_relative_error", worst},
                          {"rows", rows}};
    if (!asgd::bench::write_json(json_path, out)) return 1;
  }
  return worst <= 0.1 ? 0 : 1;  // the bar: within 10%
}
