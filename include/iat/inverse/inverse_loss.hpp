#pragma once
/// \file
/// The inverse adversarial loss L_Inv(x̃, y) = CE(f(x̃), y) + β·R(x̃) that inverse examples descend
/// (docs/method.md §2), shared by iat::InverseAttack and iat::UniversalInversePerturbation.

#include <iat/detail/checks.hpp>
#include <iat/detail/compiled.hpp>
#include <iat/functional/losses.hpp>
#include <iat/model_ref.hpp>

#include <torch/arg.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/types.h>

#include <utility>
#include <vector>

namespace iat {

/// The form of the regulariser R of L_Inv (docs/method.md §2.1, an open choice).
enum class InverseRegularizer {
  kOutputKL,   ///< output level: h = p = softmax(f), D = KL. Needs nothing but logits (the default).
  kFeatureL2,  ///< feature level: h = φ (penultimate features), D = squared L2. Needs `forward_features`.
};

/// Which distribution a KL divergence puts first.
enum class KLDirection {
  kReferenceFirst,   ///< KL(reference ‖ other)
  kReferenceSecond,  ///< KL(other ‖ reference)
};

/// The parameters of L_Inv, as iat::InverseAttackOptions and iat::UniversalInversePerturbationOptions
/// carry them (`loss_options()` builds one from either).
///
/// L_Inv(x̃, y) = CE(f(x̃), y) + β·(pull·D(h(x̃), h(x)) − push·D(h(x̃), h(x'))), with h(x) and h(x')
/// held constant. For kOutputKL, D(h(x̃), h(x)) = KL(p(x̃) ‖ p(x)) with the default
/// `kl_direction(kReferenceSecond)` (the reference h(x) or h(x') second, as docs/method.md §2.1 writes
/// D(h(x̃), h(x))); kReferenceFirst gives KL(p(x) ‖ p(x̃)). β = 0 gives plain CE, as single-step training
/// uses.
///
/// **Example**
/// \code
/// auto o = iat::InverseLossOptions().beta(1.0).regularizer(iat::InverseRegularizer::kFeatureL2);
/// \endcode
struct InverseLossOptions {
  /// Weight β of the regulariser; 0 gives plain CE.
  TORCH_ARG(double, beta) = 1.0;
  /// Output-level KL (default) or feature-level squared L2.
  TORCH_ARG(InverseRegularizer, regularizer) = InverseRegularizer::kOutputKL;
  /// Weight of the pull term D(h(x̃), h(x)) towards the natural example.
  TORCH_ARG(double, pull_weight) = 1.0;
  /// Weight of the push term D(h(x̃), h(x')) away from the adversarial example (used when x' is given).
  TORCH_ARG(double, push_weight) = 1.0;
  /// Argument order of the output-level KL; the reference is h(x) or h(x').
  TORCH_ARG(KLDirection, kl_direction) = KLDirection::kReferenceSecond;
  /// Refuse logits (and output-level targets) that are evidently probabilities: every row non-negative
  /// and summing to 1 (iat::LogitsCheck). false takes them as they are.
  TORCH_ARG(bool, check_logits) = true;
};

namespace detail {
/// The L_Inv parameters of any options struct that carries them (InverseAttackOptions,
/// UniversalInversePerturbationOptions): one place that knows which fields make up InverseLossOptions.
template <typename Options>
InverseLossOptions inverse_loss_options_of(const Options& o) {
  return InverseLossOptions()
      .beta(o.beta())
      .regularizer(o.regularizer())
      .pull_weight(o.pull_weight())
      .push_weight(o.push_weight())
      .kl_direction(o.kl_direction())
      .check_logits(o.check_logits());
}
}  // namespace detail

/// The constant targets of the regulariser: h(x) and h(x') as the model returns them, that is logits
/// for InverseRegularizer::kOutputKL and penultimate features for kFeatureL2. An undefined tensor drops
/// its term (no x' given: no push term).
///
/// **Example**
/// \code
/// iat::InverseTargets t{net(x).detach(), net(x_adv).detach()};   // output level
/// \endcode
struct InverseTargets {
  torch::Tensor natural;      ///< h(x): logits or features of the natural batch
  torch::Tensor adversarial;  ///< h(x'): logits or features of the adversarial batch
};

namespace functional {

/// L_Inv per example, [N] (docs/method.md §2): CE(f(x̃), y) + β·(pull·D(h(x̃), h(x)) − push·D(h(x̃), h(x'))).
///
/// `logits` are f(x̃); `features` φ(x̃) are needed only for kFeatureL2 with β > 0; `targets` hold h(x)
/// and h(x') in the same form (logits for kOutputKL, features for kFeatureL2) and are detached here.
/// With `check_logits` (the default) logits and output-level targets that are evidently probabilities
/// are refused, with one read from the device per call (iat::InverseAttack and
/// iat::UniversalInversePerturbation fold it into the label check they make anyway).
///
/// **Example**
/// \code
/// auto l = iat::functional::inverse_loss(net(x_inv), y, iat::InverseLossOptions(),
///                                        {net(x).detach(), net(x_adv).detach()});   // [N]
/// \endcode
IAT_INLINE torch::Tensor inverse_loss(const torch::Tensor& logits, const torch::Tensor& y,
                                      const InverseLossOptions& options, const InverseTargets& targets = {},
                                      const torch::Tensor& features = {});

#if IAT_HEADER_BODIES  // the entry points' bodies: inline here, or compiled once (iat/detail/compiled.hpp)

IAT_INLINE torch::Tensor inverse_loss(const torch::Tensor& logits, const torch::Tensor& y,
                                      const InverseLossOptions& options, const InverseTargets& targets,
                                      const torch::Tensor& features) {
  const char* who = "iat::functional::inverse_loss";
  detail::check_non_negative(who, "beta", options.beta());
  detail::check_non_negative(who, "pull_weight", options.pull_weight());
  detail::check_non_negative(who, "push_weight", options.push_weight());
  const bool kl = options.regularizer() == InverseRegularizer::kOutputKL;
  if (options.check_logits()) {
    // One read from the device for f(x̃) and, when the KL uses them, the logit targets.
    std::vector<const char*> names{"logits"};
    std::vector<torch::Tensor> flags{detail::looks_like_probabilities(logits)};
    if (kl && options.beta() != 0.0) {
      for (const auto& [name, target] : {std::make_pair("the natural target h(x)", targets.natural),
                                         std::make_pair("the adversarial target h(x')", targets.adversarial)}) {
        if (!target.defined()) continue;
        names.push_back(name);
        flags.push_back(detail::looks_like_probabilities(target).to(logits.device()));
      }
    }
    auto found = torch::stack(flags).to(torch::kCPU);
    for (size_t k = 0; k < names.size(); ++k) {
      TORCH_CHECK_VALUE(!found[static_cast<int64_t>(k)].item<bool>(), who, ": ",
                        detail::probabilities_message(
                            names[k], "set InverseLossOptions().check_logits(false) to use such values"));
    }
  }
  auto loss = functional::cross_entropy(logits, y, LogitsCheck::kOff);
  if (options.beta() == 0.0) return loss;

  torch::Tensor h;
  if (kl) {
    h = torch::log_softmax(logits, 1);
  } else {
    TORCH_CHECK_VALUE(features.defined(), who,
                      ": regularizer kFeatureL2 needs the penultimate features of x_inv (features is undefined)");
    h = features.flatten(1);
  }
  auto distance = [&](const torch::Tensor& target, const char* name) -> torch::Tensor {
    auto t = target.detach();
    if (kl) {
      TORCH_CHECK_VALUE(t.sizes() == logits.sizes(), who, ": the ", name, " target must be logits of shape ",
                        logits.sizes(), " for regularizer kOutputKL, got ", t.sizes());
      auto log_t = torch::log_softmax(t.to(logits.scalar_type()), 1);
      return options.kl_direction() == KLDirection::kReferenceSecond ? functional::kl_div(h, log_t)
                                                                     : functional::kl_div(log_t, h);
    }
    auto flat = t.flatten(1);
    TORCH_CHECK_VALUE(flat.sizes() == h.sizes(), who, ": the ", name, " target must be features of shape ", h.sizes(),
                      " for regularizer kFeatureL2, got ", t.sizes());
    return (h - flat.to(h.scalar_type())).pow(2).sum(1);
  };
  if (targets.natural.defined() && options.pull_weight() != 0.0) {
    loss = loss + options.beta() * options.pull_weight() * distance(targets.natural, "natural");
  }
  if (targets.adversarial.defined() && options.push_weight() != 0.0) {
    loss = loss - options.beta() * options.push_weight() * distance(targets.adversarial, "adversarial");
  }
  return loss;
}
#endif  // IAT_HEADER_BODIES

}  // namespace functional

namespace detail {

/// Whether L_Inv with these options reads h(x) / h(x') at all.
inline bool needs_natural_target(const InverseLossOptions& o) { return o.beta() != 0.0 && o.pull_weight() != 0.0; }
inline bool needs_adversarial_target(const InverseLossOptions& o) {
  return o.beta() != 0.0 && o.push_weight() != 0.0;
}
inline bool needs_features(const InverseLossOptions& o) {
  return o.beta() != 0.0 && o.regularizer() == InverseRegularizer::kFeatureL2;
}

/// Checks that a model can serve L_Inv with these options (features for kFeatureL2).
inline void check_model_for_inverse_loss(const char* who, const ModelRef& model, const InverseLossOptions& o) {
  TORCH_CHECK_VALUE(!needs_features(o) || model.has_features(), who,
                    ": regularizer kFeatureL2 needs a model that exposes penultimate features (a member "
                    "`iat::LogitsAndFeatures forward_features(const torch::Tensor&)`, see iat::ModelRef); "
                    "use kOutputKL or beta(0) for this model");
}

/// The model's logits, and its features when L_Inv needs them.
inline LogitsAndFeatures forward_for_inverse_loss(const ModelRef& model, const torch::Tensor& x,
                                                  const InverseLossOptions& o) {
  if (needs_features(o)) return model.forward_features(x);
  return {model(x), torch::Tensor()};
}

/// h(x) and (when x_adv is defined) h(x'), computed once without gradient in the model's current mode.
inline InverseTargets inverse_targets(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& x_adv,
                                      const InverseLossOptions& o) {
  torch::NoGradGuard no_grad;
  InverseTargets t;
  auto h = [&](const torch::Tensor& v) {
    auto out = forward_for_inverse_loss(model, v, o);
    return needs_features(o) ? out.features : out.logits;
  };
  if (needs_natural_target(o)) t.natural = h(x.detach());
  if (x_adv.defined() && needs_adversarial_target(o)) t.adversarial = h(x_adv.detach());
  return t;
}

/// ∇_x Σ_i L_Inv_i at `point`, with L_Inv per example; no gradient reaches the parameters.
inline std::pair<torch::Tensor, torch::Tensor> inverse_input_gradient(const char* who, const ModelRef& model,
                                                                      const torch::Tensor& point,
                                                                      const torch::Tensor& y,
                                                                      const InverseLossOptions& o,
                                                                      const InverseTargets& targets) {
  auto x_var = point.detach().requires_grad_(true);
  auto out = forward_for_inverse_loss(model, x_var, o);
  // The logits check rides on the label check's read; the targets come from the same model.
  check_model_output(who, out.logits, y, o.check_logits(),
                     "set check_logits(false) in the options to use such a model");
  auto loss = functional::inverse_loss(out.logits, y, InverseLossOptions(o).check_logits(false), targets, out.features);
  auto grad = torch::autograd::grad({loss.sum()}, {x_var})[0];
  return {grad.detach(), loss.detach()};
}

}  // namespace detail
}  // namespace iat
