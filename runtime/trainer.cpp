#include "runtime/trainer.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <unistd.h>

#include <asgd/config.h>
#include <nlohmann/json.hpp>

#include "comm/local/local_transport.h"
#include "comm/wire_format.h"
#include "runtime/balancer.h"
#include "runtime/build_info.h"
#include "runtime/checkpoint.h"
#include "runtime/distributed.h"
#include "runtime/error.h"
#include "runtime/metrics.h"
#include "runtime/random.h"
#include "runtime/trace.h"
#if ASGD_HAVE_MPI
#include "comm/mpi/link_bench.h"
#include "comm/mpi/mpi_transport.h"
#include "comm/nccl/round_transport.h"
#if ASGD_HAVE_NCCL
#include "comm/nccl/nccl_plane.h"
#endif
#endif

namespace asgd {
namespace {
using Clock = std::chrono::steady_clock;

// After its first reading (as soon as the worker's cost medians have their first three events),
// the balancer reads a worker's compute per element sent and merged again after at least this
// many more merged elements (64 KiB of floats): 8 whole states of the K-Means study's
// 2,048-parameter model, a few messages of most others, so that each reading's acceptance
// covers enough judged messages to mean something.
constexpr std::int64_t kCostSampleElements = 16384;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void idle_for(double seconds) {
  if (seconds > 0) std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

// A reusable barrier for the sync baseline (C++17 has none). Blocking is the point of it.
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const std::int64_t generation = generation_;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != generation || broken_; });
    if (broken_) throw std::runtime_error("a worker failed; the barrier was broken");
  }
  // Releases every waiter with an error (a worker failed and will never arrive).
  void break_all() {
    std::lock_guard<std::mutex> lock(mutex_);
    broken_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int count_;
  int arrived_ = 0;
  std::int64_t generation_ = 0;
  bool broken_ = false;
};

LinkModel link_between(const LinkSettings& s, int from, int to) {
  LinkModel l;
  const double bw = s.bandwidth_matrix.empty() ? s.bandwidth : s.bandwidth_matrix[from][to];
  if (bw > 0) l.bandwidth_bytes_per_s = bw;
  l.latency_s = s.latency_matrix.empty() ? s.latency : s.latency_matrix[from][to];
  return l;
}

// Seconds a ring allreduce of `bytes` takes over the slowest of the emulated links.
double emulated_allreduce_seconds(const LinkSettings& s, int workers, double bytes) {
  if (workers < 2) return 0;
  double bw = std::numeric_limits<double>::infinity(), latency = 0;
  for (int i = 0; i < workers; ++i)
    for (int j = 0; j < workers; ++j)
      if (i != j) {
        const LinkModel l = link_between(s, i, j);
        bw = std::min(bw, l.bandwidth_bytes_per_s);
        latency = std::max(latency, l.latency_s);
      }
  const double n = workers;
  return 2 * (n - 1) / n * bytes / bw + 2 * (n - 1) * latency;
}

// Where the workers of a run live: all in this process (ranks == 1), or one per MPI rank.
struct Placement {
  int rank = 0;
  int ranks = 1;
  int local_rank = 0;
  bool multiprocess() const { return ranks > 1; }
};

// Resolves --transport: auto means MPI when mpirun started several ranks.
Placement place(const TrainConfig& c) {
  const int launched = launcher_ranks();
  TransportKind t = c.transport;
  if (t == TransportKind::kAuto) t = launched > 1 ? TransportKind::kMpi : TransportKind::kLocal;
  if (t != TransportKind::kLocal && launched <= 1 && c.workers > 1)
    std::fprintf(stderr,
                 "asgd: --transport %s: not under mpirun, so the %d workers share this "
                 "process and talk over the in-process transport\n",
                 std::string(to_string(t)).c_str(), c.workers);
  if (t == TransportKind::kLocal) {
    if (launched > 1)
      ASGD_INPUT_ERROR("--transport local, but mpirun started {} ranks that would each train "
                       "alone; use --transport mpi (or auto), or run without mpirun",
                       launched);
    return {};
  }
#if ASGD_HAVE_MPI
  MpiSession& session = MpiSession::get();
  Placement p;
  p.rank = session.rank();
  p.ranks = session.size();
  p.local_rank = session.local_rank();
  return p;
#else
  ASGD_INPUT_ERROR("--transport {}{}: this asgd was built without MPI; install libopenmpi-dev "
                   "and rebuild (-DASGD_MPI=ON)",
                   to_string(t), launched > 1 ? fmt::format(" under mpirun ({} ranks)", launched) : "");
#endif
}

// The run's settings as this rank sees them: one worker per rank, progress on rank 0 only,
// metrics of rank R > 0 in FILE.rankR.EXT.
TrainConfig for_placement(TrainConfig c, const Placement& p) {
  if (!p.multiprocess()) return c;
  if (c.workers != 1 && c.workers != p.ranks)
    ASGD_INPUT_ERROR("--workers {} under mpirun with {} ranks: each rank is one worker; leave "
                     "--workers out (or set it to {})",
                     c.workers, p.ranks, p.ranks);
  if (c.deterministic)
    ASGD_INPUT_ERROR("--deterministic needs one process (it steps every worker from one "
                     "thread); run without mpirun");
  c.workers = p.ranks;
  validate(c);
  c.progress = c.progress && p.rank == 0;
  if (p.rank > 0 && !c.metrics_path.empty()) {
    const std::size_t slash = c.metrics_path.find_last_of('/');
    const std::size_t dot = c.metrics_path.find_last_of('.');
    const bool has_ext = dot != std::string::npos && (slash == std::string::npos || dot > slash);
    const std::size_t at = has_ext ? dot : c.metrics_path.size();
    c.metrics_path.insert(at, fmt::format(".rank{}", p.rank));
  }
  return c;
}

// The settings every rank must share (checked at start-up across ranks; written into
// checkpoints as one line for people reading them). `data` describes the loaded training data.
distributed::Settings shared_setting_list(const TrainConfig& c, const std::string& data) {
  const DataOptions& d = c.data;
  const LinkSettings& links = c.links;
  auto matrix = [](const std::vector<std::vector<double>>& m) {
    std::string text;
    for (const auto& row : m)
      text += fmt::format("[{}]", fmt::join(row, ","));
    return text;
  };
  // Under mpirun auto is mpi: the ranks agree whichever of the two each was given.
  const std::string transport = launcher_ranks() > 1 && c.transport == TransportKind::kAuto
                                    ? std::string("mpi")
                                    : std::string(to_string(c.transport));
  return {{"algo", std::string(to_string(c.algorithm))},
          // These decide which collective calls a rank makes (the link probe, the NCCL
          // set-up, the trace's clock alignment): ranks that differ would wait on each other.
          {"transport", transport},
          {"balance", std::string(to_string(resolved_balance(c)))},
          {"trace", c.trace_path.empty() ? "off" : "on"},
          {"window-history", std::to_string(c.window_history)},
          {"window-warmup", std::to_string(c.window_warmup)},
          {"link-bandwidth", fmt::format("{}", links.bandwidth)},
          {"link-latency", fmt::format("{}", links.latency)},
          {"link-bandwidth matrix", matrix(links.bandwidth_matrix)},
          {"link-latency matrix", matrix(links.latency_matrix)},
          {"link-change", fmt::format("{}:{}:{}", links.change_at_s, links.change_bandwidth,
                                      links.change_latency)},
          {"lr", fmt::format("{}", c.lr)},
          {"batch", std::to_string(c.batch)},
          {"message-size", std::to_string(c.message_size)},
          {"send-interval", std::to_string(c.send_interval)},
          {"merge", to_string(c.merge)},
          {"window", fmt::format("{}", c.window)},
          {"direction-margin", fmt::format("{}", c.direction_margin)},
          {"seed", std::to_string(c.seed)},
          {"dataset", d.spec},
          {"test-dataset", d.test_spec},
          {"test-fraction", fmt::format("{}", d.test_fraction)},
          {"normalize", std::to_string(static_cast<int>(d.normalize))},
          {"libsvm-dim", std::to_string(d.libsvm_dim)},
          {"libsvm-max-dim", std::to_string(d.libsvm_max_dim)},
          {"csv-label-column", std::to_string(d.csv_label_column)},
          {"csv-delimiter", std::string(1, d.csv_delimiter)},
          {"csv-header", std::to_string(static_cast<int>(d.csv_header))},
          {"training data", data},
          {"epochs", fmt::format("{}", c.epochs)},
          {"on-divergence", std::string(to_string(c.on_divergence))},
          {"checkpoint-dir", c.checkpoint_dir},
          {"checkpoint-every", std::to_string(c.checkpoint_every)},
          {"checkpoint-scope", std::string(to_string(c.checkpoint_scope))},
          {"resume", c.resume_dir}};
}

std::string shared_settings(const TrainConfig& c, const std::string& data) {
  std::string text;
  for (const auto& [name, value] : shared_setting_list(c, data))
    text += fmt::format("{}{} '{}'", text.empty() ? "" : " ", name, value);
  return text;
}

// What the ranks' training data must agree on: its shape and a checksum of its contents, so
// that two nodes holding different copies of "the same" file are told apart.
std::string describe_data(const Dataset& train) {
  const std::uint64_t features =
      payload_checksum(train.features.data(), train.features.size() * sizeof(float));
  const std::uint64_t labels =
      payload_checksum(train.labels.data(), train.labels.size() * sizeof(std::int32_t));
  return fmt::format("{} rows x {} features, {} classes, checksum {:016x}", train.rows, train.cols,
                     train.classes, features ^ (labels * 0x9E3779B97F4A7C15ull));
}

class Run {
 public:
  Run(const TrainConfig& config, const TrainTest& data, const ModelFactory& factory)
      : place_(place(config)),
        c_(for_placement(config, place_)),
        trace_(TraceRecorder::Options{!c_.trace_path.empty()}),
        metrics_(c_.metrics_path),
        progress_(c_.progress),
        barrier_(c_.workers) {
    const TrainConfig& c = c_;
    if (c.algorithm == Algorithm::kSync && c.backend == Backend::kCuda && c.workers > 1 &&
        !place_.multiprocess() && cuda_device_count() > 1)
      ASGD_INPUT_ERROR("--algo sync with several GPUs in one process is not supported; use one "
                       "GPU or the MPI transport");
    const int devices = c.backend == Backend::kCuda ? std::max(1, cuda_device_count()) : 1;
    const int first = place_.multiprocess() ? place_.rank : 0;
    const int count = place_.multiprocess() ? 1 : c.workers;
    for (int i = first; i < first + count; ++i) {
      shards_.push_back(c.workers == 1 ? data.train : shard(data.train, i, c.workers, c.seed));
      const int device = (c.device + (place_.multiprocess() ? place_.local_rank : i)) % devices;
      workers_.push_back(std::make_unique<Worker>(i, device, c, data.train, shards_.back(),
                                                  data.test, factory));
    }
    first_id_ = first;
    for (auto& w : workers_) {
      trace_.set_process_name(w->id(), fmt::format("worker {}", w->id()));
      w->set_trace(trace_.lane(trace_.add_lane(w->id(), 0, "compute")));
    }
    Worker& w0 = *workers_.front();
    result_.model = w0.model().describe();
    result_.parameters = w0.parameter_count();
    result_.fingerprint = w0.model().fingerprint();
    result_.classifier = w0.model().is_classifier();
    result_.train_rows = data.train.rows;
    result_.test_rows = data.test.rows;
    // A pass over the whole training set: only for what uses it (the ranks' start-up check,
    // the settings line of checkpoints).
    if (place_.multiprocess() || !c.checkpoint_dir.empty())
      data_description_ = describe_data(data.train);
    result_.workers = c.workers;
    result_.rank = place_.rank;
    result_.algorithm = std::string(to_string(c.algorithm));
    for (auto& w : workers_) {
      if (w->parameter_count() != w0.parameter_count() ||
          w->model().fingerprint() != w0.model().fingerprint())
        ASGD_INPUT_ERROR("worker {} built model '{}' but worker 0 built '{}': every worker must "
                         "hold the same model",
                         w->id(), w->model().describe(), w0.model().describe());
    }
    if (place_.multiprocess()) {
      connect_ranks(w0);
    } else if (communicates(c.algorithm) && c.workers > 1) {
      LocalTransportOptions o;
      o.max_message = w0.parameter_count();
      o.queue_capacity = c.queue_capacity;
      o.deterministic = c.deterministic;
      transport_ = std::make_unique<LocalTransport>(c.workers, o);
      for (int i = 0; i < c.workers; ++i)
        for (int j = 0; j < c.workers; ++j)
          if (i != j) transport_->set_link(i, j, link_between(c.links, i, j));
      for (auto& w : workers_) w->attach(transport_.get());
    }
    for (const Fault& f : c.faults)
      if (f.on_wire() && !place_.multiprocess())
        ASGD_INPUT_ERROR("--fault {}:{}:{} damages messages on the wire, which only the MPI "
                         "transport has; run under mpirun (e.g. mpirun -np 4 asgd train ...)",
                         f.kind, f.worker, f.at);
    check_interval_ = std::min<std::int64_t>(c.eval_every, kDivergenceCheckInterval);
    order_rng_.seed(c.seed ^ 0xD1B54A32D192ED03ull);
    if (!c.checkpoint_dir.empty() &&
        (!place_.multiprocess() || place_.rank == 0 || c.checkpoint_scope == CheckpointScope::kAll)) {
      std::error_code ec;
      std::filesystem::create_directories(c.checkpoint_dir, ec);
      if (ec)
        ASGD_INPUT_ERROR("--checkpoint-dir '{}': cannot create it: {}", c.checkpoint_dir,
                         ec.message());
      checkpoint_path_ = checkpoint_file(c.checkpoint_dir, place_.rank, per_rank_checkpoints());
      writer_ = std::make_unique<CheckpointWriter>();
      checkpoint_done_.assign(workers_.size(), 0);
      checkpoint_rounds_ = std::make_unique<CheckpointRounds>(
          workers_.size(),
          [this](std::vector<WorkerState> states) { submit_checkpoint(std::move(states), false); });
    }
    next_checkpoint_step_ = c.checkpoint_every;
    if (!c.resume_dir.empty()) resume();
    for (auto& w : workers_) start_steps_.push_back(w->steps());
    checked_at_.assign(workers_.size(), -1);
    published_steps_.reset(new std::atomic<std::int64_t>[workers_.size()]);
    published_eval_s_.reset(new std::atomic<double>[workers_.size()]);
    published_comm_cost_.reset(new std::atomic<double>[workers_.size()]);
    published_comm_elements_.reset(new std::atomic<std::int64_t>[workers_.size()]);
    published_comm_judged_.reset(new std::atomic<std::int64_t>[workers_.size()]);
    published_comm_accepted_.reset(new std::atomic<std::int64_t>[workers_.size()]);
    for (std::size_t i = 0; i < workers_.size(); ++i) {
      published_steps_[i].store(workers_[i]->steps());
      published_eval_s_[i].store(0.0);
      published_comm_cost_[i].store(-1.0);
      published_comm_elements_[i].store(0);
      published_comm_judged_[i].store(0);
      published_comm_accepted_[i].store(0);
    }
    cost_seen_.assign(static_cast<std::size_t>(c_.workers), CostClock{});
    start_balancer(w0);
    sync_comm_s_ = emulated_allreduce_seconds(
        c.links, c.workers, static_cast<double>(w0.parameter_count()) * sizeof(float));
    last_eval_.assign(workers_.size(), {0.0, 0});
    for (auto& w : workers_) last_eval_[local(*w)].second = w->steps();  // resumed: not 0
    last_tested_.assign(workers_.size(), -1);
    eval_seconds_.assign(workers_.size(), 0.0);
  }
  // A worker's loan of a send buffer must end before the transport, which is destroyed first.
  ~Run() {
    for (auto& w : workers_)
      if (w) w->drop_pending_send();
  }

  TrainResult run() {
    align_trace_clocks();
    start_ = Clock::now();
    started_ = true;
    if (c_.deterministic) {
      run_deterministic();
    } else if (place_.multiprocess()) {
      run_rank();
    } else {
      run_threads();
    }
    // The workers look only every 64 steps: an error of the run's last steps is reported here.
    if (balancer_) balancer_->check();
    write_final_checkpoint();
    if (c_.algorithm == Algorithm::kSimu && c_.workers > 1) average_states();
    TrainResult result = finish();
    write_trace();
    return result;
  }

  std::size_t local(const Worker& w) const { return static_cast<std::size_t>(w.id() - first_id_); }

 private:
  // One thread per worker of this process.
  void run_threads() {
    std::vector<std::thread> threads;
    try {
      for (auto& w : workers_)
        threads.emplace_back([this, &w] { run_worker(*w); });
    } catch (...) {
      // A thread that cannot be created (a process limit): the ones already running are
      // stopped and joined, not left joinable (std::terminate).
      stop_ = true;
      barrier_.break_all();
      for (auto& t : threads)
        t.join();
      throw;
    }
    for (auto& t : threads)
      t.join();
    errors_.rethrow_if_set();
  }

  // A worker's thread: its first error is handed back to run(), and stops the others.
  void run_worker(Worker& w) {
    try {
      if (c_.algorithm == Algorithm::kSync)
        run_sync(w);
      else
        run_async(w);
    } catch (const InputError&) {
      errors_.capture(std::current_exception());
      stop_ = true;
      barrier_.break_all();
    } catch (const Error& e) {
      // Which worker failed is the first thing a reader of the report needs.
      errors_.capture(
          std::make_exception_ptr(Error(fmt::format("worker {} failed: {}", w.id(), e.message()),
                                        e.file().c_str(), e.line(), e.call())));
      stop_ = true;
      barrier_.break_all();
    } catch (...) {
      errors_.capture(std::current_exception());
      stop_ = true;
      barrier_.break_all();
    }
  }

  // At a worker's evaluation step: on the test set, or with --eval-workers first for the
  // workers that do not decide the target, only its training loss and counters.
  void evaluate_due(Worker& w, int as_worker) {
    evaluate(w, as_worker,
             c_.eval_workers == EvalWorkers::kAll || w.id() == 0 || w.steps() >= w.max_steps());
  }

  // Worker w's evaluation: logged for every worker; worker 0's decide the target. Without
  // `on_test`, the test loss and accuracy are NaN (null in the metrics).
  void evaluate(Worker& w, int as_worker, bool on_test = true) {
    const auto t0 = Clock::now();
    const WorkerEval e = on_test ? w.evaluate() : w.training_loss();
    if (on_test) last_tested_[local(w)] = w.steps();
    const WorkerCounters k = communicates(c_.algorithm) ? w.counters() : WorkerCounters{};
    const double eval_s = seconds_since(t0);
    const std::size_t i = local(w);
    eval_seconds_[i] += eval_s;
    published_eval_s_[i].store(eval_seconds_[i], std::memory_order_relaxed);

    EvalPoint p;
    p.worker = as_worker;
    p.time_s = seconds_since(start_);
    p.eval_s = eval_seconds_[i];
    p.step = w.steps();
    p.samples = w.steps() * c_.batch;
    p.epoch = static_cast<double>(p.samples) / static_cast<double>(shards_[i].rows);
    p.train_loss = e.train_loss;
    p.test_loss = e.loss;
    p.test_accuracy = result_.classifier ? e.accuracy : 0.0;
    const double busy = p.time_s - last_eval_[i].first - eval_s;
    p.samples_per_s =
        busy > 0 ? static_cast<double>((p.step - last_eval_[i].second) * c_.batch) / busy : 0;
    last_eval_[i] = {p.time_s, p.step};
    p.messages_sent = k.sent;
    p.messages_received = k.received;
    p.messages_accepted = k.accepted;
    p.messages_rejected = k.rejected_direction + k.rejected_window;
    p.messages_rejected_direction = k.rejected_direction;
    p.messages_rejected_window = k.rejected_window;
    p.messages_nonfinite = k.nonfinite;
    p.bytes_sent = k.bytes_sent;
    const double used = static_cast<double>(k.received - k.malformed);
    p.mean_staleness_s = used > 0 ? k.staleness_sum_s / used : 0;
    p.mean_step_gap = used > 0 ? k.step_gap_sum / used : 0;

    const bool diverged = (on_test && !std::isfinite(p.test_loss)) ||
                          (e.train_steps > 0 && !std::isfinite(p.train_loss));
    std::lock_guard<std::mutex> lock(mutex_);
    metrics_.write(p, p.worker);
    if (diverged) {
      progress_.finish();
      ASGD_THROW(
          "training diverged: worker {} at step {} has a {} loss of {}; lower the step size "
          "(--lr {}) or check the data for extreme values",
          w.id(), w.steps(), std::isfinite(p.test_loss) ? "training" : "test",
          std::isfinite(p.test_loss) ? p.train_loss : p.test_loss, c_.lr);
    }
    if (as_worker == 0 || as_worker == -1 || place_.multiprocess()) {
      result_.history.push_back(p);
      progress_.set_eval(p.train_loss, result_.classifier ? p.test_accuracy : p.test_loss);
      // Worker 0 (rank 0 across processes) decides; the others follow its stop.
      if (as_worker <= 0 && result_.classifier && c_.target_accuracy > 0 &&
          !result_.time_to_target_s && p.test_accuracy >= c_.target_accuracy &&
          (c_.algorithm != Algorithm::kSimu || as_worker == -1 || c_.workers == 1)) {
        result_.time_to_target_s = p.time_s;
        stop_reason_ = "target";
        stop_ = true;
      }
    }
    if (as_worker >= 0) final_[i] = p;
  }

  // --- Reliability: faults, divergence, checkpoints ---------------------------------------

  // --fault nan|throw|kill at this worker's current step.
  void inject_faults(Worker& w) {
    for (const Fault& f : c_.faults) {
      if (f.worker != w.id() || f.on_wire() || f.at != w.steps()) continue;
      if (f.kind == "nan") {
        std::fprintf(stderr, "asgd: fault: a NaN appears in worker %d's state at step %lld\n",
                     w.id(), static_cast<long long>(w.steps()));
        w.inject_nan();
      } else if (f.kind == "throw") {
        ASGD_THROW("fault injected (--fault throw:{}:{}): worker {} fails at step {}", f.worker,
                   f.at, w.id(), w.steps());
      } else {
        std::fprintf(stderr, "asgd: fault: worker %d kills its process (SIGKILL) at step %lld\n",
                     w.id(), static_cast<long long>(w.steps()));
        std::fflush(stderr);
        std::raise(SIGKILL);
      }
    }
  }

  // Checks worker w for NaN/Inf (its state and its training loss) and applies --on-divergence.
  void guard_divergence(Worker& w) {
    std::int64_t& checked = checked_at_[local(w)];
    if (checked == w.steps()) return;  // already checked at this step (and finite since)
    if (w.check_finite()) {
      checked = w.steps();
      return;
    }
    const std::int64_t step = w.steps();
    if (c_.on_divergence == DivergencePolicy::kStop)
      ASGD_THROW("training diverged: worker {} has NaN or Inf in its state or training loss at "
                 "step {}; lower the step size (--lr {}), check the data for extreme values, or "
                 "let workers recover with --on-divergence restore",
                 w.id(), step, c_.lr);
    if (w.restores() >= c_.max_restores)
      ASGD_THROW("training diverged: worker {} at step {}, after {} restores (--max-restores) "
                 "with its step size down to {}; check the data and the model, or start with a "
                 "smaller --lr",
                 w.id(), step, w.restores(), w.lr());
    const std::int64_t back_to = w.restore_last_good(c_.divergence_lr_factor);
    checked = w.steps();
    RunEvent e;
    e.event = "divergence";
    e.time_s = seconds_since(start_);
    e.worker = w.id();
    e.step = step;
    e.values = {{"restored_step", static_cast<double>(back_to)},
                {"lr", w.lr()},
                {"restores", static_cast<double>(w.restores())}};
    e.detail = "restore";
    std::lock_guard<std::mutex> lock(mutex_);
    metrics_.write(e);
    std::fprintf(stderr,
                 "asgd: worker %d diverged at step %lld: restored its state of step %lld, step "
                 "size now %g\n",
                 w.id(), static_cast<long long>(step), static_cast<long long>(back_to),
                 static_cast<double>(w.lr()));
  }

  // Whether w's state may be written: known when the regular check passed at this very step,
  // else tested without touching the last good state (see Worker::state_is_finite()).
  bool finite_for_checkpoint(Worker& w) {
    return checked_at_[local(w)] == w.steps() || w.state_is_finite();
  }

  // Every check_interval_ steps and before each evaluation.
  void guard_divergence_if_due(Worker& w) {
    if (w.steps() % check_interval_ == 0 || eval_due(w)) guard_divergence(w);
  }

  // The evaluation after a worker's last step, unless its last step was evaluated on the
  // test set.
  void evaluate_last(Worker& w, int as_worker) {
    if (w.steps() == last_tested_[local(w)]) return;
    guard_divergence(w);
    evaluate(w, as_worker);
  }

  // The first multiple of --checkpoint-every after step `s`.
  std::int64_t checkpoint_step_after(std::int64_t s) const {
    return (s / c_.checkpoint_every + 1) * c_.checkpoint_every;
  }

  bool per_rank_checkpoints() const {
    return place_.multiprocess() && c_.checkpoint_scope == CheckpointScope::kAll;
  }

  // The settings a resumed run must share with the one that wrote the checkpoint.
  std::vector<std::pair<std::string, std::string>> identity() const {
    const Worker& w0 = *workers_.front();
    return {{"model", w0.model().describe()},
            {"fingerprint", fmt::format("{:016x}", w0.model().fingerprint())},
            {"workers", std::to_string(c_.workers)},
            {"algo", std::string(to_string(c_.algorithm))},
            {"batch", std::to_string(c_.batch)},
            {"seed", std::to_string(c_.seed)},
            {"dataset", c_.data.spec},
            {"train-rows", std::to_string(result_.train_rows)},
            // Lockstep rounds are another run; shuffled keeps the value older checkpoints hold.
            {"deterministic", !c_.deterministic                       ? "false"
                              : c_.step_order == StepOrder::kLockstep ? "lockstep"
                                                                      : "true"},
            {"window-history", std::to_string(c_.window_history)},
            {"checkpoint", place_.multiprocess() ? std::string(to_string(c_.checkpoint_scope))
                                                 : std::string("process")}};
  }

  // Hands a complete set of this process's worker states to the writer thread.
  void submit_checkpoint(std::vector<WorkerState> states, bool with_run_state) {
    Checkpoint ck;
    ck.identity = identity();
    const Worker& w0 = *workers_.front();
    ck.fingerprint = w0.model().fingerprint();
    ck.parameters = w0.parameter_count();
    ck.rank = place_.rank;
    ck.ranks = place_.ranks;
    ck.elapsed_s = resumed_elapsed_s_ + (started_ ? seconds_since(start_) : 0.0);
    const std::int64_t step = states.front().steps;
    ck.workers = std::move(states);
    if (with_run_state) {
      ck.run_rng = generator_state(order_rng_);
      if (transport_) {
        transport_->for_each_unread([&ck](int receiver, const Message& m) {
          UnreadMessage u;
          u.receiver = receiver;
          u.header = m.header;
          u.payload.assign(m.payload.data(), m.payload.data() + m.header.length);
          ck.unread.push_back(std::move(u));
        });
        for (const int s : transport_->collect_starts()) ck.collect_starts.push_back(s);
      }
    }
    ck.settings = shared_settings(c_, data_description_);
    writer_->submit(checkpoint_path_, std::move(ck));
    RunEvent e;
    e.event = "checkpoint";
    e.time_s = started_ ? seconds_since(start_) : 0.0;
    e.worker = workers_.front()->id();
    e.step = step;
    e.detail = checkpoint_path_;
    std::lock_guard<std::mutex> lock(mutex_);
    metrics_.write(e);
  }

  // Threads (and ranks): the first local worker opens a round every --checkpoint-every steps;
  // each local worker adds its state at its next step boundary, on its own thread, without
  // waiting for the others; the last one hands the round to the writer. A round that a newer
  // one overtakes (a straggler) is dropped. sync: every worker adds its state at the same step.
  void maybe_checkpoint(Worker& w) {
    if (!writer_) return;
    const std::size_t i = local(w);
    const bool lockstep = c_.algorithm == Algorithm::kSync;
    std::int64_t round = 0;
    if (lockstep || i == 0) {
      if (w.steps() % c_.checkpoint_every != 0) return;
      round = w.steps() / c_.checkpoint_every;
      if (!lockstep) checkpoint_requested_.store(round, std::memory_order_release);
    } else {
      round = checkpoint_requested_.load(std::memory_order_acquire);
      if (round <= checkpoint_done_[i]) return;
    }
    checkpoint_done_[i] = round;
    // A state that is not finite is never written: the round stays incomplete and a newer one
    // overtakes it, while the regular checks (not this one, whose timing must not change the
    // run) stop or restore the worker.
    if (!finite_for_checkpoint(w)) return;
    checkpoint_rounds_->add(i, round, w.save_state());
  }

  // A worker whose thread ran out of steps (it is faster than worker 0, or its shard smaller)
  // while the run goes on: its final state takes part in every later round
  // (CheckpointRounds::retire).
  void retire_from_checkpoints(Worker& w) {
    if (!writer_ || w.steps() < w.max_steps() || !finite_for_checkpoint(w)) return;
    checkpoint_rounds_->retire(local(w), w.save_state());
  }

  // Deterministic mode: at the end of the round in which worker 0 passes a multiple of
  // --checkpoint-every, every worker, the order generator and the unread messages. Written
  // before the next round starts, so that where a run stops says exactly which checkpoint
  // it left.
  void checkpoint_round_deterministic() {
    if (!writer_ || workers_.front()->steps() < next_checkpoint_step_) return;
    all_states_checkpoint();
    writer_->drain();
  }

  void all_states_checkpoint() {
    const std::int64_t s0 = workers_.front()->steps();
    next_checkpoint_step_ = checkpoint_step_after(s0);
    std::vector<WorkerState> states;
    for (auto& w : workers_) {
      if (!finite_for_checkpoint(*w)) return;  // never written; see maybe_checkpoint()
      states.push_back(w->save_state());
    }
    submit_checkpoint(std::move(states), c_.deterministic);
  }

  // The state at the end of training (all threads joined), and every write on disk.
  void write_final_checkpoint() {
    if (!writer_) return;
    all_states_checkpoint();
    writer_->drain();
  }

  // --resume: this process's workers continue from the checkpoint in c_.resume_dir.
  void resume() {
    const std::string path = checkpoint_file(c_.resume_dir, place_.rank, per_rank_checkpoints());
    const Checkpoint ck = read_checkpoint(path);
    check_resumable(ck, path, identity());
    const bool shared = place_.multiprocess() && !per_rank_checkpoints();  // rank 0's, for all
    if (ck.workers.size() != (shared ? 1 : workers_.size()))
      ASGD_INPUT_ERROR("--resume: '{}' holds {} worker state(s), this process runs {}", path,
                       ck.workers.size(), workers_.size());
    for (std::size_t i = 0; i < workers_.size(); ++i) {
      Worker& w = *workers_[i];
      const WorkerState& s = shared ? ck.workers.front() : ck.workers[i];
      if (!shared && s.id != w.id())
        ASGD_INPUT_ERROR("--resume: '{}' holds worker {} where this run has worker {}", path,
                         s.id, w.id());
      w.load_state(s, !shared || place_.rank == 0);
    }
    if (c_.deterministic) {
      order_rng_ = generator_from_state(ck.run_rng, "worker order");
      if (transport_) {
        std::vector<int> starts(ck.collect_starts.begin(), ck.collect_starts.end());
        transport_->restore_receive_state(starts);
        for (const UnreadMessage& m : ck.unread) {
          if (m.receiver < 0 || m.receiver >= c_.workers || m.header.sender < 0 ||
              m.header.sender >= c_.workers || m.header.sender == m.receiver)
            ASGD_INPUT_ERROR("--resume: '{}': an unread message names workers outside the run",
                             path);
          transport_->post(m.receiver, m.header, m.payload.data());
        }
      }
    }
    const std::int64_t s0 = workers_.front()->steps();
    next_checkpoint_step_ = checkpoint_step_after(s0);
    resumed_elapsed_s_ = ck.elapsed_s;
    result_.resumed_step = s0;
    if (!place_.multiprocess() || place_.rank == 0)
      std::fprintf(stderr, "asgd: resuming from %s: worker 0 at step %lld, %.1f s trained\n",
                   path.c_str(), static_cast<long long>(s0), ck.elapsed_s);
    RunEvent e;
    e.event = "resume";
    e.worker = workers_.front()->id();
    e.step = s0;
    e.values = {{"elapsed_s", ck.elapsed_s}};
    e.detail = path;
    metrics_.write(e);
  }

  bool eval_due(const Worker& w) const {
    return w.steps() % c_.eval_every == 0 || w.steps() >= w.max_steps();
  }

  void check_time() {
    if (c_.max_seconds > 0 && seconds_since(start_) >= c_.max_seconds) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stop_reason_.empty()) stop_reason_ = "max-seconds";
      stop_ = true;
    }
  }

  void show_progress(const Worker& w) {
    if (w.id() != 0) return;
    const double elapsed = seconds_since(start_);
    const double rate = static_cast<double>((w.steps() - start_steps_[local(w)]) * c_.batch) /
                        std::max(elapsed, 1e-9);
    double eta = static_cast<double>((w.max_steps() - w.steps()) * c_.batch) / rate;
    if (c_.max_seconds > 0) eta = std::min(eta, c_.max_seconds - elapsed);
    std::lock_guard<std::mutex> lock(mutex_);
    progress_.update(w.steps(), static_cast<double>(w.steps() * c_.batch) / shards_[0].rows,
                     rate * c_.workers, eta);
  }

  // Emulates a slower device: the worker idles (F-1) times the duration of its step.
  void straggle(const Worker& w, Clock::time_point step_start) {
    if (c_.straggler.worker != w.id() || c_.straggler.factor <= 1.0) return;
    w.stream().synchronize();
    idle_for((c_.straggler.factor - 1.0) * seconds_since(step_start));
  }

  // The load balancer, where workers communicate and it is wanted (--balance, --peers).
  void start_balancer(Worker& w0) {
    Transport* t = transport_.get();
#if ASGD_HAVE_MPI
    if (!t && mpi_ && communicates(c_.algorithm)) t = mpi_.get();
#endif
    const BalanceMode mode = resolved_balance(c_);
    if (!t || c_.workers < 2 ||
        (mode != BalanceMode::kAuto && c_.peer_choice != PeerChoice::kBandwidth))
      return;
    const std::int64_t n = w0.parameter_count();
    BalancerOptions o;
    o.limits.rho = c_.rho;
    o.limits.max_message = c_.max_message > 0 ? std::min(c_.max_message, n) : n;
    o.limits.min_message = std::min(c_.min_message, o.limits.max_message);
    // By default each peer gets a message every (peers) steps: one message per step in all,
    // as with the fixed default, until a link cannot carry that.
    o.limits.min_interval = c_.min_interval > 0 ? c_.min_interval : std::max(1, c_.workers - 1);
    o.limits.max_interval = std::max(c_.max_interval, o.limits.min_interval);
    o.limits.max_backlog = c_.queue_capacity;
    o.adjust_settings = mode == BalanceMode::kAuto;
    if (c_.compute_share > 0) {
      o.limits.compute_share = c_.compute_share;
      o.seconds_per_element = [this](int id) { return comm_cost(id); };
    }
    // The links are measured before training: in one process here, across processes by
    // probe_ranks().
    if (transport_) {
      const std::int64_t top = std::min<std::int64_t>(n * 4, 1 << 20);
      ProbeLimits limits;
      limits.timeout_s = c_.peer_timeout_s;
      probe_ = probe_links(*transport_, c_.workers,
                           {std::min<std::int64_t>(4096, top), top / 4, top}, 3, limits);
    }
    steps_seen_.assign(static_cast<std::size_t>(c_.workers), StepClock{});
    for (auto& w : workers_) steps_seen_[static_cast<std::size_t>(w->id())].steps = w->steps();
    last_step_time_.assign(static_cast<std::size_t>(c_.workers), 0.0);
    board_ = std::make_unique<PeerBoard>(c_.workers);
    std::vector<int> local_ids;
    for (auto& w : workers_) local_ids.push_back(w->id());
    balancer_ = std::make_unique<LoadBalancer>(
        *t, local_ids, *board_, probe_, [this](int id) { return step_time(id); },
        [this](const BalanceDecision& d) {
          std::lock_guard<std::mutex> lock(mutex_);
          metrics_.write(d, started_ ? seconds_since(start_) : 0.0);
          ++decisions_;
        },
        o);
    for (auto& w : workers_) w->set_peer_board(board_.get(), mode == BalanceMode::kAuto);
  }

  // Worker `id`'s wall time per step (called from the balancer's thread only): its step time
  // since the balancer last asked, evaluations left out, plus its evaluation time per step
  // since the start. The controller bounds the fraction of real time a link is busy and of the
  // worker's time its messages cost, and k steps of a worker that evaluates take that much
  // longer; leaving evaluations out made K-Means, whose race evaluates every 5 steps at three
  // times a step's cost, send a third as often as its links and compute share allowed. They
  // are averaged over the whole run because they come in bursts: one evaluation of the MLP
  // every 100 steps is a third of a 50 ms reading or none of it.
  double step_time(int id) {
    const std::size_t i = static_cast<std::size_t>(id - first_id_);
    if (i >= workers_.size() || !started_) return 0.0;
    const double t = seconds_since(start_);
    const double eval = published_eval_s_[i].load(std::memory_order_relaxed);
    const std::int64_t steps = published_steps_[i].load(std::memory_order_relaxed);
    StepClock& seen = steps_seen_[static_cast<std::size_t>(id)];
    double& last = last_step_time_[static_cast<std::size_t>(id)];
    if (steps - seen.steps >= 5) {
      const double step_s = std::max(0.0, (t - seen.time_s) - (eval - seen.eval_s)) /
                            static_cast<double>(steps - seen.steps);
      seen = {t, eval, steps};
      // Smoothed: an evaluation straddling two readings skews both a little.
      last = last > 0 ? 0.7 * last + 0.3 * step_s : step_s;
    }
    if (last <= 0) return 0.0;
    const std::int64_t done = steps - start_steps_[i];
    return last + (done > 0 ? eval / static_cast<double>(done) : 0.0);
  }

  // Worker `id`'s recent compute per element sent and merged (the medians of its last merges
  // and sends, Worker::comm_seconds_per_element()), counted per accepted element where the
  // worker counts them, over the elements judged since the previous reading
  // (cost_per_useful_element; balancer thread only); negative until the worker has timed
  // CostMedian::kMinEvents merges, then read again every kCostSampleElements merged elements.
  double comm_cost(int id) {
    const std::size_t i = static_cast<std::size_t>(id - first_id_);
    if (i >= workers_.size()) return -1.0;
    const double per_element = published_comm_cost_[i].load(std::memory_order_relaxed);
    const std::int64_t elements = published_comm_elements_[i].load(std::memory_order_relaxed);
    const std::int64_t judged = published_comm_judged_[i].load(std::memory_order_relaxed);
    const std::int64_t accepted = published_comm_accepted_[i].load(std::memory_order_relaxed);
    CostClock& seen = cost_seen_[static_cast<std::size_t>(id)];
    if (!(per_element >= 0) || (seen.cost >= 0 && elements - seen.elements < kCostSampleElements))
      return seen.cost;
    const double acceptance = judged > seen.judged
                                  ? static_cast<double>(accepted - seen.accepted) /
                                        static_cast<double>(judged - seen.judged)
                                  : -1.0;  // nothing judged (a GPU worker, or the warm-up)
    const double cost = cost_per_useful_element(per_element, acceptance);
    seen.cost = seen.cost >= 0 ? 0.7 * seen.cost + 0.3 * cost : cost;
    seen.elements = elements;
    seen.judged = judged;
    seen.accepted = accepted;
    return seen.cost;
  }

  // --link-change: at the given time every link of this process's workers changes.
  void maybe_change_links(const Worker& w) {
    if (c_.links.change_at_s < 0 || links_changed_.load(std::memory_order_relaxed) ||
        w.id() != first_id_ || seconds_since(start_) < c_.links.change_at_s)
      return;
    links_changed_ = true;
    LinkModel l;
    l.bandwidth_bytes_per_s = c_.links.change_bandwidth;
    l.latency_s = c_.links.change_latency;
    if (transport_)
      for (int i = 0; i < c_.workers; ++i)
        for (int j = 0; j < c_.workers; ++j)
          if (i != j) transport_->set_link(i, j, l);
#if ASGD_HAVE_MPI
    if (mpi_)
      for (int peer = 0; peer < place_.ranks; ++peer)
        if (peer != place_.rank) mpi_->set_link(peer, l);
#endif
  }

  void run_async(Worker& w) {
    while (!stop_ && !peer_asked_to_stop() && w.steps() < w.max_steps()) {
      const auto t0 = Clock::now();
      w.step();
      published_steps_[local(w)].store(w.steps(), std::memory_order_relaxed);
      published_comm_cost_[local(w)].store(w.comm_seconds_per_element(), std::memory_order_relaxed);
      published_comm_elements_[local(w)].store(w.comm_elements(), std::memory_order_relaxed);
      published_comm_judged_[local(w)].store(w.comm_judged_elements(), std::memory_order_relaxed);
      published_comm_accepted_[local(w)].store(w.comm_accepted_elements(),
                                               std::memory_order_relaxed);
      maybe_change_links(w);
      if (balancer_ && w.steps() % 64 == 0) balancer_->check();
      straggle(w, t0);
      inject_faults(w);
      guard_divergence_if_due(w);
      if (eval_due(w)) evaluate_due(w, w.id());
      maybe_checkpoint(w);  // after the evaluation: a resumed run does not repeat it
      if (w.id() == 0 && w.steps() >= w.max_steps()) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stop_reason_.empty()) stop_reason_ = "epochs";
        stop_ = true;
      }
      check_time();
      show_progress(w);
    }
    if (!stop_) retire_from_checkpoints(w);
    evaluate_last(w, w.id());
  }

  void run_sync(Worker& w) {
    std::vector<Worker*> all;
    for (auto& x : workers_) all.push_back(x.get());
    while (true) {
      const auto t0 = Clock::now();
      w.compute_gradient();
      w.stream().synchronize();  // others read this gradient after the barrier
      straggle(w, t0);
      barrier_.arrive_and_wait();
      idle_for(sync_comm_s_);  // the emulated allreduce
      w.apply_mean_gradient(all);
      w.stream().synchronize();
      inject_faults(w);
      // The states are identical: worker 0 evaluates for all and decides the stop.
      if (w.id() == 0) {
        guard_divergence_if_due(w);
        if (eval_due(w)) evaluate(w, 0);
        if (w.steps() >= w.max_steps()) {
          std::lock_guard<std::mutex> lock(mutex_);
          if (stop_reason_.empty()) stop_reason_ = "epochs";
          stop_ = true;
        }
        check_time();
        show_progress(w);
      }
      maybe_checkpoint(w);
      barrier_.arrive_and_wait();  // nobody overwrites its gradient before all have read
      if (stop_) break;
    }
    if (w.id() == 0 && w.steps() != last_eval_[0].second) evaluate(w, 0);
  }

  // One thread steps the workers, each round in a seeded random order; a straggler with
  // factor F takes part in a round with probability 1/F. Every message is delivered inside
  // post(), so the run is a pure function of the configuration. --step-order lockstep holds
  // every send of a round back until all its steps are done (see StepOrder).
  void run_deterministic() {
    std::mt19937_64& rng = order_rng_;
    std::vector<Worker*> order;
    for (auto& w : workers_) order.push_back(w.get());
    std::uniform_real_distribution<double> u(0.0, 1.0);
    std::vector<Worker*> stepped;  // lockstep: this round's workers, whose sends are due
    while (!stop_) {
      if (c_.algorithm == Algorithm::kSync) {
        // Each worker computes on its own stream: every gradient must be complete before any
        // worker reads it, and every read done before the next round overwrites it.
        for (Worker* w : order) w->compute_gradient();
        for (Worker* w : order)
          w->stream().synchronize();
        for (Worker* w : order) w->apply_mean_gradient(order);
        for (Worker* w : order)
          w->stream().synchronize();
        for (Worker* w : order) inject_faults(*w);
        Worker& w0 = *workers_.front();
        guard_divergence_if_due(w0);
        if (eval_due(w0)) evaluate(w0, 0);
        if (w0.steps() >= w0.max_steps() && stop_reason_.empty()) stop_reason_ = "epochs";
        if (w0.steps() >= w0.max_steps()) stop_ = true;
        check_time();
        if (!stop_) checkpoint_round_deterministic();
        continue;
      }
      // Each round's order is a function of the generator alone (not of the previous round's),
      // so a checkpoint of the generator is enough to continue the same sequence.
      std::sort(order.begin(), order.end(), [](const Worker* a, const Worker* b) { return a->id() < b->id(); });
      std::shuffle(order.begin(), order.end(), rng);
      // What follows a worker's step (and, in lockstep, every worker's send of the round).
      auto after_step = [&](Worker& w) {
        inject_faults(w);
        guard_divergence_if_due(w);
        if (eval_due(w)) evaluate_due(w, w.id());
        if (w.id() == 0 && w.steps() >= w.max_steps()) {
          if (stop_reason_.empty()) stop_reason_ = "epochs";
          stop_ = true;
        }
      };
      const bool lockstep = c_.step_order == StepOrder::kLockstep;
      bool any = false;
      stepped.clear();
      for (Worker* w : order) {
        if (stop_ || w->steps() >= w->max_steps()) continue;
        const bool slow = c_.straggler.worker == w->id() && c_.straggler.factor > 1.0;
        if (slow && u(rng) >= 1.0 / c_.straggler.factor) continue;
        any = true;
        w->step(/*send_now=*/!lockstep);
        if (lockstep)
          stepped.push_back(w);
        else
          after_step(*w);
      }
      // Lockstep: nothing sent in this round was visible to a step of it.
      for (Worker* w : stepped)
        w->send_due();
      for (Worker* w : stepped)
        after_step(*w);
      // A wall-clock stop ends the run between rounds: where it stops depends on the machine,
      // the states up to there do not.
      check_time();
      if (!stop_) checkpoint_round_deterministic();
      if (!any && workers_.front()->steps() >= workers_.front()->max_steps()) break;
    }
    for (auto& w : workers_)
      if (c_.algorithm != Algorithm::kSync || w->id() == 0) evaluate_last(*w, w->id());
  }

  // SimuParallelSGD's result: the mean of all workers' states, evaluated as worker -1.
  void average_states() {
    if (place_.multiprocess()) {
      average_states_across_ranks();
      return;
    }
    std::vector<double> sum(static_cast<std::size_t>(workers_.front()->parameter_count()), 0.0);
    for (auto& w : workers_) {
      const std::vector<float> s = w->download_state();
      for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += s[i];
    }
    std::vector<float> mean(sum.size());
    for (std::size_t i = 0; i < sum.size(); ++i)
      mean[i] = static_cast<float>(sum[i] / static_cast<double>(workers_.size()));
    Worker& w0 = *workers_.front();
    w0.upload_state(mean);
    evaluate(w0, -1);
  }

  TrainResult finish() {
    progress_.finish();
    TrainResult& r = result_;
    r.train_seconds = seconds_since(start_);
    r.stop_reason = stop_reason_.empty() ? (peer_asked_to_stop() ? "peer" : "epochs") : stop_reason_;
    Worker& w0 = *workers_.front();
    r.steps = w0.steps();
    r.samples = w0.steps() * c_.batch;
    r.eval_seconds = eval_seconds_.front();
    // Each worker's last evaluation and step count; across ranks, gathered on rank 0.
    std::vector<EvalPoint> finals;
    std::int64_t total_steps = 0;
    std::int64_t fresh_steps = 0;  // of this run (a resumed one started after the others)
    for (std::size_t i = 0; i < workers_.size(); ++i) {
      auto it = final_.find(i);
      if (it != final_.end()) finals.push_back(it->second);
      total_steps += workers_[i]->steps();
      fresh_steps += workers_[i]->steps() - start_steps_[i];
    }
    if (transport_)
      for (int i = 0; i < c_.workers; ++i)
        for (int j = 0; j < c_.workers; ++j)
          if (i != j) r.messages_superseded += transport_->stats(i, j).superseded;
    for (auto& w : workers_) r.divergence_restores += w->restores();
    r.checkpoints_written = writer_ ? writer_->written() : 0;
    if (place_.multiprocess()) gather_ranks(finals, total_steps, fresh_steps);
    r.total_samples = total_steps * c_.batch;
    const double busy = r.train_seconds - r.eval_seconds;
    r.samples_per_s = busy > 0 ? static_cast<double>(fresh_steps * c_.batch) / busy : 0;
    r.worker_final = finals;
    if (communicates(c_.algorithm))
      for (const EvalPoint& p : finals) {
        r.messages_sent += p.messages_sent;
        r.messages_received += p.messages_received;
        r.messages_accepted += p.messages_accepted;
        r.messages_rejected += p.messages_rejected;
        r.messages_rejected_direction += p.messages_rejected_direction;
        r.messages_rejected_window += p.messages_rejected_window;
        r.messages_nonfinite += p.messages_nonfinite;
        r.bytes_sent += p.bytes_sent;
      }
    if (!r.history.empty()) {
      r.final_test_accuracy = r.history.back().test_accuracy;
      r.final_test_loss = r.history.back().test_loss;
    }
    return std::move(r);
  }

  // Trace time 0 is the start of training on every rank: the ranks leave a barrier together,
  // which aligns their clocks (even across hosts) to within the barrier's skew.
  void align_trace_clocks() {
    if (!trace_.enabled()) return;
#if ASGD_HAVE_MPI
    if (place_.multiprocess()) distributed::barrier(MpiSession::get());
#endif
    trace_.set_time_offset_us(-static_cast<double>(trace_.now_ns()) / 1e3);
  }

  // One file for the whole run: across processes, rank 0 writes every rank's events.
  void write_trace() {
    if (!trace_.enabled()) return;
#if ASGD_HAVE_MPI
    if (place_.multiprocess()) {
      std::vector<std::string> chunks =
          distributed::gather_strings(MpiSession::get(), place_.rank == 0 ? std::string() : trace_.events_json());
      if (place_.rank == 0) trace_.write(c_.trace_path, chunks);
      return;
    }
#endif
    trace_.write(c_.trace_path);
  }

  bool peer_asked_to_stop() const {
#if ASGD_HAVE_MPI
    return mpi_ && mpi_->stop_requested();
#else
    return false;
#endif
  }

#if ASGD_HAVE_MPI
  // One rank's part of a multi-process run: the same model everywhere (checked), the settings
  // that must agree (checked), where each rank runs (printed), and the MPI transport.
  void connect_ranks(Worker& w) {
    MpiSession& session = MpiSession::get();
    distributed::check_same_model(session, w.parameter_count(), w.model().fingerprint(),
                                  w.model().describe());
    distributed::check_same_settings(session, shared_setting_list(c_, data_description_));
    const std::string device =
        w.stream().is_host()
            ? fmt::format("host, {} thread(s)", c_.threads)
            : fmt::format("cuda:{}", w.stream().device());
    distributed::report_topology(session, device, c_.progress || place_.rank == 0);
    if (communicates(c_.algorithm) && resolved_balance(c_) == BalanceMode::kAuto)
      probe_ranks(device);
    MpiTransportOptions o;
    o.max_message = w.parameter_count();
    o.queue_capacity = c_.queue_capacity;
    o.model = {w.parameter_count(), w.model().fingerprint()};
    o.peer_timeout_s = c_.peer_timeout_s;
    o.idle_poll_s = c_.comm_poll_s > 0
                        ? c_.comm_poll_s
                        : idle_poll_seconds(static_cast<int>(std::thread::hardware_concurrency()),
                                            session.local_size(), c_.threads);
    o.trace = &trace_;
    const bool rounds =
        c_.transport == TransportKind::kNccl || c_.transport == TransportKind::kRounds;
    for (const Fault& f : c_.faults)
      if (f.on_wire() && rounds && communicates(c_.algorithm))
        ASGD_INPUT_ERROR(
            "--fault {}: faults on the wire are injected by the MPI transport; use "
            "--transport mpi for this experiment",
            f.kind);
    for (const Fault& f : c_.faults)
      if (f.on_wire() && f.worker == place_.rank) {
        o.fault.kind = parse_wire_fault(f.kind);
        o.fault.every = f.at;
      }
    const bool nccl = use_nccl(session, w);
    if (nccl || (c_.transport == TransportKind::kRounds && communicates(c_.algorithm))) {
      RoundTransportOptions r;
      r.max_message = o.max_message;
      r.queue_capacity = o.queue_capacity;
      r.model = o.model;
      r.peer_timeout_s = o.peer_timeout_s;
      r.idle_poll_s = o.idle_poll_s;
      r.trace = o.trace;
      std::unique_ptr<PayloadPlane> plane =
          nccl ? make_nccl_plane(session, w) : std::make_unique<MpiPayloadPlane>(session);
      mpi_ = std::make_unique<RoundTransport>(session, r, std::move(plane));
      result_.transport = nccl ? "nccl" : "rounds";
    } else {
      mpi_ = std::make_unique<MpiTransport>(session, o);
      result_.transport = "mpi";
    }
    for (int peer = 0; peer < place_.ranks; ++peer)
      if (peer != place_.rank) mpi_->set_link(peer, link_between(c_.links, place_.rank, peer));
    if (communicates(c_.algorithm)) w.attach(mpi_.get());
  }

  // --transport nccl: NCCL where every rank has a GPU worker of its own and the build has NCCL,
  // otherwise the MPI transport on every rank (the ranks must agree: they decide together).
  // The reason is printed by rank 0, and by any rank whose own reason differs from rank 0's.
  bool use_nccl(const MpiSession& session, const Worker& w) {
    if (c_.transport != TransportKind::kNccl || !communicates(c_.algorithm)) return false;
    std::string why;
    if (!ASGD_HAVE_NCCL)
      why = "this build has no NCCL (the NCCL library and CUDA toolkit were not found)";
    else if (w.stream().is_host())
      why = "the workers run on the host backend (NCCL moves GPU memory: use --backend cuda)";
    if (distributed::allreduce_max(session, why.empty() ? 0.0 : 1.0) == 0) {
      // NCCL refuses two ranks of one communicator on one GPU (ncclInvalidUsage, "Duplicate
      // GPU"), which happens when more ranks than GPUs share a host.
      const std::string gpu = fmt::format("{} {}", session.host(), gpu_bus_id(w.stream().device()));
      const std::vector<std::string> all = distributed::gather_strings(session, gpu);  // rank 0
      std::string shared;
      for (std::size_t a = 0; a < all.size() && shared.empty(); ++a)
        for (std::size_t b = a + 1; b < all.size() && shared.empty(); ++b)
          if (all[a] == all[b])
            shared = fmt::format(
                "ranks {} and {} share one GPU ({}), and NCCL needs a GPU per rank (run at "
                "most as many ranks per host as it has GPUs)",
                a, b, all[a]);
      why = distributed::broadcast_string(session, shared);
      if (why.empty()) return true;
      if (place_.rank == 0)
        std::fprintf(stderr, "asgd: --transport nccl: %s; every rank uses the MPI transport\n",
                     why.c_str());
      return false;
    }
    const std::string root_why = distributed::broadcast_string(session, why);
    if (!why.empty() && (place_.rank == 0 || root_why != why))
      std::fprintf(stderr,
                   "asgd: rank %d: --transport nccl: %s; every rank uses the MPI transport\n",
                   place_.rank, why.c_str());
    return false;
  }

  // Never throws: every rank must reach the gather that follows.
  static std::string gpu_bus_id(int device) {
    try {
      for (const DeviceInfo& d : list_devices())
        if (d.backend == Backend::kCuda && d.ordinal == device) return d.bus_id;
    } catch (const std::exception&) {
      // Falls through: the ordinal still tells ranks apart where CUDA_VISIBLE_DEVICES agrees.
    }
    return fmt::format("cuda:{}", device);
  }

  std::unique_ptr<PayloadPlane> make_nccl_plane(const MpiSession& session, const Worker& w) {
#if ASGD_HAVE_NCCL
    return std::make_unique<NcclPayloadPlane>(session, w.stream().device());
#else
    (void)session;
    (void)w;
    ASGD_THROW("this build has no NCCL");
#endif
  }

  // The balancer's start-up probe across processes: a short ping-pong sweep between every
  // pair of ranks over MPI (comm/mpi/link_bench.h), before the transport's thread starts. A
  // link emulated in the transport (--link-bandwidth, --link-latency) adds its own latency and
  // its time per byte to what the real link measured.
  void probe_ranks(const std::string& device) {
    LinkBenchOptions o = LinkBenchOptions::quick();
    o.min_bytes = 4096;
    o.iterations = 10;
    o.warmup = 2;
    o.device = device;
    const LinkBenchResult r = run_link_bench(o);
    probe_.assign(static_cast<std::size_t>(place_.ranks),
                  std::vector<LinkModel>(static_cast<std::size_t>(place_.ranks)));
    for (const LinkBenchPair& pair : r.pairs) {
      LinkModel l = pair.link();
      const LinkModel e = link_between(c_.links, pair.from, pair.to);
      if (!e.ideal()) {
        l.latency_s += e.latency_s;
        l.bandwidth_bytes_per_s = 1.0 / (1.0 / l.bandwidth_bytes_per_s + 1.0 / e.bandwidth_bytes_per_s);
      }
      probe_[static_cast<std::size_t>(pair.from)][static_cast<std::size_t>(pair.to)] = l;
    }
  }

  // This rank's single worker runs on this thread; the transport's thread does the talking.
  void run_rank() {
    Worker& w = *workers_.front();
    try {
      if (c_.algorithm == Algorithm::kSync)
        run_sync_across_ranks(w);
      else
        run_async(w);
    } catch (...) {
      // The others are not waiting for this rank in a collective; the CLI ends the job. The
      // balancer's thread reads the transport: it goes first, as does the worker's loan of a
      // send buffer.
      balancer_.reset();
      w.drop_pending_send();
      mpi_.reset();
      throw;
    }
    // A range staged after the last send is not sent (it never was), but the final
    // checkpoint keeps it, as it did before the worker staged it in a lent buffer.
    w.return_send_buffer();
    mpi_->finish(place_.rank == 0);
  }

  // sync across processes: the gradients are summed with MPI_Allreduce every step; rank 0's
  // stop decision travels in the same reduction, so every rank leaves at the same step.
  void run_sync_across_ranks(Worker& w) {
    MpiSession& session = MpiSession::get();
    const std::size_t n = static_cast<std::size_t>(w.parameter_count());
    std::vector<float> g(n + 1);  // the gradient and, last, rank 0's stop flag
    while (true) {
      const auto t0 = Clock::now();
      w.compute_gradient();
      w.download_gradient(g.data());
      straggle(w, t0);
      g[n] = place_.rank == 0 && stop_ ? 1.0f : 0.0f;
      distributed::allreduce_sum(session, g.data(), static_cast<std::int64_t>(g.size()));
      idle_for(sync_comm_s_);  // an emulated link's share, as in one process
      if (g[n] > 0) break;
      w.apply_gradient_sum(g, place_.ranks);
      inject_faults(w);
      if (place_.rank != 0) {
        maybe_checkpoint(w);
        continue;
      }
      guard_divergence_if_due(w);
      if (eval_due(w)) evaluate(w, 0);
      maybe_checkpoint(w);
      if (w.steps() >= w.max_steps()) {
        if (stop_reason_.empty()) stop_reason_ = "epochs";
        stop_ = true;
      }
      check_time();
      show_progress(w);
    }
    if (place_.rank == 0) evaluate_last(w, 0);
  }

  // simu across processes: the mean of the ranks' states, evaluated on rank 0 as worker -1.
  void average_states_across_ranks() {
    Worker& w = *workers_.front();
    std::vector<float> state = w.download_state();
    distributed::allreduce_sum(MpiSession::get(), state.data(),
                               static_cast<std::int64_t>(state.size()));
    for (float& x : state) x /= static_cast<float>(place_.ranks);
    if (place_.rank != 0) return;
    w.upload_state(state);
    evaluate(w, -1);
  }

  // Rank 0 gets every rank's final evaluation and step count.
  struct RankFinal {
    EvalPoint point;
    std::int64_t has_point = 0;
    std::int64_t steps = 0;
    std::int64_t superseded = 0;
    std::int64_t fresh_steps = 0;
    std::int64_t restores = 0;
    std::int64_t rejected[kWireErrorCount] = {};
  };
  void gather_ranks(std::vector<EvalPoint>& finals, std::int64_t& total_steps,
                    std::int64_t& fresh_steps) {
    RankFinal mine;
    mine.has_point = finals.empty() ? 0 : 1;
    if (!finals.empty()) mine.point = finals.front();
    mine.steps = total_steps;
    mine.fresh_steps = fresh_steps;
    for (int peer = 0; peer < place_.ranks; ++peer)
      if (peer != place_.rank) mine.superseded += mpi_->stats(place_.rank, peer).superseded;
    mine.restores = result_.divergence_restores;
    const WireRejections rejected = mpi_->rejections();
    for (int k = 0; k < kWireErrorCount; ++k) mine.rejected[k] = rejected[static_cast<std::size_t>(k)];
    const std::vector<RankFinal> all = distributed::gather_to_root(MpiSession::get(), mine);
    if (place_.rank != 0) return;
    finals.clear();
    total_steps = 0;
    fresh_steps = 0;
    result_.messages_superseded = 0;
    result_.divergence_restores = 0;
    std::int64_t rejected_sum[kWireErrorCount] = {};
    for (const RankFinal& f : all) {
      if (f.has_point) finals.push_back(f.point);
      total_steps += f.steps;
      fresh_steps += f.fresh_steps;
      result_.messages_superseded += f.superseded;
      result_.divergence_restores += f.restores;
      for (int k = 0; k < kWireErrorCount; ++k) rejected_sum[k] += f.rejected[k];
    }
    for (int k = 1; k < kWireErrorCount; ++k)
      result_.wire_rejections.emplace_back(std::string(to_string(static_cast<WireError>(k))),
                                           rejected_sum[k]);
  }
#else
  void connect_ranks(Worker&) {}
  void run_rank() {}
  void average_states_across_ranks() {}
  void gather_ranks(std::vector<EvalPoint>&, std::int64_t&, std::int64_t&) {}
#endif

  const Placement place_;
  const TrainConfig c_;  // as this rank sees it (for_placement)
  TraceRecorder trace_;  // outlives the workers and transports that record into it
  int first_id_ = 0;     // id of workers_[0]
  std::vector<Dataset> shards_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<LocalTransport> transport_;
  // The load balancer (declared after the transports: it stops before they go).
  std::unique_ptr<PeerBoard> board_;
  std::vector<std::vector<LinkModel>> probe_;
  struct StepClock {
    double time_s = 0;
    double eval_s = 0;
    std::int64_t steps = 0;
  };
  std::vector<StepClock> steps_seen_;                        // balancer thread only
  std::vector<double> last_step_time_;                       // balancer thread only
  std::unique_ptr<std::atomic<std::int64_t>[]> published_steps_;  // per local worker
  std::unique_ptr<std::atomic<double>[]> published_eval_s_;      // its evaluation seconds
  std::unique_ptr<std::atomic<double>[]> published_comm_cost_;   // comm_seconds_per_element()
  std::unique_ptr<std::atomic<std::int64_t>[]> published_comm_elements_;
  std::unique_ptr<std::atomic<std::int64_t>[]> published_comm_judged_;
  std::unique_ptr<std::atomic<std::int64_t>[]> published_comm_accepted_;
  struct CostClock {
    std::int64_t elements = 0;
    std::int64_t judged = 0;
    std::int64_t accepted = 0;
    double cost = -1;  // seconds per useful element; negative until measured
  };
  std::vector<CostClock> cost_seen_;  // balancer thread only
  std::atomic<bool> links_changed_{false};
  std::atomic<bool> started_{false};
  std::int64_t decisions_ = 0;  // under mutex_
#if ASGD_HAVE_MPI
  std::unique_ptr<RankTransport> mpi_;  // MPI or NCCL: one worker per rank
#endif
  MetricsLog metrics_;
  ProgressLine progress_;
  Barrier barrier_;
  double sync_comm_s_ = 0;
  Clock::time_point start_;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;  // metrics_, progress_, result_, stop_reason_, final_
  std::string stop_reason_;
  TrainResult result_;
  std::string data_description_;  // describe_data() of the training set
  std::map<std::size_t, EvalPoint> final_;
  // Per worker, touched only by its own thread: (time, step) of the last evaluation.
  std::vector<std::pair<double, std::int64_t>> last_eval_;
  std::vector<std::int64_t> last_tested_;  // the step of each worker's last test evaluation
  std::vector<double> eval_seconds_;
  ErrorSlot errors_;
  // Reliability.
  static constexpr std::int64_t kDivergenceCheckInterval = 100;  // steps (at most)
  std::int64_t check_interval_ = kDivergenceCheckInterval;
  std::mt19937_64 order_rng_;  // deterministic mode: the order of the workers in each round
  double resumed_elapsed_s_ = 0;
  std::vector<std::int64_t> start_steps_;  // per local worker: its step when this run began
  std::vector<std::int64_t> checked_at_;   // per local worker, its thread: last finite check
  std::string checkpoint_path_;
  std::atomic<std::int64_t> checkpoint_requested_{0};
  std::vector<std::int64_t> checkpoint_done_;  // per local worker, its own thread
  std::unique_ptr<CheckpointRounds> checkpoint_rounds_;  // threads and ranks
  std::int64_t next_checkpoint_step_ = 0;     // deterministic mode
  // Declared after everything a checkpoint reads; its destructor writes what waits.
  std::unique_ptr<CheckpointWriter> writer_;
  // Last: its thread writes metrics_ under mutex_ and reads the transports, so it stops first.
  std::unique_ptr<LoadBalancer> balancer_;
};

}  // namespace

TrainResult train(const TrainConfig& config) {
  validate(config);
  return train(config, load_dataset(config.data));
}

TrainResult train(const TrainConfig& config, const TrainTest& data) {
  return train(config, data, builtin_model_factory(config.model));
}

TrainResult train(const TrainConfig& config, const TrainTest& data, const ModelFactory& factory) {
  validate(config);
  check_dataset(data.train, "training set");
  check_dataset(data.test, "test set");
  if (data.train.cols != data.test.cols)
    ASGD_INPUT_ERROR("train and test sets differ in width: {} has {} features, {} has {}",
                     data.train.source, data.train.cols, data.test.source, data.test.cols);
  if (data.train.rows < config.workers)
    ASGD_INPUT_ERROR("{} training rows cannot be shared among {} workers", data.train.rows,
                     config.workers);
  Run run(config, data, factory);
  return run.run();
}

void write_summary(const std::string& path, const TrainConfig& c, const TrainResult& r) {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  nlohmann::json workers = nlohmann::json::array();
  for (const EvalPoint& p : r.worker_final)
    workers.push_back({{"worker", p.worker},
                       {"steps", p.step},
                       {"test_accuracy", p.test_accuracy},
                       {"test_loss", p.test_loss},
                       {"messages_sent", p.messages_sent},
                       {"messages_received", p.messages_received},
                       {"messages_accepted", p.messages_accepted},
                       {"messages_rejected", p.messages_rejected},
                       {"messages_rejected_direction", p.messages_rejected_direction},
                       {"messages_rejected_window", p.messages_rejected_window},
                       {"messages_nonfinite", p.messages_nonfinite},
                       {"mean_staleness_s", p.mean_staleness_s},
                       {"mean_step_gap", p.mean_step_gap}});
  nlohmann::json rejections = nlohmann::json::object();
  for (const auto& [reason, count] : r.wire_rejections) rejections[reason] = count;
  auto number_or_null = [](bool ok, double v) { return ok ? nlohmann::json(v) : nlohmann::json(); };
  nlohmann::json j = {
      {"final_test_accuracy", number_or_null(r.classifier, r.final_test_accuracy)},
      {"final_test_loss", r.final_test_loss},
      {"final_objective", r.final_test_loss},
      {"time_to_target_s",
       number_or_null(r.time_to_target_s.has_value(), r.time_to_target_s.value_or(0.0))},
      {"target_accuracy", number_or_null(c.target_accuracy > 0, c.target_accuracy)},
      {"train_seconds", r.train_seconds},
      {"eval_seconds", r.eval_seconds},
      {"samples_per_s", r.samples_per_s},
      {"steps", r.steps},
      {"samples", r.samples},
      {"total_samples", r.total_samples},
      {"stop_reason", r.stop_reason},
      {"backend", std::string(to_string(c.backend))},
      {"workers", r.workers},
      {"algo", r.algorithm},
      {"merge", to_string(c.merge)},
      {"window", number_or_null(std::isfinite(c.window), c.window)},
      {"window_history", c.window_history},
      {"window_warmup", c.window_warmup},
      {"direction_margin", c.direction_margin},
      {"message_size", c.message_size},
      {"send_interval", c.send_interval},
      {"deterministic", c.deterministic},
      {"step_order", std::string(to_string(c.step_order))},
      {"eval_workers", std::string(to_string(c.eval_workers))},
      {"balance", std::string(to_string(resolved_balance(c)))},
      {"rho", c.rho},
      {"compute_share", c.compute_share},
      {"peers", std::string(to_string(c.peer_choice))},
      {"transport", r.transport},
      {"messages_sent", r.messages_sent},
      {"messages_received", r.messages_received},
      {"messages_accepted", r.messages_accepted},
      {"messages_rejected", r.messages_rejected},
      {"messages_rejected_direction", r.messages_rejected_direction},
      {"messages_rejected_window", r.messages_rejected_window},
      {"messages_nonfinite", r.messages_nonfinite},
      {"messages_superseded", r.messages_superseded},
      {"bytes_sent", r.bytes_sent},
      {"per_worker", workers},
      {"on_divergence", std::string(to_string(c.on_divergence))},
      {"divergence_restores", r.divergence_restores},
      {"checkpoints_written", r.checkpoints_written},
      {"resumed_step", r.resumed_step >= 0 ? nlohmann::json(r.resumed_step) : nlohmann::json()},
      {"wire_rejections", rejections},
      {"threads", c.threads},
      {"model", r.model},
      {"parameters", r.parameters},
      {"fingerprint", fmt::format("{:016x}", r.fingerprint)},
      {"dataset", c.data.spec},
      {"train_rows", r.train_rows},
      {"test_rows", r.test_rows},
      {"batch", c.batch},
      {"lr", std::stod(fmt::format("{}", c.lr))},  // the float as typed, not widened
      {"seed", c.seed},
      {"host", host},
      {"asgd_version", ASGD_VERSION},
      {"commit", git_commit()},
  };
  std::ofstream out(path, std::ios::out | std::ios::trunc);
  if (!out) ASGD_INPUT_ERROR("--summary: cannot create '{}': {}", path, std::strerror(errno));
  out << j.dump(2) << '\n';
  if (!out) ASGD_THROW("writing the summary to '{}' failed", path);
}

}  // namespace asgd
