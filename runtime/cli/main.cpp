// The asgd command line: `asgd train`, `asgd info`, `asgd bench-link`, `asgd checkpoint`.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <asgd/config.h>

#include "runtime/cli/commands.h"
#include "runtime/build_info.h"
#include "runtime/config.h"
#include "runtime/error.h"
#if ASGD_HAVE_MPI
#include "comm/mpi/mpi_session.h"
#endif

namespace {
// Under mpirun a failing rank must not leave the others waiting for it (in a collective, or
// for its messages): it ends the whole job. A clean exit finalises MPI if it was started.
int leave(int code, bool failed) {
#if ASGD_HAVE_MPI
  if (failed && asgd::launcher_ranks() > 1) {
    std::fflush(stderr);
    asgd::MpiSession::abort(code);
  }
  asgd::MpiSession::finalize();
#else
  (void)failed;
#endif
  return code;
}
// Under mpirun every rank may report; the reader needs to know which one did.
std::string rank_prefix() {
  return asgd::launcher_ranks() > 1 ? "rank " + std::to_string(asgd::launcher_rank()) + ": "
                                    : std::string();
}
}  // namespace

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
  asgd::cli::add_bench_link_command(app);
  std::string checkpoint_path;
  asgd::cli::add_checkpoint_command(app, checkpoint_path);

  // CLI11 would report an unknown command as a missing one ("A subcommand is required").
  if (argc >= 2 && argv[1][0] != '-') {
    std::string known;
    bool found = false;
    for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
      found = found || sub->get_name() == argv[1];
      known += (known.empty() ? "" : ", ") + sub->get_name();
    }
    if (!found) {
      std::fprintf(stderr, "asgd: error: unknown command '%s'; the commands are %s\n", argv[1],
                   known.c_str());
      return leave(2, false);
    }
  }
  try {
    // The config file is read before the flags are parsed so that flags override it.
    asgd::cli::preload_config_file(argc, argv, train);
    app.parse(argc, argv);
    const int code = asgd::cli::run_selected(app, train, checkpoint_path);
    return leave(code, false);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const asgd::CollectiveInputError& e) {
    // Every rank failed the same check with the same message: rank 0 says it once, and all
    // end normally.
    if (asgd::launcher_rank() == 0) std::fprintf(stderr, "asgd: error: %s\n", e.what());
    return leave(2, false);
  } catch (const asgd::InputError& e) {
    std::fprintf(stderr, "asgd: error: %s%s\n", rank_prefix().c_str(), e.what());
    return leave(2, true);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "asgd: error: %s%s\n", rank_prefix().c_str(), e.what());
    return leave(1, true);
  }
}
