// Labelled data sets in host memory, and how a data set named on the command line is loaded:
// read, labels mapped to classes, split into train and test, normalised.
//
// Ownership: a Dataset owns its vectors. Thread-safety: functions here are reentrant; a
// Dataset is not synchronised. Every problem with the input is reported as an InputError whose
// message names the file (and line, column or key) and what to do.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace asgd {

struct Dataset {
  std::string source;                // a file or spec, for messages
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int32_t classes = 0;          // labels lie in [0, classes)
  std::vector<float> features;       // rows x cols, row-major
  std::vector<std::int32_t> labels;  // rows
  // Text formats: why the labels may not be classes, e.g. "data row 7 has the label 3.25" (a
  // value that is not a whole number, as in a regression file); empty when they are. Models
  // that need classes refuse such data; K-Means ignores labels.
  std::string label_problem;
};

struct TrainTest {
  Dataset train;
  Dataset test;
};

enum class Normalize {
  kAuto,      // kUnit for IDX (bytes), kStandard for text formats
  kNone,      // as read
  kUnit,      // divide by the largest absolute training value, so features lie in [-1, 1]
  kStandard,  // per feature: subtract the training mean, divide by the training std (if > 0)
};
Normalize parse_normalize(std::string_view name);  // "auto", "none", "unit", "standard"

enum class CsvHeader { kAuto, kYes, kNo };

struct DataOptions {
  // "fashion-mnist", "idx:DIR", "libsvm:PATH", "csv:PATH", or "blobs:N,D,K": N points in D
  // dimensions from K Gaussian blobs (make_blobs in synthetic.h, seeded with `seed`), split by
  // test_fraction, taking no test_spec, and not normalised under Normalize::kAuto.
  std::string spec = "fashion-mnist";
  // Optional held-out set in the same format ("libsvm:PATH", ...); when empty and the spec has
  // no test part of its own (IDX directories with t10k-* files do), the train file is split.
  std::string test_spec;
  double test_fraction = 0.1;  // used for splitting, in (0, 1)
  Normalize normalize = Normalize::kAuto;
  std::uint64_t seed = 1;      // for the split
  // LIBSVM: the feature dimension; 0 infers it from the largest index in the training file.
  // Files with indices above `libsvm_max_dim` are refused (dense storage would be too big).
  std::int64_t libsvm_dim = 0;
  std::int64_t libsvm_max_dim = 1 << 20;
  // CSV: the label column (0-based; -1 is the last column), delimiter and header.
  int csv_label_column = 0;
  char csv_delimiter = ',';
  CsvHeader csv_header = CsvHeader::kAuto;
};

// The directory that "fashion-mnist" names: $ASGD_FASHION_MNIST_DIR if set, else
// /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist package).
std::string fashion_mnist_dir();

// Reads, maps labels, splits and normalises as `options` says.
TrainTest load_dataset(const DataOptions& options);

// Splits rows into train and test by a seeded shuffle; `test_fraction` in (0, 1), and both
// parts get at least one row.
TrainTest split_train_test(const Dataset& all, double test_fraction, std::uint64_t seed);

// Checks a data set, e.g. one built by hand for train(): at least one row and one feature,
// rows x cols features, one label per row, each in [0, classes). `role` ("training set",
// "test set") and the set's source name it in the InputError.
void check_dataset(const Dataset& data, std::string_view role);

// Normalises both sets in place with statistics of `data.train` only.
void normalize(TrainTest& data, Normalize mode, bool from_bytes);

// Worker `index` of `count` gets rows index, index + count, index + 2*count, ... of a
// permutation of the rows drawn from `seed` (the same for every worker, so the shards are
// disjoint and cover every row).
Dataset shard(const Dataset& data, int index, int count, std::uint64_t seed);

}  // namespace asgd
