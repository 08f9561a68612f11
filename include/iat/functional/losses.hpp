#pragma once
/// \file
/// Per-example losses that attacks maximise (docs/method.md §1.2): cross-entropy, the CW margin, AutoAttack's DLR and
/// targeted DLR, and the TRADES KL to the clean prediction. Each returns a tensor [N], one value per
/// example, so that the gradient of their sum is each example's own gradient.

#include <iat/detail/checks.hpp>

#include <torch/types.h>

namespace iat {

/// Whether a loss that applies softmax to its inputs refuses inputs that are evidently probabilities:
/// every row non-negative and summing to 1 (within 1e-3; 1e-2 for 16-bit floats). Softmax outputs passed
/// where logits belong are accepted by the arithmetic but train or measure something else; real logits
/// essentially never look like that. The check is one small reduction over the [N, C] input and one
/// read of its result.
enum class LogitsCheck {
  kRefuseProbabilities,  ///< refuse probability-like inputs (the default)
  kOff,                  ///< take the values as they are
};

namespace functional {

/// CE(f(x), y) per example, from logits. Refuses `logits` that are evidently probabilities (every row
/// non-negative and summing to 1) unless `check` is LogitsCheck::kOff; the check reads one value back
/// from the device per call. The attacks call it with kOff inside their loops.
///
/// **Example**
/// \code
/// torch::Tensor l = iat::functional::cross_entropy(model(x), y);  // [N]
/// auto p = torch::softmax(model(x), 1);
/// iat::functional::cross_entropy(p, y);                            // throws: looks like probabilities
/// iat::functional::cross_entropy(p, y, iat::LogitsCheck::kOff);    // computed as given
/// \endcode
inline torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& y,
                                   LogitsCheck check = LogitsCheck::kRefuseProbabilities) {
  if (check == LogitsCheck::kRefuseProbabilities) {
    detail::check_not_probabilities("iat::functional::cross_entropy", "logits", logits,
                                    "pass iat::LogitsCheck::kOff to compute it on such values");
  }
  return at::cross_entropy_loss(logits, y, {}, at::Reduction::None);
}

/// The largest logit among the classes other than y, and its index, per example.
inline std::tuple<torch::Tensor, torch::Tensor> max_other_logit(const torch::Tensor& logits, const torch::Tensor& y) {
  auto is_y = at::one_hot(y, logits.size(1)).to(torch::kBool);
  auto masked = logits.masked_fill(is_y, -std::numeric_limits<double>::infinity());
  auto best = masked.max(1);
  return best;
}

/// The CW margin max_{j≠y} z_j − z_y per example: positive exactly when x is misclassified.
///
/// **Example**
/// \code
/// // logits [[1, 3, 2]], y = [0]  ->  3 - 1 = 2
/// \endcode
inline torch::Tensor margin_loss(const torch::Tensor& logits, const torch::Tensor& y) {
  return std::get<0>(max_other_logit(logits, y)) - logits.gather(1, y.unsqueeze(1)).squeeze(1);
}

/// AutoAttack's difference-of-logits ratio, −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3 + 1e-12), with z_π
/// the logits sorted in decreasing order. Needs at least 3 classes.
///
/// **Example**
/// \code
/// // logits [[4, 1, 2, 0]], y = [0]  ->  -(4 - 2) / (4 - 1) = -2/3
/// \endcode
inline torch::Tensor dlr_loss(const torch::Tensor& logits, const torch::Tensor& y) {
  TORCH_CHECK_VALUE(logits.dim() == 2 && logits.size(1) >= 3,
                    "iat::functional::dlr_loss: DLR needs at least 3 classes, got logits of shape ", logits.sizes());
  auto sorted = std::get<0>(logits.sort(1, /*descending=*/true));
  auto z_y = logits.gather(1, y.unsqueeze(1)).squeeze(1);
  auto other = std::get<0>(max_other_logit(logits, y));
  return -(z_y - other) / (sorted.select(1, 0) - sorted.select(1, 2) + 1e-12);
}

/// AutoAttack's targeted DLR, −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12). Needs at least 4 classes.
///
/// **Example**
/// \code
/// // logits [[4, 1, 2, 0]], y = [0], t = [2]  ->  -(4 - 2) / (4 - (1 + 0)/2) = -4/7
/// \endcode
inline torch::Tensor targeted_dlr_loss(const torch::Tensor& logits, const torch::Tensor& y,
                                       const torch::Tensor& target) {
  TORCH_CHECK_VALUE(logits.dim() == 2 && logits.size(1) >= 4,
                    "iat::functional::targeted_dlr_loss: targeted DLR needs at least 4 classes, got logits of shape ",
                    logits.sizes());
  auto sorted = std::get<0>(logits.sort(1, /*descending=*/true));
  auto z_y = logits.gather(1, y.unsqueeze(1)).squeeze(1);
  auto z_t = logits.gather(1, target.unsqueeze(1)).squeeze(1);
  return -(z_y - z_t) / (sorted.select(1, 0) - 0.5 * (sorted.select(1, 2) + sorted.select(1, 3)) + 1e-12);
}

/// KL(p ‖ q) per example, summed over classes, from log-probabilities: Σ_c p_c (log p_c − log q_c).
/// The first argument is the reference distribution p.
///
/// **Example**
/// \code
/// auto kl = iat::functional::kl_div(torch::log_softmax(ref_logits, 1), torch::log_softmax(logits, 1));
/// \endcode
inline torch::Tensor kl_div(const torch::Tensor& log_p, const torch::Tensor& log_q) {
  // Terms with p = 0 contribute 0, also where log p = -inf (a stored probability of exactly 0): the
  // clamp keeps both the value and its gradient finite.
  return (log_p.exp() * (log_p.clamp_min(-1e4) - log_q)).sum(1);
}

}  // namespace functional
}  // namespace iat
