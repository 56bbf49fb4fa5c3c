// IDX reader. zlib's gz* functions read gzip and plain files alike, so one code path serves
// both; the payload is read whole and converted to float afterwards.
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "runtime/data/dataset.h"
#include "runtime/data/idx.h"
#include "runtime/error.h"

namespace asgd {
namespace {

constexpr unsigned kTypeUnsignedByte = 0x08;
// Far above any IDX data set in use (Fashion-MNIST: 47 MB), far below what would overflow.
constexpr std::uint64_t kMaxPayloadBytes = std::uint64_t{1} << 34;
constexpr std::uint64_t kFirstPayloadBlock = std::uint64_t{1} << 20;

std::filesystem::path comparable_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::path result = std::filesystem::weakly_canonical(dir, ec);
  if (ec) result = dir.lexically_normal();
  if (!result.has_filename()) result = result.parent_path();  // drop a trailing separator
  return result;
}

// The hint for a missing file: the Debian package when the directory is the default one.
std::string missing_hint(const std::string& path) {
  if (comparable_dir(std::filesystem::path(path).parent_path()) !=
      comparable_dir(fashion_mnist_dir()))
    return "";
  return "; install it with `apt-get install dataset-fashion-mnist` or set "
         "ASGD_FASHION_MNIST_DIR to a directory that holds it";
}

class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
      ASGD_INPUT_ERROR("{}: no such file{}", path, missing_hint(path));
    if (std::filesystem::is_directory(path, ec))
      ASGD_INPUT_ERROR("{}: is a directory, expected an IDX file", path);
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr) ASGD_INPUT_ERROR("{}: cannot open: {}", path, std::strerror(errno));
    gzbuffer(file_, 1 << 20);
  }
  ~GzFile() {
    if (file_ != nullptr) gzclose_r(file_);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  // Reads up to `size` bytes; fewer only at the end of the data. Corrupt compressed data is an
  // InputError; a gzip stream cut short counts as the end (the caller reports the truncation).
  std::uint64_t read(unsigned char* out, std::uint64_t size) {
    std::uint64_t done = 0;
    while (done < size) {
      const auto want = static_cast<unsigned>(std::min<std::uint64_t>(size - done, 1u << 30));
      const int got = gzread(file_, out + done, want);
      if (got < 0) fail();
      done += static_cast<std::uint64_t>(got);
      if (static_cast<unsigned>(got) < want) {
        int status = Z_OK;
        gzerror(file_, &status);
        if (status != Z_OK && status != Z_BUF_ERROR) fail();
        break;
      }
    }
    return done;
  }

  const std::string& path() const { return path_; }

 private:
  [[noreturn]] void fail() {
    int status = Z_OK;
    const char* message = gzerror(file_, &status);
    if (status == Z_ERRNO) ASGD_INPUT_ERROR("{}: read error: {}", path_, std::strerror(errno));
    ASGD_INPUT_ERROR("{}: corrupt gzip data ({})", path_, message);
  }

  std::string path_;
  gzFile file_ = nullptr;
};

std::uint32_t big_endian(const unsigned char* bytes) {
  return (std::uint32_t{bytes[0]} << 24) | (std::uint32_t{bytes[1]} << 16) |
         (std::uint32_t{bytes[2]} << 8) | std::uint32_t{bytes[3]};
}

struct IdxFile {
  std::vector<std::uint32_t> dims;
  std::vector<unsigned char> payload;
};

// Reads an unsigned-byte IDX file whose number of dimensions is one of `allowed_dims`; `kind`
// ("image", "label") names it in messages.
IdxFile read_idx_file(const std::string& path, const std::vector<unsigned>& allowed_dims,
                      const char* kind) {
  GzFile file(path);
  unsigned char magic[4] = {};
  const std::uint64_t got = file.read(magic, 4);
  if (got < 4)
    ASGD_INPUT_ERROR("{}: not an IDX file: {} bytes, shorter than the 4-byte header", path, got);
  const unsigned type = magic[2];
  const unsigned ndims = magic[3];
  if (magic[0] != 0 || magic[1] != 0 || ndims == 0 || ndims > 4)
    ASGD_INPUT_ERROR("{}: not an IDX file (magic number 0x{:02x}{:02x}{:02x}{:02x})", path,
                     magic[0], magic[1], magic[2], magic[3]);
  if (type != kTypeUnsignedByte)
    ASGD_INPUT_ERROR(
        "{}: IDX element type 0x{:02x} is not supported; only unsigned bytes "
        "(0x08) are",
        path, type);
  if (std::find(allowed_dims.begin(), allowed_dims.end(), ndims) == allowed_dims.end()) {
    const bool images = allowed_dims.front() != 1;
    ASGD_INPUT_ERROR(
        "{}: expected an IDX {} file ({}), got magic 0x{:08x}, a {}-dimensional "
        "array{}",
        path, kind, images ? "magic 0x00000803 or 0x00000802" : "magic 0x00000801",
        big_endian(magic), ndims,
        ndims == 1   ? " (a label file?)"
        : ndims == 3 ? " (an image file?)"
                     : "");
  }

  unsigned char raw_dims[16] = {};
  const std::uint64_t got_dims = file.read(raw_dims, 4 * ndims);
  if (got_dims < 4 * ndims)
    ASGD_INPUT_ERROR("{}: truncated IDX header: expected {} bytes of dimensions, got {}", path,
                     4 * ndims, got_dims);
  IdxFile idx;
  std::uint64_t bytes = 1;
  for (unsigned d = 0; d < ndims; ++d) {
    const std::uint32_t size = big_endian(raw_dims + 4 * d);
    if (size == 0) ASGD_INPUT_ERROR("{}: dimension {} of the IDX header is 0", path, d + 1);
    // Both factors are below 2^34 here, so the product cannot overflow 64 bits.
    bytes *= size;
    if (bytes > kMaxPayloadBytes)
      ASGD_INPUT_ERROR(
          "{}: the IDX header describes more than {} GiB of data; the header is "
          "corrupt or the file is not supported",
          path, kMaxPayloadBytes >> 30);
    idx.dims.push_back(size);
  }

  // The header's size is only a claim: the buffer grows with the data that arrives, so that a
  // few corrupt header bytes cannot make a tiny file cost up to kMaxPayloadBytes of memory.
  std::uint64_t got_payload = 0;
  while (got_payload < bytes) {
    const std::uint64_t capacity = std::min(bytes, std::max(kFirstPayloadBlock, 2 * got_payload));
    idx.payload.resize(capacity);
    got_payload += file.read(idx.payload.data() + got_payload, capacity - got_payload);
    if (got_payload < capacity) break;
  }
  if (got_payload < bytes)
    ASGD_INPUT_ERROR("{}: truncated: the header promises {} bytes of data, the file holds {}", path,
                     bytes, got_payload);
  unsigned char extra = 0;
  if (file.read(&extra, 1) != 0)
    ASGD_INPUT_ERROR(
        "{}: {} bytes of data as the header says, then unexpected trailing bytes; "
        "the file is corrupt or not an IDX {} file",
        path, bytes, kind);
  return idx;
}

}  // namespace

Dataset read_idx(const std::string& images_path, const std::string& labels_path) {
  IdxFile images = read_idx_file(images_path, {3, 2}, "image");
  const IdxFile labels = read_idx_file(labels_path, {1}, "label");
  const std::uint32_t rows = images.dims[0];
  if (labels.dims[0] != rows)
    ASGD_INPUT_ERROR("{} holds {} labels but {} holds {} images", labels_path, labels.dims[0],
                     images_path, rows);

  Dataset data;
  data.source = images_path;
  data.rows = rows;
  data.cols = 1;
  for (std::size_t d = 1; d < images.dims.size(); ++d)
    data.cols *= images.dims[d];
  data.features.resize(images.payload.size());
  const auto n = static_cast<std::int64_t>(images.payload.size());
  const unsigned char* in = images.payload.data();
  float* out = data.features.data();
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i)
    out[i] = static_cast<float>(in[i]);
  images.payload = {};

  data.labels.assign(labels.payload.begin(), labels.payload.end());
  const unsigned char max_label = *std::max_element(labels.payload.begin(), labels.payload.end());
  data.classes = static_cast<std::int32_t>(max_label) + 1;
  return data;
}

std::string find_idx_file(const std::string& dir, const std::string& stem) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const fs::path& candidate : {fs::path(dir) / stem, fs::path(dir) / (stem + ".gz")})
    if (fs::is_regular_file(candidate, ec)) return candidate.string();
  return "";
}

}  // namespace asgd
