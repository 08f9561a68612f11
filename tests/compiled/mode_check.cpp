// The same computations in both of iat's modes (tests/compiled/CMakeLists.txt builds this file twice: once
// header-only against iat::iat, once against iat::compiled): every entry point whose body the compiled mode
// moves into the library, run on a seeded tiny problem, printed to full precision. check_modes.cmake
// requires the two outputs to be identical.
#include <iat/attacks/apgd.hpp>
#include <iat/attacks/fab.hpp>
#include <iat/attacks/pgd.hpp>
#include <iat/attacks/square.hpp>
#include <iat/eval/autoattack.hpp>
#include <iat/eval/robust_accuracy.hpp>
#include <iat/inverse/alignment_loss.hpp>
#include <iat/inverse/inverse_attack.hpp>
#include <iat/inverse/one_off_cache.hpp>
#include <iat/inverse/universal_perturbation.hpp>
#include <iat/train/recipes.hpp>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdio>
#include <sstream>

namespace {

struct NetImpl : torch::nn::Module {
  NetImpl() : fc1(register_module("fc1", torch::nn::Linear(16, 12))), fc2(register_module("fc2", torch::nn::Linear(12, 5))) {}
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::relu(fc1(x.flatten(1)))); }
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(Net);

void show(const char* what, const torch::Tensor& t) {
  auto d = t.detach().to(torch::kDouble);
  std::printf("%-28s sum %.17g  abs-sum %.17g\n", what, d.sum().item<double>(), d.abs().sum().item<double>());
}

}  // namespace

int main() {
  torch::set_num_threads(1);
  torch::manual_seed(0);
  Net net;
  auto x = torch::rand({6, 1, 4, 4});
  auto y = torch::randint(0, 5, {6}, torch::kLong);
  const double eps = 0.1;

  iat::PGD pgd(iat::PGDOptions().eps(eps).steps(3));
  show("PGD", pgd.perturb(net, x, y));
  show("APGD-CE", iat::APGD(iat::APGDOptions().eps(eps).steps(5)).perturb(net, x, y));
  show("APGD-T", iat::APGDT(iat::APGDTOptions().eps(eps).steps(5).n_target_classes(2)).perturb(net, x, y));
  show("FAB-T", iat::FABT(iat::FABOptions().eps(eps).steps(5).n_target_classes(2)).perturb(net, x, y));
  show("Square", iat::Square(iat::SquareOptions().eps(eps).n_queries(20)).perturb(net, x, y));
  show("InverseAttack", iat::InverseAttack(iat::InverseAttackOptions().eps(0.05).steps(2)).perturb(net, x, y));

  iat::UniversalInversePerturbation uip(iat::UniversalInversePerturbationOptions(5, {1, 4, 4}).eps(0.05));
  iat::AlignmentLoss align;
  auto step = iat::train::uiat_loss(net, x, y, pgd, uip, align);
  show("uiat_loss", step.loss);
  show("UIP delta after update", uip->delta());
  show("pgd_at_loss", iat::train::pgd_at_loss(net, x, y, pgd).loss);
  show("trades_loss", iat::train::trades_loss(net, x, y, pgd).loss);
  iat::PGD trades_pgd(iat::train::trades_attack_options().eps(eps).steps(3));
  show("trades_uiat_loss", iat::train::trades_uiat_loss(net, x, y, trades_pgd, uip, align).loss);
  show("alignment_loss", iat::functional::alignment_loss(net->forward(x), net->forward(x + 0.01)));

  iat::OneOffCache cache(iat::OneOffCacheOptions(6, 5));
  cache->store(torch::arange(6), torch::softmax(net->forward(x), 1));
  show("OneOffCache", cache->read(torch::arange(6)));
  std::ostringstream printed;
  printed << *uip << " " << *align << " " << *cache;
  std::printf("modules: %s\n", printed.str().c_str());

  auto acc = iat::eval::robust_accuracy(net, x, y, pgd);
  std::printf("robust_accuracy %.17g clean %.17g\n", acc.accuracy, acc.clean_accuracy);
  auto report = iat::eval::AutoAttack(iat::eval::AutoAttackOptions()
                                          .version(iat::eval::AutoAttackVersion::kCustom)
                                          .eps(0.04)
                                          .attacks({"apgd-ce", "apgd-t", "fab-t", "square"})
                                          .apgd_steps(5)
                                          .fab_steps(5)
                                          .square_queries(20)
                                          .n_target_classes(2))
                    .run(net, x, y);
  std::printf("AutoAttack clean %.17g robust %.17g, after each attack:", report.clean_accuracy, report.robust_accuracy);
  for (const auto& s : report.steps) std::printf(" %s %.17g", s.attack.c_str(), s.robust_accuracy);
  std::printf("\n");
  show("AutoAttack x_adv", report.x_adv);
  return 0;
}
