#pragma once
/// \file
/// iat::Square: the Square attack (Andriushchenko et al. 2020), a score-based black-box attack, L∞ and
/// L2, as AutoAttack (fra31/auto-attack) runs it: margin loss, p schedule not rescaled to the query
/// budget, one square window and one sign per channel shared by the whole batch at every iteration.

#include <iat/attacks/attack.hpp>
#include <iat/attacks/detail/autoattack.hpp>
#include <iat/detail/compiled.hpp>
#include <iat/options_field.hpp>
#include <iat/threat_model.hpp>

#include <torch/arg.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <string>

namespace iat {

namespace detail {

/// Square's schedule of p, the fraction of the image a square covers, at iteration `it` (0-based):
/// p_init up to 10, then halved after 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 iterations.
/// With `rescale`, `it` is first mapped to ⌊it/n_queries·10000⌋ (AutoAttack standard does not).
///
/// **Example**
/// \code
/// double p = iat::detail::square_p_schedule(60, 0.8, 5000, false);  // 0.2
/// \endcode
inline double square_p_schedule(int64_t it, double p_init, int64_t n_queries, bool rescale) {
  if (rescale) it = static_cast<int64_t>(static_cast<double>(it) / static_cast<double>(n_queries) * 10000);
  static constexpr int64_t kBounds[] = {10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000};
  double p = p_init;
  for (int64_t bound : kBounds) {
    if (it > bound) p /= 2;
  }
  return p;
}

/// Side of Square's L∞ window for fraction p of an H×W image: max(round(√(p·H·W)), 1), capped at
/// min(H, W); rounding is half-to-even, as Python's round.
///
/// **Example**
/// \code
/// int64_t s = iat::detail::square_side(0.8, 3, 32, 32);  // 29
/// \endcode
inline int64_t square_side(double p, int64_t channels, int64_t h, int64_t w) {
  const double features = static_cast<double>(channels * h * w);
  auto s = static_cast<int64_t>(std::nearbyint(std::sqrt(p * features / static_cast<double>(channels))));
  return std::min(std::max<int64_t>(s, 1), std::min(h, w));
}

/// A random integer in [0, span) drawn as ⌊span·U⌋ from the global CPU generator (one number is drawn
/// also when span is 0).
inline int64_t square_random_offset(int64_t span) {
  return (torch::rand({1}) * span).to(torch::kLong).item<int64_t>();
}

/// Square's L∞ candidate: x_best with the s×s window at (vh, vw) of every channel moved by
/// `step` [C, 1, 1] (±2ε per channel), projected onto the ε-ball around x and the [0,1] box. The
/// reference computes min(max(x_best + window, x − ε), x + ε) clamped to [0,1] over the whole image with
/// a window that is zero outside the square; outside it that expression gives x_best back bit for bit
/// (x_best already is such a projection, and min, max and clamp are idempotent), so only the window is
/// computed here (the tests compare the two).
///
/// **Example**
/// \code
/// auto step = torch::tensor({2 * 0.03f}).view({1, 1, 1});
/// auto cand = iat::detail::square_linf_candidate(x, x_best, 0.03, 4, 7, 3, step);
/// \endcode
inline torch::Tensor square_linf_candidate(const torch::Tensor& x, const torch::Tensor& x_best, double eps, int64_t vh,
                                           int64_t vw, int64_t s, const torch::Tensor& step) {
  auto out = x_best.clone();
  auto window = [&](const torch::Tensor& t) { return t.slice(2, vh, vh + s).slice(3, vw, vw + s); };
  auto x_w = window(x);
  window(out).copy_(torch::min(torch::max(window(x_best) + step, x_w - eps), x_w + eps).clamp(0.0, 1.0));
  return out;
}

/// Square's L2 building block: an h×w array of nested rectangles around the centre, rings weighted
/// 1/(k+1)², normalised to unit L2 norm.
inline torch::Tensor square_rectangles(int64_t h, int64_t w) {
  auto delta = torch::zeros({h, w});
  const int64_t ch = h / 2 + 1, cw = w / 2 + 1;
  int64_t r0 = ch - 1, c0 = cw - 1;
  for (int64_t k = 0; k < std::max(ch, cw); ++k) {
    const float weight = 1.0f / static_cast<float>((k + 1) * (k + 1));
    delta.slice(0, std::max<int64_t>(r0, 0), std::min(r0 + 2 * k + 1, h))
        .slice(1, std::max<int64_t>(c0, 0), std::min(c0 + 2 * k + 1, w)) += static_cast<double>(weight);
    --r0;
    --c0;
  }
  return delta / delta.pow(2).sum(at::IntArrayRef{0, 1}, true).sqrt();
}

/// Square's L2 window pattern of side s: the rectangles on the top half, their negatives on the
/// bottom half, unit L2 norm, transposed with probability 1/2 (one number from the CPU generator).
inline torch::Tensor square_l2_pattern(int64_t s) {
  auto delta = torch::zeros({s, s});
  delta.narrow(0, 0, s / 2).copy_(square_rectangles(s / 2, s));
  delta.narrow(0, s / 2, s - s / 2).copy_(square_rectangles(s - s / 2, s) * -1.0);
  delta = delta / delta.pow(2).sum(at::IntArrayRef{0, 1}, true).sqrt();
  if ((torch::rand({1}) > 0.5).item<bool>()) delta = delta.permute({1, 0});
  return delta;
}

}  // namespace detail

/// Options of iat::Square. Defaults are AutoAttack standard's: L∞, ε = 8/255, 5000 queries,
/// p_init = 0.8, 1 restart, schedule not rescaled, seed 0.
///
/// **Example**
/// \code
/// auto sq = iat::SquareOptions().n_queries(1000);          // a cheaper Square
/// auto l2 = iat::SquareOptions().norm(iat::Norm::kL2).eps(0.5);
/// \endcode
struct SquareOptions : ThreatModelOptions<SquareOptions> {
  // norm (L∞ or L2) and eps (8/255): ThreatModelOptions.
  /// Queries (iterations) per restart, after the one of the initial point.
  TORCH_ARG(int64_t, n_queries) = 5000;
  /// Initial fraction of the image a square covers.
  TORCH_ARG(double, p_init) = 0.8;
  /// Restarts; each attacks only the points not yet fooled.
  TORCH_ARG(int64_t, restarts) = 1;
  /// Rescale the p schedule to the query budget (Square's own default; AutoAttack uses false).
  TORCH_ARG(bool, rescale_schedule) = false;
  /// Seed applied to the global CPU generator once at the start of `perturb`; negative: leave it alone.
  TORCH_ARG(int64_t, seed) = 0;
  /// Keep the model's current mode instead of switching it to eval mode during the attack.
  TORCH_ARG(bool, keep_train_mode) = false;
};

/// The Square attack: random search on the margin z_y − max_{j≠y} z_j. L∞: start from vertical stripes
/// ±ε, then per iteration set one random s×s window (s from the p schedule) to ±2ε per channel on top of
/// the best point, project, and keep it where the margin decreased or the point became misclassified.
/// Needs inputs [N, C, H, W]; uses forward passes only.
///
/// **Example**
/// \code
/// iat::Square square(iat::SquareOptions().eps(8.0 / 255));
/// torch::Tensor x_adv = square.perturb(net, x, y);
/// \endcode
class Square : public Attack {
 public:
  explicit Square(SquareOptions o = {}) : options(std::move(o)) { check_options(); }

  /// The options (docs/options.md): `square.options.n_queries(1000)`; checked at each perturb.
  OptionsField<SquareOptions> options;

  std::string name() const override { return "Square"; }

  torch::Tensor perturb(const ModelRef& model, const torch::Tensor& x_in, const torch::Tensor& y) override;

 private:
  // z_y − max_{j≠y} z_j: > 0 while correctly classified.
  static torch::Tensor margin(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y) {
    return -functional::margin_loss(model(x), y);
  }

  // The random-search loop shared by both norms: `propose(x_curr, x_best_curr, it)` makes the candidate
  // points of the still-unfooled examples.
  template <typename Propose>
  torch::Tensor search(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, torch::Tensor x_best,
                       Propose&& propose) const {
    auto best_margin = margin(model, x_best, y);
    auto best_loss = best_margin.clone();
    if ((best_margin < 0.0).all().item<bool>()) return x_best;
    const auto shape = detail::per_example_shape(-1, x.dim());
    const int64_t n = x.size(0);
    for (int64_t it = 0; it < options.n_queries(); ++it) {
      // The examples still correctly classified; while that is all of them (a robust model: most queries),
      // the whole tensors are used as they are instead of gathered and scattered back.
      auto idx = detail::true_indices(best_margin > 0.0);
      const bool all = idx.numel() == n;
      auto pick = [&](const torch::Tensor& t) { return all ? t : t.index_select(0, idx); };
      auto put = [&](torch::Tensor& t, const torch::Tensor& v) {
        if (all) t = v;
        else t.index_copy_(0, idx, v);
      };
      auto x_curr = pick(x);
      auto x_best_curr = pick(x_best);
      auto margin_curr = pick(best_margin);
      auto loss_curr = pick(best_loss);
      auto x_new = propose(x_curr, x_best_curr, it);
      auto m = margin(model, x_new, pick(y));
      auto lower = m < loss_curr;  // the loss is the margin itself
      put(best_loss, torch::where(lower, m, loss_curr));
      auto accept = lower.logical_or(m <= 0.0);
      put(best_margin, torch::where(accept, m, margin_curr));
      put(x_best, torch::where(accept.view(shape), x_new, x_best_curr));
      if ((best_margin <= 0.0).all().item<bool>()) break;
    }
    return x_best;
  }

  torch::Tensor run_linf(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y) const {
    const SquareOptions& o = options;
    const int64_t c = x.size(1), h = x.size(2), w = x.size(3);
    const double eps = o.eps();
    // Vertical stripes: one sign per (example, channel, column).
    auto x_best = (x + detail::cpu_random_signs({x.size(0), c, 1, w}, x.device()) * eps).clamp(0.0, 1.0);
    return search(model, x, y, x_best, [&](const torch::Tensor& x_curr, const torch::Tensor& x_best_curr, int64_t it) {
      const double p = detail::square_p_schedule(it, o.p_init(), o.n_queries(), o.rescale_schedule());
      const int64_t s = detail::square_side(p, c, h, w);
      const int64_t vh = detail::square_random_offset(h - s);
      const int64_t vw = detail::square_random_offset(w - s);
      auto step = detail::cpu_random_signs({c, 1, 1}, x.device()) * (2.0 * eps);
      return detail::square_linf_candidate(x_curr, x_best_curr, eps, vh, vw, s, step);
    });
  }

  torch::Tensor run_l2(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y) const {
    const SquareOptions& o = options;
    const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    const double eps = o.eps();
    auto dev = x.device();
    auto l2 = [](const torch::Tensor& t) { return detail::per_example_norm(t, Norm::kL2).view({-1, 1, 1, 1}); };
    auto window_norm = [](const torch::Tensor& t) { return t.pow(2).sum(at::IntArrayRef{-2, -1}, true).sqrt(); };
    // Start: a grid of s×s patterns with random signs per (example, channel), scaled to norm ε.
    TORCH_CHECK_VALUE(h >= 5 && w >= 5, "iat::Square: the L2 attack needs images of at least 5x5 pixels, got ", h,
                      "x", w);
    auto delta_init = torch::zeros_like(x);
    const int64_t s0 = h / 5;
    const int64_t start = (h - s0 * 5) / 2;
    int64_t vh = start;
    for (int64_t a = 0; a < h / s0; ++a) {
      int64_t vw = start;
      for (int64_t b = 0; b < w / s0; ++b) {
        auto pattern = detail::square_l2_pattern(s0).to(dev).view({1, 1, s0, s0});
        auto signs = detail::cpu_random_signs({n, c, 1, 1}, dev);
        auto slot = delta_init.slice(2, vh, std::min(vh + s0, h)).slice(3, vw, std::min(vw + s0, w));
        slot += (pattern * signs).narrow(2, 0, slot.size(2)).narrow(3, 0, slot.size(3));
        vw += s0;
      }
      vh += s0;
    }
    auto x_best = (x + detail::normalize_per_example(delta_init, Norm::kL2) * eps).clamp(0.0, 1.0);
    return search(model, x, y, x_best, [&](const torch::Tensor& x_curr, const torch::Tensor& x_best_curr, int64_t it) {
      const int64_t k = x_curr.size(0);
      auto delta = x_best_curr - x_curr;
      const double p = detail::square_p_schedule(it, o.p_init(), o.n_queries(), o.rescale_schedule());
      int64_t s = std::max<int64_t>(
          static_cast<int64_t>(std::nearbyint(std::sqrt(p * static_cast<double>(c * h * w) / static_cast<double>(c)))), 3);
      if (s % 2 == 0) ++s;
      s = std::min(s, std::min(h, w));
      const int64_t vh1 = detail::square_random_offset(h - s);
      const int64_t vw1 = detail::square_random_offset(w - s);
      auto mask1 = torch::zeros_like(x_curr);
      mask1.slice(2, vh1, vh1 + s).slice(3, vw1, vw1 + s).fill_(1.0);
      auto window1 = delta.slice(2, vh1, vh1 + s).slice(3, vw1, vw1 + s);
      auto norm_window1 = window_norm(window1);
      const int64_t vh2 = detail::square_random_offset(h - s);
      const int64_t vw2 = detail::square_random_offset(w - s);
      auto mask2 = torch::zeros_like(x_curr);
      mask2.slice(2, vh2, vh2 + s).slice(3, vw2, vw2 + s).fill_(1.0);
      auto norm_image = l2(x_best_curr - x_curr);
      auto norm_windows = window_norm(delta * torch::max(mask1, mask2));
      auto pattern = detail::square_l2_pattern(s).to(dev).view({1, 1, s, s});
      auto fresh = torch::ones({k, c, s, s}, x.options()) * (pattern * detail::cpu_random_signs({k, c, 1, 1}, dev));
      fresh = fresh + window1 / (1e-12 + norm_window1);
      auto budget = (torch::max(torch::full_like(fresh, eps).pow(2) - norm_image.pow(2), torch::zeros_like(fresh)) /
                         static_cast<double>(c) +
                     norm_windows.pow(2))
                        .sqrt();
      fresh = fresh / (1e-12 + window_norm(fresh)) * budget;
      delta.slice(2, vh2, vh2 + s).slice(3, vw2, vw2 + s).fill_(0.0);
      delta.slice(2, vh1, vh1 + s).slice(3, vw1, vw1 + s).copy_(fresh);
      return (x_curr + detail::normalize_per_example(delta, Norm::kL2) * eps).clamp(0.0, 1.0);
    });
  }

  void check_options() const {
    const char* who = "iat::Square";
    const SquareOptions& o = options;
    o.threat_model().check(who);
    detail::check_at_least(who, "n_queries", o.n_queries(), 0);
    detail::check_at_least(who, "restarts", o.restarts(), 1);
    TORCH_CHECK_VALUE(o.p_init() > 0.0 && o.p_init() <= 1.0, who, ": p_init must be in (0, 1], got ", o.p_init());
  }
};

#if IAT_HEADER_BODIES  // the entry points' bodies: inline here, or compiled once (iat/detail/compiled.hpp)

IAT_INLINE torch::Tensor Square::perturb(const ModelRef& model, const torch::Tensor& x_in, const torch::Tensor& y) {
  const char* who = "iat::Square";
  check_options();
  const SquareOptions& o = options;
  detail::AttackScope scope(who, model, x_in, y, o.keep_train_mode());
  TORCH_CHECK_VALUE(x_in.dim() == 4, who, ": x must be a batch of images [N, C, H, W], got shape ", x_in.sizes());
  auto x = x_in.detach().to(torch::kFloat);
  torch::NoGradGuard no_grad;
  auto logits = model(x);
  detail::check_model_output(who, logits, y);
  auto still_robust = detail::predicted_class(logits) == y;
  auto adv = x.clone();
  detail::reseed(o.seed());
  for (int64_t r = 0; r < o.restarts(); ++r) {
    auto idx = detail::true_indices(still_robust);
    if (idx.numel() == 0) break;
    auto x_sub = x.index_select(0, idx);
    auto y_sub = y.index_select(0, idx);
    auto found = o.norm() == Norm::kLinf ? run_linf(model, x_sub, y_sub) : run_l2(model, x_sub, y_sub);
    auto fooled = detail::predicted_class(model(found)) != y_sub;
    auto hit = idx.masked_select(fooled);
    still_robust.index_fill_(0, hit, false);
    adv.index_copy_(0, hit, found.index_select(0, detail::true_indices(fooled)));
  }
  return adv;
}
#endif  // IAT_HEADER_BODIES

}  // namespace iat
