// Text data formats: LIBSVM/SVMlight sparse rows and CSV, both stored dense.
//
// Labels in text files are numbers (e.g. -1/+1 or 1..K); they are mapped to classes 0..C-1 by
// sorting the distinct values of the training file (LabelMap). A test file is read with the
// training file's map and its dimension, so both agree.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/data/dataset.h"

namespace asgd {

struct LabelMap {
  std::vector<double> values;  // sorted distinct label values; class i is values[i]
};

struct TextReadOptions {
  std::int64_t dim = 0;                 // LIBSVM: fixed dimension; 0 infers it
  std::int64_t max_dim = 1 << 20;       // LIBSVM: refuse larger indices
  int label_column = 0;                 // CSV: 0-based; -1 is the last column
  char delimiter = ',';                 // CSV
  CsvHeader header = CsvHeader::kAuto;  // CSV: kAuto treats a first line with a
                                        // non-numeric field as a header
};

// Reads a LIBSVM file: "<label> <index>:<value> ..." with 1-based, increasing indices;
// '#' starts a comment. If `labels` is empty it is filled from this file, else this file's
// labels must all be in it. Errors name file:line:column.
Dataset read_libsvm(const std::string& path, const TextReadOptions& options, LabelMap& labels);

// Reads a CSV file of numbers with one label column. Same label rules and error reporting.
Dataset read_csv(const std::string& path, const TextReadOptions& options, LabelMap& labels);

}  // namespace asgd
