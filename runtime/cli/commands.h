// Internal to the CLI: the subcommands and the options they fill.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "runtime/config.h"

namespace asgd::cli {

struct TrainOptions {
  TrainConfig config;
  std::string config_file;
  std::string hidden;  // "256,256" as typed
  std::string backend = "host";
  std::string normalize = "auto";
  std::string algo = "asgd";
  std::string merge = "seed";
  std::string window = "4";
  std::string straggler;
  std::string adversary;
  std::string transport = "auto";
  std::string step_order = "shuffled";
  std::string eval_workers = "all";
  std::string balance;
  std::string peers = "uniform";
  std::string link_change;
  std::string on_divergence;
  std::string checkpoint_scope;
  std::vector<std::string> faults;
};

void add_train_command(CLI::App& app, TrainOptions& options);
void add_info_command(CLI::App& app);
// `asgd checkpoint FILE|DIR`: what a checkpoint holds (checkpoint_command.cpp).
void add_checkpoint_command(CLI::App& app, std::string& path);
int run_checkpoint(const std::string& path);
void add_bench_link_command(CLI::App& app);  // and run_bench_link(): bench_link_command.cpp
int run_bench_link(CLI::App& cmd);
// Finds `--config FILE` (or `-c FILE`, `--config=FILE`) among the arguments of `asgd train`
// and applies the file; other commands take no config, and reject the flag when they parse.
void preload_config_file(int argc, char** argv, TrainOptions& options);
// Runs whichever subcommand was parsed; returns the exit code.
int run_selected(CLI::App& app, TrainOptions& train, const std::string& checkpoint_path);

}  // namespace asgd::cli
