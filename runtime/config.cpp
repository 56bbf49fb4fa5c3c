#include "runtime/config.h"

#include <cmath>
#include <functional>
#include <map>

#include <toml++/toml.h>

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
         c.data.csv_label_column = static_cast<int>(get_as<std::int64_t>(p, k, n, "an integer"));
       })},
      {"model", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.model.kind = get_as<std::string>(p, k, n, "a string");
       })},
      {"hidden", custom([](const std::string& p, const std::string& k, const toml::node& n,
                           TrainConfig& c) {
         const auto* arr = n.as_array();
         if (!arr) ASGD_INPUT_ERROR("{}: '{}' must be an array of integers", where(p, n), k);
         c.model.hidden.clear();
         for (const auto& e : *arr)
           c.model.hidden.push_back(get_as<std::int64_t>(p, k, e, "an array of integers"));
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
      {"device", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.device = static_cast<int>(get_as<std::int64_t>(p, k, n, "an integer"));
       })},
      {"threads", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.threads = static_cast<int>(get_as<std::int64_t>(p, k, n, "an integer"));
       })},
      {"seed", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.seed = static_cast<std::uint64_t>(get_as<std::int64_t>(p, k, n, "an integer"));
       })},
      {"metrics", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.metrics_path = get_as<std::string>(p, k, n, "a string");
       })},
      {"summary", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.summary_path = get_as<std::string>(p, k, n, "a string");
       })},
      {"progress", custom([](auto& p, auto& k, auto& n, TrainConfig& c) {
         c.progress = get_as<bool>(p, k, n, "true or false");
       })},
  };
  return table;
}

}  // namespace

void apply_config_file(const std::string& path, TrainConfig& config) {
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
  if (c.max_seconds < 0.0) ASGD_INPUT_ERROR("--max-seconds must be >= 0, got {}", c.max_seconds);
  if (c.target_accuracy < 0.0 || c.target_accuracy > 1.0)
    ASGD_INPUT_ERROR("--target-accuracy must lie in [0, 1], got {}", c.target_accuracy);
  if (c.eval_every < 1) ASGD_INPUT_ERROR("--eval-every must be at least 1, got {}", c.eval_every);
  if (c.threads < 1) ASGD_INPUT_ERROR("--threads must be at least 1, got {}", c.threads);
  if (!(c.data.test_fraction > 0.0 && c.data.test_fraction < 1.0))
    ASGD_INPUT_ERROR("--test-fraction must lie in (0, 1), got {}", c.data.test_fraction);
}

}  // namespace asgd
