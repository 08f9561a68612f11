#pragma once
/// \file
/// iat::UniversalInversePerturbation: one inverse perturbation per class, updated by one signed descent
/// step per batch (UIAT, docs/method.md §4).

#include <iat/attacks/attack.hpp>
#include <iat/detail/compat.hpp>
#include <iat/detail/compiled.hpp>
#include <iat/inverse/inverse_loss.hpp>

#include <torch/arg.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <functional>
#include <ostream>
#include <utility>
#include <vector>

namespace iat {

/// How "inverse momentum" γ is read (docs/method.md §4.3, an open choice).
enum class InverseMomentum {
  /// MI-FGSM style (the default): m_c ← γ·m_c + g_c/‖g_c‖₁, δ steps along sign(m_c).
  kNormalizedGradient,
  /// The other reading: δ steps along sign(g_c) and γ is the rate of a per-example exponential moving
  /// average of the reference probabilities, kept in an iat::OneOffCache (iat::train::uiat_loss does it).
  kTargetEMA,
};

/// Options of iat::UniversalInversePerturbation. Required: the number of classes C and the shape of one
/// input. Defaults: ε' = 4/255, α' = 4/255, β = 1, output-level KL regulariser, momentum 0 (the training
/// loop sets γ = 0.9 at epoch T).
///
/// The step size follows the budget: unset, α' = ε' (the paper's 4/255 at ε' = 4/255, 0.05 at ε' = 0.05),
/// so that without momentum every element of δ is −ε', 0 or +ε'. δ takes one step per batch and
/// accumulates over batches, so no steps × α' rule applies.
///
/// **Example**
/// \code
/// auto o = iat::UniversalInversePerturbationOptions(10, {3, 32, 32});   // CIFAR-10
/// auto single_step = iat::UniversalInversePerturbationOptions(10, {3, 32, 32}).beta(0);  // CE only
/// \endcode
struct UniversalInversePerturbationOptions {
  UniversalInversePerturbationOptions(int64_t num_classes, std::vector<int64_t> input_shape)
      : num_classes_(num_classes), input_shape_(std::move(input_shape)) {}

  /// Number of classes C: one δ_c per class.
  TORCH_ARG(int64_t, num_classes);
  /// Shape of one input, e.g. {3, 32, 32}; δ has shape [C, input_shape...].
  TORCH_ARG(std::vector<int64_t>, input_shape);
  /// Radius ε' of each δ_c (L∞), in pixel units.
  TORCH_ARG(double, eps) = 4.0 / 255;
  /// Step size α' of the one signed step per batch; unset means ε' (4/255 at ε' = 4/255).
  /// `effective_step_size()` tells the value in force.
  TORCH_ARG(iat::optional<double>, step_size) = iat::nullopt;
  /// Weight β of the regulariser in L_Inv; 0 gives plain CE (single-step training, supplement §2.3).
  TORCH_ARG(double, beta) = 1.0;
  /// Form of the regulariser (output-level KL or feature-level squared L2).
  TORCH_ARG(InverseRegularizer, regularizer) = InverseRegularizer::kOutputKL;
  /// Weight of the pull term towards h(x).
  TORCH_ARG(double, pull_weight) = 1.0;
  /// Weight of the push term away from h(x') (used when x' is given).
  TORCH_ARG(double, push_weight) = 1.0;
  /// Argument order of the output-level KL (see iat::InverseLossOptions).
  TORCH_ARG(KLDirection, kl_direction) = KLDirection::kReferenceSecond;
  /// Inverse momentum γ in [0, 1): 0 until the loop switches it on (`uip->options.momentum(0.9)`).
  TORCH_ARG(double, momentum) = 0.0;
  /// How γ acts: normalised-gradient momentum (default) or an EMA of per-example targets.
  TORCH_ARG(InverseMomentum, momentum_form) = InverseMomentum::kNormalizedGradient;
  /// For update(): keep the model's mode instead of switching it to eval mode for the gradient.
  TORCH_ARG(bool, keep_train_mode) = false;
  /// Refuse a model whose outputs are evidently probabilities (every row non-negative and summing to 1):
  /// L_Inv applies softmax to logits. Read with the label check update() and update_from_logits() make
  /// anyway, so it costs nothing.
  TORCH_ARG(bool, check_logits) = true;

 public:
  /// The step size in force: `step_size` if set, otherwise ε'.
  double effective_step_size() const { return step_size_ ? *step_size_ : eps_; }
  /// The L_Inv parameters of these options.
  InverseLossOptions loss_options() const {
    return detail::inverse_loss_options_of(*this);
  }
  /// γ of the gradient momentum: `momentum` for kNormalizedGradient, 0 for kTargetEMA.
  double gradient_momentum() const {
    return momentum_form_ == InverseMomentum::kNormalizedGradient ? momentum_ : 0.0;
  }
};

/// Class-wise universal inverse perturbations (docs/method.md §4).
///
/// State (module buffers, so they follow `.to(device)`, `torch::save` and `torch::load`): `delta`
/// [C, input_shape...] initialised to zero, and `momentum_buffer` of the same shape, zero until momentum
/// is switched on. `forward(x, y)` returns x̌ = clamp(x + δ_y, 0, 1). Per batch, one signed step:
/// g_c = Σ_{i: y_i=c} ∇_{x̌_i} L_Inv(x̌_i, y_i); with γ = 0, δ_c ← clip_{[−ε',ε']}(δ_c − α'·sign(g_c));
/// with γ > 0, m_c ← γ·m_c + g_c/‖g_c‖₁ and the step uses sign(m_c). Classes absent from the batch keep
/// δ_c and m_c.
///
/// Four ways to step:
/// - `update(model, x, y[, x_adv])`: computes the gradient itself (one forward and one input-gradient
///   backward of x̌, plus no-grad forwards of x and x' for the regulariser's targets), in eval mode
///   unless `keep_train_mode`, like an attack.
/// - `update_from_logits(x_check, y, logits, targets[, features])`, the fused path: when the loop already
///   forwards x̌ for the alignment loss, pass x̌ (made with `requires_grad_(true)`) and its logits; the
///   gradient comes from one backward through that graph (retained for the loop's own backward), with no
///   second forward of x̌. The gradient is then taken in the loop's mode (train mode).
/// - `update_fused(model, x, y, x_adv)`: the fused path in one call: forwards x' and x̌ with gradients,
///   takes the targets, steps through x̌'s graph and returns both logits for the loop's loss.
/// - `step(y, grad)`: the step itself, from per-example input gradients at x̌ (for any other loss).
///
/// Data-parallel training: `set_gradient_reducer(fn)` installs a hook called with the per-class summed
/// gradient [C, ...] and the per-class example counts [C] before every step; it must sum both over the
/// workers in place (an all-reduce), so that all workers take the same step and keep identical δ.
///
/// **Example**
/// \code
/// iat::UniversalInversePerturbation uip(iat::UniversalInversePerturbationOptions(10, {3, 32, 32}));
/// uip->to(device);
/// // per batch, before the optimiser step:
/// uip->update(net, x, y, x_adv);
/// auto loss = ce(net(x_adv), y) + iat::functional::alignment_loss(net(uip(x, y)), net(x_adv));
/// if (epoch == 75) uip->options.momentum(0.9);                           // at epoch T
/// torch::save(uip, "uip.pt");
/// \endcode
class UniversalInversePerturbationImpl : public torch::nn::Cloneable<UniversalInversePerturbationImpl> {
 public:
  /// The data-parallel hook: sums `class_grad` [C, ...] and `class_count` [C] over workers in place.
  using GradientReducer = std::function<void(torch::Tensor& class_grad, torch::Tensor& class_count)>;

  explicit UniversalInversePerturbationImpl(UniversalInversePerturbationOptions options_) : options(std::move(options_)) {
    reset();
  }

  /// Validates the options and creates zero δ and momentum buffers on the CPU (run by the constructor
  /// and by clone()).
  void reset() override;

  /// x̌ = clamp(x + δ_y, 0, 1), on x's device and dtype.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& y);

  /// One step from the gradient of L_Inv at x̌ = forward(x, y), computed with `model` at its current
  /// weights; `x_adv` (optional) feeds the push term.
  void update(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& x_adv = {});

  /// The fused step: `logits` (and `features` for kFeatureL2) are the model's outputs for `x_check`,
  /// which must require grad and be forward(x, y) of this batch; `targets` are h(x) and h(x') for the
  /// regulariser. The graph is retained for the caller's backward.
  void update_from_logits(const torch::Tensor& x_check, const torch::Tensor& y, const torch::Tensor& logits,
                          const InverseTargets& targets = {}, const torch::Tensor& features = {});

  /// The training forwards update_fused made, with their graphs: f(x') and f(x̌) for the loop's loss.
  struct FusedForwards {
    torch::Tensor adv_logits;    ///< f(x'), for CE(f(x'), y) and the alignment term
    torch::Tensor check_logits;  ///< f(x̌) with x̌ = forward(x, y) before the step, for the alignment term
  };

  /// UIAT's fused step in one call, as iat::train::uiat_loss takes it: forwards x' and x̌ = forward(x, y)
  /// in the model's current mode with gradients (the loop's training forwards), takes the regulariser's
  /// h(x') from the first (free) and h(x) from a no-grad eval-mode forward of x (only when β·pull ≠ 0; eval
  /// mode so that batch-norm statistics see no extra batch), and steps δ through x̌'s graph
  /// (update_from_logits, graph retained). Returns both logits for the loop's backward. Cost: the two
  /// forwards the loss needs anyway, one input-gradient backward, and the no-grad forward of x.
  /// `natural_logits`, when given, are that no-grad eval-mode f(x), already computed by the caller: they
  /// serve as h(x) of the output-level regulariser instead of a forward of its own (kFeatureL2 needs the
  /// features and forwards x anyway).
  ///
  /// **Example**
  /// \code
  /// auto x_adv = pgd.perturb(net, x, y);
  /// auto fwd = uip->update_fused(net, x, y, x_adv);
  /// auto loss = torch::nn::functional::cross_entropy(fwd.adv_logits, y) +
  ///             iat::functional::alignment_loss(fwd.check_logits, fwd.adv_logits);
  /// \endcode
  FusedForwards update_fused(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                             const torch::Tensor& x_adv, const torch::Tensor& natural_logits = {});

  /// The step from per-example gradients `grad` [N, input_shape...] of the inverse loss at x̌.
  void step(const torch::Tensor& y, const torch::Tensor& grad);

  /// Installs (or, with an empty function, removes) the data-parallel gradient hook.
  void set_gradient_reducer(GradientReducer reducer) { reducer_ = std::move(reducer); }

  /// δ [C, input_shape...] (the buffer itself: modify only under a NoGradGuard).
  const torch::Tensor& delta() const { return delta_; }
  /// The momentum buffer m [C, input_shape...].
  const torch::Tensor& momentum_buffer() const { return momentum_buffer_; }

  /// Prints `iat::UniversalInversePerturbation(num_classes=10, input_shape=[3, 32, 32], ...)`.
  void pretty_print(std::ostream& stream) const override;

  /// The options in force; `momentum` is meant to be changed by the loop at epoch T.
  UniversalInversePerturbationOptions options;

 private:
  void check_step_options() const {
    const char* who = "iat::UniversalInversePerturbation";
    detail::check_budget(who, "eps", options.eps());
    detail::check_positive(who, "step_size", options.effective_step_size());
    detail::check_non_negative(who, "beta", options.beta());
    detail::check_non_negative(who, "pull_weight", options.pull_weight());
    detail::check_non_negative(who, "push_weight", options.push_weight());
    TORCH_CHECK_VALUE(options.momentum() >= 0.0 && options.momentum() < 1.0, who,
                      ": momentum must be in [0, 1), got ", options.momentum());
  }

  void check_num_classes(const char* who, int64_t model_classes) const {
    TORCH_CHECK_VALUE(model_classes == options.num_classes(), who, ": the model has ", model_classes,
                      " outputs but the perturbation has num_classes = ", options.num_classes());
  }

  void check_batch(const char* who, const torch::Tensor& x, const torch::Tensor& y) const {
    detail::check_images(who, x);
    detail::check_labels(who, x, y);
    TORCH_CHECK_VALUE(x.sizes().slice(1) == delta_.sizes().slice(1), who, ": input shape ",
                      x.sizes().slice(1), " differs from the perturbation's input_shape ",
                      delta_.sizes().slice(1), " (x has shape ", x.sizes(), ")");
    detail::check_label_range(who, y, options.num_classes());
    TORCH_CHECK_VALUE(x.device() == delta_.device() && y.device() == delta_.device(), who, ": x and y are on ",
                      x.device(), " and ", y.device(), " but the perturbation is on ", delta_.device(),
                      " (call uip->to(device))");
  }

  torch::Tensor delta_;
  torch::Tensor momentum_buffer_;
  GradientReducer reducer_;
};

/// A module holder for UniversalInversePerturbationImpl (see there).
TORCH_MODULE(UniversalInversePerturbation);

#if IAT_HEADER_BODIES  // the entry points' bodies: inline here, or compiled once (iat/detail/compiled.hpp)

IAT_INLINE void UniversalInversePerturbationImpl::reset() {
  const char* who = "iat::UniversalInversePerturbation";
  detail::check_at_least(who, "num_classes", options.num_classes(), 1);
  TORCH_CHECK_VALUE(!options.input_shape().empty(), who, ": input_shape must name the shape of one input, e.g. {3, 32, 32}");
  for (int64_t d : options.input_shape()) {
    TORCH_CHECK_VALUE(d > 0, who, ": input_shape must have positive sizes, got ", c10::IntArrayRef(options.input_shape()));
  }
  check_step_options();
  std::vector<int64_t> shape{options.num_classes()};
  shape.insert(shape.end(), options.input_shape().begin(), options.input_shape().end());
  delta_ = register_buffer("delta", torch::zeros(shape));
  momentum_buffer_ = register_buffer("momentum_buffer", torch::zeros(shape));
}

IAT_INLINE torch::Tensor UniversalInversePerturbationImpl::forward(const torch::Tensor& x, const torch::Tensor& y) {
  const char* who = "iat::UniversalInversePerturbation";
  check_batch(who, x, y);
  return (x + delta_.index_select(0, y).to(x.scalar_type())).clamp(0.0, 1.0);
}

IAT_INLINE void UniversalInversePerturbationImpl::update(const ModelRef& model, const torch::Tensor& x,
                                                         const torch::Tensor& y, const torch::Tensor& x_adv) {
  const char* who = "iat::UniversalInversePerturbation::update";
  detail::AttackScope scope(who, model, x, y, options.keep_train_mode());
  check_batch(who, x, y);
  if (x_adv.defined()) {
    TORCH_CHECK_VALUE(x_adv.sizes() == x.sizes(), who, ": x_adv must have x's shape ", x.sizes(), ", got ",
                      x_adv.sizes());
  }
  const auto loss_options = options.loss_options();
  detail::check_model_for_inverse_loss(who, model, loss_options);
  auto targets = detail::inverse_targets(model, x, x_adv, loss_options);
  torch::Tensor x_check;
  {
    torch::NoGradGuard no_grad;
    x_check = forward(x.detach(), y);
  }
  auto grad = detail::inverse_input_gradient(who, model, x_check, y, loss_options, targets).first;
  step(y, grad);
}

IAT_INLINE void UniversalInversePerturbationImpl::step(const torch::Tensor& y, const torch::Tensor& grad) {
  const char* who = "iat::UniversalInversePerturbation::step";
  check_step_options();
  TORCH_CHECK_VALUE(grad.defined() && grad.dim() == delta_.dim() && grad.sizes().slice(1) == delta_.sizes().slice(1),
                    who, ": grad must have shape [N] + input_shape ", c10::IntArrayRef(options.input_shape()), ", got ",
                    grad.defined() ? grad.sizes() : c10::IntArrayRef{});
  detail::check_labels(who, grad, y);
  detail::check_label_range(who, y, options.num_classes());
  TORCH_CHECK_VALUE(grad.device() == delta_.device() && y.device() == delta_.device(), who,
                    ": grad and y must be on the perturbation's device ", delta_.device(), ", got ", grad.device(),
                    " and ", y.device(), " (call uip->to(device))");
  torch::NoGradGuard no_grad;
  const int64_t classes = options.num_classes();
  auto class_grad = torch::zeros_like(delta_).index_add_(0, y, grad.to(delta_.scalar_type()));
  auto class_count = torch::zeros({classes}, y.options()).index_add_(0, y, torch::ones_like(y));
  if (reducer_) reducer_(class_grad, class_count);

  std::vector<int64_t> view(static_cast<size_t>(delta_.dim()), 1);
  view[0] = classes;
  auto present = (class_count > 0).view(view);
  const double gamma = options.gradient_momentum();
  torch::Tensor direction;
  if (gamma > 0.0) {
    auto l1 = class_grad.flatten(1).abs().sum(1).clamp_min(1e-12).view(view);
    auto m = gamma * momentum_buffer_ + class_grad / l1;
    momentum_buffer_.copy_(torch::where(present, m, momentum_buffer_));
    direction = momentum_buffer_.sign();
  } else {
    direction = class_grad.sign();
  }
  auto stepped = (delta_ - options.effective_step_size() * direction).clamp(-options.eps(), options.eps());
  delta_.copy_(torch::where(present, stepped, delta_));
}

IAT_INLINE void UniversalInversePerturbationImpl::pretty_print(std::ostream& stream) const {
  stream << "iat::UniversalInversePerturbation(num_classes=" << options.num_classes()
         << ", input_shape=" << c10::IntArrayRef(options.input_shape()) << ", eps=" << options.eps()
         << ", step_size=" << options.effective_step_size() << ", beta=" << options.beta()
         << ", momentum=" << options.momentum() << ")";
}

IAT_INLINE void UniversalInversePerturbationImpl::update_from_logits(const torch::Tensor& x_check, const torch::Tensor& y,
                                                                     const torch::Tensor& logits,
                                                                     const InverseTargets& targets,
                                                                     const torch::Tensor& features) {
  const char* who = "iat::UniversalInversePerturbation::update_from_logits";
  check_batch(who, x_check, y);
  TORCH_CHECK_VALUE(x_check.requires_grad() && logits.defined() && logits.requires_grad(), who,
                    ": x_check must require grad and logits must be computed from it with gradients enabled "
                    "(auto x_check = uip(x, y).requires_grad_(true); auto logits = net(x_check);)");
  detail::check_model_output(who, logits, y, options.check_logits(),
                             "set UniversalInversePerturbationOptions::check_logits(false) to use such a model");
  check_num_classes(who, logits.size(1));
  at::AutoGradMode grad_mode(true);
  auto loss = functional::inverse_loss(logits, y, options.loss_options().check_logits(false), targets, features);
  auto grad = torch::autograd::grad({loss.sum()}, {x_check}, {}, /*retain_graph=*/true)[0];
  step(y, grad.detach());
}

IAT_INLINE UniversalInversePerturbationImpl::FusedForwards UniversalInversePerturbationImpl::update_fused(
    const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& x_adv,
    const torch::Tensor& natural_logits) {
  const char* who = "iat::UniversalInversePerturbation::update_fused";
  TORCH_CHECK_VALUE(x_adv.defined() && x_adv.sizes() == x.sizes(), who, ": x_adv must have x's shape ", x.sizes(),
                    ", got ", x_adv.defined() ? x_adv.sizes() : c10::IntArrayRef{});
  const auto loss_options = options.loss_options();
  detail::check_model_for_inverse_loss(who, model, loss_options);
  auto adv_out = detail::forward_for_inverse_loss(model, x_adv, loss_options);
  auto x_check = forward(x.detach(), y).requires_grad_(true);
  auto check_out = detail::forward_for_inverse_loss(model, x_check, loss_options);
  InverseTargets targets;
  if (detail::needs_natural_target(loss_options)) {
    if (natural_logits.defined() && !detail::needs_features(loss_options)) {
      TORCH_CHECK_VALUE(natural_logits.dim() == 2 && natural_logits.size(0) == x.size(0), who,
                        ": natural_logits must be [N, C] with N = ", x.size(0), ", got ", natural_logits.sizes());
      targets.natural = natural_logits.detach();
    } else {
      ModeGuard eval(model, false);
      targets.natural = detail::inverse_targets(model, x, {}, loss_options).natural;
    }
  }
  if (detail::needs_adversarial_target(loss_options)) {
    targets.adversarial = (detail::needs_features(loss_options) ? adv_out.features : adv_out.logits).detach();
  }
  update_from_logits(x_check, y, check_out.logits, targets, check_out.features);
  return {adv_out.logits, check_out.logits};
}
#endif  // IAT_HEADER_BODIES

}  // namespace iat
