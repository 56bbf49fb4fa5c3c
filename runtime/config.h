// The training configuration: every setting of `asgd train`, with its default. A TOML file
// sets any of them by the flag's name (`lr = 0.1`, `hidden = [256, 256]`,
// `target-accuracy = 0.85`); flags given on the command line override the file.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/models/model.h"
#include "kernels/parzen.h"
#include "runtime/data/dataset.h"
#include "runtime/device.h"

namespace asgd {

// The training algorithm: ASGD (DESIGN.md section 1) and the baselines that share its kernels.
enum class Algorithm {
  kAsgd,          // asynchronous, Parzen-window filter
  kAsgdNoFilter,  // asynchronous, every message accepted
  kSync,          // gradient average every step, with a barrier
  kSimu,          // SimuParallelSGD: independent SGD, one average at the end
  kLocal,         // independent SGD, no communication
};
Algorithm parse_algorithm(std::string_view name);  // "asgd", "asgd-nofilter", "sync", ...
std::string_view to_string(Algorithm algorithm);
bool communicates(Algorithm algorithm);  // asgd and asgd-nofilter exchange states

// How workers talk. auto: MPI when the process was started by mpirun with more than one
// rank, else in-process. nccl: GPU to GPU where NCCL and a GPU exist, otherwise MPI (said at
// start-up). rounds: the NCCL transport's protocol with payloads over MPI in host memory, so
// that it can be run and tested without GPUs (comm/nccl/round_transport.h).
enum class TransportKind { kAuto, kLocal, kMpi, kNccl, kRounds };
// "auto", "local", "mpi", "nccl", "rounds"
TransportKind parse_transport(std::string_view name);
std::string_view to_string(TransportKind transport);
// The number of ranks mpirun (Open MPI, MPICH, PMIx) says this process belongs to; 0 when it
// was not started by a launcher. Reads the environment only: MPI is not initialised.
int launcher_ranks();
int launcher_rank();  // this process's rank by the same sources; 0 without a launcher

// The load balancer (DESIGN.md section 5). kDefault resolves to kAuto, or to kOff when a fixed
// --message-size or --send-interval was given (or in deterministic mode).
enum class BalanceMode { kDefault, kAuto, kOff };
BalanceMode parse_balance(std::string_view name);  // "auto", "off"
std::string_view to_string(BalanceMode mode);
// Deterministic mode: how one round steps the workers.
//   shuffled  one after another in a seeded random order; each delivers its message as soon
//             as it has stepped, so a worker later in the round already sees the state an
//             earlier one reached in this round (messages fresher than concurrent workers get)
//   lockstep  every worker steps on the messages of the previous round, then every worker
//             sends: what concurrent workers of equal speed see (each message one round old)
enum class StepOrder { kShuffled, kLockstep };
StepOrder parse_step_order(std::string_view name);  // "shuffled", "lockstep"
std::string_view to_string(StepOrder order);
// Which workers evaluate on the test set every --eval-every steps.
//   all    every worker: each one's test accuracy in the metrics at each evaluation
//   first  worker 0 (rank 0 across processes), whose evaluations decide the target, as one
//          worker would; the others log their training loss and message counts then, and are
//          evaluated once, at the end. An evaluation takes the worker from training (on the
//          2-core development machine a third of its time at every 100 steps of the MLP), and
//          a worker that evaluates less trains more for the others too.
enum class EvalWorkers { kAll, kFirst };
EvalWorkers parse_eval_workers(std::string_view name);  // "all", "first"
std::string_view to_string(EvalWorkers which);
// How a worker with a fixed schedule picks the peer of each message.
enum class PeerChoice { kUniform, kBandwidth };
PeerChoice parse_peer_choice(std::string_view name);  // "uniform", "bandwidth"
std::string_view to_string(PeerChoice choice);

// A merge rule as typed: "seed", "average" or "elastic:ALPHA".
struct MergeSpec {
  MergeRule rule = MergeRule::kSeed;
  float alpha = 0.5f;  // elastic only
};
MergeSpec parse_merge(std::string_view text);
std::string to_string(const MergeSpec& merge);

// One emulated link setting for the in-process transport: every pair, or a matrix whose
// entry [from][to] is the directed link (from the config file). Bandwidth in bytes/s,
// latency in seconds; 0 bandwidth means unlimited.
struct LinkSettings {
  double bandwidth = 0.0;
  double latency = 0.0;
  std::vector<std::vector<double>> bandwidth_matrix;
  std::vector<std::vector<double>> latency_matrix;
  // An experiment: at change_at_s seconds into training every link becomes change_bandwidth
  // bytes/s with change_latency seconds (a network that slows or recovers). < 0: never.
  double change_at_s = -1;
  double change_bandwidth = 0;
  double change_latency = 0;
};
void parse_link_change(std::string_view text, LinkSettings& links);  // "T:BW" or "T:BW:LAT"

// Worker W runs F times slower than it would (it idles (F-1) times each step's duration).
struct Straggler {
  int worker = -1;
  double factor = 1.0;
};
Straggler parse_straggler(std::string_view text);  // "W:F"

// A worker that sends adversarial states, for experiments on the filter: "noise" adds
// N(0, scale^2) to each value it sends, "random" sends N(0, scale^2) values, "scaled"
// multiplies its state by scale, "negate" sends minus its state, "nan" sends NaNs.
struct Adversary {
  int worker = -1;
  std::string kind = "noise";
  double scale = 1.0;
};
Adversary parse_adversary(std::string_view text);  // "W:KIND" or "W:KIND:SCALE"

// What a worker does when its state or training loss turns NaN or Inf (--on-divergence): stop
// the run with an error, or put back its last good state and halve its step size.
enum class DivergencePolicy { kStop, kRestore };
DivergencePolicy parse_divergence_policy(std::string_view name);  // "stop", "restore"
std::string_view to_string(DivergencePolicy policy);

// Which states a checkpoint holds across processes (--checkpoint): rank 0's, which every rank
// resumes from, or each rank's own in a file of its own. In one process it holds every worker.
enum class CheckpointScope { kRank0, kAll };
CheckpointScope parse_checkpoint_scope(std::string_view name);  // "rank0", "all"
std::string_view to_string(CheckpointScope scope);

// A fault injected for reliability experiments (--fault KIND:W:N). At worker W's step N: "nan"
// puts a NaN into its state, "throw" makes its thread fail, "kill" SIGKILLs its process. Every
// N-th message worker W sends (MPI transport): "corrupt" flips a payload byte, "forge-offset",
// "forge-length", "forge-fingerprint" forge the header, "replay" sends an old message again.
struct Fault {
  std::string kind;
  int worker = -1;
  std::int64_t at = 0;
  bool on_wire() const { return kind != "nan" && kind != "throw" && kind != "kill"; }
};
Fault parse_fault(std::string_view text);

struct TrainConfig {
  DataOptions data;
  ModelSpec model;
  std::int64_t batch = 64;
  float lr = 0.05f;
  double epochs = 10.0;          // upper bound on training, in passes over the training set
  double max_seconds = 0.0;      // wall-clock bound; 0 = none
  double target_accuracy = 0.0;  // stop once test accuracy reaches it; 0 = none
  std::int64_t eval_every = 500;  // steps between evaluations on the test set
  Backend backend = Backend::kHost;
  int device = 0;
  int threads = 1;  // host backend: OpenMP/OpenBLAS threads
  std::uint64_t seed = 1;
  // Workers and the algorithm.
  int workers = 1;
  Algorithm algorithm = Algorithm::kAsgd;
  std::int64_t message_size = 0;  // elements per message; 0 = the whole state
  std::int64_t send_interval = 1;  // k: steps between sends
  // --message-size or --send-interval was given (command line or config file), even at its
  // default value: the user chose a fixed schedule, so the balancer's default is off.
  bool schedule_given = false;
  int queue_capacity = 2;          // unsent messages per peer before the oldest is superseded
  MergeSpec merge;
  float window = 4.0f;  // r of the Parzen window; +inf = bare direction test
  float direction_margin = 1.0f;  // of the direction test, in [0, 1] (kernels/parzen.h)
  int window_history = 64;
  int window_warmup = 8;
  LinkSettings links;
  Straggler straggler;
  Adversary adversary;
  EvalWorkers eval_workers = EvalWorkers::kAll;
  bool deterministic = false;  // one thread steps the workers in a fixed seeded order
  StepOrder step_order = StepOrder::kShuffled;  // deterministic mode only
  TransportKind transport = TransportKind::kAuto;
  // The load balancer.
  BalanceMode balance = BalanceMode::kDefault;
  double rho = 0.5;                  // target busy fraction of every link
  // Most of a worker's compute that its messages may cost: the balancer keeps m c / (k T) within
  // it per peer's share, c the measured compute per element sent and merged (on the host, the
  // worker thread's CPU time). 0: the links alone decide. 0.02: on the 2-core development
  // machine it keeps asgd's samples/s within 5% of no communication (0.03 did in one run of
  // three), and every share from 0.02 to 0.1 reached 85% on Fashion-MNIST equally soon
  // (bench/engine_overhead.py, bench/convergence.py).
  double compute_share = 0.02;
  std::int64_t min_message = 4096;   // elements
  std::int64_t max_message = 0;      // elements; 0 = the parameter count
  std::int64_t min_interval = 0;     // steps; 0 = the number of peers (one message per step)
  std::int64_t max_interval = 1000;  // steps
  PeerChoice peer_choice = PeerChoice::kUniform;
  double peer_timeout_s = 120;  // multi-process: how long to wait for a silent peer at the end
  // Multi-process: the MPI communication thread's idle poll period, seconds (0: by the cores
  // left for it, see idle_poll_seconds() in comm/mpi/mpi_transport.h).
  double comm_poll_s = 0;
  // Reliability.
  DivergencePolicy on_divergence = DivergencePolicy::kStop;
  float divergence_lr_factor = 0.5f;  // step size multiplier at each restore
  int max_restores = 5;               // restores per worker before the run stops anyway
  std::string checkpoint_dir;         // empty: no checkpoints
  std::int64_t checkpoint_every = 1000;  // steps (of worker 0, or of each rank with kAll)
  CheckpointScope checkpoint_scope = CheckpointScope::kRank0;
  std::string resume_dir;  // continue from the checkpoint there
  std::vector<Fault> faults;

  std::string metrics_path;  // JSON lines, one per evaluation
  std::string summary_path;  // one JSON object at the end
  std::string trace_path;    // Chrome/Perfetto trace of steps, copies, sends and receives
  bool progress = true;      // a live progress line when stderr is a terminal
};

// Applies the settings of TOML file `path` to `config`. Throws InputError naming the file,
// line and key for a missing or malformed file, an unknown key or a value of the wrong type.
void apply_config_file(const std::string& path, TrainConfig& config);

// The balancer mode a run uses: kDefault resolved (see BalanceMode).
BalanceMode resolved_balance(const TrainConfig& config);

// Checks values that no single flag parser can (ranges, combinations); throws InputError.
void validate(const TrainConfig& config);

}  // namespace asgd
