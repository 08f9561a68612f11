// iat's test runner: seeds torch, fixes the thread count, prints versions and the seed so a failure can be
// replayed with IAT_TEST_SEED=<seed>.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <iat/version.hpp>

#include <ATen/Parallel.h>
#include <torch/types.h>
#include <torch/version.h>

#include <cstdlib>
#include <iostream>
#include <string>

int main(int argc, char* argv[]) {
  const char* env_seed = std::getenv("IAT_TEST_SEED");
  const uint64_t seed = env_seed ? std::stoull(env_seed) : 20231101ULL;
  torch::manual_seed(seed);
  at::set_num_threads(1);
  std::cerr << "iat " << iat::version() << ", LibTorch " << TORCH_VERSION << ", seed " << seed
            << " (IAT_TEST_SEED), threads " << at::get_num_threads() << "\n";
  return Catch::Session().run(argc, argv);
}
