// The engine on the CUDA backend: several workers sharing GPU 0, each with its own streams,
// pinned staging and device-side Parzen decisions. The kernels are checked one by one in the
// other files of this tier; here the whole path runs: every algorithm learns, deterministic
// mode is bit-for-bit repeatable, a resumed run ends bit-identical to an uninterrupted one, the
// divergence guard restores a poisoned worker, and the CUDA run agrees with the host run.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/checkpoint.h"
#include "runtime/data/synthetic.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/trainer.h"
#include "tests/common/run_checks.h"
#include "tests/common/separable.h"
#include "tests/common/temp_dir.h"

namespace asgd {
namespace {
using ::testing::HasSubstr;
using testing::TempDir;

class CudaTrainingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << cuda_unavailable_reason();
  }
};

// 3 or 4 workers on GPU 0, 500-667 rows each of the separable set.
TrainConfig cuda_config(Algorithm algorithm, int workers) {
  TrainConfig c;
  c.backend = Backend::kCuda;
  c.model = {"mlp", {16}};
  c.batch = 32;
  c.lr = 0.1f;
  c.epochs = 6;
  c.eval_every = 20;
  c.progress = false;
  c.workers = workers;
  c.algorithm = algorithm;
  c.message_size = 100;  // partial messages rotating over the state
  c.send_interval = 2;
  c.window_warmup = 4;
  return c;
}

TrainResult run(const TrainConfig& c) {
  return train(c, testing::separable_train_test());
}

TEST_F(CudaTrainingTest, EveryAlgorithmLearns) {
  for (Algorithm algo : {Algorithm::kAsgd, Algorithm::kAsgdNoFilter, Algorithm::kSync,
                         Algorithm::kSimu, Algorithm::kLocal}) {
    SCOPED_TRACE(std::string(to_string(algo)));
    const TrainResult r = run(cuda_config(algo, 3));
    EXPECT_EQ(r.workers, 3);
    EXPECT_GE(r.final_test_accuracy, 0.95);
    EXPECT_TRUE(std::isfinite(r.final_test_loss));
    if (communicates(algo)) {
      EXPECT_GT(r.messages_sent, 0);
      EXPECT_LE(r.messages_received, r.messages_sent);
      EXPECT_LE(r.messages_accepted + r.messages_rejected, r.messages_received);
    } else {
      EXPECT_EQ(r.messages_sent, 0);
    }
    if (algo == Algorithm::kAsgdNoFilter) {
      EXPECT_EQ(r.messages_rejected, 0);
    }
  }
}

TEST_F(CudaTrainingTest, DeterministicModeIsRepeatableBitForBit) {
  TrainConfig c = cuda_config(Algorithm::kAsgd, 4);
  c.deterministic = true;
  c.straggler = {1, 2.0};
  const TrainResult a = run(c);
  EXPECT_GT(a.messages_accepted, 0);
  EXPECT_GT(a.messages_rejected, 0);  // the filter is active on the device too
  EXPECT_EQ(testing::observe(run(c)), testing::observe(a));
  c.seed = 7;
  EXPECT_NE(testing::observe(run(c)), testing::observe(a));
}

// The same run on both backends, without messages (a GPU worker posts a message one step after
// it is staged, so exchanges happen at other steps than on the host): the kernels differ only
// in summation order (cuBLAS against OpenBLAS, block reductions), so the losses agree closely
// but not bit for bit.
// Every worker on its own stream of one GPU: sync reads the others' gradients, and with
// --send-interval 3 a step that sends nothing lies between a merge and the next uploads into
// the buffers it read. Both need explicit stream ordering; a missing one shows as runs that
// differ.
TEST_F(CudaTrainingTest, DeterministicRunsAcrossStreamsAreRepeatable) {
  for (const Algorithm algo : {Algorithm::kSync, Algorithm::kAsgd}) {
    SCOPED_TRACE(std::string(to_string(algo)));
    TrainConfig c = cuda_config(algo, 3);
    c.deterministic = true;
    c.send_interval = 3;
    const auto a = testing::observe(run(c));
    for (int repeat = 0; repeat < 3; ++repeat)
      EXPECT_EQ(testing::observe(run(c)), a);
  }
}

TEST_F(CudaTrainingTest, AgreesWithTheHostBackend) {
  TrainConfig c = cuda_config(Algorithm::kLocal, 2);
  c.deterministic = true;
  c.epochs = 2;
  const TrainResult gpu = run(c);
  c.backend = Backend::kHost;
  const TrainResult host = run(c);
  ASSERT_EQ(gpu.history.size(), host.history.size());
  for (std::size_t i = 0; i < gpu.history.size(); ++i) {
    SCOPED_TRACE("evaluation " + std::to_string(i));
    EXPECT_EQ(gpu.history[i].step, host.history[i].step);
    EXPECT_NEAR(gpu.history[i].test_loss, host.history[i].test_loss,
                1e-3 * std::max(1.0, std::abs(host.history[i].test_loss)));
  }
  EXPECT_NEAR(gpu.final_test_accuracy, host.final_test_accuracy, 0.01);
}

TEST_F(CudaTrainingTest, DeterministicResumeEndsBitIdentical) {
  TempDir dir;
  TrainConfig c = cuda_config(Algorithm::kAsgd, 4);
  c.deterministic = true;
  c.epochs = 10;
  c.straggler = {1, 2.0};
  c.checkpoint_every = 20;
  c.checkpoint_dir = dir.file("whole");
  const TrainResult whole = run(c);

  c.checkpoint_dir = dir.file("parts");
  c.faults = {parse_fault("throw:2:97")};
  EXPECT_THROW(run(c), Error);
  c.faults.clear();
  c.resume_dir = c.checkpoint_dir;
  const TrainResult resumed = run(c);
  EXPECT_GE(resumed.resumed_step, 20);
  EXPECT_LE(resumed.resumed_step, 97);
  EXPECT_EQ(resumed.final_test_loss, whole.final_test_loss);
  testing::expect_same_states(read_checkpoint(checkpoint_file(dir.file("whole"), 0, false)),
                              read_checkpoint(checkpoint_file(dir.file("parts"), 0, false)));
}

TEST_F(CudaTrainingTest, DivergenceRestoreOnTheDevice) {
  TempDir dir;
  TrainConfig c = cuda_config(Algorithm::kAsgd, 4);
  c.deterministic = true;
  c.epochs = 10;
  c.on_divergence = DivergencePolicy::kRestore;
  c.faults = {parse_fault("nan:1:50")};
  c.metrics_path = dir.file("m.jsonl");
  const TrainResult r = run(c);
  EXPECT_EQ(r.divergence_restores, 1);
  EXPECT_GE(r.final_test_accuracy, 0.9);
  const std::string event = testing::last_event(c.metrics_path, "divergence");
  EXPECT_THAT(event, HasSubstr("\"worker\":1"));
  EXPECT_THAT(event, HasSubstr("\"step\":60"));
  EXPECT_THAT(event, HasSubstr("\"restored_step\":40"));
}

TEST_F(CudaTrainingTest, DivergenceStopNamesTheWorker) {
  TrainConfig c = cuda_config(Algorithm::kAsgd, 2);
  c.deterministic = true;
  c.faults = {parse_fault("nan:0:30")};
  try {
    run(c);
    FAIL() << "a NaN state must stop the run";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("worker 0"));
  }
}

TEST_F(CudaTrainingTest, KMeansOnBlobsMatchesTheHost) {
  const TrainTest data = split_train_test(make_blobs(20000, 16, 8, 3), 0.1, 1);
  TrainConfig c;
  c.backend = Backend::kCuda;
  c.model = {"kmeans", {}, 8};
  c.batch = 256;
  c.lr = 0.2f;
  c.epochs = 5;
  c.eval_every = 25;
  c.progress = false;
  c.workers = 2;
  c.algorithm = Algorithm::kAsgd;
  c.deterministic = true;
  const TrainResult gpu = train(c, data);
  EXPECT_FALSE(gpu.classifier);
  EXPECT_LT(gpu.final_test_loss, gpu.history.front().test_loss);
  c.backend = Backend::kHost;
  const TrainResult host = train(c, data);
  // The same run up to float rounding (a GEMM's summation order can flip a near-tie in the
  // nearest centre now and then): the objectives agree closely.
  EXPECT_NEAR(gpu.final_test_loss, host.final_test_loss, 0.02 * host.final_test_loss);
}

}  // namespace
}  // namespace asgd
