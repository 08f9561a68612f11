// iat-train's command line: presets, flags and their checks, resolved into a TrainConfig. Kept apart from
// main so that tests and the flag fuzzer (fuzz/fuzz_train_flags.cpp) run exactly what the program parses.
#pragma once

#include "config.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

namespace iat_examples {

/// parse_command_line's "go on and train" result; any other value is the exit status to return.
constexpr int kRunTraining = -1;

namespace detail {

// A budget flag: a number or a fraction ("8/255") in [lo, hi] (lo excluded when lo_open).
CLI::Option* add_fraction(CLI::App& app, const std::string& flag, double& target, const std::string& help,
                          double lo = 0, bool lo_open = true, double hi = 1) {
  return app.add_option_function<std::string>(
         flag,
         [&target, flag, lo, lo_open, hi](const std::string& s) {
           const double v = parse_fraction(s, flag);
           if (!(lo_open ? v > lo : v >= lo) || !(v <= hi)) {
             throw CLI::ValidationError(flag, fmt::format("must be in {}{}, {}], got '{}' = {:.6g}{}", lo_open ? "(" : "[",
                                                          lo, hi, s, v,
                                                          v > 1 && v <= 255 ? fmt::format(" (did you mean {}/255?)", s) : ""));
           }
           target = v;
         },
         help)
      ->default_str(fmt::format("{:.6g}", target));
}

}  // namespace detail

/// Parses iat-train's command line into `cfg`: the presets named by --preset first, then the flags, then the
/// defaults that follow other settings (iat_examples::resolve_defaults). Returns kRunTraining when training
/// should start, otherwise the status to exit with: 0 after --help, --list-presets or --print-config (printed
/// to `out`), kExitUsage (2) after a usage error (explained on `err`). Never throws for any argv.
///
///   TrainConfig cfg;
///   const int status = parse_command_line(argc, argv, cfg, std::cout, std::cerr);
///   if (status != kRunTraining) return status;
inline int parse_command_line(int argc, const char* const* argv, TrainConfig& cfg, std::ostream& out,
                              std::ostream& err) {
  using detail::add_fraction;
  CLI::App app{"iat-train: adversarial training (PGD-AT, TRADES, MART, IAT, UIAT, one-off UIAT, single-step "
               "methods with and without UIAT) with iat's components"};
  app.get_formatter()->column_width(34);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a later flag wins

  bool list_presets = false;
  const auto all_presets = presets();
  // The loop below applies the presets before CLI11 parses; this check makes CLI11 refuse the same names.
  const CLI::Validator known_preset(
      [&all_presets](std::string& name) -> std::string {
        const bool known = std::any_of(all_presets.begin(), all_presets.end(), [&](const auto& p) { return p.name == name; });
        return known ? "" : "unknown preset; `iat-train --list-presets` lists them";
      },
      "PRESET");
  app.add_option("--preset", cfg.preset, "Start from a named experiment (see --list-presets); flags override it")
      ->check(known_preset);
  app.add_flag("--list-presets", list_presets, "Print every preset with what it runs, and exit");
  const double kInf = std::numeric_limits<double>::infinity();
  app.add_option("--method", cfg.method, "Training method")
      ->check(one_of(methods()))->capture_default_str();
  app.add_option("--data", cfg.dataset, "Dataset: cifar10, cifar100, svhn, fashion-mnist, mnist; synthetic (tiny, for tests) or "
                 "synthetic-cifar (3x32x32, for timing)")
      ->check(one_of({"cifar10", "cifar100", "svhn", "fashion-mnist", "mnist", "synthetic", "synthetic-cifar"}))
      ->capture_default_str();
  app.add_option("--data-dir", cfg.data_dir,
                 "Folder with the dataset's files (CIFAR binary version, SVHN .mat, IDX); fashion-mnist defaults "
                 "to Debian's /usr/share/datasets/fashion-mnist");
  app.add_option("--generated", cfg.generated, "A .npz of generated images (keys image, label) mixed into training")
      ->check(recordable_text("config.json"));
  app.add_option("--gen-ratio", cfg.gen_ratio, "Original-to-generated ratio of a batch with --generated (0.3 = 3 original per 7 generated)")
      ->check(number_in(0, 1))->capture_default_str();
  app.add_option("--model", cfg.model, "Architecture: small-cnn, prn18, wrn-34-10, wrn-28-10 (any wrn-D-W)")
      ->check(model_name())->capture_default_str();
  app.add_option("--activation", cfg.activation, "relu or silu")->check(one_of({"relu", "silu"}))->capture_default_str();
  app.add_option("--augment", cfg.augment, "Random crop (4-pixel padding) and horizontal flip")->check(boolean())->capture_default_str();
  app.add_option("--train-subset", cfg.train_subset, "Train on the first N examples only (0 = all)")->check(integer_at_least(0))->capture_default_str();
  app.add_option("--test-subset", cfg.test_subset, "Held-out test examples evaluated (natural and PGD) every epoch")->check(integer_at_least(1))->capture_default_str();

  app.add_option("--epochs", cfg.epochs, "Training epochs (in original-dataset sizes)")->check(integer_at_least(1))->capture_default_str();
  app.add_option("--batch-size", cfg.batch_size, "Batch size")->check(integer_at_least(1))->capture_default_str();
  app.add_option("--max-lr", cfg.max_lr, "Peak of the one-cycle learning-rate schedule")->check(number_in(0, kInf, true))->capture_default_str();
  app.add_option("--momentum", cfg.momentum, "SGD momentum")->check(number_in(0, 1, false, true))->capture_default_str();
  app.add_option("--nesterov", cfg.nesterov, "Nesterov momentum")->check(boolean())->capture_default_str();
  app.add_option("--weight-decay", cfg.weight_decay, "Weight decay")->check(number_in(0, kInf))->capture_default_str();
  app.add_option("--ema-decay", cfg.ema_decay, "Weight averaging decay (0 = off; 0.995 in the generated-data setting)")
      ->check(number_in(0, 1, false, true))->capture_default_str();

  add_fraction(app, "--eps", cfg.eps, "Adversarial budget epsilon (L-inf), e.g. 8/255");
  add_fraction(app, "--step-size", cfg.step_size,
               "PGD step size alpha, e.g. 1/255; not given: eps/4 (2/255 at eps 8/255), the library's default")
      ->default_str("eps/4");
  app.add_option("--steps", cfg.steps, "PGD steps K during training")->check(integer_at_least(1))->capture_default_str();
  add_fraction(app, "--inv-eps", cfg.inv_eps, "Inverse budget epsilon' (IAT/UIAT), e.g. 4/255");
  add_fraction(app, "--inv-step-size", cfg.inv_step_size,
               "Inverse step alpha' (0 = the library's default: eps'/2 for IAT, eps' for UIAT; 2/255 and 4/255 at "
               "eps' 4/255)", 0, false);
  app.add_option("--inv-steps", cfg.inv_steps, "Inverse steps n (IAT)")->check(integer_at_least(1))->capture_default_str();
  app.add_option("--beta", cfg.beta, "Weight of the regulariser R in L_Inv (0 = plain CE)")->check(number_in(0, kInf))->capture_default_str();
  app.add_option("--lambda", cfg.lambda, "Weight of the alignment KL (3.5 CIFAR, 3.0 SVHN)")->check(number_in(0, kInf))->capture_default_str();
  app.add_option("--momentum-epoch", cfg.momentum_epoch, "Epoch T from which UIAT's inverse momentum is on (-1 = never)")
      ->check(integer_at_least(-1))->capture_default_str();
  app.add_option("--gamma", cfg.gamma, "Inverse momentum gamma")->check(number_in(0, 1, false, true))->capture_default_str();
  app.add_option("--one-off-epoch", cfg.one_off_epoch, "Epoch T' of the one-off strategy")->check(integer_at_least(0))->capture_default_str();
  app.add_option("--trades-beta", cfg.trades_beta, "TRADES beta")->check(number_in(0, kInf))->capture_default_str();
  app.add_option("--mart-beta", cfg.mart_beta, "MART beta")->check(number_in(0, kInf))->capture_default_str();
  app.add_option("--helper", cfg.helper,
                 "HAT: the standard model whose predictions label the helper examples, an iat-train run (folder or "
                 "checkpoint.pt) of --method standard on the same data")
      ->check(recordable_text("config.json"));
  app.add_option("--hat-beta", cfg.hat_beta, "HAT: weight of the TRADES term")->check(number_in(0, kInf))->capture_default_str();
  app.add_option("--hat-gamma", cfg.hat_gamma, "HAT: weight of the helper term")->check(number_in(0, kInf))->capture_default_str();
  app.add_option("--hat-scale", cfg.hat_scale, "HAT: h of the helper examples x + h (x' - x)")
      ->check(number_in(0, kInf))->capture_default_str();
  app.add_option("--grad-align-lambda", cfg.grad_align_lambda, "GradAlign weight")->check(number_in(0, kInf))->capture_default_str();
  app.add_option("--awp-gamma", cfg.awp_gamma,
                 "AWP around the method (docs/awp.md): relative size ||v_l|| / ||w_l|| of the weight perturbation "
                 "(0 = off; the AWP paper's 5e-3); methods pgd-at, trades, mart, uiat")
      ->check(number_in(0, 1))->capture_default_str();
  app.add_option("--awp-warmup", cfg.awp_warmup, "AWP: epochs without it at the start (counted from 0)")
      ->check(integer_at_least(0))->capture_default_str();
  app.add_option("--awp-proxy-lr", cfg.awp_proxy_lr, "AWP: learning rate of the ascent step (cancels in v but for its 1e-20 guard)")
      ->check(number_in(0, kInf, true))->capture_default_str();
  app.add_option("--eval-pgd-steps", cfg.eval_pgd_steps, "PGD steps of the per-epoch robust-accuracy check")->check(integer_at_least(1))->capture_default_str();

  app.add_option("--out", cfg.out, "Output folder: checkpoint.pt, metrics.jsonl, progress.jsonl, figure1.npz, model.pt, summary.json and the pictures (curves, figure1: PNG, SVG)")->capture_default_str();
  auto* resume_flag = app.add_flag("--resume", cfg.resume, "Continue the run in --out from its checkpoint (same settings)");
  auto* force_flag = app.add_flag("--resume-force", cfg.resume_force,
               "With --resume: continue even though settings that change results differ from the checkpoint's "
               "(each difference is printed and recorded in config.json and summary.json)");
  force_flag->needs(resume_flag);
  app.add_flag("--overwrite", cfg.overwrite, "Start over in an --out that holds a run (its outputs are replaced)")
      ->excludes(resume_flag)->excludes(force_flag);
  app.add_option("--device", cfg.device, "auto (CUDA when available), cpu, cuda or cuda:N")
      ->check(device_name())->capture_default_str();
  app.add_flag("--bf16", cfg.bf16, "bf16 autocast around every forward pass (CPU; CUDA compute capability >= 8.0)");
  app.add_flag("--channels-last", cfg.channels_last, "channels-last memory format for the model and the batches");
  app.add_option("--seed", cfg.seed, "Random seed (data order, initialisation, attacks)")->check(integer_at_least(0))->capture_default_str();
  app.add_option("--threads", cfg.threads, "CPU threads for LibTorch")->check(integer_at_least(1))->capture_default_str();
  app.add_option("--dist-timeout", cfg.dist_timeout,
                 "Under torchrun: seconds a rank waits for the others (rendezvous, every collective) before it stops "
                 "with an error, e.g. when another rank died")
      ->check(integer_at_least(1))->capture_default_str();
  app.add_flag("--plain-progress", cfg.plain_progress, "Plain progress lines even on a terminal");
  app.add_flag("--no-report", cfg.no_report,
               "Do not draw the pictures at the end (scripts/report.py RUN_DIR draws them later from the run's files)");
  app.add_option("--stop-after-steps", cfg.stop_after_steps, "Testing: stop after N optimiser steps as if interrupted (checkpoint written)")
      ->check(integer_at_least(0))->group("Testing");
  app.add_option("--inject-nan-at-step", cfg.inject_nan_at_step, "Testing: make the loss NaN at optimiser step N")
      ->check(integer_at_least(-1))->group("Testing");

  bool print_config = false;
  app.add_flag("--print-config", print_config, "Print the resolved settings (preset + flags) as JSON, and exit");

  // A preset fills the configuration first; flags given on the command line then override it.
  auto apply_preset = [&](const Preset& p) -> bool {
    std::vector<std::string> args;
    for (const auto& [flag, value] : p.values) {
      args.push_back("--" + flag);
      args.push_back(value);
    }
    std::reverse(args.begin(), args.end());  // CLI11 parses a vector given in reverse order
    try {
      app.parse(args);
      return true;
    } catch (const CLI::ParseError& e) {
      err << "iat-train: preset '" << p.name << "' is inconsistent: " << e.what() << "\n";
      return false;
    }
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    std::string name;
    if (a == "--preset" && i + 1 < argc) name = argv[i + 1];
    if (a.rfind("--preset=", 0) == 0) name = a.substr(9);
    // "--preset=" with nothing after it would make CLI11 take the next argument as the name, one this loop
    // never applied: the run would record a preset whose values it does not hold.
    if (name.empty() && (a == "--preset=" || (a == "--preset" && i + 1 < argc))) {
      err << "iat-train: --preset needs a preset's name; `iat-train --list-presets` lists them\n";
      return kExitUsage;
    }
    if (name.empty()) continue;
    auto it = std::find_if(all_presets.begin(), all_presets.end(), [&](const auto& p) { return p.name == name; });
    if (it == all_presets.end()) {
      err << "iat-train: unknown preset '" << name << "'; `iat-train --list-presets` lists them\n";
      return kExitUsage;
    }
    if (!apply_preset(*it)) return kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e, out, err);  // --help
    // Every usage error exits with the documented status 2 (CLI11's own codes are 105, 109, ...).
    err << "iat-train: " << e.what() << "\n(`iat-train --help` lists every flag with its default)\n";
    return kExitUsage;
  }
  resolve_defaults(cfg);
  const auto& awp = awp_methods();
  if (cfg.awp_gamma > 0 && std::find(awp.begin(), awp.end(), cfg.method) == awp.end()) {
    err << "iat-train: --awp-gamma " << cfg.awp_gamma << " is wired around the methods "
        << fmt::format("{}", fmt::join(awp, ", ")) << "; "
        << "--method " << cfg.method << " is not one of them yet (docs/awp.md); leave --awp-gamma out or at 0\n";
    return kExitUsage;
  }
  if (list_presets) {
    // Listing also checks that every preset parses.
    bool ok = true;
    for (const auto& p : all_presets) {
      out << p.name << "\n    " << p.description << "\n   ";
      for (const auto& [flag, value] : p.values) out << " --" << flag << " " << value;
      out << "\n";
      ok = apply_preset(p) && ok;
    }
    return ok ? 0 : kExitUsage;
  }
  if (print_config) {
    out << cfg.to_json().dump(2) << "\n";
    return 0;
  }
  // Flags that change nothing for this method or within these epochs: said, not silently ignored.
  const auto given = [&app](const std::string& flag) { return app.get_option(flag)->count() > 0; };
  for (const auto& w : unused_setting_warnings(cfg, given)) err << "iat-train: warning: " << w << "\n";
  if ((cfg.method == "hat") != !cfg.helper.empty()) {
    err << (cfg.method == "hat" ? "iat-train: --method hat needs --helper RUN: the standard model that labels its helper "
                                  "examples (train it first with --method standard on the same data)\n"
                                : "iat-train: --helper is the standard model of --method hat; --method " + cfg.method +
                                      " does not use it\n");
    return kExitUsage;
  }
  return kRunTraining;
}

}  // namespace iat_examples
