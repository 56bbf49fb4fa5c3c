// Checkpoints: everything a run needs to continue where it stopped — each worker's state,
// step counters, random generators, data position, filter history and counters, plus (in
// deterministic mode) the messages delivered but not yet read — in one versioned file.
//
// File layout (little-endian): "ASGDCKPT", u32 version, u32 header size (32), u64 body size,
// u64 XXH3-64 of the body (seeded with "ASGDCKPT" read as a big-endian u64), then the body. A
// reader checks all of it before it trusts a byte, and every length inside the body against what is
// left, so a truncated, corrupted or hostile file gives an InputError that names the file and what
// is wrong, never a crash.
//
// Writes are atomic: the file is written under a temporary name beside the target, fsynced,
// renamed over it and the directory fsynced, so a crash at any moment leaves the previous
// checkpoint or the new one, never a broken one.
//
// Thread-safety: the free functions are reentrant; CheckpointWriter is used by one thread at
// a time (its own background thread does the writing).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "comm/message.h"
#include "runtime/error.h"

namespace asgd {

// One worker's training state (Worker::save_state / load_state).
struct WorkerState {
  int id = 0;
  std::int64_t steps = 0;
  std::int64_t steps_at_last_eval = 0;
  float lr_scale = 1.0f;      // lowered by each --on-divergence restore
  std::int64_t restores = 0;  // divergences recovered from
  std::vector<float> params;
  // std::mt19937_64 states in their standard text form.
  std::string sampler_rng;
  std::string peer_rng;
  std::string adversary_rng;
  std::vector<std::int32_t> sampler_order;  // this epoch's permutation of the shard
  std::int64_t sampler_position = 0;
  std::int64_t sampler_epoch = -1;
  std::int64_t send_cursor = 0;
  std::vector<std::int64_t> peer_cursor;
  double train_loss_sum = 0;  // since the last evaluation
  std::vector<float> parzen_history;
  std::int64_t parzen_history_seen = 0;
  std::vector<std::int64_t> parzen_counters;
  std::int64_t sent = 0, bytes_sent = 0, received = 0, malformed = 0;
  double staleness_sum_s = 0, step_gap_sum = 0;
  // A GPU worker's range staged for sending at its next step.
  bool send_pending = false;
  int pending_peer = -1;
  MessageHeader pending_header;
  std::vector<float> pending_payload;
  // --on-divergence restore: the state of the last divergence check that passed, and its
  // step (what a divergence found after the resume puts the worker back to). Empty otherwise,
  // and in checkpoints of format version 1.
  std::vector<float> good_params;
  std::int64_t good_step = 0;
};

// A message delivered to `receiver` and not yet read by it (deterministic mode).
struct UnreadMessage {
  int receiver = 0;
  MessageHeader header;
  std::vector<float> payload;
};

struct Checkpoint {
  // 2: a worker's last good state (WorkerState::good_params). Version 1 is still read.
  static constexpr std::uint32_t kVersion = 2;
  // The format version of the file it was read from (encode_checkpoint writes kVersion).
  std::uint32_t version = kVersion;
  // The settings a resumed run must share with the one that wrote this, as (name, value);
  // the reader's caller compares them (check_resumable).
  std::vector<std::pair<std::string, std::string>> identity;
  std::uint64_t fingerprint = 0;  // the model's (Model::fingerprint)
  std::int64_t parameters = 0;
  int rank = 0;  // the process that wrote it (across processes)
  int ranks = 1;
  double elapsed_s = 0;  // training time before this checkpoint
  std::string run_rng;   // deterministic mode: the generator of the worker order
  std::vector<WorkerState> workers;
  std::vector<UnreadMessage> unread;
  std::vector<std::int32_t> collect_starts;  // deterministic: each receiver's next sender
  std::string settings;  // the run's settings as one line of text, for people reading the file
};

// The file of `dir`'s latest checkpoint: checkpoint.asgd, or checkpoint.rankR.asgd when every
// rank writes its own (--checkpoint all).
std::string checkpoint_file(const std::string& dir, int rank, bool per_rank);

// Serialises `c` and writes it to `path` atomically (see the file comment). Throws Error
// naming the path and the failing call (disk full, permissions); the previous file survives.
void write_checkpoint(const std::string& path, const Checkpoint& c);
std::string encode_checkpoint(const Checkpoint& c);

// Reads and verifies a checkpoint. Throws InputError for a missing, truncated, corrupted,
// foreign or newer-version file.
Checkpoint read_checkpoint(const std::string& path);
// The same for bytes in memory; `origin` names them in errors. `verify_checksum` false lets
// a fuzzer reach the parser behind the checksum (which must then hold on its own).
Checkpoint decode_checkpoint(const std::string& bytes, const std::string& origin,
                             bool verify_checksum = true);

// Throws InputError listing every identity setting in which `c` (read from `path`) differs
// from `expected`, with what to do.
void check_resumable(const Checkpoint& c, const std::string& path,
                     const std::vector<std::pair<std::string, std::string>>& expected);

// The rounds of a process's checkpoints when its workers run on threads: every worker adds its
// state for a round at its own step boundary, without waiting for the others, and the round
// is complete once each has added one. A newer round drops an older one still incomplete (a
// straggler's). A worker that has run out of steps (a faster worker, or a smaller shard: it
// finishes its epochs before worker 0 ends the run) retires: its final state stands in for it
// in the open round and in every later one, which without it would never complete, so that
// no checkpoint was written from then on. Thread-safety: every member may be called from any
// thread.
class CheckpointRounds {
 public:
  // `complete` receives each completed round's states in worker order. It is called under the
  // rounds' lock, so that rounds are handed on in the order they completed: a writer that
  // keeps the latest submission must never get an older round after a newer one.
  CheckpointRounds(std::size_t workers, std::function<void(std::vector<WorkerState>)> complete);

  // Adds worker i's state for `round` (> 0); a state for a round older than the open one is
  // dropped. When this completes the round, it goes to `complete` and the next one opens.
  void add(std::size_t i, std::int64_t round, WorkerState state);
  // Worker i takes no more steps: `final_state` is its state for the open round, if it lacks
  // one, and for every later round.
  void retire(std::size_t i, WorkerState final_state);

 private:
  // mutex_ held: hands a complete round on and opens the next.
  void complete_if_full();
  // mutex_ held: `round` opens, holding the retired workers' states.
  void open(std::int64_t round);

  std::mutex mutex_;
  const std::size_t workers_;
  const std::function<void(std::vector<WorkerState>)> complete_;
  std::int64_t round_ = 0;  // the open round; 0 before the first
  std::vector<std::optional<WorkerState>> states_;
  std::vector<std::optional<WorkerState>> retired_;
  std::size_t have_ = 0;
};

// Writes checkpoints on a background thread, so that fsync never stalls a worker. A checkpoint
// submitted while an older one still waits replaces it (the newer state is what matters).
// The first error of the thread is rethrown by the next submit() or drain().
class CheckpointWriter {
 public:
  CheckpointWriter();
  ~CheckpointWriter();  // writes what was submitted (unless a write failed), then stops
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  void submit(std::string path, Checkpoint checkpoint);
  // Blocks until every submitted checkpoint is on disk; rethrows a write error.
  void drain();
  std::int64_t written() const;
  std::int64_t replaced() const;  // submitted, then superseded before being written

 private:
  void loop();

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::optional<std::pair<std::string, Checkpoint>> next_;
  bool busy_ = false;
  bool stop_ = false;
  std::int64_t written_ = 0;
  std::int64_t replaced_ = 0;
  ErrorSlot error_;
  std::thread thread_;
};

}  // namespace asgd
