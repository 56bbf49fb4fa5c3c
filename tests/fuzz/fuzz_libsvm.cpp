// Fuzzes read_libsvm, the LIBSVM/SVMlight reader.
//
// Input: one option byte, then the file. Option byte: bits 0-5 give the index limit
// 1 + 16 * b (at most 1009: the reader stores rows x dim floats densely, and the real limit of
// 2^20 would let a 4 KiB input ask for gigabytes, which is by design and not what this target
// looks for); bit 6 makes that limit a fixed dimension (--libsvm-dim) instead of a bound on the
// inferred one (--libsvm-max-dim); bit 7 reads the file as a test file against the label map
// {-1, +1}.
//
// Oracles besides "no crash": a data set that is read obeys check_dataset, and reading the same
// file again as a test file, with the first read's label map and dimension, gives the same rows.
#include <cstddef>
#include <cstdint>

#include "runtime/data/text_formats.h"
#include "runtime/error.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace asgd;
  if (size < 1) return 0;
  const std::uint8_t flags = data[0];
  TextReadOptions options;
  const std::int64_t limit = 1 + 16 * std::int64_t{flags & 0x3f};
  if (flags & 0x40) {
    options.dim = limit;
  } else {
    options.max_dim = limit;
  }
  LabelMap labels;
  if (flags & 0x80) labels.values = {-1.0, 1.0};
  const std::string path = fuzz::write_scratch_file("data.libsvm", data + 1, size - 1);

  Dataset first;
  try {
    first = read_libsvm(path, options, labels);
  } catch (const InputError&) {
    return 0;  // a rejected file, as documented
  }
  fuzz::check_dataset(first);
  ASGD_FUZZ_EXPECT(first.cols <= limit);
  ASGD_FUZZ_EXPECT(static_cast<std::size_t>(first.classes) == labels.values.size());
  for (std::size_t i = 1; i < labels.values.size(); ++i)
    ASGD_FUZZ_EXPECT(labels.values[i - 1] < labels.values[i]);

  TextReadOptions again;
  again.dim = first.cols;
  LabelMap same_labels = labels;
  const Dataset second = read_libsvm(path, again, same_labels);  // must not throw
  ASGD_FUZZ_EXPECT(same_labels.values == labels.values);
  ASGD_FUZZ_EXPECT(fuzz::same_data(first, second));
  return 0;
}
