// Trains an MLP on Fashion-MNIST with one worker through asgd's C++ API.
#include <cstdio>

#include "runtime/trainer.h"

int main(int argc, char** argv) {
  // Step 1: describe the run. Every field has a default; see runtime/config.h.
  asgd::TrainConfig config;
  config.data.spec = argc > 1 ? argv[1] : "fashion-mnist";
  config.model = {"mlp", {256, 256}};
  config.batch = 64;
  config.lr = 0.05f;
  config.target_accuracy = 0.85;
  config.epochs = 5;

  // Step 2: train. Data loading, the device, the model and evaluation are handled inside.
  try {
    const asgd::TrainResult result = asgd::train(config);
    // Step 3: use the result.
    std::printf("%s: test accuracy %.4f after %lld steps in %.2f s\n", result.model.c_str(),
                result.final_test_accuracy, static_cast<long long>(result.steps),
                result.train_seconds);
    if (result.time_to_target_s) std::printf("reached 85%% at %.2f s\n", *result.time_to_target_s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
