#pragma once
/// \file
/// iat::FAB and iat::FABT: the Fast Adaptive Boundary attack (Croce & Hein 2020), untargeted and
/// targeted, L∞ and L2, as AutoAttack (fra31/auto-attack) runs it. FAB looks for the smallest
/// perturbation that crosses the linearised decision boundary, inside the [0,1] box; a point counts as
/// broken only when the perturbation found has norm ≤ ε.

#include <iat/attacks/attack.hpp>
#include <iat/attacks/detail/autoattack.hpp>
#include <iat/detail/compiled.hpp>
#include <iat/options_field.hpp>
#include <iat/threat_model.hpp>

#include <ATen/Parallel.h>
#include <torch/arg.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace iat {

namespace detail {

/// Binary search shared by the box-constrained projections: per row, the largest index j in
/// [0, cols − 1) for which `above(j)` holds, found in ⌈log₂ cols⌉ halvings starting from [0, cols − 1].
template <typename Above>
torch::Tensor fab_bisect(int64_t rows, int64_t cols, const torch::TensorOptions& options, Above&& above) {
  auto lo = torch::zeros({rows}, options);
  auto hi = torch::full({rows}, static_cast<double>(cols - 1), options);
  const auto halvings = static_cast<int64_t>(std::ceil(std::log2(static_cast<double>(cols))));
  for (int64_t it = 0; it < halvings; ++it) {
    auto mid = torch::floor((lo + hi) / 2);
    auto go_up = above(mid.to(torch::kLong).unsqueeze(1));
    lo = torch::where(go_up, mid, lo);
    hi = torch::where(go_up, hi, mid);
  }
  return lo.to(torch::kLong);
}

/// The smallest-L∞ step d, per row, that moves the point t [R, D] onto the hyperplane w·u = b while
/// keeping t + d in [0,1]^D (FAB's L∞ projection). When the box makes the hyperplane unreachable, d is
/// the largest step towards it. Coordinates with w = 0 do not move.
///
/// Orient w so that the point lies on the side w·t ≥ b: the step must lower w·u by w·t − b. Moving
/// coordinate i by λ in the lowering direction (up where w_i < 0, down where w_i > 0), capped at its room
/// p_i to the box, lowers w·u by |w_i|·min(λ, p_i); the answer is the smallest λ ≥ 0 that lowers it
/// enough, found by sorting the rooms and a binary search over cumulative sums.
///
/// **Example**
/// \code
/// // t = (0.5, 0.5), w = (1, 1), b = 0.5: lower the sum by 0.5 with the smallest L∞ step -> d = (-0.25, -0.25)
/// auto d = iat::detail::fab_projection_linf(torch::tensor({{0.5f, 0.5f}}), torch::tensor({{1.f, 1.f}}),
///                                            torch::tensor({0.5f}));
/// \endcode
inline torch::Tensor fab_projection_linf_ops(const torch::Tensor& t, const torch::Tensor& w_in, const torch::Tensor& b_in) {
  const int64_t cols = t.size(1);
  auto orient = ((w_in * t).sum(1) - b_in >= 0).to(t.scalar_type()) * 2 - 1;
  auto w = w_in * orient.unsqueeze(1);
  auto b = b_in * orient;
  auto moves_up = w < 0;
  auto up = moves_up.to(t.scalar_type());
  auto moving = (w != 0).to(t.scalar_type());
  auto full_step = (up - t) * moving;             // to the box face in the lowering direction
  auto room = torch::where(moves_up, 1 - t, t);   // |full step| before the w = 0 mask
  auto order = room.argsort(/*dim=*/1, /*descending=*/false);                   // rooms ascending
  auto needed = b - (w * t).sum(1);               // the change of w·u required (≤ 0)
  auto all_the_way = (w * full_step).sum(1);      // the change when every coordinate moves fully
  // Walk the coordinates from the largest room down: with λ equal to the j-th largest room, the change
  // is all_the_way + Σ_{top j} |w|·room − λ·Σ_{top j} |w| (the top j coordinates capped at λ).
  auto desc = order.flip({1});
  auto w_desc = w.gather(1, desc);
  auto abs_w_cum = w_desc.abs().cumsum(1);
  auto gain_cum = (-w_desc * full_step.gather(1, desc)).cumsum(1) + all_the_way.unsqueeze(1);
  auto smallest_room = room.gather(1, order.narrow(1, 0, 1)).squeeze(1);
  auto change_at_smallest = gain_cum.select(1, cols - 1) - abs_w_cum.select(1, cols - 1) * smallest_room;
  auto below_all = needed - change_at_smallest > 0;                  // λ below every room suffices
  auto bracketed = (needed - all_the_way > 0).logical_and(below_all.logical_not());

  auto d = full_step.clone();
  if (below_all.any().item<bool>()) {
    auto rows = true_indices(below_all);
    auto lambda = ((needed.index_select(0, rows) - gain_cum.index_select(0, rows).select(1, cols - 1)) /
                   (-abs_w_cum.index_select(0, rows).select(1, cols - 1)))
                      .clamp_min(0)
                      .unsqueeze(-1);
    auto signs = up.index_select(0, rows) * 2 - 1;
    d.index_copy_(0, rows, signs * lambda);
  }
  auto rows = true_indices(bracketed);
  if (rows.numel() > 0) {
    auto order_b = order.index_select(0, rows);
    auto gain_b = gain_cum.index_select(0, rows);
    auto absw_b = abs_w_cum.index_select(0, rows);
    auto room_b = room.index_select(0, rows);
    auto needed_b = needed.index_select(0, rows);
    auto j = fab_bisect(rows.numel(), cols, t.options(), [&](const torch::Tensor& idx) {
      auto coord = order_b.gather(1, (cols - 1) - idx);
      auto change = (gain_b.gather(1, idx) - absw_b.gather(1, idx) * room_b.gather(1, coord)).squeeze(1);
      return needed_b - change > 0;
    });
    auto jj = j.unsqueeze(1);
    auto lambda = ((needed_b - gain_b.gather(1, jj).squeeze(1)) / (-absw_b.gather(1, jj).squeeze(1)))
                      .clamp_min(0)
                      .unsqueeze(-1);
    auto d_b = d.index_select(0, rows);
    d.index_copy_(0, rows, torch::where(moves_up.index_select(0, rows), torch::min(lambda, d_b), torch::max(-lambda, d_b)));
  }
  return d * moving;
}

// Scalar helpers of the fused projection below, with the tensor ops' semantics: a product rounded to float
// before it is used (never contracted into an FMA with the next operation, whatever -march says), and
// min / max / clamp that propagate NaN as torch::min, torch::max and clamp_min do.
inline float fab_rounded_product(float a, float b) {
  volatile float p = a * b;
  return p;
}
inline float fab_nan_min(float a, float b) { return (std::isnan(a) || std::isnan(b)) ? NAN : std::min(a, b); }
inline float fab_nan_max(float a, float b) { return (std::isnan(a) || std::isnan(b)) ? NAN : std::max(a, b); }
inline float fab_clamp_min0(float a) { return std::isnan(a) ? a : std::max(a, 0.0f); }

/// One room as an unsigned key in the order of LibTorch's CPU sort comparator, `(!isnan(a) && isnan(b)) ||
/// a < b`: every NaN is one largest key, −0 and +0 are one key, the rest keep their order. Integer keys
/// compare faster than that comparator and give std::sort the same comparison outcomes, so the same order.
inline uint32_t fab_sort_key(float f) {
  if (std::isnan(f)) return 0xFFFFFFFFu;
  if (f == 0) f = 0.0f;
  uint32_t u = 0;
  std::memcpy(&u, &f, sizeof u);
  return (u & 0x80000000u) != 0 ? ~u : (u | 0x80000000u);
}

/// A room's sort key and its index.
struct FabKeyed {
  uint32_t key;
  int32_t index;
};

/// The indices of `room[0..cols)` by descending room, into `desc`, in the order torch::argsort (ascending,
/// not stable) and then flip give: std::sort, as LibTorch's CPU sort runs it, on (key, index) pairs
/// compared by key alone orders equal rooms as LibTorch does (the tests check it on rows full of ties).
/// `keyed` is scratch space.
inline void fab_rooms_descending(const float* room, int64_t cols, int32_t* desc, std::vector<FabKeyed>& keyed) {
  keyed.resize(static_cast<size_t>(cols));
  for (int64_t i = 0; i < cols; ++i) keyed[static_cast<size_t>(i)] = {fab_sort_key(room[i]), static_cast<int32_t>(i)};
  std::sort(keyed.begin(), keyed.end(), [](const FabKeyed& a, const FabKeyed& b) { return a.key < b.key; });
  for (int64_t k = 0; k < cols; ++k) desc[k] = keyed[static_cast<size_t>(cols - 1 - k)].index;
}

/// `c ? a : b` without a branch (the signs of FAB's weights are random, so a branch mispredicts half the
/// time): an exact bitwise select.
inline float fab_select(bool c, float a, float b) {
  uint32_t ua = 0, ub = 0;
  std::memcpy(&ua, &a, sizeof ua);
  std::memcpy(&ub, &b, sizeof ub);
  const uint32_t mask = 0u - static_cast<uint32_t>(c);
  const uint32_t r = (ua & mask) | (ub & ~mask);
  float out = 0;
  std::memcpy(&out, &r, sizeof out);
  return out;
}

// Per coordinate of fab_projection_linf, as its tensor ops compute them, from t_i and the oriented weight
// w_i: 1 where the lowering direction is up (w_i < 0), 1 where the coordinate moves (w_i ≠ 0), the full
// step to the box face ((up − t)·moving) and the room to that face (1 − t going up, t going down).
inline float fab_up(float w) { return fab_select(w < 0, 1.0f, 0.0f); }
inline float fab_moving(float w) { return fab_select(w != 0, 1.0f, 0.0f); }
inline float fab_full_step(float t, float w) { return (fab_up(w) - t) * fab_moving(w); }
inline float fab_room(float t, float w) { return fab_select(w < 0, 1 - t, t); }

// Row passes of fab_projection_linf_cpu (restrict-qualified so that the compiler vectorises them).
inline void fab_row_step_gain(const float* __restrict t, const float* __restrict w_in, float o, int64_t cols,
                              float* __restrict gain) {
  for (int64_t i = 0; i < cols; ++i) {
    const float w = w_in[i] * o;
    gain[i] = w * fab_full_step(t[i], w);
  }
}
// The cumulative sums, by descending room, of |w_i| and of −w_i·full_step_i, as torch::cumsum on the CPU
// computes them: a double accumulator rounded to float at each element (the tests compare with it).
inline void fab_row_sorted_cumsums(const float* __restrict t, const float* __restrict w_in, float o, int64_t cols,
                                   const int32_t* __restrict desc, float* __restrict abs_w_cum,
                                   float* __restrict gain_cum) {
  double abs_acc = 0, gain_acc = 0;
  for (int64_t k = 0; k < cols; ++k) {
    const int32_t i = desc[k];
    const float w = w_in[i] * o;
    abs_acc += static_cast<double>(std::abs(w));
    gain_acc += static_cast<double>(-w * fab_full_step(t[i], w));
    abs_w_cum[k] = static_cast<float>(abs_acc);
    gain_cum[k] = static_cast<float>(gain_acc);
  }
}
// Which step a row takes: the full step to the box (the hyperplane is out of its reach), λ on every
// coordinate (λ below every room), or λ capped at each coordinate's room (λ bracketed by the rooms).
enum class FabRowStep { kFull, kBelowAll, kBracketed };
inline void fab_row_step(const float* __restrict t, const float* __restrict w_in, float o, int64_t cols,
                         FabRowStep kind, float lambda, float* __restrict d) {
  for (int64_t i = 0; i < cols; ++i) {
    const float w = w_in[i] * o;
    const float fs = fab_full_step(t[i], w);
    float di = fs;
    if (kind == FabRowStep::kBelowAll) di = (fab_up(w) * 2 - 1) * lambda;
    if (kind == FabRowStep::kBracketed) di = fab_select(w < 0, fab_nan_min(lambda, fs), fab_nan_max(-lambda, fs));
    d[i] = di * fab_moving(w);
  }
}

/// fab_projection_linf for contiguous float32 CPU tensors: the same arithmetic, value for value and bit for
/// bit, as fab_projection_linf_ops (the tests compare the two), in three passes over each row instead of
/// some forty tensor operations over the whole batch. The two row sums, whose order of summation decides
/// the last bit, stay LibTorch's kernels; the cumulative sums follow torch::cumsum's CPU arithmetic, and
/// the rooms are sorted in the order torch::argsort gives them (fab_rooms_descending).
inline torch::Tensor fab_projection_linf_cpu(const torch::Tensor& t, const torch::Tensor& w_in, const torch::Tensor& b_in) {
  const int64_t rows = t.size(0), cols = t.size(1);
  auto s1 = (w_in * t).sum(1);
  auto orient = torch::empty({rows}, t.options());
  auto step_gain = torch::empty_like(t);  // w·full_step per coordinate, summed by LibTorch below
  const float* tp = t.data_ptr<float>();
  const float* wp = w_in.data_ptr<float>();
  const float* bp = b_in.data_ptr<float>();
  const float* s1p = s1.data_ptr<float>();
  float* op = orient.data_ptr<float>();
  float* sgp = step_gain.data_ptr<float>();
  at::parallel_for(0, rows, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      op[r] = (s1p[r] - bp[r] >= 0) ? 1.0f : -1.0f;
      fab_row_step_gain(tp + r * cols, wp + r * cols, op[r], cols, sgp + r * cols);
    }
  });
  auto all_the_way = step_gain.sum(1);
  auto order = torch::empty({rows, cols}, t.options().dtype(torch::kInt));
  auto abs_w_cum = torch::empty_like(t), gain_part = torch::empty_like(t);
  int32_t* ordp = order.data_ptr<int32_t>();
  float* ap = abs_w_cum.data_ptr<float>();
  float* gp = gain_part.data_ptr<float>();
  at::parallel_for(0, rows, 8, [&](int64_t r0, int64_t r1) {
    std::vector<float> rooms(static_cast<size_t>(cols));
    std::vector<FabKeyed> keyed;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t base = r * cols;
      for (int64_t i = 0; i < cols; ++i) rooms[static_cast<size_t>(i)] = fab_room(tp[base + i], wp[base + i] * op[r]);
      fab_rooms_descending(rooms.data(), cols, ordp + base, keyed);
      fab_row_sorted_cumsums(tp + base, wp + base, op[r], cols, ordp + base, ap + base, gp + base);
    }
  });
  auto d = torch::empty_like(t);
  const float* acp = abs_w_cum.data_ptr<float>();
  const float* gcp = gain_part.data_ptr<float>();
  const float* atwp = all_the_way.data_ptr<float>();
  float* dp = d.data_ptr<float>();
  const auto halvings = static_cast<int64_t>(std::ceil(std::log2(static_cast<double>(cols))));
  at::parallel_for(0, rows, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t base = r * cols;
      const float o = op[r];
      const float needed = bp[r] * o - o * s1p[r];  // b − (w·t).sum: the sign flip is exact
      const float atw = atwp[r];
      auto gain = [&](int64_t k) { return gcp[base + k] + atw; };
      auto room_at = [&](int64_t k) {
        const int64_t i = base + ordp[base + k];
        return fab_room(tp[i], wp[i] * o);
      };
      const float change_at_smallest = gain(cols - 1) - fab_rounded_product(acp[base + cols - 1], room_at(cols - 1));
      FabRowStep kind = FabRowStep::kFull;
      float lambda = 0;
      if (needed - change_at_smallest > 0) {
        kind = FabRowStep::kBelowAll;
        lambda = fab_clamp_min0((needed - gain(cols - 1)) / (-acp[base + cols - 1]));
      } else if (needed - atw > 0) {
        kind = FabRowStep::kBracketed;
        float lo = 0, hi = static_cast<float>(cols - 1);
        for (int64_t it = 0; it < halvings; ++it) {
          const float mid = std::floor((lo + hi) / 2);
          const auto k = static_cast<int64_t>(mid);
          const float change = gain(k) - fab_rounded_product(acp[base + k], room_at(k));
          if (needed - change > 0) lo = mid;
          else hi = mid;
        }
        const auto j = static_cast<int64_t>(lo);
        lambda = fab_clamp_min0((needed - gain(j)) / (-acp[base + j]));
      }
      fab_row_step(tp + base, wp + base, o, cols, kind, lambda, dp + base);
    }
  });
  return d;
}

/// FAB's L∞ projection (see fab_projection_linf_ops for the method): the fused CPU path for contiguous
/// float32 inputs, the tensor operations everywhere else (CUDA, other dtypes).
///
/// **Example**
/// \code
/// auto d = iat::detail::fab_projection_linf(torch::tensor({{0.5f, 0.5f}}), torch::tensor({{1.f, 1.f}}),
///                                            torch::tensor({0.5f}));  // (-0.25, -0.25)
/// \endcode
inline torch::Tensor fab_projection_linf(const torch::Tensor& t, const torch::Tensor& w, const torch::Tensor& b) {
  const bool fused = t.device().is_cpu() && t.scalar_type() == torch::kFloat && w.scalar_type() == torch::kFloat &&
                     b.scalar_type() == torch::kFloat && t.dim() == 2 && t.sizes() == w.sizes() && b.dim() == 1 &&
                     b.size(0) == t.size(0) && t.size(1) > 0 && t.size(1) < (int64_t{1} << 31) &&
                     !t.requires_grad() && !w.requires_grad() && !b.requires_grad();
  if (!fused) return fab_projection_linf_ops(t, w, b);
  return fab_projection_linf_cpu(t.contiguous(), w.contiguous(), b.contiguous());
}

/// The smallest-L2 step d, per row, that moves t [R, D] onto the hyperplane w·u = b inside [0,1]^D
/// (FAB's L2 projection): d_i = −λ·w_i clipped to the box, with the smallest λ ≥ 0 that reaches the
/// hyperplane, found from the sorted breakpoints at which coordinates hit the box. Coordinates with
/// |w_i| ≤ 1e-8 do not move.
///
/// **Example**
/// \code
/// // t = (0.5, 0.5), w = (1, 1), b = 0.5 -> d = (-0.25, -0.25)
/// auto d = iat::detail::fab_projection_l2(torch::tensor({{0.5f, 0.5f}}), torch::tensor({{1.f, 1.f}}),
///                                          torch::tensor({0.5f}));
/// \endcode
inline torch::Tensor fab_projection_l2(const torch::Tensor& t, const torch::Tensor& w_in, const torch::Tensor& b_in) {
  const int64_t cols = t.size(1);
  constexpr double kBig = 1e12;
  auto excess_raw = (w_in * t).sum(1) - b_in;
  auto orient = (excess_raw >= 0).to(t.scalar_type()) * 2 - 1;
  auto w = w_in * orient.unsqueeze(1);
  auto excess = excess_raw * orient;  // ≥ 0: how much w·u must fall
  auto tiny = w.abs() < 1e-8;
  // Breakpoint of coordinate i: the λ at which −λ·w_i reaches the box face.
  auto brk = torch::max(t / w, (t - 1) / w).clamp(-kBig, kBig);
  brk.masked_fill_(tiny, kBig);
  brk.masked_fill_(brk == -kBig, kBig);
  auto sorted = brk.sort(1);
  auto brk_sorted = std::get<0>(sorted);
  auto order = std::get<1>(sorted);
  auto brk_next = torch::cat({brk_sorted.narrow(1, 1, cols - 1), torch::zeros({t.size(0), 1}, t.options())}, 1);
  brk_sorted.masked_fill_(brk_sorted == kBig, 0);
  brk_next.masked_fill_(brk_next == kBig, 0);
  auto w2_sorted = w.pow(2).gather(1, order);
  auto w2_total = w2_sorted.sum(1, true);
  auto w2_free = w2_total - w2_sorted.cumsum(1);  // Σ w² of the coordinates not yet at the box
  auto active = (w.abs() > 1e-8).to(t.scalar_type());
  auto d = -(brk * w) * active;
  // Value of w·d(λ) + excess at λ = each sorted breakpoint (index 0: λ at the first breakpoint).
  auto first = -w2_total * brk_sorted.narrow(1, 0, 1);
  auto at_breaks = torch::cat({first, ((brk_sorted - brk_next) * w2_free).cumsum(1) + first}, 1);
  auto unclipped = at_breaks.select(1, 0) + excess < 0;        // reached before any coordinate clips
  auto unreachable = (d * w).sum(1) + excess > 0;              // even the full box step is not enough
  auto bracketed = torch::logical_or(unclipped, unreachable).logical_not();

  auto rows = true_indices(bracketed);
  torch::Tensor j;
  if (rows.numel() > 0) {
    auto at_b = at_breaks.index_select(0, rows);
    auto excess_b = excess.index_select(0, rows);
    j = fab_bisect(rows.numel(), cols, t.options(),
                   [&](const torch::Tensor& idx) { return at_b.gather(1, idx).squeeze(1) + excess_b > 0; });
  }
  if (unclipped.any().item<bool>()) {
    auto u = true_indices(unclipped);
    auto lambda = excess.index_select(0, u) / w2_total.index_select(0, u).squeeze(-1);
    d.index_copy_(0, u, -lambda.unsqueeze(-1) * w.index_select(0, u));
  }
  if (rows.numel() > 0) {
    auto jj = j.unsqueeze(1);
    auto free_b = w2_free.index_select(0, rows).gather(1, jj).squeeze(1);
    auto lambda = (at_breaks.index_select(0, rows).gather(1, jj).squeeze(1) + excess.index_select(0, rows)) / free_b +
                  brk_sorted.index_select(0, rows).gather(1, jj).squeeze(1);
    lambda = lambda.masked_fill(free_b == 0, 0);
    auto clipped = lambda.unsqueeze(-1) > brk.index_select(0, rows);
    d.index_copy_(0, rows,
                  torch::where(clipped, d.index_select(0, rows), -lambda.unsqueeze(-1) * w.index_select(0, rows)));
  }
  return d * active;
}

}  // namespace detail

/// Options of iat::FAB. Defaults are AutoAttack standard's FAB-T: L∞, ε = 8/255, 100 iterations,
/// 1 restart (no random start), 9 target classes, α_max = 0.1, η = 1.05, β = 0.9, seed 0.
///
/// **Example**
/// \code
/// auto fabt = iat::FABOptions();                               // FAB-T, as AutoAttack standard
/// auto fab = iat::FABOptions().targeted(false).restarts(5);      // untargeted FAB, as `plus`
/// \endcode
struct FABOptions : ThreatModelOptions<FABOptions> {
  // norm (L∞ or L2) and eps (8/255): ThreatModelOptions. Here ε is the success test (norm ≤ ε) and the
  // radius of random restarts (which start inside ε/2).
  /// Iterations per run.
  TORCH_ARG(int64_t, steps) = 100;
  /// Runs (per target class when targeted); the first starts at the clean point, later ones randomly.
  TORCH_ARG(int64_t, restarts) = 1;
  /// Targeted (FAB-T, the class with the m-th largest clean logit, m = 2 … n+1) or untargeted (the
  /// closest linearised boundary among all classes; K backward passes per iteration).
  TORCH_ARG(bool, targeted) = true;
  /// Number of targets of FAB-T; capped at classes − 1.
  TORCH_ARG(int64_t, n_target_classes) = 9;
  /// Largest weight of the step from the clean point.
  TORCH_ARG(double, alpha_max) = 0.1;
  /// Overshoot of the projection step.
  TORCH_ARG(double, eta) = 1.05;
  /// Backward step towards the clean point after a success.
  TORCH_ARG(double, beta) = 0.9;
  /// Seed applied to the global CPU generator once at the start of `perturb`; negative: leave it alone.
  TORCH_ARG(int64_t, seed) = 0;
  /// Keep the model's current mode instead of switching it to eval mode during the attack.
  TORCH_ARG(bool, keep_train_mode) = false;
};

/// The Fast Adaptive Boundary attack as AutoAttack runs it. Each iteration linearises the logit
/// differences at the current point x₁, projects both x₁ and the clean point x onto the linearised
/// boundary in the [0,1] box (d₁, d₂), and moves to clip((1−α)(x₁ + η d₁) + α(x + η d₂)), with
/// α = min(‖d₁‖/(‖d₁‖+‖d₂‖), α_max); after a misclassified iterate it keeps the smallest one and steps
/// back to x + β(x₁ − x). `perturb` returns the smallest adversarial point found where its norm is
/// ≤ ε, the clean point elsewhere.
///
/// **Example**
/// \code
/// iat::FAB fabt(iat::FABOptions().eps(8.0 / 255));  // targeted by default
/// torch::Tensor x_adv = fabt.perturb(net, x, y);
/// \endcode
class FAB : public Attack {
 public:
  explicit FAB(FABOptions o = {}) : options(std::move(o)) { check_options(); }

  /// The options (docs/options.md): `fab.options.n_target_classes(3)`; checked at each perturb.
  OptionsField<FABOptions> options;

  std::string name() const override { return options.targeted() ? "FAB-T" : "FAB"; }

  torch::Tensor perturb(const ModelRef& model, const torch::Tensor& x_in, const torch::Tensor& y) override;

 private:
  // Logit differences f_k = z_k − z_y at x1 and their input gradients: [n, K'] and [n, K', ...]. Targeted:
  // K' = 1, f = z_t − z_y. Untargeted: every class, with f_y = 1e10 so that y is never the closest.
  std::pair<torch::Tensor, torch::Tensor> linearise(const ModelRef& model, const torch::Tensor& x1,
                                                    const torch::Tensor& y, const torch::Tensor& target) const {
    at::AutoGradMode grad_on(true);
    auto v = x1.detach().clone().requires_grad_(true);
    auto z = model(v);
    auto rows = torch::arange(x1.size(0), y.options());
    if (target.defined()) {
      auto f = -(z.index({rows, y}) - z.index({rows, target}));
      auto g = torch::autograd::grad({f.sum()}, {v})[0];
      return {f.detach().unsqueeze(1), g.detach().unsqueeze(1)};
    }
    const int64_t classes = z.size(1);
    std::vector<torch::Tensor> grads;
    for (int64_t k = 0; k < classes; ++k) {
      auto mask = torch::zeros_like(z);
      mask.select(1, k).fill_(1.0);
      grads.push_back(torch::autograd::grad({z}, {v}, {mask}, /*retain_graph=*/true)[0].detach());
    }
    auto g = torch::stack(grads, 1);
    auto zd = z.detach();
    auto f = zd - zd.index({rows, y}).unsqueeze(1);
    auto dg = g - g.index({rows, y}).unsqueeze(1);
    f.index_put_({rows, y}, 1e10);
    return {f, dg};
  }

  // One FAB run on a batch (target_rank 0: untargeted). Returns x with the best adversarial point of
  // each point that was attacked and broken (any norm), the clean point elsewhere.
  torch::Tensor single_run(const ModelRef& model, const torch::Tensor& x, const torch::Tensor& y, bool random_start,
                           int64_t target_rank) const {
    const FABOptions& o = options;
    auto logits = model(x);
    auto attackable = detail::predicted_class(logits) == y;
    auto idx = detail::true_indices(attackable);
    if (idx.numel() == 0) return x.clone();
    torch::Tensor target;
    if (target_rank > 0) target = detail::class_of_rank(logits, target_rank).index_select(0, idx);
    auto x0 = x.index_select(0, idx);
    auto y0 = y.index_select(0, idx);
    const int64_t n = x0.size(0);
    const auto shape = detail::per_example_shape(n, x.dim());
    auto best = x0.clone();
    auto best_norm = torch::full({n}, 1e10, x.options());
    auto x1 = x0.clone();
    auto x0_flat = x0.reshape({n, -1});
    if (random_start) {
      auto radius = torch::min(best_norm, torch::full({n}, o.eps(), x.options())).reshape(shape);
      torch::Tensor t = o.norm() == Norm::kLinf ? detail::cpu_rand(x1.sizes(), x.device()) * 2 - 1
                                                : detail::cpu_randn(x1.sizes(), x.device());
      x1 = (x0 + radius * t / detail::per_example_norm(t, o.norm()).reshape(shape) * 0.5).clamp(0.0, 1.0);
    }
    for (int64_t it = 0; it < o.steps(); ++it) {
      auto [f, g] = linearise(model, x1, y0, target);
      // The closest linearised boundary; with one logit difference (FAB-T) it is that one.
      torch::Tensor w4, f_closest;
      if (f.size(1) == 1) {
        w4 = g.select(1, 0);
        f_closest = f.select(1, 0);
      } else {
        auto g_flat = g.reshape({g.size(0), g.size(1), -1});
        auto dual = o.norm() == Norm::kLinf ? g_flat.abs().sum(-1) : g_flat.pow(2).sum(-1).sqrt();
        auto closest = std::get<1>((f.abs() / (1e-12 + dual)).min(1));
        auto rows = torch::arange(n, closest.options());
        w4 = g.index({rows, closest});
        f_closest = f.index({rows, closest});
      }
      auto b = -f_closest + (w4 * x1).reshape({n, -1}).sum(-1);
      auto w = w4.reshape({n, -1});
      auto points = torch::cat({x1.reshape({n, -1}), x0_flat}, 0);
      auto ww = torch::cat({w, w}, 0);
      auto bb = torch::cat({b, b}, 0);
      auto d = o.norm() == Norm::kLinf ? detail::fab_projection_linf(points, ww, bb)
                                       : detail::fab_projection_l2(points, ww, bb);
      auto d1 = d.narrow(0, 0, n).reshape(x1.sizes());
      auto d2 = d.narrow(0, n, n).reshape(x1.sizes());
      auto size = o.norm() == Norm::kLinf ? std::get<0>(d.abs().max(1, true)) : d.pow(2).sum(1, true).sqrt();
      size = torch::max(size.view(detail::per_example_shape(2 * n, x.dim())), torch::full_like(size.view(detail::per_example_shape(2 * n, x.dim())), 1e-8));
      auto a1 = size.narrow(0, 0, n);
      auto a2 = size.narrow(0, n, n);
      auto alpha = torch::min(torch::max(a1 / (a1 + a2), torch::zeros_like(a1)), torch::full_like(a1, o.alpha_max()));
      x1 = ((x1 + o.eta() * d1) * (1 - alpha) + (x0 + d2 * o.eta()) * alpha).clamp(0.0, 1.0);

      auto is_adv = detail::predicted_class(model(x1)) != y0;
      if (is_adv.any().item<bool>()) {
        auto dist = o.threat_model().distance(x1, x0);
        auto smaller = is_adv.logical_and(dist < best_norm);
        best = torch::where(smaller.view(shape), x1, best);
        best_norm = torch::where(smaller, dist, best_norm);
        x1 = torch::where(is_adv.view(shape), x0 + (x1 - x0) * o.beta(), x1);
      }
    }
    auto out = x.clone();
    auto found = best_norm < 1e10;
    out.index_copy_(0, idx.masked_select(found), best.index_select(0, detail::true_indices(found)));
    return out;
  }

  void check_options() const {
    const char* who = "iat::FAB";
    const FABOptions& o = options;
    o.threat_model().check(who);
    detail::check_at_least(who, "steps", o.steps(), 1);
    detail::check_at_least(who, "restarts", o.restarts(), 1);
    detail::check_at_least(who, "n_target_classes", o.n_target_classes(), 1);
    detail::check_non_negative(who, "alpha_max", o.alpha_max());
    detail::check_positive(who, "eta", o.eta());
    detail::check_positive(who, "beta", o.beta());
  }
};

/// FAB-T: iat::FAB with `targeted(true)` (AutoAttack standard's third attack).
///
/// **Example**
/// \code
/// iat::FABT fabt;  // 9 targets, 100 iterations, L∞ 8/255
/// torch::Tensor x_adv = fabt.perturb(net, x, y);
/// \endcode
class FABT : public FAB {
 public:
  explicit FABT(FABOptions o = {}) : FAB(o.targeted(true)) {}
};

#if IAT_HEADER_BODIES  // the entry points' bodies: inline here, or compiled once (iat/detail/compiled.hpp)

IAT_INLINE torch::Tensor FAB::perturb(const ModelRef& model, const torch::Tensor& x_in, const torch::Tensor& y) {
  const char* who = "iat::FAB";
  check_options();
  const FABOptions& o = options;
  detail::AttackScope scope(who, model, x_in, y, o.keep_train_mode());
  auto x = x_in.detach().to(torch::kFloat);
  torch::NoGradGuard no_grad;
  auto logits = model(x);
  detail::check_model_output(who, logits, y);
  const int64_t classes = logits.size(1);
  TORCH_CHECK_VALUE(classes >= 2, who, ": needs at least 2 classes, the model has ", classes);
  auto still_robust = detail::predicted_class(logits) == y;
  auto adv = x.clone();
  detail::reseed(o.seed());
  const int64_t targets = o.targeted() ? std::min(o.n_target_classes(), classes - 1) : 1;
  for (int64_t m = 2; m < targets + 2; ++m) {
    for (int64_t r = 0; r < o.restarts(); ++r) {
      auto idx = detail::true_indices(still_robust);
      if (idx.numel() == 0) break;
      auto x_sub = x.index_select(0, idx);
      auto y_sub = y.index_select(0, idx);
      auto found = single_run(model, x_sub, y_sub, /*random_start=*/r > 0, o.targeted() ? m : 0);
      auto correct = detail::predicted_class(model(found)) == y_sub;
      auto too_far = o.threat_model().distance(x_sub, found) > o.eps();
      auto fooled = torch::logical_or(correct, too_far).logical_not();
      auto hit = idx.masked_select(fooled);
      still_robust.index_fill_(0, hit, false);
      adv.index_copy_(0, hit, found.index_select(0, detail::true_indices(fooled)));
    }
  }
  return adv;
}
#endif  // IAT_HEADER_BODIES

}  // namespace iat
