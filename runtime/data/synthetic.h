// Synthetic data sets, generated in host memory from a seed: the same arguments give the same
// data with every compiler, standard library and thread count.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/data/dataset.h"

namespace asgd {

// Gaussian blobs, the K-Means benchmark: k centres drawn uniformly from [-10, 10]^d, and n
// points, each its blob's centre plus N(0, 1) noise in every coordinate, labelled with its blob.
// The blobs are balanced (point i of the unshuffled set belongs to blob i % k) and the points
// are then shuffled. source is "blobs:n,d,k". When `centres` is not null it receives the
// centres [k x d]. Throws InputError unless n, d and k are positive, k <= n, and the set has at
// most 2^31 values.
Dataset make_blobs(std::int64_t n, std::int64_t d, std::int32_t k, std::uint64_t seed,
                   std::vector<float>* centres = nullptr);

}  // namespace asgd
