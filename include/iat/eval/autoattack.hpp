#pragma once
/// \file
/// iat::eval::AutoAttack: robust accuracy as AutoAttack (Croce & Hein 2020, fra31/auto-attack) computes
/// it — APGD-CE, APGD-T, FAB-T and Square (standard version), each run only on the points still robust,
/// from the clean input, with success re-checked on the model — plus the `plus`, `rand` and custom
/// versions, the reference's sanity checks as warnings, and resumable runs.

#include <iat/attacks/apgd.hpp>
#include <iat/attacks/attack.hpp>
#include <iat/attacks/fab.hpp>
#include <iat/attacks/square.hpp>
#include <iat/detail/autoattack.hpp>
#include <iat/model_ref.hpp>

#include <torch/arg.h>
#include <torch/types.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace iat {
namespace eval {

/// Which attacks AutoAttack runs, with which settings (AUTOATTACK.md §8).
enum class AutoAttackVersion {
  kStandard,  ///< apgd-ce (1 restart), apgd-t (9 targets), fab-t (9 targets), square (5000 queries)
  kPlus,      ///< apgd-ce, apgd-dlr (5 restarts), fab (5 restarts), square, apgd-t, fab-t
  kRand,      ///< apgd-ce, apgd-dlr with EoT over 20 gradient samples, for randomised defences
  kCustom,    ///< the `attacks` list, with the reference's constructor defaults (APGD and FAB 5 restarts)
};

/// Options of iat::eval::AutoAttack. Defaults: standard version, L∞, ε = 8/255, seed 0, batches of 250.
/// The budgets (`apgd_steps`, `fab_steps`, `square_queries`, `n_target_classes`) are AutoAttack's; a run
/// with other budgets is reported as non-standard.
///
/// **Example**
/// \code
/// auto opts = iat::eval::AutoAttackOptions().eps(8.0 / 255).batch_size(500);
/// auto subset = iat::eval::AutoAttackOptions().attacks({"apgd-ce", "square"});  // standard settings
/// auto custom = iat::eval::AutoAttackOptions()
///                   .version(iat::eval::AutoAttackVersion::kCustom)                // constructor defaults
///                   .attacks({"apgd-ce", "square"});
/// \endcode
struct AutoAttackOptions {
  /// The threat model's norm (L∞ or L2).
  TORCH_ARG(Norm, norm) = Norm::kLinf;
  /// Radius ε, in pixel units (8/255, not 8).
  TORCH_ARG(double, eps) = 8.0 / 255;
  /// Which attacks, with which settings.
  TORCH_ARG(AutoAttackVersion, version) = AutoAttackVersion::kStandard;
  /// Attacks to run, from "apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square". Required for kCustom
  /// (constructor defaults of the reference). With another version, a non-empty list runs just these
  /// attacks with that version's settings (the reference's `adversary.attacks_to_run = [...]` after
  /// creating a standard AutoAttack); empty: the version's own list.
  TORCH_ARG(std::vector<std::string>, attacks) = {};
  /// Seed re-applied to the global CPU generator before every attack on every batch, as the reference
  /// does with a fixed seed; negative: the current time in whole seconds, as the reference's seed=None.
  TORCH_ARG(int64_t, seed) = 0;
  /// Points per batch (the reference's `bs`); random draws depend on it.
  TORCH_ARG(int64_t, batch_size) = 250;
  /// Where the model runs; unset: x's device. Random numbers are drawn on the CPU either way.
  TORCH_ARG(c10::optional<torch::Device>, device) = c10::nullopt;
  /// A file for the robust flags: an interrupted run continues from it (empty: no state file).
  TORCH_ARG(std::string, state_path) = "";
  /// Progress messages (one line each); unset: silent.
  TORCH_ARG(std::function<void(const std::string&)>, log) = nullptr;
  /// APGD iterations (standard: 100).
  TORCH_ARG(int64_t, apgd_steps) = 100;
  /// FAB iterations (standard: 100).
  TORCH_ARG(int64_t, fab_steps) = 100;
  /// Square queries (standard: 5000).
  TORCH_ARG(int64_t, square_queries) = 5000;
  /// Target classes of APGD-T and FAB-T (standard: 9; capped at classes − 1 with a warning).
  TORCH_ARG(int64_t, n_target_classes) = 9;
};

/// One attack's line in the report.
struct AutoAttackStep {
  std::string attack;        ///< "apgd-ce", "apgd-t", …
  int64_t attacked = 0;      ///< points it ran on (still robust before it)
  int64_t robust = 0;        ///< points robust after it
  double robust_accuracy = 0;  ///< robust / all points
  double seconds = 0;        ///< wall time of the attack
  bool resumed = false;      ///< already done in the state file, not run again
  torch::Tensor robust_flags;  ///< bool [N] after this attack
};

/// What an AutoAttack run found.
///
/// **Example**
/// \code
/// auto report = aa.run(net, x, y);
/// std::cout << report.clean_accuracy << " " << report.robust_accuracy << "\n";
/// \endcode
struct AutoAttackReport {
  int64_t num_points = 0;
  int64_t clean_correct = 0;
  double clean_accuracy = 0;
  std::vector<AutoAttackStep> steps;      ///< robust accuracy after each attack, in order
  int64_t robust_count = 0;               ///< robust points as counted by the attack loop
  double robust_accuracy = 0;             ///< the final number (robust_count / num_points)
  int64_t robust_count_rechecked = 0;     ///< points the model classifies correctly on x_adv
  double robust_accuracy_rechecked = 0;   ///< re-evaluation of the model on x_adv
  double max_perturbation = 0;            ///< largest ‖x_adv − x‖ (in the attack's norm) over all points
  double total_seconds = 0;
  torch::Tensor x_adv;                    ///< adversarial examples (the clean input where none was found)
  torch::Tensor robust;                   ///< bool [N], as counted
  torch::Tensor robust_rechecked;         ///< bool [N], model(x_adv) == y
  std::vector<std::string> warnings;      ///< the reference's sanity checks and iat's adaptations
  std::vector<std::string> attacks;       ///< the attack list run
  std::string version;                    ///< "standard", "plus", "rand", "custom"
  bool standard_budgets = true;           ///< false if any budget differs from AutoAttack's
  int64_t n_target_classes = 9;           ///< targets actually used by apgd-t / fab-t
  int64_t seed = 0;
  int64_t batch_size = 0;
};

/// Name of a version, as the reference spells it.
inline std::string to_string(AutoAttackVersion v) {
  switch (v) {
    case AutoAttackVersion::kStandard: return "standard";
    case AutoAttackVersion::kPlus: return "plus";
    case AutoAttackVersion::kRand: return "rand";
    case AutoAttackVersion::kCustom: return "custom";
  }
  return "?";
}

/// The attack names AutoAttack knows.
inline const std::vector<std::string>& autoattack_attack_names() {
  static const std::vector<std::string> names = {"apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square"};
  return names;
}

namespace detail {

inline std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

inline std::string percent(double v) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(2);
  s << 100.0 * v << "%";
  return s.str();
}

/// The resumable state: attacks requested and done, clean accuracy, robust flags.
struct AutoAttackState {
  std::vector<std::string> attacks;
  std::vector<std::string> done;
  double clean_accuracy = 0;
  int64_t clean_correct = 0;
  std::string flags;  // '1' robust, '0' not, one per point

  void save(const std::string& path) const {
    const std::string tmp = path + ".tmp";
    {
      std::ofstream f(tmp, std::ios::trunc);
      TORCH_CHECK(f.good(), "iat::eval::AutoAttack: cannot write the state file ", tmp);
      f << "iat-autoattack-state 1\n";
      f << "attacks " << join(attacks, " ") << "\n";
      f << "done " << join(done, " ") << "\n";
      f.precision(17);
      f << "clean " << clean_correct << " " << clean_accuracy << "\n";
      f << "flags " << flags << "\n";
      TORCH_CHECK(f.good(), "iat::eval::AutoAttack: failed writing the state file ", tmp);
    }
    TORCH_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "iat::eval::AutoAttack: cannot rename ", tmp, " to ",
                path);
  }

  static bool load(const std::string& path, AutoAttackState& out) {
    std::ifstream f(path);
    if (!f.good()) return false;
    std::string line;
    std::getline(f, line);
    TORCH_CHECK_VALUE(line == "iat-autoattack-state 1", "iat::eval::AutoAttack: ", path,
                      " is not an iat AutoAttack state file (first line '", line, "')");
    auto words = [](const std::string& l) {
      std::istringstream s(l);
      std::vector<std::string> w;
      std::string t;
      while (s >> t) w.push_back(t);
      return w;
    };
    bool have_flags = false;
    while (std::getline(f, line)) {
      auto w = words(line);
      if (w.empty()) continue;
      if (w[0] == "attacks") out.attacks.assign(w.begin() + 1, w.end());
      else if (w[0] == "done") out.done.assign(w.begin() + 1, w.end());
      else if (w[0] == "clean" && w.size() == 3) {
        out.clean_correct = std::stoll(w[1]);
        out.clean_accuracy = std::stod(w[2]);
      } else if (w[0] == "flags" && w.size() == 2) {
        out.flags = w[1];
        have_flags = true;
      }
    }
    TORCH_CHECK_VALUE(have_flags && out.flags.find_first_not_of("01") == std::string::npos,
                      "iat::eval::AutoAttack: the state file ", path, " has no valid 'flags' line");
    return true;
  }
};

}  // namespace detail

/// AutoAttack (AUTOATTACK.md): `report = aa.run(model, x, y)`.
///
/// Steps, as the reference: sanity checks on the first batch (warnings), a clean pass (clean-misclassified
/// points count as non-robust), then each attack in order on the indices still robust, cut into batches of
/// `batch_size`; before each attack on each batch the seed is re-applied to the global CPU generator; the
/// attack starts from the clean inputs; the model is re-run on the returned points and every point it
/// misclassifies becomes non-robust, its adversarial example kept. Robust accuracy after each attack is
/// counted over all N points. The final report also re-evaluates the model on all returned points.
/// The model runs in eval mode (its mode is restored afterwards) under `torch::NoGradGuard`; attacks
/// take input gradients only.
///
/// **Example**
/// \code
/// iat::eval::AutoAttack aa(iat::eval::AutoAttackOptions().eps(8.0 / 255).seed(0).batch_size(250));
/// auto report = aa.run(net, x, y);   // x float [N,C,H,W] in [0,1], y int64 [N]
/// std::cout << "AutoAttack: " << report.robust_accuracy << "\n";
/// \endcode
class AutoAttack {
 public:
  explicit AutoAttack(AutoAttackOptions options = {}) : options_(std::move(options)) {
    const char* who = "iat::eval::AutoAttack";
    iat::detail::check_radius(who, options_.norm(), options_.eps());
    iat::detail::check_at_least(who, "batch_size", options_.batch_size(), 1);
    iat::detail::check_at_least(who, "apgd_steps", options_.apgd_steps(), 1);
    iat::detail::check_at_least(who, "fab_steps", options_.fab_steps(), 1);
    iat::detail::check_at_least(who, "square_queries", options_.square_queries(), 0);
    iat::detail::check_at_least(who, "n_target_classes", options_.n_target_classes(), 1);
    const auto& known = autoattack_attack_names();
    TORCH_CHECK_VALUE(options_.version() != AutoAttackVersion::kCustom || !options_.attacks().empty(), who,
                      ": version kCustom needs a non-empty attack list (from ", detail::join(known, ", "), ")");
    for (const auto& a : options_.attacks()) {
      TORCH_CHECK_VALUE(std::find(known.begin(), known.end(), a) != known.end(), who, ": unknown attack '", a,
                        "'; known attacks: ", detail::join(known, ", "));
    }
  }

  const AutoAttackOptions& options() const { return options_; }

  /// The attacks the configured version runs, in order.
  std::vector<std::string> attack_list() const {
    if (!options_.attacks().empty()) return options_.attacks();
    switch (options_.version()) {
      case AutoAttackVersion::kStandard: return {"apgd-ce", "apgd-t", "fab-t", "square"};
      case AutoAttackVersion::kPlus: return {"apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"};
      case AutoAttackVersion::kRand: return {"apgd-ce", "apgd-dlr"};
      case AutoAttackVersion::kCustom: return options_.attacks();
    }
    return {};
  }

  /// Runs the evaluation on x (float [N, C, H, W] in [0,1]) and y (int64 [N]).
  AutoAttackReport run(const ModelRef& model, const torch::Tensor& x_in, const torch::Tensor& y_in) {
    const char* who = "iat::eval::AutoAttack";
    iat::detail::check_images(who, x_in);
    iat::detail::check_labels(who, x_in, y_in);
    const auto& o = options_;
    const auto start = std::chrono::steady_clock::now();
    const torch::Device device = o.device() ? *o.device() : x_in.device();
    auto x = x_in.detach().to(torch::kFloat);
    auto y = y_in.detach();
    const int64_t n = x.size(0);
    const int64_t bs = o.batch_size();

    AutoAttackReport report;
    report.num_points = n;
    report.version = to_string(o.version());
    report.seed = o.seed();
    report.batch_size = bs;
    report.standard_budgets = o.apgd_steps() == 100 && o.fab_steps() == 100 && o.square_queries() == 5000 &&
                              o.n_target_classes() == 9;
    auto warn = [&](const std::string& w) {
      report.warnings.push_back(w);
      log("warning: " + w);
    };
    if (!report.standard_budgets) {
      warn("non-standard budgets (APGD " + std::to_string(o.apgd_steps()) + " it., FAB " +
           std::to_string(o.fab_steps()) + " it., Square " + std::to_string(o.square_queries()) + " queries, " +
           std::to_string(o.n_target_classes()) + " targets): this is not AutoAttack " + report.version +
           " and its numbers must not be reported as such");
    }

    if (model.is_training()) warn("the model was in train mode; it is evaluated in eval mode");
    ModeGuard eval_mode(model, false);
    torch::NoGradGuard no_grad;
    std::function<torch::Tensor(const torch::Tensor&)> forward = [&](const torch::Tensor& xb) {
      auto logits = model(xb.to(device));
      iat::detail::check_logits(who, logits, xb.size(0));
      return logits;
    };

    // Sanity checks on the first batch, as the reference (warnings only).
    auto x_first = x.narrow(0, 0, std::min(bs, n));
    auto y_first = y.narrow(0, 0, std::min(bs, n)).to(device);
    auto logits_first = forward(x_first);
    iat::detail::check_label_range(who, y_first, logits_first.size(1));
    const int64_t classes = logits_first.size(1);
    if (o.version() != AutoAttackVersion::kRand) check_randomized(forward, x_first, y_first, warn);
    check_probabilities(logits_first, warn);

    std::vector<std::string> attacks = attack_list();
    report.n_target_classes = std::min(o.n_target_classes(), classes - 1);
    adapt_to_classes(attacks, classes, report.n_target_classes, warn);
    report.attacks = attacks;

    // Clean pass, or the saved state.
    detail::AutoAttackState state;
    torch::Tensor robust;
    const bool resumed = !o.state_path().empty() && detail::AutoAttackState::load(o.state_path(), state);
    if (resumed) {
      TORCH_CHECK_VALUE(std::set<std::string>(state.attacks.begin(), state.attacks.end()) ==
                            std::set<std::string>(attacks.begin(), attacks.end()),
                        who, ": the state file ", o.state_path(), " was made for the attacks ",
                        detail::join(state.attacks, ","), ", this run has ", detail::join(attacks, ","),
                        " (wrong state file?)");
      TORCH_CHECK_VALUE(static_cast<int64_t>(state.flags.size()) == n, who, ": the state file ", o.state_path(),
                        " holds ", state.flags.size(), " robust flags, x has ", n, " points (wrong state file?)");
      robust = torch::zeros({n}, torch::kBool);
      auto acc = robust.accessor<bool, 1>();
      for (int64_t i = 0; i < n; ++i) acc[i] = state.flags[static_cast<size_t>(i)] == '1';
      report.clean_accuracy = state.clean_accuracy;
      report.clean_correct = state.clean_correct;
      log("resumed from " + o.state_path() + ": done " + detail::join(state.done, ",") + ", robust accuracy " +
          detail::percent(robust.sum().item<double>() / static_cast<double>(n)));
    } else {
      robust = torch::zeros({n}, torch::kBool);
      for (int64_t b = 0; b < n; b += bs) {
        const int64_t len = std::min(bs, n - b);
        auto pred = iat::detail::predicted_class(forward(x.narrow(0, b, len))).to(torch::kCPU);
        robust.narrow(0, b, len).copy_(pred == y.narrow(0, b, len).to(torch::kCPU));
      }
      report.clean_correct = robust.sum().item<int64_t>();
      report.clean_accuracy = static_cast<double>(report.clean_correct) / static_cast<double>(n);
      state.attacks = attacks;
      state.clean_correct = report.clean_correct;
      state.clean_accuracy = report.clean_accuracy;
      save_state(state, robust);
      log("initial accuracy: " + detail::percent(report.clean_accuracy));
    }

    auto x_adv = x.clone();
    auto y_cpu = y.to(torch::kCPU);
    int64_t zero_grad_points = 0;
    for (const auto& name : attacks) {
      AutoAttackStep step;
      step.attack = name;
      if (std::find(state.done.begin(), state.done.end(), name) != state.done.end()) {
        step.resumed = true;
        step.robust = robust.sum().item<int64_t>();
        step.robust_accuracy = static_cast<double>(step.robust) / static_cast<double>(n);
        step.robust_flags = robust.clone();
        report.steps.push_back(step);
        continue;
      }
      const auto t0 = std::chrono::steady_clock::now();
      auto idx = iat::detail::true_indices(robust);
      const int64_t num_robust = idx.numel();
      if (num_robust == 0) break;
      step.attacked = num_robust;
      auto attack = make_attack(name, report.n_target_classes);
      const int64_t batches = (num_robust + bs - 1) / bs;
      for (int64_t b = 0; b < batches; ++b) {
        auto ib = idx.narrow(0, b * bs, std::min(bs, num_robust - b * bs));
        auto xb = x.index_select(0, ib.to(x.device())).to(device);
        auto yb = y.index_select(0, ib.to(y.device())).to(device);
        set_seed(*attack, name);
        auto adv = attack->perturb(model, xb, yb);
        if (auto* a = dynamic_cast<APGD*>(attack.get())) zero_grad_points += a->zero_gradient_points();
        if (auto* a = dynamic_cast<APGDT*>(attack.get())) zero_grad_points += a->zero_gradient_points();
        auto pred = iat::detail::predicted_class(forward(adv));
        auto fooled = (pred != yb).to(torch::kCPU);
        auto hit = ib.masked_select(fooled);
        robust.index_fill_(0, hit, false);
        x_adv.index_copy_(0, hit.to(x_adv.device()),
                          adv.index_select(0, iat::detail::true_indices(fooled).to(adv.device())).to(x_adv.device()));
        save_state(state, robust);
        log(name + " - " + std::to_string(b + 1) + "/" + std::to_string(batches) + " - " +
            std::to_string(hit.numel()) + " out of " + std::to_string(ib.numel()) + " successfully perturbed");
      }
      step.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      step.robust = robust.sum().item<int64_t>();
      step.robust_accuracy = static_cast<double>(step.robust) / static_cast<double>(n);
      step.robust_flags = robust.clone();
      report.steps.push_back(step);
      state.done.push_back(name);
      save_state(state, robust);
      std::ostringstream line;
      line.setf(std::ios::fixed);
      line.precision(1);
      line << "robust accuracy after " << name << ": " << detail::percent(step.robust_accuracy) << " (" << step.seconds
           << " s)";
      log(line.str());
    }
    if (zero_grad_points > 0) {
      warn("there are " + std::to_string(zero_grad_points) +
           " points with zero gradient at the start of a DLR run: gradient-based attacks may be unreliable "
           "on this model (gradient masking?)");
    }
    check_square(report, warn);

    report.robust = robust;
    report.robust_count = robust.sum().item<int64_t>();
    report.robust_accuracy = static_cast<double>(report.robust_count) / static_cast<double>(n);
    report.x_adv = x_adv;
    report.max_perturbation = iat::detail::per_example_norm(x_adv - x, o.norm()).max().item<double>();
    auto rechecked = torch::zeros({n}, torch::kBool);
    for (int64_t b = 0; b < n; b += bs) {
      const int64_t len = std::min(bs, n - b);
      auto pred = iat::detail::predicted_class(forward(x_adv.narrow(0, b, len))).to(torch::kCPU);
      rechecked.narrow(0, b, len).copy_(pred == y_cpu.narrow(0, b, len));
    }
    report.robust_rechecked = rechecked;
    report.robust_count_rechecked = rechecked.sum().item<int64_t>();
    report.robust_accuracy_rechecked = static_cast<double>(report.robust_count_rechecked) / static_cast<double>(n);
    if (report.robust_count_rechecked != report.robust_count) {
      warn("robust accuracy as counted (" + detail::percent(report.robust_accuracy) +
           ") differs from the re-evaluation on the returned points (" +
           detail::percent(report.robust_accuracy_rechecked) + "): is the model randomised or stateful?");
    }
    if (resumed) {
      warn("resumed from a state file: adversarial examples of attacks done before the restart are not in x_adv");
    }
    report.total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    log("robust accuracy: " + detail::percent(report.robust_accuracy) + " (re-checked " +
        detail::percent(report.robust_accuracy_rechecked) + ")");
    return report;
  }

 private:
  void log(const std::string& s) const {
    if (options_.log()) options_.log()(s);
  }

  void save_state(detail::AutoAttackState& state, const torch::Tensor& robust) const {
    if (options_.state_path().empty()) return;
    auto flags = robust.to(torch::kCPU);
    auto acc = flags.accessor<bool, 1>();
    state.flags.assign(static_cast<size_t>(flags.size(0)), '0');
    for (int64_t i = 0; i < flags.size(0); ++i) {
      if (acc[i]) state.flags[static_cast<size_t>(i)] = '1';
    }
    state.save(options_.state_path());
  }

  int64_t seed_now() const {
    return options_.seed() >= 0 ? options_.seed() : static_cast<int64_t>(std::time(nullptr));
  }

  void set_seed(Attack& attack, const std::string& name) const {
    const int64_t seed = seed_now();
    if (auto* a = dynamic_cast<APGD*>(&attack)) a->options().seed(seed);
    if (auto* a = dynamic_cast<APGDT*>(&attack)) a->options().seed(seed);
    if (auto* a = dynamic_cast<FAB*>(&attack)) a->options().seed(seed);
    if (auto* a = dynamic_cast<Square*>(&attack)) a->options().seed(seed);
    (void)name;
  }

  // The attack object for a name, with the settings of the configured version (AUTOATTACK.md §8).
  std::unique_ptr<Attack> make_attack(const std::string& name, int64_t targets) const {
    const auto& o = options_;
    const auto v = o.version();
    const int64_t apgd_restarts = (v == AutoAttackVersion::kStandard || v == AutoAttackVersion::kRand) ? 1 : 5;
    const int64_t eot = v == AutoAttackVersion::kRand ? 20 : 1;
    if (name == "apgd-ce" || name == "apgd-dlr") {
      return std::make_unique<APGD>(APGDOptions()
                                        .norm(o.norm())
                                        .eps(o.eps())
                                        .steps(o.apgd_steps())
                                        .restarts(apgd_restarts)
                                        .loss(name == "apgd-ce" ? Loss::kCE : Loss::kDLR)
                                        .eot_iter(eot));
    }
    if (name == "apgd-t") {
      return std::make_unique<APGDT>(
          APGDTOptions().norm(o.norm()).eps(o.eps()).steps(o.apgd_steps()).n_target_classes(targets));
    }
    if (name == "fab" || name == "fab-t") {
      // The reference sets FAB's restarts to 1 for fab-t; untargeted FAB keeps 1 (standard) or 5.
      const int64_t restarts = name == "fab-t" || v == AutoAttackVersion::kStandard ? 1 : 5;
      return std::make_unique<FAB>(FABOptions()
                                       .norm(o.norm())
                                       .eps(o.eps())
                                       .steps(o.fab_steps())
                                       .restarts(restarts)
                                       .targeted(name == "fab-t")
                                       .n_target_classes(targets));
    }
    TORCH_CHECK_VALUE(name == "square", "iat::eval::AutoAttack: unknown attack '", name, "'");
    return std::make_unique<Square>(SquareOptions().norm(o.norm()).eps(o.eps()).n_queries(o.square_queries()));
  }

  // Fewer classes than the attacks need: drop what cannot run, cap the targets, and say so.
  void adapt_to_classes(std::vector<std::string>& attacks, int64_t classes, int64_t targets,
                        const std::function<void(const std::string&)>& warn) const {
    auto has = [&](const char* a) { return std::find(attacks.begin(), attacks.end(), a) != attacks.end(); };
    auto drop = [&](const char* a, const std::string& why) {
      if (!has(a)) return;
      attacks.erase(std::find(attacks.begin(), attacks.end(), a));
      warn(std::string(a) + " skipped: " + why);
    };
    if (classes < 3) drop("apgd-dlr", "the DLR loss needs at least 3 classes, the model has " + std::to_string(classes));
    if (classes < 4) {
      drop("apgd-t", "the targeted DLR loss needs at least 4 classes, the model has " + std::to_string(classes));
    }
    if ((has("apgd-t") || has("fab-t")) && targets < options_.n_target_classes()) {
      warn("the model has " + std::to_string(classes) + " classes: apgd-t/fab-t use " + std::to_string(targets) +
           " target classes instead of " + std::to_string(options_.n_target_classes()));
    }
  }

  static void check_randomized(const std::function<torch::Tensor(const torch::Tensor&)>& forward, const torch::Tensor& x, const torch::Tensor& y,
                               const std::function<void(const std::string&)>& warn) {
    std::vector<torch::Tensor> outs;
    std::vector<int64_t> correct;
    for (int k = 0; k < 5; ++k) {
      auto out = forward(x);
      correct.push_back((iat::detail::predicted_class(out) == y).sum().item<int64_t>());
      outs.push_back(out / (iat::detail::per_example_norm(out, Norm::kL2).view({-1, 1}) + 1e-10));
    }
    double max_diff = 0;
    for (size_t a = 0; a < outs.size(); ++a) {
      for (size_t b = a + 1; b < outs.size(); ++b) {
        max_diff = std::max(max_diff, iat::detail::per_example_norm(outs[a] - outs[b], Norm::kL2).max().item<double>());
      }
    }
    const bool counts_differ = std::any_of(correct.begin(), correct.end(), [&](int64_t c) { return c != correct.back(); });
    if (counts_differ || max_diff > 1e-4) {
      warn("the model's outputs change between identical forward passes (max normalised difference " +
           std::to_string(max_diff) + "): it seems to be a randomised defence; use version rand");
    }
  }

  static void check_probabilities(const torch::Tensor& out, const std::function<void(const std::string&)>& warn) {
    const double alpha = 1e-5;
    const bool probs = out.max().item<double>() < 1.0 + alpha && out.min().item<double>() > -alpha &&
                       ((out.sum(-1) - 1.0).abs() < alpha).all().item<bool>();
    if (probs) {
      warn("the model's outputs look like probabilities (in [0,1], summing to 1): AutoAttack needs logits; "
           "remove the final softmax");
    }
  }

  static void check_square(const AutoAttackReport& report, const std::function<void(const std::string&)>& warn) {
    double before = 2.0, square = -1.0;
    for (const auto& s : report.steps) {
      if (s.attack == "square") square = s.robust_accuracy;
      else before = std::min(before, s.robust_accuracy);
    }
    before = std::min(before, report.clean_accuracy);
    if (square >= 0 && report.steps.size() > 1 && square < before - 0.002) {
      warn("Square lowered robust accuracy by " + detail::percent(before - square) +
           " after the white-box attacks: the gradient-based evaluation may be unreliable (gradient masking?)");
    }
  }

  AutoAttackOptions options_;
};

}  // namespace eval
}  // namespace iat
