#include "support.hpp"
#include "warning_capture.hpp"

#include <iat/attacks/apgd.hpp>
#include <iat/attacks/fgsm.hpp>
#include <iat/attacks/nfgsm.hpp>
#include <iat/attacks/pgd.hpp>
#include <iat/eval/robust_accuracy.hpp>
#include <iat/functional/grad_align.hpp>
#include <iat/inverse/inverse_attack.hpp>
#include <iat/threat_model.hpp>
#include <iat/train/recipes.hpp>
#include <iat/version.hpp>

#include <torch/nn/modules/dropout.h>

#include <cmath>

using namespace iat_test;
namespace F = iat::functional;

namespace {

constexpr double kEps = 8.0 / 255;
constexpr double kTol = 1e-6;

// ∇_x Σ CE(f(x), y), computed independently of the library.
torch::Tensor ce_grad(TinyNet& net, const torch::Tensor& x, const torch::Tensor& y) {
  auto v = x.detach().clone().requires_grad_(true);
  auto loss = at::cross_entropy_loss(net(v), y, {}, at::Reduction::Sum);
  return torch::autograd::grad({loss}, {v})[0];
}

double mean_ce(TinyNet& net, const torch::Tensor& x, const torch::Tensor& y) {
  torch::NoGradGuard ng;
  return at::cross_entropy_loss(net(x), y).item<double>();
}

double linf(const torch::Tensor& a, const torch::Tensor& b) { return max_abs_diff(a, b); }

void require_in_box(const torch::Tensor& x) {
  CHECK(x.min().item<double>() >= 0.0);
  CHECK(x.max().item<double>() <= 1.0);
}

}  // namespace

TEST_CASE("PGD stays in the eps-ball and the [0,1] box", "[attacks][pgd]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(64);

  SECTION("L-inf") {
    auto x_adv = iat::PGD(iat::PGDOptions().steps(5)).perturb(net, x, y);
    CHECK(linf(x_adv, x) <= kEps + kTol);
    CHECK(linf(x_adv, x) >= kEps - kTol);  // 5 steps of 2/255 reach the boundary somewhere
    require_in_box(x_adv);
    CHECK(x_adv.sizes() == x.sizes());
    CHECK_FALSE(x_adv.requires_grad());
  }
  SECTION("L2") {
    const double eps = 0.5;
    auto x_adv = iat::PGD(iat::PGDOptions().norm(iat::Norm::kL2).eps(eps).step_size(0.2).steps(5)).perturb(net, x, y);
    auto norms = (x_adv - x).flatten(1).norm(2, 1);
    CHECK(norms.max().item<double>() <= eps + 1e-5);
    CHECK(norms.max().item<double>() >= eps - 1e-3);
    require_in_box(x_adv);
  }
  SECTION("projection: onto the ball first, then the box") {
    auto x0 = torch::tensor({{0.99, 0.5, 0.0}});
    auto far = torch::tensor({{1.5, 0.2, -0.5}});
    auto p = iat::ThreatModel{iat::Norm::kLinf, 0.1}.project(far, x0);
    CHECK(torch::allclose(p, torch::tensor({{1.0, 0.4, 0.0}})));
    // L2: δ = (0.51, -0.3, -0.5) scaled to norm 0.1, then boxed.
    auto delta = torch::tensor({{0.51, -0.3, -0.5}});
    auto scaled = delta * (0.1 / delta.norm().item<double>());
    auto q = iat::ThreatModel{iat::Norm::kL2, 0.1}.project(far, x0);
    CHECK(torch::allclose(q, (x0 + scaled).clamp(0, 1)));
  }
}

TEST_CASE("the threat model: random points, ascent directions, distances and the radius check", "[attacks][threat_model]") {
  torch::manual_seed(3);
  const auto like = torch::zeros({4000, 1, 4, 4});
  SECTION("L-inf: uniform points fill [-eps, eps] per element, sign ascent, max-abs distance") {
    const iat::ThreatModel ball{iat::Norm::kLinf, 0.1};
    auto u = ball.uniform_in_ball(like);
    CHECK(u.abs().max().item<double>() <= 0.1);
    CHECK(u.abs().max().item<double>() > 0.0999);
    CHECK(std::abs(u.mean().item<double>()) < 1e-3);
    CHECK(u.abs().mean().item<double>() == Approx(0.05).epsilon(0.01));  // E|U(-e, e)| = e/2
    auto g = torch::tensor({{-2.0f, 0.0f, 3.0f}});
    CHECK(torch::equal(ball.ascent_direction(g), torch::tensor({{-1.0f, 0.0f, 1.0f}})));
    auto d = ball.distance(torch::tensor({{0.5f, 0.2f, 0.9f}, {0.1f, 0.1f, 0.1f}}), torch::tensor({{0.4f, 0.5f, 0.9f}, {0.1f, 0.1f, 0.1f}}));
    CHECK(d[0].item<float>() == Approx(0.3f));
    CHECK(d[1].item<float>() == 0.0f);
  }
  SECTION("L2: uniform in the ball (radius eps * u^(1/d)), unit ascent, Euclidean distance") {
    const iat::ThreatModel ball{iat::Norm::kL2, 0.5};
    auto u = ball.uniform_in_ball(like);
    auto radius = u.flatten(1).norm(2, 1);
    CHECK(radius.max().item<double>() <= 0.5 + 1e-6);
    // Uniform in a 16-dimensional ball: P(r <= 0.5 t) = t^16, so the median radius is 0.5 * 0.5^(1/16).
    CHECK(radius.median().item<double>() == Approx(0.5 * std::pow(0.5, 1.0 / 16)).epsilon(0.005));
    CHECK((radius < 0.5 * 0.8).to(torch::kDouble).mean().item<double>() == Approx(std::pow(0.8, 16)).margin(0.01));
    auto g = torch::tensor({{3.0f, -4.0f}, {0.0f, 2.0f}});
    CHECK(torch::allclose(ball.ascent_direction(g), torch::tensor({{0.6f, -0.8f}, {0.0f, 1.0f}})));
    auto d = ball.distance(torch::tensor({{0.3f, 0.4f}}), torch::zeros({1, 2}));
    CHECK(d[0].item<float>() == Approx(0.5f));
    // float16: a zero gradient (a saturated softmax) and one of 1e-4 per element, whose squares underflow in
    // float16, give finite directions (in float16 the 1e-12 guard is 0: 0/0 and x/0 made NaN and inf points).
    auto g16 = torch::tensor({{0.0f, 0.0f}, {1e-4f, 1e-4f}}).to(torch::kHalf);
    auto dir16 = ball.ascent_direction(g16);
    CHECK(dir16.scalar_type() == torch::kHalf);
    CHECK(torch::allclose(dir16.to(torch::kFloat), torch::tensor({{0.0f, 0.0f}, {0.7071f, 0.7071f}}), 1e-3, 1e-3));
  }
  SECTION("the radius check: a pixel budget for L-inf, any positive radius for L2") {
    CHECK_THROWS_WITH(iat::ThreatModel({iat::Norm::kLinf, 8.0}).check("who"), Catch::Contains("8/255"));
    CHECK_THROWS_WITH(iat::ThreatModel({iat::Norm::kL2, 0.0}).check("who"), Catch::Contains("eps"));
    CHECK_NOTHROW(iat::ThreatModel({iat::Norm::kL2, 2.0}).check("who"));
    CHECK_NOTHROW(iat::ThreatModel({iat::Norm::kLinf, 8.0 / 255}).check("who"));
  }
  SECTION("the shared option block: setters return the component's options, defaults per component") {
    auto pgd = iat::PGDOptions().norm(iat::Norm::kL2).eps(0.5).steps(3);  // chains on into PGD's own options
    CHECK(pgd.steps() == 3);
    CHECK(pgd.threat_model().norm == iat::Norm::kL2);
    CHECK(pgd.threat_model().eps == 0.5);
    CHECK(iat::PGDOptions().eps() == 8.0 / 255);
    CHECK(iat::PGDOptions().norm() == iat::Norm::kLinf);
    CHECK(iat::InverseAttackOptions().eps() == 4.0 / 255);  // the inverse ball's own default
    CHECK(iat::APGDTOptions().eps(0.3).n_target_classes(2).eps() == 0.3);
    // An L2 radius above 1 is a valid threat model for PGD (it was refused as a pixel budget before).
    auto net = iat_test::TinyNet();
    auto x = torch::rand({3, 1, 4, 4});
    auto y = torch::tensor({0, 1, 2});
    auto x_adv = iat::PGD(iat::PGDOptions().norm(iat::Norm::kL2).eps(1.5).steps(4)).perturb(net, x, y);
    CHECK((x_adv - x).flatten(1).norm(2, 1).max().item<double>() <= 1.5 + 1e-5);
    CHECK_THROWS_WITH(iat::PGD(iat::PGDOptions().eps(8.0)), Catch::Contains("8/255"));
  }
}

TEST_CASE("PGD's step size follows the budget: eps/4 unless set", "[attacks][pgd][defaults]") {
  CHECK(iat::PGDOptions().effective_step_size() == Approx(2.0 / 255));  // the paper's α at ε = 8/255
  CHECK(iat::PGDOptions().eps(0.1).effective_step_size() == Approx(0.025));
  CHECK(iat::PGDOptions().eps(0.1).steps(5).effective_step_size() == Approx(0.025));
  CHECK_FALSE(iat::PGDOptions().step_size().has_value());
  CHECK(iat::PGDOptions().eps(0.1).step_size(0.01).effective_step_size() == Approx(0.01));
  CHECK(iat::train::trades_attack_options().eps(16.0 / 255).effective_step_size() == Approx(4.0 / 255));

  // The case: five steps at ε = 0.1 now cross the ball (5 × 0.025 ≥ 0.1); with α fixed at 2/255
  // they would stop at 5 × 2/255 = 0.039.
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(64);
  auto x_adv = iat::PGD(iat::PGDOptions().eps(0.1).steps(5).random_start(false)).perturb(net, x, y);
  CHECK(linf(x_adv, x) <= 0.1 + kTol);
  CHECK(linf(x_adv, x) >= 0.1 - kTol);
}

TEST_CASE("PGD warns once when steps x step_size cannot cross the ball", "[attacks][pgd][defaults]") {
  iat_test::WarningCapture warnings;
  auto pgd_warnings = [&] { return warnings.count("iat::PGD: steps x step_size"); };
  // The paper's settings and the defaults cross the ball: no warning.
  iat::PGD paper(iat::PGDOptions().eps(8.0 / 255).step_size(2.0 / 255).steps(10));
  iat::PGD defaults;
  iat::PGD fashion(iat::PGDOptions().eps(0.1).steps(5));
  iat::PGD exact(iat::PGDOptions().eps(0.1).step_size(0.025).steps(4));  // 4 × 0.025 = 0.1 exactly
  iat::PGD pgd20 = iat::eval::pgd20(0.1);
  CHECK(pgd_warnings() == 0);

  // An explicit α too small for ε: one warning naming the numbers, however often it is constructed.
  iat::PGD short1(iat::PGDOptions().eps(0.3).steps(3).step_size(0.01));
  iat::PGD short2(iat::PGDOptions().eps(0.3).steps(3).step_size(0.01));
  REQUIRE(pgd_warnings() == 1);
  const std::string message = warnings.messages.back();
  INFO(message);
  CHECK(message.find("3 x 0.01 = 0.03 is less than eps = 0.3") != std::string::npos);
  CHECK(message.find("leave step_size unset for eps/4 = 0.075") != std::string::npos);

  // Another setting warns for itself; fewer than 4 steps of the default say so.
  iat::PGD two(iat::PGDOptions().eps(0.28).steps(2));
  REQUIRE(pgd_warnings() == 2);
  CHECK(warnings.messages.back().find("2 x 0.07 (the default eps/4) = 0.14") != std::string::npos);
  CHECK(warnings.messages.back().find("raise steps to at least 4") != std::string::npos);
}

TEST_CASE("evaluation PGD: pgd20, cw_inf and pgd(eps, K) take the step size, eps/4 unless given", "[attacks][eval]") {
  namespace E = iat::eval;
  CHECK(E::pgd20().options.effective_step_size() == Approx(2.0 / 255));
  CHECK(E::pgd20(0.1).options.effective_step_size() == Approx(0.025));
  CHECK(E::pgd20(8.0 / 255, 1.0 / 255).options.effective_step_size() == Approx(1.0 / 255));
  CHECK(E::pgd20(0.1).options.steps() == 20);
  CHECK(E::pgd20(0.1).options.eps() == Approx(0.1));
  CHECK(E::pgd20().options.random_start());
  CHECK(E::pgd20().options.loss() == iat::Loss::kCE);
  CHECK(E::cw_inf(0.1).options.effective_step_size() == Approx(0.025));
  CHECK(E::cw_inf(0.1, 30, 0.01).options.effective_step_size() == Approx(0.01));
  CHECK(E::cw_inf(0.1, 30).options.steps() == 30);
  CHECK(E::cw_inf().options.loss() == iat::Loss::kMargin);
  // iat-train's per-epoch check: the same attack with K steps; at K = 20 it is pgd20.
  CHECK(E::pgd(0.1, 7).options.steps() == 7);
  CHECK(E::pgd(0.1, 7).options.effective_step_size() == Approx(0.025));

  // The step size given is the one the attack takes.
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(32);
  torch::manual_seed(3);
  auto given = E::pgd20(0.1, 0.006).perturb(net, x, y);
  torch::manual_seed(3);
  auto by_hand = iat::PGD(iat::PGDOptions().eps(0.1).step_size(0.006).steps(20)).perturb(net, x, y);
  torch::manual_seed(3);
  auto by_default = E::pgd20(0.1).perturb(net, x, y);
  torch::manual_seed(3);
  auto default_by_hand = iat::PGD(iat::PGDOptions().eps(0.1).step_size(0.025).steps(20)).perturb(net, x, y);
  CHECK(torch::equal(given, by_hand));
  CHECK(torch::equal(by_default, default_by_hand));
  CHECK_FALSE(torch::equal(given, by_default));
}

TEST_CASE("options are a public field: changes take effect, are checked at perturb, and the call form still works",
          "[attacks][options]") {
  using Catch::Contains;
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(32);

  // Set after construction, the options are the ones the attack runs with: the same result as an attack
  // built with them, and not the one built with the defaults.
  iat::PGD changed;
  changed.options.eps(0.1).steps(3).random_start(false);
  CHECK(changed.options.effective_step_size() == Approx(0.025));  // α follows the new ε
  auto by_field = changed.perturb(net, x, y);
  auto built = iat::PGD(iat::PGDOptions().eps(0.1).steps(3).random_start(false)).perturb(net, x, y);
  auto defaults = iat::PGD(iat::PGDOptions().random_start(false)).perturb(net, x, y);
  CHECK(torch::equal(by_field, built));
  CHECK_FALSE(torch::equal(by_field, defaults));
  CHECK(linf(by_field, x) <= 0.1 + kTol);
  CHECK(linf(by_field, x) > 8.0 / 255 + 1e-3);  // it used the new, larger ball

  // Whole-struct assignment and copies through the field.
  changed.options = iat::PGDOptions().eps(0.05);
  CHECK(changed.options.eps() == Approx(0.05));
  CHECK(changed.options.steps() == 10);
  iat::PGD copy(changed.options);
  CHECK(copy.options.eps() == Approx(0.05));

  // A bad value set after construction gets the constructor's error, at the next perturb.
  iat::PGD bad;
  bad.options.steps(0);
  REQUIRE_THROWS_WITH(bad.perturb(net, x, y), Contains("iat::PGD: steps must be >= 1, got 0"));
  iat::FGSM fgsm;
  fgsm.options.eps(-1.0);
  REQUIRE_THROWS_WITH(fgsm.perturb(net, x, y), Contains("iat::FGSM") && Contains("eps"));
  iat::NFGSM nfgsm;
  nfgsm.options.noise_scale(-2.0);
  REQUIRE_THROWS_WITH(nfgsm.perturb(net, x, y), Contains("iat::NFGSM") && Contains("noise_scale"));

  // The call form of earlier versions reads and writes the same options (deprecated: it warns at compile time).
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
  iat::PGD old_style;
  old_style.options().steps(7);
  CHECK(old_style.options.steps() == 7);
  CHECK(old_style.options().eps() == Approx(8.0 / 255));
  const iat::PGD& const_view = old_style;
  CHECK(const_view.options().steps() == 7);
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
}

TEST_CASE("PGD without random start is deterministic and follows the signed-gradient formula", "[attacks][pgd]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(64);
  auto opts = iat::PGDOptions().random_start(false).steps(10);
  iat::PGD pgd(opts);

  auto a = pgd.perturb(net, x, y);
  auto b = pgd.perturb(net, x, y);
  CHECK(torch::equal(a, b));

  SECTION("raises the loss of a trained model, far more than random noise of the same size") {
    // ε = 0.2 against a margin of 0.5 in the data: enough to break many points.
    const double eps = 0.2;
    auto strong = iat::PGD(iat::PGDOptions().eps(eps).step_size(0.05).random_start(false)).perturb(net, x, y);
    const double clean = mean_ce(net, x, y);
    const double noise = mean_ce(net, (x + torch::empty_like(x).uniform_(-1, 1).sign() * eps).clamp(0, 1), y);
    const double adv = mean_ce(net, strong, y);
    INFO("clean " << clean << ", random corner " << noise << ", PGD " << adv);
    CHECK(adv > 0.5);
    CHECK(adv > 10 * noise);
    CHECK(mean_ce(net, a, y) > clean);  // the default ε = 8/255 raises it too
  }
  SECTION("one L-inf step is clamp(x + alpha sign(grad)) inside the ball: the ascent sign") {
    auto one = iat::PGD(iat::PGDOptions().random_start(false).steps(1).step_size(1.0 / 255)).perturb(net, x, y);
    auto expected = (x + (1.0 / 255) * ce_grad(net, x, y).sign()).clamp(0, 1);
    CHECK(linf(one, expected) < kTol);
  }
  SECTION("one L2 step moves by alpha along grad/||grad||") {
    auto one = iat::PGD(iat::PGDOptions().norm(iat::Norm::kL2).eps(1.0).random_start(false).steps(1).step_size(0.05))
                   .perturb(net, x, y);
    auto g = ce_grad(net, x, y);
    auto unit = g / g.flatten(1).norm(2, 1).view({-1, 1, 1, 1});
    CHECK(linf(one, (x + 0.05 * unit).clamp(0, 1)) < kTol);
  }
}

TEST_CASE("PGD ascends each of its losses", "[attacks][pgd]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(64);
  auto logits_of = [&](const torch::Tensor& t) {
    torch::NoGradGuard ng;
    return net(t);
  };
  auto clean = logits_of(x);
  // Captured by name: C++17 lambdas cannot capture structured bindings (clang refuses, gcc allows).
  auto run = [&, xs = x, ys = y](iat::Loss loss) {
    return logits_of(iat::PGD(iat::PGDOptions().loss(loss).random_start(false)).perturb(net, xs, ys));
  };
  CHECK(F::margin_loss(run(iat::Loss::kMargin), y).mean().item<double>() >
        F::margin_loss(clean, y).mean().item<double>() + 0.1);
  CHECK(F::dlr_loss(run(iat::Loss::kDLR), y).mean().item<double>() > F::dlr_loss(clean, y).mean().item<double>() + 0.05);
  auto target = clean.argsort(1, true).select(1, 1);
  CHECK(F::targeted_dlr_loss(run(iat::Loss::kTargetedDLR), y, target).mean().item<double>() >
        F::targeted_dlr_loss(clean, y, target).mean().item<double>() + 0.05);

  // TRADES inner maximisation: from x + 0.001 N(0,1), KL(p(x) || p(x')) grows far beyond what a random
  // corner of the ε-ball gives.
  auto kl_to_clean = [&](const torch::Tensor& t) {
    return F::kl_div(torch::log_softmax(clean, 1), torch::log_softmax(logits_of(t), 1)).mean().item<double>();
  };
  auto trades = iat::PGD(
      iat::PGDOptions().eps(0.2).step_size(0.05).loss(iat::Loss::kKL).init_noise(iat::InitNoise::kGaussian));
  const double kl_adv = kl_to_clean(trades.perturb(net, x, y));
  const double kl_noise = kl_to_clean((x + torch::empty_like(x).uniform_(-1, 1).sign() * 0.2).clamp(0, 1));
  INFO("KL after PGD-KL " << kl_adv << ", at a random corner " << kl_noise);
  CHECK(kl_adv > 3 * kl_noise);
}

TEST_CASE("PGD given the clean logits skips its clean forward and finds the same x' bit for bit", "[attacks][pgd]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(16);
  torch::Tensor clean;
  {
    torch::NoGradGuard ng;
    clean = net(x);
  }
  int64_t forwards = 0;
  auto counted = [&](const torch::Tensor& t) {  // TinyNet computes alike in train and eval mode
    ++forwards;
    return net(t);
  };
  for (auto loss : {iat::Loss::kKL, iat::Loss::kTargetedDLR, iat::Loss::kCE}) {
    INFO("loss " << static_cast<int>(loss));
    iat::PGD pgd(iat::PGDOptions().eps(0.2).steps(3).loss(loss).init_noise(iat::InitNoise::kGaussian));
    torch::manual_seed(5);
    forwards = 0;
    auto own = pgd.perturb(counted, x, y);
    const int64_t own_forwards = forwards;
    torch::manual_seed(5);
    forwards = 0;
    auto given = pgd.perturb_given_clean(counted, x, y, clean);
    CHECK(torch::equal(own, given));
    CHECK(forwards == own_forwards - (loss == iat::Loss::kCE ? 0 : 1));
  }
  // Under keep_train_mode the attack's clean forward is a train-mode one: the given (eval-mode) logits are not used.
  iat::PGD kept(iat::PGDOptions().eps(0.2).step_size(0.1).steps(2).loss(iat::Loss::kKL).keep_train_mode(true));
  forwards = 0;
  kept.perturb_given_clean(counted, x, y, clean);
  CHECK(forwards == 3);
  // The base class's default ignores them (an attack with no clean forward).
  iat::FGSM fgsm(iat::FGSMOptions().eps(0.1));
  CHECK(torch::equal(static_cast<iat::Attack&>(fgsm).perturb_given_clean(net, x, y, clean), fgsm.perturb(net, x, y)));
  REQUIRE_THROWS_WITH(iat::PGD(iat::PGDOptions().loss(iat::Loss::kKL)).perturb_given_clean(net, x, y, clean.slice(0, 0, 3)),
                      Catch::Contains("clean_logits must be [N, C] with N = 16"));
}

TEST_CASE("PGD restarts keep, per example, the first misclassifying run or the highest loss", "[attacks][pgd]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(32);
  auto opts = iat::PGDOptions().steps(2).eps(16.0 / 255).step_size(8.0 / 255);
  torch::manual_seed(7);
  auto combined = iat::PGD(opts.restarts(3)).perturb(net, x, y);
  torch::manual_seed(7);  // the same three random starts, one run at a time
  std::vector<torch::Tensor> runs;
  for (int r = 0; r < 3; ++r) runs.push_back(iat::PGD(opts.restarts(1)).perturb(net, x, y));

  torch::NoGradGuard ng;
  for (int64_t i = 0; i < x.size(0); ++i) {
    int best = 0;
    double best_score = -1e300;
    for (int r = 0; r < 3; ++r) {
      auto logits = net(runs[static_cast<size_t>(r)][i].unsqueeze(0));
      const bool wrong = logits.argmax(1).item<int64_t>() != y[i].item<int64_t>();
      const double score = wrong ? 1e300 : F::cross_entropy(logits, y[i].unsqueeze(0)).item<double>();
      if (score > best_score) best = r, best_score = score;
    }
    CHECK(linf(combined[i], runs[static_cast<size_t>(best)][i]) < kTol);
  }
}

TEST_CASE("FGSM and FGSM-RS follow their formulas", "[attacks][fgsm]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(64);

  SECTION("plain FGSM: x + eps sign(grad)") {
    auto x_adv = iat::FGSM().perturb(net, x, y);
    CHECK(linf(x_adv, (x + kEps * ce_grad(net, x, y).sign()).clamp(0, 1)) < kTol);
  }
  SECTION("FGSM-RS: delta = clip_eps(eta + 1.25 eps sign(grad at x + eta)), then the box") {
    torch::manual_seed(11);
    auto x_adv = iat::FGSM(iat::FGSMOptions().random_start(true)).perturb(net, x, y);
    torch::manual_seed(11);
    auto eta = torch::empty_like(x).uniform_(-kEps, kEps);
    auto delta = (eta + 1.25 * kEps * ce_grad(net, x + eta, y).sign()).clamp(-kEps, kEps);
    CHECK(linf(x_adv, (x + delta).clamp(0, 1)) < kTol);
    CHECK(linf(x_adv, x) <= kEps + kTol);
    require_in_box(x_adv);
  }
  SECTION("clamp_start takes the gradient at clamp(x + eta)") {
    torch::manual_seed(12);
    auto x_adv = iat::FGSM(iat::FGSMOptions().random_start(true).clamp_start(true)).perturb(net, x, y);
    torch::manual_seed(12);
    auto eta = (x + torch::empty_like(x).uniform_(-kEps, kEps)).clamp(0, 1) - x;
    auto delta = (eta + 1.25 * kEps * ce_grad(net, x + eta, y).sign()).clamp(-kEps, kEps);
    CHECK(linf(x_adv, (x + delta).clamp(0, 1)) < kTol);
  }
  CHECK(iat::FGSMOptions().effective_step_size() == Approx(kEps));
  CHECK(iat::FGSMOptions().random_start(true).effective_step_size() == Approx(1.25 * kEps));
  CHECK(iat::FGSMOptions().random_start(true).step_size(0.01).effective_step_size() == Approx(0.01));
}

TEST_CASE("N-FGSM follows its formula and is not projected to the eps-ball", "[attacks][nfgsm]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(64);
  torch::manual_seed(5);
  auto x_adv = iat::NFGSM().perturb(net, x, y);
  torch::manual_seed(5);
  auto eta = torch::empty_like(x).uniform_(-2 * kEps, 2 * kEps);
  auto expected = (x + eta + kEps * ce_grad(net, x + eta, y).sign()).clamp(0, 1);
  CHECK(linf(x_adv, expected) < kTol);
  CHECK(linf(x_adv, x) > kEps * 1.5);  // leaves the ε-ball: no projection
  CHECK(linf(x_adv, x) <= 3 * kEps + kTol);
  require_in_box(x_adv);
}

namespace {
// Records the train flag it sees during forward passes.
struct ModeProbeImpl : torch::nn::Module {
  ModeProbeImpl() : net(register_module("net", TinyNet())) {}
  torch::Tensor forward(const torch::Tensor& x) {
    saw_training = is_training();
    return net(x);
  }
  TinyNet net;
  bool saw_training = false;
};
TORCH_MODULE(ModeProbe);
}  // namespace

TEST_CASE("attacks touch no parameter gradient, run in eval mode and restore the mode", "[attacks]") {
  ModeProbe probe;
  auto [x, y] = quadrant_data(16);
  std::vector<std::unique_ptr<iat::Attack>> attacks;
  attacks.push_back(std::make_unique<iat::PGD>(iat::PGDOptions().steps(2)));
  attacks.push_back(std::make_unique<iat::PGD>(iat::PGDOptions().steps(2).restarts(2).loss(iat::Loss::kKL)));
  attacks.push_back(std::make_unique<iat::FGSM>(iat::FGSMOptions().random_start(true)));
  attacks.push_back(std::make_unique<iat::NFGSM>());

  for (auto& attack : attacks) {
    INFO(attack->name());
    for (bool training : {true, false}) {
      probe->train(training);
      auto x_adv = attack->perturb(probe, x, y);
      CHECK_FALSE(probe->saw_training);
      CHECK(probe->is_training() == training);
      for (auto& p : probe->parameters()) CHECK_FALSE(p.grad().defined());
    }
    SECTION("inside a NoGradGuard") {
      torch::NoGradGuard ng;
      auto x_adv = attack->perturb(probe, x, y);
      CHECK(linf(x_adv, x) > 0);
    }
  }
  SECTION("keep_train_mode keeps the caller's mode") {
    probe->train(true);
    iat::PGD(iat::PGDOptions().steps(1).keep_train_mode(true)).perturb(probe, x, y);
    CHECK(probe->saw_training);
    CHECK(probe->is_training());
  }
  SECTION("the mode is restored when the attack throws") {
    probe->train(true);
    auto bad_y = torch::full({16}, 9, torch::kLong);
    CHECK_THROWS(iat::PGD().perturb(probe, x, bad_y));
    CHECK(probe->is_training());
  }
}

TEST_CASE("GradAlign regulariser", "[attacks][grad_align]") {
  auto [x, y] = quadrant_data(32);
  SECTION("is 0 for a linear two-class model, whose input gradients are all parallel") {
    LinearNet lin(16, 2);
    auto y2 = y.remainder(2);
    CHECK(F::grad_align(lin, x, y2, kEps).item<double>() == Approx(0.0).margin(1e-6));
  }
  SECTION("is positive for a nonlinear model and differentiable in its parameters") {
    TinyNet net = trained_tiny_net();
    auto reg = F::grad_align(net, x, y, 64.0 / 255, 1.0);
    CHECK(reg.item<double>() > 1e-4);
    CHECK(reg.item<double>() <= 2.0);
    reg.backward();
    CHECK(net->fc1->weight.grad().defined());
    CHECK(net->fc1->weight.grad().abs().sum().item<double>() > 0);
  }
  SECTION("weight scales it") {
    TinyNet net = trained_tiny_net();
    torch::manual_seed(3);
    auto a = F::grad_align(net, x, y, kEps, 1.0).item<double>();
    torch::manual_seed(3);
    auto b = F::grad_align(net, x, y, kEps, 0.2).item<double>();
    CHECK(b == Approx(0.2 * a));
  }
}

TEST_CASE("attacks reject bad options and inputs with clear errors", "[attacks][errors]") {
  TinyNet net;
  auto [x, y] = quadrant_data(8);
  using Catch::Contains;
  REQUIRE_THROWS_AS(iat::PGD(iat::PGDOptions().eps(8)), c10::Error);
  REQUIRE_THROWS_WITH(iat::PGD(iat::PGDOptions().eps(8)), Contains("eps") && Contains("did you mean 8/255"));
  REQUIRE_THROWS_WITH(iat::PGD(iat::PGDOptions().eps(0)), Contains("eps must be in (0, 1]") && Contains("got 0"));
  REQUIRE_THROWS_WITH(iat::PGD(iat::PGDOptions().eps(-0.1)), Contains("eps"));
  REQUIRE_THROWS_WITH(iat::PGD(iat::PGDOptions().steps(0)), Contains("steps must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(iat::PGD(iat::PGDOptions().restarts(0)), Contains("restarts"));
  REQUIRE_THROWS_WITH(iat::PGD(iat::PGDOptions().step_size(0)), Contains("step_size"));
  REQUIRE_THROWS_WITH(iat::FGSM(iat::FGSMOptions().eps(16)), Contains("iat::FGSM") && Contains("16/255"));
  REQUIRE_THROWS_WITH(iat::NFGSM(iat::NFGSMOptions().eps(2)), Contains("iat::NFGSM") && Contains("eps"));
  REQUIRE_THROWS_WITH(iat::NFGSM(iat::NFGSMOptions().noise_scale(-1)), Contains("noise_scale"));
  REQUIRE_THROWS_WITH(F::grad_align(net, x, y, 8), Contains("grad_align") && Contains("8/255"));

  iat::PGD pgd(iat::PGDOptions().steps(1));
  REQUIRE_THROWS_WITH(pgd.perturb(net, x, torch::full({8}, 4, torch::kLong)),
                      Contains("labels must be in [0, 4)") && Contains("[4, 4]"));
  REQUIRE_THROWS_WITH(pgd.perturb(net, x, torch::full({8}, -1, torch::kLong)), Contains("labels must be in [0, 4)"));
  REQUIRE_THROWS_WITH(pgd.perturb(net, x * 255, y), Contains("x must lie in [0, 1]"));
  REQUIRE_THROWS_WITH(pgd.perturb(net, (x * 255).to(torch::kByte), y), Contains("floating-point") && Contains("Byte"));
  REQUIRE_THROWS_WITH(pgd.perturb(net, x, y.slice(0, 0, 5)), Contains("same batch size"));
  REQUIRE_THROWS_WITH(pgd.perturb(net, x, y.to(torch::kInt)), Contains("int64"));
  REQUIRE_THROWS_WITH(iat::FGSM().perturb(net, x, torch::full({8}, 7, torch::kLong)), Contains("iat::FGSM"));

  LinearNet two(16, 2);
  auto y2 = y.remainder(2);
  REQUIRE_THROWS_WITH(iat::PGD(iat::PGDOptions().loss(iat::Loss::kDLR)).perturb(two, x, y2),
                      Contains("kDLR needs at least 3 classes") && Contains("2"));
  LinearNet three(16, 3);
  auto y3 = y.remainder(3);
  REQUIRE_THROWS_WITH(iat::PGD(iat::PGDOptions().loss(iat::Loss::kTargetedDLR)).perturb(three, x, y3),
                      Contains("kTargetedDLR needs at least 4 classes"));
  REQUIRE_THROWS_WITH(iat::PGD(iat::PGDOptions().loss(iat::Loss::kTargetedDLR).target_rank(9)).perturb(net, x, y),
                      Contains("target_rank must be <= 4"));
  auto bad_shape = [](const torch::Tensor& t) { return t.flatten(); };
  REQUIRE_THROWS_WITH(pgd.perturb(bad_shape, x, y), Contains("logits of shape [N, num_classes]"));
}

TEST_CASE("the CMake project version and the header version agree", "[version]") {
  CHECK(std::string(iat::version()) == IAT_CMAKE_VERSION);
}

TEST_CASE("attacks take a model's outputs as they are; grad_align refuses probabilities", "[attacks][logits]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(16);
  auto probs = [&net](const torch::Tensor& in) { return torch::softmax(net(in), 1); };
  // Attacks follow AutoAttack's reference: any output is attacked (AutoAttack warns about probabilities).
  CHECK_NOTHROW(iat::PGD(iat::PGDOptions().steps(2)).perturb(probs, x, y));
  CHECK_NOTHROW(iat::FGSM().perturb(probs, x, y));
  CHECK_NOTHROW(iat::NFGSM().perturb(probs, x, y));
  // grad_align is part of a training loss: softmax outputs are refused unless told otherwise.
  REQUIRE_THROWS_WITH(F::grad_align(probs, x, y, kEps),
                      Catch::Contains("iat::functional::grad_align") && Catch::Contains("look like probabilities") &&
                          Catch::Contains("LogitsCheck::kOff"));
  CHECK(std::isfinite(F::grad_align(probs, x, y, kEps, 0.2, iat::LogitsCheck::kOff).item<double>()));
  CHECK(std::isfinite(F::grad_align(net, x, y, kEps).item<double>()));
}
