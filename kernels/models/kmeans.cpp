#include "kernels/models/kmeans.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <unordered_map>

#include <xxhash.h>

#include "kernels/gemm.h"
#include "kernels/kmeans.h"
#include "runtime/error.h"
#include "runtime/random.h"

namespace asgd {
namespace {
// Candidate values kept for init() when the training set is larger: 16 MiB of floats, enough
// for thousands of rows of MNIST-sized data, small beside a worker's shard.
constexpr std::int64_t kCandidateValues = std::int64_t{1} << 22;
// At least this many candidates per centre, whatever the dimension, so that different seeds
// still give different starts.
constexpr std::int64_t kCandidatesPerCentre = 4;
// k-means++ seeds from at most this many values of the candidates, but from at least this many
// rows per centre where there are as many.
constexpr std::int64_t kSeedingValues = std::int64_t{1} << 16;
constexpr std::int64_t kSeedingRowsPerCentre = 32;

double squared_distance(const float* a, const float* b, std::int64_t dim) {
  double s = 0;
  for (std::int64_t c = 0; c < dim; ++c) {
    const double d = static_cast<double>(a[c]) - static_cast<double>(b[c]);
    s += d * d;
  }
  return s;
}

}  // namespace

KMeans::KMeans(std::int64_t clusters, std::int64_t dim, std::int64_t max_batch, const float* data,
               std::int64_t rows, const Stream& stream)
    : clusters_(clusters), dim_(dim), max_batch_(max_batch) {
  ASGD_CHECK(clusters_ >= 1 && clusters_ <= INT32_MAX, "K-Means with K={}", clusters_);
  ASGD_CHECK(dim_ >= 1, "K-Means in {} dimensions", dim_);
  ASGD_CHECK(max_batch_ >= 1, "max_batch must be positive, got {}", max_batch_);
  ASGD_CHECK(rows >= 0 && (rows == 0 || data), "K-Means given {} rows of initial data", rows);
  layout_.push_back({"centres", {clusters_, dim_}, 0, dim_});

  // An evenly strided sample rather than the first rows: files are often sorted by class.
  const std::int64_t wanted =
      std::min(rows, std::max(kCandidateValues / dim_, kCandidatesPerCentre * clusters_));
  candidates_.reserve(static_cast<std::size_t>(wanted * dim_));
  // Duplicate rows would make duplicate centres, of which the one with the higher index never
  // wins an assignment; so only the first copy of each row is kept, compared by value (with
  // -0 stored as +0 so that the hash agrees with ==). Rows with non-finite values are skipped.
  std::unordered_map<std::uint64_t, std::vector<std::int64_t>> seen;
  for (std::int64_t i = 0; i < wanted; ++i) {
    const float* row = data + (i * rows / wanted) * dim_;
    if (!std::all_of(row, row + dim_, [](float v) { return std::isfinite(v); })) continue;
    const std::size_t at = candidates_.size();
    for (std::int64_t c = 0; c < dim_; ++c)
      candidates_.push_back(row[c] + 0.0f);
    const float* kept = candidates_.data() + at;
    const std::uint64_t hash = XXH64(kept, static_cast<std::size_t>(dim_) * sizeof(float), 0);
    auto& same_hash = seen[hash];
    const bool duplicate = std::any_of(same_hash.begin(), same_hash.end(), [&](std::int64_t j) {
      return std::equal(kept, kept + dim_, candidates_.data() + j * dim_);
    });
    if (duplicate) {
      candidates_.resize(at);
    } else {
      same_hash.push_back(candidate_rows_++);
    }
  }
  if (candidate_rows_ < clusters_)
    ASGD_INPUT_ERROR(
        "K-Means with K={} starts from K distinct training rows, but {} {} training rows hold "
        "only {} distinct finite ones; use fewer clusters",
        clusters_, wanted == rows ? "the" : "a sample of", wanted, candidate_rows_);
  candidates_.shrink_to_fit();

  dots_ = DeviceBuffer<float>(stream.backend(), stream.device(),
                              static_cast<std::size_t>(max_batch_ * clusters_));
  centre_norms_ =
      DeviceBuffer<float>(stream.backend(), stream.device(), static_cast<std::size_t>(clusters_));
  assign_ = DeviceBuffer<std::int32_t>(stream.backend(), stream.device(),
                                       static_cast<std::size_t>(max_batch_));
}

std::string KMeans::describe() const {
  return fmt::format("kmeans K={} D={}", clusters_, dim_);
}

std::int64_t KMeans::seeding_rows() const {
  return std::min(candidate_rows_,
                  std::max(kSeedingValues / dim_, kSeedingRowsPerCentre * clusters_));
}

void KMeans::init(float* params, std::uint64_t seed, const Stream& stream) const {
  const std::int64_t n = seeding_rows();
  auto row = [&](std::int64_t i) { return candidates_.data() + (i * candidate_rows_ / n) * dim_; };
  std::vector<float> host(static_cast<std::size_t>(clusters_ * dim_));
  std::mt19937_64 rng(seed);
  auto take = [&](std::int64_t k, std::int64_t i) { std::copy_n(row(i), dim_, &host[k * dim_]); };
  take(0, static_cast<std::int64_t>(uniform_below(rng, static_cast<std::uint64_t>(n))));
  // nearest[i]: squared distance of seeding row i to its nearest centre so far. The rows are
  // distinct, so it is 0 exactly for the rows taken, which are never drawn again.
  std::vector<double> nearest(static_cast<std::size_t>(n)), cumulative(nearest.size()),
      best(nearest.size()), trial(nearest.size());
  for (std::int64_t i = 0; i < n; ++i)
    nearest[i] = squared_distance(row(i), host.data(), dim_);
  // More draws than scikit-learn's 2 + ln K: in many dimensions a blob's own spread weighs so
  // much that the last uncovered blob holds about a fifth of the D^2 mass (32-D blobs, K = 64),
  // and 2 + ln K = 6 draws missed it in 10 of 24 seedings; 2 + 4 ln K = 18 miss it in about 2%.
  const int trials = 2 + static_cast<int>(std::ceil(4 * std::log(static_cast<double>(clusters_))));
  for (std::int64_t k = 1; k < clusters_; ++k) {
    std::partial_sum(nearest.begin(), nearest.end(), cumulative.begin());
    const double total = cumulative.back();
    double best_potential = std::numeric_limits<double>::infinity();
    std::int64_t best_row = -1;
    for (int t = 0; t < trials; ++t) {
      const double u = uniform01(rng) * total;
      // The first row whose cumulative weight exceeds u. Rounding can land it on a row of
      // weight 0 (a centre already): then the next row that has weight (total > 0, as K <= n).
      auto at = std::min<std::int64_t>(
          std::upper_bound(cumulative.begin(), cumulative.end(), u) - cumulative.begin(), n - 1);
      while (nearest[at] == 0)
        at = (at + 1) % n;
      double potential = 0;
      for (std::int64_t i = 0; i < n; ++i) {
        trial[i] = std::min(nearest[i], squared_distance(row(i), row(at), dim_));
        potential += trial[i];
      }
      if (potential < best_potential) {
        best_potential = potential;
        best_row = at;
        best.swap(trial);
      }
    }
    take(k, best_row);
    nearest.swap(best);
  }
  copy_async(params, host.data(), host.size() * sizeof(float), stream);
  stream.synchronize();  // `host` dies here
}

void KMeans::loss_and_gradient(const float* params, const Batch& batch, float* grad,
                               double* loss_sum, const Stream& stream) {
  ASGD_CHECK(batch.rows >= 1 && batch.rows <= max_batch_,
             "batch of {} rows; this model was built for 1 to {}", batch.rows, max_batch_);
  const std::int64_t rows = batch.rows;
  kmeans_nearest(stream, rows, clusters_, dim_, batch.x, params, dots_.data(), centre_norms_.data(),
                 0.5f, assign_.data(), loss_sum);
  kmeans_gradient(stream, rows, clusters_, dim_, batch.x, assign_.data(), params,
                  1.0f / static_cast<float>(rows), grad);
}

void KMeans::evaluate(const float* params, const Batch& data, double* loss_sum,
                      std::int64_t* correct, const Stream& stream) {
  (void)correct;  // a quantiser classifies nothing
  ASGD_CHECK(data.rows >= 0, "evaluate on {} rows", data.rows);
  if (!loss_sum || data.rows == 0) return;
  row_squared_norms(stream, clusters_, dim_, params, centre_norms_.data());
  for (std::int64_t r0 = 0; r0 < data.rows; r0 += max_batch_) {
    const std::int64_t rows = std::min(max_batch_, data.rows - r0);
    const float* x = data.x + r0 * dim_;
    gemm(stream, Trans::kNo, Trans::kYes, rows, clusters_, dim_, 1.0f, x, dim_, params, dim_, 0.0f,
         dots_.data(), clusters_);
    kmeans_assign(stream, rows, clusters_, dim_, x, dots_.data(), centre_norms_.data(), 0.5f,
                  nullptr, loss_sum);
  }
}

}  // namespace asgd
