#pragma once
/// \file
/// iat::FGSM: the fast gradient sign method, plain (Goodfellow et al.) or with a random start (FGSM-RS,
/// Wong et al. 2020).

#include <iat/attacks/attack.hpp>
#include <iat/detail/batch_draw.hpp>
#include <iat/detail/compat.hpp>
#include <iat/options_field.hpp>

#include <torch/arg.h>
#include <torch/types.h>

namespace iat {

/// Options of iat::FGSM. Plain FGSM by default; `random_start(true)` gives FGSM-RS with the step size
/// 1.25ε of Wong et al. unless `step_size` is set.
///
/// **Example**
/// \code
/// auto fgsm = iat::FGSMOptions();                        // x + ε·sign(∇)
/// auto fgsm_rs = iat::FGSMOptions().random_start(true);  // FGSM-RS, α = 1.25ε
/// \endcode
struct FGSMOptions {
  /// Radius ε of the L∞ ball, in pixel units.
  TORCH_ARG(double, eps) = 8.0 / 255;
  /// Step size α; unset means ε for plain FGSM and 1.25ε with a random start.
  TORCH_ARG(iat::optional<double>, step_size) = iat::nullopt;
  /// Start from η ~ U(−ε, ε) (FGSM-RS).
  TORCH_ARG(bool, random_start) = false;
  /// Clamp x + η into [0, 1] before taking the gradient (Wong et al.'s code does; the formula of
  /// docs/method.md §1.3 doesn't).
  TORCH_ARG(bool, clamp_start) = false;
  /// Keep the model's current mode instead of switching it to eval mode during the attack.
  TORCH_ARG(bool, keep_train_mode) = false;


 public:
  /// The step size in force: `step_size` if set, otherwise ε or 1.25ε.
  double effective_step_size() const { return step_size_ ? *step_size_ : (random_start_ ? 1.25 : 1.0) * eps_; }
};

/// One signed gradient step on CE (docs/method.md §1.3). With a random start:
/// η ~ U(−ε, ε); δ = Π_ε(η + α·sign(∇_x CE(f(x+η), y))); x' = clamp(x + δ, 0, 1).
/// Without: δ = Π_ε(α·sign(∇_x CE(f(x), y))).
///
/// **Example**
/// \code
/// iat::FGSM fgsm_rs(iat::FGSMOptions().random_start(true));
/// torch::Tensor x_adv = fgsm_rs.perturb(net, x, y);
/// \endcode
class FGSM : public Attack {
 public:
  explicit FGSM(FGSMOptions o = {}) : options(std::move(o)) { check_options(); }

  /// The options (docs/options.md): `fgsm.options.random_start(true)`; checked at each perturb.
  OptionsField<FGSMOptions> options;

  std::string name() const override { return options.random_start() ? "FGSM-RS" : "FGSM"; }

  torch::Tensor perturb(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y) override {
    const char* who = "iat::FGSM";
    check_options();
    const FGSMOptions& o = options;
    detail::AttackScope scope(who, model, x, y, o.keep_train_mode());
    const double eps = o.eps();
    auto x0 = x.detach();
    auto eta = o.random_start() ? detail::draw_for_batch(x0, [&](const torch::Tensor& like) {
                                    return torch::empty_like(like).uniform_(-eps, eps);
                                  })
                                : torch::zeros_like(x0);
    if (o.clamp_start()) eta = (x0 + eta).clamp(0.0, 1.0) - x0;
    auto grad = detail::input_gradient(model, x0 + eta, [&](const torch::Tensor& logits) {
                  detail::check_model_output(who, logits, y);
                  return functional::cross_entropy(logits, y, LogitsCheck::kOff);
                }).first;
    auto delta = (eta + o.effective_step_size() * grad.sign()).clamp(-eps, eps);
    return (x0 + delta).clamp(0.0, 1.0);
  }

 private:
  void check_options() const {
    detail::check_budget("iat::FGSM", "eps", options.eps());
    detail::check_positive("iat::FGSM", "step_size", options.effective_step_size());
  }
};

}  // namespace iat
