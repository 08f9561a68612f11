#pragma once
/// \file
/// iat::AlignmentLoss and iat::functional::alignment_loss: λ·KL(p_ref ‖ p_adv), the term that aligns the
/// adversarial prediction with the inverse (or cached) one (docs/method.md §3).

#include <iat/detail/checks.hpp>
#include <iat/detail/compiled.hpp>
#include <iat/functional/losses.hpp>
#include <iat/inverse/inverse_loss.hpp>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cmath>
#include <ostream>
#include <string>
#include <vector>

namespace iat {

/// Options of the alignment loss. Defaults: λ = 3.5 (CIFAR-10/100; 3.0 for SVHN), KL(p_ref ‖ p_adv),
/// no branch detached, temperature 1, logits checked.
///
/// **Example**
/// \code
/// auto svhn = iat::AlignmentLossOptions().weight(3.0);
/// auto frozen = iat::AlignmentLossOptions().detach_reference(true);
/// auto as_given = iat::AlignmentLossOptions().check_logits(false);   // no probability check
/// \endcode
struct AlignmentLossOptions {
  /// λ, the weight of the KL term.
  TORCH_ARG(double, weight) = 3.5;
  /// KL(p_ref ‖ p_adv) (kReferenceFirst, the default, as the supplement's equations (1) and (5)) or
  /// KL(p_adv ‖ p_ref).
  TORCH_ARG(KLDirection, direction) = KLDirection::kReferenceFirst;
  /// Stop the gradient through the reference branch (**reconstructed** default: false, no branch detached).
  TORCH_ARG(bool, detach_reference) = false;
  /// Softmax temperature T applied to both sides: p = softmax(z/T). A reference given as probabilities
  /// is tempered the same way (p^{1/T}, renormalised), which equals softmax(z/T) of its logits. No T² factor.
  TORCH_ARG(double, temperature) = 1.0;
  /// Tolerance on |Σ_c p_c − 1| and on negative entries when the reference is given as probabilities.
  TORCH_ARG(double, probability_tolerance) = 1e-3;
  /// Refuse logits arguments that are evidently probabilities (every row non-negative and summing to 1
  /// within 1e-3, 1e-2 for 16-bit floats; iat::LogitsCheck): softmax outputs passed as logits are
  /// softmaxed again and align something else. One small reduction per argument and one read from the
  /// device per call. false takes the values as they are.
  TORCH_ARG(bool, check_logits) = true;
};

namespace detail {

inline void check_alignment_options(const char* who, const AlignmentLossOptions& o) {
  check_non_negative(who, "weight", o.weight());
  check_positive(who, "temperature", o.temperature());
  check_positive(who, "probability_tolerance", o.probability_tolerance());
}

/// Probabilities [N, C]: finite, non-negative and summing to 1 within `tol` per row. `also_refuse`, when
/// defined, is a 0-dim bool on the device read in the same transfer; true throws `also_message`.
inline void check_probabilities(const char* who, const torch::Tensor& probs, int64_t classes, double tol,
                                const torch::Tensor& also_refuse = {}, const std::string& also_message = {}) {
  TORCH_CHECK_VALUE(probs.defined(), who, ": the reference probabilities are an undefined tensor");
  TORCH_CHECK_VALUE(probs.is_floating_point(), who, ": probabilities must be floating-point, got ",
                    probs.scalar_type());
  TORCH_CHECK_VALUE(probs.dim() == 2 && (classes < 0 || probs.size(1) == classes), who,
                    ": probabilities must have shape [N, ", classes < 0 ? std::string("C") : std::to_string(classes),
                    "], got ", probs.sizes());
  if (probs.numel() == 0) return;
  torch::NoGradGuard no_grad;
  auto p = probs.detach().to(torch::kFloat);
  auto sums = p.sum(1);
  // One read from the device: the smallest entry, the worst row sum and the caller's flag.
  std::vector<torch::Tensor> stats{p.min(), (sums - 1.0).abs().max()};
  if (also_refuse.defined()) stats.push_back(also_refuse.to(p.device(), torch::kFloat));
  auto read = torch::stack(stats).to(torch::kCPU, torch::kDouble);
  const double lo = read[0].item<double>();
  const double worst = read[1].item<double>();
  TORCH_CHECK_VALUE(!also_refuse.defined() || read[2].item<double>() == 0.0, who, ": ", also_message);
  TORCH_CHECK_VALUE(std::isfinite(worst) && lo >= -tol, who,
                    ": probabilities must be finite and non-negative, got a smallest entry of ", lo);
  TORCH_CHECK_VALUE(worst <= tol, who, ": probabilities must sum to 1 over classes (tolerance ", tol,
                    "), got row sums in [", sums.min().item<double>(), ", ", sums.max().item<double>(),
                    "] (pass logits to alignment_loss, probabilities to alignment_loss_from_probs)");
}

/// The batch-mean of per-example KL between log-distributions, in the configured direction, times λ.
inline torch::Tensor alignment_from_log_probs(torch::Tensor log_ref, const torch::Tensor& adv_logits,
                                              const AlignmentLossOptions& o) {
  if (o.detach_reference()) log_ref = log_ref.detach();
  auto log_adv = torch::log_softmax(adv_logits / o.temperature(), 1);
  auto kl = o.direction() == KLDirection::kReferenceFirst ? functional::kl_div(log_ref, log_adv)
                                                          : functional::kl_div(log_adv, log_ref);
  return o.weight() * kl.mean();
}

inline void check_alignment_pair(const char* who, const torch::Tensor& ref, const torch::Tensor& adv_logits,
                                 const char* ref_name) {
  TORCH_CHECK_VALUE(ref.defined() && adv_logits.defined(), who, ": undefined tensor argument");
  TORCH_CHECK_VALUE(adv_logits.dim() == 2 && adv_logits.size(0) > 0, who,
                    ": adv_logits must have shape [N, num_classes], got ", adv_logits.sizes());
  TORCH_CHECK_VALUE(ref.sizes() == adv_logits.sizes(), who, ": ", ref_name, " must have the shape of adv_logits ",
                    adv_logits.sizes(), ", got ", ref.sizes());
}

constexpr const char* kAlignmentAllow =
    "set AlignmentLossOptions().check_logits(false) to use such values; stored probabilities go to "
    "alignment_loss_from_probs / forward_probs";

/// Refuses reference and adversarial logits that look like probabilities, with one read for both.
inline void check_alignment_logits(const char* who, const torch::Tensor& ref_logits, const torch::Tensor& adv_logits) {
  auto found = torch::stack({looks_like_probabilities(ref_logits).to(adv_logits.device()),
                             looks_like_probabilities(adv_logits)})
                   .to(torch::kCPU);
  TORCH_CHECK_VALUE(!found[0].item<bool>(), who, ": ", probabilities_message("ref_logits", kAlignmentAllow));
  TORCH_CHECK_VALUE(!found[1].item<bool>(), who, ": ", probabilities_message("adv_logits", kAlignmentAllow));
}

}  // namespace detail

namespace functional {

/// λ·mean_i KL(p_ref,i ‖ p_adv,i), each KL summed over classes (docs/method.md §3), from reference logits: p_ref =
/// softmax(ref_logits/T), p_adv = softmax(adv_logits/T). A scalar.
///
/// Both arguments must be logits: unless `check_logits(false)`, an argument whose every row is
/// non-negative and sums to 1 is refused (it is evidently softmax outputs; stored probabilities belong in
/// alignment_loss_from_probs). The check is one small reduction per argument and one read from the
/// device per call.
///
/// **Example**
/// \code
/// auto loss = iat::functional::cross_entropy(net(x_adv), y).mean()
///           + iat::functional::alignment_loss(net(x_inv), net(x_adv));            // IAT, λ = 3.5
/// iat::functional::alignment_loss(torch::softmax(net(x_inv), 1), net(x_adv));     // throws: probabilities
/// \endcode
IAT_INLINE torch::Tensor alignment_loss(const torch::Tensor& ref_logits, const torch::Tensor& adv_logits,
                                        const AlignmentLossOptions& options = {});

/// The same loss with the reference given as probabilities [N, C] (a row of iat::OneOffCache, an EMA of
/// probabilities). Rows must be non-negative and sum to 1 (within `probability_tolerance`); `adv_logits`
/// must be logits (refused when they look like probabilities, unless `check_logits(false)`; read in the
/// same transfer as the reference's check).
///
/// **Example**
/// \code
/// auto p_oo = cache->read(index);                                   // stored p(x̃) of these examples
/// auto loss = iat::functional::alignment_loss_from_probs(p_oo, net(x_adv));
/// \endcode
IAT_INLINE torch::Tensor alignment_loss_from_probs(const torch::Tensor& ref_probs, const torch::Tensor& adv_logits,
                                                   const AlignmentLossOptions& options = {});

#if IAT_HEADER_BODIES  // the entry points' bodies: inline here, or compiled once (iat/detail/compiled.hpp)

IAT_INLINE torch::Tensor alignment_loss(const torch::Tensor& ref_logits, const torch::Tensor& adv_logits,
                                        const AlignmentLossOptions& options) {
  const char* who = "iat::functional::alignment_loss";
  detail::check_alignment_options(who, options);
  detail::check_alignment_pair(who, ref_logits, adv_logits, "ref_logits");
  if (options.check_logits()) detail::check_alignment_logits(who, ref_logits, adv_logits);
  return detail::alignment_from_log_probs(torch::log_softmax(ref_logits / options.temperature(), 1), adv_logits,
                                          options);
}

IAT_INLINE torch::Tensor alignment_loss_from_probs(const torch::Tensor& ref_probs, const torch::Tensor& adv_logits,
                                                   const AlignmentLossOptions& options) {
  const char* who = "iat::functional::alignment_loss_from_probs";
  detail::check_alignment_options(who, options);
  detail::check_alignment_pair(who, ref_probs, adv_logits, "ref_probs");
  if (options.check_logits()) {
    detail::check_probabilities(who, ref_probs, adv_logits.size(1), options.probability_tolerance(),
                                detail::looks_like_probabilities(adv_logits),
                                detail::probabilities_message("adv_logits", detail::kAlignmentAllow));
  } else {
    detail::check_probabilities(who, ref_probs, adv_logits.size(1), options.probability_tolerance());
  }
  // log p clamped away from -inf (p = 0 entries), then tempered and renormalised: softmax(log p / T).
  auto log_p = torch::log(ref_probs.to(adv_logits.scalar_type()).clamp_min(1e-30));
  return detail::alignment_from_log_probs(torch::log_softmax(log_p / options.temperature(), 1), adv_logits, options);
}
#endif  // IAT_HEADER_BODIES

}  // namespace functional

/// The alignment loss as a module (stateless; a module so that it sits beside the model in a training
/// program and prints its options). `forward(ref_logits, adv_logits)` and
/// `forward_probs(ref_probs, adv_logits)` compute iat::functional::alignment_loss and
/// iat::functional::alignment_loss_from_probs with `options`.
///
/// **Example**
/// \code
/// iat::AlignmentLoss align(iat::AlignmentLossOptions().weight(3.5));
/// auto loss = ce + align(net(x_check), net(x_adv));               // UIAT: reference p(x̌)
/// auto oo = ce + align->forward_probs(cache->read(index), adv_logits);
/// \endcode
class AlignmentLossImpl : public torch::nn::Cloneable<AlignmentLossImpl> {
 public:
  explicit AlignmentLossImpl(AlignmentLossOptions options_ = {}) : options(options_) { reset(); }

  /// Validates the options (the module has no state).
  void reset() override;

  /// λ·KL(p_ref ‖ p_adv) from reference logits.
  torch::Tensor forward(const torch::Tensor& ref_logits, const torch::Tensor& adv_logits) const {
    return functional::alignment_loss(ref_logits, adv_logits, options);
  }

  /// λ·KL(p_ref ‖ p_adv) from reference probabilities.
  torch::Tensor forward_probs(const torch::Tensor& ref_probs, const torch::Tensor& adv_logits) const {
    return functional::alignment_loss_from_probs(ref_probs, adv_logits, options);
  }

  /// Prints `iat::AlignmentLoss(weight=3.5, ...)`.
  void pretty_print(std::ostream& stream) const override;

  /// The options in force; may be changed between calls.
  AlignmentLossOptions options;
};

/// A module holder for AlignmentLossImpl (see there).
TORCH_MODULE(AlignmentLoss);

#if IAT_HEADER_BODIES  // the entry points' bodies: inline here, or compiled once (iat/detail/compiled.hpp)

IAT_INLINE void AlignmentLossImpl::reset() { detail::check_alignment_options("iat::AlignmentLoss", options); }

IAT_INLINE void AlignmentLossImpl::pretty_print(std::ostream& stream) const {
  stream << "iat::AlignmentLoss(weight=" << options.weight() << ", direction="
         << (options.direction() == KLDirection::kReferenceFirst ? "KL(ref||adv)" : "KL(adv||ref)")
         << ", detach_reference=" << (options.detach_reference() ? "true" : "false")
         << ", temperature=" << options.temperature()
         << ", check_logits=" << (options.check_logits() ? "true" : "false") << ")";
}
#endif  // IAT_HEADER_BODIES

}  // namespace iat
