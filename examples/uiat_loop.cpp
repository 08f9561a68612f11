// Turn a PGD-AT loop into UIAT: the loop of docs/inverse.md, compiled and run on a small synthetic task
// (4 classes on 1×8×8 images, the class is the brightest quadrant). The lines marked "+ UIAT" are all
// that changes; the second loop does the same through the recipe iat::train::uiat_loss (fused path).
//
//   uiat_loop            prints clean and PGD accuracy after each variant trained for a few epochs

#include <iat/attacks/pgd.hpp>
#include <iat/inverse/alignment_loss.hpp>
#include <iat/inverse/universal_perturbation.hpp>
#include <iat/train/recipes.hpp>

#include <ATen/Parallel.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include <fmt/format.h>

namespace {

struct NetImpl : torch::nn::Module {
  NetImpl() : fc1(register_module("fc1", torch::nn::Linear(64, 64))), fc2(register_module("fc2", torch::nn::Linear(64, 4))) {}
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::relu(fc1(x.flatten(1)))); }
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(Net);

// n images [n, 1, 8, 8] in [0, 1]; the label is the brightest quadrant.
std::pair<torch::Tensor, torch::Tensor> make_data(int64_t n) {
  auto y = torch::randint(0, 4, {n}, torch::kLong);
  auto bright = torch::zeros({4, 1, 8, 8});
  for (int64_t c = 0; c < 4; ++c) bright[c].slice(1, (c / 2) * 4, (c / 2) * 4 + 4).slice(2, (c % 2) * 4, (c % 2) * 4 + 4) = 0.15;
  return {(torch::rand({n, 1, 8, 8}) * 0.5 + bright.index_select(0, y)).clamp(0, 1), y};
}

void report(const char* name, Net& net, const torch::Tensor& x, const torch::Tensor& y) {
  net->eval();
  auto x_adv = iat::PGD(iat::PGDOptions().steps(20)).perturb(net, x, y);
  torch::NoGradGuard no_grad;
  const double clean = (net(x).argmax(1) == y).to(torch::kFloat).mean().item<double>();
  const double robust = (net(x_adv).argmax(1) == y).to(torch::kFloat).mean().item<double>();
  fmt::print("{:<28} clean {:.3f}  PGD-20 {:.3f}\n", name, clean, robust);
}

}  // namespace

int main() {
  at::set_num_threads(1);
  torch::manual_seed(0);
  auto [x_train, y_train] = make_data(512);
  auto [x_test, y_test] = make_data(256);
  const int64_t n = x_train.size(0), batch = 64, epochs = 4, momentum_epoch = 3;  // T = 3 of 4 here

  {  // ---- the loop of docs/inverse.md ----
    Net net;
    torch::optim::SGD optimizer(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
    iat::PGD pgd;                                                                        // PGD-AT's attack
    iat::UniversalInversePerturbation uip(iat::UniversalInversePerturbationOptions(4, {1, 8, 8}));  // + UIAT
    iat::AlignmentLoss align;                                                            // + UIAT (λ = 3.5)
    for (int64_t epoch = 0; epoch < epochs; ++epoch) {
      if (epoch == momentum_epoch) uip->options.momentum(0.9);                           // + UIAT (epoch T)
      for (int64_t i = 0; i + batch <= n; i += batch) {
        auto x = x_train.slice(0, i, i + batch), y = y_train.slice(0, i, i + batch);
        net->train();
        auto x_adv = pgd.perturb(net, x, y);
        uip->update(net, x, y, x_adv);                                                   // + UIAT: one δ step
        auto adv_logits = net(x_adv);
        auto loss = at::cross_entropy_loss(adv_logits, y)
                  + align(net(uip(x, y)), adv_logits);                                   // + UIAT
        optimizer.zero_grad();
        loss.backward();
        optimizer.step();
      }
    }
    report("UIAT (components)", net, x_test, y_test);
  }

  {  // ---- the same with the recipe (fused: x̌ is forwarded once) ----
    Net net;
    torch::optim::SGD optimizer(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
    iat::PGD pgd;
    iat::UniversalInversePerturbation uip(iat::UniversalInversePerturbationOptions(4, {1, 8, 8}));
    iat::AlignmentLoss align;
    for (int64_t epoch = 0; epoch < epochs; ++epoch) {
      if (epoch == momentum_epoch) uip->options.momentum(0.9);
      for (int64_t i = 0; i + batch <= n; i += batch) {
        auto x = x_train.slice(0, i, i + batch), y = y_train.slice(0, i, i + batch);
        net->train();
        auto step = iat::train::uiat_loss(net, x, y, pgd, uip, align);
        optimizer.zero_grad();
        step.loss.backward();
        optimizer.step();
      }
    }
    report("UIAT (iat::train::uiat_loss)", net, x_test, y_test);
  }
  return 0;
}
