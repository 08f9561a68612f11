#pragma once
/// \file
/// iat::train::ModelEMA: an exponential moving average of a model's weights (docs/method.md §8.3, decay 0.995).

#include <iat/detail/checks.hpp>
#include <iat/options_field.hpp>

#include <torch/arg.h>
#include <torch/nn/module.h>

#include <string>

namespace iat {
namespace train {

/// Options of ModelEMA.
///
/// **Example**
/// \code
/// auto o = iat::train::ModelEMAOptions().decay(0.995).average_buffers(true);
/// \endcode
struct ModelEMAOptions {
  /// Weight of the old average: θ̄ ← decay·θ̄ + (1 − decay)·θ.
  TORCH_ARG(double, decay) = 0.995;
  /// Floating-point buffers (batch-norm running mean and variance) are averaged like parameters when true;
  /// copied from the live model when false. Integer buffers (num_batches_tracked) are always copied.
  TORCH_ARG(bool, average_buffers) = true;
  /// Use min(decay, (1 + t)/(10 + t)) at update t, so that early averages are not dominated by the
  /// random initialisation.
  TORCH_ARG(bool, warmup) = false;
};

/// Keeps `average` an exponential moving average of `live`. Both are modules of the same architecture,
/// constructed by the caller (so any module works, Cloneable or not); the average starts as a copy of
/// live's current weights. Call `update()` after every optimiser step; evaluate with `average`.
///
/// Batch-norm statistics: by default the running mean/variance are averaged with the same decay as the
/// weights (they then describe the averaged network's activations as closely as an average can), and
/// num_batches_tracked is copied. Evaluate the average in eval mode: a forward in train mode would
/// overwrite its statistics with those of one batch.
///
/// **Example**
/// \code
/// auto net = iat::models::PreActResNet18(o), avg = iat::models::PreActResNet18(o);
/// iat::train::ModelEMA ema(*net, *avg);            // decay 0.995
/// ... optimizer.step(); ema.update();
/// evaluate(avg);
/// \endcode
class ModelEMA {
 public:
  ModelEMA(torch::nn::Module& live, torch::nn::Module& average, ModelEMAOptions o = {})
      : options(std::move(o)), live_(live), average_(average) {
    const char* who = "iat::train::ModelEMA";
    check_options();
    auto lp = live_.named_parameters(), ap = average_.named_parameters();
    auto lb = live_.named_buffers(), ab = average_.named_buffers();
    TORCH_CHECK_VALUE(lp.size() == ap.size() && lb.size() == ab.size(), who,
                      ": the live and average models differ in architecture (", lp.size(), " vs ", ap.size(),
                      " parameters, ", lb.size(), " vs ", ab.size(), " buffers)");
    for (const auto& item : lp) {
      const auto* other = ap.find(item.key());
      TORCH_CHECK_VALUE(other && other->sizes() == item.value().sizes(), who, ": parameter '", item.key(),
                        "' is missing or has another shape in the average model");
    }
    copy_from_live();
  }

  /// The options (docs/options.md): `ema.options.decay(0.999)`; checked at each update.
  OptionsField<ModelEMAOptions> options;

  /// Makes the average an exact copy of the live model (the state at construction).
  void copy_from_live() {
    torch::NoGradGuard no_grad;
    auto ap = average_.named_parameters();
    for (const auto& item : live_.named_parameters()) ap[item.key()].copy_(item.value());
    auto ab = average_.named_buffers();
    for (const auto& item : live_.named_buffers()) ab[item.key()].copy_(item.value());
    updates_ = 0;
  }

  /// One averaging step; returns the decay used.
  double update() {
    torch::NoGradGuard no_grad;
    check_options();
    double d = options.decay();
    if (options.warmup()) d = std::min(d, (1.0 + static_cast<double>(updates_)) / (10.0 + static_cast<double>(updates_)));
    auto ap = average_.named_parameters();
    for (const auto& item : live_.named_parameters()) ap[item.key()].mul_(d).add_(item.value().detach(), 1.0 - d);
    auto ab = average_.named_buffers();
    for (const auto& item : live_.named_buffers()) {
      auto& avg = ab[item.key()];
      if (options.average_buffers() && avg.is_floating_point()) {
        avg.mul_(d).add_(item.value(), 1.0 - d);
      } else {
        avg.copy_(item.value());
      }
    }
    ++updates_;
    return d;
  }

  /// Number of update() calls since construction or copy_from_live() (saved with checkpoints).
  int64_t updates() const { return updates_; }
  void set_updates(int64_t n) { updates_ = n; }

 private:
  void check_options() const {
    TORCH_CHECK_VALUE(options.decay() >= 0.0 && options.decay() < 1.0, "iat::train::ModelEMA: decay must be in [0, 1), got ",
                      options.decay());
  }

  torch::nn::Module& live_;
  torch::nn::Module& average_;
  int64_t updates_ = 0;
};

}  // namespace train
}  // namespace iat
