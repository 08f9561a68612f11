#include "support.hpp"

#include <iat/model_ref.hpp>

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
