#pragma once
// Tiny models and data shared by the tests.

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/dropout.h>
#include <torch/optim/sgd.h>
#include <torch/types.h>

#include <catch2/catch.hpp>

namespace iat_test {

/// A small MLP on [N, 1, 4, 4] inputs with 4 classes; `forward_features` exposes its hidden layer.
struct TinyNetImpl : torch::nn::Module {
  explicit TinyNetImpl(int64_t classes = 4, int64_t in = 16, int64_t hidden = 32)
      : fc1(register_module("fc1", torch::nn::Linear(in, hidden))),
        fc2(register_module("fc2", torch::nn::Linear(hidden, classes))) {}
  torch::Tensor features(const torch::Tensor& x) { return torch::tanh(fc1(x.flatten(1))); }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(features(x)); }
  std::tuple<torch::Tensor, torch::Tensor> forward_features(const torch::Tensor& x) {
    auto f = features(x);
    return {fc2(f), f};
  }
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(TinyNet);

/// f(x) = W·flatten(x) + b.
struct LinearNetImpl : torch::nn::Module {
  LinearNetImpl(int64_t in, int64_t classes) : fc(register_module("fc", torch::nn::Linear(in, classes))) {}
  torch::Tensor forward(const torch::Tensor& x) { return fc(x.flatten(1)); }
  torch::nn::Linear fc;
};
TORCH_MODULE(LinearNet);

/// A separable 4-class problem on [N, 1, 4, 4] inputs in [0, 1]: the class is the brightest quadrant.
inline std::pair<torch::Tensor, torch::Tensor> quadrant_data(int64_t n) {
  auto y = torch::randint(0, 4, {n}, torch::kLong);
  auto x = torch::rand({n, 1, 4, 4}) * 0.5;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = y[i].item<int64_t>();
    x[i].slice(1, (c / 2) * 2, (c / 2) * 2 + 2).slice(2, (c % 2) * 2, (c % 2) * 2 + 2) += 0.5;
  }
  return {x.clamp(0, 1), y};
}

/// A TinyNet trained to high accuracy on quadrant_data (a few hundred SGD steps, well under a second).
inline TinyNet trained_tiny_net() {
  TinyNet net;
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.5));
  for (int step = 0; step < 300; ++step) {
    auto [x, y] = quadrant_data(64);
    opt.zero_grad();
    auto loss = at::cross_entropy_loss(net(x), y);
    loss.backward();
    opt.step();
  }
  for (auto& p : net->parameters()) p.mutable_grad() = torch::Tensor();
  return net;
}

/// Largest absolute element of a - b.
inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

}  // namespace iat_test
