// The single-worker training loop and its configuration, on small in-memory data sets.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "runtime/config.h"
#include "runtime/error.h"
#include "runtime/trainer.h"
#include "tests/common/separable.h"

namespace asgd {
namespace {
using ::testing::HasSubstr;
namespace fs = std::filesystem;

using testing::separable;

TrainTest blob_data() { return testing::separable_train_test(); }

TrainConfig small_config() {
  TrainConfig c;
  c.model = {"mlp", {16}};
  c.batch = 32;
  c.lr = 0.1f;
  c.epochs = 3;
  c.eval_every = 20;
  c.progress = false;
  return c;
}

fs::path temp_path(const std::string& name) {
  return fs::temp_directory_path() /
         (name + "." + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "." +
          ::testing::UnitTest::GetInstance()->current_test_info()->name());
}

TEST(TrainerTest, ReachesTargetAndStops) {
  TrainConfig c = small_config();
  c.target_accuracy = 0.97;
  const TrainResult r = train(c, blob_data());
  EXPECT_EQ(r.stop_reason, "target");
  ASSERT_TRUE(r.time_to_target_s.has_value());
  EXPECT_GE(r.final_test_accuracy, 0.97);
  EXPECT_LT(r.steps, 3 * 2000 / 32);
  EXPECT_EQ(r.samples, r.steps * 32);
  EXPECT_EQ(r.history.back().step, r.steps);
  EXPECT_GT(r.samples_per_s, 0);
}

TEST(TrainerTest, EveryModelLearns) {
  for (const char* kind : {"softmax", "logistic", "mlp"}) {
    TrainConfig c = small_config();
    c.model.kind = kind;
    const TrainResult r = train(c, blob_data());
    EXPECT_EQ(r.stop_reason, "epochs") << kind;
    EXPECT_EQ(r.steps, 3 * (2000 / 32)) << kind;  // whole batches per epoch
    EXPECT_GE(r.final_test_accuracy, 0.95) << kind;
    EXPECT_LT(r.history.back().train_loss, r.history.front().train_loss) << kind;
  }
}

TEST(TrainerTest, SameSeedIsBitForBitRepeatable) {
  TrainConfig c = small_config();
  c.epochs = 1;
  const TrainResult a = train(c, blob_data());
  const TrainResult b = train(c, blob_data());
  ASSERT_EQ(a.history.size(), b.history.size());
  for (std::size_t i = 0; i < a.history.size(); ++i) {
    EXPECT_EQ(a.history[i].train_loss, b.history[i].train_loss) << i;
    EXPECT_EQ(a.history[i].test_loss, b.history[i].test_loss) << i;
  }
  c.seed = 2;
  const TrainResult other = train(c, blob_data());
  EXPECT_NE(a.history.front().train_loss, other.history.front().train_loss);
}

TEST(TrainerTest, DivergenceIsAnErrorNotGarbage) {
  TrainConfig c = small_config();
  c.lr = 1e30f;
  try {
    train(c, blob_data());
    FAIL() << "a run at lr 1e30 did not report divergence";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("diverged"));
    EXPECT_THAT(e.what(), HasSubstr("--lr"));
  }
}

TEST(TrainerTest, WritesMetricsAndSummary) {
  TrainConfig c = small_config();
  c.epochs = 1;
  c.metrics_path = temp_path("metrics.jsonl").string();
  const TrainResult r = train(c, blob_data());
  std::ifstream in(c.metrics_path);
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    for (const char* key : {"\"time_s\"", "\"step\"", "\"samples\"", "\"train_loss\"",
                            "\"test_loss\"", "\"test_accuracy\""})
      EXPECT_THAT(line, HasSubstr(key));
  }
  EXPECT_EQ(lines, static_cast<int>(r.history.size()));
  const fs::path summary = temp_path("summary.json");
  write_summary(summary.string(), c, r);
  std::stringstream text;
  text << std::ifstream(summary).rdbuf();
  for (const char* key :
       {"\"final_test_accuracy\"", "\"time_to_target_s\": null", "\"train_seconds\"",
        "\"samples_per_s\"", "\"steps\"", "\"backend\": \"host\"", "\"workers\": 1",
        "\"direction_margin\": 1.0", "\"window_history\": 64"})
    EXPECT_THAT(text.str(), HasSubstr(key));
  fs::remove(c.metrics_path);
  fs::remove(summary);
}

// --trace: every step, send and merge of every worker is on the timeline, and each merged
// message is the end of an arrow that starts at its send.
TEST(TrainerTest, TraceShowsEveryWorkersStepsAndMessages) {
  TrainConfig c = small_config();
  c.workers = 2;
  c.epochs = 1;
  c.deterministic = true;  // exact step counts
  c.trace_path = temp_path("trace.json").string();
  const TrainResult r = train(c, blob_data());
  std::ifstream in(c.trace_path);
  const nlohmann::json trace = nlohmann::json::parse(in);
  std::map<std::pair<int, std::string>, int> slices;
  std::map<std::string, int> flow_starts, flow_ends;
  for (const auto& e : trace.at("traceEvents")) {
    const std::string ph = e.at("ph");
    if (ph == "X") ++slices[{e.at("pid").get<int>(), e.at("name").get<std::string>()}];
    if (ph == "s") ++flow_starts[e.at("id").get<std::string>()];
    if (ph == "f") ++flow_ends[e.at("id").get<std::string>()];
  }
  for (int w = 0; w < 2; ++w) {
    const EvalPoint& last = r.worker_final[static_cast<std::size_t>(w)];
    EXPECT_EQ(slices[std::make_pair(w, std::string("step"))], last.step) << w;
    EXPECT_EQ(slices[std::make_pair(w, std::string("send"))], last.messages_sent) << w;
    EXPECT_GE(slices[std::make_pair(w, std::string("evaluate"))], 1) << w;
  }
  std::int64_t received = 0;
  for (const EvalPoint& p : r.worker_final) received += p.messages_received;
  std::int64_t ends = 0;
  for (const auto& [id, n] : flow_ends) {
    EXPECT_EQ(flow_starts[id], 1) << "arrow " << id << " has no single start";
    ends += n;
  }
  EXPECT_EQ(ends, received);
  fs::remove(c.trace_path);
}

TEST(TrainerTest, RejectsBadSettings) {
  TrainConfig c = small_config();
  c.batch = 5000;  // more than the 2000 training rows
  EXPECT_THROW(train(c, blob_data()), InputError);
  c = small_config();
  c.lr = -1;
  EXPECT_THROW(train(c, blob_data()), InputError);
  c = small_config();
  c.target_accuracy = 1.5;
  EXPECT_THROW(train(c, blob_data()), InputError);
  TrainTest mismatched = blob_data();
  mismatched.test = separable(10, 11, 4, 3);
  EXPECT_THROW(train(small_config(), mismatched), InputError);
}

class ConfigFileTest : public ::testing::Test {
 protected:
  std::string write(const std::string& text) {
    path_ = temp_path("config.toml");
    std::ofstream(path_) << text;
    return path_.string();
  }
  void TearDown() override { fs::remove(path_); }
  fs::path path_;
};

TEST_F(ConfigFileTest, SetsEveryKindOfValue) {
  TrainConfig c;
  apply_config_file(write("lr = 0.2\nhidden = [64, 32]\nbatch = 128\nbackend = \"host\"\n"
                          "target-accuracy = 0.9\nprogress = false\nnormalize = \"none\"\n"),
                    c);
  EXPECT_FLOAT_EQ(c.lr, 0.2f);
  EXPECT_EQ(c.model.hidden, (std::vector<std::int64_t>{64, 32}));
  EXPECT_EQ(c.batch, 128);
  EXPECT_DOUBLE_EQ(c.target_accuracy, 0.9);
  EXPECT_FALSE(c.progress);
  EXPECT_EQ(c.data.normalize, Normalize::kNone);
}

// A schedule typed at its default values (the whole state, every step) is still a fixed
// schedule: the balancer stays off unless asked for.
TEST_F(ConfigFileTest, AScheduleGivenAtItsDefaultsTurnsTheBalancerOff) {
  TrainConfig c;
  EXPECT_EQ(resolved_balance(c), BalanceMode::kAuto);
  apply_config_file(write("send-interval = 1\n"), c);
  EXPECT_TRUE(c.schedule_given);
  EXPECT_EQ(resolved_balance(c), BalanceMode::kOff);
  TrainConfig m;
  apply_config_file(write("message-size = 0\n"), m);
  EXPECT_EQ(resolved_balance(m), BalanceMode::kOff);
  apply_config_file(write("balance = \"auto\"\n"), m);
  EXPECT_EQ(resolved_balance(m), BalanceMode::kAuto);  // asked for explicitly
}

// The config fuzzer's seed that sets every key once must be a valid whole, so that mutations
// of it reach past validate() into the settings' combinations (it once held step-order =
// "lockstep" without deterministic, which validate() refuses).
TEST_F(ConfigFileTest, TheFuzzSeedWithEveryKeyIsValid) {
  TrainConfig c;
  apply_config_file(std::string(ASGD_FUZZ_CORPUS_DIR) + "/config/everything", c);
  EXPECT_NO_THROW(validate(c));
  EXPECT_EQ(c.workers, 4);
  EXPECT_FLOAT_EQ(c.direction_margin, 0.5f);
}

TEST_F(ConfigFileTest, UnknownKeyNamesFileLineAndKey) {
  TrainConfig c;
  const std::string path = write("lr = 0.2\nlearning_rate = 0.1\n");
  try {
    apply_config_file(path, c);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr(path + ":2"));
    EXPECT_THAT(e.what(), HasSubstr("unknown key 'learning_rate'"));
  }
}

// Integer settings kept in an int refuse values that would wrap (threads = 2^32 + 1 would
// otherwise become 1 and pass every later check).
TEST_F(ConfigFileTest, IntegersOutsideIntRangeAreRejected) {
  for (const char* key : {"threads", "workers", "device", "queue-capacity", "window-history",
                          "window-warmup", "csv-label-column"}) {
    TrainConfig c;
    const std::string path = write(std::string(key) + " = 4294967297\n");
    try {
      apply_config_file(path, c);
      FAIL() << key;
    } catch (const InputError& e) {
      EXPECT_THAT(e.what(), HasSubstr(path + ":1"));
      EXPECT_THAT(e.what(), HasSubstr(std::string("'") + key + "' = 4294967297 is out of range"));
    }
  }
  TrainConfig c;
  apply_config_file(write("threads = 2\nworkers = 3\n"), c);
  EXPECT_EQ(c.threads, 2);
  EXPECT_EQ(c.workers, 3);
}

TEST_F(ConfigFileTest, WrongTypeAndBadSyntaxAndMissingFile) {
  TrainConfig c;
  std::string path = write("batch = \"big\"\n");
  try {
    apply_config_file(path, c);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr(path + ":1"));
    EXPECT_THAT(e.what(), HasSubstr("'batch' must be an integer"));
  }
  path = write("lr = = 3\n");
  EXPECT_THROW(apply_config_file(path, c), InputError);
  try {
    apply_config_file("/nonexistent/asgd.toml", c);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("/nonexistent/asgd.toml"));
  }
}

}  // namespace
}  // namespace asgd
