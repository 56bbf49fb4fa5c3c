// What the fuzz targets share: a scratch directory for the readers that take paths, the
// oracle macro, and the invariants every successfully read Dataset must hold.
//
// Expected rejections are InputError and are caught by each target; anything else that escapes
// (another exception, an ASan/UBSan report, a failed oracle) stops libFuzzer with a crash.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "runtime/data/dataset.h"
#include "tests/common/temp_dir.h"

// Aborts, so that libFuzzer saves the input, when an invariant the code under test promises
// does not hold.
#define ASGD_FUZZ_EXPECT(cond)                                                              \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "fuzz oracle failed: %s at %s:%d\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)

namespace asgd::fuzz {

// This process's scratch directory (under $TMPDIR), removed at a normal exit.
inline const testing::TempDir& scratch_dir() {
  static const testing::TempDir dir("asgd_fuzz");
  return dir;
}

// Writes `size` bytes as file `name` of the scratch directory, replacing it; returns its path.
inline std::string write_scratch_file(const char* name, const std::uint8_t* data,
                                      std::size_t size) {
  const std::string path = scratch_dir().file(name);
  std::FILE* file = std::fopen(path.c_str(), "wb");
  ASGD_FUZZ_EXPECT(file != nullptr);
  ASGD_FUZZ_EXPECT(size == 0 || std::fwrite(data, 1, size, file) == size);
  ASGD_FUZZ_EXPECT(std::fclose(file) == 0);
  return path;
}

// What every reader promises of a data set it returns.
inline void check_dataset(const Dataset& d) {
  ASGD_FUZZ_EXPECT(d.rows > 0 && d.cols > 0 && d.classes > 0);
  ASGD_FUZZ_EXPECT(static_cast<std::uint64_t>(d.rows) * static_cast<std::uint64_t>(d.cols) ==
                   d.features.size());
  ASGD_FUZZ_EXPECT(static_cast<std::uint64_t>(d.rows) == d.labels.size());
  for (const std::int32_t label : d.labels)
    ASGD_FUZZ_EXPECT(label >= 0 && label < d.classes);
  for (const float value : d.features)
    ASGD_FUZZ_EXPECT(std::isfinite(value));
}

// Whether two data sets hold the same rows, bit for bit.
inline bool same_data(const Dataset& a, const Dataset& b) {
  return a.rows == b.rows && a.cols == b.cols && a.classes == b.classes && a.labels == b.labels &&
         a.features.size() == b.features.size() &&
         (a.features.empty() || std::memcmp(a.features.data(), b.features.data(),
                                            a.features.size() * sizeof(float)) == 0);
}

}  // namespace asgd::fuzz
