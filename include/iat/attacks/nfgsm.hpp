#pragma once
/// \file
/// iat::NFGSM: N-FGSM (de Jorge et al. 2022), FGSM from a large noise without projection to the ε-ball.

#include <iat/attacks/attack.hpp>
#include <iat/detail/batch_draw.hpp>
#include <iat/detail/compat.hpp>
#include <iat/options_field.hpp>

#include <torch/arg.h>
#include <torch/types.h>

namespace iat {

/// Options of iat::NFGSM: η ~ U(−kε, kε) with k = `noise_scale` (2), step α = ε unless set.
///
/// **Example**
/// \code
/// auto o = iat::NFGSMOptions().eps(8.0 / 255);  // η ~ U(−16/255, 16/255), α = 8/255
/// \endcode
struct NFGSMOptions {
  /// ε in pixel units: the noise is U(−kε, kε) and the default step is ε.
  TORCH_ARG(double, eps) = 8.0 / 255;
  /// Noise magnitude k, in multiples of ε.
  TORCH_ARG(double, noise_scale) = 2.0;
  /// Step size α; unset means ε.
  TORCH_ARG(iat::optional<double>, step_size) = iat::nullopt;
  /// Clamp x + η into [0, 1] before taking the gradient (the formula of docs/method.md §1.4 doesn't).
  TORCH_ARG(bool, clamp_start) = false;
  /// Keep the model's current mode instead of switching it to eval mode during the attack.
  TORCH_ARG(bool, keep_train_mode) = false;


 public:
  /// The step size in force: `step_size` if set, otherwise ε.
  double effective_step_size() const { return step_size_ ? *step_size_ : eps_; }
};

/// N-FGSM (docs/method.md §1.4): η ~ U(−kε, kε); δ = η + α·sign(∇_x CE(f(x+η), y)); x' = clamp(x + δ, 0, 1).
/// There is **no** projection back to the ε-ball: ‖x' − x‖∞ may reach (k+1)ε.
///
/// **Example**
/// \code
/// iat::NFGSM attack;                                  // paper defaults at ε = 8/255
/// torch::Tensor x_adv = attack.perturb(net, x, y);
/// \endcode
class NFGSM : public Attack {
 public:
  explicit NFGSM(NFGSMOptions o = {}) : options(std::move(o)) { check_options(); }

  /// The options (docs/options.md): `nfgsm.options.noise_scale(3.0)`; checked at each perturb.
  OptionsField<NFGSMOptions> options;

  std::string name() const override { return "N-FGSM"; }

  torch::Tensor perturb(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y) override {
    const char* who = "iat::NFGSM";
    check_options();
    const NFGSMOptions& o = options;
    detail::AttackScope scope(who, model, x, y, o.keep_train_mode());
    const double k_eps = o.noise_scale() * o.eps();
    auto x0 = x.detach();
    auto eta = detail::draw_for_batch(x0, [&](const torch::Tensor& like) {
      return torch::empty_like(like).uniform_(-k_eps, k_eps);
    });
    if (o.clamp_start()) eta = (x0 + eta).clamp(0.0, 1.0) - x0;
    auto grad = detail::input_gradient(model, x0 + eta, [&](const torch::Tensor& logits) {
                  detail::check_model_output(who, logits, y);
                  return functional::cross_entropy(logits, y, LogitsCheck::kOff);
                }).first;
    return (x0 + eta + o.effective_step_size() * grad.sign()).clamp(0.0, 1.0);
  }

 private:
  void check_options() const {
    detail::check_budget("iat::NFGSM", "eps", options.eps());
    detail::check_non_negative("iat::NFGSM", "noise_scale", options.noise_scale());
    detail::check_positive("iat::NFGSM", "step_size", options.effective_step_size());
  }
};

}  // namespace iat
