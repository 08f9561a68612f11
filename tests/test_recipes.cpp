// Tests of the loss recipes of iat::train (docs/method.md §3–§7): each is checked against the objective written
// out by hand from the components' outputs.
#include "support.hpp"

#include <iat/attacks/fgsm.hpp>
#include <iat/attacks/nfgsm.hpp>
#include <iat/attacks/pgd.hpp>
#include <iat/train/awp.hpp>
#include <iat/train/recipes.hpp>

#include <cmath>

using namespace iat_test;
namespace F = iat::functional;

namespace {

constexpr double kTol = 1e-6;

// TinyNet that counts its forward passes (with and without autograd).
struct CountingNetImpl : torch::nn::Module {
  CountingNetImpl() : net(register_module("net", TinyNet())) {}
  torch::Tensor forward(const torch::Tensor& x) {
    (torch::GradMode::is_enabled() ? graph_forwards : plain_forwards) += 1;
    return net(x);
  }
  std::tuple<torch::Tensor, torch::Tensor> forward_features(const torch::Tensor& x) {
    (torch::GradMode::is_enabled() ? graph_forwards : plain_forwards) += 1;
    return net->forward_features(x);
  }
  int64_t total() const { return graph_forwards + plain_forwards; }
  void reset_counts() { graph_forwards = plain_forwards = 0; }
  TinyNet net;
  int64_t graph_forwards = 0, plain_forwards = 0;
};
TORCH_MODULE(CountingNet);

torch::Tensor kl_rows(const torch::Tensor& p, const torch::Tensor& q) { return (p * (p.log() - q.log())).sum(1); }

double ce_of(const torch::Tensor& logits, const torch::Tensor& y) {
  return at::cross_entropy_loss(logits, y).item<double>();
}

void no_param_grads(torch::nn::Module& m) {
  for (auto& p : m.parameters()) CHECK_FALSE(p.grad().defined());
}

}  // namespace

TEST_CASE("baseline recipes: PGD-AT, TRADES, MART", "[recipes]") {
  TinyNet net;
  net->train();
  auto [x, y] = quadrant_data(32);
  iat::PGD pgd(iat::PGDOptions().random_start(false).steps(3));

  SECTION("PGD-AT: CE(f(x'), y)") {
    auto step = iat::train::pgd_at_loss(net, x, y, pgd);
    no_param_grads(*net);
    auto x_adv = pgd.perturb(net, x, y);
    CHECK(max_abs_diff(step.x_adv, x_adv) < kTol);
    CHECK(step.loss.item<double>() == Approx(ce_of(net(x_adv), y)));
    CHECK(max_abs_diff(step.adv_logits, net(x_adv)) < kTol);
    CHECK_FALSE(step.ref_probs.defined());
    CHECK(step.regularizer.item<double>() == 0.0);
    step.loss.backward();
    CHECK(net->fc1->weight.grad().defined());
  }
  SECTION("TRADES: CE(f(x), y) + 6 KL(p(x) || p(x'))") {
    iat::PGD trades_pgd(iat::train::trades_attack_options().steps(3));
    CHECK(trades_pgd.options.loss() == iat::Loss::kKL);
    CHECK(trades_pgd.options.init_noise() == iat::InitNoise::kGaussian);
    torch::manual_seed(3);
    auto step = iat::train::trades_loss(net, x, y, trades_pgd);
    auto p = torch::softmax(net(x), 1), q = torch::softmax(net(step.x_adv), 1);
    const double expected = ce_of(net(x), y) + 6.0 * kl_rows(p, q).mean().item<double>();
    CHECK(step.loss.item<double>() == Approx(expected));
    CHECK(step.regularizer.item<double>() > 0);
    CHECK(max_abs_diff(step.ref_probs, p) < kTol);
  }
  SECTION("MART: BCE(p(x'), y) + 6 KL(p(x) || p(x')) (1 - p_y(x)), written out per example") {
    auto step = iat::train::mart_loss(net, x, y, pgd);
    auto pa = torch::softmax(net(step.x_adv), 1), pn = torch::softmax(net(x), 1);
    double expected = 0;
    for (int64_t i = 0; i < x.size(0); ++i) {
      const int64_t c = y[i].item<int64_t>();
      double max_other = 0, kl = 0;
      for (int64_t k = 0; k < 4; ++k) {
        if (k != c) max_other = std::max(max_other, pa[i][k].item<double>());
        const double pk = pn[i][k].item<double>();
        kl += pk * std::log(pk / pa[i][k].item<double>());
      }
      const double bce = -std::log(pa[i][c].item<double>()) - std::log(1 - max_other);
      expected += bce + 6.0 * kl * (1 - pn[i][c].item<double>());
    }
    expected /= static_cast<double>(x.size(0));
    CHECK(step.loss.item<double>() == Approx(expected).epsilon(1e-5));
  }
}

TEST_CASE("HAT recipe: TRADES + 0.5 CE(f(x + 2 (x' - x)), argmax f_std(x'))", "[recipes][hat]") {
  TinyNet net;
  CountingNet helper;  // a different model: the helper's labels are not the model's
  auto [x, y] = quadrant_data(32);
  torch::manual_seed(5);
  auto x_adv_fixed = (x + 0.2 * torch::randn_like(x)).clamp(0, 1);  // far enough that the helper example leaves [0, 1]
  iat::train::FixedExamples adv(x_adv_fixed);
  helper->train(true);
  auto step = iat::train::hat_loss(net, x, y, adv, helper);
  CHECK(helper->is_training());             // its mode is restored
  CHECK(helper->plain_forwards == 1);       // one forward, without autograd
  CHECK(helper->graph_forwards == 0);
  no_param_grads(*helper);

  // Written out: CE(f(x), y) + 2.5 KL(p(x) || p(x')) + 0.5 CE(f(x + 2 (x' - x)), argmax helper(x')), the
  // helper example not clipped.
  torch::NoGradGuard no_grad;
  auto x_help = x + 2.0 * (x_adv_fixed - x);
  CHECK((x_help.min().item<double>() < 0 || x_help.max().item<double>() > 1));
  helper->eval();
  auto labels = helper(x_adv_fixed).argmax(1);
  CHECK_FALSE(torch::equal(labels, y));  // the helper's labels are what the term uses, not y
  auto p = torch::softmax(net(x), 1), q = torch::softmax(net(x_adv_fixed), 1);
  const double kl = kl_rows(p, q).mean().item<double>();
  const double help = ce_of(net(x_help), labels);
  CHECK(step.loss.item<double>() == Approx(ce_of(net(x), y) + 2.5 * kl + 0.5 * help).epsilon(1e-6));
  CHECK(step.regularizer.item<double>() == Approx(2.5 * kl + 0.5 * help).epsilon(1e-6));
  CHECK(max_abs_diff(step.ref_probs, p) < kTol);

  // Other weights and scale, and the refusals.
  auto other = iat::train::hat_loss(net, x, y, adv, helper, iat::train::HATOptions().beta(1).gamma(2).helper_scale(3));
  auto x_help3 = x + 3.0 * (x_adv_fixed - x);
  CHECK(other.loss.item<double>() ==
        Approx(ce_of(net(x), y) + kl + 2.0 * ce_of(net(x_help3), helper(x_adv_fixed).argmax(1))).epsilon(1e-6));
  REQUIRE_THROWS_WITH(iat::train::hat_loss(net, x, y, adv, helper, iat::train::HATOptions().gamma(-1)),
                      Catch::Contains("iat::train::hat_loss: gamma"));
  REQUIRE_THROWS_WITH(iat::train::hat_loss(net, x, y, adv, [](const torch::Tensor& in) { return torch::zeros({in.size(0), 7}); }),
                      Catch::Contains("the helper model has 7 classes, the model 4"));
}

TEST_CASE("IAT recipe: CE(f(x'), y) + 3.5 KL(p(x_inv) || p(x'))", "[recipes]") {
  TinyNet net;
  auto [x, y] = quadrant_data(32);
  iat::PGD pgd(iat::PGDOptions().random_start(false).steps(3));
  iat::InverseAttack inverse(iat::InverseAttackOptions().random_init(false));
  iat::AlignmentLoss align;
  auto step = iat::train::iat_loss(net, x, y, pgd, inverse, align);
  no_param_grads(*net);
  auto x_adv = pgd.perturb(net, x, y);
  auto x_inv = inverse.perturb(net, x, y, x_adv);
  auto pi = torch::softmax(net(x_inv), 1), pa = torch::softmax(net(x_adv), 1);
  CHECK(step.loss.item<double>() == Approx(ce_of(net(x_adv), y) + 3.5 * kl_rows(pi, pa).mean().item<double>()));
  CHECK(max_abs_diff(step.ref_probs, pi) < kTol);
  CHECK(step.regularizer.item<double>() > 0);
}

TEST_CASE("UIAT recipe: fused and two-pass orders, EMA reading, cost", "[recipes][uiat]") {
  TinyNet net;
  auto [x, y] = quadrant_data(32);
  iat::PGD pgd(iat::PGDOptions().random_start(false).steps(3));
  iat::AlignmentLoss align;
  auto opts = iat::UniversalInversePerturbationOptions(4, {1, 4, 4}).step_size(1.0 / 255);
  iat::UniversalInversePerturbation uip(opts), twin(opts);
  auto x_adv = pgd.perturb(net, x, y);

  SECTION("fused: the alignment uses delta before the step; delta then takes update()'s step") {
    auto x_check = twin(x, y);  // δ = 0 before the call
    auto step = iat::train::uiat_loss(net, x, y, pgd, uip, align);
    no_param_grads(*net);
    auto pc = torch::softmax(net(x_check), 1), pa = torch::softmax(net(x_adv), 1);
    CHECK(step.loss.item<double>() == Approx(ce_of(net(x_adv), y) + 3.5 * kl_rows(pc, pa).mean().item<double>()));
    CHECK(max_abs_diff(step.ref_probs, pc) < kTol);
    twin->update(net, x, y, x_adv);  // TinyNet behaves alike in train and eval mode
    CHECK(max_abs_diff(uip->delta(), twin->delta()) < kTol);
    CHECK(uip->delta().abs().max().item<double>() > 0);
    step.loss.backward();  // the retained graph serves the loop's backward
    CHECK(net->fc2->weight.grad().defined());
  }
  SECTION("two-pass: update first, then the alignment with the updated delta") {
    auto step = iat::train::uiat_loss(net, x, y, pgd, uip, align, iat::train::UIATLossOptions().fused(false));
    twin->update(net, x, y, x_adv);
    CHECK(max_abs_diff(uip->delta(), twin->delta()) < kTol);
    auto pc = torch::softmax(net(twin(x, y)), 1), pa = torch::softmax(net(x_adv), 1);
    CHECK(step.loss.item<double>() == Approx(ce_of(net(x_adv), y) + 3.5 * kl_rows(pc, pa).mean().item<double>()));
  }
  SECTION("target-EMA reading: the reference is gamma stored + (1 - gamma) p(x_check)") {
    iat::OneOffCache ema(iat::OneOffCacheOptions(100, 4));
    auto index = torch::arange(32, torch::kLong) * 3;
    uip->options.momentum_form(iat::InverseMomentum::kTargetEMA);
    auto first = iat::train::uiat_loss(net, x, y, pgd, uip, align, ema, index);  // γ = 0: records p(x̌)
    CHECK(ema->num_stored() == 32);
    CHECK(max_abs_diff(ema->read(index), first.ref_probs) < kTol);
    uip->options.momentum(0.9);
    auto x_check = uip(x, y);
    auto second = iat::train::uiat_loss(net, x, y, pgd, uip, align, ema, index);
    auto expected = 0.9 * first.ref_probs + 0.1 * torch::softmax(net(x_check), 1);
    CHECK(max_abs_diff(second.ref_probs, expected) < kTol);
    auto pa = torch::softmax(net(x_adv), 1);
    CHECK(second.loss.item<double>() == Approx(ce_of(net(x_adv), y) + 3.5 * kl_rows(expected, pa).mean().item<double>()));
    const auto delta_before = uip->delta().clone();
    REQUIRE_THROWS_WITH(iat::train::uiat_loss(net, x, y, pgd, uip, align),
                        Catch::Contains("kTargetEMA") && Catch::Contains("needs an iat::OneOffCache"));
    CHECK(torch::equal(uip->delta(), delta_before));  // refused before δ stepped
  }
  SECTION("cost: one extra forward (with graph) over PGD-AT, plus one no-grad forward for the pull term") {
    CountingNet counted;
    iat::train::pgd_at_loss(counted, x, y, pgd);
    const int64_t pgd_at = counted->total();
    const int64_t pgd_at_plain = counted->plain_forwards;
    counted->reset_counts();
    iat::UniversalInversePerturbation ce_only(iat::UniversalInversePerturbationOptions(4, {1, 4, 4}).beta(0));
    iat::train::uiat_loss(counted, x, y, pgd, ce_only, align);
    CHECK(counted->total() == pgd_at + 1);
    counted->reset_counts();
    iat::train::uiat_loss(counted, x, y, pgd, uip, align);  // β = 1: h(x) for the pull term
    CHECK(counted->total() == pgd_at + 2);
    CHECK(counted->plain_forwards == pgd_at_plain + 1);
  }
  SECTION("feature-level regulariser through forward_features") {
    iat::UniversalInversePerturbation feat(
        iat::UniversalInversePerturbationOptions(4, {1, 4, 4}).regularizer(iat::InverseRegularizer::kFeatureL2));
    auto step = iat::train::uiat_loss(net, x, y, pgd, feat, align);
    CHECK(feat->delta().abs().max().item<double>() > 0);
    CHECK(std::isfinite(step.loss.item<double>()));
  }
}

TEST_CASE("TRADES + UIAT recipe: CE(f(x), y) + 6 KL(p(x) || p(x')) + 3.5 KL(p(x_check) || p(x'))", "[recipes][uiat]") {
  TinyNet net;
  net->train();
  auto [x, y] = quadrant_data(32);
  iat::PGD trades_pgd(iat::train::trades_attack_options().steps(3));
  iat::AlignmentLoss align;
  auto opts = iat::UniversalInversePerturbationOptions(4, {1, 4, 4}).step_size(1.0 / 255);
  iat::UniversalInversePerturbation uip(opts), twin(opts);

  SECTION("the objective written out; x' is the TRADES attack's; delta takes update()'s step") {
    torch::manual_seed(3);
    auto x_adv = trades_pgd.perturb(net, x, y);
    auto x_check = twin(x, y);  // δ = 0 before the call
    torch::manual_seed(3);
    auto step = iat::train::trades_uiat_loss(net, x, y, trades_pgd, uip, align);
    no_param_grads(*net);
    CHECK(torch::equal(step.x_adv, x_adv));  // the attack's draws and its clean reference unchanged
    auto pn = torch::softmax(net(x), 1), pa = torch::softmax(net(x_adv), 1), pc = torch::softmax(net(x_check), 1);
    const double trades = 6.0 * kl_rows(pn, pa).mean().item<double>();
    const double uiat = 3.5 * kl_rows(pc, pa).mean().item<double>();
    CHECK(step.loss.item<double>() == Approx(ce_of(net(x), y) + trades + uiat));
    CHECK(step.ce.item<double>() == Approx(ce_of(net(x), y)));
    CHECK(step.regularizer.item<double>() == Approx(trades + uiat).margin(1e-6));  // float32 KL of ~1e-3
    CHECK(max_abs_diff(step.ref_probs, pc) < kTol);
    twin->update(net, x, y, x_adv);  // its own eval-mode h(x): the recipe's reused one gives the same step
    CHECK(max_abs_diff(uip->delta(), twin->delta()) < kTol);
    CHECK(uip->delta().abs().max().item<double>() > 0);
    step.loss.backward();
    CHECK(net->fc2->weight.grad().defined());
    // β = 0 leaves UIAT's term on top of CE(f(x), y) alone.
    torch::manual_seed(4);
    auto x_adv0 = trades_pgd.perturb(net, x, y);
    auto pc0 = torch::softmax(net(uip(x, y)), 1), pa0 = torch::softmax(net(x_adv0), 1);
    torch::manual_seed(4);
    auto plain = iat::train::trades_uiat_loss(net, x, y, trades_pgd, uip, align, 0.0);
    CHECK(plain.regularizer.item<double>() > 0);
    CHECK(plain.regularizer.item<double>() == Approx(3.5 * kl_rows(pc0, pa0).mean().item<double>()).margin(1e-6));
    CHECK_THROWS_WITH(iat::train::trades_uiat_loss(net, x, y, trades_pgd, uip, align, -1.0), Catch::Contains("beta"));
  }
  SECTION("cost: TRADES' forwards plus x_check's; p(x) computed once for the attack and the pull term") {
    CountingNet counted;
    iat::train::trades_loss(counted, x, y, trades_pgd);
    const int64_t trades_graph = counted->graph_forwards, trades_plain = counted->plain_forwards;
    counted->reset_counts();
    iat::train::trades_uiat_loss(counted, x, y, trades_pgd, uip, align);
    CHECK(counted->graph_forwards == trades_graph + 1);
    CHECK(counted->plain_forwards == trades_plain);
  }
}

TEST_CASE("one-off recipe: natural before T', inverse at T' (stored), stored after, unvisited rows made when met", "[recipes][one_off]") {
  TinyNet net;
  const auto data = quadrant_data(16);
  const torch::Tensor x = data.first, y = data.second;
  auto index = torch::arange(16, torch::kLong) + 4;
  iat::PGD pgd(iat::PGDOptions().random_start(false).steps(2));
  iat::InverseAttack inverse(iat::InverseAttackOptions().random_init(false));
  iat::AlignmentLoss align;
  iat::OneOffCache cache(iat::OneOffCacheOptions(20, 4).one_off_epoch(3));
  auto x_adv = pgd.perturb(net, x, y);
  auto ce_adv = [&] { return ce_of(net(x_adv), y); };

  // t < T': p(x), nothing stored.
  auto before = iat::train::one_off_loss(net, x, y, index, 2, pgd, inverse, cache, align);
  auto pn = torch::softmax(net(x), 1);
  CHECK(max_abs_diff(before.ref_probs, pn) < kTol);
  CHECK(before.loss.item<double>() ==
        Approx(ce_adv() + 3.5 * kl_rows(pn, torch::softmax(net(x_adv), 1)).mean().item<double>()));
  CHECK(cache->num_stored() == 0);

  // t = T': p(x_inv), stored at the batch's positions.
  auto at = iat::train::one_off_loss(net, x, y, index, 3, pgd, inverse, cache, align);
  auto pi = torch::softmax(net(inverse.perturb(net, x, y, x_adv)), 1);
  CHECK(max_abs_diff(at.ref_probs, pi) < kTol);
  CHECK(max_abs_diff(cache->read(index), pi) < kTol);
  CHECK(cache->num_stored() == 16);
  CHECK(max_abs_diff(pi, pn) > 1e-4);

  // t > T': the stored values, even after the weights moved; no inverse example is generated.
  {
    torch::NoGradGuard ng;
    for (auto& p : net->parameters()) p.add_(0.05 * torch::randn_like(p));
  }
  x_adv = pgd.perturb(net, x, y);
  auto after = iat::train::one_off_loss(net, x, y, index, 4, pgd, inverse, cache, align);
  CHECK(max_abs_diff(after.ref_probs, pi) < kTol);
  CHECK(after.loss.item<double>() ==
        Approx(ce_adv() + 3.5 * kl_rows(pi, torch::softmax(net(x_adv), 1)).mean().item<double>()));
  // Positions 0..3 were never stored (T' did not visit them: a dropped last batch): their inverse examples are
  // made now, on today's weights, and stored; positions 4..15 keep what T' stored.
  auto unseen = torch::arange(16, torch::kLong);
  auto late = iat::train::one_off_loss(net, x, y, unseen, 5, pgd, inverse, cache, align);
  const auto first4 = torch::indexing::Slice(0, 4);
  auto p_late = torch::softmax(net(inverse.perturb(net, x.index({first4}), y.index({first4}),
                                                   x_adv.index({first4}))), 1);
  CHECK(max_abs_diff(late.ref_probs.index({first4}), p_late) < kTol);
  CHECK(max_abs_diff(late.ref_probs.index({torch::indexing::Slice(4, 16)}), pi.index({torch::indexing::Slice(0, 12)})) <
        kTol);
  CHECK(max_abs_diff(p_late, pi.index({first4})) > 1e-4);  // made on the moved weights, not T''s
  CHECK(cache->num_stored() == 20);
  CHECK(max_abs_diff(cache->read(torch::arange(4, torch::kLong)), p_late) < kTol);
  REQUIRE_THROWS_WITH(iat::train::one_off_loss(net, x, y, index + 10, 3, pgd, inverse, cache, align),
                      Catch::Contains("index out of range"));

  SECTION("late rows depend on their own row only; the random stream is left as a run without them leaves it") {
    // With its random start (drawn per row for late rows); one step, so the start is not clipped away.
    iat::InverseAttack noisy(iat::InverseAttackOptions().steps(1));
    auto stored_from_4 = [&] {
      iat::OneOffCache c(iat::OneOffCacheOptions(20, 4).one_off_epoch(3));
      c->store(torch::arange(4, 20, torch::kLong), torch::full({16, 4}, 0.25));
      return c;
    };
    // Rows 0..3 late within one batch of 16, or two at a time in batches of 2.
    torch::manual_seed(7);
    auto whole = stored_from_4();
    iat::train::one_off_loss(net, x, y, unseen, 5, pgd, noisy, whole, align);
    const auto after_late = torch::rand({3});
    auto pairs = stored_from_4();
    torch::manual_seed(7);
    for (int64_t start : {0, 2}) {
      iat::train::one_off_loss(net, x.narrow(0, start, 2), y.narrow(0, start, 2),
                               torch::arange(start, start + 2, torch::kLong), 5, pgd, noisy, pairs, align);
    }
    // (within rounding: a forward on 2 rows may sum in another order than on 16)
    CHECK(max_abs_diff(pairs->read(torch::arange(4, torch::kLong)), whole->read(torch::arange(4, torch::kLong))) < 1e-6);
    // The same call without late rows (all 16 stored): the same draws follow it.
    auto full_cache = stored_from_4();
    full_cache->store(torch::arange(4, torch::kLong), torch::full({4, 4}, 0.25));
    torch::manual_seed(7);
    iat::train::one_off_loss(net, x, y, unseen, 5, pgd, noisy, full_cache, align);
    CHECK(torch::equal(torch::rand({3}), after_late));
    // Not trivially equal: the rows' seeds come from the stream, so another stream gives other late rows.
    torch::manual_seed(8);
    auto other = stored_from_4();
    iat::train::one_off_loss(net, x, y, unseen, 5, pgd, noisy, other, align);
    CHECK(max_abs_diff(other->read(torch::arange(4, torch::kLong)), whole->read(torch::arange(4, torch::kLong))) > 1e-6);
  }
  SECTION("cost after T': no forward beyond PGD-AT") {
    CountingNet counted;
    iat::OneOffCache full(iat::OneOffCacheOptions(16, 4).one_off_epoch(0));
    full->store(torch::arange(16, torch::kLong), torch::full({16, 4}, 0.25));
    iat::train::pgd_at_loss(counted, x, y, pgd);
    const int64_t pgd_at = counted->total();
    counted->reset_counts();
    iat::train::one_off_loss(counted, x, y, torch::arange(16, torch::kLong), 1, pgd, inverse, full, align);
    CHECK(counted->total() == pgd_at);
  }
}

TEST_CASE("single-step recipes with and without UIAT", "[recipes][single_step]") {
  TinyNet net;
  auto [x, y] = quadrant_data(32);
  iat::AlignmentLoss align;
  const double eps = 8.0 / 255;

  SECTION("FGSM-RS and N-FGSM: CE(f(x_hat), y)") {
    iat::FGSM fgsm_rs(iat::FGSMOptions().random_start(true));
    iat::NFGSM nfgsm;
    for (iat::Attack* attack : std::vector<iat::Attack*>{&fgsm_rs, &nfgsm}) {
      INFO(attack->name());
      auto step = iat::train::single_step_loss(net, x, y, *attack);
      CHECK(step.loss.item<double>() == Approx(ce_of(net(step.x_adv), y)));
      CHECK_FALSE(step.ref_probs.defined());
    }
  }
  SECTION("GradAlign adds lambda_GA (1 - cos)") {
    iat::FGSM fgsm(iat::FGSMOptions().step_size(1.25 * eps));
    torch::manual_seed(9);
    auto step = iat::train::single_step_loss(net, x, y, fgsm, iat::train::SingleStepOptions().grad_align_weight(0.2));
    torch::manual_seed(9);
    auto x_adv = fgsm.perturb(net, x, y);
    auto ga = F::grad_align(net, x, y, eps, 0.2);
    CHECK(step.regularizer.item<double>() == Approx(ga.item<double>()));
    CHECK(step.loss.item<double>() == Approx(ce_of(net(x_adv), y) + ga.item<double>()));
  }
  SECTION("with UIAT: + lambda KL(p(x_check) || p(x_hat)); delta steps on CE alone") {
    iat::FGSM fgsm;  // deterministic: plain FGSM
    // β = 1 in the options: the single-step recipe still steps on CE alone (supplement §2.3).
    auto opts = iat::UniversalInversePerturbationOptions(4, {1, 4, 4}).step_size(1.0 / 255);
    iat::UniversalInversePerturbation uip(opts), twin(opts.beta(0));
    auto x_check = uip(x, y);
    auto step = iat::train::single_step_uiat_loss(net, x, y, fgsm, uip, align);
    auto pc = torch::softmax(net(x_check), 1), pa = torch::softmax(net(step.x_adv), 1);
    CHECK(step.loss.item<double>() == Approx(ce_of(net(step.x_adv), y) + 3.5 * kl_rows(pc, pa).mean().item<double>()));
    twin->update(net, x, y);
    CHECK(max_abs_diff(uip->delta(), twin->delta()) < kTol);
    CHECK(uip->delta().abs().max().item<double>() > 0);
    CHECK(max_abs_diff(step.ref_probs, pc) < kTol);
  }
}

TEST_CASE("the UIAT recipes without an EMA store refuse the kTargetEMA reading with a momentum", "[recipes][uiat]") {
  using Catch::Contains;
  TinyNet net;
  auto [x, y] = quadrant_data(16);
  iat::AlignmentLoss align;
  iat::FGSM fgsm;
  iat::PGD trades_pgd(iat::train::trades_attack_options().steps(2));
  iat::UniversalInversePerturbation uip(iat::UniversalInversePerturbationOptions(4, {1, 4, 4})
                                            .momentum_form(iat::InverseMomentum::kTargetEMA)
                                            .momentum(0.9));
  // Ignoring it would step δ without any momentum (the gradient momentum of kTargetEMA is 0).
  CHECK(uip->options.gradient_momentum() == 0.0);
  const auto before = uip->delta().clone();
  REQUIRE_THROWS_WITH(iat::train::trades_uiat_loss(net, x, y, trades_pgd, uip, align),
                      Contains("iat::train::trades_uiat_loss") && Contains("kTargetEMA with momentum 0.9"));
  REQUIRE_THROWS_WITH(iat::train::single_step_uiat_loss(net, x, y, fgsm, uip, align),
                      Contains("iat::train::single_step_uiat_loss") && Contains("kNormalizedGradient"));
  CHECK(torch::equal(uip->delta(), before));  // refused before anything stepped
  // Without a momentum there is nothing to keep: both run (until the loop sets γ at epoch T).
  uip->options.momentum(0.0);
  CHECK(std::isfinite(iat::train::trades_uiat_loss(net, x, y, trades_pgd, uip, align).loss.item<double>()));
  CHECK(std::isfinite(iat::train::single_step_uiat_loss(net, x, y, fgsm, uip, align).loss.item<double>()));
}

TEST_CASE("the recipes refuse a model that returns probabilities", "[recipes][logits]") {
  using Catch::Contains;
  TinyNet net;
  auto [x, y] = quadrant_data(16);
  auto probs = [&net](const torch::Tensor& in) { return torch::softmax(net(in), 1); };
  iat::PGD pgd(iat::PGDOptions().steps(1).step_size(8.0 / 255));
  // (Catch's combined matchers hold references to their parts: the parts must outlive them.)
  auto probabilities = Contains("look like probabilities");
  auto softmax_hint = Contains("remove the final softmax");
  auto refused = probabilities && softmax_hint;
  REQUIRE_THROWS_WITH(iat::train::pgd_at_loss(probs, x, y, pgd), refused);
  REQUIRE_THROWS_WITH(iat::train::trades_loss(probs, x, y, pgd), refused);
  REQUIRE_THROWS_WITH(iat::train::mart_loss(probs, x, y, pgd), refused);
  iat::FGSM fgsm(iat::FGSMOptions().random_start(true));
  REQUIRE_THROWS_WITH(iat::train::single_step_loss(probs, x, y, fgsm), refused);
  iat::AlignmentLoss align;
  auto uip =
      iat::UniversalInversePerturbation(iat::UniversalInversePerturbationOptions(4, {1, 4, 4}).check_logits(false));
  REQUIRE_THROWS_WITH(iat::train::uiat_loss(probs, x, y, pgd, uip, align), refused);
  // With logits every recipe runs, and the alignment inside needs no check of its own.
  CHECK(std::isfinite(iat::train::pgd_at_loss(net, x, y, pgd).loss.item<double>()));
  CHECK(std::isfinite(iat::train::uiat_loss(net, x, y, pgd, uip, align).loss.item<double>()));
  iat::InverseAttack inverse(iat::InverseAttackOptions().steps(1).step_size(4.0 / 255));
  CHECK(std::isfinite(iat::train::iat_loss(net, x, y, pgd, inverse, align).loss.item<double>()));
}
