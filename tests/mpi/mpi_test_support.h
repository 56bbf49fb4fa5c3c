// What the mpi-tier tests of both transports share: the session and distinct payloads.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/mpi/mpi_session.h"

namespace asgd::test {

inline MpiSession& session() {
  return MpiSession::get();
}

// Payload of a message from `sender` at `step`: distinct per message and never zero.
inline std::vector<float> payload(int sender, std::int64_t step, std::int64_t length) {
  std::vector<float> v(static_cast<std::size_t>(length));
  for (std::int64_t i = 0; i < length; ++i)
    v[static_cast<std::size_t>(i)] = static_cast<float>(sender + 1) * 1000.0f +
                                     static_cast<float>(step) + 1e-3f * static_cast<float>(i % 997);
  return v;
}

}  // namespace asgd::test
