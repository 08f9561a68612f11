#pragma once
/// \file
/// iat::InverseAttack: instance-wise inverse adversarial examples, the "friend" of IAT (docs/method.md §2,
/// Algorithm 1 of the supplement).

#include <iat/attacks/attack.hpp>
#include <iat/detail/batch_draw.hpp>
#include <iat/detail/compat.hpp>
#include <iat/detail/compiled.hpp>
#include <iat/inverse/inverse_loss.hpp>
#include <iat/options_field.hpp>
#include <iat/threat_model.hpp>

#include <torch/arg.h>
#include <torch/types.h>

#include <string>
#include <utility>

namespace iat {

/// Options of iat::InverseAttack. Defaults are the paper's: ε' = 4/255, α' = 2/255, n = 5 steps, β = 1,
/// random init 0.001·N(0, 1), output-level KL regulariser.
///
/// The step size follows the budget as PGD's does: unset, α' = ε'/2 (the paper's 2/255 at ε' = 4/255,
/// 0.025 at ε' = 0.05). When steps × α' < ε' the constructor warns once, naming the numbers.
///
/// **Example**
/// \code
/// auto o = iat::InverseAttackOptions();                                     // IAT defaults
/// auto wide = iat::InverseAttackOptions().eps(0.05);                        // α' = 0.025
/// auto ce_only = iat::InverseAttackOptions().beta(0);                       // descend CE alone
/// auto feat = iat::InverseAttackOptions().regularizer(iat::InverseRegularizer::kFeatureL2);
/// \endcode
struct InverseAttackOptions : ThreatModelOptions<InverseAttackOptions> {
  /// The inverse ball: norm L∞ as in the paper, or L2 (steps along −∇/‖∇‖₂); radius ε' = 4/255.
  InverseAttackOptions() : ThreatModelOptions(4.0 / 255) {}
  /// Step size α'; unset means ε'/2 (2/255 at ε' = 4/255). `effective_step_size()` tells the value in force.
  TORCH_ARG(iat::optional<double>, step_size) = iat::nullopt;
  /// Number of descent steps n.
  TORCH_ARG(int64_t, steps) = 5;
  /// Weight β of the regulariser R in L_Inv = CE + β·R; 0 gives plain CE.
  TORCH_ARG(double, beta) = 1.0;
  /// Form of R: output-level KL (default) or feature-level squared L2 (needs `forward_features`).
  TORCH_ARG(InverseRegularizer, regularizer) = InverseRegularizer::kOutputKL;
  /// Weight of the pull term towards h(x).
  TORCH_ARG(double, pull_weight) = 1.0;
  /// Weight of the push term away from h(x'); used only when x_adv is passed to perturb().
  TORCH_ARG(double, push_weight) = 1.0;
  /// Argument order of the output-level KL (see iat::InverseLossOptions).
  TORCH_ARG(KLDirection, kl_direction) = KLDirection::kReferenceSecond;
  /// Start from x + init_std·N(0, 1) (Algorithm 1, line 5) instead of x itself.
  TORCH_ARG(bool, random_init) = true;
  /// Standard deviation of the random start.
  TORCH_ARG(double, init_std) = 0.001;
  /// Keep the model's current mode instead of switching it to eval mode during generation.
  TORCH_ARG(bool, keep_train_mode) = false;
  /// Refuse a model whose outputs are evidently probabilities (every row non-negative and summing to 1):
  /// L_Inv applies softmax to logits. Read with the label check made at every step, so it costs nothing.
  TORCH_ARG(bool, check_logits) = true;

 public:
  /// The step size in force: `step_size` if set, otherwise ε'/2.
  double effective_step_size() const { return step_size_ ? *step_size_ : eps() / 2.0; }
  /// The L_Inv parameters of these options.
  InverseLossOptions loss_options() const {
    return detail::inverse_loss_options_of(*this);
  }
};

/// Instance-wise inverse adversarial examples (docs/method.md §2): x̃ = x + z, z ~ init_std·N(0, 1); then n times
/// x̃ ← Π_{B_ε'(x)∩[0,1]}(x̃ − α'·sign(∇_x̃ L_Inv(x̃, y))), descending
/// L_Inv = CE(f(x̃), y) + β·(pull·D(h(x̃), h(x)) − push·D(h(x̃), h(x'))) with h(x), h(x') computed once.
///
/// It follows the conventions of iat::Attack (eval mode unless keep_train_mode, mode restored, no `.grad`
/// on parameters, works under a NoGradGuard, detached result in [0,1] on x's device) but does not derive
/// from it: it descends instead of ascending, and perturb() takes the adversarial batch x' as an optional
/// fourth argument (the push term needs it; without it the push term is dropped).
///
/// **Example**
/// \code
/// iat::PGD pgd;
/// iat::InverseAttack inverse;                                   // ε' = 4/255, α' = ε'/2 = 2/255, 5 steps
/// auto x_adv = pgd.perturb(net, x, y);
/// auto x_inv = inverse.perturb(net, x, y, x_adv);
/// auto loss = torch::nn::functional::cross_entropy(net(x_adv), y)
///           + iat::functional::alignment_loss(net(x_inv), net(x_adv));   // IAT (docs/method.md §3)
/// \endcode
class InverseAttack {
 public:
  explicit InverseAttack(InverseAttackOptions o = {}) : options(std::move(o)) { check_options(); }

  /// The options (docs/options.md): `inverse.options.steps(2)`; checked at each perturb.
  OptionsField<InverseAttackOptions> options;

  /// "InverseAttack", for reports.
  std::string name() const { return "InverseAttack"; }

  /// An inverse adversarial version of the batch x with labels y; `x_adv` (optional) is the
  /// adversarial batch the push term moves away from.
  torch::Tensor perturb(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                        const torch::Tensor& x_adv = {});

 private:
  void check_options() const {
    const char* who = "iat::InverseAttack";
    const InverseAttackOptions& o = options;
    o.threat_model().check(who);
    detail::check_positive(who, "step_size", o.effective_step_size());
    detail::check_at_least(who, "steps", o.steps(), 1);
    detail::check_non_negative(who, "beta", o.beta());
    detail::check_non_negative(who, "pull_weight", o.pull_weight());
    detail::check_non_negative(who, "push_weight", o.push_weight());
    detail::check_positive(who, "init_std", o.init_std());
    detail::warn_if_steps_fall_short(who, "eps", o.eps(), o.steps(), o.effective_step_size(), o.step_size().has_value(),
                                     "eps/2", o.eps() / 2.0);
  }
};

#if IAT_HEADER_BODIES  // the entry points' bodies: inline here, or compiled once (iat/detail/compiled.hpp)

IAT_INLINE torch::Tensor InverseAttack::perturb(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                                                const torch::Tensor& x_adv) {
  const char* who = "iat::InverseAttack";
  check_options();
  const InverseAttackOptions& o = options;
  detail::AttackScope scope(who, model, x, y, o.keep_train_mode());
  if (x_adv.defined()) {
    TORCH_CHECK_VALUE(x_adv.sizes() == x.sizes(), who, ": x_adv must have x's shape ", x.sizes(), ", got ",
                      x_adv.sizes());
  }
  const auto loss_options = o.loss_options();
  detail::check_model_for_inverse_loss(who, model, loss_options);
  auto x0 = x.detach();
  auto targets = detail::inverse_targets(model, x0, x_adv, loss_options);

  const double step_size = o.effective_step_size();
  const ThreatModel ball = o.threat_model();
  auto x_inv = x0;
  if (o.random_init()) {
    auto z = detail::draw_for_batch(x0, [](const torch::Tensor& like) { return torch::randn_like(like); });
    x_inv = ball.project(x0 + o.init_std() * z, x0);
  }
  for (int64_t k = 0; k < o.steps(); ++k) {
    auto grad = detail::inverse_input_gradient(who, model, x_inv, y, loss_options, targets).first;
    x_inv = ball.project(x_inv - step_size * ball.ascent_direction(grad), x0);
  }
  return x_inv;
}
#endif  // IAT_HEADER_BODIES

}  // namespace iat
