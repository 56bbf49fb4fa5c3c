#include "runtime/worker.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <limits>

#include "kernels/reduce.h"
#include "kernels/sgd.h"
#include "runtime/error.h"
#include "runtime/random.h"

namespace asgd {
namespace {
// Evaluation runs in chunks of the model's largest batch; larger chunks make it cheaper.
constexpr std::int64_t kEvalChunk = 1024;

// The clock of send times: steady, and shared by every worker of this process.
double monotonic_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Stream worker_stream(const TrainConfig& c, int device) {
  if (c.backend == Backend::kCuda) {
    const int devices = cuda_device_count();
    if (devices == 0)
      ASGD_INPUT_ERROR("--backend cuda: {}; use --backend host", cuda_unavailable_reason());
    if (device < 0 || device >= devices)
      ASGD_INPUT_ERROR("CUDA device {} does not exist; this machine has {}", device, devices);
    return Stream::cuda(device);
  }
  return Stream::host(c.threads);
}
}  // namespace

std::int64_t steps_for_epochs(double epochs, std::int64_t steps_per_epoch, std::int64_t batch) {
  ASGD_CHECK(epochs > 0 && steps_per_epoch >= 0 && batch >= 1,
             "steps_for_epochs({}, {}, {}): epochs must be positive and batch at least 1", epochs,
             steps_per_epoch, batch);
  // Steps times batch (the samples) must stay exact in a double and an int64.
  const double most = std::floor(9007199254740992.0 / static_cast<double>(batch));
  const double steps = std::round(epochs * static_cast<double>(steps_per_epoch));
  return static_cast<std::int64_t>(std::clamp(steps, 1.0, most));
}

namespace {
std::unique_ptr<Model> checked_model(std::unique_ptr<Model> model, const Dataset& shard,
                                     const Dataset& test, std::int64_t batch) {
  check_model(model.get(), shard.cols, std::max(shard.classes, test.classes), batch);
  return model;
}
}  // namespace

ModelFactory builtin_model_factory(const ModelSpec& spec) {
  return [spec](const Stream& stream, std::int64_t input_dim, std::int32_t classes,
                std::int64_t max_batch, const Dataset& train) {
    return make_model(spec, input_dim, classes, max_batch, stream, &train);
  };
}

Worker::Worker(int id, int device, const TrainConfig& config, const Dataset& train,
               const Dataset& shard, const Dataset& test, const ModelFactory& factory)
    : id_(id),
      config_(config),
      stream_(worker_stream(config, device)),
      train_(shard, stream_),
      test_(test, stream_),
      model_(checked_model(factory(stream_, shard.cols, std::max(shard.classes, test.classes),
                                   std::max<std::int64_t>(config.batch, kEvalChunk), train),
                           shard, test, config.batch)),
      n_(model_->parameter_count()),
      max_steps_(steps_for_epochs(config.epochs, shard.rows / config.batch, config.batch)),
      params_(stream_.backend(), stream_.device(), static_cast<std::size_t>(n_)),
      grad_(stream_.backend(), stream_.device(), static_cast<std::size_t>(n_)),
      sampler_(train_, config.batch, config.seed + 1 + 7919 * static_cast<std::uint64_t>(id),
               stream_),
      loss_(stream_.backend(), stream_.device(), 2),
      correct_(stream_.backend(), stream_.device(), 1),
      lr_(config.lr),
      cpu_cost_clock_(config.backend == Backend::kHost && config.threads == 1),
      nonfinite_(stream_.backend(), stream_.device(), 1),
      peer_rng_(config.seed * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(id)),
      adversary_rng_(config.seed + 0xADu),
      stats_(stream_.backend(), stream_.device(), 4 * kMaxMergeMessages),
      accept_(stream_.backend(), stream_.device(), kMaxMergeMessages),
      history_(stream_.backend(), stream_.device(),
               static_cast<std::size_t>(config.window_history)),
      history_seen_(stream_.backend(), stream_.device(), 1),
      parzen_counters_(stream_.backend(), stream_.device(), kParzenCounterCount) {
  // Every worker starts from the same state: the seed, not the worker, picks it.
  model_->init(params_.data(), config.seed, stream_);
  loss_.zero(stream_);
  correct_.zero(stream_);
  history_.zero(stream_);
  history_seen_.zero(stream_);
  parzen_counters_.zero(stream_);
  parzen_.eps = lr_;
  parzen_.window = config.window;
  parzen_.margin = config.direction_margin;
  parzen_.history = config.window_history;
  parzen_.warmup = config.window_warmup;
  parzen_.filter = config.algorithm != Algorithm::kAsgdNoFilter;
  if (!stream_.is_host()) {
    copy_stream_ = std::make_unique<Stream>(Stream::cuda(stream_.device()));
    received_ = std::make_unique<Event>(stream_.backend(), stream_.device());
    merged_ = std::make_unique<Event>(stream_.backend(), stream_.device());
    computed_ = std::make_unique<Event>(stream_.backend(), stream_.device());
    staged_ = std::make_unique<Event>(stream_.backend(), stream_.device());
  }
  if (config.on_divergence == DivergencePolicy::kRestore) {
    good_ = DeviceBuffer<float>(stream_.backend(), stream_.device(), static_cast<std::size_t>(n_));
    snapshot_ = DeviceBuffer<float>(stream_.backend(), stream_.device(), static_cast<std::size_t>(n_));
    copy_async(good_.data(), params_.data(), good_.bytes(), stream_);
  }
  stream_.synchronize();
}

Worker::~Worker() = default;

std::vector<float> Worker::download_state() const {
  std::vector<float> host(static_cast<std::size_t>(n_));
  params_.download(host.data(), host.size(), stream_);
  stream_.synchronize();
  return host;
}

void Worker::upload_state(const std::vector<float>& state) {
  ASGD_CHECK(static_cast<std::int64_t>(state.size()) == n_, "state of {} for a model of {}",
             state.size(), n_);
  params_.upload(state.data(), state.size(), stream_);
  stream_.synchronize();
}

void Worker::compute_gradient() {
  const Batch batch = sampler_.next(stream_);
  model_->loss_and_gradient(params_.data(), batch, grad_.data(), loss_.data(), stream_);
}

void Worker::step(bool send_now) {
  TraceScope scope(trace_, "step", {"step", steps_});
  {
    TraceScope gradient(trace_, "gradient");
    compute_gradient();
  }
  if (communicates(config_.algorithm) && transport_) {
    exchange_and_update();
  } else {
    sgd_step(stream_, n_, lr_, grad_.data(), params_.data());
  }
  ++steps_;
  if (send_now) send_due();  // which sends nothing without communication
}

void Worker::send_due() {
  if (!communicates(config_.algorithm) || !transport_) return;
  const int workers = transport_->size();
  if (workers < 2) return;
  if (board_ && per_peer_settings_) {
    // The load balancer's schedule: each peer its own message size and interval.
    if (peer_cursor_.size() != static_cast<std::size_t>(workers))
      peer_cursor_.assign(static_cast<std::size_t>(workers), 0);
    for (int peer = 0; peer < workers; ++peer) {
      if (peer == id_) continue;
      const PeerSetting s = board_->get(id_, peer);
      // Staggered by peer, so that equal intervals spread the sends over the steps.
      if (s.message > 0 && (steps_ + peer) % s.interval == 0)
        send(peer, s.message, peer_cursor_[static_cast<std::size_t>(peer)]);
    }
    return;
  }
  if (steps_ % config_.send_interval != 0) return;
  const std::int64_t m = config_.message_size > 0 ? config_.message_size : n_;
  send(choose_peer(), m, send_cursor_);
}

int Worker::choose_peer() {
  const int peers = transport_->size() - 1;
  if (board_ && config_.peer_choice == PeerChoice::kBandwidth) {
    // In proportion to the estimated bandwidth; links not yet measured count as the best one.
    double best = 0;
    for (int p = 0; p <= peers; ++p)
      if (p != id_) best = std::max(best, std::min(board_->bandwidth(id_, p), 1e12));
    double total = 0;
    double weight[kMaxPeerWeights];
    const int n = std::min(peers + 1, kMaxPeerWeights);
    for (int p = 0; p < n; ++p) {
      const double b = std::min(board_->bandwidth(id_, p), 1e12);
      weight[p] = p == id_ ? 0.0 : (b > 0 ? b : (best > 0 ? best : 1.0));
      total += weight[p];
    }
    if (total > 0) {
      double x = std::uniform_real_distribution<double>(0.0, total)(peer_rng_);
      for (int p = 0; p < n; ++p) {
        if (x < weight[p]) return p;
        x -= weight[p];
      }
    }
  }
  // Uniform over the others: draw among peers-many and skip over ourselves.
  int peer = static_cast<int>(peer_rng_() % static_cast<std::uint64_t>(peers));
  if (peer >= id_) ++peer;
  return peer;
}

void Worker::apply_mean_gradient(const std::vector<Worker*>& all) {
  // Every worker sums the gradients in the same order, so all states stay bit-identical.
  // The caller has made every gradient complete and visible (barrier, stream synchronised).
  if (mean_grad_.empty())
    mean_grad_ = DeviceBuffer<float>(stream_.backend(), stream_.device(), static_cast<std::size_t>(n_));
  const float scale = 1.0f / static_cast<float>(all.size());
  axpby(stream_, n_, scale, all[0]->gradient(), 0.0f, mean_grad_.data());
  for (std::size_t i = 1; i < all.size(); ++i)
    axpby(stream_, n_, scale, all[i]->gradient(), 1.0f, mean_grad_.data());
  sgd_step(stream_, n_, lr_, mean_grad_.data(), params_.data());
  ++steps_;
}

void Worker::download_gradient(float* out) const {
  grad_.download(out, static_cast<std::size_t>(n_), stream_);
  stream_.synchronize();
}

void Worker::apply_gradient_sum(const std::vector<float>& sum, int count) {
  ASGD_CHECK(static_cast<std::int64_t>(sum.size()) >= n_ && count >= 1,
             "gradient sum of {} for a model of {}", sum.size(), n_);
  if (mean_grad_.empty())
    mean_grad_ = DeviceBuffer<float>(stream_.backend(), stream_.device(), static_cast<std::size_t>(n_));
  mean_grad_.upload(sum.data(), static_cast<std::size_t>(n_), stream_);
  sgd_step(stream_, n_, lr_ / static_cast<float>(count), mean_grad_.data(), params_.data());
  stream_.synchronize();  // `sum` may be reused by the caller
  ++steps_;
}

void Worker::exchange_and_update() {
  TraceScope scope(trace_, "exchange");
  flush_pending_send();
  const Message* messages[kMaxMergeMessages];
  // The previous step's copies of received payloads must be done before their slots are
  // handed back (collect() recycles them).
  if (received_) received_->synchronize();
  const int count = transport_->collect(id_, messages, kMaxMergeMessages);
  MergeRange ranges[kMaxMergeMessages];
  std::int64_t lengths[kMaxMergeMessages];
  int used = 0;
  for (int i = 0; i < count; ++i) {
    const MessageHeader& h = messages[i]->header;
    ++counters_.received;
    if (h.offset < 0 || h.length < 1 || h.offset + h.length > n_) {
      ++counters_.malformed;  // nothing malformed reaches the model
      continue;
    }
    trace_.flow_end("message", TraceRecorder::flow_id(h.sender, id_, h.sender_step));
    counters_.step_gap_sum += static_cast<double>(steps_ - h.sender_step);
    counters_.staleness_sum_s += monotonic_seconds() - h.send_time_s;
    const float* data = messages[i]->data();
    ASGD_CHECK(copy_stream_ || !messages[i]->on_device(),
               "worker {} on the host got a message in GPU memory", id_);
    if (copy_stream_) {  // host to device, or device to device (NCCL)
      if (merge_in_flight_) {  // the previous merge may still be reading these buffers
        merged_->wait_on(*copy_stream_);
        merge_in_flight_ = false;
      }
      if (static_cast<int>(receive_.size()) <= used)
        receive_.emplace_back(stream_.backend(), stream_.device(),
                              static_cast<std::size_t>(transport_->max_message()));
      receive_[used].upload(data, static_cast<std::size_t>(h.length), *copy_stream_);
      data = receive_[used].data();
    }
    ranges[used] = {data, h.offset, h.length};
    lengths[used] = h.length;
    ++used;
  }
  if (copy_stream_ && used > 0) {
    received_->record(*copy_stream_);
    received_->wait_on(stream_);
  }
  const double merge_start = cost_clock();
  for (int m = 0; m < used; ++m)
    parzen_statistics(stream_, lengths[m], grad_.data() + ranges[m].offset,
                      params_.data() + ranges[m].offset, ranges[m].data, stats_.data() + 4 * m);
  if (staging_in_flight_) {
    staged_->wait_on(stream_);  // the update below must not overwrite what is being copied
    staging_in_flight_ = false;
  }
  if (used == 0) {
    const double t0 = cost_clock();
    sgd_step(stream_, n_, lr_, grad_.data(), params_.data());
    const double sgd_s = cost_clock() - t0;
    plain_step_s_ = plain_step_s_ > 0 ? 0.9 * plain_step_s_ + 0.1 * sgd_s : sgd_s;
    return;
  }
  scope.set_args({"messages", used});
  parzen_decide(stream_, parzen_, used, stats_.data(), lengths, history_.data(),
                history_seen_.data(), accept_.data(), parzen_counters_.data());
  parzen_merge(stream_, config_.merge.rule, lr_, config_.merge.alpha, n_, grad_.data(),
               params_.data(), ranges, used, accept_.data());
  if (copy_stream_) {
    merged_->record(stream_);
    merge_in_flight_ = true;
  }
  // What the messages cost beyond a plain step (the merge includes the step); on a GPU the
  // launches return at once and the cost measured here is close to nothing, as it should be.
  const double merge_s = cost_clock() - merge_start;
  std::int64_t elements = 0;
  for (int m = 0; m < used; ++m) elements += lengths[m];
  merge_cost_.add(std::max(0.0, merge_s - plain_step_s_), elements);
  comm_elements_ += elements;
  if (stream_.is_host()) {  // the host decided synchronously, into host memory
    for (int m = 0; m < used; ++m, ++messages_tested_) {
      // The window refuses the first `warmup` messages whatever they hold: they say nothing
      // of what a message is worth.
      if (messages_tested_ < parzen_.warmup) continue;
      comm_judged_elements_ += lengths[m];
      if (accept_.data()[m] != 0) comm_accepted_elements_ += lengths[m];
    }
  }
}

void Worker::send(int peer, std::int64_t message, std::int64_t& cursor) {
  const std::int64_t m = std::min(message, n_);
  if (cursor >= n_) cursor = 0;
  MessageHeader h;
  h.sender = id_;
  h.sender_step = steps_;
  h.send_time_s = monotonic_seconds();
  h.offset = cursor;
  h.length = std::min(m, n_ - cursor);
  cursor += h.length;
  ++counters_.sent;
  counters_.bytes_sent += h.length * static_cast<std::int64_t>(sizeof(float));
  const bool adversary = config_.adversary.worker == id_;
  TraceScope scope(trace_, "send", {"peer", peer, "bytes", h.length * 4});
  trace_.flow_begin("message", TraceRecorder::flow_id(id_, peer, h.sender_step));
  if (stream_.is_host() && !adversary) {
    const double t0 = cost_clock();
    transport_->post(peer, h, params_.data() + h.offset);
    send_cost_.add(cost_clock() - t0, h.length);
    comm_sent_elements_ += h.length;
    return;
  }
  // On a GPU the range goes to pinned memory first; it is posted at the next step, when the
  // copy has long finished, so the compute stream never waits for it. (An adversary on the
  // host takes the same path: it must not corrupt its own state.)
  flush_pending_send();
  // A transport that moves payloads in GPU memory (NCCL) takes the range straight from a
  // device staging buffer: no round trip through the host. (An adversary keeps the host path.)
  staging_on_device_ = !stream_.is_host() && transport_->device_payloads() && !adversary;
  const auto capacity = static_cast<std::size_t>(transport_->max_message());
  float* staging = nullptr;
  if (staging_on_device_) {
    if (send_staging_device_.size() < capacity)
      send_staging_device_ = DeviceBuffer<float>(stream_.backend(), stream_.device(), capacity);
    staging = send_staging_device_.data();
  } else if (transport_->lends_buffers()) {
    // The range lands in the transport's own pinned send buffer, which post_lent() sends as it
    // is: no copy of the range in post() (the MPI transport).
    lent_ = transport_->lend(peer, h.length);
    staging = lent_.data();
  } else {
    if (send_staging_.size() < capacity) send_staging_ = PinnedBuffer<float>(capacity);
    staging = send_staging_.data();
  }
  if (copy_stream_) {
    computed_->record(stream_);
    computed_->wait_on(*copy_stream_);
    params_.download(staging, static_cast<std::size_t>(h.length), *copy_stream_,
                     static_cast<std::size_t>(h.offset));
    staged_->record(*copy_stream_);
    staging_in_flight_ = true;
  } else {
    params_.download(staging, static_cast<std::size_t>(h.length), stream_,
                     static_cast<std::size_t>(h.offset));
  }
  pending_header_ = h;
  pending_peer_ = peer;
  send_pending_ = true;
  if (stream_.is_host()) flush_pending_send();  // the copy above is already complete
}

void Worker::corrupt(float* data, std::int64_t length) {
  const Adversary& a = config_.adversary;
  const auto scale = static_cast<float>(a.scale);
  std::normal_distribution<float> normal(0.0f, scale);
  if (a.kind == "noise") {
    for (std::int64_t i = 0; i < length; ++i) data[i] += normal(adversary_rng_);
  } else if (a.kind == "random") {
    for (std::int64_t i = 0; i < length; ++i) data[i] = normal(adversary_rng_);
  } else if (a.kind == "scaled") {
    for (std::int64_t i = 0; i < length; ++i) data[i] *= scale;
  } else if (a.kind == "negate") {
    for (std::int64_t i = 0; i < length; ++i) data[i] = -data[i];
  } else {
    std::fill(data, data + length, std::numeric_limits<float>::quiet_NaN());
  }
}

void Worker::flush_pending_send() {
  if (!send_pending_) return;
  if (staged_) staged_->synchronize();
  if (staging_on_device_) {
    transport_->post(pending_peer_, pending_header_, send_staging_device_.data());
    send_pending_ = false;
    return;
  }
  send_pending_ = false;
  if (config_.adversary.worker == id_) corrupt(pending_payload(), pending_header_.length);
  if (lent_)
    transport_->post_lent(std::move(lent_), pending_header_);
  else
    transport_->post(pending_peer_, pending_header_, send_staging_.data());
}

float* Worker::pending_payload() {
  return lent_ ? lent_.data() : send_staging_.data();
}

void Worker::return_send_buffer() {
  if (!lent_) return;
  if (send_pending_) {
    if (staged_) staged_->synchronize();  // its copy may still write into the loan
    const auto capacity = static_cast<std::size_t>(transport_->max_message());
    if (send_staging_.size() < capacity) send_staging_ = PinnedBuffer<float>(capacity);
    std::copy(lent_.data(), lent_.data() + pending_header_.length, send_staging_.data());
  }
  lent_.reset();
}

void Worker::drop_pending_send() noexcept {
  try {
    if (send_pending_ && staged_) staged_->synchronize();  // its copy may still write there
  } catch (...) {  // a failed device: the run is ending with its error already
  }
  lent_.reset();
  send_pending_ = false;
}

WorkerEval Worker::evaluate() {
  TraceScope scope(trace_, "evaluate");
  model_->evaluate(params_.data(), test_.all(), loss_.data() + 1, correct_.data(), stream_);
  double loss[2];
  std::int64_t correct = 0;
  loss_.download(loss, 2, stream_);
  correct_.download(&correct, 1, stream_);
  stream_.synchronize();
  correct_.zero(stream_);
  WorkerEval e = end_training_period(loss[0]);
  e.loss = loss[1] / static_cast<double>(test_.rows());
  e.accuracy = static_cast<double>(correct) / static_cast<double>(test_.rows());
  return e;
}

WorkerEval Worker::training_loss() {
  double loss = 0;
  loss_.download(&loss, 1, stream_);
  stream_.synchronize();
  WorkerEval e = end_training_period(loss);
  e.loss = std::nan("");
  e.accuracy = std::nan("");
  return e;
}

WorkerEval Worker::end_training_period(double loss_sum) {
  loss_.zero(stream_);
  WorkerEval e;
  const std::int64_t steps = steps_ - steps_at_last_eval_;
  steps_at_last_eval_ = steps_;
  e.train_steps = steps;
  e.train_loss = steps > 0 ? loss_sum / static_cast<double>(steps * config_.batch) : std::nan("");
  return e;
}

WorkerCounters Worker::counters() {
  std::int64_t c[kParzenCounterCount];
  parzen_counters_.download(c, kParzenCounterCount, stream_);
  stream_.synchronize();
  counters_.accepted = c[kAccepted];
  counters_.rejected_direction = c[kRejectedDirection];
  counters_.rejected_window = c[kRejectedWindow];
  counters_.nonfinite = c[kNonFinite];
  return counters_;
}

double Worker::comm_seconds_per_element() const {
  const double merge = merge_cost_.per_element();
  if (merge < 0 || comm_elements_ == 0) return -1.0;
  const double send = send_cost_.per_element();
  if (send <= 0) return merge;
  return merge +
         send * static_cast<double>(comm_sent_elements_) / static_cast<double>(comm_elements_);
}

double Worker::cost_clock() const {
  if (!cpu_cost_clock_) return monotonic_seconds();
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

WorkerState Worker::save_state() {
  // A staged range must be complete before its staging buffer is read below.
  if (send_pending_ && staged_) staged_->synchronize();
  WorkerState s;
  s.id = id_;
  s.steps = steps_;
  s.steps_at_last_eval = steps_at_last_eval_;
  s.lr_scale = lr_scale_;
  s.restores = restores_;
  s.params = download_state();
  if (!good_.empty()) {
    s.good_params.resize(static_cast<std::size_t>(n_));
    good_.download(s.good_params.data(), s.good_params.size(), stream_);
    s.good_step = good_step_;
  }
  BatchSampler::State sampler = sampler_.state();
  s.sampler_rng = std::move(sampler.rng);
  s.sampler_order = std::move(sampler.order);
  s.sampler_position = sampler.position;
  s.sampler_epoch = sampler.epoch;
  s.peer_rng = generator_state(peer_rng_);
  s.adversary_rng = generator_state(adversary_rng_);
  s.send_cursor = send_cursor_;
  s.peer_cursor = peer_cursor_;
  double loss[2];
  loss_.download(loss, 2, stream_);
  s.parzen_history.resize(history_.size());
  history_.download(s.parzen_history.data(), s.parzen_history.size(), stream_);
  history_seen_.download(&s.parzen_history_seen, 1, stream_);
  s.parzen_counters.resize(kParzenCounterCount);
  parzen_counters_.download(s.parzen_counters.data(), kParzenCounterCount, stream_);
  stream_.synchronize();
  s.train_loss_sum = loss[0];
  s.sent = counters_.sent;
  s.bytes_sent = counters_.bytes_sent;
  s.received = counters_.received;
  s.malformed = counters_.malformed;
  s.staleness_sum_s = counters_.staleness_sum_s;
  s.step_gap_sum = counters_.step_gap_sum;
  if (send_pending_) {
    s.send_pending = true;
    s.pending_peer = pending_peer_;
    s.pending_header = pending_header_;
    if (staging_on_device_) {
      s.pending_payload.resize(static_cast<std::size_t>(pending_header_.length));
      if (staged_) staged_->synchronize();
      send_staging_device_.download(s.pending_payload.data(), s.pending_payload.size(), stream_);
      stream_.synchronize();
    } else {
      const float* payload = pending_payload();
      s.pending_payload.assign(payload, payload + pending_header_.length);
    }
  }
  return s;
}

void Worker::load_state(const WorkerState& s, bool whole) {
  if (static_cast<std::int64_t>(s.params.size()) != n_)
    ASGD_INPUT_ERROR("the checkpoint holds a state of {} parameters, worker {}'s model has {}",
                     s.params.size(), id_, n_);
  // Restores only ever lower the step-size scale from 1; steps are bounded as in
  // steps_for_epochs().
  if (s.steps < 0 || s.steps > (std::int64_t{1} << 53) || !(s.lr_scale > 0.0f) ||
      !(s.lr_scale <= 1.0f) || s.restores < 0)
    ASGD_INPUT_ERROR("the checkpoint's step count {}, step-size scale {} or restore count {} is "
                     "invalid",
                     s.steps, s.lr_scale, s.restores);
  for (const float v : s.params)
    if (!std::isfinite(v))
      ASGD_INPUT_ERROR("the checkpoint's state of worker {} holds NaN or Inf values; it would "
                       "train nothing: resume from an earlier checkpoint",
                       s.id);
  upload_state(s.params);
  steps_ = s.steps;
  lr_scale_ = s.lr_scale;
  lr_ = config_.lr * lr_scale_;
  parzen_.eps = lr_;
  restores_ = s.restores;
  // The last good state goes on as it was, so that a divergence found after the resume puts
  // the worker back where the uninterrupted run would; a checkpoint without one (written
  // without --on-divergence restore, or by format version 1) starts it from the state.
  const bool has_good = static_cast<std::int64_t>(s.good_params.size()) == n_;
  if (has_good) {
    if (s.good_step < 0 || s.good_step > s.steps)
      ASGD_INPUT_ERROR(
          "the checkpoint's step of worker {}'s last good state ({}) is not in "
          "[0, {}]",
          s.id, s.good_step, s.steps);
    for (const float v : s.good_params)
      if (!std::isfinite(v))
        ASGD_INPUT_ERROR(
            "the checkpoint's last good state of worker {} holds NaN or Inf "
            "values: resume from an earlier checkpoint",
            s.id);
  }
  if (!good_.empty()) {
    if (has_good)
      good_.upload(s.good_params.data(), s.good_params.size(), stream_);
    else
      copy_async(good_.data(), params_.data(), good_.bytes(), stream_);
  }
  good_step_ = has_good ? s.good_step : steps_;
  if (!whole) {
    steps_at_last_eval_ = steps_;
    stream_.synchronize();
    return;
  }
  if (s.steps_at_last_eval < 0 || s.steps_at_last_eval > s.steps)
    ASGD_INPUT_ERROR("the checkpoint's step of the last evaluation ({}) is not in [0, {}]",
                     s.steps_at_last_eval, s.steps);
  // The history count indexes the ring (seen % H) and grows by one per message.
  constexpr std::int64_t kMaxCount = std::int64_t{1} << 60;
  bool counts_ok = s.parzen_history_seen >= 0 && s.parzen_history_seen < kMaxCount;
  for (const std::int64_t c : s.parzen_counters) counts_ok = counts_ok && c >= 0 && c < kMaxCount;
  for (const std::int64_t c : {s.sent, s.bytes_sent, s.received, s.malformed})
    counts_ok = counts_ok && c >= 0 && c < kMaxCount;
  if (!counts_ok) ASGD_INPUT_ERROR("the checkpoint's message counters of worker {} are invalid", id_);
  // A diverged run is never checkpointed (Run::maybe_checkpoint), so every sum is finite; the
  // window's history holds squared distances, finite and >= 0.
  bool values_ok = std::isfinite(s.train_loss_sum) && std::isfinite(s.staleness_sum_s) &&
                   std::isfinite(s.step_gap_sum);
  for (const float d2 : s.parzen_history)
    values_ok = values_ok && d2 >= 0 && std::isfinite(d2);
  if (!values_ok)
    ASGD_INPUT_ERROR(
        "the checkpoint's running sums or filter history of worker {} hold NaN, Inf "
        "or negative values; the file was altered: resume from another checkpoint",
        id_);
  if (s.parzen_history.size() != history_.size() ||
      s.parzen_counters.size() != static_cast<std::size_t>(kParzenCounterCount))
    ASGD_INPUT_ERROR("the checkpoint's filter history holds {} entries, this run keeps {} "
                     "(--window-history); resume with the same setting",
                     s.parzen_history.size(), history_.size());
  const auto in_state = [&](std::int64_t c) { return c >= 0 && c <= n_; };
  bool cursors_ok = in_state(s.send_cursor);
  for (const std::int64_t c : s.peer_cursor) cursors_ok = cursors_ok && in_state(c);
  if (!cursors_ok) ASGD_INPUT_ERROR("the checkpoint's send cursors lie outside the state");
  sampler_.restore({s.sampler_rng, s.sampler_order, s.sampler_position, s.sampler_epoch}, stream_);
  peer_rng_ = generator_from_state(s.peer_rng, "peer");
  adversary_rng_ = generator_from_state(s.adversary_rng, "adversary");
  steps_at_last_eval_ = s.steps_at_last_eval;
  send_cursor_ = s.send_cursor;
  peer_cursor_ = s.peer_cursor;
  const double loss[2] = {s.train_loss_sum, 0.0};
  loss_.upload(loss, 2, stream_);
  history_.upload(s.parzen_history.data(), s.parzen_history.size(), stream_);
  history_seen_.upload(&s.parzen_history_seen, 1, stream_);
  parzen_counters_.upload(s.parzen_counters.data(), kParzenCounterCount, stream_);
  counters_.sent = s.sent;
  counters_.bytes_sent = s.bytes_sent;
  counters_.received = s.received;
  counters_.malformed = s.malformed;
  counters_.staleness_sum_s = s.staleness_sum_s;
  counters_.step_gap_sum = s.step_gap_sum;
  drop_pending_send();
  if (s.send_pending) {
    const std::int64_t length = s.pending_header.length;
    if (length < 1 || length != static_cast<std::int64_t>(s.pending_payload.size()) ||
        s.pending_header.offset < 0 || s.pending_header.offset > n_ - length ||
        s.pending_peer < 0 || s.pending_peer == id_ || s.pending_peer >= config_.workers ||
        s.pending_header.sender != id_)
      ASGD_INPUT_ERROR("the checkpoint's pending message of worker {} is malformed", id_);
    if (send_staging_.size() < static_cast<std::size_t>(n_))
      send_staging_ = PinnedBuffer<float>(static_cast<std::size_t>(n_));
    std::copy(s.pending_payload.begin(), s.pending_payload.end(), send_staging_.data());
    staging_on_device_ = false;  // restored into host staging, which every transport takes
    pending_header_ = s.pending_header;
    pending_peer_ = s.pending_peer;
    send_pending_ = true;
  }
  stream_.synchronize();
}

bool Worker::finite_now(bool snapshot) {
  if (!snapshot) {
    count_nonfinite(stream_, n_, params_.data(), nonfinite_.data());
  } else {
    copy_count_nonfinite(stream_, n_, params_.data(), snapshot_.data(), nonfinite_.data());
  }
  std::int64_t bad = 0;
  double train_loss = 0;
  nonfinite_.download(&bad, 1, stream_);
  loss_.download(&train_loss, 1, stream_);
  stream_.synchronize();
  return bad == 0 && std::isfinite(train_loss);
}

bool Worker::state_is_finite() {
  return finite_now(false);
}

bool Worker::check_finite() {
  if (!finite_now(!good_.empty())) return false;
  if (!good_.empty()) {
    std::swap(good_, snapshot_);
    good_step_ = steps_;
  }
  return true;
}

std::int64_t Worker::restore_last_good(float lr_factor) {
  ASGD_CHECK(!good_.empty(), "restore_last_good() without --on-divergence restore");
  if (staging_in_flight_) {
    staged_->wait_on(stream_);
    staging_in_flight_ = false;
  }
  copy_async(params_.data(), good_.data(), good_.bytes(), stream_);
  lr_scale_ *= lr_factor;
  lr_ = config_.lr * lr_scale_;
  parzen_.eps = lr_;
  ++restores_;
  // The loss accumulated since the last evaluation includes the diverged steps.
  loss_.zero(stream_);
  steps_at_last_eval_ = steps_;
  stream_.synchronize();
  return good_step_;
}

void Worker::inject_nan() {
  if (staging_in_flight_) {
    staged_->wait_on(stream_);  // the range being copied out is the state before the fault
    staging_in_flight_ = false;
  }
  fill(stream_, 1, std::numeric_limits<float>::quiet_NaN(), params_.data() + n_ / 2);
}

}  // namespace asgd
