// FAB (box-constrained projections, FAB-T) and Square (p schedule, square windows, budgets).
#include "support.hpp"

#include <iat/attacks/fab.hpp>
#include <iat/attacks/square.hpp>

#include <cstring>
#include <vector>

using namespace iat_test;
using Catch::Contains;

namespace {

torch::Tensor row(std::vector<float> v) { return torch::tensor(v).unsqueeze(0); }

torch::Tensor predict(TinyNet& net, const torch::Tensor& x) {
  torch::NoGradGuard ng;
  return net(x).argmax(1);
}

}  // namespace

TEST_CASE("FAB's L-inf projection onto a hyperplane inside the box, hand-checked", "[fab]") {
  using iat::detail::fab_projection_linf;
  auto near = [](const torch::Tensor& a, std::vector<float> b) { return torch::allclose(a, row(b), 1e-5, 1e-6); };
  // Lower t1 + t2 from 1 to 0.5: both coordinates move by 0.25.
  CHECK(near(fab_projection_linf(row({0.5f, 0.5f}), row({1, 1}), torch::tensor({0.5f})), {-0.25f, -0.25f}));
  // The other side: raise the sum to 1.5.
  CHECK(near(fab_projection_linf(row({0.5f, 0.5f}), row({1, 1}), torch::tensor({1.5f})), {0.25f, 0.25f}));
  // The box stops coordinate 0 at 0 (room 0.1): min(λ, 0.1) + min(λ, 0.5) = 0.4 gives λ = 0.3.
  CHECK(near(fab_projection_linf(row({0.1f, 0.5f}), row({1, 1}), torch::tensor({0.2f})), {-0.1f, -0.3f}));
  // Weights of different sign and size: w = (-1, 2), w·t = 0.5 to -0.1: λ + 2λ = 0.6, λ = 0.2.
  CHECK(near(fab_projection_linf(row({0.5f, 0.5f}), row({-1, 2}), torch::tensor({-0.1f})), {0.2f, -0.2f}));
  // A zero weight does not move.
  CHECK(near(fab_projection_linf(row({0.5f, 0.5f}), row({1, 0}), torch::tensor({0.2f})), {-0.3f, 0.0f}));
  // Unreachable inside the box: the largest step towards the hyperplane (both coordinates to 0).
  CHECK(near(fab_projection_linf(row({0.1f, 0.2f}), row({1, 1}), torch::tensor({-1.0f})), {-0.1f, -0.2f}));
  // Several rows at once, each its own case.
  auto d = fab_projection_linf(torch::tensor({{0.5f, 0.5f}, {0.1f, 0.5f}}), torch::tensor({{1.f, 1.f}, {1.f, 1.f}}),
                               torch::tensor({0.5f, 0.2f}));
  CHECK(torch::allclose(d, torch::tensor({{-0.25f, -0.25f}, {-0.1f, -0.3f}}), 1e-5, 1e-6));
}

TEST_CASE("FAB's L-inf projection: on the hyperplane, in the box, no smaller step does", "[fab]") {
  const int64_t rows = 64, cols = 12;
  auto t = torch::rand({rows, cols});
  auto w = torch::randn({rows, cols});
  auto b = (w * torch::rand({rows, cols})).sum(1);  // a hyperplane through a point of the box: reachable
  auto d = iat::detail::fab_projection_linf(t, w, b);
  auto moved = t + d;
  CHECK(moved.min().item<double>() >= -1e-6);
  CHECK(moved.max().item<double>() <= 1 + 1e-6);
  CHECK(torch::allclose((w * moved).sum(1), b, 1e-4, 1e-4));
  // Minimality: shrinking the step by 1 % no longer reaches the hyperplane (the change of w·u is short).
  auto need = (b - (w * t).sum(1)).abs();
  auto reached_short = ((w * (d * 0.99)).sum(1)).abs();
  CHECK((reached_short < need).all().item<bool>());
  // And every coordinate moves by at most the common magnitude ‖d‖∞.
  CHECK((d.abs() <= d.abs().amax(1, true) + 1e-7).all().item<bool>());
}

TEST_CASE("FAB's fused L-inf projection equals the tensor-op one bit for bit", "[fab]") {
  using iat::detail::fab_projection_linf_cpu;
  using iat::detail::fab_projection_linf_ops;
  // The last bit matters: the agreement with the reference AutoAttack is checked on the adversarial
  // examples themselves. Rows like FAB's (pixels on a 1/255 grid, many exactly 0 or 1, so the sorted
  // rooms are full of ties; zero weights; hyperplanes reachable, out of the box's reach and already
  // crossed), at the size of a FAB-T batch and at tiny sizes.
  auto bits_equal = [](const torch::Tensor& a, const torch::Tensor& b) {
    return a.sizes() == b.sizes() && std::memcmp(a.data_ptr<float>(), b.data_ptr<float>(), a.numel() * 4) == 0;
  };
  for (int64_t cols : {1, 2, 7, 784}) {
    for (int kind = 0; kind < 4; ++kind) {
      const int64_t rows = cols == 784 ? 362 : 50;
      auto t = kind == 1 ? torch::rand({rows, cols}) : (torch::rand({rows, cols}) * 1.6 - 0.3).clamp(0, 1).mul(255).round() / 255;
      auto w = torch::randn({rows, cols}) * torch::rand({rows, 1}).pow(4);
      if (kind >= 2) w = w * (torch::rand({rows, cols}) > 0.3).to(torch::kFloat);  // zero weights
      if (kind == 3) w = w.round();                                                  // ties in w too
      auto reach = (w * torch::rand({rows, cols})).sum(1);
      auto far = (w.abs().sum(1) + 1) * (torch::rand({rows}) > 0.5).to(torch::kFloat) * 2 - 1;
      auto b = torch::where(torch::rand({rows}) > 0.3, reach, far);  // reachable, or beyond the box
      auto fused = fab_projection_linf_cpu(t, w, b);
      auto ops = fab_projection_linf_ops(t, w, b);
      INFO("cols " << cols << ", kind " << kind << ", largest difference " << (fused - ops).abs().max().item<double>());
      CHECK(bits_equal(fused, ops));
    }
  }
  // The sort behind it orders equal rooms as torch::argsort does (ascending, then flipped), NaN last.
  auto room = (torch::rand({200, 784}) * 4).floor() / 4;
  room.index_put_({torch::rand({200, 784}) > 0.98}, NAN);
  room.index_put_({torch::rand({200, 784}) > 0.9}, -0.0f);  // −0 ties with +0
  auto expected = room.argsort(1, /*descending=*/false).flip({1}).to(torch::kInt);
  auto desc = torch::empty_like(expected);
  std::vector<iat::detail::FabKeyed> scratch;
  for (int64_t r = 0; r < 200; ++r)
    iat::detail::fab_rooms_descending(room[r].data_ptr<float>(), 784, desc[r].data_ptr<int32_t>(), scratch);
  CHECK(desc.equal(expected));
  // The dispatcher takes the fused path for float CPU rows and the tensor ops for doubles, alike in value.
  auto t = torch::rand({9, 30}), w = torch::randn({9, 30}), b = (w * torch::rand({9, 30})).sum(1);
  CHECK(bits_equal(iat::detail::fab_projection_linf(t, w, b), fab_projection_linf_ops(t, w, b)));
  CHECK(torch::allclose(iat::detail::fab_projection_linf(t.to(torch::kDouble), w.to(torch::kDouble), b.to(torch::kDouble)).to(torch::kFloat),
                        fab_projection_linf_ops(t, w, b), 1e-5, 1e-6));
  // A non-contiguous view goes through the fused path as its contiguous copy.
  auto tt = torch::rand({30, 9}).t(), wt = torch::randn({30, 9}).t();
  CHECK(bits_equal(iat::detail::fab_projection_linf(tt, wt, b), fab_projection_linf_ops(tt.contiguous(), wt.contiguous(), b)));
}

TEST_CASE("FAB's L2 projection onto a hyperplane inside the box, hand-checked", "[fab]") {
  using iat::detail::fab_projection_l2;
  auto near = [](const torch::Tensor& a, std::vector<float> b) { return torch::allclose(a, row(b), 1e-5, 1e-6); };
  CHECK(near(fab_projection_l2(row({0.5f, 0.5f}), row({1, 1}), torch::tensor({0.5f})), {-0.25f, -0.25f}));
  // Coordinate 0 hits 0 after 0.1; the rest of the way (0.3) goes to coordinate 1.
  CHECK(near(fab_projection_l2(row({0.1f, 0.5f}), row({1, 1}), torch::tensor({0.2f})), {-0.1f, -0.3f}));
  // Along w when the box does not bind: d = -(w·t - b)/‖w‖² · w.
  CHECK(near(fab_projection_l2(row({0.5f, 0.5f}), row({1, 2}), torch::tensor({1.0f})), {-0.1f, -0.2f}));
  auto t = torch::rand({32, 10});
  auto w = torch::randn({32, 10});
  auto b = (w * torch::rand({32, 10})).sum(1);
  auto moved = t + fab_projection_l2(t, w, b);
  CHECK(moved.min().item<double>() >= -1e-6);
  CHECK(moved.max().item<double>() <= 1 + 1e-6);
  CHECK(torch::allclose((w * moved).sum(1), b, 1e-4, 1e-4));
}

TEST_CASE("FAB-T finds misclassified points within eps and returns the clean input elsewhere", "[fab]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(32);
  for (auto norm : {iat::Norm::kLinf, iat::Norm::kL2}) {
    const double eps = norm == iat::Norm::kLinf ? 0.3 : 1.0;
    iat::FABT fab(iat::FABOptions().norm(norm).eps(eps).steps(15));
    CHECK(fab.name() == "FAB-T");
    auto x_adv = fab.perturb(net, x, y);
    auto delta = (x_adv - x).flatten(1);
    auto norms = norm == iat::Norm::kLinf ? delta.abs().amax(1) : delta.norm(2, 1);
    CHECK(norms.max().item<double>() <= eps + 1e-5);
    CHECK(x_adv.min().item<double>() >= 0.0);
    CHECK(x_adv.max().item<double>() <= 1.0);
    auto changed = norms > 0;
    CHECK(changed.sum().item<int64_t>() > 0);
    CHECK((changed & (predict(net, x_adv) == y)).sum().item<int64_t>() == 0);
  }
  // Untargeted FAB (full Jacobian) obeys the same contract.
  auto x_u = iat::FAB(iat::FABOptions().targeted(false).eps(0.3).steps(10)).perturb(net, x, y);
  auto changed = (x_u - x).flatten(1).abs().amax(1) > 0;
  CHECK((x_u - x).abs().max().item<double>() <= 0.3 + 1e-5);
  CHECK((changed & (predict(net, x_u) == y)).sum().item<int64_t>() == 0);
  REQUIRE_THROWS_WITH(iat::FAB(iat::FABOptions().eps(8)), Contains("iat::FAB") && Contains("8/255"));
  REQUIRE_THROWS_WITH(iat::FAB(iat::FABOptions().steps(0)), Contains("steps must be >= 1"));
}

TEST_CASE("Square's p schedule and window side", "[square]") {
  using iat::detail::square_p_schedule;
  const double p0 = 0.8;
  const std::vector<std::pair<int64_t, double>> expected = {
      {0, p0},          {10, p0},          {11, p0 / 2},     {50, p0 / 2},     {51, p0 / 4},
      {200, p0 / 4},    {201, p0 / 8},     {500, p0 / 8},    {501, p0 / 16},   {1000, p0 / 16},
      {1001, p0 / 32},  {2000, p0 / 32},   {2001, p0 / 64},  {4000, p0 / 64},   {4001, p0 / 128},
      {4999, p0 / 128}, {6001, p0 / 256},  {8001, p0 / 512}};
  for (const auto& [it, p] : expected) {
    INFO("iteration " << it);
    CHECK(square_p_schedule(it, p0, 5000, false) == Approx(p));
  }
  // Rescaled to the budget (Square's own default): iteration 500 of 1000 behaves like 5000 of 10000.
  CHECK(square_p_schedule(500, p0, 1000, true) == Approx(p0 / 128));
  CHECK(square_p_schedule(5, p0, 1000, true) == Approx(p0 / 2));
  // Side: round(sqrt(p * H * W)), at least 1, at most min(H, W).
  CHECK(iat::detail::square_side(0.8, 3, 32, 32) == 29);
  CHECK(iat::detail::square_side(0.8, 1, 28, 28) == 25);
  CHECK(iat::detail::square_side(0.05, 1, 28, 28) == 6);
  CHECK(iat::detail::square_side(1e-6, 1, 28, 28) == 1);
  CHECK(iat::detail::square_side(1.0, 1, 10, 4) == 4);
}

TEST_CASE("Square starts from vertical stripes and changes one square window per query", "[square]") {
  // A model that is never fooled (huge margin for the label), recording every query.
  std::vector<torch::Tensor> queries;
  auto model = [&queries](const torch::Tensor& in) {
    queries.push_back(in.detach().clone());
    auto z = torch::zeros({in.size(0), 4}, in.options());
    z.select(1, 0).fill_(100.0);
    return z + 0 * in.flatten(1).sum(1, true);
  };
  const int64_t n = 3, c = 2, h = 9, w = 9;
  auto x = torch::rand({n, c, h, w}) * 0.5 + 0.25;  // away from the box: no clipping
  auto y = torch::zeros({n}, torch::kLong);
  const double eps = 0.1;
  iat::Square sq(iat::SquareOptions().eps(eps).n_queries(30));
  auto out = sq.perturb(model, x, y);
  CHECK(out.equal(x));  // never fooled: the clean input comes back
  // queries[0]: the clean check; queries[1]: the stripes; then one candidate per iteration; last: the
  // re-check of the returned points.
  REQUIRE(queries.size() == 33);
  auto stripes = queries[1] - x;
  CHECK(torch::allclose(stripes.abs(), torch::full_like(stripes, eps), 1e-6, 1e-6));
  CHECK(torch::allclose(stripes, stripes.narrow(2, 0, 1).expand_as(stripes), 1e-6, 1e-6));  // constant along H
  for (size_t q = 2; q + 1 < queries.size(); ++q) {
    const int64_t it = static_cast<int64_t>(q) - 2;
    const int64_t s = iat::detail::square_side(iat::detail::square_p_schedule(it, 0.8, 30, false), c, h, w);
    // The candidate differs from the best point (still the stripes: nothing is ever accepted... unless the
    // margin fell; with constant logits it never does) only inside one s×s window, the same for all images.
    auto diff = (queries[q] - queries[1]).abs().amax({0, 1}) > 1e-7;  // [H, W]
    auto rows_changed = diff.any(1).nonzero().view({-1});
    auto cols_changed = diff.any(0).nonzero().view({-1});
    if (rows_changed.numel() == 0) continue;  // the signs equalled the stripes everywhere
    CHECK(rows_changed.max().item<int64_t>() - rows_changed.min().item<int64_t>() < s);
    CHECK(cols_changed.max().item<int64_t>() - cols_changed.min().item<int64_t>() < s);
    CHECK(max_abs_diff(queries[q], x) <= eps + 1e-6);
  }
}

TEST_CASE("Square's L-inf candidate, computed on the window only, equals the whole-image formula bit for bit",
          "[square]") {
  // The reference's formula over the whole image, with a window that is zero outside the square.
  auto whole = [](const torch::Tensor& x, const torch::Tensor& x_best, double eps, int64_t vh, int64_t vw, int64_t s,
                  const torch::Tensor& step) {
    const int64_t c = x.size(1), h = x.size(2), w = x.size(3);
    auto window = torch::zeros({c, h, w});
    window.slice(1, vh, vh + s).slice(2, vw, vw + s).copy_(step.expand({c, s, s}));
    return torch::min(torch::max(x_best + window, x - eps), x + eps).clamp(0.0, 1.0);
  };
  for (double eps : {0.1, 8.0 / 255, 0.3}) {
    // Images on the 1/255 grid with pixels at 0 and 1, as real data has (where the box binds).
    auto x = (torch::rand({6, 3, 12, 12}) * 1.4 - 0.2).clamp(0, 1).mul(255).round() / 255;
    auto x_best = (x + iat::detail::cpu_random_signs({6, 3, 1, 12}, x.device()) * eps).clamp(0.0, 1.0);
    for (int it = 0; it < 60; ++it) {
      const int64_t s = 1 + it % 12;
      const int64_t vh = iat::detail::square_random_offset(12 - s), vw = iat::detail::square_random_offset(12 - s);
      auto step = iat::detail::cpu_random_signs({3, 1, 1}, x.device()) * (2.0 * eps);
      auto fast = iat::detail::square_linf_candidate(x, x_best, eps, vh, vw, s, step);
      auto ref = whole(x, x_best, eps, vh, vw, s, step);
      REQUIRE(std::memcmp(fast.data_ptr<float>(), ref.data_ptr<float>(), fast.numel() * sizeof(float)) == 0);
      // Accept about half of the candidates, as the search does, so that later x_best mix both.
      auto accept = torch::rand({6, 1, 1, 1}) > 0.5;
      x_best = torch::where(accept, fast, x_best);
    }
  }
}

TEST_CASE("Square stays within eps (L-inf and L2) and returns misclassified points", "[square]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(32);
  auto img = x;  // [N, 1, 4, 4] images
  for (auto norm : {iat::Norm::kLinf, iat::Norm::kL2}) {
    const double eps = norm == iat::Norm::kLinf ? 0.4 : 2.0;
    INFO((norm == iat::Norm::kLinf ? "Linf" : "L2"));
    if (norm == iat::Norm::kL2) {
      img = x.repeat_interleave(2, 2).repeat_interleave(2, 3);  // 8x8: Square L2 needs at least 5x5
    }
    auto model = [&net](const torch::Tensor& in) {
      auto small = in.size(2) == 4 ? in : torch::avg_pool2d(in, 2);
      return net(small);
    };
    auto x_adv = iat::Square(iat::SquareOptions().norm(norm).eps(eps).n_queries(200)).perturb(model, img, y);
    auto delta = (x_adv - img).flatten(1);
    auto norms = norm == iat::Norm::kLinf ? delta.abs().amax(1) : delta.norm(2, 1);
    CHECK(norms.max().item<double>() <= eps + 1e-5);
    CHECK(x_adv.min().item<double>() >= 0.0);
    CHECK(x_adv.max().item<double>() <= 1.0);
    torch::NoGradGuard ng;
    auto pred = model(x_adv).argmax(1);
    auto changed = norms > 0;
    CHECK(changed.sum().item<int64_t>() > 0);
    CHECK((changed & (pred == y)).sum().item<int64_t>() == 0);
  }
  REQUIRE_THROWS_WITH(iat::Square(iat::SquareOptions().p_init(0)), Contains("p_init"));
  REQUIRE_THROWS_WITH(iat::Square(iat::SquareOptions().eps(8)), Contains("8/255"));
  REQUIRE_THROWS_WITH(iat::Square().perturb(net, x.flatten(1), y), Contains("[N, C, H, W]"));
}

TEST_CASE("FAB and Square options are fields, checked at perturb", "[fab][square][options]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(8);
  iat::FAB fab;
  fab.options.steps(0);
  REQUIRE_THROWS_WITH(fab.perturb(net, x, y), Contains("iat::FAB: steps must be >= 1, got 0"));
  iat::Square square;
  square.options.p_init(2.0);
  REQUIRE_THROWS_WITH(square.perturb(net, x, y), Contains("iat::Square: p_init must be in (0, 1]"));
}
