#pragma once
/// \file
/// Loss recipes: the paper's training objectives composed from iat's components, each a few readable
/// lines (docs/method.md §3–§7). A recipe generates what its objective needs (adversarial, inverse examples),
/// updates the universal perturbation or the one-off cache where the method says so, and returns the
/// scalar loss with what a logger wants. It never steps the optimiser and never calls backward:
///
///     optimizer.zero_grad();
///     auto step = iat::train::uiat_loss(net, x, y, pgd, uip, align);
///     step.loss.backward();
///     optimizer.step();
///
/// The training forwards run in the caller's mode (train mode in a training loop); the attacks switch
/// the model to eval mode for generation and restore it.
///
/// Every recipe refuses a model whose outputs are evidently probabilities (every row of a batch
/// non-negative and summing to 1: a final softmax), since each objective applies softmax to logits. The
/// test rides on the label check the recipe makes anyway (one read from the device), and the alignment
/// terms inside a recipe then skip their own check: their arguments are outputs of the same model. There
/// is no opt-out here; a loop that needs one is written from the functional pieces with their checks off.

#include <iat/attacks/attack.hpp>
#include <iat/attacks/pgd.hpp>
#include <iat/detail/batch_draw.hpp>
#include <iat/detail/compiled.hpp>
#include <iat/functional/grad_align.hpp>
#include <iat/functional/losses.hpp>
#include <iat/inverse/alignment_loss.hpp>
#include <iat/inverse/inverse_attack.hpp>
#include <iat/inverse/inverse_loss.hpp>
#include <iat/inverse/one_off_cache.hpp>
#include <iat/inverse/universal_perturbation.hpp>
#include <iat/model_ref.hpp>
#include <iat/train/checkpoint.hpp>

#include <torch/arg.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/types.h>

#include <cstdint>
#include <limits>
#include <vector>

namespace iat {
namespace train {

/// What a recipe returns: the loss to call backward on, and detached tensors for logging.
///
/// **Example**
/// \code
/// auto step = iat::train::pgd_at_loss(net, x, y, pgd);
/// step.loss.backward();
/// correct += (step.adv_logits.argmax(1) == y).sum().item<int64_t>();
/// \endcode
struct StepLoss {
  torch::Tensor loss;         ///< scalar, differentiable in the model's parameters
  torch::Tensor adv_logits;   ///< f(x') of the training forward, detached [N, C]
  torch::Tensor ref_probs;    ///< the reference distribution, detached [N, C]; undefined where there is none
  torch::Tensor x_adv;        ///< the adversarial batch x'
  torch::Tensor ce;           ///< the first term (CE, or MART's BCE), detached scalar
  torch::Tensor regularizer;  ///< the second term (alignment, TRADES/MART KL, GradAlign), detached scalar
};

/// Options of iat::train::uiat_loss.
///
/// **Example**
/// \code
/// auto two_pass = iat::train::UIATLossOptions().fused(false);
/// \endcode
struct UIATLossOptions {
  /// Fused (default): forward x̌ = uip(x, y) once, for the alignment loss and for the δ step (one extra
  /// input-gradient backward through that graph); the alignment uses δ before this batch's step.
  /// Not fused: uip->update(model, x, y, x_adv) first (eval mode, its own forward), then forward the
  /// updated x̌ for the alignment.
  TORCH_ARG(bool, fused) = true;
};

/// Options of the single-step recipes (docs/method.md §6).
///
/// **Example**
/// \code
/// auto grad_align = iat::train::SingleStepOptions().grad_align_weight(0.2);   // GradAlign at ε = 8/255
/// \endcode
struct SingleStepOptions {
  /// λ_GA of the GradAlign regulariser; 0 (default) turns it off (FGSM-RS, N-FGSM).
  TORCH_ARG(double, grad_align_weight) = 0.0;
  /// ε of GradAlign's noise η ~ U(−ε, ε).
  TORCH_ARG(double, grad_align_eps) = 8.0 / 255;
};

/// Options of hat_loss (docs/method.md §7.2): β and γ of the authors' CIFAR-10 ResNet-18 command, h of their
/// parser.
///
/// **Example**
/// \code
/// auto hat = iat::train::HATOptions().beta(3.5).gamma(0.5);   // the authors' setting with generated data
/// \endcode
struct HATOptions {
  /// β: weight of the TRADES term KL(p(x) ‖ p(x')).
  TORCH_ARG(double, beta) = 2.5;
  /// γ: weight of the helper term CE(f(x + h·(x' − x)), ŷ).
  TORCH_ARG(double, gamma) = 0.5;
  /// h: the helper example is x + h·(x' − x), twice as far from x as x' at the default.
  TORCH_ARG(double, helper_scale) = 2.0;
};

/// PGD options of the TRADES inner maximisation: KL(p(x) ‖ p(x')) from x + 0.001·N(0, 1), ε = 8/255,
/// α = ε/4 unless set (2/255 at 8/255), 10 steps.
///
/// **Example**
/// \code
/// iat::PGD trades_pgd(iat::train::trades_attack_options());
/// \endcode
inline PGDOptions trades_attack_options() {
  return PGDOptions().loss(Loss::kKL).init_noise(InitNoise::kGaussian).init_std(0.001);
}

namespace detail {

constexpr const char* kRecipeAllow = "the training recipes need a model that returns logits: remove the final softmax";

/// The recipe's check of the model's outputs: shape, labels and logits (not probabilities), one read.
inline void check_training_output(const char* who, const torch::Tensor& logits, const torch::Tensor& y) {
  iat::detail::check_model_output(who, logits, y, /*refuse_probabilities=*/true, kRecipeAllow);
}

inline torch::Tensor mean_ce(const torch::Tensor& logits, const torch::Tensor& y) {
  check_training_output("iat::train", logits, y);
  return functional::cross_entropy(logits, y, LogitsCheck::kOff).mean();
}

/// align(ref_logits, adv_logits) without its own logits check: inside a recipe both come from the model
/// whose outputs check_training_output has already checked.
inline torch::Tensor align_checked_model(AlignmentLoss& align, const torch::Tensor& ref_logits,
                                         const torch::Tensor& adv_logits) {
  auto o = align->options;
  return functional::alignment_loss(ref_logits, adv_logits, o.check_logits(false));
}

/// align->forward_probs(ref_probs, adv_logits) without the adv_logits check (see align_checked_model).
inline torch::Tensor align_probs_checked_model(AlignmentLoss& align, const torch::Tensor& ref_probs,
                                               const torch::Tensor& adv_logits) {
  auto o = align->options;
  return functional::alignment_loss_from_probs(ref_probs, adv_logits, o.check_logits(false));
}

/// TRADES' term before its β: mean_i KL(p(x_i) ‖ p(x'_i)) from the two batches' logits (TRADES, HAT, TRADES + UIAT).
inline torch::Tensor trades_kl(const torch::Tensor& nat_logits, const torch::Tensor& adv_logits) {
  return functional::kl_div(torch::log_softmax(nat_logits, 1), torch::log_softmax(adv_logits, 1)).mean();
}

inline StepLoss finish(torch::Tensor ce, torch::Tensor reg, const torch::Tensor& adv_logits,
                       const torch::Tensor& ref_probs, const torch::Tensor& x_adv) {
  StepLoss out;
  out.loss = reg.defined() ? ce + reg : ce;
  out.adv_logits = adv_logits.detach();
  out.ref_probs = ref_probs.defined() ? ref_probs.detach() : torch::Tensor();
  out.x_adv = x_adv;
  out.ce = ce.detach();
  out.regularizer = reg.defined() ? reg.detach() : torch::zeros({}, ce.options());
  return out;
}

// A UIAT recipe called without an EMA store refuses the kTargetEMA reading with a momentum, which it could only
// ignore (δ would step without any momentum): before anything runs, so a refused call leaves δ as it was.
inline void check_no_target_ema(const char* who, const UniversalInversePerturbation& uip) {
  const auto& o = uip->options;
  TORCH_CHECK_VALUE(o.momentum_form() != InverseMomentum::kTargetEMA || o.momentum() == 0.0, who,
                    ": momentum_form kTargetEMA with momentum ", o.momentum(), " needs an iat::OneOffCache as EMA "
                    "store of the reference probabilities, which only iat::train::uiat_loss's overload with a store and "
                    "the batch's dataset indices takes; use that, or kNormalizedGradient (the default)");
}

// UIAT's alignment term from the logits of x̌, through the EMA store when one is given.
inline std::pair<torch::Tensor, torch::Tensor> uiat_alignment(UniversalInversePerturbation& uip, AlignmentLoss& align,
                                                              const torch::Tensor& check_logits,
                                                              const torch::Tensor& adv_logits, OneOffCache* ema_store,
                                                              const torch::Tensor& index) {
  if (ema_store == nullptr) {
    return {align_checked_model(align, check_logits, adv_logits), torch::softmax(check_logits, 1)};
  }
  const auto& o = uip->options;
  const double gamma = o.momentum_form() == InverseMomentum::kTargetEMA ? o.momentum() : 0.0;
  auto ref = (*ema_store)->ema(index, torch::softmax(check_logits, 1), gamma);
  return {align_probs_checked_model(align, ref, adv_logits), ref};
}

inline StepLoss uiat_loss_impl(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, Attack& attack,
                               UniversalInversePerturbation& uip, AlignmentLoss& align, const UIATLossOptions& options,
                               OneOffCache* ema_store, const torch::Tensor& index) {
  if (ema_store == nullptr) check_no_target_ema("iat::train::uiat_loss", uip);
  auto x_adv = attack.perturb(model, x, y);
  if (!options.fused()) {
    uip->update(model, x, y, x_adv);
    auto adv_logits = model(x_adv);
    auto ce = mean_ce(adv_logits, y);
    auto [reg, ref] = uiat_alignment(uip, align, model(uip(x.detach(), y)), adv_logits, ema_store, index);
    return finish(ce, reg, adv_logits, ref, x_adv);
  }
  auto fwd = uip->update_fused(model, x, y, x_adv);
  auto ce = mean_ce(fwd.adv_logits, y);
  auto [reg, ref] = uiat_alignment(uip, align, fwd.check_logits, fwd.adv_logits, ema_store, index);
  return finish(ce, reg, fwd.adv_logits, ref, x_adv);
}

inline StepLoss single_step_impl(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, Attack& attack,
                                 UniversalInversePerturbation* uip, AlignmentLoss* align,
                                 const SingleStepOptions& options) {
  const char* who = "iat::train::single_step_loss";
  iat::detail::check_non_negative(who, "grad_align_weight", options.grad_align_weight());
  auto x_adv = attack.perturb(model, x, y);
  auto adv_logits = model(x_adv);
  auto ce = mean_ce(adv_logits, y);
  torch::Tensor reg, ref;
  if (options.grad_align_weight() > 0.0) {
    reg = functional::grad_align(model, x, y, options.grad_align_eps(), options.grad_align_weight());
  }
  if (uip != nullptr) {
    // x̌ with the current δ; δ takes one signed step on CE alone (supplement §2.3), from the same graph.
    auto x_check = (*uip)(x.detach(), y).requires_grad_(true);
    auto check_logits = model(x_check);
    iat::detail::check_model_output(who, check_logits, y);
    auto grad = torch::autograd::grad({functional::cross_entropy(check_logits, y, LogitsCheck::kOff).sum()},
                                      {x_check}, {}, /*retain_graph=*/true)[0];
    (*uip)->step(y, grad.detach());
    auto kl = align_checked_model(*align, check_logits, adv_logits);
    reg = reg.defined() ? reg + kl : kl;
    ref = torch::softmax(check_logits, 1);
  }
  return finish(ce, reg, adv_logits, ref, x_adv);
}

}  // namespace detail

/// PGD-AT (docs/method.md §7): CE(f(x'), y), x' = attack(x).
///
/// **Example**
/// \code
/// iat::PGD pgd;                                             // ε = 8/255, α = 2/255, 10 steps
/// auto step = iat::train::pgd_at_loss(net, x, y, pgd);
/// \endcode
IAT_INLINE StepLoss pgd_at_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, Attack& attack);

/// Standard training (docs/method.md §7): CE(f(x), y) on the clean batch, no adversary; what trains HAT's
/// helper model, or a clean baseline. `adv_logits` are the clean logits and `x_adv` is x, so a loop's
/// accuracy on "adversarial" examples reads as clean accuracy.
///
/// **Example**
/// \code
/// auto step = iat::train::natural_loss(net, x, y);
/// \endcode
IAT_INLINE StepLoss natural_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y);

/// TRADES (docs/method.md §7): CE(f(x), y) + β·KL(p(x) ‖ p(x')), β = 6; attack with trades_attack_options().
/// `ref_probs` is p(x).
///
/// **Example**
/// \code
/// iat::PGD trades_pgd(iat::train::trades_attack_options());
/// auto step = iat::train::trades_loss(net, x, y, trades_pgd);
/// \endcode
IAT_INLINE StepLoss trades_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, Attack& attack,
                                double beta = 6.0);

/// TRADES with UIAT (docs/method.md §7): TRADES' objective plus UIAT's alignment term,
/// CE(f(x), y) + β·KL(p(x) ‖ p(x')) + λ·KL(p(x̌) ‖ p(x')), x' from the TRADES attack, x̌ = uip(x, y) with one
/// fused δ step per call (as uiat_loss's default). p(x) in evaluation mode without gradients is computed once
/// and serves both the attack's KL start (Attack::perturb_given_clean) and δ's pull target. Forwards in the
/// caller's mode: x, x', x̌. `regularizer` is both KL terms, `ref_probs` p(x̌).
///
/// Cost over trades_loss: one forward of x̌ (with graph) and one input-gradient backward through it; the
/// training backward runs through x̌ too. No forward of x beyond TRADES' own.
///
/// **Example**
/// \code
/// iat::PGD trades_pgd(iat::train::trades_attack_options());
/// auto step = iat::train::trades_uiat_loss(net, x, y, trades_pgd, uip, align);
/// \endcode
IAT_INLINE StepLoss trades_uiat_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                                     Attack& attack, UniversalInversePerturbation& uip, AlignmentLoss& align,
                                     double beta = 6.0);

/// HAT, helper-based adversarial training (docs/method.md §7.2; Rade & Moosavi-Dezfooli, ICLR 2022), on
/// TRADES: CE(f(x), y) + β·KL(p(x) ‖ p(x')) + γ·CE(f(x_h), ŷ), with the helper example x_h = x + h·(x' − x)
/// (not clipped to [0, 1], as the authors) and its label ŷ = argmax f_std(x') from `helper`, a model trained
/// without adversaries (run in eval mode, without gradients; its mode is restored). β = 2.5, γ = 0.5, h = 2;
/// attack with trades_attack_options(). Forwards in train mode: x, x', x_h (the authors' order, so batch
/// norm's running statistics follow theirs). `regularizer` is β·KL + γ·CE(f(x_h), ŷ), `ref_probs` p(x).
///
/// **Example**
/// \code
/// iat::PGD trades_pgd(iat::train::trades_attack_options());
/// auto standard = iat::train::load_run_model("runs/c10-standard").model;   // trained with --method standard
/// auto step = iat::train::hat_loss(net, x, y, trades_pgd, standard);
/// \endcode
IAT_INLINE StepLoss hat_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, Attack& attack,
                             const ModelRef& helper, const HATOptions& options = {});

/// MART (docs/method.md §7): BCE(p(x'), y) + β·mean_i KL(p(x_i) ‖ p(x'_i))·(1 − p_y(x_i)), β = 6, with
/// BCE = −log p_y(x') − log(1 − max_{k≠y} p_k(x')) (the second log clamped at 1e-12). `ref_probs` is p(x).
///
/// **Example**
/// \code
/// iat::PGD pgd;
/// auto step = iat::train::mart_loss(net, x, y, pgd);
/// \endcode
IAT_INLINE StepLoss mart_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, Attack& attack,
                              double beta = 6.0);

/// IAT, instance-wise (docs/method.md §2–§3): CE(f(x'), y) + λ·KL(p(x̃) ‖ p(x')), x̃ = inverse(x, y, x').
/// `ref_probs` is p(x̃).
///
/// **Example**
/// \code
/// iat::PGD pgd;  iat::InverseAttack inverse;  iat::AlignmentLoss align;
/// auto step = iat::train::iat_loss(net, x, y, pgd, inverse, align);
/// \endcode
IAT_INLINE StepLoss iat_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, Attack& attack,
                             InverseAttack& inverse, AlignmentLoss& align);

/// UIAT (docs/method.md §3–§4): CE(f(x'), y) + λ·KL(p(x̌) ‖ p(x')), x̌ = uip(x, y), with one δ step per call at the
/// current weights (fused by default, see UIATLossOptions). `ref_probs` is p(x̌).
///
/// Cost over pgd_at_loss, fused: one forward of x̌ (with graph) and one input-gradient backward through
/// it, plus, when the pull term is on (β > 0, pull_weight > 0), one no-grad forward of x.
///
/// **Example**
/// \code
/// iat::UniversalInversePerturbation uip(iat::UniversalInversePerturbationOptions(10, {3, 32, 32}));
/// if (epoch == 75) uip->options.momentum(0.9);
/// auto step = iat::train::uiat_loss(net, x, y, pgd, uip, align);
/// \endcode
IAT_INLINE StepLoss uiat_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, Attack& attack,
                              UniversalInversePerturbation& uip, AlignmentLoss& align,
                              const UIATLossOptions& options = {});

/// UIAT with the kTargetEMA reading of inverse momentum (docs/method.md §4.3): the reference is the per-example EMA
/// p̄ = γ·p̄_stored + (1 − γ)·p(x̌) kept in `ema_store` at dataset positions `index`, γ =
/// uip->options.momentum() when its momentum_form is kTargetEMA (0 otherwise: the store just records p(x̌)).
///
/// **Example**
/// \code
/// iat::OneOffCache ema(iat::OneOffCacheOptions(50000, 10));
/// uip->options.momentum_form(iat::InverseMomentum::kTargetEMA);
/// if (epoch == 75) uip->options.momentum(0.9);
/// auto step = iat::train::uiat_loss(net, x, y, pgd, uip, align, ema, index);
/// \endcode
IAT_INLINE StepLoss uiat_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, Attack& attack,
                              UniversalInversePerturbation& uip, AlignmentLoss& align, OneOffCache& ema_store,
                              const torch::Tensor& index, const UIATLossOptions& options = {});

/// The one-off strategy (docs/method.md §5, supplement equations (1)–(2)): CE(f(x'), y) + λ·KL(p_OO ‖ p(x')) with
/// p_OO = p(x) for epoch < T', p(x̃) at T' (x̃ = inverse(x, y, x'), stored at `index`), the stored value
/// after T'. `index` [N] holds the batch's positions in the training set. `ref_probs` is p_OO. After T', an
/// example T' never visited (a dropped last batch, a generated set larger than one epoch) gets its x̃ and p(x̃)
/// when it is first met, on that step's weights, and is stored then (docs/method.md §5).
///
/// Cost over pgd_at_loss: one forward of x (with graph) before T', the inverse attack and a forward of x̃
/// at T', nothing after T' for stored examples (the inverse attack and a no-grad forward for the others' rows).
///
/// **Example**
/// \code
/// iat::OneOffCache cache(iat::OneOffCacheOptions(50000, 10).one_off_epoch(80));
/// auto step = iat::train::one_off_loss(net, x, y, index, epoch, pgd, inverse, cache, align);
/// \endcode
IAT_INLINE StepLoss one_off_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                                 const torch::Tensor& index, int64_t epoch, Attack& attack, InverseAttack& inverse,
                                 OneOffCache& cache, AlignmentLoss& align);

/// Single-step adversarial training (docs/method.md §1, §6) without UIAT: CE(f(x̂), y) [+ GradAlign]. The attack
/// decides the variant: iat::FGSM with random_start (FGSM-RS), iat::NFGSM (N-FGSM), or plain iat::FGSM with
/// step 1.25ε and `grad_align_weight(0.2)` (GradAlign).
///
/// **Example**
/// \code
/// iat::FGSM fgsm_rs(iat::FGSMOptions().random_start(true));
/// auto step = iat::train::single_step_loss(net, x, y, fgsm_rs);
/// iat::FGSM fgsm(iat::FGSMOptions().step_size(1.25 * 8 / 255));
/// auto ga = iat::train::single_step_loss(net, x, y, fgsm, iat::train::SingleStepOptions().grad_align_weight(0.2));
/// \endcode
IAT_INLINE StepLoss single_step_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                                     Attack& attack, const SingleStepOptions& options = {});

/// Single-step adversarial training with UIAT (supplement equation (5)): the single-step loss plus
/// λ·KL(p(x̌) ‖ p(x̂)), where δ takes one signed step on CE alone (whatever uip's β) from the same forward
/// of x̌. `ref_probs` is p(x̌).
///
/// **Example**
/// \code
/// iat::NFGSM nfgsm;
/// auto step = iat::train::single_step_uiat_loss(net, x, y, nfgsm, uip, align);
/// \endcode
IAT_INLINE StepLoss single_step_uiat_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                                          Attack& attack, UniversalInversePerturbation& uip, AlignmentLoss& align,
                                          const SingleStepOptions& options = {});

#if IAT_HEADER_BODIES  // the entry points' bodies: inline here, or compiled once (iat/detail/compiled.hpp)

IAT_INLINE StepLoss pgd_at_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, Attack& attack) {
  auto x_adv = attack.perturb(model, x, y);
  auto adv_logits = model(x_adv);
  return detail::finish(detail::mean_ce(adv_logits, y), {}, adv_logits, {}, x_adv);
}

IAT_INLINE StepLoss natural_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y) {
  auto logits = model(x);
  auto ce = detail::mean_ce(logits, y);
  return detail::finish(ce, torch::Tensor(), logits, torch::Tensor(), x.detach());
}

IAT_INLINE StepLoss trades_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, Attack& attack,
                                double beta) {
  iat::detail::check_non_negative("iat::train::trades_loss", "beta", beta);
  auto x_adv = attack.perturb(model, x, y);
  auto nat_logits = model(x);
  auto adv_logits = model(x_adv);
  auto ce = detail::mean_ce(nat_logits, y);
  auto reg = beta * detail::trades_kl(nat_logits, adv_logits);
  return detail::finish(ce, reg, adv_logits, torch::softmax(nat_logits, 1), x_adv);
}

IAT_INLINE StepLoss trades_uiat_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                                     Attack& attack, UniversalInversePerturbation& uip, AlignmentLoss& align,
                                     double beta) {
  iat::detail::check_non_negative("iat::train::trades_uiat_loss", "beta", beta);
  detail::check_no_target_ema("iat::train::trades_uiat_loss", uip);
  torch::Tensor clean_logits;  // f(x), evaluation mode, no gradients: the KL attack's reference and δ's h(x)
  {
    torch::NoGradGuard no_grad;
    ModeGuard eval_mode(model, false);
    clean_logits = model(x.detach());
  }
  auto x_adv = attack.perturb_given_clean(model, x, y, clean_logits);
  auto nat_logits = model(x);
  auto ce = detail::mean_ce(nat_logits, y);
  auto fwd = uip->update_fused(model, x, y, x_adv, clean_logits);
  auto trades = beta * detail::trades_kl(nat_logits, fwd.adv_logits);
  auto [align_term, ref] = detail::uiat_alignment(uip, align, fwd.check_logits, fwd.adv_logits, nullptr, {});
  return detail::finish(ce, trades + align_term, fwd.adv_logits, ref, x_adv);
}

IAT_INLINE StepLoss hat_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, Attack& attack,
                             const ModelRef& helper, const HATOptions& options) {
  const char* who = "iat::train::hat_loss";
  iat::detail::check_non_negative(who, "beta", options.beta());
  iat::detail::check_non_negative(who, "gamma", options.gamma());
  iat::detail::check_non_negative(who, "helper_scale", options.helper_scale());
  auto x_adv = attack.perturb(model, x, y);
  torch::Tensor helper_labels;
  int64_t helper_classes = 0;
  {
    torch::NoGradGuard no_grad;
    ModeGuard eval_mode(helper, false);
    auto helper_logits = helper(x_adv);
    iat::detail::check_model_output("iat::train::hat_loss (helper model)", helper_logits, y);
    helper_classes = helper_logits.size(1);
    helper_labels = helper_logits.argmax(1);
  }
  auto x_help = x + options.helper_scale() * (x_adv - x);
  auto nat_logits = model(x);
  auto adv_logits = model(x_adv);
  auto help_logits = model(x_help);
  auto ce = detail::mean_ce(nat_logits, y);
  TORCH_CHECK_VALUE(helper_classes == nat_logits.size(1), who, ": the helper model has ", helper_classes,
                    " classes, the model ", nat_logits.size(1));
  auto kl = detail::trades_kl(nat_logits, adv_logits);
  auto help = functional::cross_entropy(help_logits, helper_labels, LogitsCheck::kOff).mean();
  auto reg = options.beta() * kl + options.gamma() * help;
  return detail::finish(ce, reg, adv_logits, torch::softmax(nat_logits, 1), x_adv);
}

IAT_INLINE StepLoss mart_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, Attack& attack,
                              double beta) {
  iat::detail::check_non_negative("iat::train::mart_loss", "beta", beta);
  auto x_adv = attack.perturb(model, x, y);
  auto adv_logits = model(x_adv);
  auto nat_logits = model(x);
  detail::check_training_output("iat::train::mart_loss", adv_logits, y);
  auto adv_probs = torch::softmax(adv_logits, 1);
  auto max_other = std::get<0>(functional::max_other_logit(adv_probs, y));
  auto bce = (functional::cross_entropy(adv_logits, y, LogitsCheck::kOff) -
              torch::log((1.0 - max_other).clamp_min(1e-12)))
                 .mean();
  auto nat_probs = torch::softmax(nat_logits, 1);
  auto true_prob = nat_probs.gather(1, y.unsqueeze(1)).squeeze(1);
  auto kl = functional::kl_div(torch::log_softmax(nat_logits, 1), torch::log_softmax(adv_logits, 1));
  auto reg = beta * (kl * (1.0 - true_prob)).mean();
  return detail::finish(bce, reg, adv_logits, nat_probs, x_adv);
}

IAT_INLINE StepLoss iat_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, Attack& attack,
                             InverseAttack& inverse, AlignmentLoss& align) {
  auto x_adv = attack.perturb(model, x, y);
  auto x_inv = inverse.perturb(model, x, y, x_adv);
  auto adv_logits = model(x_adv);
  auto inv_logits = model(x_inv);
  auto ce = detail::mean_ce(adv_logits, y);
  return detail::finish(ce, detail::align_checked_model(align, inv_logits, adv_logits), adv_logits,
                        torch::softmax(inv_logits, 1), x_adv);
}

IAT_INLINE StepLoss uiat_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, Attack& attack,
                              UniversalInversePerturbation& uip, AlignmentLoss& align,
                              const UIATLossOptions& options) {
  return detail::uiat_loss_impl(model, x, y, attack, uip, align, options, nullptr, {});
}

IAT_INLINE StepLoss uiat_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, Attack& attack,
                              UniversalInversePerturbation& uip, AlignmentLoss& align, OneOffCache& ema_store,
                              const torch::Tensor& index, const UIATLossOptions& options) {
  return detail::uiat_loss_impl(model, x, y, attack, uip, align, options, &ema_store, index);
}

IAT_INLINE StepLoss one_off_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                                 const torch::Tensor& index, int64_t epoch, Attack& attack, InverseAttack& inverse,
                                 OneOffCache& cache, AlignmentLoss& align) {
  auto x_adv = attack.perturb(model, x, y);
  auto adv_logits = model(x_adv);
  auto ce = detail::mean_ce(adv_logits, y);
  switch (cache->phase(epoch)) {
    case OneOffPhase::kNatural: {
      auto nat_logits = model(x);
      return detail::finish(ce, detail::align_checked_model(align, nat_logits, adv_logits), adv_logits,
                            torch::softmax(nat_logits, 1), x_adv);
    }
    case OneOffPhase::kInverse: {
      auto inv_logits = model(inverse.perturb(model, x, y, x_adv));
      auto inv_probs = torch::softmax(inv_logits, 1);
      cache->store(index, inv_probs);
      return detail::finish(ce, detail::align_checked_model(align, inv_logits, adv_logits), adv_logits, inv_probs,
                            x_adv);
    }
    case OneOffPhase::kStored: {
      // Rows T' never visited (a dropped last batch, a generated set larger than an epoch) get their inverse
      // example now, on the weights of this step, and are stored: from then on they are read like the others.
      // Each depends on its row alone, whatever rows share the batch or the rank: the model in eval mode (no
      // batch-norm statistics from a few rows), the inverse start drawn per row from a seed of the run's
      // stream and the example's index. The stream itself is left as it was, so the training's later draws
      // are those of a run without late rows, on every rank as in one process.
      auto make = [&](const torch::Tensor& rows) {
        const torch::Device device = x.device();
        KeepRandomStream keep(device);
        const auto base = static_cast<uint64_t>(
            torch::randint(std::numeric_limits<int64_t>::max(), {1}, torch::kLong).item<int64_t>());
        const auto examples = index.index_select(0, rows.to(index.device())).to(torch::kCPU, torch::kLong);
        std::vector<uint64_t> seeds;
        for (int64_t k = 0; k < examples.size(0); ++k) {
          seeds.push_back(base ^ (static_cast<uint64_t>(examples[k].item<int64_t>()) * 0x9e3779b97f4a7c15ULL));
        }
        iat::detail::RowSeededDraws per_row(std::move(seeds));
        ModeGuard eval(model, /*training=*/false);
        auto r = rows.to(device);
        auto x_inv = inverse.perturb(model, x.index_select(0, r), y.index_select(0, r), x_adv.index_select(0, r));
        torch::NoGradGuard no_grad;
        return torch::softmax(model(x_inv), 1);
      };
      auto stored = cache->read_or_store(index, make).to(adv_logits.device());
      return detail::finish(ce, detail::align_probs_checked_model(align, stored, adv_logits), adv_logits, stored,
                            x_adv);
    }
  }
  C10_THROW_ERROR(Error, "unknown iat::OneOffPhase");  // unconditional: every path returns or throws, at -O0 too
}

IAT_INLINE StepLoss single_step_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                                     Attack& attack, const SingleStepOptions& options) {
  return detail::single_step_impl(model, x, y, attack, nullptr, nullptr, options);
}

IAT_INLINE StepLoss single_step_uiat_loss(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                                          Attack& attack, UniversalInversePerturbation& uip, AlignmentLoss& align,
                                          const SingleStepOptions& options) {
  detail::check_no_target_ema("iat::train::single_step_uiat_loss", uip);
  return detail::single_step_impl(model, x, y, attack, &uip, &align, options);
}
#endif  // IAT_HEADER_BODIES

}  // namespace train
}  // namespace iat
