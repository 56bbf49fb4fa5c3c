// Shared by the engine tests of the unit and gpu tiers: what a finished run can be compared
// and checked by (its observable results, its checkpointed states, its metrics events).
#pragma once

#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/checkpoint.h"
#include "runtime/trainer.h"

namespace asgd::testing {

// Everything observable about a run, for exact comparison between deterministic runs. NaN (a
// training loss over no steps) is recorded as -1 so that vectors compare equal.
inline std::vector<double> observe(const TrainResult& r) {
  std::vector<double> v;
  auto push = [&v](double x) { v.push_back(std::isnan(x) ? -1.0 : x); };
  for (const EvalPoint& p : r.history) {
    push(p.train_loss);
    push(p.test_loss);
    push(static_cast<double>(p.messages_accepted));
    push(static_cast<double>(p.messages_rejected));
  }
  for (const EvalPoint& p : r.worker_final)
    push(p.test_loss);
  push(static_cast<double>(r.messages_accepted));
  push(static_cast<double>(r.messages_rejected));
  return v;
}

// Every worker of two checkpoints at the same step with the same state, bit for bit.
inline void expect_same_states(const Checkpoint& a, const Checkpoint& b) {
  ASSERT_EQ(a.workers.size(), b.workers.size());
  for (std::size_t i = 0; i < a.workers.size(); ++i) {
    SCOPED_TRACE("worker " + std::to_string(i));
    EXPECT_EQ(a.workers[i].steps, b.workers[i].steps);
    ASSERT_EQ(a.workers[i].params.size(), b.workers[i].params.size());
    EXPECT_EQ(std::memcmp(a.workers[i].params.data(), b.workers[i].params.data(),
                          a.workers[i].params.size() * sizeof(float)),
              0)
        << "the states differ";
  }
}

// The last line of a metrics file (JSON lines) that is an event named `name`; empty if none.
inline std::string last_event(const std::string& metrics_path, std::string_view name) {
  const std::string key = "\"" + std::string(name) + "\"";
  std::ifstream in(metrics_path);
  std::string line, event;
  while (std::getline(in, line))
    if (line.find(key) != std::string::npos) event = line;
  return event;
}

}  // namespace asgd::testing
