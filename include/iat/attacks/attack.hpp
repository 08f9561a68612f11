#pragma once
/// \file
/// What every iat attack shares: the threat-model norm, the loss an attack maximises, the abstract
/// `iat::Attack` interface, and (in `iat::detail`) the scope guard, input-gradient and projection
/// helpers the attacks are written with.

#include <iat/detail/checks.hpp>
#include <iat/functional/losses.hpp>
#include <iat/model_ref.hpp>

#include <torch/csrc/autograd/autograd.h>
#include <torch/types.h>

#include <string>

namespace iat {

/// The threat model: an L∞ or an L2 ball of radius ε around the clean input.
enum class Norm { kLinf, kL2 };

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

/// Per-example L2 norm of a batch, shaped [N, 1, 1, ...] to broadcast against it.
inline torch::Tensor batch_l2_norm(const torch::Tensor& t) {
  std::vector<int64_t> shape(static_cast<size_t>(t.dim()), 1);
  shape[0] = t.size(0);
  return t.flatten(1).norm(2, 1).view(shape);
}

/// The steepest-ascent direction for the norm: sign(g) for L∞, g/‖g‖₂ for L2.
inline torch::Tensor ascent_direction(const torch::Tensor& grad, Norm norm) {
  if (norm == Norm::kLinf) return grad.sign();
  return grad / (batch_l2_norm(grad) + 1e-12);
}

/// Π_{B_ε(x) ∩ [0,1]}(x_adv): first onto the ε-ball around x, then into the [0,1] box. The box step only
/// shrinks |δ_i| (x itself is in the box), so the result stays in the ball.
inline torch::Tensor project(const torch::Tensor& x_adv, const torch::Tensor& x, double eps, Norm norm) {
  auto delta = x_adv - x;
  if (norm == Norm::kLinf) {
    delta = delta.clamp(-eps, eps);
  } else {
    delta = delta * (eps / (batch_l2_norm(delta) + 1e-12)).clamp_max(1.0);
  }
  return (x + delta).clamp(0.0, 1.0);
}

/// A uniform random point of the ε-ball: U(−ε, ε) per element for L∞; for L2 a uniform direction with
/// radius ε·u^{1/d}, which makes the point uniform in the ball.
inline torch::Tensor uniform_in_ball(const torch::Tensor& like, double eps, Norm norm) {
  if (norm == Norm::kLinf) return torch::empty_like(like).uniform_(-eps, eps);
  auto direction = torch::randn_like(like);
  direction = direction / (batch_l2_norm(direction) + 1e-12);
  const double d = static_cast<double>(like[0].numel());
  std::vector<int64_t> shape(static_cast<size_t>(like.dim()), 1);
  shape[0] = like.size(0);
  auto radius = torch::rand(shape, like.options()).pow(1.0 / d) * eps;
  return direction * radius;
}

}  // namespace detail
}  // namespace iat
