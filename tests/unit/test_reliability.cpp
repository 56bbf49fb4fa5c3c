// Reliability of a run in one process: checkpoint and resume (bit-identical in deterministic
// mode), the divergence policies, injected faults and the errors they must produce.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/checkpoint.h"
#include "runtime/config.h"
#include "runtime/error.h"
#include "runtime/trainer.h"
#include "tests/common/input_error.h"
#include "tests/common/run_checks.h"
#include "tests/common/separable.h"
#include "tests/common/temp_dir.h"

namespace asgd {
namespace {
using testing::expect_same_states;
using testing::expect_throw;
using ::testing::HasSubstr;
using testing::TempDir;

// 4 workers, 500 rows each: 15 steps of 32 per epoch.
TrainConfig reliability_config(Algorithm algo = Algorithm::kAsgd) {
  TrainConfig c;
  c.model = {"mlp", {16}};
  c.batch = 32;
  c.lr = 0.1f;
  c.epochs = 10;
  c.eval_every = 20;
  c.progress = false;
  c.workers = 4;
  c.algorithm = algo;
  c.message_size = 100;  // partial messages rotating over the state
  c.send_interval = 2;
  c.checkpoint_every = 20;
  return c;
}

// Deterministic, and a worker that diverges is put back to its last good state.
TrainConfig restoring_config() {
  TrainConfig c = reliability_config();
  c.deterministic = true;
  c.on_divergence = DivergencePolicy::kRestore;
  return c;
}

TrainResult run(const TrainConfig& c) {
  return train(c, testing::separable_train_test());
}

// A step in [lo, hi] drawn from gtest's seed (printed with every failure by the caller).
std::int64_t random_step(std::int64_t lo, std::int64_t hi) {
  std::mt19937_64 rng(
      static_cast<std::uint64_t>(::testing::UnitTest::GetInstance()->random_seed()));
  return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
}

// Interrupted at a random step (a worker fails there; the process is SIGKILLed in
// tests/cli/kill_resume.sh), then resumed: the run ends bit-identical to an uninterrupted one.
TEST(ResumeTest, DeterministicResumeEndsBitIdentical) {
  const std::pair<Algorithm, StepOrder> cases[] = {{Algorithm::kAsgd, StepOrder::kShuffled},
                                                   {Algorithm::kAsgdNoFilter, StepOrder::kShuffled},
                                                   {Algorithm::kSync, StepOrder::kShuffled},
                                                   {Algorithm::kAsgd, StepOrder::kLockstep}};
  for (const auto& [algo, order] : cases) {
    SCOPED_TRACE(std::string(to_string(algo)) + " " + std::string(to_string(order)));
    TempDir dir;
    TrainConfig c = reliability_config(algo);
    c.deterministic = true;
    c.step_order = order;
    if (algo == Algorithm::kAsgd) c.straggler = {1, 2.0};  // uneven rounds
    c.checkpoint_dir = dir.file("whole");
    const TrainResult whole = run(c);

    const std::int64_t at = random_step(25, 140);
    SCOPED_TRACE("interrupted at step " + std::to_string(at));
    c.checkpoint_dir = dir.file("parts");
    c.faults = {parse_fault("throw:2:" + std::to_string(at))};
    EXPECT_THROW(run(c), Error);
    c.faults.clear();
    c.resume_dir = c.checkpoint_dir;
    const TrainResult resumed = run(c);
    EXPECT_GE(resumed.resumed_step, 20);
    EXPECT_LE(resumed.resumed_step, at);
    EXPECT_EQ(resumed.final_test_loss, whole.final_test_loss);
    // Every evaluation after the resume point, training loss included, is the uninterrupted
    // run's (the checkpoint is taken after the evaluation at its step).
    std::vector<std::pair<std::int64_t, double>> after_whole, after_resumed;
    for (const EvalPoint& p : whole.history)
      if (p.step > resumed.resumed_step) after_whole.emplace_back(p.step, p.train_loss);
    for (const EvalPoint& p : resumed.history)
      after_resumed.emplace_back(p.step, p.train_loss);
    EXPECT_EQ(after_resumed, after_whole);
    expect_same_states(read_checkpoint(checkpoint_file(dir.file("whole"), 0, false)),
                       read_checkpoint(checkpoint_file(dir.file("parts"), 0, false)));
  }
}

// With threads, how far the other workers got when one fails is up to the scheduler (the
// SIGKILL variant is tests/cli/kill_resume.sh); here a finished run is continued for more
// epochs from its final checkpoint, which holds every worker at its last step.
TEST(ResumeTest, ThreadedRunContinuesFromItsCheckpoint) {
  TempDir dir;
  TrainConfig c = reliability_config();
  c.epochs = 5;
  c.checkpoint_dir = dir.str();
  const TrainResult first = run(c);
  const Checkpoint partial = read_checkpoint(checkpoint_file(dir.str(), 0, false));
  ASSERT_EQ(partial.workers.size(), 4u);
  EXPECT_EQ(partial.workers[0].steps, 75);
  EXPECT_GE(first.checkpoints_written, 1);  // at least the final one
  c.epochs = 10;
  c.resume_dir = dir.str();
  const TrainResult r = run(c);
  EXPECT_EQ(r.resumed_step, 75);
  EXPECT_EQ(r.steps, 150);
  EXPECT_GE(r.final_test_accuracy, 0.9);
  EXPECT_GE(r.checkpoints_written, 1);
  const Checkpoint last = read_checkpoint(checkpoint_file(dir.str(), 0, false));
  EXPECT_EQ(last.workers[0].steps, 150);
}

TEST(ResumeTest, RefusesAnotherRunsCheckpoint) {
  TempDir dir;
  TrainConfig c = reliability_config();
  c.epochs = 2;
  c.checkpoint_dir = dir.str();
  run(c);
  TrainConfig other = c;
  other.checkpoint_dir.clear();
  other.resume_dir = dir.str();
  other.workers = 2;
  other.batch = 16;
  SCOPED_TRACE("a 4-worker checkpoint resumed with 2 workers");
  expect_throw<InputError>([&] { run(other); }, {"workers: checkpoint '4', this run '2'",
                                                 "batch: checkpoint '32', this run '16'"});
  other = c;
  other.model.hidden = {8};
  other.resume_dir = dir.str();
  EXPECT_THROW(run(other), InputError);
}

// A checkpoint with a valid checksum but impossible contents (written by a buggy or hostile
// tool) is refused before any of it is used.
TEST(ResumeTest, ImpossibleContentsAreRefused) {
  TempDir dir;
  TrainConfig c = reliability_config();
  c.epochs = 2;
  c.checkpoint_dir = dir.str();
  run(c);
  const std::string file = checkpoint_file(dir.str(), 0, false);
  const Checkpoint good = read_checkpoint(file);
  c.resume_dir = dir.str();
  const auto expect_refused = [&](Checkpoint bad, const char* what) {
    write_checkpoint(file, bad);
    SCOPED_TRACE(what);
    expect_throw<InputError>([&] { run(c); }, {"checkpoint"});
  };
  Checkpoint bad = good;
  bad.workers[1].parzen_history_seen = -5;  // would index before the ring
  expect_refused(bad, "a negative filter history count");
  bad = good;
  bad.workers[2].params[7] = std::nanf("");
  expect_refused(bad, "a NaN state");
  bad = good;
  bad.workers[0].sampler_order[3] = bad.workers[0].sampler_order[4];
  expect_refused(bad, "a data order that is not a permutation");
  bad = good;
  bad.workers[3].restores = -1;
  expect_refused(bad, "a negative restore count");
  bad = good;
  bad.workers[0].send_cursor = 1 << 30;
  expect_refused(bad, "a send cursor outside the state");
  bad = good;
  bad.workers[1].lr_scale = 1e30f;  // restores only ever lower it from 1
  expect_refused(bad, "a step-size scale above 1");
  bad = good;
  bad.workers[2].steps = std::int64_t{1} << 62;
  expect_refused(bad, "a step count beyond what samples can count");
  bad = good;
  bad.workers[0].staleness_sum_s = std::nan("");
  expect_refused(bad, "a NaN running sum");
  bad = good;
  bad.workers[3].parzen_history[0] = -1.0f;
  expect_refused(bad, "a negative squared distance in the filter history");
  write_checkpoint(file, good);
  EXPECT_NO_THROW(run(c));
}

TEST(ResumeTest, CorruptedOrMissingCheckpointIsAClearError) {
  TempDir dir;
  TrainConfig c = reliability_config();
  c.epochs = 2;
  c.checkpoint_dir = dir.str();
  run(c);
  const std::string file = checkpoint_file(dir.str(), 0, false);
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1000);
    char byte = 0;
    f.read(&byte, 1);
    f.seekp(1000);
    byte = static_cast<char>(byte ^ 0x10);
    f.write(&byte, 1);
  }
  c.resume_dir = dir.str();
  SCOPED_TRACE("a corrupted checkpoint");
  expect_throw<InputError>([&] { run(c); }, {"checksum mismatch", file});
  c.resume_dir = dir.file("nothing-here");
  SCOPED_TRACE("a directory without a checkpoint");
  expect_throw<InputError>([&] { run(c); }, {"no checkpoint"});
}

TEST(DivergenceTest, RestorePolicyRecoversAndLowersTheStepSize) {
  TempDir dir;
  TrainConfig c = restoring_config();
  c.faults = {parse_fault("nan:1:50")};
  c.metrics_path = dir.file("m.jsonl");
  const TrainResult r = run(c);
  EXPECT_EQ(r.divergence_restores, 1);
  EXPECT_GE(r.final_test_accuracy, 0.9);
  EXPECT_EQ(r.steps, 150);
  const std::string event = testing::last_event(c.metrics_path, "divergence");
  // Found at the first check after the fault (every eval-every = 20 steps), put back to the
  // state of the check before it, at half the step size.
  EXPECT_THAT(event, HasSubstr("\"worker\":1"));
  EXPECT_THAT(event, HasSubstr("\"step\":60"));
  EXPECT_THAT(event, HasSubstr("\"restored_step\":40"));
  EXPECT_THAT(event, HasSubstr("\"lr\":0.05"));
}

TEST(DivergenceTest, StopPolicyNamesTheWorkerAndStep) {
  TrainConfig c = reliability_config();
  // Worker 0: with threads, it alone is sure to reach a given step (it decides the end).
  c.faults = {parse_fault("nan:0:40")};
  SCOPED_TRACE("a NaN in worker 0's state, --on-divergence stop");
  expect_throw<Error>([&] { run(c); },
                      {"worker 0 has NaN or Inf", "at step 40", "--on-divergence restore"});
}

TEST(DivergenceTest, RestoresAreBounded) {
  TrainConfig c = reliability_config();
  c.lr = 1e30f;  // diverges again after every restore
  c.on_divergence = DivergencePolicy::kRestore;
  c.max_restores = 3;
  SCOPED_TRACE("a run that diverges after every restore");
  expect_throw<Error>([&] { run(c); }, {"after 3 restores"});
}

TEST(DivergenceTest, CheckpointsNeverHoldANonFiniteState) {
  TempDir dir;
  TrainConfig c = restoring_config();
  // Checkpoints at 15 and 30; the NaN of step 30 is not at one of worker 0's divergence checks
  // (every 20 steps), and the run ends before the next one: the checkpoint of step 30 must not
  // be written, and the one of step 15 stays.
  c.checkpoint_every = 15;
  c.faults = {parse_fault("nan:0:30"), parse_fault("throw:0:35")};
  c.checkpoint_dir = dir.str();
  EXPECT_THROW(run(c), Error);
  const Checkpoint ck = read_checkpoint(checkpoint_file(dir.str(), 0, false));
  ASSERT_EQ(ck.workers[0].steps, 15);
  EXPECT_EQ(ck.workers[0].restores, 0);
  for (const WorkerState& w : ck.workers)
    for (const float v : w.params)
      ASSERT_TRUE(std::isfinite(v)) << "worker " << w.id;
}

TEST(DivergenceTest, CheckpointsDoNotChangeTheRun) {
  TempDir dir;
  TrainConfig c = restoring_config();
  // The NaN of step 50 falls on a checkpoint (every 25) ten steps before the divergence check
  // finds it: whether checkpoints are taken must not change when the worker is restored.
  c.faults = {parse_fault("nan:1:50")};
  c.checkpoint_every = 25;
  c.checkpoint_dir = dir.str();
  const TrainResult with = run(c);
  c.checkpoint_dir.clear();
  const TrainResult without = run(c);
  EXPECT_EQ(with.divergence_restores, 1);
  EXPECT_EQ(testing::observe(with), testing::observe(without));
}

// A divergence found after a resume puts the worker back where the uninterrupted run does:
// the checkpoint carries the last good state. Here the checkpoint of step 50 falls between
// worker 1's checks at 40 and 60; its NaN of step 55 is found at 60 and restored to the state
// of 40 (before the last good state was checkpointed, the resumed run restored that of 50).
TEST(ResumeTest, ResumedRunRestoresTheSameLastGoodState) {
  TempDir dir;
  TrainConfig c = restoring_config();
  c.checkpoint_every = 25;
  c.faults = {parse_fault("nan:1:55")};
  c.checkpoint_dir = dir.file("whole");
  c.metrics_path = dir.file("whole.jsonl");
  const TrainResult whole = run(c);
  ASSERT_EQ(whole.divergence_restores, 1);
  EXPECT_THAT(testing::last_event(c.metrics_path, "divergence"), HasSubstr("\"restored_step\":40"));

  c.checkpoint_dir = dir.file("parts");
  c.faults = {parse_fault("nan:1:55"), parse_fault("throw:2:57")};
  EXPECT_THROW(run(c), Error);
  c.faults = {parse_fault("nan:1:55")};
  c.resume_dir = c.checkpoint_dir;
  c.metrics_path = dir.file("resumed.jsonl");
  const TrainResult resumed = run(c);
  EXPECT_EQ(resumed.resumed_step, 50);
  EXPECT_EQ(resumed.divergence_restores, 1);
  EXPECT_THAT(testing::last_event(c.metrics_path, "divergence"), HasSubstr("\"restored_step\":40"));
  EXPECT_EQ(resumed.final_test_loss, whole.final_test_loss);
  expect_same_states(read_checkpoint(checkpoint_file(dir.file("whole"), 0, false)),
                     read_checkpoint(checkpoint_file(dir.file("parts"), 0, false)));
}

TEST(FaultTest, AFailingWorkerEndsTheRunWithItsName) {
  TrainConfig c = reliability_config();
  c.faults = {parse_fault("throw:0:30")};
  SCOPED_TRACE("worker 0 fails");
  expect_throw<Error>([&] { run(c); }, {"worker 0 failed", "at step 30"});
}

TEST(FaultTest, ParsesAndRejectsFaultSpecifications) {
  const Fault f = parse_fault("forge-offset:2:5");
  EXPECT_EQ(f.kind, "forge-offset");
  EXPECT_EQ(f.worker, 2);
  EXPECT_EQ(f.at, 5);
  EXPECT_TRUE(f.on_wire());
  EXPECT_FALSE(parse_fault("kill:0:9").on_wire());
  for (const char* bad :
       {"nan", "nan:1", "melt:1:5", "nan:-1:5", "nan:1:0", "nan:1:2.5", "nan:x:5"})
    EXPECT_THROW(parse_fault(bad), InputError) << bad;
  TrainConfig c = reliability_config();
  c.faults = {parse_fault("corrupt:1:3")};
  SCOPED_TRACE("a wire fault in one process");
  expect_throw<InputError>([&] { run(c); }, {"MPI transport"});
  c.faults = {parse_fault("nan:7:3")};
  EXPECT_THROW(run(c), InputError);  // no worker 7
  c = reliability_config(Algorithm::kSync);
  c.on_divergence = DivergencePolicy::kRestore;
  EXPECT_THROW(run(c), InputError);
}

}  // namespace
}  // namespace asgd
