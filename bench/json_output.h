// Where the C++ benchmarks write their JSON results. A result that cannot be written is a failed
// benchmark: the path is tried before anything is measured, and the write is checked.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/error.h"
#include "runtime/output_path.h"

namespace asgd::bench {

// True if `path` (empty: no JSON wanted) can be written (check_output_path()); says why not on
// stderr.
inline bool json_path_writable(const std::string& path) {
  try {
    check_output_path(path, "--json");
    return true;
  } catch (const InputError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return false;
  }
}

// Writes `doc` to `path` (empty: nothing); false, with the reason on stderr, if it failed.
inline bool write_json(const std::string& path, const nlohmann::json& doc) {
  if (path.empty()) return true;
  std::ofstream out(path);
  out << doc.dump(2) << '\n';
  out.close();
  if (!out) {
    std::fprintf(stderr, "--json %s: writing the results failed: %s\n", path.c_str(),
                 std::strerror(errno));
    return false;
  }
  return true;
}

}  // namespace asgd::bench
