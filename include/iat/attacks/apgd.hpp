#pragma once
/// \file
/// iat::APGD and iat::APGDT: Auto-PGD (Croce & Hein 2020) on the CE, DLR and targeted DLR losses, L∞ and
/// L2, as AutoAttack (fra31/auto-attack) runs it: step-size checkpoints, momentum 0.75, restarts on the
/// still-correct points, random numbers from the global CPU generator re-seeded at every `perturb`.

#include <iat/attacks/attack.hpp>
#include <iat/attacks/detail/autoattack.hpp>
#include <iat/detail/compiled.hpp>
#include <iat/options_field.hpp>
#include <iat/threat_model.hpp>

#include <torch/arg.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/types.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

namespace iat {

namespace detail {

/// APGD's checkpoint parameters for N iterations: the first interval max(⌊0.22N⌋, 1), the smallest
/// interval max(⌊0.06N⌋, 1) and the decrement max(⌊0.03N⌋, 1).
struct APGDSchedule {
  int64_t first;
  int64_t minimum;
  int64_t decrement;
  explicit APGDSchedule(int64_t steps)
      : first(std::max<int64_t>(static_cast<int64_t>(0.22 * static_cast<double>(steps)), 1)),
        minimum(std::max<int64_t>(static_cast<int64_t>(0.06 * static_cast<double>(steps)), 1)),
        decrement(std::max<int64_t>(static_cast<int64_t>(0.03 * static_cast<double>(steps)), 1)) {}
};

/// The 0-based iterations after which APGD runs a step-size checkpoint, for `steps` iterations
/// (100 → 21, 40, 56, 69, 79, 86, 92, 98; 10 → 1, 2, …, 9).
///
/// **Example**
/// \code
/// auto c = iat::detail::apgd_checkpoints(100);  // {21, 40, 56, 69, 79, 86, 92, 98}
/// \endcode
inline std::vector<int64_t> apgd_checkpoints(int64_t steps) {
  APGDSchedule schedule(steps);
  std::vector<int64_t> out;
  int64_t interval = schedule.first;
  int64_t counter = 0;
  for (int64_t i = 0; i < steps; ++i) {
    if (++counter == interval) {
      out.push_back(i);
      counter = 0;
      interval = std::max(interval - schedule.decrement, schedule.minimum);
    }
  }
  return out;
}

/// APGD's step-size rule at a checkpoint after iteration i with current interval k (float [N], 1 =
/// halve the step and restart from the best point). `history` [steps, N] holds the loss after each
/// iteration, with Python-style wrap-around for the slot before 0 (the last, usually still-zero slot:
/// AutoAttack's quirk at the first checkpoint).
///   condition 1: #{j < k : L[i−j] > L[i−j−1]} ≤ ρ·k;
///   condition 2: not halved at the previous checkpoint and best_at_last_check ≥ best.
///
/// **Example**
/// \code
/// auto halve = iat::detail::apgd_reduce_step(history, 21, 22, 0.75, reduced_last, best_last, best);
/// \endcode
inline torch::Tensor apgd_reduce_step(const torch::Tensor& history, int64_t i, int64_t k, double rho,
                                      const torch::Tensor& reduced_last, const torch::Tensor& best_at_last_check,
                                      const torch::Tensor& best) {
  const int64_t slots = history.size(0);
  auto wrap = [slots](int64_t j) { return ((j % slots) + slots) % slots; };
  auto increases = torch::zeros({history.size(1)}, history.options());
  for (int64_t j = 0; j < k; ++j) {
    increases += (history[wrap(i - j)] > history[wrap(i - j - 1)]).to(history.scalar_type());
  }
  auto oscillating = (increases <= static_cast<double>(k) * rho).to(history.scalar_type());
  auto stagnating = (1 - reduced_last) * (best_at_last_check >= best).to(history.scalar_type());
  return torch::max(oscillating, stagnating);
}

/// The per-example loss an APGD run ascends, given logits and labels.
using APGDLossFn = std::function<torch::Tensor(const torch::Tensor& logits, const torch::Tensor& y)>;

/// Result of one APGD run on a batch.
struct APGDRun {
  torch::Tensor best;           ///< the highest-loss point
  torch::Tensor still_correct;  ///< bool [N]: correctly classified at every iterate
  torch::Tensor best_loss;      ///< [N]
  torch::Tensor adversarial;    ///< the last misclassified iterate (the start point where none)
  int64_t zero_gradient_points = 0;  ///< points whose gradient at the start was exactly zero
};

/// Loss values, logits and ∇_x Σ loss averaged over `eot_iter` forward/backward passes (the logits and
/// loss are those of the last pass, as AutoAttack keeps them).
inline std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> apgd_loss_and_grad(const ModelRef& model,
                                                                                const torch::Tensor& x,
                                                                                const torch::Tensor& y,
                                                                                const APGDLossFn& loss_fn,
                                                                                int64_t eot_iter) {
  auto grad = torch::zeros_like(x);
  torch::Tensor logits, loss;
  for (int64_t e = 0; e < eot_iter; ++e) {
    auto x_var = x.detach().requires_grad_(true);
    logits = model(x_var);
    loss = loss_fn(logits, y);
    grad += torch::autograd::grad({loss.sum()}, {x_var})[0].detach();
  }
  grad /= static_cast<double>(eot_iter);
  return {logits.detach(), loss.detach(), grad};
}

/// One APGD run from a random start (AutoAttack's `attack_single_run`, L∞ and L2).
inline APGDRun apgd_single_run(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                               const APGDLossFn& loss_fn, Norm norm, double eps, int64_t steps, double rho,
                               int64_t eot_iter) {
  const int64_t n = x.size(0);
  const auto shape = per_example_shape(n, x.dim());
  // Start: noise normalised by its own norm, so that it sits on the sphere of radius ε.
  torch::Tensor x_adv;
  if (norm == Norm::kLinf) {
    auto t = cpu_rand(x.sizes(), x.device()) * 2 - 1;
    x_adv = x + normalize_per_example(t, norm) * eps;
  } else {
    auto t = cpu_randn(x.sizes(), x.device());
    x_adv = x + normalize_per_example(t, norm) * eps;
  }
  x_adv = x_adv.clamp(0.0, 1.0);
  auto x_best = x_adv.clone();
  auto x_best_adv = x_adv.clone();
  auto history = torch::zeros({steps, n}, x.options());

  auto [logits, loss, grad] = apgd_loss_and_grad(model, x_adv, y, loss_fn, eot_iter);
  const int64_t zero_grad = (grad.reshape({n, -1}).abs().sum(-1) == 0).sum().item<int64_t>();
  auto grad_best = grad.clone();
  auto still_correct = predicted_class(logits) == y;
  auto best_loss = loss.clone();

  auto step_size = torch::full(shape, 2.0 * eps, x.options());
  auto x_prev = x_adv.clone();
  APGDSchedule schedule(steps);
  int64_t interval = schedule.first;
  int64_t counter = 0;
  auto best_at_last_check = best_loss.clone();
  auto reduced_last = torch::ones_like(best_loss);
  auto lower = x - eps;
  auto upper = x + eps;

  // Projection onto the L2 ball of radius ε around x, then into [0, 1].
  auto project_l2 = [&](const torch::Tensor& p) {
    auto delta = p - x;
    auto radius = torch::min(torch::full_like(x, eps), per_example_norm(delta, Norm::kL2).view(shape));
    return (x + normalize_per_example(delta, Norm::kL2) * radius).clamp(0.0, 1.0);
  };

  for (int64_t i = 0; i < steps; ++i) {
    {
      torch::NoGradGuard no_grad;
      auto momentum = x_adv - x_prev;
      x_prev = x_adv.clone();
      const double a = i > 0 ? 0.75 : 1.0;
      torch::Tensor z;
      if (norm == Norm::kLinf) {
        z = torch::min(torch::max(x_adv + step_size * grad.sign(), lower), upper).clamp(0.0, 1.0);
        z = torch::min(torch::max(x_adv + (z - x_adv) * a + momentum * (1 - a), lower), upper).clamp(0.0, 1.0);
      } else {
        z = project_l2(x_adv + step_size * normalize_per_example(grad, Norm::kL2));
        z = project_l2(x_adv + (z - x_adv) * a + momentum * (1 - a));
      }
      x_adv = z;
    }
    std::tie(logits, loss, grad) = apgd_loss_and_grad(model, x_adv, y, loss_fn, eot_iter);

    torch::NoGradGuard no_grad;
    auto correct_now = predicted_class(logits) == y;
    still_correct = torch::logical_and(still_correct, correct_now);
    x_best_adv = torch::where(correct_now.view(shape), x_best_adv, x_adv);

    history[i] = loss;
    auto improved = loss > best_loss;
    x_best = torch::where(improved.view(shape), x_adv, x_best);
    grad_best = torch::where(improved.view(shape), grad, grad_best);
    best_loss = torch::where(improved, loss, best_loss);

    if (++counter == interval) {
      auto halve = apgd_reduce_step(history, i, interval, rho, reduced_last, best_at_last_check, best_loss);
      reduced_last = halve.clone();
      best_at_last_check = best_loss.clone();
      auto h = (halve > 0).view(shape);
      step_size = torch::where(h, step_size / 2.0, step_size);
      x_adv = torch::where(h, x_best, x_adv);
      grad = torch::where(h, grad_best, grad);
      interval = std::max(interval - schedule.decrement, schedule.minimum);
      counter = 0;
    }
  }
  return {x_best, still_correct, best_loss, x_best_adv, zero_grad};
}

/// One APGD run on the points of x still correctly classified (`still_correct`): the points it
/// misclassifies are marked and their adversarial examples copied into `adv`. `make_loss(x_sub)` gives the
/// run's loss for the sub-batch (APGD-T picks its targets from it). Returns the run's zero-gradient count,
/// or -1 when no point was left to attack. Shared by APGD's restarts and APGD-T's targets.
template <typename MakeLoss>
int64_t apgd_run_on_robust(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                           torch::Tensor& still_correct, torch::Tensor& adv, MakeLoss&& make_loss, Norm norm,
                           double eps, int64_t steps, double rho, int64_t eot_iter) {
  auto idx = true_indices(still_correct);
  if (idx.numel() == 0) return -1;
  auto x_sub = x.index_select(0, idx);
  const APGDLossFn loss_fn = make_loss(x_sub);
  auto run = apgd_single_run(model, x_sub, y.index_select(0, idx), loss_fn, norm, eps, steps, rho, eot_iter);
  torch::NoGradGuard no_grad;
  auto fooled = run.still_correct.logical_not();
  auto hit = idx.masked_select(fooled);
  still_correct.index_fill_(0, hit, false);
  adv.index_copy_(0, hit, run.adversarial.index_select(0, true_indices(fooled)));
  return run.zero_gradient_points;
}

inline void check_apgd_options(const char* who, Norm norm, double eps, int64_t steps, int64_t restarts, double rho,
                               int64_t eot_iter) {
  check_radius(who, norm, eps);
  check_at_least(who, "steps", steps, 1);
  check_at_least(who, "restarts", restarts, 1);
  TORCH_CHECK_VALUE(rho > 0.0 && rho <= 1.0, who, ": rho must be in (0, 1], got ", rho);
  check_at_least(who, "eot_iter", eot_iter, 1);
}

}  // namespace detail

/// Options of iat::APGD. Defaults are AutoAttack's: L∞, ε = 8/255, 100 iterations, ρ = 0.75, CE, seed 0.
/// (AutoAttack standard runs APGD-CE with 1 restart; its constructor default, used by `custom`, is 5.)
///
/// **Example**
/// \code
/// auto ce = iat::APGDOptions();                                   // APGD-CE
/// auto dlr = iat::APGDOptions().loss(iat::Loss::kDLR).restarts(5);  // APGD-DLR as in `plus`
/// auto l2 = iat::APGDOptions().norm(iat::Norm::kL2).eps(0.5);
/// \endcode
struct APGDOptions : ThreatModelOptions<APGDOptions> {
  // norm (L∞ or L2) and eps (8/255): ThreatModelOptions.
  /// Iterations per run (one forward/backward each, plus one at the start).
  TORCH_ARG(int64_t, steps) = 100;
  /// Runs; each restart attacks only the points no earlier run has misclassified.
  TORCH_ARG(int64_t, restarts) = 1;
  /// ρ of the oscillation test at the checkpoints.
  TORCH_ARG(double, rho) = 0.75;
  /// kCE or kDLR.
  TORCH_ARG(Loss, loss) = Loss::kCE;
  /// Expectation over transformation: gradients averaged over this many passes (AutoAttack `rand`: 20).
  TORCH_ARG(int64_t, eot_iter) = 1;
  /// Seed applied to the global CPU generator at the start of `perturb` (as AutoAttack does); negative:
  /// leave the generator alone.
  TORCH_ARG(int64_t, seed) = 0;
  /// Keep the model's current mode instead of switching it to eval mode during the attack.
  TORCH_ARG(bool, keep_train_mode) = false;
};

/// Auto-PGD (untargeted) as AutoAttack runs it; `perturb` returns, per point, the last misclassified
/// iterate of the first run that misclassifies it, and the clean point where no run does.
///
/// **Example**
/// \code
/// iat::APGD apgd(iat::APGDOptions().eps(8.0 / 255));
/// torch::Tensor x_adv = apgd.perturb(net, x, y);
/// \endcode
class APGD : public Attack {
 public:
  explicit APGD(APGDOptions o = {}) : options(std::move(o)) { check_options(); }

  /// The options (docs/options.md): `apgd.options.seed(1)`; checked at each perturb.
  OptionsField<APGDOptions> options;

  std::string name() const override { return options.loss() == Loss::kCE ? "APGD-CE" : "APGD-DLR"; }

  /// The 0-based iterations at which a step-size checkpoint runs (see detail::apgd_checkpoints).
  std::vector<int64_t> checkpoints() const { return detail::apgd_checkpoints(options.steps()); }

  /// Points with an exactly zero gradient at the start of the last DLR run (AutoAttack warns about them).
  int64_t zero_gradient_points() const { return zero_gradient_points_; }

  torch::Tensor perturb(const ModelRef& model, const torch::Tensor& x_in, const torch::Tensor& y) override;

 private:
  void check_options() const {
    const char* who = "iat::APGD";
    const APGDOptions& o = options;
    detail::check_apgd_options(who, o.norm(), o.eps(), o.steps(), o.restarts(), o.rho(), o.eot_iter());
    TORCH_CHECK_VALUE(o.loss() == Loss::kCE || o.loss() == Loss::kDLR, who,
                      ": loss must be kCE or kDLR (use iat::APGDT for targeted DLR), got Loss value ",
                      static_cast<int>(o.loss()));
  }

  int64_t zero_gradient_points_ = 0;
};

/// Options of iat::APGDT. Defaults are AutoAttack standard's APGD-T: L∞, ε = 8/255, 100 iterations,
/// 9 target classes, 1 restart, ρ = 0.75, seed 0.
///
/// **Example**
/// \code
/// auto opts = iat::APGDTOptions().n_target_classes(3);  // the 2nd to 4th most likely classes only
/// \endcode
struct APGDTOptions : ThreatModelOptions<APGDTOptions> {
  // norm (L∞ or L2) and eps (8/255): ThreatModelOptions.
  /// Iterations per run.
  TORCH_ARG(int64_t, steps) = 100;
  /// Runs per target class.
  TORCH_ARG(int64_t, restarts) = 1;
  /// ρ of the oscillation test at the checkpoints.
  TORCH_ARG(double, rho) = 0.75;
  /// Targets: the classes with the 2nd … (n+1)-th largest clean logit. Capped at (classes − 1) for
  /// models with fewer classes (AutoAttack itself would fail there).
  TORCH_ARG(int64_t, n_target_classes) = 9;
  /// Expectation over transformation: gradients averaged over this many passes.
  TORCH_ARG(int64_t, eot_iter) = 1;
  /// Seed applied to the global CPU generator once at the start of `perturb`; negative: leave it alone.
  TORCH_ARG(int64_t, seed) = 0;
  /// Keep the model's current mode instead of switching it to eval mode during the attack.
  TORCH_ARG(bool, keep_train_mode) = false;
};

/// APGD on the targeted DLR loss (APGD-T): for m = 2 … n+1, on the points still correctly classified,
/// the target is the class with the m-th largest clean logit, and one APGD run per restart ascends
/// −(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2). A point counts as broken as soon as any run misclassifies it.
/// Needs at least 4 classes.
///
/// **Example**
/// \code
/// iat::APGDT apgdt(iat::APGDTOptions().eps(8.0 / 255));
/// torch::Tensor x_adv = apgdt.perturb(net, x, y);
/// \endcode
class APGDT : public Attack {
 public:
  explicit APGDT(APGDTOptions o = {}) : options(std::move(o)) { check_options(); }

  /// The options (docs/options.md): `apgdt.options.n_target_classes(3)`; checked at each perturb.
  OptionsField<APGDTOptions> options;

  std::string name() const override { return "APGD-T"; }

  /// Points with an exactly zero gradient at the start of a run, summed over the last call's runs.
  int64_t zero_gradient_points() const { return zero_gradient_points_; }

  torch::Tensor perturb(const ModelRef& model, const torch::Tensor& x_in, const torch::Tensor& y) override;

 private:
  void check_options() const {
    const char* who = "iat::APGDT";
    const APGDTOptions& o = options;
    detail::check_apgd_options(who, o.norm(), o.eps(), o.steps(), o.restarts(), o.rho(), o.eot_iter());
    detail::check_at_least(who, "n_target_classes", o.n_target_classes(), 1);
  }

  int64_t zero_gradient_points_ = 0;
};

#if IAT_HEADER_BODIES  // the entry points' bodies: inline here, or compiled once (iat/detail/compiled.hpp)

IAT_INLINE torch::Tensor APGD::perturb(const ModelRef& model, const torch::Tensor& x_in, const torch::Tensor& y) {
  const char* who = "iat::APGD";
  check_options();
  const APGDOptions& o = options;
  detail::AttackScope scope(who, model, x_in, y, o.keep_train_mode());
  auto x = x_in.detach().to(torch::kFloat);
  torch::Tensor still_correct;
  {
    torch::NoGradGuard no_grad;
    auto logits = model(x);
    detail::check_model_output(who, logits, y);
    TORCH_CHECK_VALUE(o.loss() != Loss::kDLR || logits.size(1) >= 3, who,
                      ": the DLR loss needs at least 3 classes, the model has ", logits.size(1));
    still_correct = detail::predicted_class(logits) == y;
  }
  auto loss_fn = [&o](const torch::Tensor& logits, const torch::Tensor& labels) {
    return o.loss() == Loss::kCE ? functional::cross_entropy(logits, labels, LogitsCheck::kOff)
                                 : functional::dlr_loss(logits, labels);
  };
  auto adv = x.clone();
  zero_gradient_points_ = 0;
  detail::reseed(o.seed());
  for (int64_t r = 0; r < o.restarts(); ++r) {
    const int64_t zero = detail::apgd_run_on_robust(
        model, x, y, still_correct, adv, [&](const torch::Tensor&) { return detail::APGDLossFn(loss_fn); }, o.norm(),
        o.eps(), o.steps(), o.rho(), o.eot_iter());
    if (zero < 0) break;
    if (o.loss() == Loss::kDLR) zero_gradient_points_ += zero;
  }
  return adv;
}

IAT_INLINE torch::Tensor APGDT::perturb(const ModelRef& model, const torch::Tensor& x_in, const torch::Tensor& y) {
  const char* who = "iat::APGDT";
  check_options();
  const APGDTOptions& o = options;
  detail::AttackScope scope(who, model, x_in, y, o.keep_train_mode());
  auto x = x_in.detach().to(torch::kFloat);
  torch::Tensor still_correct;
  int64_t classes = 0;
  {
    torch::NoGradGuard no_grad;
    auto logits = model(x);
    detail::check_model_output(who, logits, y);
    classes = logits.size(1);
    TORCH_CHECK_VALUE(classes >= 4, who, ": the targeted DLR loss needs at least 4 classes, the model has ",
                      classes);
    still_correct = detail::predicted_class(logits) == y;
  }
  const int64_t targets = std::min(o.n_target_classes(), classes - 1);
  auto adv = x.clone();
  zero_gradient_points_ = 0;
  detail::reseed(o.seed());
  for (int64_t m = 2; m < targets + 2; ++m) {
    for (int64_t r = 0; r < o.restarts(); ++r) {
      auto make_loss = [&](const torch::Tensor& x_sub) -> detail::APGDLossFn {
        torch::Tensor target;
        {
          torch::NoGradGuard no_grad;
          target = detail::class_of_rank(model(x_sub), m);
        }
        return [target](const torch::Tensor& logits, const torch::Tensor& labels) {
          return functional::targeted_dlr_loss(logits, labels, target);
        };
      };
      const int64_t zero = detail::apgd_run_on_robust(model, x, y, still_correct, adv, make_loss, o.norm(), o.eps(),
                                                      o.steps(), o.rho(), o.eot_iter());
      if (zero < 0) break;
      zero_gradient_points_ += zero;
    }
  }
  return adv;
}
#endif  // IAT_HEADER_BODIES

}  // namespace iat
