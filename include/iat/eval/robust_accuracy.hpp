#pragma once
/// \file
/// iat::eval::robust_accuracy: accuracy of a model on the adversarial examples one attack makes, batch by
/// batch (docs/method.md §8.5: PGD-20 and CW∞), with the evaluation attacks' usual settings.

#include <iat/attacks/attack.hpp>
#include <iat/attacks/pgd.hpp>
#include <iat/attacks/detail/autoattack.hpp>
#include <iat/detail/compat.hpp>
#include <iat/detail/compiled.hpp>
#include <iat/model_ref.hpp>

#include <torch/types.h>

#include <algorithm>

namespace iat {
namespace eval {

/// Natural and robust accuracy of one evaluation.
struct RobustAccuracy {
  double accuracy = 0;        ///< robust points / total
  int64_t correct = 0;        ///< robust points: classified correctly on the clean input and the attack's output
  double clean_accuracy = 0;  ///< correct on the clean input / total
  int64_t clean_correct = 0;
  int64_t total = 0;
  torch::Tensor robust;  ///< bool [N]: correct on the clean input and the attack's output (options overload)
  torch::Tensor clean;   ///< bool [N]: correct on the clean input (set by the options overload)
};

/// Options of the per-point robust_accuracy overload (and of iat::distributed::sharded_robust_accuracy).
struct RobustAccuracyOptions {
  /// Points per batch.
  TORCH_ARG(int64_t, batch_size) = 256;
  /// Set: before batch b the global CPU generator is seeded with seed + b, so that each batch's random
  /// draws depend on no other batch (what makes a sharded evaluation equal to one process). Unset: the
  /// generator runs on from batch to batch, as the plain overload does.
  TORCH_ARG(iat::optional<int64_t>, seed) = iat::nullopt;
  /// Sharding hook: this process runs the batches b with b % shard_count == shard_index; the others'
  /// points are left false in the flags and out of the counts (sharded_robust_accuracy sums them).
  TORCH_ARG(int64_t, shard_index) = 0;
  /// Number of processes sharing the batches (1: all of them here).
  TORCH_ARG(int64_t, shard_count) = 1;
};

/// The evaluation PGD of docs/method.md §8.5 with `steps` steps: L∞ ε, CE, uniform random start, one
/// restart, step α = `step_size` or, unset, ε/4 (2/255 at ε = 8/255; iat::PGDOptions' default). pgd20()
/// is this with 20 steps; `iat-train` reports its per-epoch robust accuracy (`pgd<K>_acc`) with
/// `pgd(eps, K)` and `iat-eval --also pgd20` runs pgd20(eps), so one name means one attack everywhere.
///
/// **Example**
/// \code
/// iat::PGD pgd10 = iat::eval::pgd(8.0 / 255, 10);                 // α = 2/255
/// \endcode
inline PGD pgd(double eps = 8.0 / 255, int64_t steps = 20, iat::optional<double> step_size = iat::nullopt) {
  return PGD(PGDOptions().eps(eps).step_size(step_size).steps(steps));
}

/// PGD-20 as docs/method.md §8.5 evaluates: L∞ ε, 20 steps, CE, uniform random start, step α =
/// `step_size` or, unset, ε/4 (the paper's 2/255 at ε = 8/255).
///
/// **Example**
/// \code
/// iat::PGD attack = iat::eval::pgd20(8.0 / 255);                  // α = 2/255
/// iat::PGD fashion = iat::eval::pgd20(0.1);                       // α = 0.025
/// iat::PGD fine = iat::eval::pgd20(8.0 / 255, 1.0 / 255);         // α = 1/255 (20 steps still cover ε)
/// \endcode
inline PGD pgd20(double eps = 8.0 / 255, iat::optional<double> step_size = iat::nullopt) {
  return pgd(eps, 20, step_size);
}

/// CW∞ as docs/method.md §8.5 evaluates: the same PGD on the CW margin max_{j≠y} z_j − z_y, 20 steps and
/// α = ε/4 unless given (no confidence κ: with sign steps κ only stops points already misclassified by a
/// margin of κ).
///
/// **Example**
/// \code
/// iat::PGD attack = iat::eval::cw_inf(8.0 / 255);                 // 20 steps, α = 2/255
/// \endcode
inline PGD cw_inf(double eps = 8.0 / 255, int64_t steps = 20, iat::optional<double> step_size = iat::nullopt) {
  return PGD(PGDOptions().eps(eps).step_size(step_size).steps(steps).loss(Loss::kMargin));
}

/// Accuracy of `model` under `attack.perturb(model, x, y)`, computed in batches of `batch_size`, together
/// with the clean accuracy. A point counts as robust when both its clean input and the attack's output are
/// classified correctly (the clean input is in the ε-ball too: an attack that happens to land on the right
/// class from a misclassified point does not make it robust), as AutoAttack counts; a row of non-finite
/// logits is wrong. So robust accuracy never exceeds the clean accuracy. The model runs in eval mode; its
/// mode is restored afterwards.
///
/// **Example**
/// \code
/// auto pgd = iat::eval::pgd20();
/// auto r = iat::eval::robust_accuracy(net, x_test, y_test, pgd, 256);
/// std::cout << "PGD-20: " << r.accuracy << " (clean " << r.clean_accuracy << ")\n";
/// \endcode
IAT_INLINE RobustAccuracy robust_accuracy(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                                          Attack& attack, int64_t batch_size = 256);

/// Like the plain overload, with per-point flags (`r.robust`, `r.clean`) and, with `seed`, every batch
/// seeded on its own (seed + batch index). With shard_count > 1 only this process's batches are run and
/// counted (accuracies over those points); iat::distributed::sharded_robust_accuracy combines the ranks.
///
/// **Example**
/// \code
/// auto pgd = iat::eval::pgd20();
/// auto r = iat::eval::robust_accuracy(net, x, y, pgd, iat::eval::RobustAccuracyOptions().batch_size(128).seed(0));
/// auto broken = r.clean & r.robust.logical_not();      // points the attack broke
/// \endcode
IAT_INLINE RobustAccuracy robust_accuracy(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                                          Attack& attack, const RobustAccuracyOptions& options);

#if IAT_HEADER_BODIES  // the entry points' bodies: inline here, or compiled once (iat/detail/compiled.hpp)

IAT_INLINE RobustAccuracy robust_accuracy(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                                          Attack& attack, int64_t batch_size) {
  const char* who = "iat::eval::robust_accuracy";
  iat::detail::check_images(who, x);
  iat::detail::check_labels(who, x, y);
  iat::detail::check_at_least(who, "batch_size", batch_size, 1);
  ModeGuard eval_mode(model, false);
  RobustAccuracy r;
  r.total = x.size(0);
  for (int64_t b = 0; b < r.total; b += batch_size) {
    const int64_t len = std::min(batch_size, r.total - b);
    auto xb = x.narrow(0, b, len);
    auto yb = y.narrow(0, b, len);
    auto adv = attack.perturb(model, xb, yb);
    torch::NoGradGuard no_grad;
    auto clean_logits = model(xb);
    iat::detail::check_model_output(who, clean_logits, yb);
    // A row with a NaN or infinite logit is not a correct prediction (its argmax would read as class 0).
    // Robust: correct on the clean input (δ = 0 is in the ball) and on the attack's output.
    auto ok_clean = iat::detail::finite_and_correct(clean_logits, yb);
    r.clean_correct += ok_clean.sum().item<int64_t>();
    r.correct += (ok_clean & iat::detail::finite_and_correct(model(adv), yb)).sum().item<int64_t>();
  }
  r.accuracy = static_cast<double>(r.correct) / static_cast<double>(r.total);
  r.clean_accuracy = static_cast<double>(r.clean_correct) / static_cast<double>(r.total);
  return r;
}

IAT_INLINE RobustAccuracy robust_accuracy(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y,
                                          Attack& attack, const RobustAccuracyOptions& options) {
  const char* who = "iat::eval::robust_accuracy";
  iat::detail::check_images(who, x);
  iat::detail::check_labels(who, x, y);
  iat::detail::check_at_least(who, "batch_size", options.batch_size(), 1);
  iat::detail::check_at_least(who, "shard_count", options.shard_count(), 1);
  TORCH_CHECK_VALUE(options.shard_index() >= 0 && options.shard_index() < options.shard_count(), who,
                    ": shard_index must be in [0, shard_count), got ", options.shard_index());
  ModeGuard eval_mode(model, false);
  const int64_t n = x.size(0), bs = options.batch_size();
  RobustAccuracy r;
  r.robust = torch::zeros({n}, torch::kBool);
  r.clean = torch::zeros({n}, torch::kBool);
  for (int64_t b = 0, k = 0; b < n; b += bs, ++k) {
    if (k % options.shard_count() != options.shard_index()) continue;
    const int64_t len = std::min(bs, n - b);
    auto xb = x.narrow(0, b, len);
    auto yb = y.narrow(0, b, len);
    if (options.seed()) torch::manual_seed(static_cast<uint64_t>(*options.seed() + k));
    auto adv = attack.perturb(model, xb, yb);
    torch::NoGradGuard no_grad;
    auto clean_logits = model(xb);
    iat::detail::check_model_output(who, clean_logits, yb);
    // A row with a NaN or infinite logit is not a correct prediction (its argmax would read as class 0).
    auto ok_clean = iat::detail::finite_and_correct(clean_logits, yb).to(torch::kCPU);
    // Robust: correct on the clean input (δ = 0 is in the ball) and on the attack's output.
    auto ok_adv = (iat::detail::finite_and_correct(model(adv), yb).to(torch::kCPU) & ok_clean);
    r.clean.narrow(0, b, len).copy_(ok_clean);
    r.robust.narrow(0, b, len).copy_(ok_adv);
    r.total += len;
  }
  r.clean_correct = r.clean.sum().item<int64_t>();
  r.correct = r.robust.sum().item<int64_t>();
  const double total = static_cast<double>(std::max<int64_t>(r.total, 1));
  r.accuracy = static_cast<double>(r.correct) / total;
  r.clean_accuracy = static_cast<double>(r.clean_correct) / total;
  return r;
}
#endif  // IAT_HEADER_BODIES

}  // namespace eval
}  // namespace iat
