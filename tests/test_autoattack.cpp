// iat::eval::AutoAttack (chaining, re-checks, sanity-check warnings, resume) and robust_accuracy.
#include "support.hpp"

#include <iat/eval/autoattack.hpp>
#include <iat/eval/robust_accuracy.hpp>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

using namespace iat_test;
using Catch::Contains;
namespace eval = iat::eval;

namespace {

// Small budgets so that a test runs in well under a second on the tiny models.
eval::AutoAttackOptions quick(double eps) {
  return eval::AutoAttackOptions().eps(eps).batch_size(16).apgd_steps(10).fab_steps(5).square_queries(20);
}

bool has_warning(const eval::AutoAttackReport& r, const std::string& text) {
  for (const auto& w : r.warnings) {
    if (w.find(text) != std::string::npos) return true;
  }
  return false;
}

std::string temp_path(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/iat_test_" + name + "_" + std::to_string(::getpid());
}

}  // namespace

TEST_CASE("AutoAttack: robust points are classified correctly on the returned examples", "[autoattack]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(40);
  y[0] = (y[0].item<int64_t>() + 1) % 4;  // at least one clean-misclassified point (almost surely)
  const double eps = 0.25;
  eval::AutoAttack aa(quick(eps));
  auto report = aa.run(net, x, y);
  const int64_t n = x.size(0);

  torch::NoGradGuard ng;
  auto clean_ok = net(x).argmax(1) == y;
  auto adv_ok = net(report.x_adv).argmax(1) == y;
  CHECK(report.num_points == n);
  CHECK(report.clean_correct == clean_ok.sum().item<int64_t>());
  // Never robust where the model misclassifies the returned example (or the clean input).
  CHECK((report.robust & adv_ok.logical_not()).sum().item<int64_t>() == 0);
  CHECK((report.robust & clean_ok.logical_not()).sum().item<int64_t>() == 0);
  CHECK(report.robust_rechecked.equal(adv_ok));
  CHECK(report.robust_count == report.robust.sum().item<int64_t>());
  CHECK(report.robust_count_rechecked == report.robust_count);
  CHECK(report.robust_accuracy == Approx(static_cast<double>(report.robust_count) / n));
  // Robust points keep the clean input; perturbations stay within eps for every attack.
  auto linf = (report.x_adv - x).flatten(1).abs().amax(1);
  CHECK(linf.masked_select(report.robust).sum().item<double>() == 0.0);
  CHECK(linf.max().item<double>() <= eps + 1e-5);
  CHECK(report.max_perturbation == Approx(linf.max().item<double>()));
  // The standard list, with non-increasing robust accuracy; 4 classes: 3 targets and a warning.
  REQUIRE(report.steps.size() >= 1);
  CHECK(report.attacks == std::vector<std::string>{"apgd-ce", "apgd-t", "fab-t", "square"});
  double previous = report.clean_accuracy;
  for (const auto& s : report.steps) {
    CHECK(s.robust_accuracy <= previous);
    previous = s.robust_accuracy;
  }
  CHECK(report.n_target_classes == 3);
  CHECK(has_warning(report, "3 target classes instead of 9"));
  CHECK(has_warning(report, "non-standard budgets"));
  CHECK_FALSE(report.standard_budgets);
  CHECK(report.clean_accuracy > report.robust_accuracy);
}

TEST_CASE("AutoAttack: a model that breaks under APGD-CE leaves nothing for later attacks", "[autoattack]") {
  // A linear model on the quadrant task with eps 0.5: every point can be pushed into another quadrant.
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(24);
  auto report = eval::AutoAttack(quick(0.5)).run(net, x, y);
  REQUIRE(report.steps.size() == 1);
  CHECK(report.steps[0].attack == "apgd-ce");
  CHECK(report.steps[0].robust == 0);
  CHECK(report.robust_count == 0);
  CHECK(report.robust_count_rechecked == 0);
}

TEST_CASE("AutoAttack: same seed and batch size, same points; the seed is re-applied per batch", "[autoattack]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(32);
  auto a = eval::AutoAttack(quick(0.25).attacks({"apgd-ce"})).run(net, x, y);
  torch::rand({7});
  auto b = eval::AutoAttack(quick(0.25).attacks({"apgd-ce"})).run(net, x, y);
  CHECK(a.x_adv.equal(b.x_adv));
  CHECK(a.robust.equal(b.robust));
  // The subset with standard settings runs one restart; custom (the reference's constructor defaults)
  // runs five, so it never finds fewer adversarial points.
  auto c = eval::AutoAttack(quick(0.25).version(eval::AutoAttackVersion::kCustom).attacks({"apgd-ce"})).run(net, x, y);
  CHECK(c.robust_count <= a.robust_count);
  CHECK(a.attacks == std::vector<std::string>{"apgd-ce"});
}

TEST_CASE("AutoAttack warns like the reference's sanity checks", "[autoattack]") {
  auto [x, y] = quadrant_data(16);
  TinyNet net = trained_tiny_net();
  SECTION("probability outputs") {
    auto probs = [&net](const torch::Tensor& in) { return torch::softmax(net(in), 1); };
    auto r = eval::AutoAttack(quick(0.1).attacks({"apgd-ce"})).run(probs, x, y);
    CHECK(has_warning(r, "probabilities"));
  }
  SECTION("a randomised model") {
    auto noisy = [&net](const torch::Tensor& in) { return net(in) + torch::randn({in.size(0), 4}); };
    auto r = eval::AutoAttack(quick(0.1).attacks({"apgd-ce"})).run(noisy, x, y);
    CHECK(has_warning(r, "randomised"));
    auto rr = eval::AutoAttack(quick(0.1).version(eval::AutoAttackVersion::kRand).apgd_steps(2)).run(noisy, x, y);
    CHECK_FALSE(has_warning(rr, "randomised"));
  }
  SECTION("too few classes: adapt and say so") {
    TinyNet three(3);
    auto y3 = y.remainder(3);
    auto r = eval::AutoAttack(quick(0.1)).run(three, x, y3);
    CHECK(has_warning(r, "apgd-t skipped"));
    CHECK(r.attacks == std::vector<std::string>{"apgd-ce", "fab-t", "square"});
    CHECK(r.n_target_classes == 2);
  }
  SECTION("a model in train mode is evaluated in eval mode and left in train mode") {
    net->train();
    auto r = eval::AutoAttack(quick(0.1).attacks({"apgd-ce"})).run(net, x, y);
    CHECK(has_warning(r, "train mode"));
    CHECK(net->is_training());
    for (const auto& p : net->parameters()) CHECK_FALSE(p.grad().defined());
  }
}

TEST_CASE("AutoAttack resumes from its state file", "[autoattack]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(32);
  const std::string path = temp_path("aa_state");
  std::remove(path.c_str());
  auto opts = quick(0.2).attacks({"apgd-ce", "square"}).state_path(path);
  auto full = eval::AutoAttack(opts).run(net, x, y);
  {
    // The state written by the run: the attacks, both done, the clean count, the final flags.
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK_THAT(text, Contains("attacks apgd-ce square\ndone apgd-ce square\nclean " + std::to_string(full.clean_correct)));
    std::string flags;
    for (int64_t i = 0; i < full.robust.size(0); ++i) flags += full.robust[i].item<bool>() ? '1' : '0';
    CHECK_THAT(text, Contains("flags " + flags));
  }
  // Pretend the run stopped after apgd-ce: rewrite the state with apgd-ce done and its flags.
  {
    std::string flags;
    auto f = full.steps[0].robust_flags;
    for (int64_t i = 0; i < f.size(0); ++i) flags += f[i].item<bool>() ? '1' : '0';
    std::ofstream out(path, std::ios::trunc);
    out << "iat-autoattack-state 1\nattacks apgd-ce square\ndone apgd-ce\nclean " << full.clean_correct << " "
        << full.clean_accuracy << "\nflags " << flags << "\n";
  }
  auto resumed = eval::AutoAttack(opts).run(net, x, y);
  REQUIRE(resumed.steps.size() == 2);
  CHECK(resumed.steps[0].resumed);
  CHECK_FALSE(resumed.steps[1].resumed);
  CHECK(resumed.robust.equal(full.robust));
  CHECK(resumed.clean_accuracy == Approx(full.clean_accuracy));
  CHECK(has_warning(resumed, "resumed"));
  // A state file of another attack list, or of another number of points, is refused.
  REQUIRE_THROWS_WITH(eval::AutoAttack(quick(0.2).attacks({"apgd-ce"}).state_path(path)).run(net, x, y),
                      Contains("wrong state file"));
  REQUIRE_THROWS_WITH(eval::AutoAttack(opts).run(net, x.narrow(0, 0, 8), y.narrow(0, 0, 8)),
                      Contains("holds 32 robust flags, x has 8"));
  {
    std::ofstream out(path, std::ios::trunc);
    out << "something else\n";
  }
  REQUIRE_THROWS_WITH(eval::AutoAttack(opts).run(net, x, y), Contains("not an iat AutoAttack state file"));
  std::remove(path.c_str());
}

TEST_CASE("AutoAttack options and inputs are validated", "[autoattack]") {
  REQUIRE_THROWS_WITH(eval::AutoAttack(eval::AutoAttackOptions().eps(8)), Contains("did you mean 8/255"));
  REQUIRE_THROWS_WITH(eval::AutoAttack(eval::AutoAttackOptions().attacks({"apgd-ce", "deepfool"})),
                      Contains("unknown attack 'deepfool'") && Contains("apgd-ce, apgd-dlr, apgd-t, fab, fab-t, square"));
  REQUIRE_THROWS_WITH(eval::AutoAttack(eval::AutoAttackOptions().version(eval::AutoAttackVersion::kCustom)),
                      Contains("non-empty attack list"));
  REQUIRE_THROWS_WITH(eval::AutoAttack(eval::AutoAttackOptions().batch_size(0)), Contains("batch_size"));
  TinyNet net;
  auto x = torch::rand({4, 1, 4, 4});
  auto y = torch::zeros({4}, torch::kLong);
  REQUIRE_THROWS_WITH(eval::AutoAttack().run(net, x * 3, y), Contains("[0, 1]"));
  REQUIRE_THROWS_WITH(eval::AutoAttack().run(net, x, y.narrow(0, 0, 3)), Contains("same batch size"));
  auto wrong_shape = [](const torch::Tensor& in) { return torch::zeros({in.size(0), 2, 2}); };
  REQUIRE_THROWS_WITH(eval::AutoAttack().run(wrong_shape, x, y), Contains("logits of shape [N, num_classes]"));
  REQUIRE_THROWS_WITH(eval::AutoAttack().run(net, x, y + 7), Contains("labels must be in [0, 4)"));
}

TEST_CASE("robust_accuracy counts correct predictions on the attack's output, batch by batch", "[autoattack]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(40);
  auto pgd = eval::pgd20(0.2);
  CHECK(pgd.options().steps() == 20);
  CHECK(pgd.options().step_size() == Approx(2.0 / 255));
  torch::manual_seed(5);
  auto r = eval::robust_accuracy(net, x, y, pgd, 16);
  // The same computation by hand, with the same random draws.
  torch::manual_seed(5);
  int64_t correct = 0;
  for (int64_t b = 0; b < 40; b += 16) {
    const int64_t len = std::min<int64_t>(16, 40 - b);
    auto adv = pgd.perturb(net, x.narrow(0, b, len), y.narrow(0, b, len));
    torch::NoGradGuard ng;
    correct += (net(adv).argmax(1) == y.narrow(0, b, len)).sum().item<int64_t>();
  }
  CHECK(r.correct == correct);
  CHECK(r.total == 40);
  CHECK(r.accuracy == Approx(correct / 40.0));
  CHECK(r.accuracy <= r.clean_accuracy);
  auto cw = eval::cw_inf(0.2);
  CHECK(cw.options().loss() == iat::Loss::kMargin);
  auto rc = eval::robust_accuracy(net, x, y, cw);
  CHECK(rc.accuracy <= rc.clean_accuracy);
  REQUIRE_THROWS_WITH(eval::robust_accuracy(net, x, y, pgd, 0), Contains("batch_size"));
}
