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

TEST_CASE("cross_entropy refuses probabilities unless told otherwise", "[losses][logits]") {
  auto logits = torch::tensor({{4.0, 1.0, 2.0, 0.0}, {3.0, 1.0, 0.5, 2.0}});
  auto y = torch::tensor({0, 1}, torch::kLong);
  auto probs = torch::softmax(logits, 1);
  REQUIRE_THROWS_WITH(F::cross_entropy(probs, y), Catch::Contains("iat::functional::cross_entropy: logits look like "
                                                                  "probabilities") &&
                                                     Catch::Contains("iat::LogitsCheck::kOff"));
  REQUIRE_THROWS_AS(F::cross_entropy(probs, y), c10::ValueError);
  // kOff computes it as given: CE of softmax(p), not of p.
  auto as_given = F::cross_entropy(probs, y, iat::LogitsCheck::kOff);
  CHECK(as_given[0].item<double>() == Approx(-torch::log_softmax(probs, 1)[0][0].item<double>()));
  // 16-bit probabilities (rows sum to 1 only within ~1e-2) are refused too.
  REQUIRE_THROWS_WITH(F::cross_entropy(probs.to(torch::kBFloat16), y), Catch::Contains("look like probabilities"));
  // Logits pass: non-negative logits that do not sum to 1, and a batch where only some rows sum to 1.
  CHECK_NOTHROW(F::cross_entropy(logits, y));
  CHECK_NOTHROW(F::cross_entropy(logits.abs() + 0.1, y));
  CHECK_NOTHROW(F::cross_entropy(torch::cat({probs.slice(0, 0, 1), logits.slice(0, 1, 2)}), y));
  CHECK_NOTHROW(F::cross_entropy(-probs, y));
  // The detector itself: a 0-dim bool on the input's device, false for anything but [N, C >= 2] rows of
  // probabilities, and false for non-finite values.
  auto flag = iat::detail::looks_like_probabilities(probs);
  CHECK(flag.dim() == 0);
  CHECK(flag.item<bool>());
  CHECK_FALSE(iat::detail::looks_like_probabilities(probs.flatten()).item<bool>());
  CHECK_FALSE(iat::detail::looks_like_probabilities(torch::ones({3, 1})).item<bool>());
  CHECK_FALSE(iat::detail::looks_like_probabilities(probs * std::nan("")).item<bool>());
  CHECK_FALSE(iat::detail::looks_like_probabilities(probs * 1.01).item<bool>());
  CHECK(iat::detail::looks_like_probabilities(probs * 1.0005).item<bool>());  // within 1e-3
}
