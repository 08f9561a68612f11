// Tests of the inverse components: L_Inv, iat::InverseAttack, iat::UniversalInversePerturbation,
// iat::AlignmentLoss and iat::OneOffCache (docs/method.md §2–§5).
#include "support.hpp"
#include "warning_capture.hpp"

#include <iat/attacks/pgd.hpp>
#include <iat/inverse/alignment_loss.hpp>
#include <iat/inverse/inverse_attack.hpp>
#include <iat/inverse/inverse_loss.hpp>
#include <iat/inverse/one_off_cache.hpp>
#include <iat/inverse/universal_perturbation.hpp>

#include <torch/cuda.h>
#include <torch/serialize.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

using namespace iat_test;
namespace F = iat::functional;

namespace {

constexpr double kEpsInv = 4.0 / 255;
constexpr double kTol = 1e-6;

torch::Tensor no_grad_forward(TinyNet& net, const torch::Tensor& x) {
  torch::NoGradGuard ng;
  return net(x);
}

double mean_ce(TinyNet& net, const torch::Tensor& x, const torch::Tensor& y) {
  return at::cross_entropy_loss(no_grad_forward(net, x), y).item<double>();
}

// KL(p ‖ q) per row, written out from probabilities.
torch::Tensor kl_rows(const torch::Tensor& p, const torch::Tensor& q) { return (p * (p.log() - q.log())).sum(1); }

// A temp file path that is removed when the object goes out of scope.
struct TempFile {
  explicit TempFile(const std::string& name)
      : path((std::filesystem::temp_directory_path() /
              ("iat_test_" + name + "_" + std::to_string(reinterpret_cast<std::uintptr_t>(this)) + ".pt"))
                 .string()) {}
  ~TempFile() { std::remove(path.c_str()); }
  std::string path;
};

// Records the train flag during forward passes; exposes features like TinyNet.
struct ProbeImpl : torch::nn::Module {
  ProbeImpl() : net(register_module("net", TinyNet())) {}
  torch::Tensor forward(const torch::Tensor& x) {
    saw_training = is_training();
    return net(x);
  }
  std::tuple<torch::Tensor, torch::Tensor> forward_features(const torch::Tensor& x) {
    saw_training = is_training();
    return net->forward_features(x);
  }
  TinyNet net;
  bool saw_training = false;
};
TORCH_MODULE(Probe);

iat::UniversalInversePerturbation make_uip(double eps = kEpsInv, double step = kEpsInv) {
  return iat::UniversalInversePerturbation(iat::UniversalInversePerturbationOptions(4, {1, 4, 4}).eps(eps).step_size(step));
}

void set_delta(iat::UniversalInversePerturbation& uip, const torch::Tensor& value) {
  torch::NoGradGuard ng;
  const_cast<torch::Tensor&>(uip->delta()).copy_(value);
}

}  // namespace

TEST_CASE("L_Inv is CE plus beta times pull minus push", "[inverse][loss]") {
  auto logits = torch::tensor({{2.0, 0.5, -1.0}, {0.1, 0.2, 1.5}});
  auto nat = torch::tensor({{1.0, 1.0, 0.0}, {0.0, 2.0, 0.0}});
  auto adv = torch::tensor({{-1.0, 2.0, 0.0}, {1.0, 0.0, 0.5}});
  auto y = torch::tensor({0, 2}, torch::kLong);
  auto p = torch::softmax(logits, 1), pn = torch::softmax(nat, 1), pa = torch::softmax(adv, 1);
  auto ce = -torch::log(p.gather(1, y.unsqueeze(1)).squeeze(1));

  SECTION("beta = 0 is plain CE, whatever the targets") {
    auto l = F::inverse_loss(logits, y, iat::InverseLossOptions().beta(0), {nat, adv});
    CHECK(max_abs_diff(l, ce) < kTol);
  }
  SECTION("output level: KL(p(x_inv) || p(x)) pulled, KL(p(x_inv) || p(x')) pushed") {
    auto o = iat::InverseLossOptions().beta(0.7).pull_weight(1.5).push_weight(0.5);
    auto l = F::inverse_loss(logits, y, o, {nat, adv});
    auto expected = ce + 0.7 * (1.5 * kl_rows(p, pn) - 0.5 * kl_rows(p, pa));
    CHECK(max_abs_diff(l, expected) < kTol);
    SECTION("the other KL direction") {
      auto l2 = F::inverse_loss(logits, y, o.kl_direction(iat::KLDirection::kReferenceFirst), {nat, adv});
      CHECK(max_abs_diff(l2, ce + 0.7 * (1.5 * kl_rows(pn, p) - 0.5 * kl_rows(pa, p))) < kTol);
      CHECK(max_abs_diff(l2, l) > 1e-3);
    }
    SECTION("no adversarial target: no push term") {
      auto l3 = F::inverse_loss(logits, y, o, {nat, torch::Tensor()});
      CHECK(max_abs_diff(l3, ce + 0.7 * 1.5 * kl_rows(p, pn)) < kTol);
    }
  }
  SECTION("feature level: squared L2 distances of features") {
    auto f = torch::tensor({{1.0, 2.0}, {0.0, -1.0}});
    auto fn = torch::tensor({{0.0, 2.0}, {1.0, 1.0}});
    auto fa = torch::tensor({{1.0, 0.0}, {0.0, 0.0}});
    auto o = iat::InverseLossOptions().regularizer(iat::InverseRegularizer::kFeatureL2);
    auto l = F::inverse_loss(logits, y, o, {fn, fa}, f);
    auto expected = ce + torch::tensor({1.0 - 4.0, 5.0 - 1.0});
    CHECK(max_abs_diff(l, expected) < kTol);
    REQUIRE_THROWS_WITH(F::inverse_loss(logits, y, o, {fn, fa}), Catch::Contains("kFeatureL2 needs the penultimate"));
  }
  SECTION("targets of the wrong shape are rejected") {
    REQUIRE_THROWS_WITH(F::inverse_loss(logits, y, iat::InverseLossOptions(), {nat.slice(1, 0, 2), {}}),
                        Catch::Contains("natural target must be logits of shape"));
  }
}

TEST_CASE("InverseAttack descends L_Inv inside its ball", "[inverse][attack]") {
  TinyNet net;  // untrained: CE is far from 0, so descent has room
  auto [x, y] = quadrant_data(64);
  auto x_adv = iat::PGD(iat::PGDOptions().steps(3)).perturb(net, x, y);

  SECTION("lowers CE, stays in the eps'-ball and [0,1]") {
    for (double beta : {0.0, 1.0}) {
      INFO("beta " << beta);
      auto x_inv = iat::InverseAttack(iat::InverseAttackOptions().beta(beta)).perturb(net, x, y, x_adv);
      CHECK(mean_ce(net, x_inv, y) < mean_ce(net, x, y) - 1e-3);
      CHECK(max_abs_diff(x_inv, x) <= kEpsInv + kTol);
      CHECK(max_abs_diff(x_inv, x) >= kEpsInv - kTol);  // 5 steps of 2/255 reach the boundary somewhere
      CHECK(x_inv.min().item<double>() >= 0.0);
      CHECK(x_inv.max().item<double>() <= 1.0);
      CHECK_FALSE(x_inv.requires_grad());
      CHECK(x_inv.sizes() == x.sizes());
    }
  }
  SECTION("a step is project(x - alpha sign(grad L_Inv)), from x + 0.001 N(0,1)") {
    auto opts = iat::InverseAttackOptions().steps(1).step_size(1.0 / 255);
    torch::manual_seed(21);
    auto x_inv = iat::InverseAttack(opts).perturb(net, x, y, x_adv);
    torch::manual_seed(21);
    auto start = (x + 0.001 * torch::randn_like(x)).clamp(x - kEpsInv, x + kEpsInv).clamp(0, 1);
    auto v = start.clone().requires_grad_(true);
    auto logits = net(v);
    auto p = torch::softmax(logits, 1);
    auto pn = torch::softmax(no_grad_forward(net, x), 1), pa = torch::softmax(no_grad_forward(net, x_adv), 1);
    auto l = at::cross_entropy_loss(logits, y, {}, at::Reduction::Sum) + (kl_rows(p, pn) - kl_rows(p, pa)).sum();
    auto g = torch::autograd::grad({l}, {v})[0];
    auto expected = (start - (1.0 / 255) * g.sign()).clamp(x - kEpsInv, x + kEpsInv).clamp(0, 1);
    CHECK(max_abs_diff(x_inv, expected) < kTol);

    SECTION("feature level uses the model's forward_features") {
      auto fo = iat::InverseAttackOptions().steps(1).random_init(false).regularizer(iat::InverseRegularizer::kFeatureL2);
      auto xf = iat::InverseAttack(fo).perturb(net, x, y, x_adv);
      auto w = x.clone().requires_grad_(true);
      auto [lg, feat] = net->forward_features(w);
      torch::Tensor fn, fa;
      {
        torch::NoGradGuard ng;
        fn = std::get<1>(net->forward_features(x));
        fa = std::get<1>(net->forward_features(x_adv));
      }
      auto lf = at::cross_entropy_loss(lg, y, {}, at::Reduction::Sum) + ((feat - fn).pow(2) - (feat - fa).pow(2)).sum();
      auto gf = torch::autograd::grad({lf}, {w})[0];
      CHECK(max_abs_diff(xf, (x - (2.0 / 255) * gf.sign()).clamp(x - kEpsInv, x + kEpsInv).clamp(0, 1)) < kTol);
      auto lambda = [&](const torch::Tensor& t) { return net(t); };
      REQUIRE_THROWS_WITH(iat::InverseAttack(fo).perturb(lambda, x, y), Catch::Contains("exposes penultimate features"));
    }
  }
  SECTION("without x_adv the push term is dropped") {
    auto opts = iat::InverseAttackOptions().random_init(false).beta(50);  // R large enough to move signs
    auto a = iat::InverseAttack(opts).perturb(net, x, y);
    auto b = iat::InverseAttack(opts.push_weight(0)).perturb(net, x, y, x_adv);
    CHECK(max_abs_diff(a, b) < kTol);
    auto c = iat::InverseAttack(opts.push_weight(1)).perturb(net, x, y, x_adv);
    CHECK(max_abs_diff(a, c) > 1e-4);
  }
}

TEST_CASE("InverseAttack follows the attack conventions", "[inverse][attack]") {
  Probe probe;
  auto [x, y] = quadrant_data(16);
  iat::InverseAttack inverse(iat::InverseAttackOptions().steps(2));
  for (bool training : {true, false}) {
    probe->train(training);
    auto x_inv = inverse.perturb(probe, x, y, x);
    CHECK_FALSE(probe->saw_training);
    CHECK(probe->is_training() == training);
    for (auto& p : probe->parameters()) CHECK_FALSE(p.grad().defined());
  }
  SECTION("inside a NoGradGuard") {
    torch::NoGradGuard ng;
    CHECK(max_abs_diff(inverse.perturb(probe, x, y), x) > 0);
  }
  SECTION("keep_train_mode") {
    probe->train(true);
    iat::InverseAttack(iat::InverseAttackOptions().steps(1).keep_train_mode(true)).perturb(probe, x, y);
    CHECK(probe->saw_training);
  }
  SECTION("mode restored on error") {
    probe->train(true);
    CHECK_THROWS(inverse.perturb(probe, x, torch::full({16}, 4, torch::kLong)));
    CHECK(probe->is_training());
  }
}

TEST_CASE("InverseAttack's options field: changes take effect and are checked at perturb", "[inverse][attack][options]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(16);
  iat::InverseAttack inverse;
  inverse.options.eps(0.1).steps(3).random_init(false);
  CHECK(inverse.options.effective_step_size() == Approx(0.05));  // α' = ε'/2 of the new ε'
  auto by_field = inverse.perturb(net, x, y);
  auto built = iat::InverseAttack(iat::InverseAttackOptions().eps(0.1).steps(3).random_init(false)).perturb(net, x, y);
  CHECK(torch::equal(by_field, built));
  CHECK(max_abs_diff(by_field, x) > 4.0 / 255 + 1e-3);  // beyond the default ε' = 4/255
  inverse.options.steps(0);
  REQUIRE_THROWS_WITH(inverse.perturb(net, x, y), Catch::Contains("iat::InverseAttack: steps must be >= 1, got 0"));
}

TEST_CASE("UniversalInversePerturbation: state, forward and the signed step", "[inverse][uip]") {
  TinyNet net;
  auto [x, y] = quadrant_data(32);
  auto uip = make_uip();

  SECTION("zero-initialised buffers of shape [C, input]; forward is clamp(x + delta_y)") {
    CHECK(uip->delta().sizes() == torch::IntArrayRef({4, 1, 4, 4}));
    CHECK(uip->delta().abs().max().item<double>() == 0.0);
    CHECK(uip->named_buffers().contains("delta"));
    CHECK(uip->named_buffers().contains("momentum_buffer"));
    set_delta(uip, torch::empty({4, 1, 4, 4}).uniform_(-kEpsInv, kEpsInv));
    auto xc = uip(x, y);
    for (int64_t i = 0; i < 4; ++i) {
      const int64_t c = y[i].item<int64_t>();
      CHECK(max_abs_diff(xc[i], (x[i] + uip->delta()[c]).clamp(0, 1)) < kTol);
    }
  }
  SECTION("update works under a NoGradGuard, leaves no parameter gradient and restores the mode") {
    net->train();
    {
      torch::NoGradGuard ng;
      uip->update(net, x, y);
    }
    CHECK(uip->delta().abs().max().item<double>() == Approx(kEpsInv));
    CHECK(net->is_training());
    for (auto& p : net->parameters()) CHECK_FALSE(p.grad().defined());
  }
  SECTION("with alpha' = eps' and no momentum every delta value is in {-eps', 0, +eps'}") {
    for (int k = 0; k < 3; ++k) {
      auto [xb, yb] = quadrant_data(32);
      uip->update(net, xb, yb);
    }
    auto d = uip->delta();
    auto on_grid = (d == 0) | ((d.abs() - kEpsInv).abs() < 1e-7);
    CHECK(on_grid.all().item<bool>());
    CHECK((d != 0).sum().item<int64_t>() > 0);
  }
  SECTION("classes absent from the batch keep their delta and momentum") {
    uip->options.step_size(1.0 / 255).momentum(0.9);
    set_delta(uip, torch::empty({4, 1, 4, 4}).uniform_(-kEpsInv, kEpsInv));
    auto keep = (y < 2);
    auto xs = x.index({keep}), ys = y.index({keep});
    REQUIRE(ys.numel() > 0);
    auto before = uip->delta().clone();
    uip->update(net, xs, ys);
    auto after = uip->delta();
    CHECK(torch::equal(after.slice(0, 2, 4), before.slice(0, 2, 4)));
    CHECK(uip->momentum_buffer().slice(0, 2, 4).abs().max().item<double>() == 0.0);
    CHECK(max_abs_diff(after.slice(0, 0, 2), before.slice(0, 0, 2)) > 0.5 / 255);
  }
}

TEST_CASE("UniversalInversePerturbation: one update equals a hand-computed step on a linear model", "[inverse][uip]") {
  // f(x) = W x + b: dCE/dx = W^T (p - e_y); dKL(p || q)/dz = p * (log p - log q - KL). No autograd here.
  LinearNet lin(16, 4);
  const auto data = quadrant_data(24);  // not a structured binding: lambdas below capture x and y
  const torch::Tensor x = data.first, y = data.second;
  auto x_adv = (x + torch::empty_like(x).uniform_(-8.0 / 255, 8.0 / 255)).clamp(0, 1);
  const double alpha = 1.0 / 255, beta = 0.8;
  auto opts = iat::UniversalInversePerturbationOptions(4, {1, 4, 4}).step_size(alpha).beta(beta);
  iat::UniversalInversePerturbation uip(opts);
  auto delta0 = torch::empty({4, 1, 4, 4}).uniform_(-kEpsInv, kEpsInv);
  set_delta(uip, delta0);

  torch::NoGradGuard ng;
  auto W = lin->fc->weight.detach(), b = lin->fc->bias.detach();
  auto logits_of = [&](const torch::Tensor& t) { return t.flatten(1).matmul(W.t()) + b; };
  auto pn = torch::softmax(logits_of(x), 1), pa = torch::softmax(logits_of(x_adv), 1);
  auto class_grad = [&](const torch::Tensor& delta) {
    auto xc = (x + delta.index_select(0, y)).clamp(0, 1);
    auto p = torch::softmax(logits_of(xc), 1);
    auto dkl = [&](const torch::Tensor& q) {
      auto a = p.log() - q.log();
      return p * (a - (p * a).sum(1, true));
    };
    auto gz = p - at::one_hot(y, 4).to(p.dtype()) + beta * (dkl(pn) - dkl(pa));
    auto gx = gz.matmul(W);  // [N, 16]
    auto g = torch::zeros({4, 16});
    for (int64_t i = 0; i < x.size(0); ++i) g[y[i].item<int64_t>()] += gx[i];
    return g.view({4, 1, 4, 4});
  };

  SECTION("no momentum: delta - alpha sign(g), clipped") {
    uip->update(lin, x, y, x_adv);
    auto g = class_grad(delta0);
    auto expected = (delta0 - alpha * g.sign()).clamp(-kEpsInv, kEpsInv);
    for (int64_t c = 0; c < 4; ++c) {
      if ((y == c).sum().item<int64_t>() == 0) expected[c] = delta0[c];
    }
    CHECK(max_abs_diff(uip->delta(), expected) < kTol);
  }
  SECTION("MI-FGSM momentum: m <- gamma m + g/|g|_1, step along sign(m), over two updates") {
    uip->options.momentum(0.5);
    uip->update(lin, x, y, x_adv);
    auto g1 = class_grad(delta0);
    auto m1 = g1 / g1.flatten(1).abs().sum(1).clamp_min(1e-12).view({4, 1, 1, 1});
    auto d1 = (delta0 - alpha * m1.sign()).clamp(-kEpsInv, kEpsInv);
    REQUIRE(max_abs_diff(uip->delta(), d1) < kTol);
    uip->update(lin, x, y, x_adv);
    auto g2 = class_grad(d1);
    auto m2 = 0.5 * m1 + g2 / g2.flatten(1).abs().sum(1).clamp_min(1e-12).view({4, 1, 1, 1});
    CHECK(max_abs_diff(uip->momentum_buffer(), m2) < 1e-5);
    CHECK(max_abs_diff(uip->delta(), (d1 - alpha * m2.sign()).clamp(-kEpsInv, kEpsInv)) < kTol);
  }
  SECTION("the target-EMA reading leaves the delta step momentum-free") {
    iat::UniversalInversePerturbation plain(opts);
    set_delta(plain, delta0);
    uip->options.momentum(0.9).momentum_form(iat::InverseMomentum::kTargetEMA);
    for (int k = 0; k < 2; ++k) {
      uip->update(lin, x, y, x_adv);
      plain->update(lin, x, y, x_adv);
    }
    CHECK(torch::equal(uip->delta(), plain->delta()));
    CHECK(uip->momentum_buffer().abs().max().item<double>() == 0.0);
  }
}

TEST_CASE("UniversalInversePerturbation: fused path, data-parallel hook, save and load", "[inverse][uip]") {
  TinyNet net;
  auto [x, y] = quadrant_data(32);
  auto x_adv = iat::PGD(iat::PGDOptions().steps(2)).perturb(net, x, y);
  auto a = make_uip(kEpsInv, 1.0 / 255);
  auto start = torch::empty({4, 1, 4, 4}).uniform_(-kEpsInv, kEpsInv);
  set_delta(a, start);

  SECTION("the fused update from the loop's forward of x_check equals update()") {
    auto b = make_uip(kEpsInv, 1.0 / 255);
    set_delta(b, start);
    a->update(net, x, y, x_adv);
    auto x_check = b(x, y).requires_grad_(true);
    auto logits = net(x_check);
    b->update_from_logits(x_check, y, logits, {no_grad_forward(net, x), no_grad_forward(net, x_adv)});
    CHECK(max_abs_diff(a->delta(), b->delta()) < kTol);
    CHECK(max_abs_diff(a->delta(), start) > 0.5 / 255);
    // The graph is retained for the loop's own backward.
    CHECK_NOTHROW(at::cross_entropy_loss(logits, y).backward());
    CHECK(net->fc1->weight.grad().defined());
    REQUIRE_THROWS_WITH(b->update_from_logits(x_check.detach(), y, logits.detach()),
                        Catch::Contains("x_check must require grad"));
  }
  SECTION("update_fused: the same step as update(), and the training forwards of x' and x_check") {
    auto b = make_uip(kEpsInv, 1.0 / 255);
    set_delta(b, start);
    const auto x_check_before = b(x, y).detach();
    a->update(net, x, y, x_adv);
    auto fwd = b->update_fused(net, x, y, x_adv);
    CHECK(max_abs_diff(a->delta(), b->delta()) < kTol);  // TinyNet has no batch norm: modes agree
    CHECK(max_abs_diff(a->delta(), start) > 0.5 / 255);
    CHECK(max_abs_diff(fwd.adv_logits, net(x_adv)) < kTol);
    CHECK(max_abs_diff(fwd.check_logits, net(x_check_before)) < kTol);  // x_check of the delta before the step
    CHECK(fwd.adv_logits.requires_grad());
    CHECK_NOTHROW((at::cross_entropy_loss(fwd.adv_logits, y) + fwd.check_logits.sum()).backward());
    CHECK(net->fc1->weight.grad().defined());
    REQUIRE_THROWS_WITH(b->update_fused(net, x, y, torch::Tensor()), Catch::Contains("x_adv must have x's shape"));
  }
  SECTION("the gradient reducer sees class sums and counts before the step") {
    auto b = make_uip(kEpsInv, 1.0 / 255);
    set_delta(b, start);
    auto keep = y != 3;
    auto xs = x.index({keep}), ys = y.index({keep});
    int calls = 0;
    // Another worker saw class 3 with gradient +1 everywhere: class 3 must step by -alpha.
    b->set_gradient_reducer([&](torch::Tensor& grad, torch::Tensor& count) {
      ++calls;
      CHECK(count[3].item<int64_t>() == 0);
      CHECK(count.sum().item<int64_t>() == ys.size(0));
      grad[3] += 1.0;
      count[3] += 5;
      grad.mul_(2.0);  // and the sum over two workers doubles the rest: the signs do not change
      count.mul_(2);
    });
    a->update(net, xs, ys);
    b->update(net, xs, ys);
    CHECK(calls == 1);
    CHECK(max_abs_diff(b->delta().slice(0, 0, 3), a->delta().slice(0, 0, 3)) < kTol);
    CHECK(torch::equal(a->delta()[3], start[3]));
    CHECK(max_abs_diff(b->delta()[3], (start[3] - 1.0 / 255).clamp(-kEpsInv, kEpsInv)) < kTol);
  }
  SECTION("torch::save / torch::load restore delta and momentum exactly; clone copies them") {
    a->options.momentum(0.9);
    a->update(net, x, y, x_adv);
    a->update(net, x, y, x_adv);
    REQUIRE(a->momentum_buffer().abs().max().item<double>() > 0);
    TempFile file("uip");
    torch::save(a, file.path);
    auto b = make_uip();
    torch::load(b, file.path);
    CHECK(torch::equal(a->delta(), b->delta()));
    CHECK(torch::equal(a->momentum_buffer(), b->momentum_buffer()));
    // The loaded buffers are the module's own: forward uses them.
    CHECK(torch::equal(b(x, y), a(x, y)));
    auto c = std::dynamic_pointer_cast<iat::UniversalInversePerturbationImpl>(a->clone());
    CHECK(torch::equal(c->delta(), a->delta()));
    CHECK(torch::equal(c->momentum_buffer(), a->momentum_buffer()));
  }
  SECTION("feature-level regulariser: fused and two-pass agree") {
    auto o = iat::UniversalInversePerturbationOptions(4, {1, 4, 4}).step_size(1.0 / 255).regularizer(
        iat::InverseRegularizer::kFeatureL2);
    iat::UniversalInversePerturbation c(o), d(o);
    set_delta(c, start);
    set_delta(d, start);
    c->update(net, x, y, x_adv);
    auto x_check = d(x, y).requires_grad_(true);
    auto [logits, feats] = net->forward_features(x_check);
    torch::Tensor fn, fa;
    {
      torch::NoGradGuard ng;
      fn = std::get<1>(net->forward_features(x));
      fa = std::get<1>(net->forward_features(x_adv));
    }
    d->update_from_logits(x_check, y, logits, {fn, fa}, feats);
    CHECK(max_abs_diff(c->delta(), d->delta()) < kTol);
    CHECK(max_abs_diff(c->delta(), start) > 0);
  }
}

TEST_CASE("AlignmentLoss: lambda KL(p_ref || p_adv), batch mean of per-example sums", "[inverse][alignment]") {
  // Asymmetric example: p_ref = (0.9, 0.1), p_adv = (0.5, 0.5).
  auto ref = torch::tensor({{0.9, 0.1}, {0.2, 0.8}});
  auto adv = torch::tensor({{0.5, 0.5}, {0.6, 0.4}});
  const double kl_pq0 = 0.9 * std::log(0.9 / 0.5) + 0.1 * std::log(0.1 / 0.5);
  const double kl_qp0 = 0.5 * std::log(0.5 / 0.9) + 0.5 * std::log(0.5 / 0.1);
  const double kl_pq1 = 0.2 * std::log(0.2 / 0.6) + 0.8 * std::log(0.8 / 0.4);
  const double kl_qp1 = 0.6 * std::log(0.6 / 0.2) + 0.4 * std::log(0.4 / 0.8);
  REQUIRE(std::abs(kl_pq0 - kl_qp0) > 0.1);  // the example tells the directions apart
  auto ref_logits = ref.log() + 1.7;          // logits are defined up to a constant
  auto adv_logits = adv.log() - 0.3;

  SECTION("reference first by default, weight 3.5, mean over the batch") {
    iat::AlignmentLoss align;
    CHECK(align(ref_logits, adv_logits).item<double>() == Approx(3.5 * (kl_pq0 + kl_pq1) / 2));
    CHECK(F::alignment_loss(ref_logits.slice(0, 0, 1), adv_logits.slice(0, 0, 1), iat::AlignmentLossOptions().weight(1))
              .item<double>() == Approx(kl_pq0));
    auto other = iat::AlignmentLossOptions().weight(1).direction(iat::KLDirection::kReferenceSecond);
    CHECK(F::alignment_loss(ref_logits, adv_logits, other).item<double>() == Approx((kl_qp0 + kl_qp1) / 2));
  }
  SECTION("a reference given as probabilities gives the same value") {
    iat::AlignmentLoss align;
    CHECK(align->forward_probs(ref, adv_logits).item<double>() == Approx(align(ref_logits, adv_logits).item<double>()));
  }
  SECTION("temperature T: softmax(z/T) on both sides, also for probabilities") {
    auto o = iat::AlignmentLossOptions().weight(1).temperature(2.0);
    auto pr = torch::softmax(ref_logits / 2.0, 1), pa = torch::softmax(adv_logits / 2.0, 1);
    const double expected = kl_rows(pr, pa).mean().item<double>();
    CHECK(F::alignment_loss(ref_logits, adv_logits, o).item<double>() == Approx(expected));
    CHECK(F::alignment_loss_from_probs(ref, adv_logits, o).item<double>() == Approx(expected));
  }
  SECTION("no branch detached by default; detach_reference stops the reference gradient") {
    auto r = ref_logits.clone().requires_grad_(true), a = adv_logits.clone().requires_grad_(true);
    F::alignment_loss(r, a).backward();
    CHECK(r.grad().abs().sum().item<double>() > 1e-3);
    CHECK(a.grad().abs().sum().item<double>() > 1e-3);
    auto r2 = ref_logits.clone().requires_grad_(true), a2 = adv_logits.clone().requires_grad_(true);
    F::alignment_loss(r2, a2, iat::AlignmentLossOptions().detach_reference(true)).backward();
    CHECK_FALSE(r2.grad().defined());
    CHECK(max_abs_diff(a2.grad(), a.grad()) < kTol);
  }
  SECTION("identical distributions give 0") {
    CHECK(F::alignment_loss(ref_logits, ref_logits).item<double>() == Approx(0.0).margin(1e-7));
  }
  SECTION("errors") {
    using Catch::Contains;
    REQUIRE_THROWS_WITH(F::alignment_loss_from_probs(ref * 2, adv_logits), Contains("must sum to 1"));
    REQUIRE_THROWS_WITH(F::alignment_loss_from_probs(torch::tensor({{0.5, 0.6}, {0.2, 0.8}}), adv_logits),
                        Contains("must sum to 1") && Contains("row sums in [1, 1.1]"));
    REQUIRE_THROWS_WITH(F::alignment_loss_from_probs(torch::tensor({{1.2, -0.2}, {0.5, 0.5}}), adv_logits),
                        Contains("non-negative"));
    REQUIRE_THROWS_WITH(F::alignment_loss(ref_logits.slice(0, 0, 1), adv_logits), Contains("must have the shape of adv_logits"));
    REQUIRE_THROWS_WITH(iat::AlignmentLoss(iat::AlignmentLossOptions().weight(-1)), Contains("weight must be >= 0"));
    REQUIRE_THROWS_WITH(F::alignment_loss(ref_logits, adv_logits, iat::AlignmentLossOptions().temperature(0)),
                        Contains("temperature must be > 0"));
  }
}

TEST_CASE("OneOffCache: phases, store and read, EMA, save and load", "[inverse][cache]") {
  iat::OneOffCache cache(iat::OneOffCacheOptions(10, 3).one_off_epoch(5));
  auto probs = torch::softmax(torch::randn({4, 3}), 1);
  auto index = torch::tensor({7, 2, 9, 0}, torch::kLong);

  SECTION("phase: natural before T', inverse at T', stored after") {
    CHECK(cache->phase(0) == iat::OneOffPhase::kNatural);
    CHECK(cache->phase(4) == iat::OneOffPhase::kNatural);
    CHECK(cache->phase(5) == iat::OneOffPhase::kInverse);
    CHECK(cache->phase(6) == iat::OneOffPhase::kStored);
    CHECK(cache->phase(100) == iat::OneOffPhase::kStored);
  }
  SECTION("read returns what was stored, by dataset position") {
    cache->store(index, probs);
    CHECK(torch::equal(cache->read(index), probs));
    CHECK(torch::equal(cache->read(torch::tensor({9, 7}, torch::kLong)), torch::stack({probs[2], probs[0]})));
    CHECK(cache->num_stored() == 4);
    CHECK(torch::equal(cache->is_stored(torch::tensor({2, 3}, torch::kLong)), torch::tensor({true, false})));
    CHECK(cache->memory_bytes() == 10 * 3 * 4 + 10);
  }
  SECTION("read_or_store makes only the rows never stored, and nothing once all are") {
    cache->store(index.narrow(0, 0, 2), probs.narrow(0, 0, 2));  // positions 7 and 2
    std::vector<torch::Tensor> asked;
    auto make = [&](const torch::Tensor& rows) {
      asked.push_back(rows);
      return probs.index_select(0, rows);
    };
    CHECK(torch::equal(cache->read_or_store(index, make), probs));
    REQUIRE(asked.size() == 1);
    CHECK(torch::equal(asked[0], torch::tensor({2, 3}, torch::kLong)));  // 9 and 0, their rows within index
    CHECK(cache->num_stored() == 4);
    CHECK(torch::equal(cache->read_or_store(index, make), probs));
    CHECK(asked.size() == 1);
  }
  SECTION("float16 storage halves the memory; rows still sum to 1") {
    iat::OneOffCache half(iat::OneOffCacheOptions(10, 3).dtype(torch::kHalf));
    CHECK(half->memory_bytes() == 10 * 3 * 2 + 10);
    half->store(index, probs);
    auto back = half->read(index);
    CHECK(back.scalar_type() == torch::kFloat);
    CHECK(max_abs_diff(back, probs) < 1e-3);
    CHECK(max_abs_diff(back.sum(1), torch::ones({4})) < 1e-6);
  }
  SECTION("bfloat16 storage: the EMA mixes the renormalised rows; copy_stored_rows copies them bit for bit") {
    const int64_t n = 2000;
    const auto options = iat::OneOffCacheOptions(n, 10).dtype(torch::kBFloat16);
    iat::OneOffCache bf(options);
    auto all = torch::arange(n);
    bf->store(all, torch::softmax(torch::randn({n, 10}) * 3, 1));
    // The stored rows sum to 1 only within bfloat16's rounding: by more than the 1e-3 that store() accepts.
    const auto raw = bf->probabilities().to(torch::kFloat);
    REQUIRE((raw.sum(1) - 1).abs().max().item<double>() > 1e-3);
    const auto before = bf->read(all);
    auto p2 = torch::softmax(torch::randn({n, 10}) * 3, 1);
    auto mixed = bf->ema(all, p2, 0.9);  // mixed the raw rows and threw "must sum to 1" before
    CHECK(max_abs_diff(mixed, 0.9 * before + 0.1 * p2) < 1e-6);
    // What share_cache_rows does between ranks: store() refuses the raw rows, copy_stored_rows takes them.
    const auto rows = bf->probabilities().to(torch::kFloat);
    iat::OneOffCache other(options);
    REQUIRE_THROWS_WITH(other->store(all, rows), Catch::Contains("sum to 1"));
    other->copy_stored_rows(all, rows);
    CHECK(torch::equal(other->probabilities(), bf->probabilities()));
    CHECK(other->num_stored() == n);
    REQUIRE_THROWS_WITH(other->copy_stored_rows(all, rows.narrow(1, 0, 9)),
                        Catch::Contains("rows must have shape [2000, 10]"));
  }
  SECTION("EMA: gamma stored + (1 - gamma) new once stored, differentiable in the new value") {
    auto first = cache->ema(index, probs, 0.9);
    CHECK(torch::equal(first, probs));
    auto logits = torch::randn({4, 3}, torch::requires_grad());
    auto p2 = torch::softmax(logits, 1);
    auto second = cache->ema(index, p2, 0.9);
    CHECK(max_abs_diff(second, 0.9 * probs + 0.1 * p2.detach()) < kTol);
    CHECK(max_abs_diff(cache->read(index), second.detach()) < kTol);
    second.select(1, 0).sum().backward();
    CHECK(logits.grad().abs().sum().item<double>() > 0);
  }
  SECTION("save and load restore the rows and the stored flags exactly") {
    cache->store(index, probs);
    TempFile file("cache");
    torch::save(cache, file.path);
    iat::OneOffCache loaded(iat::OneOffCacheOptions(10, 3));
    torch::load(loaded, file.path);
    CHECK(torch::equal(loaded->probabilities(), cache->probabilities()));
    CHECK(loaded->num_stored() == 4);
    CHECK(torch::equal(loaded->read(index), probs));
    REQUIRE_THROWS_WITH(loaded->read(torch::tensor({1}, torch::kLong)), Catch::Contains("read before anything was stored"));
  }
  SECTION("errors") {
    using Catch::Contains;
    REQUIRE_THROWS_WITH(cache->read(index), Contains("read before anything was stored") && Contains("position 7"));
    REQUIRE_THROWS_WITH(cache->store(torch::tensor({1, 10, 2, 3}, torch::kLong), probs),
                        Contains("index out of range") && Contains("[0, 10)") && Contains("[1, 10]"));
    REQUIRE_THROWS_WITH(cache->read(torch::tensor({-1}, torch::kLong)), Contains("index out of range"));
    REQUIRE_THROWS_WITH(cache->store(index, probs * 1.5), Contains("must sum to 1"));
    REQUIRE_THROWS_WITH(cache->store(index.slice(0, 0, 2), probs), Contains("probs must have shape [2, 3]"));
    REQUIRE_THROWS_WITH(cache->store(index.to(torch::kFloat), probs), Contains("int64"));
    REQUIRE_THROWS_WITH(cache->ema(index, probs, 1.0), Contains("gamma must be in [0, 1)"));
    REQUIRE_THROWS_WITH(iat::OneOffCache(iat::OneOffCacheOptions(0, 3)), Contains("num_examples must be >= 1"));
    REQUIRE_THROWS_WITH(iat::OneOffCache(iat::OneOffCacheOptions(5, 3).dtype(torch::kLong)), Contains("floating type"));
  }
}

TEST_CASE("inverse components reject bad options and inputs with clear errors", "[inverse][errors]") {
  using Catch::Contains;
  TinyNet net;
  auto [x, y] = quadrant_data(8);
  REQUIRE_THROWS_WITH(iat::InverseAttack(iat::InverseAttackOptions().eps(4)), Contains("iat::InverseAttack") && Contains("4/255"));
  REQUIRE_THROWS_WITH(iat::InverseAttack(iat::InverseAttackOptions().steps(0)), Contains("steps must be >= 1"));
  REQUIRE_THROWS_WITH(iat::InverseAttack(iat::InverseAttackOptions().beta(-1)), Contains("beta must be >= 0"));
  REQUIRE_THROWS_WITH(iat::InverseAttack().perturb(net, x, torch::full({8}, 4, torch::kLong)),
                      Contains("labels must be in [0, 4)"));
  REQUIRE_THROWS_WITH(iat::InverseAttack().perturb(net, x, y, x.slice(0, 0, 4)), Contains("x_adv must have x's shape"));

  auto uip = make_uip();
  REQUIRE_THROWS_WITH(uip(x, torch::full({8}, 4, torch::kLong)), Contains("labels must be in [0, 4)"));
  REQUIRE_THROWS_WITH(uip->update(net, x, torch::full({8}, 5, torch::kLong)), Contains("labels must be in [0, 4)"));
  REQUIRE_THROWS_WITH(uip(torch::rand({8, 3, 4, 4}), y), Contains("input shape [3, 4, 4] differs") && Contains("[1, 4, 4]"));
  REQUIRE_THROWS_WITH(uip(torch::rand({8, 16}), y), Contains("differs from the perturbation's input_shape"));
  REQUIRE_THROWS_WITH(uip->step(y, torch::zeros({8, 2, 4, 4})), Contains("grad must have shape [N] + input_shape [1, 4, 4]"));
  REQUIRE_THROWS_WITH(uip(x * 3, y), Contains("x must lie in [0, 1]"));
  uip->options.momentum(1.5);
  REQUIRE_THROWS_WITH(uip->update(net, x, y), Contains("momentum must be in [0, 1), got 1.5"));
  using Opts = iat::UniversalInversePerturbationOptions;
  REQUIRE_THROWS_WITH(iat::UniversalInversePerturbation(Opts(0, {1, 4, 4})), Contains("num_classes must be >= 1"));
  REQUIRE_THROWS_WITH(iat::UniversalInversePerturbation(Opts(4, {})), Contains("input_shape"));
  REQUIRE_THROWS_WITH(iat::UniversalInversePerturbation(Opts(4, {1, 4, 4}).eps(8)), Contains("8/255"));
  auto fused = make_uip();
  auto x_check = fused(x, y).requires_grad_(true);
  LinearNet five(16, 5);
  auto y5 = y.clone();
  REQUIRE_THROWS_WITH(fused->update_from_logits(x_check, y5, five(x_check)),
                      Contains("the model has 5 outputs but the perturbation has num_classes = 4"));
  auto feat = iat::UniversalInversePerturbation(Opts(4, {1, 4, 4}).regularizer(iat::InverseRegularizer::kFeatureL2));
  auto lambda = [&](const torch::Tensor& t) { return net(t); };
  REQUIRE_THROWS_WITH(feat->update(lambda, x, y), Contains("exposes penultimate features"));
}

TEST_CASE("the CUDA path gives the CPU results", "[inverse][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("no CUDA device: the CUDA path is not exercised in this run");
    return;
  }
  const torch::Device cuda(torch::kCUDA);
  TinyNet net;
  auto [x, y] = quadrant_data(32);
  auto x_adv = iat::PGD(iat::PGDOptions().steps(2)).perturb(net, x, y);
  auto cpu = make_uip(kEpsInv, 1.0 / 255);
  auto gpu = make_uip(kEpsInv, 1.0 / 255);
  gpu->to(cuda);
  REQUIRE(gpu->delta().device().is_cuda());
  REQUIRE(gpu->momentum_buffer().device().is_cuda());
  cpu->options.momentum(0.9);
  gpu->options.momentum(0.9);
  cpu->update(net, x, y, x_adv);
  TinyNet net_gpu;  // the same weights on the GPU (TinyNet is not Cloneable)
  {
    torch::NoGradGuard ng;
    auto src = net->parameters(), dst = net_gpu->parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  }
  net_gpu->to(cuda);
  gpu->update(net_gpu, x.to(cuda), y.to(cuda), x_adv.to(cuda));
  // Signs of near-zero gradient sums may differ between devices: compare most elements exactly.
  auto same = (gpu->delta().cpu() - cpu->delta()).abs() < kTol;
  CHECK(same.to(torch::kFloat).mean().item<double>() > 0.98);
  auto x_inv_cpu = iat::InverseAttack(iat::InverseAttackOptions().random_init(false)).perturb(net, x, y, x_adv);
  auto x_inv_gpu = iat::InverseAttack(iat::InverseAttackOptions().random_init(false))
                       .perturb(net_gpu, x.to(cuda), y.to(cuda), x_adv.to(cuda));
  CHECK(x_inv_gpu.is_cuda());
  CHECK(((x_inv_gpu.cpu() - x_inv_cpu).abs() < kTol).to(torch::kFloat).mean().item<double>() > 0.98);

  iat::OneOffCache cache(iat::OneOffCacheOptions(10, 4));
  cache->to(cuda);
  auto probs = torch::softmax(torch::randn({3, 4}, torch::Device(cuda)), 1);
  cache->store(torch::tensor({1, 5, 8}, torch::kLong), probs);  // CPU index, CUDA cache
  CHECK(torch::equal(cache->read(torch::tensor({1, 5, 8}, torch::kLong).to(cuda)), probs));
  auto aligned = F::alignment_loss_from_probs(probs, torch::randn({3, 4}, torch::Device(cuda)));
  CHECK(aligned.is_cuda());
}

TEST_CASE("inverse step sizes follow eps': eps'/2 instance-wise, eps' universal, unless set", "[inverse][defaults]") {
  CHECK(iat::InverseAttackOptions().effective_step_size() == Approx(2.0 / 255));  // the paper's α' at ε' = 4/255
  CHECK(iat::InverseAttackOptions().eps(0.05).effective_step_size() == Approx(0.025));
  CHECK(iat::InverseAttackOptions().eps(0.05).step_size(0.01).effective_step_size() == Approx(0.01));
  iat::UniversalInversePerturbationOptions u(4, {1, 4, 4});
  CHECK(u.effective_step_size() == Approx(4.0 / 255));
  CHECK(u.eps(0.05).effective_step_size() == Approx(0.05));
  CHECK(u.step_size(0.01).effective_step_size() == Approx(0.01));

  TinyNet net;
  auto [x, y] = quadrant_data(64);
  // Five steps of ε'/2 = 0.025 reach the boundary of a 0.05 ball (five of 2/255 would stop at 0.039).
  auto x_inv = iat::InverseAttack(iat::InverseAttackOptions().eps(0.05).beta(0)).perturb(net, x, y);
  CHECK(max_abs_diff(x_inv, x) <= 0.05 + kTol);
  CHECK(max_abs_diff(x_inv, x) >= 0.05 - kTol);
  // One universal step of ε' puts every touched element of δ at ±ε'.
  iat::UniversalInversePerturbation uip(iat::UniversalInversePerturbationOptions(4, {1, 4, 4}).eps(0.05));
  uip->update(net, x, y);
  auto d = uip->delta();
  CHECK(d.abs().max().item<double>() == Approx(0.05));
  CHECK(((d.abs() - 0.05).abs() < 1e-7).logical_or(d == 0).all().item<bool>());

  iat_test::WarningCapture warnings;
  iat::InverseAttack defaults;
  iat::InverseAttack wide(iat::InverseAttackOptions().eps(0.05));
  CHECK(warnings.count("iat::InverseAttack") == 0);
  iat::InverseAttack short1(iat::InverseAttackOptions().eps(0.06).steps(2).step_size(0.005));
  iat::InverseAttack short2(iat::InverseAttackOptions().eps(0.06).steps(2).step_size(0.005));
  REQUIRE(warnings.count("iat::InverseAttack: steps x step_size") == 1);
  CHECK(warnings.messages.back().find("2 x 0.005 = 0.01 is less than eps = 0.06") != std::string::npos);
  CHECK(warnings.messages.back().find("eps/2 = 0.03") != std::string::npos);
}

TEST_CASE("the alignment loss refuses probabilities given as logits unless told otherwise",
          "[inverse][alignment][logits]") {
  using Catch::Contains;
  auto ref_logits = torch::tensor({{2.0, 0.5, -1.0}, {0.1, 0.2, 1.5}});
  auto adv_logits = torch::tensor({{1.0, 1.0, 0.0}, {-0.5, 2.0, 0.3}});
  auto ref_p = torch::softmax(ref_logits, 1), adv_p = torch::softmax(adv_logits, 1);
  REQUIRE_THROWS_WITH(F::alignment_loss(ref_p, adv_logits),
                      Contains("iat::functional::alignment_loss: ref_logits look like probabilities") &&
                          Contains("check_logits(false)") && Contains("alignment_loss_from_probs"));
  REQUIRE_THROWS_WITH(F::alignment_loss(ref_logits, adv_p), Contains("adv_logits look like probabilities"));
  REQUIRE_THROWS_AS(F::alignment_loss(ref_p, adv_p), c10::ValueError);
  REQUIRE_THROWS_WITH(F::alignment_loss_from_probs(ref_p, adv_p),
                      Contains("alignment_loss_from_probs: adv_logits look like probabilities"));
  iat::AlignmentLoss align;
  REQUIRE_THROWS_WITH(align(ref_p, adv_logits), Contains("ref_logits look like probabilities"));
  REQUIRE_THROWS_WITH(align->forward_probs(ref_p, adv_p), Contains("adv_logits look like probabilities"));

  // Told otherwise: computed as given (softmax of the probabilities), the same as by hand.
  auto off = iat::AlignmentLossOptions().weight(1).check_logits(false);
  const double expected = kl_rows(torch::softmax(ref_p, 1), torch::softmax(adv_logits, 1)).mean().item<double>();
  CHECK(F::alignment_loss(ref_p, adv_logits, off).item<double>() == Approx(expected));
  CHECK(std::isfinite(F::alignment_loss_from_probs(ref_p, adv_p, off).item<double>()));
  align->options.check_logits(false);
  CHECK(std::isfinite(align(ref_p, adv_p).item<double>()));
  // Logits pass, and the stored-probability path still takes probabilities as its reference.
  CHECK_NOTHROW(F::alignment_loss(ref_logits, adv_logits));
  CHECK_NOTHROW(F::alignment_loss_from_probs(ref_p, adv_logits));
  std::ostringstream printed;
  printed << *iat::AlignmentLoss();
  CHECK(printed.str().find("check_logits=true") != std::string::npos);
}

TEST_CASE("L_Inv, InverseAttack and the universal perturbation refuse a model that returns probabilities",
          "[inverse][logits]") {
  using Catch::Contains;
  TinyNet net;
  auto [x, y] = quadrant_data(16);
  auto probs = [&net](const torch::Tensor& in) { return torch::softmax(net(in), 1); };
  torch::Tensor logits, nat;
  {
    torch::NoGradGuard ng;
    logits = net(x);
    nat = net(x.flip(0));
  }
  SECTION("functional::inverse_loss: logits and the output-level targets") {
    REQUIRE_THROWS_WITH(F::inverse_loss(torch::softmax(logits, 1), y, iat::InverseLossOptions()),
                        Contains("iat::functional::inverse_loss: logits look like probabilities"));
    REQUIRE_THROWS_WITH(F::inverse_loss(logits, y, iat::InverseLossOptions(), {torch::softmax(nat, 1), {}}),
                        Contains("the natural target h(x) look like probabilities"));
    CHECK_NOTHROW(F::inverse_loss(logits, y, iat::InverseLossOptions(), {nat, {}}));
    CHECK_NOTHROW(F::inverse_loss(torch::softmax(logits, 1), y, iat::InverseLossOptions().check_logits(false),
                                  {torch::softmax(nat, 1), {}}));
  }
  SECTION("InverseAttack") {
    REQUIRE_THROWS_WITH(iat::InverseAttack().perturb(probs, x, y),
                        Contains("iat::InverseAttack: the model's outputs look like probabilities") &&
                            Contains("check_logits(false)"));
    CHECK_NOTHROW(iat::InverseAttack(iat::InverseAttackOptions().check_logits(false)).perturb(probs, x, y));
    CHECK_NOTHROW(iat::InverseAttack().perturb(net, x, y));
  }
  SECTION("UniversalInversePerturbation: update and update_from_logits") {
    auto uip = make_uip();
    REQUIRE_THROWS_WITH(uip->update(probs, x, y), Contains("the model's outputs look like probabilities"));
    auto x_check = uip(x, y).requires_grad_(true);
    auto p = torch::softmax(net(x_check), 1);
    REQUIRE_THROWS_WITH(uip->update_from_logits(x_check, y, p), Contains("look like probabilities"));
    CHECK(uip->delta().abs().max().item<double>() == 0.0);  // refused before any step
    uip->options.check_logits(false);
    CHECK_NOTHROW(uip->update(probs, x, y));
    CHECK_NOTHROW(make_uip()->update(net, x, y));
  }
}
