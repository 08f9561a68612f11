#pragma once
/// \file
/// iat::PGD: projected gradient ascent in an L∞ or L2 ball (Madry et al.), with pluggable losses.

#include <iat/attacks/attack.hpp>
#include <iat/detail/batch_draw.hpp>
#include <iat/detail/compat.hpp>
#include <iat/detail/compiled.hpp>
#include <iat/options_field.hpp>
#include <iat/threat_model.hpp>

#include <torch/arg.h>
#include <torch/types.h>

#include <limits>
#include <utility>

namespace iat {

/// Where PGD's random start is drawn from.
enum class InitNoise {
  kUniform,   ///< uniform in the ε-ball (Madry's PGD)
  kGaussian,  ///< init_std·N(0, 1), as TRADES starts its inner maximisation
};

/// Options of iat::PGD. Defaults are the paper's training attack: L∞, ε = 8/255, α = 2/255, 10 steps,
/// CE, uniform random start.
///
/// The step size follows the budget: unset, α = ε/4, which is the paper's 2/255 at ε = 8/255 and lets
/// 4 or more steps cross the whole ball at any ε. Whenever steps × α < ε (an explicit α too small for the
/// budget, or fewer than 4 steps of the default) the attack can move at most steps × α from its start,
/// covering only part of the ball; the constructor then warns once (TORCH_WARN, per distinct setting),
/// naming the numbers.
///
/// **Example**
/// \code
/// auto pgd20 = iat::PGDOptions().steps(20);                                   // evaluation PGD-20
/// auto cw = iat::PGDOptions().steps(20).loss(iat::Loss::kMargin);             // CW∞
/// auto l2 = iat::PGDOptions().norm(iat::Norm::kL2).eps(0.5).step_size(0.1);   // L2 PGD
/// auto svhn = iat::PGDOptions().step_size(1.0 / 255);                         // SVHN training
/// auto fashion = iat::PGDOptions().eps(0.1).steps(5);                         // α = ε/4 = 0.025
/// double a = fashion.effective_step_size();                                   // 0.025
/// \endcode
struct PGDOptions : ThreatModelOptions<PGDOptions> {
  // norm (L∞) and eps (8/255): ThreatModelOptions.
  /// Step size α; unset means ε/4 (2/255 at ε = 8/255). `effective_step_size()` tells the value in force.
  TORCH_ARG(iat::optional<double>, step_size) = iat::nullopt;
  /// Number of ascent steps K.
  TORCH_ARG(int64_t, steps) = 10;
  /// Start from a random point of the ball (true) or from x itself (false: deterministic).
  TORCH_ARG(bool, random_start) = true;
  /// Distribution of the random start.
  TORCH_ARG(InitNoise, init_noise) = InitNoise::kUniform;
  /// Standard deviation of the Gaussian random start.
  TORCH_ARG(double, init_std) = 0.001;
  /// The loss ascended.
  TORCH_ARG(Loss, loss) = Loss::kCE;
  /// For Loss::kTargetedDLR: the target is the class with the target_rank-th largest clean logit
  /// (1 = the top class), as AutoAttack's APGD-T picks its targets.
  TORCH_ARG(int64_t, target_rank) = 2;
  /// Independent runs; per example the result of the first run that misclassifies is kept, otherwise
  /// the one with the highest final loss.
  TORCH_ARG(int64_t, restarts) = 1;
  /// Keep the model's current mode instead of switching it to eval mode during the attack.
  TORCH_ARG(bool, keep_train_mode) = false;

 public:
  /// The step size in force: `step_size` if set, otherwise ε/4.
  double effective_step_size() const { return step_size_ ? *step_size_ : eps() / 4.0; }
};

/// Projected gradient descent on the loss (docs/method.md §1.2): x' = Π(x + noise), then K times
/// x' ← Π_{B_ε(x)∩[0,1]}(x' + α·sign(∇ L(f(x'), y))) (L∞; L2 steps along ∇/‖∇‖₂), α = ε/4 unless set.
/// Warns once when K·α < ε (see PGDOptions). Takes the model's outputs as they are (no logits check):
/// like AutoAttack's reference it also runs on a model that returns probabilities.
///
/// **Example**
/// \code
/// iat::PGD attack(iat::PGDOptions().eps(8.0 / 255).steps(10));
/// torch::Tensor x_adv = attack.perturb(net, x, y);
/// auto loss = torch::nn::functional::cross_entropy(net(x_adv), y);
/// \endcode
class PGD : public Attack {
 public:
  explicit PGD(PGDOptions o = {}) : options(std::move(o)) { check_options(); }

  /// The options (docs/options.md): `pgd.options.steps(20)` changes the attack; checked at each perturb.
  OptionsField<PGDOptions> options;

  std::string name() const override { return "PGD"; }

  torch::Tensor perturb(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y) override;

  /// perturb() with f(x) given (no gradients, evaluation mode, [N, C]): the clean forward of kKL and
  /// kTargetedDLR is skipped. Ignored under keep_train_mode (the attack's clean forward is then in train
  /// mode) and for losses that need no clean forward.
  torch::Tensor perturb_given_clean(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                                    const torch::Tensor& clean_logits) override;

 private:
  torch::Tensor run(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                    const torch::Tensor& clean_logits);

  void check_options() const {
    const char* who = "iat::PGD";
    const PGDOptions& o = options;
    o.threat_model().check(who);
    detail::check_positive(who, "step_size", o.effective_step_size());
    detail::check_at_least(who, "steps", o.steps(), 1);
    detail::check_at_least(who, "restarts", o.restarts(), 1);
    detail::check_positive(who, "init_std", o.init_std());
    detail::check_at_least(who, "target_rank", o.target_rank(), 1);
    detail::warn_if_steps_fall_short(who, "eps", o.eps(), o.steps(), o.effective_step_size(),
                                     o.step_size().has_value(), "eps/4", o.eps() / 4.0);
  }
};

#if IAT_HEADER_BODIES  // the entry points' bodies: inline here, or compiled once (iat/detail/compiled.hpp)

IAT_INLINE torch::Tensor PGD::perturb(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y) {
  return run(model, x, y, {});
}

IAT_INLINE torch::Tensor PGD::perturb_given_clean(const ModelRef& model, const torch::Tensor& x,
                                                  const torch::Tensor& y, const torch::Tensor& clean_logits) {
  const bool usable = !options.keep_train_mode();
  TORCH_CHECK_VALUE(!clean_logits.defined() || (clean_logits.dim() == 2 && clean_logits.size(0) == x.size(0)),
                    "iat::PGD::perturb_given_clean: clean_logits must be [N, C] with N = ", x.size(0),
                    " (x's batch), got ", clean_logits.defined() ? clean_logits.sizes() : c10::IntArrayRef{});
  return run(model, x, y, usable ? clean_logits : torch::Tensor());
}

IAT_INLINE torch::Tensor PGD::run(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                                  const torch::Tensor& clean_logits) {
  const char* who = "iat::PGD";
  check_options();
  const PGDOptions& o = options;
  detail::AttackScope scope(who, model, x, y, o.keep_train_mode());
  auto x0 = x.detach();

  // What the loss needs from the clean input: p(x) for KL, the target class for targeted DLR. Other
  // losses need no clean forward, and the model's output is checked at the first step instead.
  torch::Tensor clean_log_p, target;
  bool checked = false;
  auto check_output = [&](const torch::Tensor& logits) {
    if (checked) return;
    detail::check_model_output(who, logits, y);
    const int64_t classes = logits.size(1);
    TORCH_CHECK_VALUE(o.loss() != Loss::kDLR || classes >= 3, who,
                      ": loss kDLR needs at least 3 classes, the model has ", classes);
    TORCH_CHECK_VALUE(o.loss() != Loss::kTargetedDLR || classes >= 4, who,
                      ": loss kTargetedDLR needs at least 4 classes, the model has ", classes);
    TORCH_CHECK_VALUE(o.loss() != Loss::kTargetedDLR || o.target_rank() <= classes, who,
                      ": target_rank must be <= ", classes, " (the number of classes), got ", o.target_rank());
    checked = true;
  };
  if (o.loss() == Loss::kKL || o.loss() == Loss::kTargetedDLR) {
    torch::NoGradGuard no_grad;
    auto logits = clean_logits.defined() ? clean_logits.detach() : model(x0);
    check_output(logits);
    if (o.loss() == Loss::kKL) clean_log_p = torch::log_softmax(logits, 1);
    if (o.loss() == Loss::kTargetedDLR) target = logits.argsort(1, /*descending=*/true).select(1, o.target_rank() - 1);
  }
  auto loss_fn = [&](const torch::Tensor& logits) -> torch::Tensor {
    check_output(logits);
    switch (o.loss()) {
      case Loss::kCE: return functional::cross_entropy(logits, y, LogitsCheck::kOff);
      case Loss::kMargin: return functional::margin_loss(logits, y);
      case Loss::kDLR: return functional::dlr_loss(logits, y);
      case Loss::kTargetedDLR: return functional::targeted_dlr_loss(logits, y, target);
      case Loss::kKL: return functional::kl_div(clean_log_p, torch::log_softmax(logits, 1));
    }
    C10_THROW_ERROR(Error, "unknown iat::Loss");
  };

  const double step_size = o.effective_step_size();
  const ThreatModel ball = o.threat_model();
  torch::Tensor best, best_score;
  for (int64_t run = 0; run < o.restarts(); ++run) {
    auto x_adv = x0;
    if (o.random_start()) {
      auto noise = detail::draw_for_batch(x0, [&](const torch::Tensor& like) {
        return o.init_noise() == InitNoise::kUniform ? ball.uniform_in_ball(like) : torch::randn_like(like) * o.init_std();
      });
      x_adv = ball.project(x0 + noise, x0);
    }
    for (int64_t k = 0; k < o.steps(); ++k) {
      auto grad = detail::input_gradient(model, x_adv, loss_fn).first;
      x_adv = ball.project(x_adv + step_size * ball.ascent_direction(grad), x0);
    }
    if (o.restarts() == 1) return x_adv;

    // Score each example: +inf once misclassified, its final loss otherwise.
    torch::NoGradGuard no_grad;
    auto logits = model(x_adv);
    auto score = loss_fn(logits).masked_fill(logits.argmax(1) != y, std::numeric_limits<double>::infinity());
    if (!best.defined()) {
      best = x_adv;
      best_score = score;
      continue;
    }
    auto better = score > best_score;
    best = torch::where(better.view(detail::per_example_shape(x0.size(0), x0.dim())), x_adv, best);
    best_score = torch::where(better, score, best_score);
  }
  return best;
}
#endif  // IAT_HEADER_BODIES

}  // namespace iat
