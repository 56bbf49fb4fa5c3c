// Readers, loading, splitting, normalisation and sharding of data sets. Every input is
// generated at test time in a fresh temporary directory.
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/config.h"
#include "runtime/data/dataset.h"
#include "runtime/data/idx.h"
#include "runtime/data/text_formats.h"
#include "runtime/error.h"
#include "tests/common/input_error.h"
#include "tests/common/temp_dir.h"

namespace asgd {
namespace {

namespace fs = std::filesystem;
using Bytes = std::string;

using TempDir = testing::TempDir;

void write_file(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

void write_gz(const std::string& path, const Bytes& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr) << path;
  ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(file), Z_OK);
}

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  Bytes bytes(static_cast<std::size_t>(in.tellg()), '\0');
  in.seekg(0);
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return bytes;
}

void put_be32(Bytes& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

Bytes idx_header(unsigned type, std::initializer_list<std::uint32_t> dims) {
  Bytes out = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (std::uint32_t d : dims)
    put_be32(out, d);
  return out;
}

// n images of h x w; pixel j of image i is (7 i + j) mod 256.
Bytes idx_images(std::uint32_t n, std::uint32_t h, std::uint32_t w) {
  Bytes out = idx_header(0x08, {n, h, w});
  for (std::uint32_t i = 0; i < n; ++i)
    for (std::uint32_t j = 0; j < h * w; ++j)
      out.push_back(static_cast<char>((7 * i + j) % 256));
  return out;
}

Bytes idx_labels(const std::vector<int>& labels) {
  Bytes out = idx_header(0x08, {static_cast<std::uint32_t>(labels.size())});
  for (int label : labels)
    out.push_back(static_cast<char>(label));
  return out;
}

using testing::expect_input_error;

// Sets an environment variable for the scope, restoring the old value.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had_)
      ::setenv(name_, old_.c_str(), 1);
    else
      ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

Dataset read_libsvm_text(const TempDir& dir, const std::string& text, LabelMap& labels,
                         TextReadOptions options = {}, const std::string& name = "data.svm") {
  write_file(dir.file(name), text);
  return read_libsvm(dir.file(name), options, labels);
}

Dataset read_csv_text(const TempDir& dir, const std::string& text, LabelMap& labels,
                      TextReadOptions options = {}, const std::string& name = "data.csv") {
  write_file(dir.file(name), text);
  return read_csv(dir.file(name), options, labels);
}

// A data set whose row r has features (r, -r) and label r, so rows can be traced.
Dataset numbered_rows(std::int64_t rows) {
  Dataset data;
  data.source = "numbered";
  data.rows = rows;
  data.cols = 2;
  data.classes = static_cast<std::int32_t>(rows);
  for (std::int64_t r = 0; r < rows; ++r) {
    data.features.push_back(static_cast<float>(r));
    data.features.push_back(-static_cast<float>(r));
    data.labels.push_back(static_cast<std::int32_t>(r));
  }
  return data;
}

void expect_rows_consistent(const Dataset& data) {
  ASSERT_EQ(data.features.size(), static_cast<std::size_t>(data.rows * data.cols));
  ASSERT_EQ(data.labels.size(), static_cast<std::size_t>(data.rows));
  for (std::int64_t r = 0; r < data.rows; ++r) {
    EXPECT_EQ(data.features[static_cast<std::size_t>(2 * r)],
              data.labels[static_cast<std::size_t>(r)]);
    EXPECT_EQ(data.features[static_cast<std::size_t>(2 * r + 1)],
              -data.labels[static_cast<std::size_t>(r)]);
  }
}

// ---------------------------------------------------------------------------------------------
// IDX

TEST(IdxReader, ReadsImagesAndLabels) {
  TempDir dir;
  write_file(dir.file("images"), idx_images(5, 2, 3));
  write_file(dir.file("labels"), idx_labels({0, 3, 1, 2, 3}));
  const Dataset data = read_idx(dir.file("images"), dir.file("labels"));
  EXPECT_EQ(data.rows, 5);
  EXPECT_EQ(data.cols, 6);
  EXPECT_EQ(data.classes, 4);
  EXPECT_EQ(data.labels, (std::vector<std::int32_t>{0, 3, 1, 2, 3}));
  ASSERT_EQ(data.features.size(), 30u);
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 6; ++j)
      EXPECT_EQ(data.features[i * 6 + j], static_cast<float>(7 * i + j));
  EXPECT_EQ(data.source, dir.file("images"));
}

TEST(IdxReader, PixelValuesCoverTheByteRange) {
  TempDir dir;
  Bytes images = idx_header(0x08, {2, 1, 2});
  for (int v : {0, 128, 254, 255})
    images.push_back(static_cast<char>(v));
  write_file(dir.file("images"), images);
  write_file(dir.file("labels"), idx_labels({9, 0}));
  const Dataset data = read_idx(dir.file("images"), dir.file("labels"));
  EXPECT_EQ(data.features, (std::vector<float>{0, 128, 254, 255}));
  EXPECT_EQ(data.classes, 10);
}

TEST(IdxReader, GzipEqualsRaw) {
  TempDir dir;
  const Bytes images = idx_images(17, 4, 5);
  const Bytes labels = idx_labels({1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2});
  write_file(dir.file("images"), images);
  write_file(dir.file("labels"), labels);
  write_gz(dir.file("images.gz"), images);
  write_gz(dir.file("labels.gz"), labels);
  const Dataset raw = read_idx(dir.file("images"), dir.file("labels"));
  const Dataset gz = read_idx(dir.file("images.gz"), dir.file("labels.gz"));
  EXPECT_EQ(raw.rows, gz.rows);
  EXPECT_EQ(raw.cols, gz.cols);
  EXPECT_EQ(raw.classes, gz.classes);
  EXPECT_EQ(raw.features, gz.features);
  EXPECT_EQ(raw.labels, gz.labels);
  // Detection is by content: a gzip file without the suffix reads too.
  write_gz(dir.file("images_no_suffix"), images);
  EXPECT_EQ(read_idx(dir.file("images_no_suffix"), dir.file("labels")).features, raw.features);
}

TEST(IdxReader, AcceptsTwoDimensionalImages) {
  TempDir dir;
  Bytes images = idx_header(0x08, {3, 4});
  for (int i = 0; i < 12; ++i)
    images.push_back(static_cast<char>(i));
  write_file(dir.file("images"), images);
  write_file(dir.file("labels"), idx_labels({0, 1, 0}));
  const Dataset data = read_idx(dir.file("images"), dir.file("labels"));
  EXPECT_EQ(data.rows, 3);
  EXPECT_EQ(data.cols, 4);
  EXPECT_EQ(data.features[11], 11.0f);
  EXPECT_EQ(data.classes, 2);
}

TEST(IdxReader, FindIdxFilePrefersRawThenGzip) {
  TempDir dir;
  EXPECT_EQ(find_idx_file(dir.str(), "train-images-idx3-ubyte"), "");
  write_gz(dir.file("train-images-idx3-ubyte.gz"), idx_images(1, 1, 1));
  EXPECT_EQ(find_idx_file(dir.str(), "train-images-idx3-ubyte"),
            dir.file("train-images-idx3-ubyte.gz"));
  write_file(dir.file("train-images-idx3-ubyte"), idx_images(1, 1, 1));
  EXPECT_EQ(find_idx_file(dir.str(), "train-images-idx3-ubyte"),
            dir.file("train-images-idx3-ubyte"));
  EXPECT_EQ(find_idx_file(dir.file("missing"), "train-images-idx3-ubyte"), "");
}

TEST(IdxReader, MissingFileIsNamed) {
  TempDir dir;
  write_file(dir.file("labels"), idx_labels({0}));
  expect_input_error([&] { read_idx(dir.file("nope"), dir.file("labels")); },
                     {dir.file("nope"), "no such file"});
  write_file(dir.file("images"), idx_images(1, 1, 1));
  expect_input_error([&] { read_idx(dir.file("images"), dir.file("nolabels")); },
                     {dir.file("nolabels"), "no such file"});
  expect_input_error([&] { read_idx(dir.str(), dir.file("labels")); }, {dir.str(), "directory"});
}

TEST(IdxReader, MissingFileInTheDefaultDirectorySuggestsThePackage) {
  TempDir dir;
  const ScopedEnv env("ASGD_FASHION_MNIST_DIR", dir.str());
  write_file(dir.file("labels"), idx_labels({0}));
  expect_input_error([&] { read_idx(dir.file("train-images-idx3-ubyte.gz"), dir.file("labels")); },
                     {"train-images-idx3-ubyte.gz", "apt-get install dataset-fashion-mnist"});
}

TEST(IdxReader, RejectsFilesThatAreNotIdx) {
  TempDir dir;
  write_file(dir.file("labels"), idx_labels({0, 1}));
  write_file(dir.file("text"), "hello, world\n");
  expect_input_error([&] { read_idx(dir.file("text"), dir.file("labels")); },
                     {dir.file("text"), "not an IDX file"});
  write_file(dir.file("empty"), "");
  expect_input_error([&] { read_idx(dir.file("empty"), dir.file("labels")); },
                     {dir.file("empty"), "0 bytes"});
  write_file(dir.file("short"), Bytes("\0\0", 2));
  expect_input_error([&] { read_idx(dir.file("short"), dir.file("labels")); },
                     {dir.file("short"), "2 bytes"});
}

TEST(IdxReader, RejectsWrongTypeAndDimensions) {
  TempDir dir;
  write_file(dir.file("labels"), idx_labels({0, 1}));
  Bytes floats = idx_header(0x0D, {2, 1, 1});
  floats.append(8, '\0');
  write_file(dir.file("floats"), floats);
  expect_input_error([&] { read_idx(dir.file("floats"), dir.file("labels")); },
                     {dir.file("floats"), "element type 0x0d"});
  // Images and labels swapped.
  write_file(dir.file("images"), idx_images(2, 2, 2));
  expect_input_error([&] { read_idx(dir.file("labels"), dir.file("images")); },
                     {dir.file("labels"), "label file?"});
  expect_input_error([&] { read_idx(dir.file("images"), dir.file("images")); },
                     {dir.file("images"), "0x00000803", "image file?"});
  Bytes zero = idx_header(0x08, {2, 0, 3});
  write_file(dir.file("zero"), zero);
  expect_input_error([&] { read_idx(dir.file("zero"), dir.file("labels")); },
                     {dir.file("zero"), "dimension 2", "is 0"});
  write_file(dir.file("huge"), idx_header(0x08, {65536, 65536, 65536}));
  expect_input_error([&] { read_idx(dir.file("huge"), dir.file("labels")); },
                     {dir.file("huge"), "GiB"});
  Bytes cut_header = idx_header(0x08, {2, 2, 2});
  cut_header.resize(9);
  write_file(dir.file("cut_header"), cut_header);
  expect_input_error([&] { read_idx(dir.file("cut_header"), dir.file("labels")); },
                     {dir.file("cut_header"), "truncated IDX header", "expected 12", "got 5"});
}

TEST(IdxReader, RejectsTruncatedAndTrailingData) {
  TempDir dir;
  write_file(dir.file("labels"), idx_labels({0, 1, 2}));
  Bytes images = idx_images(3, 2, 5);
  write_file(dir.file("truncated"), images.substr(0, images.size() - 1));
  expect_input_error([&] { read_idx(dir.file("truncated"), dir.file("labels")); },
                     {dir.file("truncated"), "truncated", "30 bytes", "holds 29"});
  write_gz(dir.file("truncated.gz"), images.substr(0, images.size() - 4));
  expect_input_error([&] { read_idx(dir.file("truncated.gz"), dir.file("labels")); },
                     {dir.file("truncated.gz"), "30 bytes", "holds 26"});
  write_file(dir.file("trailing"), images + "x");
  expect_input_error([&] { read_idx(dir.file("trailing"), dir.file("labels")); },
                     {dir.file("trailing"), "trailing"});
  write_gz(dir.file("trailing.gz"), images + "xyz");
  expect_input_error([&] { read_idx(dir.file("trailing.gz"), dir.file("labels")); },
                     {dir.file("trailing.gz"), "trailing"});
  // Labels truncated too.
  write_file(dir.file("images"), images);
  write_file(dir.file("short_labels"), idx_labels({0, 1, 2}).substr(0, 10));
  expect_input_error([&] { read_idx(dir.file("images"), dir.file("short_labels")); },
                     {dir.file("short_labels"), "3 bytes", "holds 2"});
}

TEST(IdxReader, RejectsCorruptGzip) {
  TempDir dir;
  write_file(dir.file("labels"), idx_labels(std::vector<int>(200, 1)));
  Bytes images;
  {
    write_gz(dir.file("good.gz"), idx_images(200, 28, 28));
    images = read_bytes(dir.file("good.gz"));
  }
  // A compressed stream cut in half.
  write_file(dir.file("half.gz"), images.substr(0, images.size() / 2));
  expect_input_error([&] { read_idx(dir.file("half.gz"), dir.file("labels")); },
                     {dir.file("half.gz")});
  // Garbage in the middle of the deflate stream.
  Bytes broken = images;
  for (std::size_t i = 20; i < 120 && i < broken.size(); ++i)
    broken[i] = static_cast<char>(0xff);
  write_file(dir.file("broken.gz"), broken);
  expect_input_error([&] { read_idx(dir.file("broken.gz"), dir.file("labels")); },
                     {dir.file("broken.gz")});
}

TEST(IdxReader, RejectsMismatchedCounts) {
  TempDir dir;
  write_file(dir.file("images"), idx_images(4, 2, 2));
  write_file(dir.file("labels"), idx_labels({0, 1, 2}));
  expect_input_error([&] { read_idx(dir.file("images"), dir.file("labels")); },
                     {dir.file("images"), dir.file("labels"), "3 labels", "4 images"});
}

// ---------------------------------------------------------------------------------------------
// LIBSVM

TEST(LibsvmReader, ReadsSparseRowsDense) {
  TempDir dir;
  LabelMap labels;
  const Dataset data = read_libsvm_text(dir,
                                        "# a comment line\r\n"
                                        "+1 1:0.5 3:-2 # trailing comment\r\n"
                                        "\r\n"
                                        "-1 qid:7 2:1e-1 4:+3\n"
                                        "   \t\n"
                                        "+1\n"
                                        "-1 4:7.25",
                                        labels);
  EXPECT_EQ(data.rows, 3 + 1);
  EXPECT_EQ(data.cols, 4);
  EXPECT_EQ(data.classes, 2);
  EXPECT_EQ(labels.values, (std::vector<double>{-1.0, 1.0}));
  EXPECT_EQ(data.labels, (std::vector<std::int32_t>{1, 0, 1, 0}));
  const std::vector<float> expected = {0.5f, 0,    -2, 0,  //
                                       0,    0.1f, 0,  3,  //
                                       0,    0,    0,  0,  //
                                       0,    0,    0,  7.25f};
  EXPECT_EQ(data.features, expected);
  EXPECT_EQ(data.source, dir.file("data.svm"));
}

TEST(LibsvmReader, MapsLabelsBySortedValue) {
  TempDir dir;
  LabelMap labels;
  const Dataset data = read_libsvm_text(dir, "10 1:1\n2 1:1\n7.5 1:1\n2 1:1\n", labels);
  EXPECT_EQ(labels.values, (std::vector<double>{2, 7.5, 10}));
  EXPECT_EQ(data.labels, (std::vector<std::int32_t>{2, 0, 1, 0}));
  EXPECT_EQ(data.classes, 3);
}

TEST(LibsvmReader, TestFileUsesTheTrainingLabelsAndDimension) {
  TempDir dir;
  LabelMap labels;
  const Dataset train = read_libsvm_text(dir, "1 1:1 3:1\n2 2:1\n3 1:2\n", labels, {}, "train.svm");
  TextReadOptions options;
  options.dim = train.cols;
  const Dataset test = read_libsvm_text(dir, "3 1:1\n1 2:5\n", labels, options, "test.svm");
  EXPECT_EQ(test.cols, 3);
  EXPECT_EQ(test.classes, 3);
  EXPECT_EQ(test.labels, (std::vector<std::int32_t>{2, 0}));
  EXPECT_EQ(test.features, (std::vector<float>{1, 0, 0, 0, 5, 0}));
  expect_input_error([&] { read_libsvm_text(dir, "1 1:1\n7 2:1\n", labels, options, "bad.svm"); },
                     {"bad.svm:2:1:", "label 7 does not occur in the training file"});
  expect_input_error(
      [&] { read_libsvm_text(dir, "1 1:1\n2 2:1 4:1\n", labels, options, "wide.svm"); },
      {"wide.svm:2:7:", "feature index 4 exceeds the dimension 3", "--libsvm-dim"});
}

TEST(LibsvmReader, FixedDimensionPadsWithZeros) {
  TempDir dir;
  LabelMap labels;
  TextReadOptions options;
  options.dim = 6;
  const Dataset data = read_libsvm_text(dir, "0 2:1\n1 5:2\n", labels, options);
  EXPECT_EQ(data.cols, 6);
  EXPECT_EQ(data.features, (std::vector<float>{0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0}));
}

TEST(LibsvmReader, ReportsFileLineAndColumn) {
  TempDir dir;
  LabelMap labels;
  auto expect = [&](const std::string& text, std::initializer_list<std::string> parts,
                    TextReadOptions options = {}) {
    LabelMap fresh;
    expect_input_error([&] { read_libsvm_text(dir, text, fresh, options); }, parts);
  };
  expect("1 1:1\n1 2:1 abc\n", {"data.svm:2:7:", "expected '<index>:<value>', got 'abc'"});
  expect("1 1:1\n\n# c\n1 0:1\n", {"data.svm:4:3:", "index 0", "start at 1"});
  expect("1 3:1 2:1\n", {"data.svm:1:7:", "index 2 follows index 3", "increasing"});
  expect("1 3:1 3:1\n", {"data.svm:1:7:", "strictly increasing"});
  expect("1 x:1\n", {"data.svm:1:3:", "integer index", "'x:1'"});
  expect("1 -2:1\n", {"data.svm:1:3:", "index -2"});
  expect("1 1:abc\n", {"data.svm:1:5:", "expected a number after '1:', got 'abc'"});
  expect("1 1:\n", {"data.svm:1:5:", "expected a number after '1:'"});
  expect("1 1:nan\n", {"data.svm:1:5:", "not a finite"});
  expect("1 1:1e39\n", {"data.svm:1:5:", "not a finite float32"});
  expect("1 1:1\nabc 1:1\n", {"data.svm:2:1:", "expected a label", "'abc'"});
  expect("inf 1:1\n", {"data.svm:1:1:", "label 'inf' is not a finite"});
  expect("1:1 2:1\n", {"data.svm:1:1:", "expected a label"});
  expect("1 99999999999999999999:1\n", {"data.svm:1:3:", "exceeds the limit"});
  TextReadOptions small;
  small.max_dim = 5;
  expect("1 1:1\n1 6:1\n",
         {"data.svm:2:3:", "feature index 6 exceeds the limit of 5 features",
          "pass --libsvm-max-dim to raise it"},
         small);
  expect("", {"data.svm", "no data rows"});
  expect("# only\n\n  # comments\n", {"data.svm", "no data rows"});
  expect("1\n2\n", {"data.svm", "no row has any feature"});
  expect(Bytes("\x01\x02\x00\x7f 1:1\n", 8), {"data.svm:1:1:", "\\x01\\x02\\x00\\x7f"});
  expect_input_error([&] { read_libsvm(dir.file("missing.svm"), {}, labels); },
                     {"missing.svm", "no such file"});
}

TEST(LibsvmReader, TinyValuesUnderflowToZero) {
  TempDir dir;
  LabelMap labels;
  const Dataset data = read_libsvm_text(dir, "1 1:1e-400 2:1e-50\n", labels);
  EXPECT_EQ(data.features, (std::vector<float>{0, 0}));
}

TEST(LibsvmReader, LargeFileParsedInChunksKeepsOrderAndLineNumbers) {
  // Several MiB, so that the reader splits the text into chunks parsed in parallel.
  TempDir dir;
  std::string text;
  const int rows = 60000;
  for (int r = 0; r < rows; ++r) {
    text += std::to_string(r % 3) + " ";
    for (int k = 1; k <= 8; ++k)
      text += std::to_string(k * 3 - r % 3) + ":" + std::to_string(r) + ".5 ";
    text += "\n";
  }
  ASSERT_GT(text.size(), 4u << 20);
  LabelMap labels;
  const Dataset data = read_libsvm_text(dir, text, labels);
  ASSERT_EQ(data.rows, rows);
  EXPECT_EQ(data.cols, 24);
  for (int r = 0; r < rows; r += 997) {
    EXPECT_EQ(data.labels[r], r % 3);
    for (int k = 1; k <= 8; ++k)
      EXPECT_EQ(data.features[r * 24 + k * 3 - r % 3 - 1], r + 0.5f);
    EXPECT_EQ(std::count(data.features.begin() + r * 24, data.features.begin() + r * 24 + 24, 0.0f),
              16);
  }
  // An error near the end is reported with its absolute line number.
  std::string bad = text;
  const std::size_t last_line = bad.rfind('\n', bad.size() - 2) + 1;
  bad.insert(last_line + 2, "oops ");
  LabelMap fresh;
  expect_input_error([&] { read_libsvm_text(dir, bad, fresh, {}, "bad.svm"); },
                     {"bad.svm:" + std::to_string(rows) + ":3:", "'oops'"});
}

// ---------------------------------------------------------------------------------------------
// CSV

TEST(CsvReader, ReadsWithHeaderDetected) {
  TempDir dir;
  LabelMap labels;
  const Dataset data = read_csv_text(dir,
                                     "label,\"x, first\",y\n"
                                     "1,0.5,-2\n"
                                     "\n"
                                     "0, 3 ,\"4e1\"\n",
                                     labels);
  EXPECT_EQ(data.rows, 2);
  EXPECT_EQ(data.cols, 2);
  EXPECT_EQ(data.classes, 2);
  EXPECT_EQ(data.labels, (std::vector<std::int32_t>{1, 0}));
  EXPECT_EQ(data.features, (std::vector<float>{0.5f, -2, 3, 40}));
  EXPECT_EQ(data.source, dir.file("data.csv"));
}

TEST(CsvReader, NumericFirstLineIsData) {
  TempDir dir;
  LabelMap labels;
  const Dataset data = read_csv_text(dir,
                                     "\xEF\xBB\xBF"
                                     "5,1,2\r\n6,3,4\r\n",
                                     labels);
  EXPECT_EQ(data.rows, 2);
  EXPECT_EQ(data.labels, (std::vector<std::int32_t>{0, 1}));
  EXPECT_EQ(data.features, (std::vector<float>{1, 2, 3, 4}));
  TextReadOptions yes;
  yes.header = CsvHeader::kYes;
  LabelMap fresh;
  const Dataset skipped = read_csv_text(dir, "5,1,2\n6,3,4\n", fresh, yes);
  EXPECT_EQ(skipped.rows, 1);
  EXPECT_EQ(skipped.features, (std::vector<float>{3, 4}));
  TextReadOptions no;
  no.header = CsvHeader::kNo;
  LabelMap other;
  expect_input_error([&] { read_csv_text(dir, "a,b,c\n1,2,3\n", other, no); },
                     {"data.csv:1:1:", "expected a number, got 'a'"});
}

TEST(CsvReader, LabelColumnAndDelimiters) {
  TempDir dir;
  TextReadOptions last;
  last.label_column = -1;
  last.delimiter = ';';
  LabelMap labels;
  Dataset data = read_csv_text(dir, "1;2;-1\n3;4;1\n", labels, last);
  EXPECT_EQ(data.features, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(data.labels, (std::vector<std::int32_t>{0, 1}));

  TextReadOptions middle;
  middle.label_column = 1;
  middle.delimiter = '\t';
  LabelMap labels2;
  data = read_csv_text(dir, "1\t7\t2\n3\t8\t4\n", labels2, middle);
  EXPECT_EQ(data.features, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(labels2.values, (std::vector<double>{7, 8}));

  TextReadOptions spaces;
  spaces.delimiter = ' ';
  LabelMap labels3;
  data = read_csv_text(dir, "  1   2.5  3\n0 4   5   \n", labels3, spaces);
  EXPECT_EQ(data.cols, 2);
  EXPECT_EQ(data.features, (std::vector<float>{2.5f, 3, 4, 5}));
}

TEST(CsvReader, ReportsFileLineAndColumn) {
  TempDir dir;
  auto expect = [&](const std::string& text, std::initializer_list<std::string> parts,
                    TextReadOptions options = {}) {
    LabelMap fresh;
    expect_input_error([&] { read_csv_text(dir, text, fresh, options); }, parts);
  };
  expect("a,b,c\n1,2,3\n4,5\n", {"data.csv:3:", "expected 3 fields as on line 1, got 2"});
  expect("1,2,3\n4,5,6,7\n", {"data.csv:2:", "expected 3 fields as on line 1, got 4"});
  expect("1,2,3\n4,,6\n", {"data.csv:2:3:", "empty field"});
  expect("1,2,3\n4,5,\n", {"data.csv:2:5:", "empty field"});
  expect("1,2,3\n4,5,x6\n", {"data.csv:2:5:", "expected a number, got 'x6'"});
  expect("1,2,3\n4,\"five\",6\n", {"data.csv:2:3:", "expected a number, got '\"five\"'"});
  expect("1,2,3\n4,\"5,6\n", {"data.csv:2:3:", "unterminated quoted field"});
  expect("1,2,3\n4,\"5\"x,6\n", {"data.csv:2:6:", "after a closing quote"});
  expect("1,2,3\n4,nan,6\n", {"data.csv:2:3:", "not a finite"});
  expect("1,2,3\n4,1e39,6\n", {"data.csv:2:3:", "float32"});
  expect("1,2,3\ninf,1,6\n", {"data.csv:2:1:", "label 'inf' is not a finite"});
  expect("1\n2\n", {"data.csv:1:", "only one field", "delimiter ','"});
  expect("", {"data.csv", "no data rows"});
  expect("\n \n", {"data.csv", "no data rows"});
  expect("x,y\n", {"data.csv", "no data rows", "header"});
  TextReadOptions column5;
  column5.label_column = 5;
  expect("1,2,3\n", {"data.csv", "label column 5 does not exist", "3 fields"}, column5);
  TextReadOptions minus2;
  minus2.label_column = -2;
  expect("1,2,3\n", {"data.csv", "label column -2 is invalid"}, minus2);
  // A first line with an empty field is data with a missing value, not a header.
  expect("1,,3\n4,5,6\n", {"data.csv:1:3:", "empty field"});
}

TEST(CsvReader, TestFileLabelsMustBeKnown) {
  TempDir dir;
  LabelMap labels;
  read_csv_text(dir, "y,a\n1,0\n2,0\n", labels, {}, "train.csv");
  expect_input_error([&] { read_csv_text(dir, "y,a\n2,1\n3,1\n", labels, {}, "test.csv"); },
                     {"test.csv:3:1:", "label 3 does not occur in the training file"});
  const Dataset test = read_csv_text(dir, "y,a\n2,1\n1,1\n", labels, {}, "test_ok.csv");
  EXPECT_EQ(test.labels, (std::vector<std::int32_t>{1, 0}));
  EXPECT_EQ(test.classes, 2);
}

TEST(CsvReader, LargeFileParsedInChunksKeepsOrderAndLineNumbers) {
  TempDir dir;
  std::string text = "label,a,b,c,d,e,f,g,h\n";
  const int rows = 80000;
  for (int r = 0; r < rows; ++r) {
    text += std::to_string(r % 4);
    for (int k = 0; k < 8; ++k)
      text += "," + std::to_string(r * 8 + k);
    text += "\n";
  }
  ASSERT_GT(text.size(), 4u << 20);
  LabelMap labels;
  const Dataset data = read_csv_text(dir, text, labels);
  ASSERT_EQ(data.rows, rows);
  ASSERT_EQ(data.cols, 8);
  for (int r = 0; r < rows; r += 1013) {
    EXPECT_EQ(data.labels[r], r % 4);
    for (int k = 0; k < 8; ++k)
      EXPECT_EQ(data.features[r * 8 + k], static_cast<float>(r * 8 + k));
  }
  std::string bad = text;
  bad.insert(bad.rfind('\n', bad.size() - 2) + 1, "1,2\n");  // a short line before the last
  LabelMap fresh;
  expect_input_error([&] { read_csv_text(dir, bad, fresh, {}, "bad.csv"); },
                     {"bad.csv:" + std::to_string(rows + 1) + ":", "expected 9 fields"});
}

// ---------------------------------------------------------------------------------------------
// load_dataset

void write_idx_dir(const TempDir& dir, bool with_test, bool gzip,
                   std::vector<int> test_labels = {0, 1, 2, 2, 0, 1, 0, 1, 0, 1}) {
  const auto write = [&](const std::string& name, const Bytes& bytes) {
    if (gzip)
      write_gz(dir.file(name + ".gz"), bytes);
    else
      write_file(dir.file(name), bytes);
  };
  std::vector<int> train_labels;
  for (int i = 0; i < 40; ++i)
    train_labels.push_back(i % 3);
  write("train-images-idx3-ubyte", idx_images(40, 3, 3));
  write("train-labels-idx1-ubyte", idx_labels(train_labels));
  if (with_test) {
    write("t10k-images-idx3-ubyte", idx_images(10, 3, 3));
    write("t10k-labels-idx1-ubyte", idx_labels(test_labels));
  }
}

TEST(LoadDataset, IdxDirectoryWithTestFiles) {
  TempDir dir;
  write_idx_dir(dir, true, true);
  DataOptions options;
  options.spec = "idx:" + dir.str();
  const TrainTest data = load_dataset(options);
  EXPECT_EQ(data.train.rows, 40);
  EXPECT_EQ(data.test.rows, 10);
  EXPECT_EQ(data.train.cols, 9);
  EXPECT_EQ(data.test.cols, 9);
  EXPECT_EQ(data.train.classes, 3);
  EXPECT_EQ(data.test.classes, 3);
  // kAuto on bytes is kUnit: the training maximum becomes 1.
  const float train_max = *std::max_element(data.train.features.begin(), data.train.features.end());
  EXPECT_EQ(train_max, 1.0f);
  int largest = 0;
  for (int i = 0; i < 40; ++i)
    for (int j = 0; j < 9; ++j)
      largest = std::max(largest, (7 * i + j) % 256);
  EXPECT_EQ(data.train.features[1], 1.0f / static_cast<float>(largest));
  EXPECT_EQ(data.test.features[9 + 2], 9.0f / static_cast<float>(largest));
  EXPECT_EQ(data.train.labels[4], 1);
}

TEST(LoadDataset, IdxTestLabelTheTrainingSetLacksIsRefused) {
  TempDir dir;
  // Training labels 0-2; test row 3 has label 3, which no model trained here can predict.
  write_idx_dir(dir, true, false, {0, 1, 2, 3, 0, 1, 2, 1, 0, 1});
  DataOptions options;
  options.spec = "idx:" + dir.str();
  testing::expect_throw<InputError>(
      [&] { load_dataset(options); },
      {"t10k-images-idx3-ubyte", "row 3 has label 3", "lie in [0, 3)"});
}

TEST(LoadDataset, IdxDirectoryWithoutTestFilesIsSplit) {
  TempDir dir;
  write_idx_dir(dir, false, false);
  DataOptions options;
  options.spec = "idx:" + dir.str();
  options.test_fraction = 0.25;
  options.normalize = Normalize::kNone;
  const TrainTest data = load_dataset(options);
  EXPECT_EQ(data.train.rows, 30);
  EXPECT_EQ(data.test.rows, 10);
  EXPECT_EQ(data.train.classes, 3);
  EXPECT_EQ(data.test.classes, 3);
  // Each row keeps its label: pixel 0 of image i is 7 i mod 256 (distinct for i < 40), and its
  // label is i mod 3. Every image lands in exactly one part.
  std::vector<int> image_of_pixel(256, -1);
  for (int i = 0; i < 40; ++i)
    image_of_pixel[static_cast<std::size_t>(7 * i % 256)] = i;
  std::set<int> images;
  for (const Dataset* set : {&data.train, &data.test})
    for (std::int64_t r = 0; r < set->rows; ++r) {
      const auto pixel = static_cast<std::size_t>(set->features[static_cast<std::size_t>(r * 9)]);
      const int image = image_of_pixel[pixel];
      ASSERT_GE(image, 0);
      EXPECT_EQ(set->labels[static_cast<std::size_t>(r)], image % 3);
      EXPECT_TRUE(images.insert(image).second);
    }
  EXPECT_EQ(images.size(), 40u);
}

TEST(LoadDataset, IdxErrors) {
  TempDir dir;
  DataOptions options;
  options.spec = "idx:" + dir.file("absent");
  expect_input_error([&] { load_dataset(options); }, {dir.file("absent"), "no such directory"});
  options.spec = "idx:" + dir.str();
  expect_input_error([&] { load_dataset(options); },
                     {dir.str(), "train-images-idx3-ubyte[.gz]", "train-labels-idx1-ubyte[.gz]"});
  write_idx_dir(dir, false, false);
  write_file(dir.file("t10k-images-idx3-ubyte"), idx_images(2, 3, 3));
  expect_input_error([&] { load_dataset(options); }, {"t10k-images-idx3-ubyte", "t10k-labels"});
  {
    const ScopedEnv env("ASGD_FASHION_MNIST_DIR", dir.file("nowhere"));
    options.spec = "fashion-mnist";
    expect_input_error([&] { load_dataset(options); },
                       {dir.file("nowhere"), "apt-get install dataset-fashion-mnist"});
  }
}

TEST(LoadDataset, IdxSeparateTestDirectory) {
  TempDir train_dir;
  TempDir test_dir;
  write_idx_dir(train_dir, false, false);
  write_file(test_dir.file("train-images-idx3-ubyte"), idx_images(5, 3, 3));
  write_file(test_dir.file("train-labels-idx1-ubyte"), idx_labels({0, 1, 2, 0, 1}));
  DataOptions options;
  options.spec = "idx:" + train_dir.str();
  options.test_spec = "idx:" + test_dir.str();
  const TrainTest data = load_dataset(options);
  EXPECT_EQ(data.train.rows, 40);
  EXPECT_EQ(data.test.rows, 5);
  write_file(test_dir.file("t10k-images-idx3-ubyte"), idx_images(2, 4, 4));
  write_file(test_dir.file("t10k-labels-idx1-ubyte"), idx_labels({0, 1}));
  expect_input_error([&] { load_dataset(options); }, {"t10k-images", "16 feature(s)", "has 9"});
}

TEST(LoadDataset, SpecErrors) {
  DataOptions options;
  options.spec = "mnist";
  expect_input_error([&] { load_dataset(options); },
                     {"'mnist'", "fashion-mnist, idx:DIR, libsvm:PATH or csv:PATH"});
  options.spec = "hdf5:x.h5";
  expect_input_error([&] { load_dataset(options); }, {"'hdf5:x.h5'", "libsvm:PATH"});
  options.spec = "libsvm:";
  expect_input_error([&] { load_dataset(options); }, {"'libsvm:'", "no path"});
  options.spec = "libsvm:a.svm";
  options.test_spec = "csv:b.csv";
  expect_input_error([&] { load_dataset(options); }, {"csv:b.csv", "CSV", "LIBSVM", "same format"});
  options.test_spec = "";
  for (double bad : {0.0, 1.0, -0.5, std::nan("")}) {
    options.test_fraction = bad;
    expect_input_error([&] { load_dataset(options); }, {"test fraction"});
  }
}

TEST(LoadDataset, LibsvmTrainAndTest) {
  TempDir dir;
  write_file(dir.file("train.svm"), "-1 1:1 2:2\n+1 1:3 2:4 3:6\n-1 3:2\n+1 1:1\n");
  write_file(dir.file("test.svm"), "+1 2:4\n-1 1:3\n");
  DataOptions options;
  options.spec = "libsvm:" + dir.file("train.svm");
  options.test_spec = "libsvm:" + dir.file("test.svm");
  options.normalize = Normalize::kNone;
  const TrainTest data = load_dataset(options);
  EXPECT_EQ(data.train.rows, 4);
  EXPECT_EQ(data.test.rows, 2);
  EXPECT_EQ(data.train.cols, 3);
  EXPECT_EQ(data.test.cols, 3);
  EXPECT_EQ(data.train.classes, 2);
  EXPECT_EQ(data.test.classes, 2);
  EXPECT_EQ(data.test.labels, (std::vector<std::int32_t>{1, 0}));
  EXPECT_EQ(data.test.features, (std::vector<float>{0, 4, 0, 3, 0, 0}));

  write_file(dir.file("test_wide.svm"), "+1 4:1\n");
  options.test_spec = "libsvm:" + dir.file("test_wide.svm");
  expect_input_error([&] { load_dataset(options); },
                     {"test_wide.svm:1:4:", "exceeds the dimension 3"});
  options.libsvm_dim = 5;
  EXPECT_EQ(load_dataset(options).test.cols, 5);
  write_file(dir.file("test_label.svm"), "+1 1:1\n0 1:1\n");
  options.test_spec = "libsvm:" + dir.file("test_label.svm");
  expect_input_error([&] { load_dataset(options); },
                     {"test_label.svm:2:1:", "label 0 does not occur in the training file"});
}

TEST(LoadDataset, CsvSplitAndStandardised) {
  TempDir dir;
  std::string text = "y,a,b\n";
  for (int r = 0; r < 20; ++r)
    text += std::to_string(r % 2) + "," + std::to_string(r) + ",5\n";
  write_file(dir.file("all.csv"), text);
  DataOptions options;
  options.spec = "csv:" + dir.file("all.csv");
  options.test_fraction = 0.2;
  const TrainTest data = load_dataset(options);
  EXPECT_EQ(data.train.rows, 16);
  EXPECT_EQ(data.test.rows, 4);
  EXPECT_EQ(data.train.classes, 2);
  // kAuto on text is kStandard: training columns have mean 0, and the constant one is 0.
  double sum = 0;
  for (std::int64_t r = 0; r < data.train.rows; ++r) {
    sum += data.train.features[static_cast<std::size_t>(2 * r)];
    EXPECT_EQ(data.train.features[static_cast<std::size_t>(2 * r + 1)], 0.0f);
  }
  EXPECT_NEAR(sum, 0.0, 1e-4);
}

TEST(LoadDataset, CsvTestColumnMismatchNamesBothFiles) {
  TempDir dir;
  write_file(dir.file("train.csv"), "1,2,3\n0,4,5\n");
  write_file(dir.file("test.csv"), "1,2\n0,4\n");
  DataOptions options;
  options.spec = "csv:" + dir.file("train.csv");
  options.test_spec = "csv:" + dir.file("test.csv");
  expect_input_error([&] { load_dataset(options); },
                     {dir.file("train.csv"), dir.file("test.csv"), "1 feature(s)", "has 2"});
}

TEST(LoadDataset, ParseNormalizeAndDefaultDirectory) {
  EXPECT_EQ(parse_normalize("auto"), Normalize::kAuto);
  EXPECT_EQ(parse_normalize("none"), Normalize::kNone);
  EXPECT_EQ(parse_normalize("unit"), Normalize::kUnit);
  EXPECT_EQ(parse_normalize("standard"), Normalize::kStandard);
  expect_input_error([] { parse_normalize("zscore"); },
                     {"'zscore'", "auto, none, unit or standard"});
  {
    const ScopedEnv env("ASGD_FASHION_MNIST_DIR", "/somewhere/else");
    EXPECT_EQ(fashion_mnist_dir(), "/somewhere/else");
  }
  {
    const ScopedEnv env("ASGD_FASHION_MNIST_DIR", "");
    EXPECT_EQ(fashion_mnist_dir(), "/usr/share/datasets/fashion-mnist");
  }
}

TEST(LoadDataset, FashionMnist) {
  const ScopedEnv env("ASGD_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist");
  if (find_idx_file(fashion_mnist_dir(), "train-images-idx3-ubyte").empty())
    GTEST_SKIP() << "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)";
  DataOptions options;
  options.spec = "fashion-mnist";
  options.normalize = Normalize::kUnit;
  const TrainTest data = load_dataset(options);
  EXPECT_EQ(data.train.rows, 60000);
  EXPECT_EQ(data.train.cols, 784);
  EXPECT_EQ(data.test.rows, 10000);
  EXPECT_EQ(data.test.cols, 784);
  EXPECT_EQ(data.train.classes, 10);
  EXPECT_EQ(data.test.classes, 10);
  for (const Dataset* set : {&data.train, &data.test}) {
    const auto [lo, hi] = std::minmax_element(set->features.begin(), set->features.end());
    EXPECT_EQ(*lo, 0.0f);
    EXPECT_EQ(*hi, 1.0f);
    std::vector<int> counts(10);
    for (std::int32_t label : set->labels)
      ++counts[static_cast<std::size_t>(label)];
    for (int c : counts)
      EXPECT_EQ(c, set->rows / 10);  // Fashion-MNIST is balanced
  }
}

// ---------------------------------------------------------------------------------------------
// Normalisation

TrainTest tiny_pair() {
  TrainTest data;
  data.train.rows = 2;
  data.train.cols = 2;
  data.train.features = {1, -4, 3, 2};
  data.train.labels = {0, 1};
  data.test.rows = 1;
  data.test.cols = 2;
  data.test.features = {8, 0};
  data.test.labels = {1};
  return data;
}

TEST(Normalize, UnitDividesByTheLargestTrainingMagnitude) {
  TrainTest data = tiny_pair();
  normalize(data, Normalize::kUnit, false);
  EXPECT_EQ(data.train.features, (std::vector<float>{0.25f, -1, 0.75f, 0.5f}));
  EXPECT_EQ(data.test.features, (std::vector<float>{2, 0}));  // test statistics are not used
}

TEST(Normalize, StandardUsesTrainingMeanAndStd) {
  TrainTest data = tiny_pair();
  data.train.features = {1, 5, 3, 5};  // column 0: mean 2, std 1; column 1 is constant 5
  data.test.features = {4, 7};
  normalize(data, Normalize::kStandard, false);
  EXPECT_EQ(data.train.features, (std::vector<float>{-1, 0, 1, 0}));
  EXPECT_EQ(data.test.features, (std::vector<float>{2, 2}));  // the constant column is centred
}

TEST(Normalize, AutoAndNone) {
  TrainTest bytes = tiny_pair();
  normalize(bytes, Normalize::kAuto, true);
  EXPECT_EQ(bytes.train.features, (std::vector<float>{0.25f, -1, 0.75f, 0.5f}));
  TrainTest text = tiny_pair();
  normalize(text, Normalize::kAuto, false);
  EXPECT_EQ(text.train.features, (std::vector<float>{-1, -1, 1, 1}));
  TrainTest none = tiny_pair();
  normalize(none, Normalize::kNone, true);
  EXPECT_EQ(none.train.features, tiny_pair().train.features);
  TrainTest zeros = tiny_pair();
  zeros.train.features = {0, 0, 0, 0};
  normalize(zeros, Normalize::kUnit, false);
  EXPECT_EQ(zeros.train.features, (std::vector<float>{0, 0, 0, 0}));
  EXPECT_EQ(zeros.test.features, (std::vector<float>{8, 0}));
}

TEST(Normalize, StandardMatchesAFloat64ReferenceOnManyColumns) {
  // 150 columns: more than one block of the column-blocked statistics, and a partial one.
  const std::int64_t rows = 97;
  const std::int64_t cols = 150;
  std::mt19937_64 rng(42);
  std::normal_distribution<float> normal(3.0f, 2.0f);
  TrainTest data;
  data.train.rows = rows;
  data.train.cols = cols;
  for (std::int64_t i = 0; i < rows * cols; ++i)
    data.train.features.push_back(normal(rng));
  data.train.labels.assign(static_cast<std::size_t>(rows), 0);
  data.test.rows = 3;
  data.test.cols = cols;
  for (std::int64_t i = 0; i < 3 * cols; ++i)
    data.test.features.push_back(normal(rng));
  data.test.labels.assign(3, 0);
  const TrainTest original = data;
  normalize(data, Normalize::kStandard, false);
  for (std::int64_t c = 0; c < cols; ++c) {
    double mean = 0;
    for (std::int64_t r = 0; r < rows; ++r)
      mean += original.train.features[static_cast<std::size_t>(r * cols + c)];
    mean /= rows;
    double var = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
      const double d = original.train.features[static_cast<std::size_t>(r * cols + c)] - mean;
      var += d * d;
    }
    const double sd = std::sqrt(var / rows);
    for (std::int64_t r = 0; r < rows; r += 13) {
      const auto i = static_cast<std::size_t>(r * cols + c);
      EXPECT_NEAR(data.train.features[i], (original.train.features[i] - mean) / sd, 1e-5);
    }
    for (std::int64_t r = 0; r < 3; ++r) {
      const auto i = static_cast<std::size_t>(r * cols + c);
      EXPECT_NEAR(data.test.features[i], (original.test.features[i] - mean) / sd, 1e-5);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Splitting and sharding

TEST(SplitShard, SplitSizesAndCoverage) {
  const Dataset all = numbered_rows(10);
  const TrainTest data = split_train_test(all, 0.3, 7);
  EXPECT_EQ(data.train.rows, 7);
  EXPECT_EQ(data.test.rows, 3);
  EXPECT_EQ(data.train.cols, 2);
  EXPECT_EQ(data.test.classes, all.classes);
  expect_rows_consistent(data.train);
  expect_rows_consistent(data.test);
  std::multiset<int> seen(data.train.labels.begin(), data.train.labels.end());
  seen.insert(data.test.labels.begin(), data.test.labels.end());
  EXPECT_EQ(seen, (std::multiset<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));

  EXPECT_EQ(split_train_test(all, 0.001, 1).test.rows, 1);   // at least one test row
  EXPECT_EQ(split_train_test(all, 0.999, 1).train.rows, 1);  // at least one training row
  EXPECT_EQ(split_train_test(numbered_rows(2), 0.5, 1).test.rows, 1);
}

TEST(SplitShard, SplitIsDeterministicBySeed) {
  const Dataset all = numbered_rows(1000);
  const TrainTest a = split_train_test(all, 0.1, 123);
  const TrainTest b = split_train_test(all, 0.1, 123);
  const TrainTest c = split_train_test(all, 0.1, 124);
  EXPECT_EQ(a.test.labels, b.test.labels);
  EXPECT_EQ(a.train.labels, b.train.labels);
  EXPECT_NE(a.test.labels, c.test.labels);
  // A shuffle, not the first or last rows.
  std::vector<std::int32_t> sorted = a.test.labels;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_LT(sorted.front(), 900);
  EXPECT_GT(sorted.back(), 100);
}

TEST(SplitShard, SplitRejectsBadInput) {
  const Dataset all = numbered_rows(10);
  for (double bad : {0.0, 1.0, -0.1, 1.5, std::nan(""), std::numeric_limits<double>::infinity()})
    expect_input_error([&] { split_train_test(all, bad, 1); }, {"test fraction"});
  expect_input_error([&] { split_train_test(numbered_rows(1), 0.5, 1); }, {"numbered", "1 row"});
}

TEST(SplitShard, ShardsAreDisjointCompleteAndSeeded) {
  const Dataset all = numbered_rows(10);
  std::vector<int> owner(10, -1);
  const std::vector<std::int64_t> sizes = {4, 3, 3};
  for (int s = 0; s < 3; ++s) {
    const Dataset part = shard(all, s, 3, 7);
    EXPECT_EQ(part.rows, sizes[static_cast<std::size_t>(s)]);
    EXPECT_EQ(part.cols, 2);
    EXPECT_EQ(part.classes, all.classes);
    expect_rows_consistent(part);
    EXPECT_EQ(part.labels, shard(all, s, 3, 7).labels);  // the seed decides
    for (std::int64_t r = 0; r < part.rows; ++r) {
      const int row = part.labels[static_cast<std::size_t>(r)];
      EXPECT_EQ(owner[static_cast<std::size_t>(row)], -1) << "row " << row << " in two shards";
      owner[static_cast<std::size_t>(row)] = s;
    }
  }
  for (int o : owner)
    EXPECT_NE(o, -1);
  EXPECT_NE(shard(all, 0, 3, 7).labels, shard(all, 0, 3, 8).labels);
  const Dataset whole = shard(all, 0, 1, 7);
  std::vector<int> sorted(whole.labels.begin(), whole.labels.end());
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, std::vector<int>(all.labels.begin(), all.labels.end()));
}

TEST(SplitShard, ShardsOfALabelSortedFileSeeEveryLabel) {
  // Rows whose label is row % 4: a strided split into 2 would give each shard two labels.
  Dataset all = numbered_rows(400);
  for (std::int64_t r = 0; r < all.rows; ++r) all.labels[static_cast<std::size_t>(r)] = r % 4;
  all.classes = 4;
  for (int s = 0; s < 2; ++s) {
    const Dataset part = shard(all, s, 2, 1);
    const std::set<int> labels(part.labels.begin(), part.labels.end());
    EXPECT_EQ(labels.size(), 4u);
  }
}

TEST(SplitShard, ShardRejectsBadArguments) {
  const Dataset all = numbered_rows(3);
  expect_input_error([&] { shard(all, 0, 4, 1); }, {"numbered", "3 rows", "4 workers"});
  EXPECT_THROW(shard(all, 3, 3, 1), Error);
  EXPECT_THROW(shard(all, -1, 3, 1), Error);
  EXPECT_THROW(shard(all, 0, 0, 1), Error);
}

// --- Found by the fuzzers (tests/fuzz) ----------------------------------------------------------

// The process's peak resident set in KiB (VmHWM), or -1 where /proc does not say.
std::int64_t peak_rss_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6));
  return -1;
}

// fuzz_idx: a 16-byte file whose header promised gigabytes made the reader allocate and zero
// all of them before it found the file truncated (up to 16 GiB, the header limit).
TEST(IdxReader, TinyFilePromisingGigabytesIsTruncatedWithoutAllocatingThem) {
  TempDir dir;
  const Bytes header = idx_header(0x08, {2, 32768, 32768});  // 2 GiB promised, none there
  write_file(dir.file("images"), header);
  write_gz(dir.file("images.gz"), header);
  write_file(dir.file("labels"), idx_labels({0, 1}));
  std::ofstream("/proc/self/clear_refs") << "5";  // restarts the peak count where Linux allows
  const std::int64_t before = peak_rss_kib();
  for (const char* images : {"images", "images.gz"})
    expect_input_error([&] { read_idx(dir.file(images), dir.file("labels")); },
                       {dir.file(images), "truncated", "promises 2147483648 bytes", "holds 0"});
  if (before > 0) {
    EXPECT_LT(peak_rss_kib() - before, 256 * 1024) << "KiB more peak memory";
  }
}

// fuzz_config: a worker index with no int value ("straggler = \"1e300:2\"") was cast from
// double to int, which is undefined behaviour (UBSan: float-cast-overflow).
TEST(ConfigFile, WorkerIndexWithoutAnIntValueIsRejected) {
  for (const char* text : {"1e300:2", "-1e300:2", "2147483648:2", "nan:2"})
    expect_input_error([&] { parse_straggler(text); }, {"--straggler", "WORKER must be >= 0"});
  for (const char* text : {"1e300:noise", "nan:noise:0.5"})
    expect_input_error([&] { parse_adversary(text); }, {"--adversary", "WORKER must be >= 0"});
  EXPECT_EQ(parse_straggler("2147483647:2").worker, 2147483647);
  EXPECT_EQ(parse_adversary("0.5:negate").worker, 0);  // truncated, as before

  TempDir dir;
  write_file(dir.file("run.toml"), "straggler = \"1e300:2\"\n");
  TrainConfig config;
  expect_input_error([&] { apply_config_file(dir.file("run.toml"), config); }, {"--straggler"});
}

}  // namespace
}  // namespace asgd
