#pragma once
// The evaluation that fuzz_autoattack_state.cpp resumes and make_seeds.cpp seeds: a tiny linear model on
// six 1x2x2 images, APGD-CE (3 steps) then Square (4 queries), batches of 2, eps 0.1.
#include <iat/eval/autoattack.hpp>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <stdexcept>
#include <string>

namespace iat_fuzz {

struct TinyLinearImpl : torch::nn::Module {
  TinyLinearImpl() : fc(register_module("fc", torch::nn::Linear(4, 3))) {}
  torch::Tensor forward(const torch::Tensor& x) { return fc(x.flatten(1)); }
  torch::nn::Linear fc;
};
TORCH_MODULE(TinyLinear);

struct AutoAttackFixture {
  TinyLinear net{nullptr};
  torch::Tensor x, y;

  AutoAttackFixture() {
    torch::manual_seed(0);
    net = TinyLinear();
    x = torch::rand({6, 1, 2, 2});
    y = torch::tensor({0, 1, 2, 0, 1, 2}, torch::kLong);
  }

  iat::eval::AutoAttackOptions options(const std::string& path, bool mismatch_ok) const {
    return iat::eval::AutoAttackOptions()
        .version(iat::eval::AutoAttackVersion::kCustom)
        .attacks({"apgd-ce", "square"})
        .apgd_steps(3)
        .square_queries(4)
        .eps(0.1)
        .batch_size(2)
        .state_path(path)
        .state_mismatch_ok(mismatch_ok);
  }

  /// Writes the state file of this evaluation interrupted after its first batch to `path`.
  void write_interrupted_state(const std::string& path) {
    std::remove(path.c_str());
    auto opts = options(path, false).on_batch([](const iat::eval::AutoAttackProgress& p) {
      if (p.batch >= 1) throw std::runtime_error("stop");
    });
    try {
      (void)iat::eval::AutoAttack(opts).run(net, x, y);
    } catch (const std::runtime_error&) {
    }
  }
};

}  // namespace iat_fuzz
