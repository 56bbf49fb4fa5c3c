// `asgd checkpoint FILE|DIR`: verifies a checkpoint and prints what it holds as JSON — the run
// it belongs to, and per worker its step, step size scale and a hash of its state (two
// checkpoints hold the same state iff the hashes agree: how kill-and-resume is checked).
#include <cstdio>

#include <sys/stat.h>

#include <xxhash.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "runtime/checkpoint.h"
#include "runtime/cli/commands.h"

namespace asgd::cli {

void add_checkpoint_command(CLI::App& app, std::string& path) {
  CLI::App* cmd = app.add_subcommand(
      "checkpoint", "Verify a checkpoint (a file, or a --checkpoint-dir) and print what it holds.");
  cmd->add_option("path", path, "checkpoint file or directory")->required();
}

int run_checkpoint(const std::string& path) {
  struct stat st {};
  const bool dir = ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  std::string file = dir ? checkpoint_file(path, 0, false) : path;
  // A --checkpoint all directory holds one file per rank: show rank 0's, and say so.
  if (dir && ::stat(file.c_str(), &st) != 0 &&
      ::stat(checkpoint_file(path, 0, true).c_str(), &st) == 0) {
    file = checkpoint_file(path, 0, true);
    std::fprintf(stderr, "asgd: %s holds one checkpoint per rank; showing rank 0's\n",
                 path.c_str());
  }
  const Checkpoint c = read_checkpoint(file);
  nlohmann::json settings = nlohmann::json::object();
  for (const auto& [name, value] : c.identity)
    settings[name] = value;
  nlohmann::json workers = nlohmann::json::array();
  for (const WorkerState& w : c.workers) {
    nlohmann::json one = {
        {"worker", w.id},
        {"steps", w.steps},
        {"lr_scale", w.lr_scale},
        {"restores", w.restores},
        {"epoch", w.sampler_epoch},
        {"state_xxh3",
         fmt::format("{:016x}", XXH3_64bits(w.params.data(), w.params.size() * sizeof(float)))}};
    if (!w.good_params.empty()) one["last_good_step"] = w.good_step;  // --on-divergence restore
    workers.push_back(std::move(one));
  }
  const nlohmann::json out = {{"file", file},
                              {"version", c.version},
                              {"rank", c.rank},
                              {"ranks", c.ranks},
                              {"parameters", c.parameters},
                              {"fingerprint", fmt::format("{:016x}", c.fingerprint)},
                              {"elapsed_s", c.elapsed_s},
                              {"unread_messages", c.unread.size()},
                              {"settings", settings},
                              {"workers", workers}};
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

}  // namespace asgd::cli
