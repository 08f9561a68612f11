// iat-eval's command line: the flags, their checks, and the settings they resolve to (EvalConfig). Every
// check that needs neither the model nor the points is made here, before anything is loaded or joined.
#pragma once

#include <iat/data/load.hpp>
#include <iat/eval/autoattack.hpp>
#include <iat/threat_model.hpp>

#include "../common/cli.hpp"
#include "../common/recordable_text.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace iat_examples {

/// Prints "iat-eval: error: MSG" and exits with the usage status 2: iat-eval's one way to stop on an error.
[[noreturn]] inline void eval_fail(const std::string& msg) {
  std::cerr << "iat-eval: error: " << msg << "\n";
  std::exit(kExitUsage);
}

/// iat-eval's settings: the flags as given, and what they resolve to.
struct EvalConfig {
  // As given.
  std::string model, checkpoint, data, dataset, data_dir, out, state, device = "cpu", attacks, version = "standard";
  std::string eps_text = "8/255", norm_text = "Linf", also, save_adv;
  int64_t n = -1, autoattack_n = -1, seed = 0, batch_size = 250, threads = 1, apgd_steps = 100, fab_steps = 100,
          square_queries = 5000, n_targets = 9, dist_timeout = 300;
  bool quiet = false, jit_optimize = false, nonfinite_as_broken = false, state_mismatch_ok = false, no_report = false;
  // Resolved.
  iat::Norm norm = iat::Norm::kLinf;
  double eps = 8.0 / 255;
  iat::eval::AutoAttackVersion aa_version = iat::eval::AutoAttackVersion::kStandard;
  std::vector<std::string> aa_attacks;  ///< AutoAttack's attacks (empty: the version's list)
  std::vector<std::string> extras;      ///< single-attack evaluations after AutoAttack: pgd20, cw

  /// The model file given (--model or --checkpoint).
  const std::string& model_file() const { return checkpoint.empty() ? model : checkpoint; }
};

namespace eval_detail {

// "8/255", "0.0314", "0.5": a budget in pixel units for L-inf (8 gets the 8/255 hint); an L2 radius may
// exceed 1.
inline double parse_eps(const std::string& text, bool linf) {
  double value = 0;
  try {
    value = parse_fraction(text, "--eps");
  } catch (const CLI::ValidationError&) {
    eval_fail("--eps: cannot read '" + text + "' as a number or a fraction such as 8/255");
  }
  if (!linf && value > 0 && std::isfinite(value)) return value;
  if (!(value > 0 && value <= 1)) {
    const std::string hint =
        value > 1 && value <= 255 ? fmt::format(" (did you mean {}/255?)", static_cast<int>(std::lround(value))) : "";
    eval_fail("--eps must be in (0, 1] for inputs in [0,1], got " + text + hint);
  }
  return value;
}

inline std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// --norm, --eps, --version, --attacks and --also into their resolved values.
inline void resolve(EvalConfig& c) {
  if (c.norm_text == "Linf" || c.norm_text == "linf" || c.norm_text == "inf") c.norm = iat::Norm::kLinf;
  else if (c.norm_text == "L2" || c.norm_text == "l2") c.norm = iat::Norm::kL2;
  else eval_fail("--norm must be Linf or L2, got '" + c.norm_text + "'");
  c.eps = parse_eps(c.eps_text, c.norm == iat::Norm::kLinf);

  // A version name given to --attacks is the version.
  if (c.attacks == "standard" || c.attacks == "plus" || c.attacks == "rand") {
    c.version = c.attacks;
    c.attacks.clear();  // the version's own list
  }
  using V = iat::eval::AutoAttackVersion;
  if (c.version == "standard") c.aa_version = V::kStandard;
  else if (c.version == "plus") c.aa_version = V::kPlus;
  else if (c.version == "rand") c.aa_version = V::kRand;
  else if (c.version == "custom") c.aa_version = V::kCustom;
  else eval_fail("--version must be standard, plus, rand or custom, got '" + c.version + "'");
  c.extras = split(c.also, ',');
  auto list = split(c.attacks, ',');
  for (auto it = list.begin(); it != list.end();) {  // pgd20 and cw are accepted in --attacks too
    if (*it == "pgd20" || *it == "cw") {
      c.extras.push_back(*it);
      it = list.erase(it);
    } else {
      ++it;
    }
  }
  const auto& known = iat::eval::autoattack_attack_names();
  for (const auto& name : list) {
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      eval_fail("unknown attack '" + name + "' in --attacks; known attacks: " + fmt::format("{}", fmt::join(known, ",")));
    }
  }
  if (list.empty() && c.version == "custom") eval_fail("--version custom needs --attacks");
  c.aa_attacks = list;
  for (const auto& e : c.extras) {
    if (e != "pgd20" && e != "cw") eval_fail("unknown evaluation '" + e + "' in --also; use pgd20, cw");
    if (c.norm != iat::Norm::kLinf) eval_fail("--also " + e + " is defined for Linf only");
  }
}

}  // namespace eval_detail

/// Parses iat-eval's command line into `cfg` and resolves it. Returns 0 after --help (printed), -1 when the
/// evaluation should go ahead; every usage error ends the program through eval_fail (status 2).
inline int parse_eval_command_line(int argc, char** argv, EvalConfig& c) {
  CLI::App app{"iat-eval: robust accuracy under AutoAttack (fra31/auto-attack, standard version by default)"};
  const auto recorded = recordable_text("the --out report");  // the paths the report names
  auto* model_opt = app.add_option("--model", c.model, "TorchScript model file (float [N,C,H,W] in [0,1] -> logits [N,K])")
                        ->check(recorded);
  auto* ckpt_opt = app.add_option("--checkpoint", c.checkpoint, "an iat-train checkpoint (checkpoint.pt)")->check(recorded);
  model_opt->excludes(ckpt_opt);
  auto* data_opt = app.add_option("--data", c.data, "points file: torch.save({'x': float [N,C,H,W], 'y': int64 [N]})")
                       ->check(recorded);
  auto* ds_opt = app.add_option("--dataset", c.dataset, std::string("dataset (test split): ") + iat::data::dataset_names());
  app.add_option("--data-dir", c.data_dir, "directory of --dataset")->check(recorded);
  data_opt->excludes(ds_opt);
  app.add_option("--version", c.version, "standard | plus | rand | custom (the reference's versions)");
  app.add_option("--attacks", c.attacks,
                 "comma list of apgd-ce,apgd-dlr,apgd-t,fab,fab-t,square, run with the version's settings "
                 "(default: the version's list; custom: required)");
  app.add_option("--also", c.also, "extra single-attack evaluations: pgd20,cw (docs/method.md §8.5; also accepted in --attacks)");
  app.add_option("--eps", c.eps_text, "perturbation budget in pixel units, e.g. 8/255 or 0.1");
  app.add_option("--norm", c.norm_text, "Linf or L2");
  auto* n_opt = app.add_option("--n", c.n, "evaluate the first N >= 1 points (default: all)");
  auto* aa_n_opt = app.add_option("--autoattack-n", c.autoattack_n,
                                  "run AutoAttack on the first N of those points only (clean, PGD-20 and CW use all)");
  app.add_option("--seed", c.seed, "seed re-applied per attack and batch (negative: time, as the reference's None)");
  app.add_option("--batch-size", c.batch_size, "points per batch (the reference's bs)")->check(integer_at_least(1));
  app.add_option("--device", c.device, "auto (CUDA when available), cpu, cuda or cuda:N")->check(device_name());
  app.add_option("--threads", c.threads, "intra-op threads (at::set_num_threads)");
  app.add_option("--state", c.state, "state file: an interrupted evaluation resumes from it (refused when it was "
                 "written for another model, other points or other settings)");
  app.add_flag("--state-mismatch-ok", c.state_mismatch_ok,
               "resume from --state even when its settings differ (each difference is warned about and reported)");
  app.add_flag("--nonfinite-as-broken", c.nonfinite_as_broken,
               "count points whose logits are NaN/inf as broken (default: stop with an error naming how many)");
  app.add_option("--out", c.out, "write the JSON report here (and its picture beside it: REPORT.png, REPORT.svg)");
  app.add_flag("--no-report", c.no_report,
               "with --out: do not draw the picture (scripts/report.py REPORT.json draws it later)");
  app.add_option("--save-adv", c.save_adv, "write {'x_adv': float [N,C,H,W], 'robust': bool [N]} here (torch.load reads it)");
  app.add_option("--apgd-steps", c.apgd_steps, "APGD iterations (non-standard if not 100)");
  app.add_option("--fab-steps", c.fab_steps, "FAB iterations (non-standard if not 100)");
  app.add_option("--square-queries", c.square_queries, "Square queries (non-standard if not 5000)");
  app.add_option("--n-targets", c.n_targets, "target classes of APGD-T / FAB-T (non-standard if not 9)");
  app.add_flag("--quiet", c.quiet, "no progress on stderr");
  app.add_option("--dist-timeout", c.dist_timeout,
                 "under torchrun: seconds a rank waits for the others (rendezvous, every exchange) before it stops "
                 "with an error, e.g. when another rank died");
  app.add_flag("--jit-optimize", c.jit_optimize,
               "let the TorchScript executor optimise the graph (off by default: gradients then come from the "
               "same kernels as in eager PyTorch, which point-for-point agreement with the reference needs)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {  // --help
      app.exit(e);
      return 0;
    }
    // Every usage error exits with the documented status 2 (CLI11's own codes are 105, 109, ...).
    eval_fail(std::string(e.what()) + " (`iat-eval --help` lists every flag)");
  }
  if (n_opt->count() > 0 && c.n < 1) eval_fail(fmt::format("--n must be >= 1 (leave it out to evaluate every point), got {}", c.n));
  if (aa_n_opt->count() > 0 && c.autoattack_n < 1) eval_fail(fmt::format("--autoattack-n must be >= 1, got {}", c.autoattack_n));
  if (c.dist_timeout < 1) eval_fail(fmt::format("--dist-timeout must be >= 1 (seconds), got {}", c.dist_timeout));
  if (c.threads < 1) eval_fail(fmt::format("--threads must be >= 1, got {}", c.threads));
  if (c.data.empty() && c.dataset.empty()) eval_fail("give the points with --data FILE or --dataset NAME");
  if (c.model.empty() && c.checkpoint.empty()) {
    eval_fail("give the model with --model FILE (TorchScript) or --checkpoint FILE (iat-train)");
  }
  eval_detail::resolve(c);
  return -1;
}

}  // namespace iat_examples
