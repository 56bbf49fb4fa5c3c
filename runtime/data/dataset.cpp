// Loading a data set named on the command line: spec parsing, train/test pairing, splitting,
// normalisation and sharding. The readers live in idx_reader.cpp, libsvm_reader.cpp and
// csv_reader.cpp, the generators in synthetic.cpp.
#include "runtime/data/dataset.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <limits>
#include <new>
#include <numeric>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "runtime/data/idx.h"
#include "runtime/data/synthetic.h"
#include "runtime/data/text_formats.h"
#include "runtime/error.h"
#include "runtime/random.h"

namespace asgd {
namespace {

constexpr const char* kAcceptedSpecs =
    "fashion-mnist, idx:DIR, libsvm:PATH or csv:PATH (files), or blobs:N,D,K (generated)";
constexpr const char* kBlobsForm =
    "blobs:N,D,K: N points in D dimensions from K Gaussian blobs, three positive integers";

enum class Format { kIdx, kLibsvm, kCsv, kBlobs };

struct BlobsShape {
  std::int64_t points = 0;
  std::int64_t dims = 0;
  std::int32_t blobs = 0;
};

struct Spec {
  Format format;
  std::string path;    // a directory for kIdx; "N,D,K" for kBlobs
  BlobsShape blobs{};  // kBlobs only
};

// Parses "N,D,K" strictly: three comma-separated decimal integers, nothing else, no signs or
// spaces. Zero and out-of-range values are left to make_blobs, which says what is wrong.
BlobsShape parse_blobs(const std::string& spec, const std::string& args, const char* what) {
  std::int64_t values[3] = {};
  std::size_t begin = 0;
  for (int i = 0; i < 3; ++i) {
    const std::size_t end = i < 2 ? args.find(',', begin) : args.size();
    const bool digits = end != std::string::npos && end > begin &&
                        std::all_of(args.begin() + static_cast<std::ptrdiff_t>(begin),
                                    args.begin() + static_cast<std::ptrdiff_t>(end),
                                    [](char c) { return c >= '0' && c <= '9'; });
    const char* first = args.data() + begin;
    const char* last = args.data() + (end == std::string::npos ? args.size() : end);
    const auto parsed = std::from_chars(first, last, values[i]);
    if (!digits || parsed.ec != std::errc() || parsed.ptr != last)
      ASGD_INPUT_ERROR("{} '{}' is not of the form {}", what, spec, kBlobsForm);
    begin = end + 1;
  }
  if (values[2] > INT32_MAX)
    ASGD_INPUT_ERROR("{} '{}': {} blobs is too many; K must be at most {}", what, spec, values[2],
                     INT32_MAX);
  return {values[0], values[1], static_cast<std::int32_t>(values[2])};
}

Spec parse_spec(const std::string& spec, const char* what) {
  if (spec == "fashion-mnist") return {Format::kIdx, fashion_mnist_dir()};
  const std::size_t colon = spec.find(':');
  const std::string scheme = colon == std::string::npos ? "" : spec.substr(0, colon);
  const std::string path = colon == std::string::npos ? "" : spec.substr(colon + 1);
  Format format;
  if (scheme == "idx") {
    format = Format::kIdx;
  } else if (scheme == "libsvm") {
    format = Format::kLibsvm;
  } else if (scheme == "csv") {
    format = Format::kCsv;
  } else if (scheme == "blobs") {
    return {Format::kBlobs, path, parse_blobs(spec, path, what)};
  } else {
    ASGD_INPUT_ERROR("unknown {} '{}'; expected {}", what, spec, kAcceptedSpecs);
  }
  if (path.empty())
    ASGD_INPUT_ERROR("{} '{}' names no path; expected {}", what, spec, kAcceptedSpecs);
  return {format, path};
}

const char* format_name(Format format) {
  switch (format) {
    case Format::kIdx:
      return "IDX";
    case Format::kLibsvm:
      return "LIBSVM";
    case Format::kCsv:
      return "CSV";
    case Format::kBlobs:
      return "generated blobs";
  }
  return "?";
}

// The images and labels files of one IDX part ("train" or "t10k") in `dir`; both empty when
// neither exists, an InputError when only one does.
struct IdxPair {
  std::string images;
  std::string labels;
  bool found() const { return !images.empty(); }
};

IdxPair find_idx_pair(const std::string& dir, const std::string& part) {
  const std::string images_stem = part + "-images-idx3-ubyte";
  const std::string labels_stem = part + "-labels-idx1-ubyte";
  IdxPair pair{find_idx_file(dir, images_stem), find_idx_file(dir, labels_stem)};
  if (pair.images.empty() != pair.labels.empty())
    ASGD_INPUT_ERROR("{}: has {} but not {}[.gz]; both files of a pair are needed", dir,
                     pair.images.empty() ? pair.labels : pair.images,
                     pair.images.empty() ? images_stem : labels_stem);
  return pair;
}

IdxPair require_idx_pair(const std::string& dir, const std::string& part) {
  std::error_code ec;
  const bool is_default = dir == fashion_mnist_dir();
  const std::string hint = is_default ? "; install it with `apt-get install dataset-fashion-mnist` "
                                        "or set ASGD_FASHION_MNIST_DIR"
                                      : "";
  if (!std::filesystem::is_directory(dir, ec))
    ASGD_INPUT_ERROR("{}: {}{}", dir,
                     std::filesystem::exists(dir, ec)
                         ? "not a directory; idx: names the directory that holds the IDX files"
                         : "no such directory",
                     hint);
  IdxPair pair = find_idx_pair(dir, part);
  if (!pair.found())
    ASGD_INPUT_ERROR("{}: no {}-images-idx3-ubyte[.gz] and {}-labels-idx1-ubyte[.gz] found{}", dir,
                     part, part, hint);
  return pair;
}

void validate_fraction(double test_fraction) {
  if (!(test_fraction > 0.0 && test_fraction < 1.0))
    ASGD_INPUT_ERROR("test fraction {} is out of range: it must lie strictly between 0 and 1",
                     test_fraction);
}

Dataset take_rows(const Dataset& all, const std::vector<std::int64_t>& rows) {
  Dataset out;
  out.source = all.source;
  out.rows = static_cast<std::int64_t>(rows.size());
  out.cols = all.cols;
  out.classes = all.classes;
  out.label_problem = all.label_problem;
  out.features.resize(static_cast<std::size_t>(out.rows * out.cols));
  out.labels.resize(rows.size());
  const std::int64_t cols = all.cols;
#pragma omp parallel for schedule(static)
  for (std::int64_t r = 0; r < out.rows; ++r) {
    const std::int64_t from = rows[static_cast<std::size_t>(r)];
    std::copy_n(all.features.begin() + from * cols, cols, out.features.begin() + r * cols);
    out.labels[static_cast<std::size_t>(r)] = all.labels[static_cast<std::size_t>(from)];
  }
  return out;
}

std::int64_t feature_count(const TrainTest& data) {
  return static_cast<std::int64_t>(data.train.features.size() + data.test.features.size());
}

void normalize_unit(TrainTest& data) {
  const auto n = static_cast<std::int64_t>(data.train.features.size());
  const float* train = data.train.features.data();
  float largest = 0.0f;
#pragma omp parallel for schedule(static) reduction(max : largest)
  for (std::int64_t i = 0; i < n; ++i)
    largest = std::max(largest, std::fabs(train[i]));
  if (!(largest > 0.0f) || !std::isfinite(largest)) return;  // all zeros: nothing to scale
  // Division, not multiplication by 1/largest: x / largest is exactly 1 for x == largest.
  for (Dataset* set : {&data.train, &data.test}) {
    float* x = set->features.data();
    const auto m = static_cast<std::int64_t>(set->features.size());
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < m; ++i)
      x[i] /= largest;
  }
}

void normalize_standard(TrainTest& data) {
  const std::int64_t rows = data.train.rows;
  const std::int64_t cols = data.train.cols;
  if (rows == 0 || cols == 0) return;
  std::vector<float> mean(static_cast<std::size_t>(cols));
  std::vector<float> inv_std(static_cast<std::size_t>(cols));
  const float* x = data.train.features.data();
  // Threads own blocks of columns and walk all rows, so each value is read once per pass and
  // accumulates in double without per-thread copies of the statistics. Two passes (mean, then
  // squared deviations) avoid the cancellation of the one-pass formula.
  constexpr std::int64_t kBlock = 64;
  const std::int64_t blocks = (cols + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, 1)
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::int64_t c0 = b * kBlock;
    const std::int64_t width = std::min(kBlock, cols - c0);
    double sum[kBlock] = {};
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* row = x + r * cols + c0;
      for (std::int64_t c = 0; c < width; ++c)
        sum[c] += row[c];
    }
    double mu[kBlock];
    for (std::int64_t c = 0; c < width; ++c)
      mu[c] = sum[c] / static_cast<double>(rows);
    double squares[kBlock] = {};
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* row = x + r * cols + c0;
      for (std::int64_t c = 0; c < width; ++c) {
        const double d = row[c] - mu[c];
        squares[c] += d * d;
      }
    }
    for (std::int64_t c = 0; c < width; ++c) {
      const double sd = std::sqrt(squares[c] / static_cast<double>(rows));
      mean[static_cast<std::size_t>(c0 + c)] = static_cast<float>(mu[c]);
      // A constant feature is only centred: dividing by 0 would make it NaN.
      inv_std[static_cast<std::size_t>(c0 + c)] = sd > 0.0 ? static_cast<float>(1.0 / sd) : 1.0f;
    }
  }
  for (Dataset* set : {&data.train, &data.test}) {
    float* y = set->features.data();
    const std::int64_t n = set->rows;
#pragma omp parallel for schedule(static)
    for (std::int64_t r = 0; r < n; ++r) {
      float* row = y + r * cols;
      for (std::int64_t c = 0; c < cols; ++c)
        row[c] =
            (row[c] - mean[static_cast<std::size_t>(c)]) * inv_std[static_cast<std::size_t>(c)];
    }
  }
}

}  // namespace

Normalize parse_normalize(std::string_view name) {
  if (name == "auto") return Normalize::kAuto;
  if (name == "none") return Normalize::kNone;
  if (name == "unit") return Normalize::kUnit;
  if (name == "standard") return Normalize::kStandard;
  ASGD_INPUT_ERROR("unknown normalisation '{}'; expected auto, none, unit or standard", name);
}

std::string fashion_mnist_dir() {
  const char* dir = std::getenv("ASGD_FASHION_MNIST_DIR");
  if (dir != nullptr && *dir != '\0') return dir;
  return "/usr/share/datasets/fashion-mnist";
}

static TrainTest read_and_prepare(const DataOptions& options) {
  const Spec train_spec = parse_spec(options.spec, "data set");
  const bool has_test_spec = !options.test_spec.empty();
  // A second generated set would have centres of its own, so it could not test the first.
  if (has_test_spec && train_spec.format == Format::kBlobs)
    ASGD_INPUT_ERROR(
        "the data set '{}' is generated and split into train and test by the test fraction; "
        "it takes no separate test set ('{}')",
        options.spec, options.test_spec);
  Spec test_spec{};
  if (has_test_spec) {
    test_spec = parse_spec(options.test_spec, "test set");
    if (test_spec.format != train_spec.format)
      ASGD_INPUT_ERROR(
          "the test set '{}' is {}, but the data set '{}' is {}; both must have the "
          "same format",
          options.test_spec, format_name(test_spec.format), options.spec,
          format_name(train_spec.format));
  }

  TrainTest data;
  bool have_test = false;
  const bool from_bytes = train_spec.format == Format::kIdx;
  if (train_spec.format == Format::kIdx) {
    const IdxPair train = require_idx_pair(train_spec.path, "train");
    IdxPair test;
    if (has_test_spec) {
      // A directory of its own holds the held-out set as t10k-* or, failing that, train-*.
      test = find_idx_pair(test_spec.path, "t10k");
      if (!test.found()) test = require_idx_pair(test_spec.path, "train");
    } else {
      test = find_idx_pair(train_spec.path, "t10k");
    }
    if (!test.found()) validate_fraction(options.test_fraction);
    // Reading is bound by inflating the gzip stream on one core, so the test pair is read on a
    // second thread meanwhile.
    std::future<Dataset> test_read;
    if (test.found())
      test_read =
          std::async(std::launch::async, [&test] { return read_idx(test.images, test.labels); });
    data.train = read_idx(train.images, train.labels);
    if (test_read.valid()) {
      data.test = test_read.get();
      have_test = true;
    }
  } else if (train_spec.format == Format::kBlobs) {
    validate_fraction(options.test_fraction);
    const BlobsShape& b = train_spec.blobs;
    data.train = make_blobs(b.points, b.dims, b.blobs, options.seed);
  } else {
    if (!has_test_spec) validate_fraction(options.test_fraction);
    TextReadOptions text;
    text.dim = options.libsvm_dim;
    text.max_dim = options.libsvm_max_dim;
    text.label_column = options.csv_label_column;
    text.delimiter = options.csv_delimiter;
    text.header = options.csv_header;
    LabelMap labels;
    const bool libsvm = train_spec.format == Format::kLibsvm;
    data.train = libsvm ? read_libsvm(train_spec.path, text, labels)
                        : read_csv(train_spec.path, text, labels);
    if (has_test_spec) {
      text.dim = data.train.cols;
      data.test = libsvm ? read_libsvm(test_spec.path, text, labels)
                         : read_csv(test_spec.path, text, labels);
      have_test = true;
    }
  }

  if (have_test) {
    if (data.test.cols != data.train.cols)
      ASGD_INPUT_ERROR(
          "{}: {} feature(s) per row, but the training set {} has {}; both must "
          "have the same features",
          data.test.source, data.test.cols, data.train.source, data.train.cols);
    // A test label the training set never has cannot be learned (the text readers map labels
    // by name and refuse such rows as they read them; IDX labels are numbers).
    if (data.test.classes > data.train.classes) {
      const auto row = std::find_if(data.test.labels.begin(), data.test.labels.end(),
                                    [&](std::int32_t l) { return l >= data.train.classes; });
      ASGD_INPUT_ERROR(
          "{}: row {} has label {}, but the labels of the training set {} lie in [0, {}); the "
          "two files do not belong together, or one is corrupt",
          data.test.source, row - data.test.labels.begin(), *row, data.train.source,
          data.train.classes);
    }
    const std::int32_t classes = std::max(data.train.classes, data.test.classes);
    data.train.classes = classes;
    data.test.classes = classes;
  } else {
    data = split_train_test(data.train, options.test_fraction, options.seed);
  }
  // Blobs are left as generated: their scale is known (centres in [-10, 10], unit noise), and
  // standardising would rescale the noise by each feature's spread of centres, moving the
  // objective's floor away from D / 2.
  const Normalize mode =
      train_spec.format == Format::kBlobs && options.normalize == Normalize::kAuto
          ? Normalize::kNone
          : options.normalize;
  normalize(data, mode, from_bytes);
  return data;
}

TrainTest load_dataset(const DataOptions& options) {
  try {
    return read_and_prepare(options);
  } catch (const std::bad_alloc&) {
    // The readers refuse sizes no machine could hold before allocating; past that, memory can
    // still run out (the copies made while splitting and normalising, other processes).
    ASGD_INPUT_ERROR(
        "{}: not enough memory to load and prepare this data set; use a smaller one (or a "
        "subset of its rows), or a machine with more memory",
        options.spec);
  }
}

TrainTest split_train_test(const Dataset& all, double test_fraction, std::uint64_t seed) {
  validate_fraction(test_fraction);
  if (all.rows < 2)
    ASGD_INPUT_ERROR(
        "{}: {} row(s) cannot be split into a training and a test set; give a "
        "separate test set",
        all.source, all.rows);
  ASGD_CHECK(static_cast<std::int64_t>(all.features.size()) == all.rows * all.cols &&
                 static_cast<std::int64_t>(all.labels.size()) == all.rows,
             "data set {} is inconsistent: {} x {} with {} features and {} labels", all.source,
             all.rows, all.cols, all.features.size(), all.labels.size());
  const auto wanted =
      static_cast<std::int64_t>(std::llround(test_fraction * static_cast<double>(all.rows)));
  const std::int64_t test_rows = std::clamp<std::int64_t>(wanted, 1, all.rows - 1);

  std::vector<std::int64_t> order(static_cast<std::size_t>(all.rows));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  std::mt19937_64 rng(seed);
  portable_shuffle(order.data(), all.rows, rng);

  const auto split = order.begin() + test_rows;
  TrainTest out;
  out.test = take_rows(all, std::vector<std::int64_t>(order.begin(), split));
  out.train = take_rows(all, std::vector<std::int64_t>(split, order.end()));
  return out;
}

void normalize(TrainTest& data, Normalize mode, bool from_bytes) {
  if (mode == Normalize::kAuto) mode = from_bytes ? Normalize::kUnit : Normalize::kStandard;
  if (mode == Normalize::kNone || feature_count(data) == 0) return;
  ASGD_CHECK(data.test.rows == 0 || data.test.cols == data.train.cols,
             "test set has {} columns, training set {}", data.test.cols, data.train.cols);
  if (mode == Normalize::kUnit) {
    normalize_unit(data);
  } else {
    normalize_standard(data);
  }
}

void check_dataset(const Dataset& d, std::string_view role) {
  const std::string name =
      d.source.empty() ? std::string(role) : fmt::format("{} ({})", role, d.source);
  if (d.rows < 1 || d.cols < 1)
    ASGD_INPUT_ERROR("{}: {} rows of {} features; a data set needs at least one of each", name,
                     d.rows, d.cols);
  if (d.rows > std::numeric_limits<std::int64_t>::max() / d.cols ||
      d.features.size() != static_cast<std::size_t>(d.rows * d.cols))
    ASGD_INPUT_ERROR("{}: {} rows x {} features need {} values, but features holds {}", name,
                     d.rows, d.cols, static_cast<double>(d.rows) * static_cast<double>(d.cols),
                     d.features.size());
  if (d.labels.size() != static_cast<std::size_t>(d.rows))
    ASGD_INPUT_ERROR("{}: {} rows but {} labels; every row needs one", name, d.rows,
                     d.labels.size());
  if (d.classes < 1)
    ASGD_INPUT_ERROR("{}: {} classes; labels lie in [0, classes), so classes must be >= 1", name,
                     d.classes);
  for (std::size_t i = 0; i < d.labels.size(); ++i)
    if (d.labels[i] < 0 || d.labels[i] >= d.classes)
      ASGD_INPUT_ERROR("{}: row {} has the label {}, outside [0, {}) (its classes)", name, i,
                       d.labels[i], d.classes);
}

Dataset shard(const Dataset& data, int index, int count, std::uint64_t seed) {
  ASGD_CHECK(count >= 1 && index >= 0 && index < count, "shard {} of {} does not exist", index,
             count);
  if (data.rows < count)
    ASGD_INPUT_ERROR("{}: {} rows cannot be shared by {} workers: each needs at least one row",
                     data.source, data.rows, count);
  // Files are often sorted (by label, by time): a seeded permutation first, so that every
  // shard is a fair sample of the whole; every worker computes the same permutation.
  std::vector<std::int64_t> order(static_cast<std::size_t>(data.rows));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  std::mt19937_64 rng(seed);
  portable_shuffle(order.data(), data.rows, rng);
  std::vector<std::int64_t> rows;
  rows.reserve(static_cast<std::size_t>(data.rows / count + 1));
  for (std::int64_t r = index; r < data.rows; r += count)
    rows.push_back(order[static_cast<std::size_t>(r)]);
  return take_rows(data, rows);
}

}  // namespace asgd
