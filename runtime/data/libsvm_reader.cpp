// LIBSVM/SVMlight reader. The text is parsed in chunks of whole lines on all cores into sparse
// (row, index, value) triples; only once every chunk has succeeded are the dimension and the
// classes known, and the dense matrix is filled.
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/data/detail/text_parse.h"
#include "runtime/data/text_formats.h"
#include "runtime/error.h"

namespace asgd {
namespace {

using text_detail::NumberStatus;
using text_detail::show_token;

struct LibsvmChunk : text_detail::ChunkBase {
  std::vector<double> labels;         // one per row
  std::vector<std::int64_t> row_end;  // one past the row's last entry in index/value
  std::vector<std::int32_t> index;    // 0-based feature
  std::vector<float> value;
  std::int64_t max_index = 0;  // largest 1-based index seen
};

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

struct Limits {
  std::int64_t limit;  // largest allowed 1-based index
  bool fixed;          // the limit is a fixed dimension rather than max_dim
};

// Parses one line (without its '\n'); false after recording an error in `out`.
bool parse_line(std::string_view line, const Limits& limits, const LabelMap& labels,
                LibsvmChunk& out) {
  const char* const start = line.data();
  const char* end = start + line.size();
  if (const void* hash = std::memchr(start, '#', line.size())) end = static_cast<const char*>(hash);
  const char* p = start;
  auto column = [&](const char* at) { return static_cast<std::int64_t>(at - start) + 1; };
  auto next_token = [&]() {
    while (p != end && is_space(*p))
      ++p;
    const char* token_begin = p;
    while (p != end && !is_space(*p))
      ++p;
    return std::string_view(token_begin, static_cast<std::size_t>(p - token_begin));
  };

  std::string_view token = next_token();
  if (token.empty()) return true;  // blank or comment-only line

  double label = 0;
  switch (text_detail::parse_double(token, label)) {
    case NumberStatus::kOk:
      break;
    case NumberStatus::kNotFinite:
      out.fail(column(token.data()),
               fmt::format("label {} is not a finite number", show_token(token)));
      return false;
    case NumberStatus::kNotNumber:
      out.fail(column(token.data()),
               fmt::format("expected a label (a number) at the start of the line, got {}",
                           show_token(token)));
      return false;
  }
  if (!labels.values.empty() && text_detail::find_label(labels, label) < 0) {
    out.fail(column(token.data()),
             fmt::format("label {} does not occur in the training file", token));
    return false;
  }

  std::int64_t previous = 0;
  for (token = next_token(); !token.empty(); token = next_token()) {
    const std::size_t colon = token.find(':');
    if (colon == std::string_view::npos) {
      out.fail(column(token.data()),
               fmt::format("expected '<index>:<value>', got {}", show_token(token)));
      return false;
    }
    const std::string_view index_text = token.substr(0, colon);
    const std::string_view value_text = token.substr(colon + 1);
    if (index_text == "qid") continue;  // SVMrank query ids say nothing about the features

    std::int64_t index = 0;
    const auto [ptr, ec] =
        std::from_chars(index_text.data(), index_text.data() + index_text.size(), index);
    const bool all_digits = ptr == index_text.data() + index_text.size();
    if (index_text.empty() || !all_digits ||
        (ec != std::errc() && ec != std::errc::result_out_of_range)) {
      out.fail(column(token.data()),
               fmt::format("expected '<index>:<value>' with an integer index, got {}",
                           show_token(token)));
      return false;
    }
    if (ec == std::errc::result_out_of_range) index = std::numeric_limits<std::int64_t>::max();
    if (index < 1) {
      out.fail(column(token.data()),
               fmt::format("feature index {} is invalid: LIBSVM indices start at 1", index_text));
      return false;
    }
    if (index <= previous) {
      out.fail(column(token.data()),
               fmt::format("feature index {} follows index {}: indices must be strictly "
                           "increasing within a row",
                           index, previous));
      return false;
    }
    if (index > limits.limit) {
      out.fail(column(token.data()),
               limits.fixed
                   ? fmt::format("feature index {} exceeds the dimension {} (set by "
                                 "--libsvm-dim or by the training file); pass --libsvm-dim to "
                                 "raise it",
                                 index_text, limits.limit)
                   : fmt::format("feature index {} exceeds the limit of {} features; pass "
                                 "--libsvm-max-dim to raise it",
                                 index_text, limits.limit));
      return false;
    }
    float value = 0;
    switch (text_detail::parse_float(value_text, value)) {
      case NumberStatus::kOk:
        break;
      case NumberStatus::kNotFinite:
        out.fail(column(value_text.data()),
                 fmt::format("value {} of feature {} is not a finite float32 number",
                             show_token(value_text), index));
        return false;
      case NumberStatus::kNotNumber:
        out.fail(column(value_text.data()), fmt::format("expected a number after '{}:', got {}",
                                                        index, show_token(value_text)));
        return false;
    }
    previous = index;
    // Explicit zeros cost nothing in dense storage; keeping them still raises max_index, so the
    // inferred dimension matches what the file names.
    out.index.push_back(static_cast<std::int32_t>(index - 1));
    out.value.push_back(value);
  }
  out.max_index = std::max(out.max_index, previous);
  out.labels.push_back(label);
  out.row_end.push_back(static_cast<std::int64_t>(out.index.size()));
  return true;
}

}  // namespace

Dataset read_libsvm(const std::string& path, const TextReadOptions& options, LabelMap& labels) {
  constexpr std::int64_t kIndexLimit = std::numeric_limits<std::int32_t>::max();
  if (options.dim < 0)
    ASGD_INPUT_ERROR("{}: the LIBSVM dimension (--libsvm-dim) must be >= 0, got {}", path,
                     options.dim);
  if (options.dim == 0 && options.max_dim < 1)
    ASGD_INPUT_ERROR("{}: the LIBSVM feature limit (--libsvm-max-dim) must be >= 1, got {}", path,
                     options.max_dim);
  const Limits limits{std::min(kIndexLimit, options.dim > 0 ? options.dim : options.max_dim),
                      options.dim > 0};

  const std::string content = text_detail::read_text_file(path);
  const std::string_view text = text_detail::strip_bom(content);
  std::vector<LibsvmChunk> chunks = text_detail::parse_in_chunks<LibsvmChunk>(
      path, text, 1, [&](std::string_view piece, LibsvmChunk& chunk) {
        std::size_t begin = 0;
        while (begin < piece.size()) {
          std::size_t end = piece.find('\n', begin);
          if (end == std::string_view::npos) end = piece.size();
          if (!parse_line(piece.substr(begin, end - begin), limits, labels, chunk)) return;
          ++chunk.lines;
          begin = end + 1;
        }
      });

  std::vector<std::int64_t> row_base(chunks.size() + 1, 0);
  std::int64_t dim = options.dim;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    row_base[i + 1] = row_base[i] + static_cast<std::int64_t>(chunks[i].labels.size());
    if (options.dim == 0) dim = std::max(dim, chunks[i].max_index);
  }
  const std::int64_t rows = row_base.back();
  if (rows == 0)
    ASGD_INPUT_ERROR("{}: no data rows (the file is empty or holds only comments)", path);
  if (dim == 0)
    ASGD_INPUT_ERROR(
        "{}: no row has any feature, so the dimension cannot be inferred; pass "
        "--libsvm-dim",
        path);

  Dataset data;
  data.source = path;
  data.rows = rows;
  data.cols = dim;
  data.features = text_detail::allocate_dense(path, rows, dim);
  std::vector<double> label_values;
  label_values.reserve(static_cast<std::size_t>(rows));
  for (const LibsvmChunk& chunk : chunks)
    label_values.insert(label_values.end(), chunk.labels.begin(), chunk.labels.end());

  const auto n_chunks = static_cast<std::int64_t>(chunks.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (std::int64_t c = 0; c < n_chunks; ++c) {
    const LibsvmChunk& chunk = chunks[static_cast<std::size_t>(c)];
    std::int64_t entry = 0;
    for (std::size_t r = 0; r < chunk.row_end.size(); ++r) {
      float* row = data.features.data() +
                   (row_base[static_cast<std::size_t>(c)] + static_cast<std::int64_t>(r)) * dim;
      for (; entry < chunk.row_end[r]; ++entry)
        row[chunk.index[static_cast<std::size_t>(entry)]] =
            chunk.value[static_cast<std::size_t>(entry)];
    }
  }
  chunks.clear();

  data.label_problem = text_detail::label_problem(label_values);
  data.labels = text_detail::map_labels(label_values, labels);
  data.classes = static_cast<std::int32_t>(labels.values.size());
  return data;
}

}  // namespace asgd
