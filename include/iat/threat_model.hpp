#pragma once
/// \file
/// The threat model every attack and inverse component works in: a point x' within ε of the clean x in
/// the L∞ or the L2 norm, inside the [0, 1] box. `iat::ThreatModel` holds (norm, ε) and does what depends
/// on them alone: the projection onto ball ∩ box, uniform random points of the ball, the steepest-ascent
/// direction, per-example distances and the check of ε. `iat::ThreatModelOptions` is the option block
/// (`norm`, `eps`) that the options of PGD, InverseAttack, APGD, APGD-T, FAB, Square and AutoAttack share.
/// This header stands on floor 1: it needs LibTorch's tensors and iat's argument checks only.

#include <iat/detail/checks.hpp>

#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace iat {

/// The threat model's norm: an L∞ or an L2 ball of radius ε around the clean input.
enum class Norm { kLinf, kL2 };

namespace detail {

/// The shape [n, 1, 1, ...] with `dim` entries, to broadcast a per-example value against a batch.
inline std::vector<int64_t> per_example_shape(int64_t n, int64_t dim) {
  std::vector<int64_t> shape(static_cast<size_t>(dim), 1);
  shape[0] = n;
  return shape;
}

/// Per-example L2 norm of a batch, shaped [N, 1, 1, ...] to broadcast against it.
inline torch::Tensor batch_l2_norm(const torch::Tensor& t) {
  return t.flatten(1).norm(2, 1).view(per_example_shape(t.size(0), t.dim()));
}

/// Per-example norm of a batch, [N]: max |d| for L∞, sqrt(Σ d²) for L2 (the AutoAttack components'
/// reductions, kept apart from batch_l2_norm's because their float sums round differently).
inline torch::Tensor per_example_norm(const torch::Tensor& d, Norm norm) {
  const int64_t n = d.size(0);
  if (norm == Norm::kLinf) return std::get<0>(d.abs().reshape({n, -1}).max(1));
  return d.pow(2).reshape({n, -1}).sum(-1).sqrt();
}

/// `t` in float32 when it is float16 or bfloat16, else `t`: the norms below are formed there (in float16
/// the 1e-12 guard rounds to 0 and squares of gradients near 1e-4 underflow, so 0/0 gave NaN points).
inline torch::Tensor widened(const torch::Tensor& t) {
  const auto type = t.scalar_type();
  return type == torch::kHalf || type == torch::kBFloat16 ? t.to(torch::kFloat) : t;
}

/// d / (‖d‖ + 1e-12) per example, for the L∞ or the L2 norm (formed in float32 for 16-bit d; d's dtype).
inline torch::Tensor normalize_per_example(const torch::Tensor& d, Norm norm) {
  const auto w = widened(d);
  return (w / (per_example_norm(w, norm).view(per_example_shape(w.size(0), w.dim())) + 1e-12)).to(d.scalar_type());
}

/// ε of an L∞ threat model is a pixel budget in (0, 1] (8 gets the 8/255 hint); an L2 radius may exceed 1.
inline void check_radius(const char* who, Norm norm, double eps) {
  if (norm == Norm::kLinf) {
    check_budget(who, "eps", eps);
  } else {
    check_positive(who, "eps", eps);
  }
}

}  // namespace detail

/// A threat model: the ball of radius `eps` in `norm` around a clean batch, intersected with [0, 1].
///
/// **Example**
/// \code
/// iat::ThreatModel ball{iat::Norm::kLinf, 8.0 / 255};
/// auto x_start = ball.project(x + ball.uniform_in_ball(x), x);   // a random start, in ball and box
/// auto size = ball.distance(x_start, x);                        // [N], each <= 8/255
/// \endcode
struct ThreatModel {
  Norm norm = Norm::kLinf;
  double eps = 8.0 / 255;

  /// Π_{B_ε(x) ∩ [0,1]}(x_adv): first onto the ε-ball around x, then into the [0, 1] box. The box step only
  /// shrinks |δ_i| (x itself is in the box), so the result stays in the ball.
  torch::Tensor project(const torch::Tensor& x_adv, const torch::Tensor& x) const {
    auto delta = x_adv - x;
    if (norm == Norm::kLinf) {
      delta = delta.clamp(-eps, eps);
    } else {
      const auto wide = detail::widened(delta);
      delta = (wide * (eps / (detail::batch_l2_norm(wide) + 1e-12)).clamp_max(1.0)).to(delta.scalar_type());
    }
    return (x + delta).clamp(0.0, 1.0);
  }

  /// A uniform random point of the ε-ball around 0, shaped like `like`: U(−ε, ε) per element for L∞; for
  /// L2 a uniform direction with radius ε·u^{1/d}, which makes the point uniform in the ball. Drawn from
  /// the generator of `like`'s device.
  torch::Tensor uniform_in_ball(const torch::Tensor& like) const {
    if (norm == Norm::kLinf) return torch::empty_like(like).uniform_(-eps, eps);
    auto direction = torch::randn_like(like);
    direction = direction / (detail::batch_l2_norm(direction) + 1e-12);
    const double d = static_cast<double>(like[0].numel());
    auto radius = torch::rand(detail::per_example_shape(like.size(0), like.dim()), like.options()).pow(1.0 / d) * eps;
    return direction * radius;
  }

  /// The steepest-ascent direction of a gradient for the norm: sign(g) for L∞, g/‖g‖₂ per example for L2.
  torch::Tensor ascent_direction(const torch::Tensor& grad) const {
    if (norm == Norm::kLinf) return grad.sign();
    const auto wide = detail::widened(grad);
    return (wide / (detail::batch_l2_norm(wide) + 1e-12)).to(grad.scalar_type());
  }

  /// ‖x_adv − x‖ per example, [N].
  torch::Tensor distance(const torch::Tensor& x_adv, const torch::Tensor& x) const {
    return detail::per_example_norm(x_adv - x, norm);
  }

  /// Throws c10::ValueError naming `who` unless ε fits the norm: in (0, 1] for L∞ (a pixel budget: 8/255,
  /// not 8), positive for L2.
  void check(const char* who) const { detail::check_radius(who, norm, eps); }
};

/// The option block of a threat model, shared by the options of PGD, InverseAttack, APGD, APGD-T, FAB,
/// Square and AutoAttack: `norm` and `eps` with LibTorch's option style (`.eps(0.5)` sets and returns
/// the options, `.eps()` reads), and `threat_model()` for the pair. `Derived` is the options struct,
/// so that the setters return it and chain with its own options.
///
/// **Example**
/// \code
/// auto opts = iat::PGDOptions().norm(iat::Norm::kL2).eps(0.5).steps(20);  // inherited, then PGD's own
/// iat::ThreatModel ball = opts.threat_model();                            // {kL2, 0.5}
/// \endcode
template <typename Derived>
class ThreatModelOptions {
 public:
  /// The ball's norm: L∞ (the default) or L2.
  Derived& norm(Norm value) {
    norm_ = value;
    return static_cast<Derived&>(*this);
  }
  Norm& norm() noexcept { return norm_; }
  const Norm& norm() const noexcept { return norm_; }

  /// The radius ε, in pixel units (8/255, not 8).
  Derived& eps(double value) {
    eps_ = value;
    return static_cast<Derived&>(*this);
  }
  double& eps() noexcept { return eps_; }
  const double& eps() const noexcept { return eps_; }

  /// The pair (norm, ε).
  ThreatModel threat_model() const { return {norm_, eps_}; }

 protected:
  /// `default_eps`: the component's default radius (8/255 for the attacks, 4/255 for the inverse ball).
  explicit ThreatModelOptions(double default_eps = 8.0 / 255) : eps_(default_eps) {}

 private:
  Norm norm_ = Norm::kLinf;
  double eps_;
};

}  // namespace iat
