// Multi-worker training in one process: every algorithm, deterministic mode, custom models,
// and errors raised inside worker threads.
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kernels/gemm.h"
#include "kernels/loss.h"
#include "kernels/models/model.h"
#include "runtime/error.h"
#include "runtime/trainer.h"
#include "runtime/worker.h"
#include "tests/common/run_checks.h"
#include "tests/common/separable.h"

namespace asgd {
namespace {
using ::testing::HasSubstr;

TrainConfig engine_config(Algorithm algorithm, int workers) {
  TrainConfig c;
  c.model = {"mlp", {16}};
  c.batch = 16;
  c.lr = 0.1f;
  c.epochs = 3;
  c.eval_every = 25;
  c.progress = false;
  c.workers = workers;
  c.algorithm = algorithm;
  c.window_warmup = 4;
  return c;
}

class AlgorithmTest : public ::testing::TestWithParam<Algorithm> {};

TEST_P(AlgorithmTest, ThreeWorkersLearn) {
  const TrainConfig c = engine_config(GetParam(), 3);
  const TrainResult r = train(c, testing::separable_train_test());
  EXPECT_EQ(r.workers, 3);
  EXPECT_GE(r.final_test_accuracy, 0.95) << to_string(GetParam());
  EXPECT_EQ(r.stop_reason, "epochs");
  if (communicates(GetParam())) {
    EXPECT_GT(r.messages_sent, 0);
    // How many arrive in time depends on the scheduling of the threads; deterministic mode
    // checks exact counts.
    EXPECT_LE(r.messages_received, r.messages_sent);
    EXPECT_LE(r.messages_accepted + r.messages_rejected, r.messages_received);
    EXPECT_EQ(r.messages_rejected, r.messages_rejected_direction + r.messages_rejected_window);
    EXPECT_EQ(r.bytes_sent, r.messages_sent * r.parameters * 4);  // whole-state messages
    if (GetParam() == Algorithm::kAsgdNoFilter) {
      EXPECT_EQ(r.messages_rejected, 0);
    }
  } else {
    EXPECT_EQ(r.messages_sent, 0);
  }
  if (GetParam() == Algorithm::kSimu) {
    EXPECT_EQ(r.history.back().worker, -1);  // the average
  }
}

INSTANTIATE_TEST_SUITE_P(Engine, AlgorithmTest,
                         ::testing::Values(Algorithm::kAsgd, Algorithm::kAsgdNoFilter,
                                           Algorithm::kSync, Algorithm::kSimu, Algorithm::kLocal),
                         [](const auto& p) {
                           std::string n(to_string(p.param));
                           for (auto& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

// Runs a deterministic configuration and returns everything observable about it.
std::vector<double> observe(const TrainConfig& c) {
  return testing::observe(train(c, testing::separable_train_test()));
}

TEST(DeterministicTest, AsgdIsRepeatableBitForBit) {
  TrainConfig c = engine_config(Algorithm::kAsgd, 4);
  c.deterministic = true;
  c.message_size = 100;  // partial messages rotating over the state
  c.send_interval = 2;
  c.straggler = {1, 2.0};
  const auto a = observe(c);
  const auto b = observe(c);
  EXPECT_EQ(a, b);  // exact, not approximate
  c.seed = 7;
  EXPECT_NE(observe(c), a);
}

TEST(DeterministicTest, EveryAlgorithmIsRepeatable) {
  for (Algorithm algo :
       {Algorithm::kAsgdNoFilter, Algorithm::kSync, Algorithm::kSimu, Algorithm::kLocal}) {
    SCOPED_TRACE(std::string(to_string(algo)));
    TrainConfig c = engine_config(algo, 2);
    c.deterministic = true;
    c.epochs = 1;
    EXPECT_EQ(observe(c), observe(c)) << to_string(algo);
  }
}

TEST(DeterministicTest, MetricsHaveEveryWorkerAndItsMessageCounters) {
  TrainConfig c = engine_config(Algorithm::kAsgd, 2);
  c.deterministic = true;
  c.epochs = 1;
  c.metrics_path = (std::filesystem::temp_directory_path() /
                    ("asgd_engine_metrics_" + std::to_string(::getpid()) + ".jsonl"))
                       .string();
  const TrainResult r = train(c, testing::separable_train_test());
  std::ifstream in(c.metrics_path);
  std::string line;
  int lines[2] = {0, 0};
  double last_eval_s[2] = {0, 0};
  while (std::getline(in, line)) {
    // Each line's evaluation time is the worker's running total: it grows with every line,
    // and is part of the wall time since the start.
    const nlohmann::json j = nlohmann::json::parse(line);
    const int worker = j.at("worker").get<int>();
    ASSERT_TRUE(worker == 0 || worker == 1) << line;
    EXPECT_GT(j.at("eval_s").get<double>(), last_eval_s[worker]) << line;
    EXPECT_LE(j.at("eval_s").get<double>(), j.at("time_s").get<double>()) << line;
    last_eval_s[worker] = j.at("eval_s").get<double>();
    for (const char* key :
         {"\"messages_sent\"", "\"messages_received\"", "\"messages_accepted\"",
          "\"messages_rejected\"", "\"messages_rejected_direction\"",
          "\"messages_rejected_window\"", "\"messages_nonfinite\"", "\"bytes_sent\"",
          "\"mean_staleness_s\"", "\"mean_step_gap\"", "\"test_accuracy\"", "\"eval_s\""})
      EXPECT_THAT(line, HasSubstr(key));
    ++lines[line.find("\"worker\":1") != std::string::npos ? 1 : 0];
  }
  EXPECT_EQ(lines[0], static_cast<int>(r.history.size()));
  EXPECT_GT(lines[1], 0);
  EXPECT_GT(r.history.back().messages_sent, 0);
  std::filesystem::remove(c.metrics_path);
}

// --eval-workers first: only worker 0 is evaluated on the test set at every evaluation step
// (the others log their training loss and counters, test metrics null) and every worker once
// at the end. Evaluating changes nothing in training, so in deterministic mode the run is the
// same, bit for bit, as with every worker evaluating.
TEST(DeterministicTest, EvalWorkersFirstTestsOnlyWorkerZeroAndTrainsTheSame) {
  TrainConfig c = engine_config(Algorithm::kAsgd, 3);
  c.deterministic = true;
  c.epochs = 2;
  const auto all = observe(c);
  c.eval_workers = EvalWorkers::kFirst;
  c.metrics_path = (std::filesystem::temp_directory_path() /
                    ("asgd_eval_first_" + std::to_string(::getpid()) + ".jsonl"))
                       .string();
  const TrainResult r = train(c, testing::separable_train_test());
  EXPECT_EQ(testing::observe(r), all);
  ASSERT_EQ(r.worker_final.size(), 3u);
  for (const EvalPoint& p : r.worker_final)
    EXPECT_GE(p.test_accuracy, 0.9) << "worker " << p.worker << ": evaluated at the end";
  std::ifstream in(c.metrics_path);
  int tested[3] = {0, 0, 0}, untested[3] = {0, 0, 0};
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json m = nlohmann::json::parse(line);
    if (!m.contains("worker")) continue;
    const int w = m["worker"].get<int>();
    ASSERT_TRUE(w >= 0 && w < 3) << line;
    ASSERT_TRUE(m["train_loss"].is_number()) << line;
    ASSERT_TRUE(m.contains("messages_accepted")) << line;
    ++(m["test_accuracy"].is_null() ? untested : tested)[w];
    EXPECT_EQ(m["test_accuracy"].is_null(), m["test_loss"].is_null()) << line;
  }
  EXPECT_EQ(tested[0], static_cast<int>(r.history.size()));
  EXPECT_EQ(untested[0], 0);
  for (int w : {1, 2}) {
    EXPECT_EQ(tested[w], 1) << "worker " << w << ": once, at the end";
    EXPECT_EQ(untested[w], tested[0] - 1) << "worker " << w;
  }
  std::filesystem::remove(c.metrics_path);
  EXPECT_EQ(parse_eval_workers("all"), EvalWorkers::kAll);
  EXPECT_THROW(parse_eval_workers("0"), InputError);
}

// --direction-margin reaches every worker's test: the first-order test (0) accepts states that
// the default (1) rejects for the step's term, so the same seeded run accepts more.
TEST(DeterministicTest, DirectionMarginZeroAcceptsMore) {
  TrainConfig c = engine_config(Algorithm::kAsgd, 2);
  c.deterministic = true;
  c.window = std::numeric_limits<float>::infinity();  // the direction test alone decides
  const TrainResult strict = train(c, testing::separable_train_test());
  c.direction_margin = 0.0f;
  const TrainResult first_order = train(c, testing::separable_train_test());
  EXPECT_EQ(strict.messages_received, first_order.messages_received);
  EXPECT_GT(strict.messages_rejected_direction, 0);
  EXPECT_GT(first_order.messages_accepted, strict.messages_accepted);
  EXPECT_LT(first_order.messages_rejected_direction, strict.messages_rejected_direction);
}

TEST(DeterministicTest, FilterIsActive) {
  TrainConfig c = engine_config(Algorithm::kAsgd, 3);
  c.deterministic = true;
  const TrainResult r = train(c, testing::separable_train_test());
  EXPECT_GT(r.messages_accepted, 0);
  EXPECT_GT(r.messages_rejected, 0);
  EXPECT_EQ(r.messages_nonfinite, 0);
  // Both parts of the filter are reported; every message is counted once.
  EXPECT_EQ(r.messages_rejected, r.messages_rejected_direction + r.messages_rejected_window);
  std::int64_t direction = 0;
  for (const EvalPoint& p : r.worker_final)
    direction += p.messages_rejected_direction;
  EXPECT_EQ(direction, r.messages_rejected_direction);
}

// Lockstep rounds: every worker steps on the previous round's messages, so with whole states
// sent every step each message is exactly one round old when it is used, and every round but
// the first brings each worker exactly one.
TEST(DeterministicTest, LockstepUsesEveryMessageOneRoundLater) {
  TrainConfig c = engine_config(Algorithm::kAsgdNoFilter, 2);
  c.deterministic = true;
  c.step_order = StepOrder::kLockstep;
  c.epochs = 1;
  const TrainResult r = train(c, testing::separable_train_test());
  ASSERT_EQ(r.worker_final.size(), 2u);
  for (const EvalPoint& p : r.worker_final) {
    SCOPED_TRACE(p.worker);
    EXPECT_GT(p.step, 10);
    EXPECT_EQ(p.messages_received, p.step - 1);
    EXPECT_EQ(p.messages_sent, p.step);
    EXPECT_EQ(p.mean_step_gap, 0.0);  // exact: every gap is 0
  }
  // Shuffled rounds: the worker that steps second sees the first one's state of this round
  // (a gap of -1), so the gaps sum below zero.
  c.step_order = StepOrder::kShuffled;
  const TrainResult s = train(c, testing::separable_train_test());
  double gap_sum = 0;
  for (const EvalPoint& p : s.worker_final)
    gap_sum += p.mean_step_gap * static_cast<double>(p.messages_received);
  EXPECT_LT(gap_sum, -0.5);
}

TEST(DeterministicTest, LockstepIsRepeatableAndDiffersFromShuffled) {
  TrainConfig c = engine_config(Algorithm::kAsgd, 3);
  c.deterministic = true;
  c.step_order = StepOrder::kLockstep;
  c.message_size = 100;  // partial messages rotating over the state
  c.straggler = {2, 2.0};
  const auto a = observe(c);
  EXPECT_EQ(observe(c), a);  // exact, not approximate
  c.step_order = StepOrder::kShuffled;
  EXPECT_NE(observe(c), a);
}

TEST(DeterministicTest, StepOrderWithoutDeterministicIsAnInputError) {
  TrainConfig c = engine_config(Algorithm::kAsgd, 2);
  c.step_order = StepOrder::kLockstep;
  try {
    train(c, testing::separable_train_test());
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("--deterministic"));
  }
  EXPECT_EQ(parse_step_order("lockstep"), StepOrder::kLockstep);
  EXPECT_EQ(parse_step_order("shuffled"), StepOrder::kShuffled);
  EXPECT_THROW(parse_step_order("random"), InputError);
}

// A model written outside the library: multinomial logistic regression through the public
// kernels, as examples/02_custom_model does.
class TinySoftmax final : public Model {
 public:
  TinySoftmax(std::int64_t d, std::int32_t k, std::int64_t max_batch, const Stream& s)
      : d_(d), k_(k), max_batch_(max_batch), logits_(s.backend(), s.device(), max_batch * k) {
    layout_ = {{"w", {k, d}, 0, d}};
  }
  std::string describe() const override { return "tiny-softmax"; }
  std::int64_t input_dim() const override { return d_; }
  std::int32_t num_classes() const override { return k_; }
  const std::vector<TensorInfo>& layout() const override { return layout_; }
  std::int64_t max_batch() const override {
    return reported_max_batch > 0 ? reported_max_batch : max_batch_;
  }
  void loss_and_gradient(const float* w, const Batch& b, float* g, double* loss,
                         const Stream& s) override {
    ++calls;
    if (fail_at > 0 && calls == fail_at) ASGD_THROW("injected failure at call {}", calls);
    gemm(s, Trans::kNo, Trans::kYes, b.rows, k_, d_, 1, b.x, d_, w, d_, 0, logits_.data(), k_);
    softmax_cross_entropy(s, b.rows, k_, logits_.data(), b.y, 1.0f / b.rows, logits_.data(), loss,
                          nullptr);
    gemm(s, Trans::kYes, Trans::kNo, k_, d_, b.rows, 1, logits_.data(), k_, b.x, d_, 0, g, d_);
  }
  void evaluate(const float* w, const Batch& data, double* loss, std::int64_t* correct,
                const Stream& s) override {
    for (std::int64_t r0 = 0; r0 < data.rows; r0 += max_batch_) {
      const std::int64_t rows = std::min(max_batch_, data.rows - r0);
      gemm(s, Trans::kNo, Trans::kYes, rows, k_, d_, 1, data.x + r0 * d_, d_, w, d_, 0,
           logits_.data(), k_);
      softmax_cross_entropy(s, rows, k_, logits_.data(), data.y + r0, 1, nullptr, loss, correct);
    }
  }
  int fail_at = 0;
  int calls = 0;
  std::int64_t reported_max_batch = 0;  // > 0: what max_batch() claims instead
  std::vector<TensorInfo> layout_;

 private:
  std::int64_t d_;
  std::int32_t k_;
  std::int64_t max_batch_;
  DeviceBuffer<float> logits_;
};

TEST(CustomModelTest, TrainsWithAsgdOnSeveralWorkers) {
  const ModelFactory factory = [](const Stream& s, std::int64_t d, std::int32_t k,
                                  std::int64_t max_batch, const Dataset&) {
    return std::make_unique<TinySoftmax>(d, k, max_batch, s);
  };
  const TrainResult r =
      train(engine_config(Algorithm::kAsgd, 2), testing::separable_train_test(), factory);
  EXPECT_EQ(r.model, "tiny-softmax");
  EXPECT_GE(r.final_test_accuracy, 0.95);
}

// Research code can get a model wrong in ways that would otherwise write or read out of bounds;
// each is refused before training, naming the model and what is wrong.
TEST(CustomModelTest, AFaultyModelIsRefusedBeforeTraining) {
  struct Case {
    const char* expect;
    std::function<void(TinySoftmax&)> spoil;  // null: the factory returns no model
    std::int32_t classes = 0;                 // > 0: the model's class count instead
  };
  const std::vector<Case> cases = {
      {"returned no model", nullptr},
      {"starts at offset -4", [](TinySoftmax& m) { m.layout_[0].offset = -4; }},
      {"lists no tensors", [](TinySoftmax& m) { m.layout_.clear(); }},
      {"has a dimension of 0",
       [](TinySoftmax& m) {
         m.layout_[0].shape = {3, 0};
       }},
      {"ends beyond",
       [](TinySoftmax& m) {
         m.layout_[0].shape = {1 << 30, 1 << 30};
       }},
      {"takes batches of up to 4 rows", [](TinySoftmax& m) { m.reported_max_batch = 4; }},
      {"has 1 classes", nullptr, 1},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.expect);
    const bool null_model = !c.spoil && c.classes == 0;
    const ModelFactory factory = [&](const Stream& s, std::int64_t d, std::int32_t k,
                                     std::int64_t max_batch, const Dataset&) {
      if (null_model) return std::unique_ptr<TinySoftmax>();
      auto m = std::make_unique<TinySoftmax>(d, c.classes > 0 ? c.classes : k, max_batch, s);
      if (c.spoil) c.spoil(*m);
      return m;
    };
    try {
      train(engine_config(Algorithm::kAsgd, 2), testing::separable_train_test(), factory);
      ADD_FAILURE() << "no error";
    } catch (const InputError& e) {
      EXPECT_THAT(e.what(), HasSubstr(c.expect));
      if (!null_model) {
        EXPECT_THAT(e.what(), HasSubstr("tiny-softmax"));
      }
    }
  }
}

// A data set built by hand for train() is checked as the readers' output is.
TEST(TrainApiTest, AHandBuiltDataSetIsChecked) {
  struct Case {
    const char* expect;
    std::function<void(TrainTest&)> spoil;
  };
  const std::vector<Case> cases = {
      {"features holds", [](TrainTest& d) { d.train.features.resize(10); }},
      {"labels; every row", [](TrainTest& d) { d.train.labels.pop_back(); }},
      {"row 5 has the label 7, outside [0, 4)", [](TrainTest& d) { d.train.labels[5] = 7; }},
      {"test set (separable): row 0 has the label -1", [](TrainTest& d) { d.test.labels[0] = -1; }},
      {"test set", [](TrainTest& d) { d.test = Dataset{}; }},
      {"classes must be >= 1", [](TrainTest& d) { d.train.classes = 0; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.expect);
    TrainTest data = testing::separable_train_test();
    c.spoil(data);
    try {
      train(engine_config(Algorithm::kAsgd, 2), data);
      ADD_FAILURE() << "no error";
    } catch (const InputError& e) {
      EXPECT_THAT(e.what(), HasSubstr(c.expect));
    }
  }
}

class WorkerFailureTest : public ::testing::TestWithParam<std::pair<Algorithm, bool>> {};

TEST_P(WorkerFailureTest, FirstErrorOfAWorkerIsRethrownAndNothingHangs) {
  const auto [algo, deterministic] = GetParam();
  std::atomic<int> built{0};
  const ModelFactory factory = [&](const Stream& s, std::int64_t d, std::int32_t k,
                                   std::int64_t max_batch, const Dataset&) {
    auto m = std::make_unique<TinySoftmax>(d, k, max_batch, s);
    // Worker 0 fails at its 10th step: it is the one worker certain to get there, since the
    // others stop when it stops. The others are mid-run and must be stopped and joined.
    if (built++ == 0) m->fail_at = 10;
    return m;
  };
  TrainConfig c = engine_config(algo, 3);
  c.deterministic = deterministic;
  try {
    train(c, testing::separable_train_test(), factory);
    FAIL() << "the injected failure was not reported";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("injected failure at call 10"));
  }
}

INSTANTIATE_TEST_SUITE_P(Engine, WorkerFailureTest,
                         ::testing::Values(std::make_pair(Algorithm::kAsgd, false),
                                           std::make_pair(Algorithm::kSync, false),
                                           std::make_pair(Algorithm::kAsgd, true)));

TEST(DeterministicTest, MaxSecondsEndsTheRun) {
  TrainConfig c = engine_config(Algorithm::kAsgd, 2);
  c.deterministic = true;
  c.epochs = 1e6;  // far beyond what a millisecond can train
  c.max_seconds = 1e-3;
  const TrainResult r = train(c, testing::separable_train_test());
  EXPECT_EQ(r.stop_reason, "max-seconds");
  c.algorithm = Algorithm::kSync;
  EXPECT_EQ(train(c, testing::separable_train_test()).stop_reason, "max-seconds");
}

TEST(EngineConfigTest, StepsForEpochsStayCountable) {
  EXPECT_EQ(steps_for_epochs(2.5, 10, 32), 25);
  EXPECT_EQ(steps_for_epochs(0.01, 10, 32), 1);  // at least one step
  EXPECT_EQ(steps_for_epochs(1.0, 0, 32), 1);    // a shard smaller than a batch
  // Unbounded: as many steps as samples can count, so a run ends by target or time instead.
  const std::int64_t most = (std::int64_t{1} << 53) / 32;
  EXPECT_EQ(steps_for_epochs(std::numeric_limits<double>::infinity(), 10, 32), most);
  EXPECT_EQ(steps_for_epochs(1e30, 10, 32), most);
  EXPECT_THROW(steps_for_epochs(std::nan(""), 10, 32), Error);
  EXPECT_THROW(steps_for_epochs(0.0, 10, 32), Error);
}

TEST(EngineConfigTest, RejectsImpossibleSettings) {
  TrainConfig c = engine_config(Algorithm::kAsgd, 2);
  c.straggler = {5, 2.0};
  EXPECT_THROW(train(c, testing::separable_train_test()), InputError);
  c = engine_config(Algorithm::kAsgd, 2);
  c.links.bandwidth_matrix = {{0, 1}};
  EXPECT_THROW(train(c, testing::separable_train_test()), InputError);
  c = engine_config(Algorithm::kAsgd, 3000);
  EXPECT_THROW(train(c, testing::separable_train_test()), InputError);
  // The balancer's decisions carry intervals of up to 24 bits.
  c = engine_config(Algorithm::kAsgd, 2);
  c.max_interval = kMaxSendInterval + 1;
  EXPECT_THROW(train(c, testing::separable_train_test()), InputError);
}

}  // namespace
}  // namespace asgd
