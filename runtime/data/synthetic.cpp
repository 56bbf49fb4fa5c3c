#include "runtime/data/synthetic.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>

#include "runtime/error.h"
#include "runtime/random.h"

namespace asgd {
namespace {

constexpr std::int64_t kMaxValues = std::int64_t{1} << 31;
constexpr double kCentreRange = 10.0;
// Points are generated in blocks of rows, each from its own generator, so that threads can
// share the work and the result does not depend on how many there are.
constexpr std::int64_t kBlockRows = 4096;

std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Seeds for the independent generators (centres, labels, each block of points) of one data
// set. Feeding `seed` itself to all of them would correlate them, and the split's generator
// is seeded with the same user seed.
std::uint64_t stream_seed(std::uint64_t seed, std::uint64_t stream) {
  return splitmix64(splitmix64(seed) + stream * 0x9e3779b97f4a7c15ull);
}

// The distributions are written out because the standard library's are not specified exactly:
// the data for a seed would differ between libstdc++ and libc++ (uniform01 is in
// runtime/random.h).

// Standard normal deviates by Box-Muller, two per draw of two uniforms.
class Normal {
 public:
  double operator()(std::mt19937_64& rng) {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    constexpr double kTwoPi = 6.283185307179586476925286766559;
    const double radius = std::sqrt(-2.0 * std::log(1.0 - uniform01(rng)));  // log of (0, 1]
    const double angle = kTwoPi * uniform01(rng);
    spare_ = radius * std::sin(angle);
    has_spare_ = true;
    return radius * std::cos(angle);
  }

 private:
  double spare_ = 0.0;
  bool has_spare_ = false;
};

}  // namespace

Dataset make_blobs(std::int64_t n, std::int64_t d, std::int32_t k, std::uint64_t seed,
                   std::vector<float>* centres) {
  if (n < 1 || d < 1 || k < 1)
    ASGD_INPUT_ERROR("blobs: {} points in {} dimensions from {} blobs; all three must be positive",
                     n, d, k);
  if (k > n)
    ASGD_INPUT_ERROR("blobs: {} blobs need at least one point each, but there are {} points", k, n);
  // Each point costs its d features and its label.
  if (d + 1 > kMaxValues / n)
    ASGD_INPUT_ERROR(
        "blobs: {} points x ({} dimensions + a label) is more than the {} values a generated "
        "set may hold",
        n, d, kMaxValues);

  Dataset out;
  out.source = fmt::format("blobs:{},{},{}", n, d, k);
  out.rows = n;
  out.cols = d;
  out.classes = k;

  std::vector<float> mean(static_cast<std::size_t>(k) * static_cast<std::size_t>(d));
  {
    std::mt19937_64 rng(stream_seed(seed, 0));
    for (float& v : mean)
      v = static_cast<float>(kCentreRange * (2.0 * uniform01(rng) - 1.0));
  }

  // Balanced labels, then a Fisher-Yates shuffle; shuffling the labels before drawing the
  // points is the same as drawing them in order and shuffling the rows, without moving rows.
  out.labels.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    out.labels[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i % k);
  {
    std::mt19937_64 rng(stream_seed(seed, 1));
    portable_shuffle(out.labels.data(), n, rng);
  }

  out.features.resize(static_cast<std::size_t>(n * d));
  const std::int64_t blocks = (n + kBlockRows - 1) / kBlockRows;
#pragma omp parallel for schedule(dynamic, 1)
  for (std::int64_t b = 0; b < blocks; ++b) {
    std::mt19937_64 rng(stream_seed(seed, 2 + static_cast<std::uint64_t>(b)));
    Normal normal;
    const std::int64_t r1 = std::min(n, (b + 1) * kBlockRows);
    for (std::int64_t r = b * kBlockRows; r < r1; ++r) {
      const float* centre = mean.data() + out.labels[static_cast<std::size_t>(r)] * d;
      float* row = out.features.data() + r * d;
      for (std::int64_t c = 0; c < d; ++c)
        row[c] = static_cast<float>(centre[c] + normal(rng));
    }
  }
  if (centres) *centres = std::move(mean);
  return out;
}

}  // namespace asgd
