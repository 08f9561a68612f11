// APGD and APGD-T (AutoAttack's white-box attacks): checkpoint schedule, step-size rule, losses, budgets.
#include "support.hpp"

#include <iat/attacks/apgd.hpp>

#include <vector>

using namespace iat_test;
using Catch::Contains;

namespace {

double linf(const torch::Tensor& a, const torch::Tensor& b) { return max_abs_diff(a, b); }

torch::Tensor l2_norms(const torch::Tensor& d) { return d.flatten(1).norm(2, 1); }

torch::Tensor predict(TinyNet& net, const torch::Tensor& x) {
  torch::NoGradGuard ng;
  return net(x).argmax(1);
}

}  // namespace

TEST_CASE("APGD checkpoints fall where AutoAttack's integer schedule puts them", "[apgd]") {
  // docs/evaluation.md, "The attacks" (APGD's checkpoints): intervals k = 22, 19, 16, 13, 10, 7, 6, 6 for
  // 100 iterations.
  CHECK(iat::detail::apgd_checkpoints(100) == std::vector<int64_t>{21, 40, 56, 69, 79, 86, 92, 98});
  // 10 iterations: k = 2, then 1 (n_iter_min = 1): every iteration from index 1 on.
  CHECK(iat::detail::apgd_checkpoints(10) == std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(iat::detail::apgd_checkpoints(20) ==
        std::vector<int64_t>{3, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19});
  iat::detail::APGDSchedule s(100);
  CHECK(s.first == 22);
  CHECK(s.minimum == 6);
  CHECK(s.decrement == 3);
  CHECK(iat::APGD().checkpoints() == iat::detail::apgd_checkpoints(100));
}

TEST_CASE("APGD step-size rule on a constructed loss history", "[apgd]") {
  // Slots 0..9 (10 iterations), 4 samples, checkpoint after iteration i = 6 with interval k = 4:
  // the test looks at slots 6,5,4,3 against 5,4,3,2.
  auto h = torch::zeros({10, 4});
  const std::vector<std::vector<float>> rows = {
      {0, 1, 2, 3, 4, 5, 6, 0, 0, 0},  // 4 increases of 4: 4 > 0.75*4 -> no oscillation
      {6, 5, 4, 3, 2, 1, 0, 0, 0, 0},  // 0 increases -> oscillation condition holds
      {0, 1, 0, 1, 2, 3, 4, 0, 0, 0},  // slots 3..6 rise, 3>2? (3,4,5,6 vs 2..5): 1>0,2>1,3>2,4>3 = 4 increases
      {0, 0, 1, 0, 1, 1, 2, 0, 0, 0},  // 2>1? slot6 2>1 yes, 1>1 no, 1>0 yes, 0>1 no -> 2 <= 3
  };
  for (int s = 0; s < 4; ++s) {
    for (int j = 0; j < 10; ++j) h[j][s] = rows[static_cast<size_t>(s)][static_cast<size_t>(j)];
  }
  auto best = torch::tensor({6.f, 6.f, 4.f, 2.f});
  SECTION("condition 1 alone (step reduced at the previous checkpoint)") {
    auto reduced_last = torch::ones({4});
    auto best_last = torch::tensor({0.f, 0.f, 0.f, 0.f});
    auto halve = iat::detail::apgd_reduce_step(h, 6, 4, 0.75, reduced_last, best_last, best);
    CHECK(halve.equal(torch::tensor({0.f, 1.f, 0.f, 1.f})));
  }
  SECTION("condition 2: no reduction last time and no improvement of the best loss") {
    auto reduced_last = torch::tensor({0.f, 0.f, 1.f, 0.f});
    auto best_last = torch::tensor({6.f, 7.f, 4.f, 1.f});  // sample 0: equal (>=) -> stagnation
    auto halve = iat::detail::apgd_reduce_step(h, 6, 4, 0.75, reduced_last, best_last, best);
    // sample 0: stagnating; 1: oscillating; 2: reduced last time, so condition 2 is off; 3: oscillating.
    CHECK(halve.equal(torch::tensor({1.f, 1.f, 0.f, 1.f})));
  }
  SECTION("the count uses <= rho*k, not <") {
    // k = 4, rho = 0.75: 3 increases of 4 is exactly 0.75*4 and counts as oscillation.
    auto g = torch::zeros({5, 1});
    for (int j = 0; j < 5; ++j) g[j][0] = std::vector<float>{0, 1, 2, 3, 3}[static_cast<size_t>(j)];
    auto halve = iat::detail::apgd_reduce_step(g, 4, 4, 0.75, torch::ones({1}), torch::zeros({1}), torch::ones({1}));
    CHECK(halve.item<float>() == 1.f);
  }
  SECTION("first checkpoint wraps around to the last, still-zero slot") {
    // i = 1, k = 2: compares slot 1 with 0 and slot 0 with slot -1 = slot 9 (0). A positive loss at slot 0
    // counts as an increase (docs/evaluation.md, "The attacks"), a negative one does not.
    auto g = torch::zeros({10, 2});
    g[0][0] = 0.5f;  g[1][0] = 0.6f;    // 2 increases of 2 > 1.5 -> keep the step
    g[0][1] = -0.5f; g[1][1] = -0.4f;   // 1 increase of 2 <= 1.5 -> halve
    auto halve = iat::detail::apgd_reduce_step(g, 1, 2, 0.75, torch::ones({2}), torch::zeros({2}), torch::ones({2}));
    CHECK(halve.equal(torch::tensor({0.f, 1.f})));
  }
}

TEST_CASE("DLR and targeted DLR values used by APGD", "[apgd][losses]") {
  namespace F = iat::functional;
  auto logits = torch::tensor({{4.f, 1.f, 2.f, 0.f, -1.f}, {1.f, 5.f, 3.f, 2.f, 0.f}});
  auto y = torch::tensor({0, 2}, torch::kLong);
  // Row 0: y is the top class, max other = 2, z_π1 - z_π3 = 4 - 1: -(4-2)/3.
  // Row 1: y = 2 is second, max other = 5, z_π1 - z_π3 = 5 - 2: -(3-5)/3.
  auto dlr = F::dlr_loss(logits, y);
  CHECK(dlr[0].item<double>() == Approx(-2.0 / 3.0));
  CHECK(dlr[1].item<double>() == Approx(2.0 / 3.0));
  // Invariant to shifting and positively scaling the logits.
  CHECK(torch::allclose(F::dlr_loss(logits * 3.0 + 7.0, y), dlr, 1e-5, 1e-6));
  auto t = torch::tensor({3, 0}, torch::kLong);
  // Row 0: -(4 - 0)/(4 - (1 + 0)/2) = -4/3.5; row 1: -(3 - 1)/(5 - (2 + 1)/2) = -2/3.5.
  auto tdlr = F::targeted_dlr_loss(logits, y, t);
  CHECK(tdlr[0].item<double>() == Approx(-4.0 / 3.5));
  CHECK(tdlr[1].item<double>() == Approx(-2.0 / 3.5));
  // APGD-T's targets: the classes with the 2nd, 3rd ... largest logit.
  CHECK(iat::detail::class_of_rank(logits, 2).equal(torch::tensor({2, 2}, torch::kLong)));
  CHECK(iat::detail::class_of_rank(logits, 3).equal(torch::tensor({1, 3}, torch::kLong)));
  CHECK(iat::detail::class_of_rank(logits, 1).equal(torch::tensor({0, 1}, torch::kLong)));
}

TEST_CASE("APGD and APGD-T options are fields, checked at perturb", "[apgd][options]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(8);
  iat::APGD apgd;
  apgd.options.steps(0);
  REQUIRE_THROWS_WITH(apgd.perturb(net, x, y), Contains("iat::APGD") && Contains("steps"));
  apgd.options.steps(5).loss(iat::Loss::kTargetedDLR);
  REQUIRE_THROWS_WITH(apgd.perturb(net, x, y), Contains("loss must be kCE or kDLR"));
  iat::APGDT apgdt;
  apgdt.options.n_target_classes(0);
  REQUIRE_THROWS_WITH(apgdt.perturb(net, x, y), Contains("iat::APGDT: n_target_classes must be >= 1, got 0"));
}

TEST_CASE("APGD stays within eps, returns misclassified points or the clean input", "[apgd]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(48);
  const double eps = 0.3;  // large enough to break some points of the quadrant task
  auto clean_pred = predict(net, x);

  for (auto loss : {iat::Loss::kCE, iat::Loss::kDLR}) {
    for (auto norm : {iat::Norm::kLinf, iat::Norm::kL2}) {
      const double e = norm == iat::Norm::kLinf ? eps : 1.0;
      iat::APGD apgd(iat::APGDOptions().eps(e).norm(norm).loss(loss).steps(20));
      auto x_adv = apgd.perturb(net, x, y);
      CHECK(x_adv.sizes() == x.sizes());
      CHECK(x_adv.min().item<double>() >= 0.0);
      CHECK(x_adv.max().item<double>() <= 1.0);
      if (norm == iat::Norm::kLinf) {
        CHECK(linf(x_adv, x) <= e + 1e-6);
      } else {
        CHECK(l2_norms(x_adv - x).max().item<double>() <= e + 1e-4);
      }
      auto pred = predict(net, x_adv);
      auto changed = (x_adv - x).flatten(1).abs().amax(1) > 0;
      // A changed point is misclassified; an unchanged one is the clean input.
      CHECK((changed & (pred == y)).sum().item<int64_t>() == 0);
      CHECK(changed.sum().item<int64_t>() > 0);
      // Clean-misclassified points are not attacked.
      CHECK((changed & (clean_pred != y)).sum().item<int64_t>() == 0);
      CHECK_FALSE(x_adv.requires_grad());
    }
  }
}

TEST_CASE("APGD re-seeds the CPU generator: same seed, same points", "[apgd]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(32);
  iat::APGD a(iat::APGDOptions().eps(0.3).steps(10).seed(3));
  auto first = a.perturb(net, x, y);
  torch::rand({5});  // moves the global generator; perturb re-seeds it
  auto second = a.perturb(net, x, y);
  CHECK(first.equal(second));
  // Another seed starts elsewhere: the broken points come back as other iterates.
  auto other = iat::APGD(iat::APGDOptions().eps(0.3).steps(10).seed(4)).perturb(net, x, y);
  REQUIRE(first.ne(x).any().item<bool>());
  CHECK_FALSE(other.equal(first));
}

TEST_CASE("APGD draws exactly one uniform tensor of x's shape per run", "[apgd]") {
  // With a model that every point already fools (constant logits favouring class 0, labels 1), no run
  // takes place; with a model that nothing fools, one run draws rand(x.shape) after seeding.
  auto x = torch::rand({6, 1, 4, 4}) * 0.5 + 0.25;
  auto y = torch::ones({6}, torch::kLong);
  auto robust_model = [](const torch::Tensor& in) {
    auto z = torch::zeros({in.size(0), 4}, in.options());
    z.select(1, 1).fill_(100.0);
    return z + 0 * in.flatten(1).sum(1, true);
  };
  iat::APGD apgd(iat::APGDOptions().eps(0.1).steps(3).seed(11));
  auto out = apgd.perturb(robust_model, x, y);
  CHECK(out.equal(x));  // never misclassified: the clean input comes back
  auto after_attack = torch::rand({4});
  torch::manual_seed(11);
  torch::rand(x.sizes());
  auto expected = torch::rand({4});
  CHECK(after_attack.equal(expected));
}

TEST_CASE("APGD-T: targets from the clean logits, budget respected, at least 4 classes", "[apgd]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(48);
  iat::APGDT apgdt(iat::APGDTOptions().eps(0.3).steps(20));
  auto x_adv = apgdt.perturb(net, x, y);
  CHECK(linf(x_adv, x) <= 0.3 + 1e-6);
  auto pred = predict(net, x_adv);
  auto changed = (x_adv - x).flatten(1).abs().amax(1) > 0;
  CHECK((changed & (pred == y)).sum().item<int64_t>() == 0);
  CHECK(changed.sum().item<int64_t>() > 0);
  // L2 as well.
  auto x2 = iat::APGDT(iat::APGDTOptions().norm(iat::Norm::kL2).eps(1.0).steps(10)).perturb(net, x, y);
  CHECK(l2_norms(x2 - x).max().item<double>() <= 1.0 + 1e-4);

  TinyNet three(3);
  auto y3 = y.remainder(3);
  REQUIRE_THROWS_WITH(iat::APGDT().perturb(three, x, y3), Contains("at least 4 classes") && Contains("has 3"));
  REQUIRE_THROWS_WITH(iat::APGD(iat::APGDOptions().loss(iat::Loss::kDLR)).perturb(TinyNet(2), x, y.remainder(2)),
                      Contains("at least 3 classes"));
}

TEST_CASE("APGD options are validated with clear messages", "[apgd]") {
  REQUIRE_THROWS_WITH(iat::APGD(iat::APGDOptions().eps(8)), Contains("iat::APGD") && Contains("8/255"));
  REQUIRE_THROWS_WITH(iat::APGD(iat::APGDOptions().steps(0)), Contains("steps must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(iat::APGD(iat::APGDOptions().rho(1.5)), Contains("rho must be in (0, 1]"));
  REQUIRE_THROWS_WITH(iat::APGD(iat::APGDOptions().loss(iat::Loss::kMargin)), Contains("kCE or kDLR"));
  REQUIRE_THROWS_WITH(iat::APGD(iat::APGDOptions().eot_iter(0)), Contains("eot_iter"));
  REQUIRE_THROWS_WITH(iat::APGDT(iat::APGDTOptions().n_target_classes(0)), Contains("n_target_classes"));
  TinyNet net;
  auto x = torch::rand({2, 1, 4, 4});
  REQUIRE_THROWS_WITH(iat::APGD().perturb(net, x * 2, torch::zeros({2}, torch::kLong)), Contains("[0, 1]"));
  REQUIRE_THROWS_WITH(iat::APGD().perturb(net, x, torch::zeros({3}, torch::kLong)), Contains("same batch size"));
}
