// Seeded randomness that gives the same numbers with every compiler and standard library
// (std::uniform_int_distribution and std::shuffle are not specified exactly), so that splits,
// shards and initialisations are reproducible across machines.
#pragma once

#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <utility>

#include "runtime/error.h"

namespace asgd {

// A uniform integer in [0, bound) from 64 random bits, by rejection; bound >= 1.
inline std::uint64_t uniform_below(std::mt19937_64& rng, std::uint64_t bound) {
  const std::uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  std::uint64_t x = rng();
  while (x >= limit)
    x = rng();
  return x % bound;
}

// A uniform double in [0, 1) from the top 53 of 64 random bits.
inline double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

// Fisher-Yates shuffle of [first, first + n) driven by uniform_below.
template <typename T>
void portable_shuffle(T* first, std::int64_t n, std::mt19937_64& rng) {
  for (std::int64_t i = n - 1; i > 0; --i)
    std::swap(first[i], first[uniform_below(rng, static_cast<std::uint64_t>(i + 1))]);
}

// A generator's state in the standard's text form, and back (checkpoints). `what` names the
// generator in the InputError for text that is not such a state.
inline std::string generator_state(const std::mt19937_64& rng) {
  std::ostringstream out;
  out << rng;
  return out.str();
}

inline std::mt19937_64 generator_from_state(const std::string& text, const char* what) {
  std::istringstream in(text);
  std::mt19937_64 rng;
  in >> rng;
  if (in.fail()) ASGD_INPUT_ERROR("the checkpoint's {} generator state is unreadable", what);
  return rng;
}

}  // namespace asgd
