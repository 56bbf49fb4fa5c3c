// Fuzzes read_idx, the MNIST-family IDX reader, over an image file and a label file.
//
// Input: two bytes N (little-endian), then N bytes of the image file, then the label file (N
// is cut to what is there). Either file may be raw or gzip; the reader tells them apart by
// content, as it does for real files.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "runtime/data/idx.h"
#include "runtime/error.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace asgd;
  if (size < 2) return 0;
  const std::size_t images_size =
      std::min<std::size_t>(std::size_t{data[0]} | (std::size_t{data[1]} << 8), size - 2);
  const std::uint8_t* images = data + 2;
  const std::uint8_t* labels = images + images_size;
  const std::string images_path =
      fuzz::write_scratch_file("images-idx3-ubyte", images, images_size);
  const std::string labels_path =
      fuzz::write_scratch_file("labels-idx1-ubyte", labels, size - 2 - images_size);
  try {
    const Dataset d = read_idx(images_path, labels_path);
    fuzz::check_dataset(d);
    ASGD_FUZZ_EXPECT(d.classes <= 256);
    for (const float value : d.features)
      ASGD_FUZZ_EXPECT(value >= 0.0f && value <= 255.0f && value == static_cast<int>(value));
  } catch (const InputError&) {
    // A rejected file, as documented.
  }
  return 0;
}
