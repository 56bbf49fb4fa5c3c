// Fuzzes the TOML configuration file: apply_config_file, then validate, as `asgd train
// --config FILE` does. The input is the file.
//
// toml++ itself is Debian's shared library, not instrumented here: this target covers our
// setters and checks, and catches a crash anywhere.
#include <cstddef>
#include <cstdint>

#include "runtime/config.h"
#include "runtime/error.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace asgd;
  const std::string path = fuzz::write_scratch_file("run.toml", data, size);
  TrainConfig config;
  try {
    apply_config_file(path, config);
    validate(config);
  } catch (const InputError&) {
    return 0;  // a rejected file, as documented
  }
  (void)resolved_balance(config);
  return 0;
}
