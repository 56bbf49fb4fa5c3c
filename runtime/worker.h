// One worker of a run: its device stream, model, state, shard and the per-step algorithm of
// DESIGN.md section 1 — local gradient, collect fresh messages, Parzen-window test, merge
// with the SGD step, send a range of the state every k steps — or one of the baselines.
//
// Ownership: a Worker owns its stream, model, buffers and resident data; it borrows the
// Transport, which must outlive it. Thread-safety: a Worker is driven by one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "comm/transport.h"
#include "kernels/models/model.h"
#include "kernels/parzen.h"
#include "runtime/buffer.h"
#include "runtime/checkpoint.h"
#include "runtime/config.h"
#include "runtime/data/device_dataset.h"
#include "runtime/balancer.h"
#include "runtime/trace.h"

namespace asgd {

// Builds a worker's model on its stream. `train` is the whole training set, the same for
// every worker, so that data-dependent initialisations (K-Means draws its centres from it)
// agree. Research code passes its own to train() to use its own model.
using ModelFactory = std::function<std::unique_ptr<Model>(
    const Stream& stream, std::int64_t input_dim, std::int32_t classes, std::int64_t max_batch,
    const Dataset& train)>;

// The built-in models of config.model.
ModelFactory builtin_model_factory(const ModelSpec& spec);

// Communication counters of one worker since the start (host copies, read at evaluations).
struct WorkerCounters {
  std::int64_t sent = 0;
  std::int64_t bytes_sent = 0;
  std::int64_t received = 0;
  std::int64_t accepted = 0;
  std::int64_t rejected_direction = 0;
  std::int64_t rejected_window = 0;
  std::int64_t nonfinite = 0;
  std::int64_t malformed = 0;      // ranges outside the state: dropped before any test
  double staleness_sum_s = 0;      // sum over received messages of (use time - send time)
  double step_gap_sum = 0;         // sum over received messages of (own step - sender step)
};

// An evaluation of the worker's current state on the test set.
struct WorkerEval {
  double loss = 0;      // mean test loss (the objective for non-classifiers)
  double accuracy = 0;  // classifiers only
  double train_loss = 0;  // mean training loss since the previous evaluation (NaN if none)
  std::int64_t train_steps = 0;  // steps since the previous evaluation
};

// The steps of `epochs` passes over a shard of `steps_per_epoch` batches: at least 1, and at
// most 2^53 / batch, so that the samples (steps * batch) stay exact; --epochs inf therefore
// runs until another stop (target, time). Throws asgd::Error for epochs <= 0 or NaN or batch < 1.
std::int64_t steps_for_epochs(double epochs, std::int64_t steps_per_epoch, std::int64_t batch);

class Worker {
 public:
  // `shard` is this worker's part of `train`, which only the model factory sees. `device` is
  // the CUDA ordinal for the cuda backend (ignored on the host).
  Worker(int id, int device, const TrainConfig& config, const Dataset& train, const Dataset& shard,
         const Dataset& test, const ModelFactory& factory);
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker();

  // Connects the worker to its peers (algorithms that communicate).
  void attach(Transport* transport) { transport_ = transport; }
  // Records this worker's steps, sends and merges on `lane` (--trace); before the first step.
  void set_trace(const TraceLane& lane) { trace_ = lane; }
  // The load balancer's board: with `per_peer_settings` the worker sends to each peer on that
  // peer's schedule (message size, interval); otherwise it keeps the fixed --message-size and
  // --send-interval and uses the board's bandwidth estimates only for --peers bandwidth.
  void set_peer_board(const PeerBoard* board, bool per_peer_settings) {
    board_ = board;
    per_peer_settings_ = per_peer_settings;
  }

  // One step of asgd, asgd-nofilter, simu or local; with send_now false the message that the
  // schedule has due is left for send_due() (deterministic lockstep rounds).
  void step(bool send_now = true);
  // Sends what the schedule has due at the current step.
  void send_due();
  // sync: the two halves of a step around the gradient exchange.
  void compute_gradient();
  void apply_mean_gradient(const std::vector<Worker*>& all);
  // sync across processes: the gradient goes out to be summed over `count` workers, and the
  // sum comes back to be applied (host memory; synchronises).
  void download_gradient(float* out) const;  // parameter_count() floats
  void apply_gradient_sum(const std::vector<float>& sum, int count);

  // The training loss since the previous evaluation, without one on the test set (loss and
  // accuracy NaN); starts the next period as evaluate() does.
  WorkerEval training_loss();
  WorkerEval evaluate();
  WorkerCounters counters();
  // Compute spent on communication per element merged, on this worker's thread: testing and
  // merging what it receives beyond a plain step, and copying what it sends per element it
  // merges (host backend; close to zero on a GPU, whose launches return at once). Each is the
  // element-weighted median over the last few events (CostMedian), not a sum, so that a
  // single event whose CPU time a hypervisor inflated does not price every message; negative
  // until three merges were timed (CostMedian::kMinEvents). Then the elements tested since the
  // start; of those, the elements judged after the window's warm-up and how many of them the test
  // accepted (counted on the host backend only, where the decisions are in host memory at no cost).
  double comm_seconds_per_element() const;
  std::int64_t comm_elements() const { return comm_elements_; }
  std::int64_t comm_judged_elements() const { return comm_judged_elements_; }
  std::int64_t comm_accepted_elements() const { return comm_accepted_elements_; }

  int id() const { return id_; }
  std::int64_t steps() const { return steps_; }
  std::int64_t steps_at_last_eval() const { return steps_at_last_eval_; }
  std::int64_t max_steps() const { return max_steps_; }
  std::int64_t parameter_count() const { return n_; }
  const Model& model() const { return *model_; }
  Model& model() { return *model_; }
  const Stream& stream() const { return stream_; }
  float* params() { return params_.data(); }
  const float* gradient() const { return grad_.data(); }
  // Copies the state to host memory (synchronises).
  std::vector<float> download_state() const;
  void upload_state(const std::vector<float>& state);

  // Checkpoints (synchronise). save_state() takes everything the worker needs to continue
  // exactly; load_state() puts it back — all of it, or with `whole` false only the model
  // state, step count and step size (another rank's checkpoint: this worker keeps its own
  // data order and generators). Throws InputError when the state does not fit this worker.
  WorkerState save_state();
  void load_state(const WorkerState& state, bool whole);

  // Divergence (--on-divergence). check_finite() tests the state and the training loss since
  // the last evaluation for NaN/Inf: one pass over the state that also snapshots it (with the
  // restore policy), and one small read. Finite: the snapshot becomes the last good state.
  bool check_finite();
  // The same test without touching the last good state: what a checkpoint asks, so that
  // taking checkpoints never changes the run (the snapshot moves only on the regular checks).
  bool state_is_finite();
  // Puts the last good state back and multiplies the step size by `lr_factor`; returns the
  // step at which that state was taken.
  std::int64_t restore_last_good(float lr_factor);
  float lr() const { return lr_; }
  std::int64_t restores() const { return restores_; }
  // Fault injection (--fault nan:W:STEP): a NaN appears in the state, as after an overflow.
  void inject_nan();
  // Ends the loan of a transport's send buffer before the transport finishes, keeping a range
  // staged but not yet posted (moved into the worker's own staging), so that a final
  // checkpoint still holds it.
  void return_send_buffer();
  // Drops a range staged but not yet posted, ending its loan: before the transport is
  // destroyed after an error (a loan must not outlive it), and when a state is loaded.
  void drop_pending_send() noexcept;

 private:
  // The mean training loss since the previous evaluation from its sum, and the start of the
  // next period (the loss accumulator zeroed).
  WorkerEval end_training_period(double loss_sum);
  // The non-finite test; with `snapshot`, also copies the state into snapshot_ in the same pass.
  bool finite_now(bool snapshot);
  void exchange_and_update();
  int choose_peer();
  // Sends `message` elements from `cursor` (which then moves on, wrapping) to `peer`.
  void send(int peer, std::int64_t message, std::int64_t& cursor);
  void flush_pending_send();
  // Where the pending range is staged on the host: the lent buffer or send_staging_.
  float* pending_payload();
  double cost_clock() const;  // seconds, see cpu_cost_clock_
  // An adversary's transformation of what it is about to send (config.adversary).
  void corrupt(float* data, std::int64_t length);

  const int id_;
  const TrainConfig& config_;
  Stream stream_;
  DeviceDataset train_;
  DeviceDataset test_;
  std::unique_ptr<Model> model_;
  std::int64_t n_;
  std::int64_t max_steps_;
  DeviceBuffer<float> params_;
  DeviceBuffer<float> grad_;
  DeviceBuffer<float> mean_grad_;  // sync only
  BatchSampler sampler_;
  DeviceBuffer<double> loss_;           // [0] training loss since last eval, [1] test loss
  DeviceBuffer<std::int64_t> correct_;  // test
  std::int64_t steps_ = 0;
  std::int64_t steps_at_last_eval_ = 0;
  float lr_scale_ = 1.0f;
  float lr_;  // config.lr * lr_scale_
  // What communication costs is timed on this thread's CPU clock where the worker computes on
  // this thread alone (host backend, one thread): on a busy machine a thread descheduled in
  // the middle of a merge would otherwise count the time others ran as the merge's cost. Wall
  // time otherwise (OpenMP helpers; a GPU, whose launches return at once).
  const bool cpu_cost_clock_;
  std::int64_t restores_ = 0;
  // The divergence check: the state of the last finite check (restore policy only), the
  // scratch the next check copies into, and the count of non-finite elements.
  DeviceBuffer<float> good_;
  DeviceBuffer<float> snapshot_;
  std::int64_t good_step_ = 0;
  DeviceBuffer<std::int64_t> nonfinite_;

  TraceLane trace_;
  CostMedian merge_cost_;  // per element merged, beyond a plain step
  CostMedian send_cost_;   // per element sent (the host's copy into the transport)
  std::int64_t comm_elements_ = 0;
  std::int64_t comm_sent_elements_ = 0;
  std::int64_t comm_judged_elements_ = 0;
  std::int64_t comm_accepted_elements_ = 0;
  std::int64_t messages_tested_ = 0;
  double plain_step_s_ = 0;  // recent time of an SGD step without messages

  // Communication.
  Transport* transport_ = nullptr;
  std::mt19937_64 peer_rng_;
  std::mt19937_64 adversary_rng_;
  std::int64_t send_cursor_ = 0;
  static constexpr int kMaxPeerWeights = 1024;
  const PeerBoard* board_ = nullptr;
  bool per_peer_settings_ = false;
  std::vector<std::int64_t> peer_cursor_;  // per-peer schedules: where each peer's range is
  WorkerCounters counters_;
  ParzenParams parzen_;
  DeviceBuffer<double> stats_;              // 4 per message
  DeviceBuffer<std::int32_t> accept_;
  DeviceBuffer<float> history_;
  DeviceBuffer<std::int64_t> history_seen_;
  DeviceBuffer<std::int64_t> parzen_counters_;
  // CUDA only: a copy stream beside the compute stream. Received payloads go host-to-device
  // (device-to-device from the NCCL transport) on it (the compute stream waits for `received_`
  // before the test); the outgoing range goes device-to-host into pinned staging after `computed_`
  // (the state as of the send), and is posted one step later once `staged_` has completed. The next
  // update of the state waits for `staged_`, so the copy never reads a state being overwritten.
  std::unique_ptr<Stream> copy_stream_;
  std::vector<DeviceBuffer<float>> receive_;
  std::unique_ptr<Event> received_;
  // Recorded on the compute stream after a merge that read `receive_`: the next uploads into
  // those buffers wait for it (a step that sends nothing puts no other order between them).
  std::unique_ptr<Event> merged_;
  bool merge_in_flight_ = false;
  std::unique_ptr<Event> computed_;
  PinnedBuffer<float> send_staging_;
  // Where the transport lends its send buffers (MPI), the pending range is staged in one of
  // them instead; the loan ends when it is posted, returned (return_send_buffer()) or
  // dropped (drop_pending_send()).
  LentBuffer lent_;
  // For a transport that moves payloads in GPU memory: the range goes device to device here
  // instead, and is posted from here (staging_on_device_ says which staging holds it).
  DeviceBuffer<float> send_staging_device_;
  bool staging_on_device_ = false;
  std::unique_ptr<Event> staged_;
  bool staging_in_flight_ = false;
  bool send_pending_ = false;
  MessageHeader pending_header_;
  int pending_peer_ = -1;
};

}  // namespace asgd
