#pragma once
// iat-train's configuration: every flag, its default, and the presets that name the paper's experiments.

#include <iat/models/zoo.hpp>

#include "../common/cli.hpp"
#include "../common/recordable_text.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace iat_examples {

/// All of iat-train's settings. Defaults are the supplement's CIFAR-10 PRN-18 UIAT run (docs/method.md §8); a
/// preset overwrites some of them, and any flag given on the command line overwrites the preset.
struct TrainConfig {
  // What to train.
  std::string method = "uiat";       // see kMethods
  std::string dataset = "cifar10";   // cifar10, cifar100, svhn, fashion-mnist, mnist, synthetic
  std::string data_dir;              // folder holding the dataset's files
  std::string generated;             // .npz of generated images (DDPM), mixed in at gen_ratio
  double gen_ratio = 0.3;            // original : generated = 0.3 means 3 original per 7 generated
  std::string model = "prn18";       // small-cnn, prn18, wrn-34-10, wrn-28-10
  std::string activation = "relu";   // relu, silu
  bool augment = true;               // random crop (pad 4) + flip
  int64_t train_subset = 0;          // use only the first N training examples (0 = all)
  int64_t test_subset = 1000;        // held-out test examples evaluated every epoch
  // Optimisation.
  int64_t epochs = 100;
  int64_t batch_size = 128;
  double max_lr = 0.1;
  double momentum = 0.9;
  bool nesterov = true;
  double weight_decay = 5e-4;
  double ema_decay = 0.0;            // 0 = no weight averaging; 0.995 with generated data
  // The adversary (docs/method.md §1).
  double eps = 8.0 / 255;
  double step_size = 0.0;            // 0 = not given: eps/4 (2/255 at 8/255), resolved by resolve_defaults()
  int64_t steps = 10;
  // The inverse adversary (docs/method.md §2, §4).
  double inv_eps = 4.0 / 255;
  double inv_step_size = 0.0;        // 0 = the library's default: eps'/2 for IAT's inverse attack, eps' for UIAT
                                     //     (the paper's 2/255 and 4/255 at eps' = 4/255)
  int64_t inv_steps = 5;
  double beta = 1.0;                 // weight of R in L_Inv
  double lambda = 3.5;               // weight of the alignment KL
  int64_t momentum_epoch = 75;       // T: inverse momentum on from this epoch (-1: never)
  double gamma = 0.9;                // inverse momentum
  int64_t one_off_epoch = 80;        // T' of the one-off strategy
  double trades_beta = 6.0;
  double mart_beta = 6.0;
  // HAT (docs/method.md §7.2): the standard model giving the helper labels, and the weights.
  std::string helper;                // an iat-train run (folder or checkpoint) of --method standard
  double hat_beta = 2.5;
  double hat_gamma = 0.5;
  double hat_scale = 2.0;            // h: helper examples x + h (x' - x)
  double grad_align_lambda = 0.2;
  // Adversarial weight perturbation around the method (docs/awp.md): 0 = off.
  double awp_gamma = 0.0;
  int64_t awp_warmup = 10;           // epochs 0 ... awp_warmup - 1 without AWP
  double awp_proxy_lr = 0.01;
  // Evaluation during training.
  int64_t eval_pgd_steps = 10;       // PGD-k accuracy on the held-out subset every epoch
  // Running.
  std::string out = "runs/train";
  bool resume = false;
  bool resume_force = false;         // --resume even when result-relevant settings differ (stated and recorded)
  bool overwrite = false;            // start over in an --out that holds a run
  std::string device = "auto";       // auto, cpu, cuda, cuda:N
  bool bf16 = false;
  bool channels_last = false;
  uint64_t seed = 0;
  int threads = 1;
  int64_t dist_timeout = 300;        // seconds a rank waits for the others under torchrun before it stops
  bool plain_progress = false;
  bool no_report = false;            // do not run the report tool (scripts/report.py) at the end
  // For tests: stop (as if interrupted) after this many optimiser steps; make the loss NaN at a step.
  int64_t stop_after_steps = 0;
  int64_t inject_nan_at_step = -1;
  std::string preset;

  nlohmann::json to_json() const {
    return {{"method", method},       {"dataset", dataset},         {"generated", generated},
            {"gen_ratio", gen_ratio}, {"model", model},             {"activation", activation},
            {"augment", augment},     {"train_subset", train_subset}, {"test_subset", test_subset},
            {"epochs", epochs},       {"batch_size", batch_size},   {"max_lr", max_lr},
            {"momentum", momentum},   {"nesterov", nesterov},       {"weight_decay", weight_decay},
            {"ema_decay", ema_decay}, {"eps", eps},                 {"step_size", step_size},
            {"steps", steps},         {"inv_eps", inv_eps},         {"inv_step_size", inv_step_size},
            {"inv_steps", inv_steps}, {"beta", beta},               {"lambda", lambda},
            {"momentum_epoch", momentum_epoch}, {"gamma", gamma},   {"one_off_epoch", one_off_epoch},
            {"trades_beta", trades_beta}, {"mart_beta", mart_beta}, {"grad_align_lambda", grad_align_lambda},
            {"awp_gamma", awp_gamma}, {"awp_warmup", awp_warmup},   {"awp_proxy_lr", awp_proxy_lr},
            {"helper", helper},       {"hat_beta", hat_beta},       {"hat_gamma", hat_gamma},
            {"hat_scale", hat_scale},
            {"eval_pgd_steps", eval_pgd_steps}, {"seed", seed},     {"preset", preset},
            {"bf16", bf16},           {"channels_last", channels_last}};
  }
};

/// Fills in the defaults that follow other settings, once the preset and the flags are parsed: a PGD
/// step size not given is ε/4, the library's rule (iat::PGDOptions), so that config.json and the
/// checkpoint record the value in force.
inline void resolve_defaults(TrainConfig& cfg) {
  if (cfg.step_size <= 0) cfg.step_size = cfg.eps / 4;
}

/// Settings in to_json() that do not change a run's results, so a checkpoint does not bind them: the
/// preset's name (its values are bound one by one) and the paths of --generated and --helper (their content
/// is bound).
/// The operational flags (--out, --data-dir, --threads, --plain-progress, --no-report, --resume, --overwrite,
/// the testing flags) are not in to_json() at all. Everything else a checkpoint binds: `--resume` refuses a
/// run whose values differ.
inline const std::vector<std::string>& unbound_settings() {
  static const std::vector<std::string> keys = {"preset", "generated", "helper"};
  return keys;
}

/// The settings a checkpoint binds: every setting of to_json() except unbound_settings().
inline nlohmann::json bound_settings(const TrainConfig& cfg) {
  auto j = cfg.to_json();
  for (const auto& key : unbound_settings()) j.erase(key);
  return j;
}

/// Settings added to to_json() after checkpoints were first written, with the value that older checkpoints,
/// which do not record them, ran with (AWP off): --resume compares with these instead of "not recorded".
inline const nlohmann::json& settings_added_later() {
  static const nlohmann::json j = {{"awp_gamma", 0.0}, {"awp_warmup", 10}, {"awp_proxy_lr", 0.01},
                                   {"hat_beta", 2.5}, {"hat_gamma", 0.5},  {"hat_scale", 2.0}};
  return j;
}

/// The methods whose recipe AWP is wired around in iat-train (docs/awp.md §7): those whose state, if any,
/// a scratch copy keeps out of the ascent.
inline const std::vector<std::string>& awp_methods() {
  static const std::vector<std::string> m = {"pgd-at", "trades", "mart", "uiat", "trades-uiat"};
  return m;
}

/// The command-line flag of a to_json() key ("batch_size" -> "--batch-size", "dataset" -> "--data").
inline std::string flag_of(const std::string& key) {
  if (key == "dataset") return "--data";
  std::string flag = "--" + key;
  std::replace(flag.begin(), flag.end(), '_', '-');
  return flag;
}

/// The training methods, each one of the library's loss recipes ("standard": no adversary, the helper model
/// "hat" needs).
inline const std::vector<std::string>& methods() {
  static const std::vector<std::string> m = {"pgd-at",  "trades",    "mart",         "iat",
                                             "uiat",    "uiat-one-off", "trades-uiat", "fgsm-rs",  "n-fgsm",
                                             "gradalign", "fgsm-rs-uiat", "n-fgsm-uiat", "gradalign-uiat",
                                             "standard", "hat"};
  return m;
}

/// Whether --method `m` is a single-step method (fgsm-rs, n-fgsm, gradalign and their -uiat forms).
inline bool is_single_step_method(const std::string& m) {
  return m.rfind("fgsm-rs", 0) == 0 || m.rfind("n-fgsm", 0) == 0 || m.rfind("gradalign", 0) == 0;
}

/// Whether --method `m` trains with a universal inverse perturbation δ_y (uiat, trades-uiat, the -uiat forms
/// of the single-step methods; not uiat-one-off, whose inverse examples are per example).
inline bool uses_universal_perturbation(const std::string& m) {
  return m == "uiat" || m == "trades-uiat" || (is_single_step_method(m) && m.find("-uiat") != std::string::npos);
}

/// The flags of iat-train that only some methods read (every other flag applies to all of them; the inverse
/// attack's --inv-eps, --inv-step-size, --inv-steps and --beta also draw figure1 for every method), with the
/// methods that read each. iat-train warns when one is given on the command line to another method.
struct MethodFlag {
  const char* flag;
  bool (*used_by)(const std::string& method);
  const char* users;
};

inline const std::vector<MethodFlag>& method_flags() {
  static const std::vector<MethodFlag> flags = {
      {"--steps", [](const std::string& m) { return !is_single_step_method(m) && m != "standard"; },
       "the PGD-trained methods (not standard or the single-step ones)"},
      {"--step-size", [](const std::string& m) { return !is_single_step_method(m) && m != "standard"; },
       "the PGD-trained methods (not standard or the single-step ones)"},
      {"--lambda",
       [](const std::string& m) { return m == "iat" || m == "uiat-one-off" || uses_universal_perturbation(m); },
       "iat, uiat-one-off and the UIAT methods"},
      {"--momentum-epoch", [](const std::string& m) { return uses_universal_perturbation(m); }, "the UIAT methods"},
      {"--gamma", [](const std::string& m) { return uses_universal_perturbation(m); }, "the UIAT methods"},
      {"--one-off-epoch", [](const std::string& m) { return m == "uiat-one-off"; }, "uiat-one-off"},
      {"--trades-beta", [](const std::string& m) { return m == "trades" || m == "trades-uiat"; }, "trades, trades-uiat"},
      {"--mart-beta", [](const std::string& m) { return m == "mart"; }, "mart"},
      {"--hat-beta", [](const std::string& m) { return m == "hat"; }, "hat"},
      {"--hat-gamma", [](const std::string& m) { return m == "hat"; }, "hat"},
      {"--hat-scale", [](const std::string& m) { return m == "hat"; }, "hat"},
      {"--grad-align-lambda", [](const std::string& m) { return m.rfind("gradalign", 0) == 0; },
       "gradalign, gradalign-uiat"},
  };
  return flags;
}

/// What iat-train warns about before it trains: each flag given (`given(flag)`: on the command line, not by
/// a preset) that --method does not read, and each schedule that can never start within --epochs (the
/// one-off epoch T', the momentum epoch T, AWP's warm-up). One line per finding, without the prefix.
template <class Given>
std::vector<std::string> unused_setting_warnings(const TrainConfig& cfg, const Given& given) {
  std::vector<std::string> out;
  for (const auto& f : method_flags()) {
    if (given(f.flag) && !f.used_by(cfg.method)) {
      out.push_back(std::string(f.flag) + " has no effect with --method " + cfg.method + " (it is read by " + f.users +
                    " only)");
    }
  }
  if (cfg.method == "uiat-one-off" && cfg.one_off_epoch >= cfg.epochs) {
    out.push_back("--one-off-epoch " + std::to_string(cfg.one_off_epoch) + " >= --epochs " + std::to_string(cfg.epochs) +
                  ": epoch T' never comes, so no inverse example is stored or reused and uiat-one-off trains as IAT "
                  "does throughout; give --one-off-epoch below " + std::to_string(cfg.epochs));
  }
  if (uses_universal_perturbation(cfg.method) && given("--momentum-epoch") && cfg.momentum_epoch >= cfg.epochs) {
    out.push_back("--momentum-epoch " + std::to_string(cfg.momentum_epoch) + " >= --epochs " +
                  std::to_string(cfg.epochs) + ": the inverse momentum never turns on");
  }
  if (cfg.awp_gamma > 0 && cfg.awp_warmup >= cfg.epochs) {
    out.push_back("--awp-warmup " + std::to_string(cfg.awp_warmup) + " >= --epochs " + std::to_string(cfg.epochs) +
                  ": the weight perturbation of --awp-gamma never runs; give --awp-warmup below " +
                  std::to_string(cfg.epochs));
  }
  if (cfg.awp_gamma == 0) {
    for (const char* flag : {"--awp-warmup", "--awp-proxy-lr"}) {
      if (given(flag)) out.push_back(std::string(flag) + " has no effect without --awp-gamma > 0");
    }
  }
  return out;
}

/// A preset: a name, what it reproduces, and flag values as they would be typed.
struct Preset {
  std::string name;
  std::string description;
  std::map<std::string, std::string> values;
};

/// Exit codes: 0 finished; 1 the run cannot go ahead with these files (--out unusable or holding another
/// run, data missing or damaged, checkpoint missing, corrupt or written with other settings, a failed
/// write such as a full disk); 2 bad command line (unknown flag, malformed or out-of-range value, flags
/// that exclude each other: kExitUsage, common/cli.hpp); 3 non-finite loss; 130 stopped by a signal or
/// --stop-after-steps (kExitStopped).
constexpr int kExitError = 1;
constexpr int kExitNonFinite = 3;

/// Every experiment of the supplement, plus the Fashion-MNIST demo runs. Names:
/// <dataset>-<method>-<model>, e.g. cifar10-uiat-prn18, svhn-pgd-at-wrn34, cifar10-ddpm-uiat-wrn28.
inline std::vector<Preset> presets() {
  std::vector<Preset> out;
  struct Data { std::string name; std::string epochs; std::string step; std::string lambda; std::string T, T1; };
  // docs/method.md §8.4: CIFAR 100 epochs (T = 75, T' = 80), α not set (ε/4 = 2/255 at ε = 8/255, and it follows
  // --eps); SVHN 30 epochs, α = 1/255, λ = 3.0 (T and T' at the same fractions of training: 22 and 24).
  const std::vector<Data> datasets = {{"cifar10", "100", "", "3.5", "75", "80"},
                                      {"cifar100", "100", "", "3.5", "75", "80"},
                                      {"svhn", "30", "1/255", "3.0", "22", "24"}};
  const std::vector<std::pair<std::string, std::string>> models = {{"prn18", "prn18"}, {"wrn34", "wrn-34-10"}};
  // A supplement §8 row; with AWP (docs/awp.md): a weight perturbation of gamma = 5e-3 from epoch 10, the AWP
  // authors' defaults, around the same method and settings.
  auto paper_row = [](const Data& d, const std::string& short_name, const std::string& arch, const std::string& m,
                      bool awp) {
    Preset p{d.name + "-" + m + (awp ? "-awp-" : "-") + short_name,
             m + (awp ? " + AWP (gamma 5e-3, from epoch 10)" : "") + " on " + d.name + " with " + arch +
                 " (supplement §8 settings)",
             {{"data", d.name}, {"method", m}, {"model", arch}, {"epochs", d.epochs},
              {"lambda", d.lambda}, {"momentum-epoch", d.T}, {"one-off-epoch", d.T1}}};
    if (!d.step.empty()) p.values["step-size"] = d.step;
    if (d.name == "svhn") p.values["augment"] = "false";
    if (awp) p.values["awp-gamma"] = "5e-3";
    if (m == "hat") p.description += "; needs --helper RUN, a run of the " + d.name + "-standard-" + short_name + " preset";
    if (m == "standard") p.description = "standard (natural) training on " + d.name + " with " + arch + ", HAT's helper model";
    return p;
  };
  for (const auto& d : datasets) {
    for (const auto& [short_name, arch] : models) {
      for (const auto& m : methods()) out.push_back(paper_row(d, short_name, arch, m, false));
      for (const std::string m : {"pgd-at", "trades", "uiat"}) out.push_back(paper_row(d, short_name, arch, m, true));
    }
  }
  // With 1M DDPM images (supplement §1.2): SiLU PRN-18 or WRN-28-10, batch 512, 400 CIFAR-10-equivalent
  // epochs, max lr 0.2, EMA 0.995, T = 350, T' = 320, original:generated 0.3 (C10) / 0.4 (C100).
  for (const auto& [name, ratio] : std::vector<std::pair<std::string, std::string>>{{"cifar10", "0.3"}, {"cifar100", "0.4"}}) {
    for (const auto& [short_name, arch] : std::vector<std::pair<std::string, std::string>>{{"prn18", "prn18"}, {"wrn28", "wrn-28-10"}}) {
      for (const std::string m : {"pgd-at", "trades", "iat", "uiat", "uiat-one-off"}) {
        out.push_back({name + "-ddpm-" + m + "-" + short_name,
                       m + " on " + name + " + 1M DDPM images with " + arch + " SiLU (needs --generated FILE.npz)",
                       {{"data", name}, {"method", m}, {"model", arch}, {"activation", "silu"},
                        {"epochs", "400"}, {"batch-size", "512"}, {"max-lr", "0.2"}, {"ema-decay", "0.995"},
                        {"gen-ratio", ratio}, {"momentum-epoch", "350"}, {"one-off-epoch", "320"}}});
      }
    }
  }
  // The demo: a small CNN on Fashion-MNIST, ε = 0.1 (α = 0.025, 5 steps), 2 epochs over the first 30 000
  // training images: about 5 minutes per method on one CPU core. T = T' = 1 (the second of two epochs).
  for (const std::string m : {"pgd-at", "uiat", "trades", "mart", "iat", "uiat-one-off", "fgsm-rs", "fgsm-rs-uiat"}) {
    out.push_back({"fashion-" + m + "-cnn", m + " on Fashion-MNIST with the small CNN, eps = 0.1 (the demo)",
                   {{"data", "fashion-mnist"}, {"method", m}, {"model", "small-cnn"}, {"epochs", "2"},
                    {"train-subset", "30000"}, {"eps", "0.1"}, {"step-size", "0.025"}, {"steps", "5"},
                    {"inv-eps", "0.05"}, {"inv-step-size", m == "iat" ? "0.025" : "0.05"}, {"augment", "false"},
                    {"max-lr", "0.05"}, {"lambda", "3.5"}, {"momentum-epoch", "1"}, {"one-off-epoch", "1"},
                    {"test-subset", "1000"}, {"eval-pgd-steps", "10"}}});
  }
  // The long demo (scripts/demo.sh --long, docs/reproduce.md): the same model and budget on the full 60 000
  // training images for 5 epochs, one-cycle lr; T = 3 and T' = 4 put momentum and the one-off cache in the
  // second half of training as the paper's T = 75, T' = 80 of 100 do. With AWP: from epoch 1 (the authors'
  // warm-up of 10 epochs is for 200; 5 epochs with 10 of warm-up would never perturb).
  for (const std::string m : {"pgd-at", "uiat", "trades", "mart", "iat", "uiat-one-off", "fgsm-rs", "fgsm-rs-uiat"}) {
    for (bool awp : {false, true}) {
      if (awp && m != "pgd-at" && m != "trades" && m != "uiat") continue;
      Preset p{"fashion-" + m + (awp ? "-awp" : "") + "-cnn-long",
               m + (awp ? " + AWP (gamma 5e-3, from epoch 1)" : "") +
                   " on Fashion-MNIST with the small CNN, eps = 0.1, 5 epochs over 60 000 images (the long demo)",
               {{"data", "fashion-mnist"}, {"method", m}, {"model", "small-cnn"}, {"epochs", "5"},
                {"eps", "0.1"}, {"step-size", "0.025"}, {"steps", "5"},
                {"inv-eps", "0.05"}, {"inv-step-size", m == "iat" ? "0.025" : "0.05"}, {"augment", "false"},
                {"max-lr", "0.05"}, {"lambda", "3.5"}, {"momentum-epoch", "3"}, {"one-off-epoch", "4"},
                {"test-subset", "1000"}, {"eval-pgd-steps", "10"}}};
      if (awp) {
        p.values["awp-gamma"] = "5e-3";
        p.values["awp-warmup"] = "1";
      }
      out.push_back(p);
    }
  }
  return out;
}

/// An architecture iat::models::make_model() builds: small-cnn, prn18 or wrn-<depth>-<width>.
inline CLI::Validator model_name() {
  return CLI::Validator([](std::string& text) { return iat::models::architecture_problem(text); }, "MODEL");
}

}  // namespace iat_examples
