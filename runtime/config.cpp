#include "runtime/config.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>

#include <toml++/toml.h>

#include "comm/load_balancer.h"
#include "comm/wire_format.h"
#include "runtime/error.h"

namespace asgd {
namespace {

std::string where(const std::string& path, const toml::node& node) {
  const auto& src = node.source();
  return fmt::format("{}:{}:{}", path, src.begin.line, src.begin.column);
}

template <typename T>
T get_as(const std::string& path, const std::string& key, const toml::node& node,
         const char* expected) {
  if constexpr (std::is_same_v<T, double>) {
    if (auto v = node.value<double>()) return *v;  // integers convert too
  } else if constexpr (std::is_same_v<T, std::int64_t>) {
    if (node.is_integer()) return *node.value<std::int64_t>();
  } else if constexpr (std::is_same_v<T, bool>) {
    if (node.is_boolean()) return *node.value<bool>();
  } else {
    if (node.is_string()) return *node.value<std::string>();
  }
  ASGD_INPUT_ERROR("{}: '{}' must be {}", where(path, node), key, expected);
}

// An integer setting kept in an int: a value outside int's range is an error, not a wrap.
int get_int(const std::string& path, const std::string& key, const toml::node& node) {
  const std::int64_t v = get_as<std::int64_t>(path, key, node, "an integer");
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    ASGD_INPUT_ERROR("{}: '{}' = {} is out of range (at most {} in magnitude)", where(path, node),
                     key, v, std::numeric_limits<int>::max());
  return static_cast<int>(v);
}

std::vector<std::vector<double>> get_matrix(const std::string& path, const std::string& key,
                                           const toml::node& node) {
  std::vector<std::vector<double>> m;
  const auto* rows = node.as_array();
  if (!rows) ASGD_INPUT_ERROR("{}: '{}' must be an array of arrays of numbers", where(path, node), key);
  for (const auto& row : *rows) {
    const auto* cols = row.as_array();
    if (!cols) ASGD_INPUT_ERROR("{}: '{}' must be an array of arrays of numbers", where(path, row), key);
    m.emplace_back();
    for (const auto& v : *cols) m.back().push_back(get_as<double>(path, key, v, "a number"));
  }
  return m;
}

double parse_number(std::string_view text, std::string_view what) {
  double v = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (text == "inf") return std::numeric_limits<double>::infinity();
  if (ec != std::errc() || ptr != end) ASGD_INPUT_ERROR("{}: '{}' is not a number", what, text);
  return v;
}

// A worker index as typed: the number truncated to an int, or -1 (which callers reject) where
// it has no int value (NaN, out of range) and the cast would be undefined.
int parse_worker(std::string_view text, std::string_view what) {
  const double v = parse_number(text, what);
  return v > -1.0 && v < 2147483648.0 ? static_cast<int>(v) : -1;
}

using Setter = std::function<void(const std::string& path, const std::string& key,
                                  const toml::node& node, TrainConfig& c)>;

Setter number(double TrainConfig::*field) {
  return [field](const auto& p, const auto& k, const toml::node& n, TrainConfig& c) {
    c.*field = get_as<double>(p, k, n, "a number");
  };
}
Setter integer(std::int64_t TrainConfig::*field) {
  return [field](const auto& p, const auto& k, const toml::node& n, TrainConfig& c) {
    c.*field = get_as<std::int64_t>(p, k, n, "an integer");
  };
}
template <typename F>
Setter custom(F f) {
  return [f](const auto& p, const auto& k, const toml::node& n, TrainConfig& c) { f(p, k, n, c); };
}

const std::map<std::string, Setter>& setters() {
  static const std::map<std::string, Setter> table = {
      {"dataset", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.data.spec = get_as<std::string>(p, k, n, "a string");
       })},
      {"test-dataset", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.data.test_spec = get_as<std::string>(p, k, n, "a string");
       })},
      {"test-fraction", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.data.test_fraction = get_as<double>(p, k, n, "a number");
       })},
      {"normalize", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.data.normalize = parse_normalize(get_as<std::string>(p, k, n, "a string"));
       })},
      {"libsvm-dim", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.data.libsvm_dim = get_as<std::int64_t>(p, k, n, "an integer");
       })},
      {"libsvm-max-dim", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.data.libsvm_max_dim = get_as<std::int64_t>(p, k, n, "an integer");
       })},
      {"csv-label-column", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.data.csv_label_column = get_int(p, k, n);
       })},
      {"model", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.model.kind = get_as<std::string>(p, k, n, "a string");
       })},
      {"hidden",
       custom([](const std::string& p, const std::string& k, const toml::node& n, TrainConfig& c) {
         const auto* arr = n.as_array();
         if (!arr) ASGD_INPUT_ERROR("{}: '{}' must be an array of integers", where(p, n), k);
         c.model.hidden.clear();
         for (const auto& e : *arr)
           c.model.hidden.push_back(get_as<std::int64_t>(p, k, e, "an array of integers"));
       })},
      {"clusters", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.model.clusters = get_as<std::int64_t>(p, k, n, "an integer");
       })},
      {"batch", integer(&TrainConfig::batch)},
      {"lr", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.lr = static_cast<float>(get_as<double>(p, k, n, "a number"));
       })},
      {"epochs", number(&TrainConfig::epochs)},
      {"max-seconds", number(&TrainConfig::max_seconds)},
      {"target-accuracy", number(&TrainConfig::target_accuracy)},
      {"eval-every", integer(&TrainConfig::eval_every)},
      {"backend", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.backend = parse_backend(get_as<std::string>(p, k, n, "a string"));
       })},
      {"device",
       custom([](auto& p, auto& k, auto& n, TrainConfig& c) { c.device = get_int(p, k, n); })},
      {"threads",
       custom([](auto& p, auto& k, auto& n, TrainConfig& c) { c.threads = get_int(p, k, n); })},
      {"seed", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         const std::int64_t seed = get_as<std::int64_t>(p, k, n, "an integer");
         if (seed < 0) ASGD_INPUT_ERROR("{}: '{}' must be >= 0, got {}", where(p, n), k, seed);
         c.seed = static_cast<std::uint64_t>(seed);
       })},
      {"metrics", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.metrics_path = get_as<std::string>(p, k, n, "a string");
       })},
      {"summary", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.summary_path = get_as<std::string>(p, k, n, "a string");
       })},
      {"workers",
       custom([](auto& p, auto& k, auto& n, TrainConfig& c) { c.workers = get_int(p, k, n); })},
      {"algo", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.algorithm = parse_algorithm(get_as<std::string>(p, k, n, "a string"));
       })},
      {"message-size", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.message_size = get_as<std::int64_t>(p, k, n, "an integer");
         c.schedule_given = true;
       })},
      {"send-interval", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.send_interval = get_as<std::int64_t>(p, k, n, "an integer");
         c.schedule_given = true;
       })},
      {"queue-capacity", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.queue_capacity = get_int(p, k, n);
       })},
      {"merge", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.merge = parse_merge(get_as<std::string>(p, k, n, "a string"));
       })},
      {"window", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         if (n.is_string()) {
           c.window = static_cast<float>(parse_number(*n.template value<std::string>(), "window"));
         } else {
           c.window = static_cast<float>(get_as<double>(p, k, n, "a number or \"inf\""));
         }
       })},
      {"direction-margin", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.direction_margin = static_cast<float>(get_as<double>(p, k, n, "a number"));
       })},
      {"window-history", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.window_history = get_int(p, k, n);
       })},
      {"window-warmup", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.window_warmup = get_int(p, k, n);
       })},
      {"link-bandwidth",
       custom([](const std::string& p, const std::string& k, const toml::node& n, TrainConfig& c) {
         if (n.is_array()) {
           c.links.bandwidth_matrix = get_matrix(p, k, n);
         } else {
           c.links.bandwidth = get_as<double>(p, k, n, "a number or a matrix");
         }
       })},
      {"link-latency",
       custom([](const std::string& p, const std::string& k, const toml::node& n, TrainConfig& c) {
         if (n.is_array()) {
           c.links.latency_matrix = get_matrix(p, k, n);
         } else {
           c.links.latency = get_as<double>(p, k, n, "a number or a matrix");
         }
       })},
      {"straggler", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.straggler = parse_straggler(get_as<std::string>(p, k, n, "a string"));
       })},
      {"adversary", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.adversary = parse_adversary(get_as<std::string>(p, k, n, "a string"));
       })},
      {"deterministic", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.deterministic = get_as<bool>(p, k, n, "true or false");
       })},
      {"eval-workers", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.eval_workers = parse_eval_workers(get_as<std::string>(p, k, n, "a string"));
       })},
      {"step-order", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.step_order = parse_step_order(get_as<std::string>(p, k, n, "a string"));
       })},
      {"transport", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.transport = parse_transport(get_as<std::string>(p, k, n, "a string"));
       })},
      {"peer-timeout", number(&TrainConfig::peer_timeout_s)},
      {"comm-poll", number(&TrainConfig::comm_poll_s)},
      {"balance", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.balance = parse_balance(get_as<std::string>(p, k, n, "a string"));
       })},
      {"rho", number(&TrainConfig::rho)},
      {"compute-share", number(&TrainConfig::compute_share)},
      {"link-change", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         parse_link_change(get_as<std::string>(p, k, n, "a string"), c.links);
       })},
      {"min-message", integer(&TrainConfig::min_message)},
      {"max-message", integer(&TrainConfig::max_message)},
      {"min-interval", integer(&TrainConfig::min_interval)},
      {"max-interval", integer(&TrainConfig::max_interval)},
      {"peers", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.peer_choice = parse_peer_choice(get_as<std::string>(p, k, n, "a string"));
       })},
      {"on-divergence", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.on_divergence = parse_divergence_policy(get_as<std::string>(p, k, n, "a string"));
       })},
      {"divergence-lr-factor", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.divergence_lr_factor = static_cast<float>(get_as<double>(p, k, n, "a number"));
       })},
      {"max-restores", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.max_restores = get_int(p, k, n);
       })},
      {"checkpoint-dir", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.checkpoint_dir = get_as<std::string>(p, k, n, "a string");
       })},
      {"checkpoint-every", integer(&TrainConfig::checkpoint_every)},
      {"checkpoint", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.checkpoint_scope = parse_checkpoint_scope(get_as<std::string>(p, k, n, "a string"));
       })},
      {"resume", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.resume_dir = get_as<std::string>(p, k, n, "a string");
       })},
      {"fault",
       custom([](const std::string& p, const std::string& k, const toml::node& n, TrainConfig& c) {
         const auto* arr = n.as_array();
         if (!arr) ASGD_INPUT_ERROR("{}: '{}' must be an array of strings", where(p, n), k);
         c.faults.clear();
         for (const auto& e : *arr)
           c.faults.push_back(parse_fault(get_as<std::string>(p, k, e, "an array of strings")));
       })},
      {"trace", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.trace_path = get_as<std::string>(p, k, n, "a string");
       })},
      {"progress", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.progress = get_as<bool>(p, k, n, "true or false");
       })},
  };
  return table;
}

}  // namespace

Algorithm parse_algorithm(std::string_view name) {
  if (name == "asgd") return Algorithm::kAsgd;
  if (name == "asgd-nofilter") return Algorithm::kAsgdNoFilter;
  if (name == "sync") return Algorithm::kSync;
  if (name == "simu") return Algorithm::kSimu;
  if (name == "local") return Algorithm::kLocal;
  ASGD_INPUT_ERROR("unknown algorithm '{}': expected asgd, asgd-nofilter, sync, simu or local",
                   name);
}

std::string_view to_string(Algorithm a) {
  switch (a) {
    case Algorithm::kAsgd: return "asgd";
    case Algorithm::kAsgdNoFilter: return "asgd-nofilter";
    case Algorithm::kSync: return "sync";
    case Algorithm::kSimu: return "simu";
    case Algorithm::kLocal: return "local";
  }
  return "?";
}

EvalWorkers parse_eval_workers(std::string_view name) {
  if (name == "all") return EvalWorkers::kAll;
  if (name == "first") return EvalWorkers::kFirst;
  ASGD_INPUT_ERROR("unknown --eval-workers '{}': expected all or first", name);
}

std::string_view to_string(EvalWorkers which) {
  return which == EvalWorkers::kFirst ? "first" : "all";
}

StepOrder parse_step_order(std::string_view name) {
  if (name == "shuffled") return StepOrder::kShuffled;
  if (name == "lockstep") return StepOrder::kLockstep;
  ASGD_INPUT_ERROR("unknown step order '{}': expected shuffled or lockstep", name);
}

std::string_view to_string(StepOrder order) {
  return order == StepOrder::kLockstep ? "lockstep" : "shuffled";
}

TransportKind parse_transport(std::string_view name) {
  if (name == "auto") return TransportKind::kAuto;
  if (name == "local") return TransportKind::kLocal;
  if (name == "mpi") return TransportKind::kMpi;
  if (name == "nccl") return TransportKind::kNccl;
  if (name == "rounds") return TransportKind::kRounds;
  ASGD_INPUT_ERROR("unknown transport '{}': expected auto, local, mpi, nccl or rounds", name);
}

std::string_view to_string(TransportKind t) {
  switch (t) {
    case TransportKind::kAuto: return "auto";
    case TransportKind::kLocal: return "local";
    case TransportKind::kMpi: return "mpi";
    case TransportKind::kNccl: return "nccl";
    case TransportKind::kRounds:
      return "rounds";
  }
  return "?";
}

void parse_link_change(std::string_view text, LinkSettings& links) {
  std::vector<std::string_view> parts;
  for (std::size_t at = 0; at <= text.size();) {
    const std::size_t end = std::min(text.find(':', at), text.size());
    parts.push_back(text.substr(at, end - at));
    at = end + 1;
  }
  if (parts.size() < 2 || parts.size() > 3)
    ASGD_INPUT_ERROR("--link-change '{}': expected SECONDS:BANDWIDTH or SECONDS:BANDWIDTH:LATENCY",
                     text);
  links.change_at_s = parse_number(parts[0], "--link-change");
  links.change_bandwidth = parse_number(parts[1], "--link-change");
  links.change_latency = parts.size() == 3 ? parse_number(parts[2], "--link-change") : links.latency;
  if (!(links.change_at_s >= 0 && std::isfinite(links.change_at_s) && links.change_bandwidth > 0 &&
        std::isfinite(links.change_bandwidth) && links.change_latency >= 0 &&
        std::isfinite(links.change_latency)))
    ASGD_INPUT_ERROR(
        "--link-change '{}': the time must be >= 0, the bandwidth > 0 and the "
        "latency >= 0, all finite",
        text);
}

BalanceMode parse_balance(std::string_view name) {
  if (name == "auto") return BalanceMode::kAuto;
  if (name == "off") return BalanceMode::kOff;
  ASGD_INPUT_ERROR("unknown --balance '{}': expected auto or off", name);
}

std::string_view to_string(BalanceMode m) {
  switch (m) {
    case BalanceMode::kDefault: return "default";
    case BalanceMode::kAuto: return "auto";
    case BalanceMode::kOff: return "off";
  }
  return "?";
}

PeerChoice parse_peer_choice(std::string_view name) {
  if (name == "uniform") return PeerChoice::kUniform;
  if (name == "bandwidth") return PeerChoice::kBandwidth;
  ASGD_INPUT_ERROR("unknown --peers '{}': expected uniform or bandwidth", name);
}

std::string_view to_string(PeerChoice c) {
  return c == PeerChoice::kBandwidth ? "bandwidth" : "uniform";
}

BalanceMode resolved_balance(const TrainConfig& c) {
  if (c.balance != BalanceMode::kDefault) return c.balance;
  const bool fixed =
      c.schedule_given || c.message_size != 0 || c.send_interval != 1 || c.deterministic;
  return fixed ? BalanceMode::kOff : BalanceMode::kAuto;
}

int launcher_ranks() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"}) {
    if (const char* v = std::getenv(name)) {
      const int n = std::atoi(v);
      if (n > 0) return n;
    }
  }
  return 0;
}

int launcher_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "MPI_LOCALRANKID"}) {
    if (const char* v = std::getenv(name)) return std::max(0, std::atoi(v));
  }
  return 0;
}

bool communicates(Algorithm a) { return a == Algorithm::kAsgd || a == Algorithm::kAsgdNoFilter; }

MergeSpec parse_merge(std::string_view text) {
  MergeSpec m;
  if (text == "seed") return m;
  if (text == "average") {
    m.rule = MergeRule::kAverage;
    return m;
  }
  if (text.rfind("elastic", 0) == 0) {
    m.rule = MergeRule::kElastic;
    if (text.size() > 7) {
      if (text[7] != ':') ASGD_INPUT_ERROR("--merge '{}': expected elastic:ALPHA", text);
      m.alpha = static_cast<float>(parse_number(text.substr(8), "--merge elastic:ALPHA"));
    }
    if (!(m.alpha > 0.0f && m.alpha <= 1.0f))
      ASGD_INPUT_ERROR("--merge '{}': ALPHA must lie in (0, 1]", text);
    return m;
  }
  ASGD_INPUT_ERROR("unknown merge rule '{}': expected seed, average or elastic:ALPHA", text);
}

std::string to_string(const MergeSpec& m) {
  switch (m.rule) {
    case MergeRule::kSeed: return "seed";
    case MergeRule::kAverage: return "average";
    case MergeRule::kElastic: return fmt::format("elastic:{}", m.alpha);
  }
  return "?";
}

Straggler parse_straggler(std::string_view text) {
  const auto colon = text.find(':');
  if (colon == std::string_view::npos)
    ASGD_INPUT_ERROR("--straggler '{}': expected WORKER:FACTOR, e.g. 1:3", text);
  Straggler s;
  s.worker = parse_worker(text.substr(0, colon), "--straggler WORKER");
  s.factor = parse_number(text.substr(colon + 1), "--straggler FACTOR");
  if (s.worker < 0 || !(s.factor >= 1.0) || !std::isfinite(s.factor))
    ASGD_INPUT_ERROR("--straggler '{}': WORKER must be >= 0 and FACTOR >= 1", text);
  return s;
}

Adversary parse_adversary(std::string_view text) {
  Adversary a;
  const auto first = text.find(':');
  if (first == std::string_view::npos)
    ASGD_INPUT_ERROR("--adversary '{}': expected WORKER:KIND[:SCALE], e.g. 3:noise:0.1", text);
  a.worker = parse_worker(text.substr(0, first), "--adversary WORKER");
  std::string_view rest = text.substr(first + 1);
  const auto second = rest.find(':');
  a.kind = std::string(rest.substr(0, second));
  if (second != std::string_view::npos)
    a.scale = parse_number(rest.substr(second + 1), "--adversary SCALE");
  if (a.worker < 0) ASGD_INPUT_ERROR("--adversary '{}': WORKER must be >= 0", text);
  if (a.kind != "noise" && a.kind != "random" && a.kind != "scaled" && a.kind != "negate" &&
      a.kind != "nan")
    ASGD_INPUT_ERROR("--adversary '{}': KIND must be noise, random, scaled, negate or nan", text);
  if (!std::isfinite(a.scale)) ASGD_INPUT_ERROR("--adversary '{}': SCALE must be finite", text);
  return a;
}

DivergencePolicy parse_divergence_policy(std::string_view name) {
  if (name == "stop") return DivergencePolicy::kStop;
  if (name == "restore") return DivergencePolicy::kRestore;
  ASGD_INPUT_ERROR("--on-divergence '{}': expected stop or restore", name);
}

std::string_view to_string(DivergencePolicy policy) {
  return policy == DivergencePolicy::kRestore ? "restore" : "stop";
}

CheckpointScope parse_checkpoint_scope(std::string_view name) {
  if (name == "rank0") return CheckpointScope::kRank0;
  if (name == "all") return CheckpointScope::kAll;
  ASGD_INPUT_ERROR("--checkpoint '{}': expected rank0 or all", name);
}

std::string_view to_string(CheckpointScope scope) {
  return scope == CheckpointScope::kAll ? "all" : "rank0";
}

Fault parse_fault(std::string_view text) {
  const auto first = text.find(':');
  const auto second = first == std::string_view::npos ? first : text.find(':', first + 1);
  if (second == std::string_view::npos)
    ASGD_INPUT_ERROR("--fault '{}': expected KIND:WORKER:N, e.g. nan:1:300 or corrupt:2:5", text);
  Fault f;
  f.kind = std::string(text.substr(0, first));
  f.worker = parse_worker(text.substr(first + 1, second - first - 1), "--fault WORKER");
  const double at = parse_number(text.substr(second + 1), "--fault N");
  if (f.on_wire() && wire_fault_named(f.kind) == WireFaultKind::kNone)
    ASGD_INPUT_ERROR("--fault '{}': KIND must be nan, throw or kill (at step N), or corrupt, "
                     "forge-offset, forge-length, forge-fingerprint or replay (every N-th "
                     "message)",
                     text);
  if (f.worker < 0 || !(at >= 1) || at > 1e15 || at != std::floor(at))
    ASGD_INPUT_ERROR("--fault '{}': WORKER must be >= 0 and N a whole number >= 1", text);
  f.at = static_cast<std::int64_t>(at);
  return f;
}

void apply_config_file(const std::string& path, TrainConfig& config) {
  // Only a regular file: a directory would read as empty and a FIFO could block for ever.
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status))
    ASGD_INPUT_ERROR("config file '{}' does not exist", path);
  if (!std::filesystem::is_regular_file(status))
    ASGD_INPUT_ERROR("config file '{}' is not a regular file{}", path,
                     std::filesystem::is_directory(status) ? " (a directory)" : "");
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& src = e.source();
    if (!src.path && src.begin.line == 0)
      ASGD_INPUT_ERROR("{}: cannot read config file: {}", path, e.description());
    ASGD_INPUT_ERROR("{}:{}:{}: invalid TOML: {}", path, src.begin.line, src.begin.column,
                     e.description());
  }
  for (const auto& [key, node] : table) {
    const std::string name(key.str());
    auto it = setters().find(name);
    if (it == setters().end()) {
      std::string known;
      for (const auto& kv : setters()) known += (known.empty() ? "" : ", ") + kv.first;
      ASGD_INPUT_ERROR("{}:{}: unknown key '{}' (known keys: {})", path,
                       key.source().begin.line, name, known);
    }
    it->second(path, name, node, config);
  }
}

void validate(const TrainConfig& c) {
  if (c.batch < 1) ASGD_INPUT_ERROR("--batch must be at least 1, got {}", c.batch);
  if (!(c.lr > 0.0f) || !std::isfinite(c.lr))
    ASGD_INPUT_ERROR("--lr must be a positive number, got {}", c.lr);
  if (!(c.epochs > 0.0)) ASGD_INPUT_ERROR("--epochs must be positive, got {}", c.epochs);
  if (!(c.max_seconds >= 0.0))
    ASGD_INPUT_ERROR("--max-seconds must be >= 0 (0: no limit), got {}", c.max_seconds);
  if (!(c.target_accuracy >= 0.0 && c.target_accuracy <= 1.0))
    ASGD_INPUT_ERROR("--target-accuracy must lie in [0, 1], got {}", c.target_accuracy);
  if (c.eval_every < 1) ASGD_INPUT_ERROR("--eval-every must be at least 1, got {}", c.eval_every);
  if (c.threads < 1) ASGD_INPUT_ERROR("--threads must be at least 1, got {}", c.threads);
  if (c.workers < 1) ASGD_INPUT_ERROR("--workers must be at least 1, got {}", c.workers);
  if (c.message_size < 0) ASGD_INPUT_ERROR("--message-size must be >= 0, got {}", c.message_size);
  if (c.send_interval < 1)
    ASGD_INPUT_ERROR("--send-interval must be at least 1, got {}", c.send_interval);
  if (c.queue_capacity < 1)
    ASGD_INPUT_ERROR("--queue-capacity must be at least 1, got {}", c.queue_capacity);
  if (!(c.window > 0.0f)) ASGD_INPUT_ERROR("--window must be positive (or inf), got {}", c.window);
  if (!(c.direction_margin >= 0.0f && c.direction_margin <= 1.0f))
    ASGD_INPUT_ERROR(
        "--direction-margin must lie in [0, 1] (1: the local step moves the state towards the "
        "message; 0: towards it is a descent direction), got {}",
        c.direction_margin);
  if (c.window_history < 1 || c.window_history > kMaxParzenHistory || c.window_warmup < 0)
    ASGD_INPUT_ERROR("--window-history must lie in [1, {}] and --window-warmup be >= 0",
                     kMaxParzenHistory);
  // NaN fails every comparison, so the tests are written to let only what is valid through.
  auto link_value_ok = [](double v) { return v >= 0.0 && std::isfinite(v); };
  if (!link_value_ok(c.links.bandwidth) || !link_value_ok(c.links.latency))
    ASGD_INPUT_ERROR(
        "--link-bandwidth and --link-latency must be finite and >= 0 (0: an ideal "
        "link), got {} bytes/s and {} s",
        c.links.bandwidth, c.links.latency);
  // Under mpirun without --workers, the ranks are the workers.
  const int workers = c.workers == 1 && launcher_ranks() > 1 ? launcher_ranks() : c.workers;
  for (const auto* m : {&c.links.bandwidth_matrix, &c.links.latency_matrix}) {
    if (m->empty()) continue;
    if (static_cast<int>(m->size()) != workers)
      ASGD_INPUT_ERROR("a link matrix has {} rows for {} workers", m->size(), workers);
    for (std::size_t i = 0; i < m->size(); ++i) {
      const auto& row = (*m)[i];
      if (static_cast<int>(row.size()) != workers)
        ASGD_INPUT_ERROR("a link matrix row has {} entries for {} workers", row.size(), workers);
      for (std::size_t j = 0; j < row.size(); ++j)
        if (!link_value_ok(row[j]))
          ASGD_INPUT_ERROR("link {}->{}: the {} matrix holds {}; entries must be finite and >= 0",
                           i, j, m == &c.links.bandwidth_matrix ? "bandwidth" : "latency", row[j]);
    }
  }
  if (c.straggler.worker >= workers)
    ASGD_INPUT_ERROR("--straggler names worker {} but there are {} workers", c.straggler.worker,
                     workers);
  if (c.adversary.worker >= workers)
    ASGD_INPUT_ERROR("--adversary names worker {} but there are {} workers", c.adversary.worker,
                     workers);
  if (c.balance == BalanceMode::kAuto && c.deterministic)
    ASGD_INPUT_ERROR("--balance auto follows measured times and cannot be deterministic; use "
                     "--balance off (fixed --message-size and --send-interval) with --deterministic");
  if (c.step_order != StepOrder::kShuffled && !c.deterministic)
    ASGD_INPUT_ERROR("--step-order {} orders the steps of --deterministic runs; add "
                     "--deterministic (threads step as they please)",
                     to_string(c.step_order));
  if (c.peer_choice == PeerChoice::kBandwidth && c.deterministic)
    ASGD_INPUT_ERROR("--peers bandwidth follows measured links and cannot be deterministic");
  if (!(c.rho > 0.0 && c.rho <= 1.0)) ASGD_INPUT_ERROR("--rho must lie in (0, 1], got {}", c.rho);
  if (!(c.compute_share >= 0.0 && c.compute_share <= 1.0))
    ASGD_INPUT_ERROR("--compute-share must lie in [0, 1], got {}", c.compute_share);
  if (c.min_message < 1 || c.max_message < 0 || (c.max_message > 0 && c.max_message < c.min_message))
    ASGD_INPUT_ERROR("--min-message must be >= 1 and --max-message 0 (the whole state) or >= it; "
                     "got {} and {}",
                     c.min_message, c.max_message);
  if (c.min_interval < 0 || c.max_interval < 1 || c.max_interval > kMaxSendInterval ||
      (c.min_interval > 0 && c.max_interval < c.min_interval))
    ASGD_INPUT_ERROR(
        "--min-interval must be >= 0 (0: the number of peers) and --max-interval "
        "between 1 and {} and >= it; got {} and {}",
        kMaxSendInterval, c.min_interval, c.max_interval);
  if (!(c.peer_timeout_s > 0.0))
    ASGD_INPUT_ERROR("--peer-timeout must be positive, got {}", c.peer_timeout_s);
  if (!(c.comm_poll_s >= 0.0 && c.comm_poll_s <= 1.0))
    ASGD_INPUT_ERROR("--comm-poll must lie in [0, 1] seconds (0: chosen by the cores), got {}",
                     c.comm_poll_s);
  for (std::size_t i = 0; i < c.faults.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (c.faults[i].on_wire() && c.faults[j].on_wire() && c.faults[i].worker == c.faults[j].worker)
        ASGD_INPUT_ERROR("--fault {}:{}:{} and --fault {}:{}:{}: one wire fault per worker",
                         c.faults[j].kind, c.faults[j].worker, c.faults[j].at, c.faults[i].kind,
                         c.faults[i].worker, c.faults[i].at);
  for (const Fault& f : c.faults)
    if (f.worker >= workers)
      ASGD_INPUT_ERROR("--fault {}:{}:{} names worker {} but there are {} workers", f.kind,
                       f.worker, f.at, f.worker, workers);
  if (!(c.divergence_lr_factor > 0.0f && c.divergence_lr_factor <= 1.0f))
    ASGD_INPUT_ERROR("--divergence-lr-factor must lie in (0, 1], got {}", c.divergence_lr_factor);
  if (c.max_restores < 0) ASGD_INPUT_ERROR("--max-restores must be >= 0, got {}", c.max_restores);
  if (c.on_divergence == DivergencePolicy::kRestore && c.algorithm == Algorithm::kSync)
    ASGD_INPUT_ERROR("--on-divergence restore does not apply to --algo sync, whose workers "
                     "share one state; use --on-divergence stop (and resume from a checkpoint)");
  if (c.checkpoint_every < 1)
    ASGD_INPUT_ERROR("--checkpoint-every must be at least 1 step, got {}", c.checkpoint_every);
  if (!(c.data.test_fraction > 0.0 && c.data.test_fraction < 1.0))
    ASGD_INPUT_ERROR("--test-fraction must lie in (0, 1), got {}", c.data.test_fraction);
}

}  // namespace asgd
