// What the mpi-tier tests of both transports share: the session, distinct payloads, a hand
// peer's stop signal and the checks both transports pass alike.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>

#include "comm/mpi/mpi_session.h"
#include "comm/rank_transport.h"
#include "runtime/error.h"

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

// A hand peer that stops making MPI calls until the rank under test lets it go on: rank 0
// names a file (collective), creates it with release(), and the stopped rank waits for it in
// wait() without any MPI call, so that nothing it has started moves meanwhile.
class StopSignal {
 public:
  StopSignal() {
    char path[128] = {};
    if (session().rank() == 0)
      std::snprintf(path, sizeof path, "%s/asgd_stopped_peer_%ld",
                    std::filesystem::temp_directory_path().c_str(), static_cast<long>(getpid()));
    ASGD_CHECK_MPI(MPI_Bcast(path, sizeof path, MPI_CHAR, 0, session().comm()));
    path_ = path;
  }
  void release() const { std::ofstream{path_}; }
  void wait() const {
    while (!std::filesystem::exists(path_))
      std::this_thread::yield();  // stopped
    std::filesystem::remove(path_);
  }

 private:
  std::string path_;
};

// Collective: rank 0 waits for a message from rank 1, which sends none, and must get an error
// naming what it waited for (the transport's peer timeout short); then every rank finishes.
inline void expect_wait_for_unsent_message_fails(RankTransport& t) {
  if (session().rank() == 0) {
    try {
      t.wait_delivered(1, 1);
      ADD_FAILURE() << "wait_delivered() returned for a message nobody sent";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("waiting for message 1 from rank 1, 0 arrived"),
                std::string::npos)
          << e.what();
    }
  }
  ASGD_CHECK_MPI(MPI_Barrier(session().comm()));  // nobody posts before rank 0 has given up
  t.finish(false);
}

}  // namespace asgd::test
