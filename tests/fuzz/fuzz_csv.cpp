// Fuzzes read_csv, the numeric CSV reader.
//
// Input: one option byte, then the file. Option byte: bits 0-1 pick the delimiter (',', ';',
// tab, space), bits 2-3 the header mode (auto, yes, no, auto), bits 4-6 the label column (0, 1,
// 2, 5, -1, -1, -2 (invalid), 100), bit 7 reads the file as a test file against the label map
// {0, 1}.
//
// Oracles besides "no crash": a data set that is read obeys check_dataset, and reading the same
// file again as a test file, with the first read's label map, gives the same rows.
#include <cstddef>
#include <cstdint>

#include "runtime/data/text_formats.h"
#include "runtime/error.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace asgd;
  if (size < 1) return 0;
  const std::uint8_t flags = data[0];
  static constexpr char kDelimiters[] = {',', ';', '\t', ' '};
  static constexpr CsvHeader kHeaders[] = {CsvHeader::kAuto, CsvHeader::kYes, CsvHeader::kNo,
                                           CsvHeader::kAuto};
  static constexpr int kLabelColumns[] = {0, 1, 2, 5, -1, -1, -2, 100};
  TextReadOptions options;
  options.delimiter = kDelimiters[flags & 0x3];
  options.header = kHeaders[(flags >> 2) & 0x3];
  options.label_column = kLabelColumns[(flags >> 4) & 0x7];
  LabelMap labels;
  if (flags & 0x80) labels.values = {0.0, 1.0};
  const std::string path = fuzz::write_scratch_file("data.csv", data + 1, size - 1);

  Dataset first;
  try {
    first = read_csv(path, options, labels);
  } catch (const InputError&) {
    return 0;  // a rejected file, as documented
  }
  fuzz::check_dataset(first);
  ASGD_FUZZ_EXPECT(static_cast<std::size_t>(first.classes) == labels.values.size());
  for (std::size_t i = 1; i < labels.values.size(); ++i)
    ASGD_FUZZ_EXPECT(labels.values[i - 1] < labels.values[i]);

  LabelMap same_labels = labels;
  const Dataset second = read_csv(path, options, same_labels);  // must not throw
  ASGD_FUZZ_EXPECT(same_labels.values == labels.values);
  ASGD_FUZZ_EXPECT(fuzz::same_data(first, second));
  return 0;
}
