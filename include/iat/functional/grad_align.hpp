#pragma once
/// \file
/// iat::functional::grad_align: the GradAlign regulariser (Andriushchenko & Flammarion 2020).

#include <iat/detail/checks.hpp>
#include <iat/detail/batch_draw.hpp>
#include <iat/detail/compat.hpp>
#include <iat/functional/losses.hpp>
#include <iat/model_ref.hpp>

#include <torch/csrc/autograd/autograd.h>
#include <torch/types.h>

namespace iat {
namespace functional {

/// weight · mean_i (1 − cos(∇_x CE(f(x_i), y_i), ∇_x CE(f(x_i + η_i), y_i))), η ~ U(−ε, ε).
///
/// Differentiable with respect to the model's parameters through the gradient at x + η (double
/// backward); the gradient at x is held constant, as in the authors' code. Unlike an attack it leaves
/// the model in the caller's mode: it is part of the training loss. The default weight λ_GA = 0.2 is the
/// paper's value at ε = 8/255. Adds two forward and two backward passes (one of them double) per batch.
/// Refuses a model whose outputs are evidently probabilities (rows non-negative and summing to 1; read
/// with the label check it already makes, so at no extra cost) unless `check` is LogitsCheck::kOff.
///
/// **Example**
/// \code
/// auto x_adv = iat::FGSM(iat::FGSMOptions().step_size(1.25 * eps)).perturb(net, x, y);
/// auto loss = torch::nn::functional::cross_entropy(net(x_adv), y)
///           + iat::functional::grad_align(net, x, y, eps);
/// \endcode
inline torch::Tensor grad_align(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, double eps,
                                double weight = 0.2, LogitsCheck check = LogitsCheck::kRefuseProbabilities) {
  const char* who = "iat::functional::grad_align";
  detail::check_budget(who, "eps", eps);
  detail::check_non_negative(who, "weight", weight);
  detail::check_images(who, x);
  detail::check_labels(who, x, y);
  at::AutoGradMode grad_mode(true);

  auto input_grad = [&](const torch::Tensor& at, bool create_graph) {
    auto x_var = at.detach().requires_grad_(true);
    auto logits = model(x_var);
    detail::check_model_output(who, logits, y, check == LogitsCheck::kRefuseProbabilities,
                               "pass iat::LogitsCheck::kOff as grad_align's last argument to use such a model");
    auto loss = cross_entropy(logits, y, LogitsCheck::kOff).sum();
    return torch::autograd::grad({loss}, {x_var}, {}, /*retain_graph=*/iat::nullopt, create_graph)[0];
  };
  auto g_clean = input_grad(x, false).detach().flatten(1);
  auto noise = iat::detail::draw_for_batch(x, [&](const torch::Tensor& like) {
    return torch::empty_like(like).uniform_(-eps, eps);
  });
  auto g_noisy = input_grad(x.detach() + noise, true).flatten(1);
  auto cos = at::cosine_similarity(g_clean, g_noisy, 1, 1e-8);
  return weight * (1.0 - cos).mean();
}

}  // namespace functional
}  // namespace iat
