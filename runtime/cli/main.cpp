// The asgd command line: `asgd train`, `asgd info`.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <asgd/config.h>

#include "runtime/cli/commands.h"
#include "runtime/build_info.h"
#include "runtime/error.h"

int main(int argc, char** argv) {
  CLI::App app{
      "asgd: asynchronous parallel SGD on GPUs and CPUs.\n"
      "Trains models on sharded data with workers that never wait for each other."};
  app.set_version_flag("--version", std::string("asgd ") + ASGD_VERSION + " (" + asgd::git_commit() + ")");
  app.require_subcommand(1);
  app.footer("Run 'asgd <command> --help' for the options of a command.");

  asgd::cli::TrainOptions train;
  asgd::cli::add_train_command(app, train);
  asgd::cli::add_info_command(app);

  try {
    // The config file is read before the flags are parsed so that flags override it.
    asgd::cli::preload_config_file(argc, argv, train);
    app.parse(argc, argv);
    return asgd::cli::run_selected(app, train);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const asgd::InputError& e) {
    std::fprintf(stderr, "asgd: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "asgd: error: %s\n", e.what());
    return 1;
  }
}
