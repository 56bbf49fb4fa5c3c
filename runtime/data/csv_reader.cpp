// Numeric CSV reader. The first non-blank line is parsed alone (it may be a header, and it fixes
// the number of fields); the rest is parsed in chunks of whole lines on all cores.
#include <cstdint>
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

struct Field {
  std::string_view text;  // without surrounding blanks and quotes
  std::int64_t column;    // 1-based, of the field's first character (or its opening quote)
  bool quoted;
};

bool is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\r';
}

// Splits a line into fields. RFC 4180 quoting is understood so that a header such as
// "name, with comma",x counts its fields right; "" inside quotes is kept as written, which
// is fine because such a field can only be a header name, never a number. A space delimiter
// treats runs of blanks as one, as space-aligned files need. Returns false with `error` set.
bool split_fields(std::string_view line, char delimiter, std::vector<Field>& fields,
                  std::int64_t& error_column, std::string& error) {
  fields.clear();
  const bool blank_delimited = delimiter == ' ';
  auto blank = [&](char c) { return c != delimiter && is_blank(c); };
  std::size_t i = 0;
  const std::size_t n = line.size();
  if (blank_delimited) {
    while (i < n && is_blank(line[i]))
      ++i;
  }
  for (;;) {
    while (i < n && blank(line[i]))
      ++i;
    const auto column = static_cast<std::int64_t>(i) + 1;
    if (i < n && line[i] == '"') {
      std::size_t close = i + 1;
      for (;;) {
        close = line.find('"', close);
        if (close == std::string_view::npos) {
          error_column = column;
          error = "unterminated quoted field (fields cannot span lines)";
          return false;
        }
        if (close + 1 < n && line[close + 1] == '"') {
          close += 2;
          continue;
        }
        break;
      }
      fields.push_back({line.substr(i + 1, close - i - 1), column, true});
      i = close + 1;
      while (i < n && blank(line[i]))
        ++i;
      if (i < n && line[i] != delimiter && !(blank_delimited && is_blank(line[i]))) {
        error_column = static_cast<std::int64_t>(i) + 1;
        error = fmt::format("unexpected {} after a closing quote; expected the delimiter",
                            show_token(line.substr(i, 1)));
        return false;
      }
    } else {
      std::size_t end = i;
      if (blank_delimited) {
        while (end < n && !is_blank(line[end]))
          ++end;
      } else {
        end = line.find(delimiter, i);
        if (end == std::string_view::npos) end = n;
      }
      std::size_t trimmed = end;
      while (trimmed > i && is_blank(line[trimmed - 1]))
        --trimmed;
      fields.push_back({line.substr(i, trimmed - i), column, false});
      i = end;
    }
    if (blank_delimited) {
      while (i < n && is_blank(line[i]))
        ++i;
      if (i >= n) return true;
    } else {
      if (i >= n) return true;
      ++i;  // the delimiter; a delimiter at the very end leaves one more, empty field
    }
  }
}

bool is_blank_line(std::string_view line) {
  for (char c : line)
    if (!is_blank(c)) return false;
  return true;
}

std::string_view strip_newline(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

std::string describe_delimiter(char delimiter) {
  if (delimiter == '\t') return "'\\t'";
  return fmt::format("'{}'", delimiter);
}

struct CsvChunk : text_detail::ChunkBase {
  std::vector<double> labels;
  std::vector<float> features;  // rows x (fields - 1)
};

struct Layout {
  std::size_t fields;        // per line
  std::size_t label_column;  // resolved
  std::int64_t first_line;   // 1-based number of the line that fixed `fields`
  char delimiter;
};

// Parses one data line into `out`; false after recording the error.
bool parse_row(std::string_view line, const Layout& layout, const LabelMap& labels,
               std::vector<Field>& fields, CsvChunk& out) {
  std::int64_t error_column = 0;
  std::string error;
  if (!split_fields(line, layout.delimiter, fields, error_column, error)) {
    out.fail(error_column, std::move(error));
    return false;
  }
  if (fields.size() != layout.fields) {
    out.fail(0,
             fmt::format("expected {} fields as on line {}, got {} (delimiter {})", layout.fields,
                         layout.first_line, fields.size(), describe_delimiter(layout.delimiter)));
    return false;
  }
  const std::size_t base = out.features.size();
  out.features.resize(base + layout.fields - 1);
  float* row = out.features.data() + base;
  double label = 0;
  for (std::size_t f = 0; f < fields.size(); ++f) {
    const Field& field = fields[f];
    NumberStatus status;
    if (f == layout.label_column) {
      status = text_detail::parse_double(field.text, label);
    } else {
      status = text_detail::parse_float(field.text, *row++);
    }
    if (status == NumberStatus::kOk) continue;
    const std::string shown =
        field.quoted ? "\"" + std::string(field.text) + "\"" : std::string(field.text);
    if (field.text.empty() && !field.quoted) {
      out.fail(field.column, "expected a number, got an empty field");
    } else if (status == NumberStatus::kNotFinite) {
      out.fail(field.column,
               fmt::format("{} {} is not a finite {}number",
                           f == layout.label_column ? "label" : "value", show_token(shown),
                           f == layout.label_column ? "" : "float32 "));
    } else {
      out.fail(field.column, fmt::format("expected a number, got {}", show_token(shown)));
    }
    return false;
  }
  if (!labels.values.empty() && text_detail::find_label(labels, label) < 0) {
    const Field& field = fields[layout.label_column];
    out.fail(field.column, fmt::format("label {} does not occur in the training file", field.text));
    return false;
  }
  out.labels.push_back(label);
  return true;
}

}  // namespace

Dataset read_csv(const std::string& path, const TextReadOptions& options, LabelMap& labels) {
  if (options.label_column < -1)
    ASGD_INPUT_ERROR("{}: label column {} is invalid: use a 0-based column or -1 for the last",
                     path, options.label_column);
  if (options.delimiter == '"' || options.delimiter == '\n' || options.delimiter == '\r' ||
      options.delimiter == '\0')
    ASGD_INPUT_ERROR("{}: {} cannot be a CSV delimiter", path,
                     show_token(std::string_view(&options.delimiter, 1)));

  const std::string content = text_detail::read_text_file(path);
  std::string_view text = text_detail::strip_bom(content);

  // The first non-blank line.
  std::int64_t line_number = 1;
  std::string_view first;
  for (;;) {
    if (text.empty()) ASGD_INPUT_ERROR("{}: no data rows (the file is empty)", path);
    const std::size_t end = text.find('\n');
    first = strip_newline(text.substr(0, end));
    if (!is_blank_line(first)) break;
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    ++line_number;
  }

  std::vector<Field> fields;
  std::int64_t error_column = 0;
  std::string error;
  if (!split_fields(first, options.delimiter, fields, error_column, error))
    ASGD_INPUT_ERROR("{}:{}:{}: {}", path, line_number, error_column, error);
  bool header = options.header == CsvHeader::kYes;
  if (options.header == CsvHeader::kAuto) {
    // An empty field does not make a header: it is a missing value, reported as such below.
    for (const Field& field : fields) {
      double ignored = 0;
      if (!field.text.empty() &&
          text_detail::parse_double(field.text, ignored) == NumberStatus::kNotNumber) {
        header = true;
        break;
      }
    }
  }
  if (fields.size() < 2)
    ASGD_INPUT_ERROR(
        "{}:{}: only one field, but a label column and at least one feature column "
        "are needed; is the delimiter {} right?",
        path, line_number, describe_delimiter(options.delimiter));
  const Layout layout{
      fields.size(),
      options.label_column < 0 ? fields.size() - 1 : static_cast<std::size_t>(options.label_column),
      line_number, options.delimiter};
  if (layout.label_column >= layout.fields)
    ASGD_INPUT_ERROR(
        "{}: label column {} does not exist: line {} has {} fields (columns are "
        "0-based; -1 is the last)",
        path, options.label_column, line_number, layout.fields);

  std::int64_t data_first_line = line_number;
  if (header) {
    const std::size_t end = text.find('\n');
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    ++data_first_line;
  }

  std::vector<CsvChunk> chunks = text_detail::parse_in_chunks<CsvChunk>(
      path, text, data_first_line, [&](std::string_view piece, CsvChunk& chunk) {
        std::vector<Field> row_fields;
        std::size_t begin = 0;
        while (begin < piece.size()) {
          std::size_t end = piece.find('\n', begin);
          if (end == std::string_view::npos) end = piece.size();
          const std::string_view line = strip_newline(piece.substr(begin, end - begin));
          if (!is_blank_line(line) && !parse_row(line, layout, labels, row_fields, chunk)) return;
          ++chunk.lines;
          begin = end + 1;
        }
      });

  std::vector<std::int64_t> row_base(chunks.size() + 1, 0);
  for (std::size_t i = 0; i < chunks.size(); ++i)
    row_base[i + 1] = row_base[i] + static_cast<std::int64_t>(chunks[i].labels.size());
  const std::int64_t rows = row_base.back();
  if (rows == 0) ASGD_INPUT_ERROR("{}: no data rows (only a header)", path);

  Dataset data;
  data.source = path;
  data.rows = rows;
  data.cols = static_cast<std::int64_t>(layout.fields) - 1;
  data.features = text_detail::allocate_dense(path, rows, data.cols);
  std::vector<double> label_values;
  label_values.reserve(static_cast<std::size_t>(rows));
  for (const CsvChunk& chunk : chunks)
    label_values.insert(label_values.end(), chunk.labels.begin(), chunk.labels.end());
  const auto n_chunks = static_cast<std::int64_t>(chunks.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (std::int64_t c = 0; c < n_chunks; ++c) {
    const CsvChunk& chunk = chunks[static_cast<std::size_t>(c)];
    std::copy(chunk.features.begin(), chunk.features.end(),
              data.features.begin() + row_base[static_cast<std::size_t>(c)] * data.cols);
  }
  chunks.clear();

  data.label_problem = text_detail::label_problem(label_values);
  data.labels = text_detail::map_labels(label_values, labels);
  data.classes = static_cast<std::int32_t>(labels.values.size());
  return data;
}

}  // namespace asgd
