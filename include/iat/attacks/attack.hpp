#pragma once
/// \file
/// What every iat attack shares: the loss an attack maximises, the abstract `iat::Attack` interface, and
/// (in `iat::detail`) the scope guard and input-gradient helper the attacks are written with. The threat
/// model (norm, ε, projection, random starts) is iat/threat_model.hpp's.

#include <iat/detail/checks.hpp>
#include <iat/functional/losses.hpp>
#include <iat/model_ref.hpp>
#include <iat/threat_model.hpp>

#include <torch/csrc/autograd/autograd.h>
#include <torch/types.h>

#include <string>

namespace iat {

/// The loss an attack ascends (docs/method.md §1.2).
enum class Loss {
  kCE,           ///< cross-entropy CE(f(x'), y)
  kMargin,       ///< CW margin max_{j≠y} z_j − z_y
  kDLR,          ///< AutoAttack's difference-of-logits ratio
  kTargetedDLR,  ///< targeted DLR towards the class ranked `target_rank` on the clean input
  kKL,           ///< KL(p(x) ‖ p(x')) to the clean prediction, as TRADES
};

/// The interface of every attack: `x_adv = attack.perturb(model, x, y)`.
///
/// `model` is anything an `iat::ModelRef` views (module holder, `std::shared_ptr` to a module, TorchScript
/// module, lambda). `x` is a float batch in [0,1], `y` int64 labels. The result is detached, on x's
/// device, with x's shape. Attacks take gradients with respect to the input only, leave no `.grad` on
/// parameters, work inside a `torch::NoGradGuard`, and restore the model's train flag on exit.
///
/// **Example**
/// \code
/// std::vector<std::unique_ptr<iat::Attack>> attacks;
/// attacks.push_back(std::make_unique<iat::PGD>(iat::PGDOptions().steps(20)));
/// for (auto& a : attacks) torch::Tensor x_adv = a->perturb(net, x, y);
/// \endcode
class Attack {
 public:
  virtual ~Attack() = default;
  /// An adversarial version of the batch x with labels y.
  virtual torch::Tensor perturb(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y) = 0;
  /// perturb(model, x, y) for a caller that already holds `clean_logits`, the model's logits of x computed
  /// without gradients in evaluation mode: an attack whose loss needs that forward (iat::PGD on kKL or
  /// kTargetedDLR, in evaluation mode) uses them instead of its own, with the same result bit for bit. The
  /// default ignores them. A recipe that needs p(x) besides the attack (TRADES with UIAT) saves a forward.
  virtual torch::Tensor perturb_given_clean(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                                            const torch::Tensor& clean_logits) {
    (void)clean_logits;
    return perturb(model, x, y);
  }
  /// A short name for reports, e.g. "PGD".
  virtual std::string name() const = 0;
};

namespace detail {

/// Sets up an attack's call: validates x and y, enables autograd (also inside a NoGradGuard), and puts
/// the model in eval mode unless `keep_train_mode`, restoring its mode on exit.
class AttackScope {
 public:
  AttackScope(const char* who, const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
              bool keep_train_mode)
      : grad_mode_(true), mode_(model, keep_train_mode ? model.is_training() : false) {
    check_images(who, x);
    check_labels(who, x, y);
  }

 private:
  at::AutoGradMode grad_mode_;
  ModeGuard mode_;
};

/// ∇_x Σ_i loss_i at x, with the per-example loss values; no gradient reaches the parameters.
template <typename LossFn>
std::pair<torch::Tensor, torch::Tensor> input_gradient(const ModelRef& model, const torch::Tensor& x,
                                                       LossFn&& loss_fn) {
  auto x_var = x.detach().requires_grad_(true);
  torch::Tensor loss = loss_fn(model(x_var));
  auto grad = torch::autograd::grad({loss.sum()}, {x_var})[0];
  return {grad.detach(), loss.detach()};
}

}  // namespace detail
}  // namespace iat
