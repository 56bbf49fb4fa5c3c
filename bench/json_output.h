// Where the C++ benchmarks write their JSON results. A result that cannot be written is a failed
// benchmark: the path is tried before anything is measured, and the write is checked.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace asgd::bench {

// True if `path` (empty: no JSON wanted) can be written; an earlier file there is left as it
// is. Says why not on stderr.
inline bool json_path_writable(const std::string& path) {
  if (path.empty()) return true;
  std::error_code ec;
  const bool existed = std::filesystem::exists(path, ec);
  {
    std::ofstream probe(path, std::ios::out | std::ios::app);
    if (!probe || std::filesystem::is_directory(path, ec)) {
      std::fprintf(stderr, "--json %s: cannot write there: %s\n", path.c_str(),
                   std::filesystem::is_directory(path, ec) ? "a directory" : std::strerror(errno));
      return false;
    }
  }
  if (!existed) std::filesystem::remove(path, ec);
  return true;
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
