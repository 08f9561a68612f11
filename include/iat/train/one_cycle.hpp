#pragma once
/// \file
/// iat::train::OneCycleLR: the "cyclic" learning-rate schedule of the supplement (docs/method.md §8.1).

#include <iat/detail/checks.hpp>
#include <iat/options_field.hpp>

#include <torch/arg.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/sgd.h>

namespace iat {
namespace train {

/// Options of OneCycleLR: a piecewise-linear schedule from `start_lr` up to `max_lr` at `peak_fraction` of
/// training, then down to `final_lr` at its end (the one-cycle schedule of Wong et al. 2020 and the
/// codebases that follow it: 0 → max → 0 with the peak at 2/5 of the epochs).
///
/// **Example**
/// \code
/// auto o = iat::train::OneCycleOptions(/*max_lr=*/0.1, /*total_steps=*/100 * 391);
/// \endcode
struct OneCycleOptions {
  OneCycleOptions(double max_lr, int64_t total_steps) : max_lr_(max_lr), total_steps_(total_steps) {}
  /// The peak learning rate (0.1 for CIFAR/SVHN, 0.2 with generated data).
  TORCH_ARG(double, max_lr);
  /// Optimiser steps in the whole run (epochs × batches per epoch).
  TORCH_ARG(int64_t, total_steps);
  /// Where the peak lies, as a fraction of total_steps.
  TORCH_ARG(double, peak_fraction) = 0.4;
  /// Learning rate at step 0.
  TORCH_ARG(double, start_lr) = 0.0;
  /// Learning rate after the last step.
  TORCH_ARG(double, final_lr) = 0.0;
};

/// Sets the learning rate of every parameter group of an optimiser from the step count, once per batch.
/// Stateless apart from its options: resuming at step s only needs `lr_at(s)`.
///
/// **Example**
/// \code
/// iat::train::OneCycleLR schedule(optimizer, iat::train::OneCycleOptions(0.1, epochs * loader.size()));
/// for (int64_t step = 0; ...; ++step) { schedule.set_step(step); ... optimizer.step(); }
/// \endcode
class OneCycleLR {
 public:
  OneCycleLR(torch::optim::Optimizer& optimizer, OneCycleOptions o) : options(std::move(o)), optimizer_(optimizer) {
    check_options();
  }

  /// The options (docs/options.md): `schedule.options.total_steps(n)`; checked at each lr_at / set_step.
  OptionsField<OneCycleOptions> options;

  /// The learning rate at optimiser step `step` (0-based; steps past the end keep final_lr): the schedule's
  /// value at t = (step + 1) / total_steps, as Wong et al. set it from the index of the batch being trained
  /// on, so the first step already moves the weights (at t = 1/S, not at start_lr) and the last one, step
  /// S − 1, runs at final_lr.
  double lr_at(int64_t step) const {
    check_options();
    const OneCycleOptions& o = options;
    TORCH_CHECK_VALUE(step >= 0, "iat::train::OneCycleLR::lr_at: step must be >= 0, got ", step);
    const double t = static_cast<double>(step + 1) / static_cast<double>(o.total_steps());
    const double peak = o.peak_fraction();
    if (t >= 1.0) return o.final_lr();
    if (t < peak) return o.start_lr() + (o.max_lr() - o.start_lr()) * t / peak;
    if (peak >= 1.0) return o.max_lr();
    return o.max_lr() + (o.final_lr() - o.max_lr()) * (t - peak) / (1.0 - peak);
  }

  /// Writes lr_at(step) into every parameter group and returns it.
  double set_step(int64_t step) {
    const double lr = lr_at(step);
    for (auto& group : optimizer_.param_groups()) group.options().set_lr(lr);
    return lr;
  }


 private:
  void check_options() const {
    const char* who = "iat::train::OneCycleLR";
    const OneCycleOptions& o = options;
    iat::detail::check_positive(who, "max_lr", o.max_lr());
    iat::detail::check_at_least(who, "total_steps", o.total_steps(), 1);
    TORCH_CHECK_VALUE(o.peak_fraction() >= 0.0 && o.peak_fraction() <= 1.0, who,
                      ": peak_fraction must be in [0, 1], got ", o.peak_fraction());
    iat::detail::check_non_negative(who, "start_lr", o.start_lr());
    iat::detail::check_non_negative(who, "final_lr", o.final_lr());
  }

  torch::optim::Optimizer& optimizer_;
};

}  // namespace train
}  // namespace iat
