// Internal: the pieces the LIBSVM and CSV readers share: reading a file whole, parsing numbers,
// quoting bad input for messages, and parsing a text in chunks of whole lines on all cores
// while still reporting errors with absolute line numbers.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "runtime/data/text_formats.h"
#include "runtime/error.h"

namespace asgd::text_detail {

// Reads a whole file into memory; InputError for a missing, unreadable or directory path.
inline std::string read_text_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) ASGD_INPUT_ERROR("{}: no such file", path);
  if (std::filesystem::is_directory(path, ec))
    ASGD_INPUT_ERROR("{}: is a directory, expected a data file", path);
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) ASGD_INPUT_ERROR("{}: cannot open: {}", path, std::strerror(errno));
  std::string text;
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec) text.reserve(static_cast<std::size_t>(size));
  // Read in blocks rather than trusting file_size: pipes and /proc files report 0. Those have
  // no size to check against memory, and some never end (/dev/zero): they are read up to a cap.
  const bool regular = std::filesystem::is_regular_file(path, ec);
  constexpr std::size_t kMaxStreamBytes = std::size_t{1} << 32;
  char block[1 << 16];
  std::size_t got = 0;
  while ((got = std::fread(block, 1, sizeof(block), file)) > 0) {
    text.append(block, got);
    if (!regular && text.size() > kMaxStreamBytes) {
      std::fclose(file);
      ASGD_INPUT_ERROR(
          "{}: not a regular file, and more than {} GiB came out of it; save the "
          "data to a file and load that",
          path, kMaxStreamBytes >> 30);
    }
  }
  const bool failed = std::ferror(file) != 0;
  const int read_errno = errno;
  std::fclose(file);
  if (failed) ASGD_INPUT_ERROR("{}: read error: {}", path, std::strerror(read_errno));
  return text;
}

// Skips a UTF-8 byte order mark, which spreadsheet exports put in front of CSV files.
inline std::string_view strip_bom(std::string_view text) {
  if (text.size() >= 3 && text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.remove_prefix(3);
  return text;
}

// A token as it appears in messages: quoted, at most 32 characters, control bytes escaped, so
// that a binary file passed by mistake yields a readable one-line message.
inline std::string show_token(std::string_view token) {
  constexpr std::size_t kMax = 32;
  std::string out = "'";
  for (std::size_t i = 0; i < token.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(token[i]);
    if (c < 0x20 || c == 0x7f)
      out += fmt::format("\\x{:02x}", c);
    else
      out += static_cast<char>(c);
  }
  if (token.size() > kMax) out += "...";
  out += "'";
  return out;
}

enum class NumberStatus { kOk, kNotNumber, kNotFinite };

// Parses the whole of `token` as a number; a leading '+' is accepted (from_chars refuses it).
// kNotFinite covers "nan", "inf" and values beyond the double range.
inline NumberStatus parse_double(std::string_view token, double& out) {
  const char* first = token.data();
  const char* last = first + token.size();
  if (first != last && *first == '+' && last - first > 1 && first[1] != '-' && first[1] != '+')
    ++first;
  if (first == last) return NumberStatus::kNotNumber;
  const auto [ptr, ec] = std::from_chars(first, last, out, std::chars_format::general);
  if (ec == std::errc::result_out_of_range && ptr == last) {
    // Either an overflow or an underflow; strtod tells them apart (an underflow is a number).
    const std::string copy(first, last);
    out = std::strtod(copy.c_str(), nullptr);
    return std::isfinite(out) ? NumberStatus::kOk : NumberStatus::kNotFinite;
  }
  if (ec != std::errc() || ptr != last) return NumberStatus::kNotNumber;
  return std::isfinite(out) ? NumberStatus::kOk : NumberStatus::kNotFinite;
}

// As parse_double, and the value must also be finite as a float32.
inline NumberStatus parse_float(std::string_view token, float& out) {
  double value = 0;
  const NumberStatus status = parse_double(token, value);
  if (status != NumberStatus::kOk) return status;
  if (std::fabs(value) > static_cast<double>(std::numeric_limits<float>::max()))
    return NumberStatus::kNotFinite;
  out = static_cast<float>(value);
  return NumberStatus::kOk;
}

// Index of `label` in the sorted map, or -1.
inline std::int32_t find_label(const LabelMap& labels, double label) {
  const auto it = std::lower_bound(labels.values.begin(), labels.values.end(), label);
  if (it == labels.values.end() || *it != label) return -1;
  return static_cast<std::int32_t>(it - labels.values.begin());
}

// The first problem in a chunk. `line` counts from 0 at the chunk's first line; `column` is
// 1-based, in bytes, or 0 when the message is about the whole line.
struct LineError {
  bool failed = false;
  std::int64_t line = 0;
  std::int64_t column = 0;
  std::string message;
};

// What every chunk reports besides its data: how many lines it consumed (all of them unless it
// failed), and its first error.
struct ChunkBase {
  std::int64_t lines = 0;
  LineError error;
  void fail(std::int64_t column, std::string message) {
    error.failed = true;
    error.line = lines;
    error.column = column;
    error.message = std::move(message);
  }
};

// Cuts `text` into pieces that each end just after a '\n' (the last piece excepted), enough of
// them to keep every thread busy but none smaller than ~1 MiB.
inline std::vector<std::string_view> split_into_chunks(std::string_view text) {
  constexpr std::size_t kMinChunk = std::size_t{1} << 20;
  const std::size_t wanted = static_cast<std::size_t>(std::max(1, omp_get_max_threads())) * 4;
  const std::size_t count = std::max<std::size_t>(1, std::min(wanted, text.size() / kMinChunk));
  const std::size_t step = text.size() / count + 1;
  std::vector<std::string_view> chunks;
  std::size_t begin = 0;
  while (begin < text.size()) {
    std::size_t end = std::min(text.size(), begin + step);
    if (end < text.size()) {
      const std::size_t newline = text.find('\n', end - 1);
      end = newline == std::string_view::npos ? text.size() : newline + 1;
    }
    chunks.push_back(text.substr(begin, end - begin));
    begin = end;
  }
  return chunks;
}

// Runs `parse(chunk_text, chunk)` on every chunk in parallel; `Chunk` derives from ChunkBase.
// Throws the error of the earliest failing chunk as "path:line:column: message", with
// `first_line` the 1-based number of the text's first line.
template <class Chunk, class Parse>
std::vector<Chunk> parse_in_chunks(const std::string& path, std::string_view text,
                                   std::int64_t first_line, Parse&& parse) {
  const std::vector<std::string_view> pieces = split_into_chunks(text);
  std::vector<Chunk> chunks(pieces.size());
  std::vector<std::exception_ptr> thrown(pieces.size());
  const auto n = static_cast<std::int64_t>(pieces.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (std::int64_t i = 0; i < n; ++i) {
    try {
      parse(pieces[static_cast<std::size_t>(i)], chunks[static_cast<std::size_t>(i)]);
    } catch (...) {
      thrown[static_cast<std::size_t>(i)] = std::current_exception();
    }
  }
  std::int64_t line = first_line;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    if (thrown[i]) std::rethrow_exception(thrown[i]);
    const LineError& error = chunks[i].error;
    if (error.failed) {
      if (error.column > 0)
        ASGD_INPUT_ERROR("{}:{}:{}: {}", path, line + error.line, error.column, error.message);
      ASGD_INPUT_ERROR("{}:{}: {}", path, line + error.line, error.message);
    }
    line += chunks[i].lines;
  }
  return chunks;
}

// Allocates rows x cols floats, turning an impossible size into an InputError that says why.
inline std::vector<float> allocate_dense(const std::string& path, std::int64_t rows,
                                         std::int64_t cols) {
  const double gib = static_cast<double>(rows) * static_cast<double>(cols) * 4.0 / (1 << 30);
  if (cols > 0 && rows > std::numeric_limits<std::int64_t>::max() / cols)
    ASGD_INPUT_ERROR("{}: {} rows x {} features is too large to store densely", path, rows, cols);
  try {
    return std::vector<float>(static_cast<std::size_t>(rows * cols));
  } catch (const std::bad_alloc&) {
    ASGD_INPUT_ERROR(
        "{}: storing {} rows x {} features densely needs {:.1f} GiB, more than "
        "can be allocated",
        path, rows, cols, gib);
  } catch (const std::length_error&) {
    ASGD_INPUT_ERROR(
        "{}: storing {} rows x {} features densely needs {:.1f} GiB, more than "
        "can be allocated",
        path, rows, cols, gib);
  }
}

// Dataset::label_problem for label values as read: the first that is not a whole number.
inline std::string label_problem(const std::vector<double>& values) {
  for (std::size_t i = 0; i < values.size(); ++i)
    if (values[i] != std::nearbyint(values[i]))
      return fmt::format("data row {} has the label {}", i + 1, values[i]);
  return {};
}

// Fills `labels` from the distinct values when it is empty, then maps every value to its class.
inline std::vector<std::int32_t> map_labels(const std::vector<double>& values, LabelMap& labels) {
  if (labels.values.empty()) {
    labels.values = values;
    std::sort(labels.values.begin(), labels.values.end());
    labels.values.erase(std::unique(labels.values.begin(), labels.values.end()),
                        labels.values.end());
  }
  std::vector<std::int32_t> classes(values.size());
  const auto n = static_cast<std::int64_t>(values.size());
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i)
    classes[static_cast<std::size_t>(i)] = find_label(labels, values[static_cast<std::size_t>(i)]);
  return classes;
}

}  // namespace asgd::text_detail
