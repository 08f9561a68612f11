#include "support.hpp"

#include <iat/attacks/pgd.hpp>
#include <iat/model_ref.hpp>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/script.h>

using iat_test::TinyNet;

TEST_CASE("ModelRef views holders, pointers, TorchScript modules and lambdas", "[model_ref]") {
  TinyNet net;
  auto x = torch::rand({3, 1, 4, 4});
  auto expected = net(x);

  SECTION("module holder: calls, reads and sets the train flag, exposes features") {
    iat::ModelRef m(net);
    CHECK(torch::allclose(m(x), expected));
    REQUIRE(m.has_train_flag());
    net->train(true);
    CHECK(m.is_training());
    m.train(false);
    CHECK_FALSE(net->is_training());
    REQUIRE(m.has_features());
    auto lf = m.forward_features(x);
    CHECK(torch::allclose(lf.logits, expected));
    CHECK(lf.features.sizes() == torch::IntArrayRef({3, 32}));
  }
  SECTION("shared_ptr to the module") {
    std::shared_ptr<iat_test::TinyNetImpl> p = net.ptr();
    iat::ModelRef m(p);
    CHECK(torch::allclose(m(x), expected));
    net->train(true);
    m.train(false);
    CHECK_FALSE(net->is_training());
  }
  SECTION("lambda, temporary and named: no train flag, no features") {
    auto scaled = [&](const torch::Tensor& t) { return net(t) * 2; };
    iat::ModelRef named(scaled);
    CHECK(torch::allclose(named(x), expected * 2));
    iat::ModelRef temp([&](const torch::Tensor& t) { return net(t) * 3; });
    CHECK(torch::allclose(temp(x), expected * 3));
    CHECK_FALSE(temp.has_train_flag());
    CHECK_FALSE(temp.has_features());
    REQUIRE_THROWS_WITH(temp.forward_features(x), Catch::Contains("forward_features"));
  }
  SECTION("TorchScript module") {
    torch::jit::Module scripted("m");
    scripted.register_attribute("training", c10::BoolType::get(), true);  // as modules scripted in Python have
    scripted.register_parameter("w", torch::full({1}, 2.0), false);
    scripted.define("def forward(self, x):\n  return x.flatten(1) * self.w\n");
    iat::ModelRef m(scripted);
    CHECK(torch::allclose(m(x), x.flatten(1) * 2));
    REQUIRE(m.has_train_flag());
    scripted.train(true);
    m.train(false);
    CHECK_FALSE(scripted.is_training());
  }
  SECTION("ModeGuard restores the mode, also on exceptions") {
    net->train(true);
    try {
      iat::ModeGuard guard(net, false);
      CHECK_FALSE(net->is_training());
      throw std::runtime_error("inside");
    } catch (const std::runtime_error&) {
    }
    CHECK(net->is_training());
  }
}

namespace {
// A model with a batch norm, to freeze in eval mode inside a training model.
struct FrozenBnNetImpl : torch::nn::Module {
  FrozenBnNetImpl()
      : conv(register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 4, 3).padding(1)))),
        bn(register_module("bn", torch::nn::BatchNorm2d(4))),
        fc(register_module("fc", torch::nn::Linear(4 * 4 * 4, 3))) {}
  torch::Tensor forward(const torch::Tensor& x) { return fc(torch::relu(bn(conv(x))).flatten(1)); }
  torch::nn::Conv2d conv;
  torch::nn::BatchNorm2d bn;
  torch::nn::Linear fc;
};
TORCH_MODULE(FrozenBnNet);
}  // namespace

TEST_CASE("attacks put back the mode of every submodule: a batch norm frozen in eval mode stays frozen",
          "[model_ref]") {
  torch::manual_seed(3);
  FrozenBnNet net;
  net->train();
  net->bn->eval();  // frozen: its running statistics must not move
  auto x = torch::rand({6, 1, 4, 4});
  auto y = torch::tensor({0, 1, 2, 0, 1, 2}, torch::kLong);
  const auto mean = net->bn->running_mean.clone();
  iat::PGD(iat::PGDOptions().eps(0.1).steps(2)).perturb(net, x, y);
  // Before: Module::train(true) on the way out put the batch norm in train mode too.
  CHECK(net->is_training());
  CHECK(net->conv->is_training());
  CHECK_FALSE(net->bn->is_training());
  // keep_train_mode: the model is already training, so nothing is switched, not even during the attack.
  iat::PGD(iat::PGDOptions().eps(0.1).steps(2).keep_train_mode(true)).perturb(net, x, y);
  CHECK_FALSE(net->bn->is_training());
  CHECK(torch::equal(net->bn->running_mean, mean));
  // A guard to train mode on an evaluating model sets every submodule and puts each back.
  net->eval();
  net->fc->train();
  {
    iat::ModeGuard guard(net, true);
    CHECK(net->bn->is_training());
  }
  CHECK_FALSE(net->is_training());
  CHECK_FALSE(net->bn->is_training());
  CHECK(net->fc->is_training());
}
