// A user's program: PGD on a small module, with a check that the result respects the threat model.
#include <iat/iat.hpp>

#include <torch/nn/modules/linear.h>
#include <torch/version.h>

#include <cstdio>

int main() {
  torch::manual_seed(0);
  torch::nn::Linear net(12, 3);
  auto x = torch::rand({8, 12});
  auto y = torch::randint(0, 3, {8}, torch::kLong);
  iat::PGD pgd(iat::PGDOptions().eps(8.0 / 255).steps(3));
  auto x_adv = pgd.perturb(net, x, y);
  const double linf = (x_adv - x).abs().max().item<double>();
  std::printf("iat %s consumer on LibTorch %s: ||x_adv - x||_inf = %.6f\n", iat::version(), TORCH_VERSION, linf);
  return linf <= 8.0 / 255 + 1e-6 && x_adv.min().item<double>() >= 0 ? 0 : 1;
}
