#include "support.hpp"

#include <iat/functional/losses.hpp>

namespace F = iat::functional;

TEST_CASE("attack losses match hand-computed values", "[losses]") {
  // Sorted logits of row 0: 4, 2, 1, 0.  Row 1: true class 1 is not the top class.
  auto logits = torch::tensor({{4.0, 1.0, 2.0, 0.0}, {3.0, 1.0, 0.5, 2.0}});
  auto y = torch::tensor({0, 1}, torch::kLong);

  SECTION("CW margin max_{j!=y} z_j - z_y") {
    auto m = F::margin_loss(logits, y);
    CHECK(m[0].item<double>() == Approx(2.0 - 4.0));
    CHECK(m[1].item<double>() == Approx(3.0 - 1.0));
  }
  SECTION("DLR -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3)") {
    auto d = F::dlr_loss(logits, y);
    CHECK(d[0].item<double>() == Approx(-(4.0 - 2.0) / (4.0 - 1.0)));
    CHECK(d[1].item<double>() == Approx(-(1.0 - 3.0) / (3.0 - 1.0)));
  }
  SECTION("targeted DLR -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2)") {
    auto t = torch::tensor({2, 3}, torch::kLong);
    auto d = F::targeted_dlr_loss(logits, y, t);
    CHECK(d[0].item<double>() == Approx(-(4.0 - 2.0) / (4.0 - 0.5 * (1.0 + 0.0))));
    CHECK(d[1].item<double>() == Approx(-(1.0 - 2.0) / (3.0 - 0.5 * (1.0 + 0.5))));
  }
  SECTION("CE per example") {
    auto ce = F::cross_entropy(logits, y);
    CHECK(ce[0].item<double>() == Approx(-torch::log_softmax(logits, 1)[0][0].item<double>()));
    CHECK(ce.sizes() == torch::IntArrayRef({2}));
  }
  SECTION("KL(p || q) puts the reference first") {
    // p = (0.9, 0.1), q = (0.5, 0.5): KL(p||q) = 0.9 ln 1.8 + 0.1 ln 0.2 = 0.368064; KL(q||p) = 0.510826.
    auto p = torch::tensor({{0.9, 0.1}}).log();
    auto q = torch::tensor({{0.5, 0.5}}).log();
    CHECK(F::kl_div(p, q)[0].item<double>() == Approx(0.9 * std::log(1.8) + 0.1 * std::log(0.2)));
    CHECK(F::kl_div(q, p)[0].item<double>() == Approx(0.5 * std::log(0.5 / 0.9) + 0.5 * std::log(0.5 / 0.1)));
  }
  SECTION("KL with a zero reference probability stays finite, also its gradient") {
    auto log_p = torch::tensor({{0.0, -std::numeric_limits<double>::infinity()}});
    auto logits_q = torch::tensor({{1.0, 0.0}}, torch::requires_grad());
    auto kl = F::kl_div(log_p, torch::log_softmax(logits_q, 1));
    kl.sum().backward();
    CHECK(std::isfinite(kl.item<double>()));
    CHECK(kl.item<double>() == Approx(-torch::log_softmax(torch::tensor({1.0, 0.0}), 0)[0].item<double>()));
    CHECK(torch::isfinite(logits_q.grad()).all().item<bool>());
  }
  SECTION("DLR needs 3 classes, targeted DLR 4") {
    auto two = torch::tensor({{1.0, 0.0}});
    REQUIRE_THROWS_WITH(F::dlr_loss(two, torch::tensor({0}, torch::kLong)), Catch::Contains("at least 3 classes"));
    auto three = torch::tensor({{1.0, 0.0, 2.0}});
    auto l = torch::tensor({0}, torch::kLong);
    REQUIRE_THROWS_WITH(F::targeted_dlr_loss(three, l, l), Catch::Contains("at least 4 classes"));
  }
}
