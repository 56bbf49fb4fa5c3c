#include "runtime/cli/commands.h"

#include <charconv>
#include <cstdlib>
#include <limits>
#include <cstring>
#include <thread>

#include <asgd/config.h>

#include "runtime/build_info.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/output_path.h"
#include "runtime/trainer.h"

namespace asgd::cli {
namespace {

std::vector<std::int64_t> parse_widths(const std::string& text) {
  std::vector<std::int64_t> widths;
  if (text.empty() || text == "none") return widths;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t end = std::min(text.find(',', start), text.size());
    std::int64_t w = 0;
    const char* first = text.data() + start;
    const char* last = text.data() + end;
    auto [ptr, ec] = std::from_chars(first, last, w);
    if (ec != std::errc() || ptr != last || w < 1)
      ASGD_INPUT_ERROR("--hidden '{}': expected positive layer widths separated by commas, "
                       "e.g. 256,256",
                       text);
    widths.push_back(w);
    start = end + 1;
  }
  return widths;
}

int run_train(CLI::App& cmd, TrainOptions& o) {
  TrainConfig& c = o.config;
  if (cmd.count("--hidden")) c.model.hidden = parse_widths(o.hidden);
  if (cmd.count("--backend")) c.backend = parse_backend(o.backend);
  if (cmd.count("--normalize")) c.data.normalize = parse_normalize(o.normalize);
  if (cmd.count("--algo")) c.algorithm = parse_algorithm(o.algo);
  if (cmd.count("--merge")) c.merge = parse_merge(o.merge);
  if (cmd.count("--straggler")) c.straggler = parse_straggler(o.straggler);
  if (cmd.count("--adversary")) c.adversary = parse_adversary(o.adversary);
  if (cmd.count("--transport")) c.transport = parse_transport(o.transport);
  if (cmd.count("--message-size") || cmd.count("--send-interval")) c.schedule_given = true;
  if (cmd.count("--step-order")) c.step_order = parse_step_order(o.step_order);
  if (cmd.count("--eval-workers")) c.eval_workers = parse_eval_workers(o.eval_workers);
  if (cmd.count("--balance")) c.balance = parse_balance(o.balance);
  if (cmd.count("--peers")) c.peer_choice = parse_peer_choice(o.peers);
  if (cmd.count("--link-change")) parse_link_change(o.link_change, c.links);
  if (cmd.count("--on-divergence")) c.on_divergence = parse_divergence_policy(o.on_divergence);
  if (cmd.count("--checkpoint")) c.checkpoint_scope = parse_checkpoint_scope(o.checkpoint_scope);
  if (cmd.count("--fault")) {
    c.faults.clear();
    for (const std::string& f : o.faults) c.faults.push_back(parse_fault(f));
  }
  if (cmd.count("--window")) {
    if (o.window == "inf") {
      c.window = std::numeric_limits<float>::infinity();
    } else {
      char* end = nullptr;
      c.window = std::strtof(o.window.c_str(), &end);
      if (end == o.window.c_str() || *end != '\0')
        ASGD_INPUT_ERROR("--window '{}': expected a positive number or inf", o.window);
    }
  }
  validate(c);
  if (c.backend == Backend::kCuda && cuda_device_count() == 0)
    ASGD_INPUT_ERROR("--backend cuda: {}; use --backend host", cuda_unavailable_reason());

  const bool speaks = launcher_rank() == 0;  // under mpirun only rank 0 reports
  if (speaks) check_output_path(c.summary_path, "--summary");  // rank 0 writes it, after the run
  const TrainTest data = load_dataset(c.data);
  if (speaks)
    std::fprintf(stderr, "asgd: %s: %lld train / %lld test rows, %lld features, %d classes\n",
               c.data.spec.c_str(), static_cast<long long>(data.train.rows),
               static_cast<long long>(data.test.rows), static_cast<long long>(data.train.cols),
               static_cast<int>(data.train.classes));
  // Workers in one process that outnumber the GPUs share them (worker i takes GPU
  // (--device + i) % GPUs): correct, but they split each GPU's time, so say it.
  if (speaks && c.backend == Backend::kCuda && launcher_ranks() <= 1 &&
      c.workers > cuda_device_count())
    std::fprintf(stderr,
                 "asgd: note: %d workers share %d CUDA device(s); workers on one GPU split its "
                 "time (one worker per GPU is the fast layout)\n",
                 c.workers, cuda_device_count());
  const TrainResult r = train(c, data);
  if (r.rank != 0) return 0;
  const std::string quality =
      r.classifier ? fmt::format("test accuracy {:.4f}", r.final_test_accuracy)
                   : fmt::format("test objective {:.6g}", r.final_test_loss);
  std::fprintf(stderr,
               "asgd: %s (%lld parameters), %s on %d %s worker(s): %s after %lld steps of worker "
               "0, %.2f s (%.0f samples/s in all), stopped by %s",
               r.model.c_str(), static_cast<long long>(r.parameters), r.algorithm.c_str(),
               r.workers, std::string(to_string(c.backend)).c_str(), quality.c_str(),
               static_cast<long long>(r.steps), r.train_seconds, r.samples_per_s,
               r.stop_reason.c_str());
  if (communicates(c.algorithm) && r.workers > 1)  // under mpirun c.workers is this rank's
    std::fprintf(stderr, "; messages sent %lld, accepted %lld, rejected %lld, non-finite %lld",
                 static_cast<long long>(r.messages_sent),
                 static_cast<long long>(r.messages_accepted),
                 static_cast<long long>(r.messages_rejected),
                 static_cast<long long>(r.messages_nonfinite));
  if (c.target_accuracy > 0) {
    if (r.time_to_target_s)
      std::fprintf(stderr, "; reached %.4f at %.2f s", c.target_accuracy, *r.time_to_target_s);
    else
      std::fprintf(stderr, "; target %.4f NOT reached", c.target_accuracy);
  }
  std::fputc('\n', stderr);
  if (!c.summary_path.empty()) write_summary(c.summary_path, c, r);
  return 0;
}

int run_info() {
  std::printf("asgd %s (commit %s)\n", ASGD_VERSION, git_commit());
  std::printf("backends compiled: host%s\n", ASGD_HAVE_CUDA ? ", cuda" : "");
  std::printf("communication libraries found: MPI %s, NCCL %s\n", ASGD_HAVE_MPI ? "yes" : "no",
              ASGD_HAVE_NCCL ? "yes" : "no");
  std::printf("devices:\n");
  for (const DeviceInfo& d : list_devices()) {
    if (d.backend == Backend::kHost)
      std::printf("  host      %s, %d hardware threads\n", d.name.c_str(), d.processors);
    else
      std::printf("  cuda:%-4d %s, compute %d.%d, %d SMs, %.1f GiB, PCI %s\n", d.ordinal,
                  d.name.c_str(), d.compute_major, d.compute_minor, d.processors,
                  static_cast<double>(d.memory_bytes) / (1ull << 30), d.bus_id.c_str());
  }
  const std::string why = cuda_unavailable_reason();
  if (!why.empty()) std::printf("cuda backend unavailable: %s\n", why.c_str());
  return 0;
}

}  // namespace

void add_train_command(CLI::App& app, TrainOptions& o) {
  TrainConfig& c = o.config;
  CLI::App* cmd = app.add_subcommand("train", "Train a model with one or more workers.");
  cmd->footer(
      "Every option can also be set in the TOML file given with --config, by its long name\n"
      "without dashes in front (e.g. lr = 0.1, hidden = [256, 256], target-accuracy = 0.85).\n"
      "Options on the command line override the file.");
  cmd->add_option("-c,--config", o.config_file, "TOML file with settings (flags override it)");
  cmd->add_option("--dataset", c.data.spec,
                  "fashion-mnist | idx:DIR | libsvm:PATH | csv:PATH | blobs:N,D,K (Gaussian blobs)")
      ->capture_default_str();
  cmd->add_option("--test-dataset", c.data.test_spec,
                  "held-out set in the same format (default: the data set's own test part, "
                  "else a split of the training file)");
  cmd->add_option("--test-fraction", c.data.test_fraction,
                  "fraction held out when a file has no test part")
      ->capture_default_str();
  cmd->add_option("--normalize", o.normalize,
                  "feature scaling: auto (unit for IDX, standard for text) | none | unit | "
                  "standard")
      ->capture_default_str();
  cmd->add_option("--libsvm-dim", c.data.libsvm_dim, "LIBSVM feature dimension (0: infer)")
      ->capture_default_str();
  cmd->add_option("--libsvm-max-dim", c.data.libsvm_max_dim,
                  "refuse LIBSVM files with larger feature indices")
      ->capture_default_str();
  cmd->add_option("--csv-label-column", c.data.csv_label_column,
                  "CSV label column, 0-based (-1: last)")
      ->capture_default_str();
  cmd->add_option("--model", c.model.kind, "softmax | logistic | mlp | kmeans")
      ->capture_default_str();
  cmd->add_option("--clusters", c.model.clusters,
                  "kmeans: number of centres K (0: the data's class count)")
      ->capture_default_str();
  cmd->add_option("--hidden", o.hidden, "MLP hidden layer widths, e.g. 256,256 (default 256,256)");
  cmd->add_option("--batch", c.batch, "mini-batch size")->capture_default_str();
  cmd->add_option("--lr", c.lr, "step size")->capture_default_str();
  cmd->add_option("--epochs", c.epochs, "stop after this many passes over each worker's shard")
      ->capture_default_str();
  cmd->add_option("--max-seconds", c.max_seconds, "stop after this much wall time (0: no limit)")
      ->capture_default_str();
  cmd->add_option("--target-accuracy", c.target_accuracy,
                  "stop once test accuracy reaches this (0: no target)")
      ->capture_default_str();
  cmd->add_option("--eval-every", c.eval_every, "steps between evaluations on the test set")
      ->capture_default_str();
  cmd->add_option("--eval-workers", o.eval_workers,
                  "all | first: which workers evaluate every --eval-every steps (first: worker 0 "
                  "alone, which decides the target; the others log training loss and counters, "
                  "and train while it evaluates; every worker is evaluated at the end)")
      ->capture_default_str();
  cmd->add_option("--backend", o.backend, "host | cuda")->capture_default_str();
  cmd->add_option("--device", c.device, "CUDA device ordinal")->capture_default_str();
  cmd->add_option("--threads", c.threads, "host backend: CPU threads for the worker")
      ->capture_default_str();
  cmd->add_option("--seed", c.seed, "seed for initialisation, shuffling and splits")
      ->check(CLI::Validator(
          [](std::string& v) {
            return v.find('-') == std::string::npos ? std::string() : "must be >= 0, got " + v;
          },
          "", "non-negative"))
      ->capture_default_str();
  cmd->add_option("--workers", c.workers,
                  "workers (threads of this process; under mpirun one per rank)")
      ->capture_default_str();
  cmd->add_option("--algo", o.algo,
                  "asgd | asgd-nofilter | sync (gradient average every step) | simu "
                  "(SimuParallelSGD: average once at the end) | local (no communication)")
      ->capture_default_str();
  cmd->add_option("--message-size", c.message_size,
                  "elements per message, ranges rotating over the state (0: the whole state)")
      ->capture_default_str();
  cmd->add_option("--send-interval", c.send_interval, "steps between sends (k)")
      ->capture_default_str();
  cmd->add_option("--queue-capacity", c.queue_capacity,
                  "unsent messages per peer before the oldest is superseded")
      ->capture_default_str();
  cmd->add_option("--merge", o.merge, "seed | average | elastic:ALPHA")->capture_default_str();
  cmd->add_option("--window", o.window,
                  "Parzen window radius factor r (inf: bare direction test)")
      ->capture_default_str();
  cmd->add_option("--direction-margin", c.direction_margin,
                  "direction test: accept when dot(g, w - e) > MARGIN * eps/2 * |g|^2 (1: the "
                  "local step moves w towards e; 0: first order)")
      ->capture_default_str();
  cmd->add_option("--window-history", c.window_history, "messages in the window's median (H)")
      ->capture_default_str();
  cmd->add_option("--window-warmup", c.window_warmup,
                  "messages seen before the window accepts any")
      ->capture_default_str();
  cmd->add_option("--link-bandwidth", c.links.bandwidth,
                  "emulated bandwidth of every link, bytes/s (0: unlimited; a per-pair matrix "
                  "in the config file)")
      ->capture_default_str();
  cmd->add_option("--link-latency", c.links.latency, "emulated latency of every link, seconds")
      ->capture_default_str();
  cmd->add_option("--link-change", o.link_change,
                  "T:BW[:LAT]: at T seconds every link becomes BW bytes/s (and LAT s), for "
                  "experiments on changing networks");
  cmd->add_option("--straggler", o.straggler, "W:F makes worker W run F times slower");
  cmd->add_option("--adversary", o.adversary,
                  "W:KIND[:SCALE]: worker W sends adversarial states (noise, random, scaled, "
                  "negate, nan), for experiments on the filter");
  cmd->add_flag("--deterministic", c.deterministic,
                "one thread steps the workers in a fixed seeded order; bit-for-bit repeatable");
  cmd->add_option("--step-order", o.step_order,
                  "with --deterministic: shuffled (workers one after another, each seeing what "
                  "earlier ones sent in the round) | lockstep (every worker steps on the previous "
                  "round's messages, as concurrent workers do)")
      ->capture_default_str();
  cmd->add_option("--transport", o.transport,
                  "auto | local | mpi | nccl | rounds (auto: mpi under mpirun with several ranks; "
                  "rounds: the NCCL protocol over MPI, for testing without GPUs)")
      ->capture_default_str();
  cmd->add_option("--balance", o.balance,
                  "auto | off: the load balancer sizes each peer's messages and interval from "
                  "measured links (default auto; off when --message-size or --send-interval is "
                  "given)");
  cmd->add_option("--rho", c.rho, "balancer: target busy fraction of each link")
      ->capture_default_str();
  cmd->add_option("--compute-share", c.compute_share,
                  "balancer: most of a worker's compute that sending and merging may take, "
                  "measured per element (0: links only)")
      ->capture_default_str();
  cmd->add_option("--min-message", c.min_message, "balancer: smallest useful message, elements")
      ->capture_default_str();
  cmd->add_option("--max-message", c.max_message,
                  "balancer: largest message, elements (0: the whole state)")
      ->capture_default_str();
  cmd->add_option("--min-interval", c.min_interval,
                  "balancer: fewest steps between sends to one peer (0: the number of peers)")
      ->capture_default_str();
  cmd->add_option("--max-interval", c.max_interval, "balancer: most steps between sends to one peer")
      ->capture_default_str();
  cmd->add_option("--peers", o.peers,
                  "uniform | bandwidth: the peer of each message with a fixed schedule")
      ->capture_default_str();
  cmd->add_option("--peer-timeout", c.peer_timeout_s,
                  "multi-process: seconds to wait for a silent peer when the run ends, or for the "
                  "rest of a message a peer stopped sending")
      ->capture_default_str();
  cmd->add_option("--comm-poll", c.comm_poll_s,
                  "multi-process: seconds between the communication thread's looks for arrivals "
                  "when idle (0: 400 us with a core to spare per rank, else 2 ms)")
      ->capture_default_str();
  cmd->add_option("--on-divergence", o.on_divergence,
                  "NaN/Inf in a worker's state or loss: stop (error) | restore (its last good "
                  "state, with the step size times --divergence-lr-factor) [stop]");
  cmd->add_option("--divergence-lr-factor", c.divergence_lr_factor,
                  "restore: step size multiplier at each restore")
      ->capture_default_str();
  cmd->add_option("--max-restores", c.max_restores,
                  "restore: restores per worker before the run stops with an error")
      ->capture_default_str();
  cmd->add_option("--checkpoint-dir", c.checkpoint_dir,
                  "write checkpoints to this directory (atomically; the last one is kept)");
  cmd->add_option("--checkpoint-every", c.checkpoint_every,
                  "steps between checkpoints (of worker 0; of each rank with --checkpoint all)")
      ->capture_default_str();
  cmd->add_option("--checkpoint", o.checkpoint_scope,
                  "under mpirun: rank0 (rank 0's state, every rank resumes from it) | all "
                  "(each rank its own file) [rank0]");
  cmd->add_option("--resume", c.resume_dir,
                  "continue from the checkpoint in this directory (same model and settings)");
  cmd->add_option("--fault", o.faults,
                  "inject a fault (repeatable): nan|throw|kill:W:STEP, or "
                  "corrupt|forge-offset|forge-length|forge-fingerprint|replay:W:N (every N-th "
                  "message of rank W, MPI)");
  cmd->add_option("--trace", c.trace_path,
                  "write a Chrome/Perfetto trace (JSON) of steps, copies, sends and receives");
  cmd->add_option("--metrics", c.metrics_path,
                  "write one JSON line per evaluation (time, step, samples, loss, accuracy)");
  cmd->add_option("--summary", c.summary_path,
                  "write a JSON summary (final_test_accuracy, time_to_target_s, ...)");
  cmd->add_flag("--progress,!--no-progress", c.progress,
                "show a live progress line when stderr is a terminal");
}

void add_info_command(CLI::App& app) {
  app.add_subcommand("info", "Print the compiled backends and transports and the devices found.");
}

void preload_config_file(int argc, char** argv, TrainOptions& o) {
  // The command is the first word that is not a flag (the app's own flags take no values).
  int command = 1;
  while (command < argc && argv[command][0] == '-')
    ++command;
  if (command >= argc || std::strcmp(argv[command], "train") != 0) return;
  for (int i = command + 1; i < argc; ++i) {
    const std::string arg = argv[i];
    std::string path;
    if ((arg == "--config" || arg == "-c") && i + 1 < argc)
      path = argv[i + 1];
    else if (arg.rfind("--config=", 0) == 0)
      path = arg.substr(std::strlen("--config="));
    if (!path.empty()) {
      apply_config_file(path, o.config);
      return;
    }
  }
}

int run_selected(CLI::App& app, TrainOptions& train, const std::string& checkpoint_path) {
  if (app.got_subcommand("train")) return run_train(*app.get_subcommand("train"), train);
  if (app.got_subcommand("info")) return run_info();
  if (app.got_subcommand("bench-link")) return run_bench_link(*app.get_subcommand("bench-link"));
  if (app.got_subcommand("checkpoint")) return run_checkpoint(checkpoint_path);
  return 1;
}

}  // namespace asgd::cli
