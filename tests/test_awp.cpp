// Tests of iat::train::AWP (docs/awp.md): one AWP step against an independent computation written here with
// torch ops, the authors' way: a proxy copy of the model in train mode takes one plain SGD step on the negated
// loss, d_l = w_proxy − w, v_l = γ‖w_l‖/(‖d_l‖ + 1e-20)·d_l for the weights of two or more dimensions; then
// the training loss at w + v, the optimiser step, and w ← w − v. All in double precision, so that the
// comparisons are tight (1e-10) and a wrong factor anywhere fails.
#include "support.hpp"

#include <iat/train/awp.hpp>
#include <iat/train/recipes.hpp>

#include <torch/nn/modules/batchnorm.h>
#include <torch/optim/sgd.h>

#include <map>
#include <tuple>

using namespace iat_test;

namespace {

constexpr double kTight = 1e-10;

/// Linear → BatchNorm1d → tanh → Linear on [N, 1, 4, 4]: a weight of each kind (2-D weights, biases, a
/// batch-norm layer's 1-D weight and its running statistics).
struct BNNetImpl : torch::nn::Module {
  BNNetImpl()
      : fc1(register_module("fc1", torch::nn::Linear(16, 8))),
        bn(register_module("bn", torch::nn::BatchNorm1d(8))),
        fc2(register_module("fc2", torch::nn::Linear(8, 4))) {}
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::tanh(bn(fc1(x.flatten(1))))); }
  torch::nn::Linear fc1;
  torch::nn::BatchNorm1d bn;
  torch::nn::Linear fc2;
};
TORCH_MODULE(BNNet);

/// dst's parameters and buffers ← src's (same architecture).
void copy_state(torch::nn::Module& src, torch::nn::Module& dst) {
  torch::NoGradGuard ng;
  auto sp = src.named_parameters(), dp = dst.named_parameters();
  for (const auto& item : sp) dp[item.key()].copy_(item.value());
  auto sb = src.named_buffers(), db = dst.named_buffers();
  for (const auto& item : sb) db[item.key()].copy_(item.value());
}

std::map<std::string, torch::Tensor> snapshot(torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : m.named_parameters()) out[item.key()] = item.value().detach().clone();
  for (const auto& item : m.named_buffers()) out["buffer:" + item.key()] = item.value().detach().clone();
  return out;
}

bool is_awp_weight(const std::string& name, const torch::Tensor& p) {
  return p.dim() > 1 && name.find("weight") != std::string::npos;
}

/// The authors' procedure on a proxy: load w, train mode, SGD(lr) on −L, d = w' − w, scale per layer.
template <typename Net, typename LossOnNet>
std::map<std::string, torch::Tensor> proxy_awp(Net& net, Net& proxy, double gamma, double lr, LossOnNet&& loss_on) {
  copy_state(*net, *proxy);
  proxy->train();
  torch::optim::SGD opt(proxy->parameters(), torch::optim::SGDOptions(lr));
  opt.zero_grad();
  auto loss = -loss_on(proxy);
  loss.backward();
  opt.step();
  std::map<std::string, torch::Tensor> v;
  auto old_params = net->named_parameters();
  for (const auto& item : proxy->named_parameters()) {
    const auto& w = old_params[item.key()];
    if (!is_awp_weight(item.key(), w)) continue;
    auto d = item.value().detach() - w.detach();
    v[item.key()] = gamma * w.detach().norm() / (d.norm() + 1e-20) * d;
  }
  return v;
}

/// The weights after one SGD(lr) step from w + v and w <- w - v: w - lr * grad of ref_loss (computed on
/// `reference`, loaded with w + v), compared with `net`'s parameters now.
template <typename Net>
void check_sgd_step(Net& reference, const torch::Tensor& ref_loss, Net& net,
                    const std::map<std::string, torch::Tensor>& before, double lr) {
  std::vector<torch::Tensor> ref_list;
  std::vector<std::string> ref_names;
  for (const auto& item : reference->named_parameters()) {
    ref_names.push_back(item.key());
    ref_list.push_back(item.value());
  }
  auto grads = torch::autograd::grad({ref_loss}, ref_list);
  auto now = net->named_parameters();
  for (size_t i = 0; i < ref_names.size(); ++i) {
    INFO(ref_names[i]);
    CHECK(max_abs_diff(now[ref_names[i]], before.at(ref_names[i]) - lr * grads[i]) < kTight);  // (w + v - lr g) - v
  }
}

double mean_ce(const torch::Tensor& logits, const torch::Tensor& y) {
  return at::cross_entropy_loss(logits, y).item<double>();
}

/// Mean over the batch of KL(p ‖ softmax(q_logits)) with p = softmax(p_logits): differentiable in both.
torch::Tensor mean_kl(const torch::Tensor& p_logits, const torch::Tensor& q_logits) {
  auto lp = torch::log_softmax(p_logits, 1), lq = torch::log_softmax(q_logits, 1);
  return (lp.exp() * (lp - lq)).sum(1).mean();
}

std::pair<torch::Tensor, torch::Tensor> double_data(int64_t n) {
  auto [x, y] = quadrant_data(n);
  return {x.to(torch::kDouble), y};
}

/// A fixed x' in the 8/255 ball, found by no attack (so the expected values depend on nothing else).
torch::Tensor shifted(const torch::Tensor& x) { return (x + 8.0 / 255 * torch::randn_like(x).sign()).clamp(0, 1); }

}  // namespace

TEST_CASE("AWP with PGD-AT: v per layer, its size, batch norm, and w after perturb, step, restore", "[awp]") {
  BNNet net, proxy, reference;
  net->to(torch::kDouble);
  proxy->to(torch::kDouble);
  reference->to(torch::kDouble);
  {
    // Non-trivial running statistics and batch-norm affine parameters to start from.
    torch::NoGradGuard ng;
    net->bn->running_mean.uniform_(-0.5, 0.5);
    net->bn->running_var.uniform_(0.5, 2.0);
    net->bn->weight.uniform_(0.5, 1.5);
  }
  torch::Tensor x, y;  // not a structured binding: lambdas below capture them
  std::tie(x, y) = double_data(32);
  auto x_adv = shifted(x);
  const double gamma = 5e-3, proxy_lr = 0.01, lr = 0.1;
  iat::train::AWP awp(iat::train::AWPOptions().gamma(gamma).proxy_lr(proxy_lr).warmup_epochs(0));
  iat::train::FixedExamples adv(x_adv);

  auto expected_v = proxy_awp(net, proxy, gamma, proxy_lr,
                              [&](BNNet& m) { return at::cross_entropy_loss(m(x_adv), y); });
  REQUIRE(expected_v.size() == 2);  // fc1.weight, fc2.weight: no bias, no bn.weight (1-D)
  CHECK(proxy->bn->running_mean.sub(net->bn->running_mean).abs().max().item<double>() > 1e-3);  // the proxy's moved

  auto before = snapshot(*net);
  net->eval();  // the ascent runs in train mode whatever the caller's mode, and gives it back
  int calls = 0;
  auto v = awp.perturb(
      net,
      [&](const iat::ModelRef& m) {
        ++calls;
        CHECK(m.is_training());
        return iat::train::pgd_at_loss(m, x, y, adv).loss;
      },
      /*epoch=*/0);
  CHECK(calls == 1);
  CHECK_FALSE(net->is_training());
  REQUIRE(v.applied);
  REQUIRE(v.names == std::vector<std::string>{"fc1.weight", "fc2.weight"});

  SECTION("v_l is the proxy's scaled step, of size gamma ||w_l||; nothing else moves") {
    for (size_t i = 0; i < v.names.size(); ++i) {
      INFO(v.names[i]);
      const auto& e = expected_v.at(v.names[i]);
      CHECK(max_abs_diff(v.v[i], e) < kTight);
      CHECK(v.v[i].norm().item<double>() == Approx(gamma * before.at(v.names[i]).norm().item<double>()).epsilon(1e-12));
      // The weights are w + v: the module's own tensor was changed.
      CHECK(max_abs_diff(net->named_parameters()[v.names[i]], before.at(v.names[i]) + e) < kTight);
      CHECK(v.params[i].data_ptr() == net->named_parameters()[v.names[i]].data_ptr());
    }
    for (const auto& name : {"fc1.bias", "fc2.bias", "bn.weight", "bn.bias"}) {
      INFO(name);
      CHECK(max_abs_diff(net->named_parameters()[name], before.at(name)) == 0.0);
    }
    // The running statistics are those from before the ascent (the proxy's are thrown away), and no .grad.
    for (const auto& item : net->named_buffers()) {
      INFO(item.key());
      CHECK(max_abs_diff(item.value().to(torch::kDouble), before.at("buffer:" + item.key()).to(torch::kDouble)) == 0.0);
    }
    for (const auto& p : net->parameters()) CHECK_FALSE(p.grad().defined());
  }

  SECTION("training loss at w + v, SGD step, then w <- w - v") {
    net->train();
    torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(lr));
    opt.zero_grad();
    auto step = iat::train::pgd_at_loss(net, x, y, adv);
    step.loss.backward();
    opt.step();
    awp.restore(net, v);
    CHECK_FALSE(v.applied);

    // Independently: the loss's gradient at w + v (train mode, from the original statistics), w − lr·g.
    copy_state(*net, *reference);  // for the architecture only; overwritten next
    {
      torch::NoGradGuard ng;
      auto ref_params = reference->named_parameters();
      auto ref_buffers = reference->named_buffers();
      for (auto& item : ref_params) {
        auto w = before.at(item.key());
        if (expected_v.count(item.key())) w = w + expected_v.at(item.key());
        item.value().copy_(w);
      }
      for (auto& item : ref_buffers) item.value().copy_(before.at("buffer:" + item.key()));
    }
    reference->train();
    auto ref_loss = at::cross_entropy_loss(reference(x_adv), y);
    CHECK(step.loss.item<double>() == Approx(ref_loss.item<double>()).epsilon(1e-12));
    check_sgd_step(reference, ref_loss, net, before, lr);
    // The training forward at w + v updated the running statistics, as the reference's forward did.
    auto ref_buffers = reference->named_buffers();
    for (const auto& item : net->named_buffers()) {
      INFO(item.key());
      CHECK(max_abs_diff(item.value().to(torch::kDouble), ref_buffers[item.key()].to(torch::kDouble)) < kTight);
    }
    // Restoring twice changes nothing.
    auto after = snapshot(*net);
    awp.restore(net, v);
    CHECK(max_abs_diff(net->fc1->weight, after.at("fc1.weight")) == 0.0);
  }

  SECTION("restore right after perturb gives w back") {
    awp.restore(net, v);
    CHECK(max_abs_diff(net->fc1->weight, before.at("fc1.weight")) < kTight);
    CHECK(max_abs_diff(net->fc2->weight, before.at("fc2.weight")) < kTight);
  }
}

TEST_CASE("AWP warm-up: nothing before warmup_epochs, the ascent loss is not evaluated", "[awp]") {
  TinyNet net;
  torch::Tensor x, y;  // not a structured binding: lambdas below capture them
  std::tie(x, y) = quadrant_data(16);
  iat::train::FixedExamples adv(shifted(x));
  iat::train::AWP awp(iat::train::AWPOptions().warmup_epochs(3));
  CHECK(awp.options.gamma() == 5e-3);
  CHECK(awp.options.proxy_lr() == 0.01);
  int calls = 0;
  auto loss_at = [&](const iat::ModelRef& m) {
    ++calls;
    return iat::train::pgd_at_loss(m, x, y, adv).loss;
  };
  auto before = snapshot(*net);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    INFO("epoch " << epoch);
    CHECK_FALSE(awp.active(epoch));
    auto v = awp.perturb(net, loss_at, epoch);
    CHECK(v.empty());
    CHECK_FALSE(v.applied);
    awp.restore(net, v);  // accepted: the loop needs no if
    for (const auto& item : net->named_parameters()) CHECK(max_abs_diff(item.value(), before.at(item.key())) == 0.0);
  }
  CHECK(calls == 0);
  CHECK(awp.active(3));
  auto v = awp.perturb(net, loss_at, 3);
  CHECK(calls == 1);
  CHECK_FALSE(v.empty());
  CHECK(max_abs_diff(net->fc1->weight, before.at("fc1.weight")) > 0);
  awp.restore(net, v);
  CHECK(max_abs_diff(net->fc1->weight, before.at("fc1.weight")) < 1e-7);

  iat::train::AWP off(iat::train::AWPOptions().gamma(0).warmup_epochs(0));
  CHECK_FALSE(off.active(100));
  REQUIRE_THROWS_WITH(iat::train::AWP(iat::train::AWPOptions().gamma(-1)), Catch::Contains("gamma"));
  REQUIRE_THROWS_WITH(iat::train::AWP(iat::train::AWPOptions().proxy_lr(0)), Catch::Contains("proxy_lr"));
  iat::train::FixedExamples small(shifted(x).slice(0, 0, 4));
  REQUIRE_THROWS_WITH(small.perturb(net, x, y), Catch::Contains("FixedExamples"));
  // The options are a field: a bad value set now is refused at the next perturb, before anything changes.
  awp.options.proxy_lr(0.0);
  REQUIRE_THROWS_WITH(awp.perturb(net, loss_at, 5), Catch::Contains("iat::train::AWP: proxy_lr must be > 0, got 0"));
  CHECK(calls == 1);  // refused before the ascent loss
}

TEST_CASE("AWP with UIAT: ascent on the UIAT objective with a scratch delta, delta steps once at w + v", "[awp][uiat]") {
  TinyNet net, proxy, reference;
  net->to(torch::kDouble);
  proxy->to(torch::kDouble);
  reference->to(torch::kDouble);
  torch::Tensor x, y;  // not a structured binding: lambdas below capture them
  std::tie(x, y) = double_data(32);
  auto x_adv = shifted(x);
  iat::train::FixedExamples adv(x_adv);
  iat::AlignmentLoss align;  // λ = 3.5
  auto opts = iat::UniversalInversePerturbationOptions(4, {1, 4, 4}).step_size(1.0 / 255);
  iat::UniversalInversePerturbation uip(opts), twin(opts);
  uip->to(torch::kDouble);
  twin->to(torch::kDouble);
  uip->update(net, x, y, x_adv);  // a non-zero δ to start from
  twin->update(net, x, y, x_adv);
  const auto delta0 = uip->delta().clone();
  REQUIRE(delta0.abs().max().item<double>() > 0);
  auto x_check = uip(x, y).detach();  // x̌ with δ before this batch's step
  const double gamma = 1e-2, proxy_lr = 0.01, lr = 0.05;
  iat::train::AWP awp(iat::train::AWPOptions().gamma(gamma).proxy_lr(proxy_lr).warmup_epochs(0));

  // The UIAT objective written out: CE(f(x'), y) + 3.5·mean KL(p(x̌) ‖ p(x')), gradient through both sides.
  auto uiat_objective = [&](TinyNet& m) { return at::cross_entropy_loss(m(x_adv), y) + 3.5 * mean_kl(m(x_check), m(x_adv)); };
  auto expected_v = proxy_awp(net, proxy, gamma, proxy_lr, uiat_objective);
  // Differs from PGD-AT's v: the alignment term is part of the ascent.
  auto ce_only_v = proxy_awp(net, proxy, gamma, proxy_lr, [&](TinyNet& m) { return at::cross_entropy_loss(m(x_adv), y); });
  CHECK(max_abs_diff(expected_v.at("fc1.weight"), ce_only_v.at("fc1.weight")) > 1e-6);

  auto before = snapshot(*net);
  net->train();
  auto v = awp.perturb(
      net,
      [&](const iat::ModelRef& m) {
        auto scratch = iat::train::scratch_copy(uip);
        return iat::train::uiat_loss(m, x, y, adv, scratch, align).loss;
      },
      0);
  REQUIRE(v.names == std::vector<std::string>{"fc1.weight", "fc2.weight"});
  for (size_t i = 0; i < v.names.size(); ++i) {
    INFO(v.names[i]);
    CHECK(max_abs_diff(v.v[i], expected_v.at(v.names[i])) < kTight);
    CHECK(v.v[i].norm().item<double>() == Approx(gamma * before.at(v.names[i]).norm().item<double>()).epsilon(1e-12));
  }
  CHECK(max_abs_diff(uip->delta(), delta0) == 0.0);  // the ascent stepped the scratch copy only

  // δ's step of the training call is taken at w + v: the twin steps from the same δ at the perturbed weights.
  twin->update(net, x, y, x_adv);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(lr));
  opt.zero_grad();
  auto step = iat::train::uiat_loss(net, x, y, adv, uip, align);
  step.loss.backward();
  opt.step();
  awp.restore(net, v);
  CHECK(max_abs_diff(uip->delta(), twin->delta()) < kTight);
  CHECK(max_abs_diff(uip->delta(), delta0) > 0);

  // The weights: w − lr·∇L_UIAT(w + v), with the alignment on δ before the step.
  {
    torch::NoGradGuard ng;
    for (auto& item : reference->named_parameters()) {
      auto w = before.at(item.key());
      if (expected_v.count(item.key())) w = w + expected_v.at(item.key());
      item.value().copy_(w);
    }
  }
  auto ref_loss = uiat_objective(reference);
  CHECK(step.loss.item<double>() == Approx(ref_loss.item<double>()).epsilon(1e-12));
  check_sgd_step(reference, ref_loss, net, before, lr);
  CHECK(mean_ce(net(x_adv), y) > 0);
}

TEST_CASE("AWP with TRADES: the ascent loss is the TRADES objective", "[awp]") {
  TinyNet net, proxy;
  net->to(torch::kDouble);
  proxy->to(torch::kDouble);
  torch::Tensor x, y;  // not a structured binding: lambdas below capture them
  std::tie(x, y) = double_data(16);
  auto x_adv = shifted(x);
  iat::train::FixedExamples adv(x_adv);
  iat::train::AWP awp(iat::train::AWPOptions().warmup_epochs(0));
  auto expected_v = proxy_awp(net, proxy, 5e-3, 0.01, [&](TinyNet& m) {
    return at::cross_entropy_loss(m(x), y) + 6.0 * mean_kl(m(x), m(x_adv));
  });
  auto v = awp.perturb(net, [&](const iat::ModelRef& m) { return iat::train::trades_loss(m, x, y, adv).loss; }, 0);
  for (size_t i = 0; i < v.names.size(); ++i) {
    INFO(v.names[i]);
    CHECK(max_abs_diff(v.v[i], expected_v.at(v.names[i])) < kTight);
  }
  awp.restore(net, v);
}
