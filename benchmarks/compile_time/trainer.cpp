// Compile time of a one-file trainer (benchmarks/compile_time.sh): the user's view of iat — a model, PGD,
// UIAT's recipe with its universal perturbation and alignment loss, an SGD step, and AutoAttack at the
// end, all in one translation unit, as a user's own training program would be.
#include <iat/iat.hpp>

#include <torch/torch.h>

struct NetImpl : torch::nn::Module {
  NetImpl() : fc(register_module("fc", torch::nn::Linear(64, 4))) {}
  torch::Tensor forward(const torch::Tensor& x) { return fc(x.flatten(1)); }
  torch::nn::Linear fc;
};
TORCH_MODULE(Net);

int main() {
  Net net;
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  iat::PGD pgd(iat::PGDOptions().eps(0.1).steps(2));
  iat::UniversalInversePerturbation uip(iat::UniversalInversePerturbationOptions(4, {1, 8, 8}).eps(0.05));
  iat::AlignmentLoss align;
  auto x = torch::rand({8, 1, 8, 8});
  auto y = torch::randint(0, 4, {8}, torch::kLong);
  for (int step = 0; step < 2; ++step) {
    auto out = iat::train::uiat_loss(net, x, y, pgd, uip, align);
    opt.zero_grad();
    out.loss.backward();
    opt.step();
  }
  auto report = iat::eval::AutoAttack(iat::eval::AutoAttackOptions()
                                          .version(iat::eval::AutoAttackVersion::kCustom)
                                          .eps(0.1)
                                          .attacks({"apgd-ce"})
                                          .apgd_steps(2))
                    .run(net, x, y);
  return report.robust_accuracy >= 0 ? 0 : 1;
}
