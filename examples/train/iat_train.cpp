// iat-train: adversarial training with iat's components, reproducing the paper's experiments.
//
//   iat-train --preset cifar10-uiat-prn18 --data-dir ~/data/cifar-10-batches-bin --out runs/c10-uiat
//   iat-train --preset fashion-pgd-at-cnn --out runs/demo/pgd-at
//   iat-train --list-presets
//
// Every method is one of the library's loss recipes (iat::train::*_loss); this program only runs the
// loop around them: data, optimiser, schedule, weight averaging, evaluation, checkpoints, progress,
// metrics and pictures. docs/reproduce.md lists the presets; `iat-train --help` explains every flag.

#include "config.hpp"
#include "trainer.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <csignal>
#include <iostream>
#include <limits>

namespace {

// A budget flag: a number or a fraction ("8/255") in [lo, hi] (lo excluded when lo_open).
CLI::Option* add_fraction(CLI::App& app, const std::string& flag, double& target, const std::string& help,
                          double lo = 0, bool lo_open = true, double hi = 1) {
  return app.add_option_function<std::string>(
         flag,
         [&target, flag, lo, lo_open, hi](const std::string& s) {
           const double v = iat_examples::parse_fraction(s, flag);
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

}  // namespace

int main(int argc, char** argv) {
  using iat_examples::TrainConfig;
  TrainConfig cfg;
  CLI::App app{"iat-train: adversarial training (PGD-AT, TRADES, MART, IAT, UIAT, one-off UIAT, single-step "
               "methods with and without UIAT) with iat's components"};
  app.get_formatter()->column_width(34);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a later flag wins

  bool list_presets = false;
  app.add_option("--preset", cfg.preset, "Start from a named experiment (see --list-presets); flags override it");
  app.add_flag("--list-presets", list_presets, "Print every preset with what it runs, and exit");
  using iat_examples::boolean;
  using iat_examples::integer_at_least;
  using iat_examples::number_in;
  using iat_examples::one_of;
  const double kInf = std::numeric_limits<double>::infinity();
  app.add_option("--method", cfg.method, "Training method")
      ->check(one_of(iat_examples::methods()))->capture_default_str();
  app.add_option("--data", cfg.dataset, "Dataset: cifar10, cifar100, svhn, fashion-mnist, mnist; synthetic (tiny, for tests) or "
                 "synthetic-cifar (3x32x32, for timing)")
      ->check(one_of({"cifar10", "cifar100", "svhn", "fashion-mnist", "mnist", "synthetic", "synthetic-cifar"}))
      ->capture_default_str();
  app.add_option("--data-dir", cfg.data_dir,
                 "Folder with the dataset's files (CIFAR binary version, SVHN .mat, IDX); fashion-mnist defaults "
                 "to Debian's /usr/share/datasets/fashion-mnist");
  app.add_option("--generated", cfg.generated, "A .npz of generated images (keys image, label) mixed into training");
  app.add_option("--gen-ratio", cfg.gen_ratio, "Original-to-generated ratio of a batch with --generated (0.3 = 3 original per 7 generated)")
      ->check(number_in(0, 1))->capture_default_str();
  app.add_option("--model", cfg.model, "Architecture: small-cnn, prn18, wrn-34-10, wrn-28-10 (any wrn-D-W)")
      ->check(iat_examples::model_name())->capture_default_str();
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
  app.add_option("--grad-align-lambda", cfg.grad_align_lambda, "GradAlign weight")->check(number_in(0, kInf))->capture_default_str();
  app.add_option("--eval-pgd-steps", cfg.eval_pgd_steps, "PGD steps of the per-epoch robust-accuracy check")->check(integer_at_least(1))->capture_default_str();

  app.add_option("--out", cfg.out, "Output folder: checkpoint.pt, metrics.jsonl, curves.png, figure1.png, model.pt, summary.json")->capture_default_str();
  auto* resume_flag = app.add_flag("--resume", cfg.resume, "Continue the run in --out from its checkpoint (same settings)");
  auto* force_flag = app.add_flag("--resume-force", cfg.resume_force,
               "With --resume: continue even though settings that change results differ from the checkpoint's "
               "(each difference is printed and recorded in config.json and summary.json)");
  force_flag->needs(resume_flag);
  app.add_flag("--overwrite", cfg.overwrite, "Start over in an --out that holds a run (its outputs are replaced)")
      ->excludes(resume_flag)->excludes(force_flag);
  app.add_option("--device", cfg.device, "auto (CUDA when available), cpu, cuda or cuda:N")
      ->check(iat_examples::device_name())->capture_default_str();
  app.add_flag("--bf16", cfg.bf16, "bf16 autocast around every forward pass (CPU; CUDA compute capability >= 8.0)");
  app.add_flag("--channels-last", cfg.channels_last, "channels-last memory format for the model and the batches");
  app.add_option("--seed", cfg.seed, "Random seed (data order, initialisation, attacks)")->check(integer_at_least(0))->capture_default_str();
  app.add_option("--threads", cfg.threads, "CPU threads for LibTorch")->check(integer_at_least(1))->capture_default_str();
  app.add_flag("--plain-progress", cfg.plain_progress, "Plain progress lines even on a terminal");
  app.add_option("--stop-after-steps", cfg.stop_after_steps, "Testing: stop after N optimiser steps as if interrupted (checkpoint written)")
      ->check(integer_at_least(0))->group("Testing");
  app.add_option("--inject-nan-at-step", cfg.inject_nan_at_step, "Testing: make the loss NaN at optimiser step N")
      ->check(integer_at_least(-1))->group("Testing");

  bool print_config = false;
  app.add_flag("--print-config", print_config, "Print the resolved settings (preset + flags) as JSON, and exit");

  // A preset fills the configuration first; flags given on the command line then override it.
  auto apply_preset = [&](const iat_examples::Preset& p) -> bool {
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
      std::cerr << "iat-train: preset '" << p.name << "' is inconsistent: " << e.what() << "\n";
      return false;
    }
  };
  const auto all_presets = iat_examples::presets();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string name;
    if (a == "--preset" && i + 1 < argc) name = argv[i + 1];
    if (a.rfind("--preset=", 0) == 0) name = a.substr(9);
    if (name.empty()) continue;
    auto it = std::find_if(all_presets.begin(), all_presets.end(), [&](const auto& p) { return p.name == name; });
    if (it == all_presets.end()) {
      std::cerr << "iat-train: unknown preset '" << name << "'; `iat-train --list-presets` lists them\n";
      return iat_examples::kExitUsage;
    }
    if (!apply_preset(*it)) return iat_examples::kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    // Every usage error exits with the documented status 2 (CLI11's own codes are 105, 109, ...).
    std::cerr << "iat-train: " << e.what() << "\n(`iat-train --help` lists every flag with its default)\n";
    return iat_examples::kExitUsage;
  }
  iat_examples::resolve_defaults(cfg);
  if (list_presets) {
    // Listing also checks that every preset parses.
    bool ok = true;
    for (const auto& p : all_presets) {
      std::cout << p.name << "\n    " << p.description << "\n   ";
      for (const auto& [flag, value] : p.values) std::cout << " --" << flag << " " << value;
      std::cout << "\n";
      ok = apply_preset(p) && ok;
    }
    return ok ? 0 : iat_examples::kExitUsage;
  }
  if (print_config) {
    std::cout << cfg.to_json().dump(2) << "\n";
    return 0;
  }

  iat_examples::install_stop_handlers();
  try {
    return iat_examples::Trainer(cfg).run();
  } catch (const c10::Error& e) {
    std::cerr << "iat-train: error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "iat-train: error: " << e.what() << "\n";
    return 1;
  }
}
