#include "runtime/output_path.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "runtime/error.h"

namespace asgd {

void check_output_path(const std::string& path, std::string_view flag) {
  if (path.empty()) return;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    ASGD_INPUT_ERROR("{} '{}' is a directory; give a file name", flag, path);
  const bool existed = std::filesystem::exists(path, ec);
  {
    // Appending creates the file if need be and leaves an earlier one as it is.
    std::ofstream probe(path, std::ios::out | std::ios::app);
    if (!probe) ASGD_INPUT_ERROR("{}: cannot create '{}': {}", flag, path, std::strerror(errno));
  }
  if (!existed) std::filesystem::remove(path, ec);
}

}  // namespace asgd
