// iat::eval::AutoAttack (chaining, re-checks, sanity-check warnings, resume) and robust_accuracy.
#include "support.hpp"

#include <iat/eval/autoattack.hpp>
#include <iat/eval/robust_accuracy.hpp>

#include <ATen/Parallel.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <limits>
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

TEST_CASE("AutoAttack's options are a field, checked at run", "[autoattack][options]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(8);
  eval::AutoAttack aa(quick(0.25));
  aa.options.batch_size(0);
  REQUIRE_THROWS_WITH(aa.run(net, x, y), Contains("iat::eval::AutoAttack: batch_size must be >= 1, got 0"));
  aa.options.batch_size(4).version(eval::AutoAttackVersion::kCustom).attacks({"apgd-cw"});
  REQUIRE_THROWS_WITH(aa.run(net, x, y), Contains("unknown attack 'apgd-cw'"));
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
    // Nothing left to run: refused, not reported as a robust accuracy equal to the clean one.
    REQUIRE_THROWS_WITH(eval::AutoAttack(quick(0.1).version(eval::AutoAttackVersion::kCustom).attacks({"apgd-t"}))
                            .run(three, x, y3),
                        Contains("none of the attacks asked for applies to a model with 3 classes"));
  }
  SECTION("a model in train mode is evaluated in eval mode and left in train mode") {
    net->train();
    auto r = eval::AutoAttack(quick(0.1).attacks({"apgd-ce"})).run(net, x, y);
    CHECK(has_warning(r, "train mode"));
    CHECK(net->is_training());
    for (const auto& p : net->parameters()) CHECK_FALSE(p.grad().defined());
  }
}

namespace {

struct Stop {};

// Options of the resume tests: two attacks, several batches each.
eval::AutoAttackOptions resumable(const std::string& path) {
  return quick(0.2).attacks({"apgd-ce", "square"}).batch_size(8).state_path(path);
}

void check_same_result(const eval::AutoAttackReport& a, const eval::AutoAttackReport& b) {
  CHECK(a.robust.equal(b.robust));
  CHECK(a.robust_rechecked.equal(b.robust_rechecked));
  CHECK(a.robust_count_rechecked == b.robust_count_rechecked);
  CHECK(a.robust_accuracy_rechecked == b.robust_accuracy_rechecked);
  CHECK(a.max_perturbation == b.max_perturbation);
  CHECK(a.x_adv.equal(b.x_adv));
  CHECK(a.clean_correct == b.clean_correct);
  REQUIRE(a.steps.size() == b.steps.size());
  for (size_t i = 0; i < a.steps.size(); ++i) {
    CHECK(a.steps[i].attack == b.steps[i].attack);
    CHECK(a.steps[i].attacked == b.steps[i].attacked);
    CHECK(a.steps[i].robust_flags.equal(b.steps[i].robust_flags));
  }
}

}  // namespace

TEST_CASE("AutoAttack: an interrupted and resumed run equals an uninterrupted one", "[autoattack]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(32);
  const std::string path = temp_path("aa_resume");
  std::remove(path.c_str());
  auto full = eval::AutoAttack(resumable("")).run(net, x, y);
  REQUIRE(full.steps.size() == 2);
  REQUIRE(full.steps[0].attacked > 8);              // apgd-ce runs on several batches
  REQUIRE(full.robust_count < full.clean_correct);  // something was broken, so x_adv matters
  // Stop after 1 batch (inside apgd-ce), after apgd-ce's last batch, and inside square.
  const int64_t apgd_batches = (full.steps[0].attacked + 7) / 8;
  for (int64_t stop_after : {int64_t{1}, apgd_batches, apgd_batches + 1}) {
    DYNAMIC_SECTION("stopped after " << stop_after << " batch(es)") {
      std::remove(path.c_str());
      int64_t batches = 0;
      auto stopping = resumable(path).on_batch([&](const eval::AutoAttackProgress&) {
        if (++batches == stop_after) throw Stop{};
      });
      REQUIRE_THROWS_AS(eval::AutoAttack(stopping).run(net, x, y), Stop);
      torch::rand({5});  // the global generator moved on: the seed is re-applied anyway
      auto resumed = eval::AutoAttack(resumable(path)).run(net, x, y);
      CHECK(resumed.resumed);
      CHECK(resumed.steps[0].resumed);
      CHECK(resumed.state_mismatch.empty());
      check_same_result(resumed, full);
      CHECK(resumed.max_perturbation > 0);
      CHECK_FALSE(has_warning(resumed, "differs from the re-evaluation"));
      // Resuming the finished file again runs nothing and reports the same.
      auto again = eval::AutoAttack(resumable(path)).run(net, x, y);
      CHECK(again.steps[1].resumed);
      check_same_result(again, full);
    }
  }
  std::remove(path.c_str());
}

TEST_CASE("AutoAttack: a state file written under other settings is refused", "[autoattack]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(24);
  const std::string path = temp_path("aa_bind");
  std::remove(path.c_str());
  auto base = resumable(path).model_id("net A");
  auto first = eval::AutoAttack(base).run(net, x, y);
  auto refused = [&](eval::AutoAttackOptions o, const std::string& text, const torch::Tensor& xs,
                     const torch::Tensor& ys) {
    REQUIRE_THROWS_WITH(eval::AutoAttack(o).run(net, xs, ys),
                        Contains("written under other settings") && Contains(text) && Contains("--state-mismatch-ok"));
  };
  SECTION("each setting that changes results") {
    refused(base.eps(0.3), "eps: saved 0.20000000000000001, now 0.29999999999999999", x, y);
    refused(base.norm(iat::Norm::kL2), "norm: saved Linf, now L2", x, y);
    refused(base.seed(3), "seed: saved 0, now 3", x, y);
    refused(base.batch_size(4), "batch_size: saved 8, now 4", x, y);
    refused(base.apgd_steps(3), "apgd_steps: saved 10, now 3", x, y);
    refused(base.fab_steps(3), "fab_steps: saved 5, now 3", x, y);
    refused(base.square_queries(3), "square_queries: saved 20, now 3", x, y);
    refused(base.n_target_classes(2), "n_target_classes: saved 9, now 2", x, y);
    refused(base.attacks({"apgd-ce"}), "attacks: saved apgd-ce,square, now apgd-ce", x, y);
    refused(base.version(eval::AutoAttackVersion::kCustom), "version: saved standard, now custom", x, y);
    refused(base.model_id("net B"), "model: saved net A, now net B", x, y);
    refused(base.nonfinite_as_broken(true), "nonfinite_as_broken: saved false, now true", x, y);
    const int threads = at::get_num_threads();
    at::set_num_threads(threads + 1);  // CPU kernels may split their sums otherwise
    refused(base, "threads: saved " + std::to_string(threads) + ", now " + std::to_string(threads + 1), x, y);
    at::set_num_threads(threads);
    auto x2 = x.clone();
    x2[0][0][0][0] = 1.0 - x2[0][0][0][0].item<double>();
    refused(base, "x: saved hash", x2, y);
    auto y2 = y.clone();
    y2[3] = (y2[3].item<int64_t>() + 1) % 4;
    refused(base, "y: saved hash", x, y2);
    // Several differences at once are all listed.
    REQUIRE_THROWS_WITH(eval::AutoAttack(base.eps(0.3).seed(1)).run(net, x, y),
                        Contains("eps: saved") && Contains("; seed: saved 0, now 1"));
  }
  SECTION("another model with the same model_id: the clean predictions differ") {
    TinyNet other;  // untrained
    REQUIRE_THROWS_WITH(eval::AutoAttack(base).run(other, x, y), Contains("clean predictions: "));
  }
  SECTION("state_mismatch_ok resumes and says so, also in later runs") {
    auto forced = eval::AutoAttack(base.eps(0.3).state_mismatch_ok(true)).run(net, x, y);
    REQUIRE(forced.state_mismatch.size() == 1);
    CHECK_THAT(forced.state_mismatch[0], Contains("eps: saved"));
    CHECK(has_warning(forced, "written under other settings (state_mismatch_ok): eps"));
    // The file now records eps 0.3, and that an earlier run mixed settings.
    auto later = eval::AutoAttack(base.eps(0.3)).run(net, x, y);
    CHECK(later.state_mismatch.size() == 1);
    CHECK(has_warning(later, "an earlier run resumed this state file under other settings"));
  }
  SECTION("adversarial examples outside this run's ball: refused even with state_mismatch_ok") {
    // The file's broken points were found at eps 0.2; at eps 0.05 they are not adversarial examples.
    REQUIRE(first.robust_count < first.clean_correct);
    REQUIRE_THROWS_WITH(eval::AutoAttack(base.eps(0.05).state_mismatch_ok(true)).run(net, x, y),
                        Contains(path) && Contains("threat model does not allow") && Contains("eps 0.05"));
    // A larger eps still contains them.
    auto larger = eval::AutoAttack(base.eps(0.3).state_mismatch_ok(true)).run(net, x, y);
    CHECK(larger.max_perturbation <= 0.3 + 1e-6);
  }
  SECTION("another number of points: refused even with state_mismatch_ok") {
    REQUIRE_THROWS_WITH(eval::AutoAttack(base.state_mismatch_ok(true)).run(net, x.narrow(0, 0, 8), y.narrow(0, 0, 8)),
                        Contains("holds flags for 24 points, x has 8") && Contains("not even with"));
  }
  SECTION("old or foreign files") {
    {
      std::ofstream out(path, std::ios::trunc);
      out << "iat-autoattack-state 1\nattacks apgd-ce square\ndone apgd-ce\nclean 20 0.8\nflags 0101\n";
    }
    REQUIRE_THROWS_WITH(eval::AutoAttack(base).run(net, x, y), Contains("format 1"));
    {
      std::ofstream out(path, std::ios::trunc);
      out << "something else\n";
    }
    REQUIRE_THROWS_WITH(eval::AutoAttack(base).run(net, x, y), Contains("truncated or corrupt") && Contains(path));
  }
  SECTION("damaged, truncated or unchecksummed files are refused before LibTorch's reader sees them") {
    std::string bytes;
    {
      std::ifstream in(path, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    REQUIRE(bytes.size() > 200);
    auto write = [&](const std::string& b) {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(b.data(), static_cast<std::streamsize>(b.size()));
    };
    std::string flipped = bytes;
    flipped[bytes.size() / 2] = static_cast<char>(flipped[bytes.size() / 2] ^ 0x10);
    write(flipped);
    REQUIRE_THROWS_WITH(eval::AutoAttack(base).run(net, x, y), Contains(path) && Contains("is corrupt") && Contains("CRC-32"));
    write(bytes.substr(0, bytes.size() - 7));
    REQUIRE_THROWS_WITH(eval::AutoAttack(base).run(net, x, y), Contains(path) && Contains("truncated or corrupt"));
    // The same archive as torch::save writes it (no checksum comment): refused, its content unverifiable.
    torch::serialize::OutputArchive plain;
    plain.write("format", c10::IValue(std::string("iat-autoattack-state 2")));
    plain.save_to(path);
    REQUIRE_THROWS_WITH(eval::AutoAttack(base).run(net, x, y), Contains(path) && Contains("carries no iat checksum"));
    // The untouched file still resumes.
    write(bytes);
    auto again = eval::AutoAttack(base).run(net, x, y);
    CHECK(again.resumed);
    CHECK(again.robust_accuracy == first.robust_accuracy);
  }
  SECTION("an unwritable state path is refused before any work") {
    REQUIRE_THROWS_WITH(eval::AutoAttack(base.state_path(path + "/no/such/folder/s")).run(net, x, y),
                        Contains("state_path") && Contains("cannot be written"));
  }
  std::remove(path.c_str());
}

TEST_CASE("AutoAttack: non-finite logits stop the run or count as broken", "[autoattack]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(16);
  const auto nan = std::numeric_limits<float>::quiet_NaN();
  SECTION("NaN on every point: an error, not 'robust'") {
    auto nan_model = [&](const torch::Tensor& in) { return net(in) * nan; };
    REQUIRE_THROWS_AS(eval::AutoAttack(quick(0.1)).run(nan_model, x, y), c10::EnforceFiniteError);
    REQUIRE_THROWS_WITH(eval::AutoAttack(quick(0.1)).run(nan_model, x, y),
                        Contains("non-finite logits (NaN or inf) for 16 of 16 points in the clean pass") &&
                            Contains("nonfinite_as_broken"));
    auto r = eval::AutoAttack(quick(0.1).nonfinite_as_broken(true)).run(nan_model, x, y);
    CHECK(r.clean_correct == 0);
    CHECK(r.robust_count == 0);
    CHECK(r.robust_count_rechecked == 0);
    CHECK(r.nonfinite_points == 16);
    CHECK(r.nonfinite_as_broken);
    CHECK(has_warning(r, "non-finite logits (NaN or inf) for 16 of 16 points"));
  }
  SECTION("inf on some points") {
    auto some_inf = [&](const torch::Tensor& in) {
      auto out = net(in).clone();
      out.narrow(0, 0, std::min<int64_t>(3, in.size(0))).fill_(std::numeric_limits<float>::infinity());
      return out;
    };
    REQUIRE_THROWS_WITH(eval::AutoAttack(quick(0.1).attacks({"apgd-ce"})).run(some_inf, x, y),
                        Contains("for 3 of 16 points in the clean pass"));
  }
  SECTION("NaN only on perturbed inputs: the re-check after the attack") {
    // Clean inputs lie in [0, 0.8]; the model is NaN wherever a pixel exceeds 0.85.
    auto xs = x * 0.8;
    auto picky = [&](const torch::Tensor& in) {
      auto out = net(in);
      auto bad = (std::get<0>(in.flatten(1).max(1)) > 0.85).unsqueeze(1);
      return torch::where(bad, torch::full_like(out, nan), out);
    };
    REQUIRE_THROWS_WITH(eval::AutoAttack(quick(0.2).attacks({"apgd-ce"})).run(picky, xs, y),
                        Contains("points in the re-check after apgd-ce (batch 1/"));
    auto r = eval::AutoAttack(quick(0.2).attacks({"apgd-ce"}).nonfinite_as_broken(true)).run(picky, xs, y);
    CHECK(r.nonfinite_points > 0);
    CHECK((r.robust & r.nonfinite).sum().item<int64_t>() == 0);
    CHECK(has_warning(r, "counted as broken"));
  }
  SECTION("NaN in the final re-check") {
    bool poisoned = false;
    auto later = [&](const torch::Tensor& in) { return poisoned ? net(in) * nan : net(in); };
    auto o = quick(0.1).attacks({"apgd-ce"}).log([&](const std::string& line) {
      if (line.rfind("robust accuracy after", 0) == 0) poisoned = true;
    });
    REQUIRE_THROWS_WITH(eval::AutoAttack(o).run(later, x, y), Contains("16 of 16 points in the final re-check"));
  }
}

TEST_CASE("AutoAttack: logits of the wrong dtype or shape are refused", "[autoattack]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(20);
  auto as_double = [&](const torch::Tensor& in) { return net(in).to(torch::kDouble); };
  REQUIRE_THROWS_WITH(eval::AutoAttack(quick(0.1)).run(as_double, x, y), Contains("float32 logits") && Contains("Double"));
  auto as_int = [&](const torch::Tensor& in) { return net(in).to(torch::kLong); };
  REQUIRE_THROWS_WITH(eval::AutoAttack(quick(0.1)).run(as_int, x, y), Contains("float32 logits") && Contains("Long"));
  // 4 classes on the first (full) batch of 16, 5 on the last batch of 4.
  auto ragged = [&](const torch::Tensor& in) {
    auto out = net(in);
    return in.size(0) == 16 ? out : torch::cat({out, torch::zeros({in.size(0), 1})}, 1);
  };
  REQUIRE_THROWS_WITH(eval::AutoAttack(quick(0.1)).run(ragged, x, y),
                      Contains("logits for 5 classes on a batch of 4 points, but for 4 classes on the first batch"));
  auto flat = [&](const torch::Tensor& in) { return net(in).flatten(); };
  REQUIRE_THROWS_WITH(eval::AutoAttack(quick(0.1)).run(flat, x, y), Contains("logits of shape [N, num_classes]"));
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
  // A bad label past the first batch is refused too (it was counted as a clean mistake).
  auto y_late = y.clone();
  y_late[3] = 12;
  REQUIRE_THROWS_WITH(eval::AutoAttack(eval::AutoAttackOptions().batch_size(2)).run(net, x, y_late),
                      Contains("labels must be in [0, 4)"));
  // One logit per point: refused before any attack (FAB-T failed after APGD-CE, with 0 target classes).
  auto one_class = [](const torch::Tensor& in) { return in.flatten(1).sum(1, true); };
  REQUIRE_THROWS_WITH(eval::AutoAttack().run(one_class, x, y), Contains("a classifier needs at least 2 classes"));
}

TEST_CASE("robust_accuracy counts a row of non-finite logits as wrong, clean and attacked", "[autoattack]") {
  // argmax of a NaN row is class 0: with every label 0 the old count read 100 % clean and robust.
  auto nan_model = [](const torch::Tensor& in) {
    return in.flatten(1).narrow(1, 0, 4) * std::numeric_limits<float>::quiet_NaN();
  };
  auto x = torch::rand({6, 1, 4, 4});
  auto y = torch::zeros({6}, torch::kLong);
  auto pgd = eval::pgd20(0.1);
  auto plain = eval::robust_accuracy(nan_model, x, y, pgd, 4);
  CHECK(plain.clean_correct == 0);
  CHECK(plain.correct == 0);
  auto flagged = eval::robust_accuracy(nan_model, x, y, pgd, eval::RobustAccuracyOptions().batch_size(4));
  CHECK(flagged.clean.sum().item<int64_t>() == 0);
  CHECK(flagged.robust.sum().item<int64_t>() == 0);
  CHECK(flagged.total == 6);
}

TEST_CASE("robust_accuracy counts correct predictions on the attack's output, batch by batch", "[autoattack]") {
  TinyNet net = trained_tiny_net();
  auto [x, y] = quadrant_data(40);
  auto pgd = eval::pgd20(0.2);
  CHECK(pgd.options.steps() == 20);
  CHECK(pgd.options.effective_step_size() == Approx(0.2 / 4));  // α = ε/4
  torch::manual_seed(5);
  auto r = eval::robust_accuracy(net, x, y, pgd, 16);
  // The same computation by hand, with the same random draws.
  torch::manual_seed(5);
  int64_t correct = 0;
  for (int64_t b = 0; b < 40; b += 16) {
    const int64_t len = std::min<int64_t>(16, 40 - b);
    auto adv = pgd.perturb(net, x.narrow(0, b, len), y.narrow(0, b, len));
    torch::NoGradGuard ng;
    const auto yb = y.narrow(0, b, len);
    correct += ((net(adv).argmax(1) == yb) & (net(x.narrow(0, b, len)).argmax(1) == yb)).sum().item<int64_t>();
  }
  CHECK(r.correct == correct);
  CHECK(r.total == 40);
  CHECK(r.accuracy == Approx(correct / 40.0));
  CHECK(r.accuracy <= r.clean_accuracy);
  auto cw = eval::cw_inf(0.2);
  CHECK(cw.options.loss() == iat::Loss::kMargin);
  auto rc = eval::robust_accuracy(net, x, y, cw);
  CHECK(rc.accuracy <= rc.clean_accuracy);
  REQUIRE_THROWS_WITH(eval::robust_accuracy(net, x, y, pgd, 0), Contains("batch_size"));
}

namespace {
// An "attack" that returns 1 - x, and a model whose class is whether the mean pixel is below 0.5: a dark
// point labelled 0 is misclassified clean and classified correctly on the attack's output.
struct Invert : iat::Attack {
  torch::Tensor perturb(const iat::ModelRef&, const torch::Tensor& x, const torch::Tensor&) override { return 1 - x; }
  std::string name() const override { return "invert"; }
};
}  // namespace

TEST_CASE("robust_accuracy: a point misclassified clean is not robust, whatever the attack returns", "[autoattack]") {
  auto model = [](const torch::Tensor& in) {
    auto m = in.flatten(1).mean(1, true) - 0.5;
    return torch::cat({m, -m}, 1);  // class 0 when bright, 1 when dark
  };
  auto x = torch::cat({torch::full({3, 1, 2, 2}, 0.2), torch::full({2, 1, 2, 2}, 0.9)});  // 3 dark, 2 bright
  auto y = torch::zeros({5}, torch::kLong);
  Invert invert;
  auto r = eval::robust_accuracy(model, x, y, invert, 4);
  CHECK(r.clean_correct == 2);
  CHECK(r.correct == 0);  // counted 3 (the dark points, "correct" on 1 - x) before
  auto per_point = eval::robust_accuracy(model, x, y, invert, eval::RobustAccuracyOptions().batch_size(4));
  CHECK(per_point.correct == 0);
  CHECK_FALSE(per_point.robust.any().item<bool>());
  CHECK(per_point.accuracy <= per_point.clean_accuracy);
}
