#pragma once
/// \file
/// Input and option validation shared by iat's components. Messages name the component, the option
/// and the value, as in `iat::PGD: eps must be in (0, 1], got 8 (did you mean 8/255?)`.

#include <iat/detail/compat.hpp>

#include <torch/types.h>

#include <cmath>
#include <mutex>
#include <set>
#include <string>

namespace iat {
namespace detail {

/// A perturbation budget in pixel units: (0, 1]. A value > 1 gets the 8-means-8/255 hint.
inline void check_budget(const char* who, const char* option, double value) {
  TORCH_CHECK_VALUE(std::isfinite(value) && value > 0.0 && value <= 1.0, who, ": ", option,
                    " must be in (0, 1] (pixel units for inputs in [0,1]), got ", value,
                    value > 1.0 && value <= 255.0
                        ? " (did you mean " + std::to_string(static_cast<int>(std::lround(value))) + "/255?)"
                        : std::string());
}

inline void check_positive(const char* who, const char* option, double value) {
  TORCH_CHECK_VALUE(std::isfinite(value) && value > 0.0, who, ": ", option, " must be > 0, got ", value);
}

inline void check_non_negative(const char* who, const char* option, double value) {
  TORCH_CHECK_VALUE(std::isfinite(value) && value >= 0.0, who, ": ", option, " must be >= 0, got ", value);
}

inline void check_at_least(const char* who, const char* option, int64_t value, int64_t minimum) {
  TORCH_CHECK_VALUE(value >= minimum, who, ": ", option, " must be >= ", minimum, ", got ", value);
}

/// x: a floating batch [N, ...] with values in [0, 1].
inline void check_images(const char* who, const torch::Tensor& x) {
  TORCH_CHECK_VALUE(x.defined(), who, ": x is an undefined tensor");
  TORCH_CHECK_VALUE(x.is_floating_point(), who, ": x must be a floating-point tensor with values in [0, 1], got ",
                    x.scalar_type(), " (convert images with x.to(torch::kFloat) / 255)");
  TORCH_CHECK_VALUE(x.dim() >= 2 && x.size(0) > 0, who, ": x must be a non-empty batch [N, ...], got shape ",
                    x.sizes());
  auto range = at::aminmax(x.detach());
  const double lo = std::get<0>(range).item<double>();
  const double hi = std::get<1>(range).item<double>();
  TORCH_CHECK_VALUE(lo >= 0.0 && hi <= 1.0, who, ": x must lie in [0, 1] (normalisation by mean/std belongs ",
                    "inside the model), got values in [", lo, ", ", hi, "]");
}

/// y: int64 labels [N] matching x's batch size. Label range is checked by check_label_range.
inline void check_labels(const char* who, const torch::Tensor& x, const torch::Tensor& y) {
  TORCH_CHECK_VALUE(y.defined(), who, ": y is an undefined tensor");
  TORCH_CHECK_VALUE(y.scalar_type() == torch::kLong, who, ": y must hold int64 class labels, got ",
                    y.scalar_type());
  TORCH_CHECK_VALUE(y.dim() == 1 && y.size(0) == x.size(0), who, ": x and y must have the same batch size, got x ",
                    x.sizes(), " and y ", y.sizes());
}

/// Whether every row of `t` [N, C] (C >= 2) is non-negative and sums to 1 within 1e-3 (1e-2 for 16-bit
/// floats): values that are evidently probabilities, not logits. A 0-dim bool tensor on t's device, so
/// that callers read it together with whatever else they read from the device (no host sync here).
/// Real logits essentially never pass: every one of N·C values would have to be >= 0 and each row's sum
/// 1 to within the tolerance. Non-finite values make it false.
inline torch::Tensor looks_like_probabilities(const torch::Tensor& t) {
  auto p = t.detach();
  if (p.dim() != 2 || p.size(0) == 0 || p.size(1) < 2 || !p.is_floating_point()) {
    return torch::zeros({}, p.options().dtype(torch::kBool));
  }
  const auto type = p.scalar_type();
  const double tol = type == torch::kHalf || type == torch::kBFloat16 ? 1e-2 : 1e-3;
  auto sums = p.sum(1, /*keepdim=*/false, torch::kFloat);
  return (p.amin() >= 0).logical_and_((sums - 1.0).abs().amax() <= tol);
}

/// The message for values that look like probabilities where logits are expected; `allow` says how to
/// pass such values on purpose.
inline std::string probabilities_message(const char* what, const char* allow) {
  return std::string(what) +
         " look like probabilities (every row is non-negative and sums to 1), but logits are expected: pass the "
         "model's raw outputs, before any softmax" +
         (allow != nullptr && *allow != 0 ? std::string(" (") + allow + ")" : std::string());
}

/// Refuses `t` when looks_like_probabilities(t): one small reduction and one read of its result.
inline void check_not_probabilities(const char* who, const char* what, const torch::Tensor& t, const char* allow) {
  TORCH_CHECK_VALUE(!looks_like_probabilities(t).item<bool>(), who, ": ", probabilities_message(what, allow));
}

/// Labels in [0, num_classes), checked once the model's logits tell num_classes (one read from the device).
inline void check_label_range(const char* who, const torch::Tensor& y, int64_t num_classes) {
  auto range = at::aminmax(y);
  // On a device both values come back in one transfer (one sync); on the CPU reading them is free.
  auto both = y.device().is_cpu() ? torch::Tensor() : torch::stack({std::get<0>(range), std::get<1>(range)}).cpu();
  const int64_t lo = (both.defined() ? both[0] : std::get<0>(range)).item<int64_t>();
  const int64_t hi = (both.defined() ? both[1] : std::get<1>(range)).item<int64_t>();
  TORCH_CHECK_VALUE(lo >= 0 && hi < num_classes, who, ": labels must be in [0, ", num_classes,
                    ") for a model with ", num_classes, " outputs, got labels in [", lo, ", ", hi, "]");
}

/// Logits: [N, C] with N = batch size.
inline void check_logits(const char* who, const torch::Tensor& logits, int64_t batch) {
  TORCH_CHECK_VALUE(logits.dim() == 2 && logits.size(0) == batch, who,
                    ": the model must return logits of shape [N, num_classes] with N = ", batch, ", got ",
                    logits.sizes());
}

/// The model's output for a batch with labels y: logits [N, C] and every label below C. With
/// `refuse_probabilities`, outputs that look like probabilities (looks_like_probabilities) are refused
/// too, read from the device in the same transfer as the label range, so the check costs no extra host
/// sync; `allow` says how to pass such outputs on purpose.
inline void check_model_output(const char* who, const torch::Tensor& logits, const torch::Tensor& y,
                               bool refuse_probabilities = false, const char* allow = nullptr) {
  check_logits(who, logits, y.size(0));
  if (!refuse_probabilities) {
    check_label_range(who, y, logits.size(1));
    return;
  }
  const int64_t num_classes = logits.size(1);
  auto range = at::aminmax(y);
  auto probs = looks_like_probabilities(logits).to(y.device(), torch::kLong);
  auto all = torch::stack({std::get<0>(range), std::get<1>(range), probs}).to(torch::kCPU);
  const int64_t lo = all[0].item<int64_t>();
  const int64_t hi = all[1].item<int64_t>();
  TORCH_CHECK_VALUE(lo >= 0 && hi < num_classes, who, ": labels must be in [0, ", num_classes,
                    ") for a model with ", num_classes, " outputs, got labels in [", lo, ", ", hi, "]");
  TORCH_CHECK_VALUE(all[2].item<int64_t>() == 0, who, ": ", probabilities_message("the model's outputs", allow));
}

/// Emits `message` through LibTorch's warning handler (TORCH_WARN; printed to stderr by default, a
/// UserWarning in Python) the first time this process sees that exact text; later calls with the same
/// text are silent. Under `c10::Warning::set_warnAlways(true)` every call warns, as with TORCH_WARN_ONCE.
inline void warn_once(const std::string& message) {
  static std::mutex mutex;
  static std::set<std::string> seen;
  if (!warn_always()) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!seen.insert(message).second) return;
  }
  TORCH_WARN(message);
}

/// Warns once (per distinct message) when `steps` steps of `step_size` cannot cross a ball of radius
/// `eps`, steps × step_size < eps: the iterates then stay within steps × step_size of where they started
/// and explore only part of the ball, which a random start hides. `default_rule` names the step size used
/// when none is set ("eps/4"); `step_size_set` says whether the caller chose it.
inline void warn_if_steps_fall_short(const char* who, const char* eps_name, double eps, int64_t steps,
                                     double step_size, bool step_size_set, const char* default_rule,
                                     double default_step) {
  const double reach = static_cast<double>(steps) * step_size;
  if (reach >= eps * (1.0 - 1e-9)) return;
  std::string how = step_size_set ? c10::str("; leave step_size unset for ", default_rule, " = ", default_step,
                                             ", or raise steps or step_size so that steps x step_size >= ",
                                             eps_name)
                                  : c10::str("; raise steps to at least ", std::ceil(eps / step_size * (1.0 - 1e-9)),
                                             " or set a larger step_size");
  warn_once(c10::str(who, ": steps x step_size = ", steps, " x ", step_size,
                     step_size_set ? "" : c10::str(" (the default ", default_rule, ")"), " = ", reach,
                     " is less than ", eps_name, " = ", eps, ": the attack moves at most ", reach,
                     " from its start and explores only part of the ", eps_name, "-ball", how));
}

}  // namespace detail
}  // namespace iat
