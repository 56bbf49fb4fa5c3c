// A fresh directory under the system's temporary directory for one test, removed with all
// its files when the object goes. Unique per process, object and a random draw, so tests may
// run in parallel.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <random>
#include <string>

namespace asgd::testing {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "asgd_test") {
    static int counter = 0;
    std::random_device random;
    path_ = std::filesystem::temp_directory_path() /
            (prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" +
             std::to_string(random()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace asgd::testing
