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

/// Labels in [0, num_classes), checked once the model's logits tell num_classes.
inline void check_label_range(const char* who, const torch::Tensor& y, int64_t num_classes) {
  auto range = at::aminmax(y);
  const int64_t lo = std::get<0>(range).item<int64_t>();
  const int64_t hi = std::get<1>(range).item<int64_t>();
  TORCH_CHECK_VALUE(lo >= 0 && hi < num_classes, who, ": labels must be in [0, ", num_classes,
                    ") for a model with ", num_classes, " outputs, got labels in [", lo, ", ", hi, "]");
}

/// Logits: [N, C] with N = batch size.
inline void check_logits(const char* who, const torch::Tensor& logits, int64_t batch) {
  TORCH_CHECK_VALUE(logits.dim() == 2 && logits.size(0) == batch, who,
                    ": the model must return logits of shape [N, num_classes] with N = ", batch, ", got ",
                    logits.sizes());
}

/// The model's output for a batch with labels y: logits [N, C] and every label below C.
inline void check_model_output(const char* who, const torch::Tensor& logits, const torch::Tensor& y) {
  check_logits(who, logits, y.size(0));
  check_label_range(who, y, logits.size(1));
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
