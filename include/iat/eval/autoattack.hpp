#pragma once
/// \file
/// iat::eval::AutoAttack: robust accuracy as AutoAttack (Croce & Hein 2020, fra31/auto-attack) computes
/// it — APGD-CE, APGD-T, FAB-T and Square (standard version), each run only on the points still robust,
/// from the clean input, with success re-checked on the model — plus the `plus`, `rand` and custom
/// versions, the reference's sanity checks as warnings, and resumable runs whose state file is bound to
/// the settings, the model and the points it was written for.

#include <iat/attacks/apgd.hpp>
#include <iat/attacks/attack.hpp>
#include <iat/attacks/fab.hpp>
#include <iat/attacks/square.hpp>
#include <iat/detail/archive_checksum.hpp>
#include <iat/attacks/detail/autoattack.hpp>
#include <iat/detail/compat.hpp>
#include <iat/detail/compiled.hpp>
#include <iat/detail/file_io.hpp>
#include <iat/model_ref.hpp>
#include <iat/options_field.hpp>
#include <iat/threat_model.hpp>

#include <torch/arg.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/types.h>

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace iat {
namespace eval {

/// Which attacks AutoAttack runs, with which settings (docs/evaluation.md, "The attacks").
enum class AutoAttackVersion {
  kStandard,  ///< apgd-ce (1 restart), apgd-t (9 targets), fab-t (9 targets), square (5000 queries)
  kPlus,      ///< apgd-ce, apgd-dlr (5 restarts), fab (5 restarts), square, apgd-t, fab-t
  kRand,      ///< apgd-ce, apgd-dlr with EoT over 20 gradient samples, for randomised defences
  kCustom,    ///< the `attacks` list, with the reference's constructor defaults (APGD and FAB 5 restarts)
};

/// Where an evaluation stands after one attack batch: what the `on_batch` callback receives.
struct AutoAttackProgress {
  std::string attack;   ///< the attack running
  int64_t batch = 0;    ///< batches of this attack done (1-based)
  int64_t batches = 0;  ///< batches of this attack in all
  int64_t robust = 0;   ///< points still robust
};

/// What one process of a sharded evaluation holds after running its batches of one attack, or of one round
/// of it with a state file (iat::distributed::sharded_autoattack fills `AutoAttackOptions::shard_merge`
/// with a function that combines these over the ranks in place). Rows outside this process's batches still
/// hold the values of the start of the attack (or round). The clean pass and the final re-check are merged
/// the same way, with `robust` holding the correct predictions (true on other processes' rows) and `x_adv`
/// undefined (flags only).
struct AutoAttackShardMerge {
  torch::Tensor attacked;   ///< int64 [M]: the indices whose flags are merged (every rank's batches)
  torch::Tensor robust;     ///< bool [N], updated in place
  torch::Tensor adv_mask;   ///< bool [N]: points with an adversarial example, updated in place
  torch::Tensor nonfinite;  ///< bool [N], updated in place
  torch::Tensor x_adv;      ///< [N, ...]: adversarial examples, updated in place (undefined: flags only)
  int64_t zero_grad_points = 0;  ///< this attack's count on this process; the merge makes it the total
  double seconds = 0;            ///< this process's time; the merge makes it the slowest rank's
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
/// auto resumable = iat::eval::AutoAttackOptions().state_path("aa.state").model_id("net.pt sha 1f2e…");
/// \endcode
struct AutoAttackOptions : ThreatModelOptions<AutoAttackOptions> {
  // norm (L∞ or L2) and eps (8/255): ThreatModelOptions.
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
  TORCH_ARG(iat::optional<torch::Device>, device) = iat::nullopt;
  /// A state file (settings, robust flags, adversarial examples found, progress), rewritten atomically
  /// after every batch: an interrupted run continues from it (empty: no state file). A file written
  /// under other settings is refused (see `state_mismatch_ok`). Sharded (shard_count > 1), the processes
  /// combine their results after every round of shard_count consecutive batches (one per process) and
  /// shard_index 0 writes it then, after the clean pass and after each attack; every process reads it at the
  /// start (the same file: iat::distributed::sharded_autoattack checks). A run with any number of processes
  /// resumes from a file any other one wrote.
  TORCH_ARG(std::string, state_path) = "";
  /// What identifies the model, bound into the state file (e.g. a hash of the model file, as iat-eval
  /// passes); empty: not recorded (the clean predictions are still compared on resume).
  TORCH_ARG(std::string, model_id) = "";
  /// Resume from a state file even when it was written under other settings (each difference becomes a
  /// warning and is listed in `report.state_mismatch`). A different number of points is always refused.
  TORCH_ARG(bool, state_mismatch_ok) = false;
  /// Points whose logits are non-finite (NaN, ±inf) in the clean pass or a re-check count as broken
  /// (non-robust) instead of stopping the evaluation with a c10::EnforceFiniteError.
  TORCH_ARG(bool, nonfinite_as_broken) = false;
  /// Progress messages (one line each); unset: silent.
  TORCH_ARG(std::function<void(const std::string&)>, log) = nullptr;
  /// Called after every attack batch, once the state file holds it (sharded: after the merge that takes
  /// this process's batch in, each round's with a state file and the attack's end without one, with
  /// `robust` counted over every process's batches); an exception thrown here stops the run with the state
  /// file consistent (a later run resumes from the next batch; sharded: from the next round, when every
  /// process stops at the same round).
  TORCH_ARG(std::function<void(const AutoAttackProgress&)>, on_batch) = nullptr;
  /// APGD iterations (standard: 100).
  TORCH_ARG(int64_t, apgd_steps) = 100;
  /// FAB iterations (standard: 100).
  TORCH_ARG(int64_t, fab_steps) = 100;
  /// Square queries (standard: 5000).
  TORCH_ARG(int64_t, square_queries) = 5000;
  /// Target classes of APGD-T and FAB-T (standard: 9; capped at classes − 1 with a warning).
  TORCH_ARG(int64_t, n_target_classes) = 9;
  /// Sharding hook (set by iat::distributed::sharded_autoattack, docs/distributed.md): this process runs
  /// the attack batches b with b % shard_count == shard_index, and `shard_merge` combines the processes'
  /// results after each attack (with a state file: after each round of shard_count batches). Every batch
  /// is seeded as in one process, so the results are the same.
  TORCH_ARG(int64_t, shard_index) = 0;
  /// Number of processes sharing the attack batches (1: no sharding).
  TORCH_ARG(int64_t, shard_count) = 1;
  /// Combines the processes' results after each attack or round (required when shard_count > 1).
  TORCH_ARG(std::function<void(AutoAttackShardMerge&)>, shard_merge) = nullptr;
};

/// One attack's line in the report.
struct AutoAttackStep {
  std::string attack;        ///< "apgd-ce", "apgd-t", …
  int64_t attacked = 0;      ///< points it ran on (still robust before it)
  int64_t robust = 0;        ///< points robust after it
  double robust_accuracy = 0;  ///< robust / all points
  double seconds = 0;        ///< wall time of the attack (over all runs when resumed)
  bool resumed = false;      ///< done (or partly done) in an earlier run, taken from the state file
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
  bool nonfinite_as_broken = false;       ///< the option: non-finite logits counted as broken
  int64_t nonfinite_points = 0;           ///< points counted broken because their logits were non-finite
  torch::Tensor nonfinite;                ///< bool [N]: those points
  bool resumed = false;                   ///< continued from the state file
  std::vector<std::string> state_mismatch;  ///< settings that differed from the state file's, accepted
                                            ///< with state_mismatch_ok (also those of earlier runs)
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

inline std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  size_t begin = 0;
  while (true) {
    const auto end = s.find(sep, begin);
    out.push_back(s.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  return out;
}

inline std::string percent(double v) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(2);
  s << 100.0 * v << "%";
  return s.str();
}

inline std::string exact(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

/// The resumable state of an evaluation (format 2): the settings it was made under, the clean
/// predictions, the robust flags, the adversarial examples found so far, each finished attack's flags
/// and time, and the progress inside the attack that was running.
struct AutoAttackState {
  static constexpr const char* kFormat = "iat-autoattack-state 2";

  struct Done {
    std::string attack;
    int64_t attacked = 0;
    double seconds = 0;
    torch::Tensor flags;  // bool [N] after it
  };

  std::vector<std::pair<std::string, std::string>> settings;  // name, value
  std::vector<std::string> forced;  // differences accepted with state_mismatch_ok, by this or earlier runs
  torch::Tensor clean;              // bool [N]: correct on the clean input
  torch::Tensor robust;             // bool [N]
  torch::Tensor nonfinite;          // bool [N]: counted broken for non-finite logits
  torch::Tensor adv_mask;           // bool [N]: x_adv comes from an attack
  torch::Tensor x_adv;              // float [N, ...]; only the rows of adv_mask are stored
  std::vector<Done> done;
  std::string current;              // the attack in progress ("" between attacks)
  torch::Tensor current_start;      // bool [N]: robust flags when it started
  int64_t current_batches = 0;      // its batches done
  double current_seconds = 0;
  int64_t zero_grad_points = 0;

  bool is_done(const std::string& attack) const {
    return std::any_of(done.begin(), done.end(), [&](const Done& d) { return d.attack == attack; });
  }

  void save(const std::string& path) const {
    const char* who = "iat::eval::AutoAttack";
    torch::serialize::OutputArchive a;
    auto put = [&](const std::string& key, const c10::IValue& v) { a.write(key, v); };
    put("format", c10::IValue(std::string(kFormat)));
    std::vector<std::string> keys;
    for (const auto& [k, v] : settings) {
      keys.push_back(k);
      put("setting." + k, c10::IValue(v));
    }
    put("setting_keys", c10::IValue(join(keys, ",")));
    put("forced", c10::IValue(join(forced, "\n")));
    put("clean", c10::IValue(clean));
    put("robust", c10::IValue(robust));
    put("nonfinite", c10::IValue(nonfinite));
    auto rows = iat::detail::true_indices(adv_mask.to(torch::kCPU));
    put("adv_index", c10::IValue(rows));
    put("adv_rows", c10::IValue(x_adv.index_select(0, rows.to(x_adv.device())).to(torch::kCPU).contiguous()));
    put("done_count", c10::IValue(static_cast<int64_t>(done.size())));
    for (size_t i = 0; i < done.size(); ++i) {
      const std::string p = "done." + std::to_string(i) + ".";
      put(p + "attack", c10::IValue(done[i].attack));
      put(p + "attacked", c10::IValue(done[i].attacked));
      put(p + "seconds", c10::IValue(done[i].seconds));
      put(p + "flags", c10::IValue(done[i].flags));
    }
    put("current", c10::IValue(current));
    put("current_start", c10::IValue(current_start.defined() ? current_start : robust));
    put("current_batches", c10::IValue(current_batches));
    put("current_seconds", c10::IValue(current_seconds));
    put("zero_grad_points", c10::IValue(zero_grad_points));
    // With a CRC-32 of its bytes: LibTorch's archive reader only ever sees a state file that is whole.
    iat::detail::write_archive_atomically(who, a, path);
  }

  /// Reads `path`; false when there is no such file. `x_clean` gives the shape of x_adv and the clean
  /// rows where no adversarial example is stored.
  static bool load(const std::string& path, const torch::Tensor& x_clean, AutoAttackState& out) {
    const char* who = "iat::eval::AutoAttack";
    {
      std::ifstream probe(path, std::ios::binary);
      if (!probe.good()) return false;
      std::string first;
      std::getline(probe, first);
      TORCH_CHECK_VALUE(first != "iat-autoattack-state 1", who, ": the state file '", path,
                        "' has format 1 (an older iat), which records neither the settings it was made under "
                        "nor the adversarial examples found; it cannot be resumed safely: delete it or use "
                        "another state path");
    }
    // Checksum first (a truncated or damaged file stops here, naming itself), then LibTorch's reader.
    auto a = iat::detail::load_verified_archive(who, path, nullptr, /*require_checksum=*/true,
                                                "an iat AutoAttack state file");
    auto get = [&](const std::string& key) {
      c10::IValue v;
      TORCH_CHECK_VALUE(a.try_read(key, v), who, ": the state file '", path, "' lacks '", key,
                        "' (damaged, or not an iat AutoAttack state file)");
      return v;
    };
    auto format = get("format");
    TORCH_CHECK_VALUE(format.isString() && format.toStringRef() == kFormat, who, ": '", path,
                      "' is not an iat AutoAttack state file of format 2 (format '",
                      format.isString() ? format.toStringRef() : std::string("?"), "')");
    auto str = [&](const std::string& key) {
      auto v = get(key);
      TORCH_CHECK_VALUE(v.isString(), who, ": the state file '", path, "': '", key, "' is not a string");
      return v.toStringRef();
    };
    auto integer = [&](const std::string& key) {
      auto v = get(key);
      TORCH_CHECK_VALUE(v.isInt(), who, ": the state file '", path, "': '", key, "' is not an integer");
      return v.toInt();
    };
    auto real = [&](const std::string& key) {
      auto v = get(key);
      TORCH_CHECK_VALUE(v.isDouble(), who, ": the state file '", path, "': '", key, "' is not a number");
      return v.toDouble();
    };
    auto tensor = [&](const std::string& key, c10::ScalarType dtype, int64_t dim) {
      auto v = get(key);
      TORCH_CHECK_VALUE(v.isTensor() && v.toTensor().scalar_type() == dtype && v.toTensor().dim() == dim, who,
                        ": the state file '", path, "': '", key, "' is not a ", c10::toString(dtype), " tensor of ",
                        dim, " dimension(s)");
      return v.toTensor();
    };
    for (const auto& k : split(str("setting_keys"), ',')) out.settings.emplace_back(k, str("setting." + k));
    out.forced = split(str("forced"), '\n');
    out.clean = tensor("clean", torch::kBool, 1);
    out.robust = tensor("robust", torch::kBool, 1);
    out.nonfinite = tensor("nonfinite", torch::kBool, 1);
    const int64_t n = out.robust.size(0);
    auto index = tensor("adv_index", torch::kLong, 1);
    auto rows = get("adv_rows");
    TORCH_CHECK_VALUE(rows.isTensor(), who, ": the state file '", path, "': 'adv_rows' is not a tensor");
    out.adv_mask = torch::zeros({n}, torch::kBool);
    out.x_adv = x_clean.to(torch::kCPU).clone();
    if (n == x_clean.size(0) && index.numel() > 0) {
      auto r = rows.toTensor();
      TORCH_CHECK_VALUE(index.min().item<int64_t>() >= 0 && index.max().item<int64_t>() < n &&
                            r.dim() == x_clean.dim() && r.size(0) == index.numel() &&
                            r.sizes().slice(1) == x_clean.sizes().slice(1),
                        who, ": the state file '", path, "' holds adversarial examples of shape ", r.sizes(),
                        " at ", index.numel(), " indices, which do not fit points of shape ", x_clean.sizes());
      out.adv_mask.index_fill_(0, index, true);
      out.x_adv.index_copy_(0, index, r.to(out.x_adv.scalar_type()));
    }
    const int64_t count = integer("done_count");
    for (int64_t i = 0; i < count; ++i) {
      const std::string p = "done." + std::to_string(i) + ".";
      out.done.push_back({str(p + "attack"), integer(p + "attacked"), real(p + "seconds"),
                          tensor(p + "flags", torch::kBool, 1)});
    }
    out.current = str("current");
    out.current_start = tensor("current_start", torch::kBool, 1);
    out.current_batches = integer("current_batches");
    out.current_seconds = real("current_seconds");
    out.zero_grad_points = integer("zero_grad_points");
    return true;
  }
};

/// The c10::EnforceFiniteError for `count` of `total` points with non-finite logits in `where`.
[[noreturn]] inline void throw_nonfinite(int64_t count, int64_t total, const std::string& where) {
  std::ostringstream m;
  m << "iat::eval::AutoAttack: the model returned non-finite logits (NaN or inf) for " << count << " of " << total
    << " points in " << where
    << "; the argmax of such logits is arbitrary, so the robust accuracy would be meaningless. Fix the model, or "
       "set nonfinite_as_broken(true) (iat-eval: --nonfinite-as-broken) to count these points as broken";
  C10_THROW_ERROR(EnforceFiniteError, m.str());
}

}  // namespace detail

/// AutoAttack (docs/evaluation.md): `report = aa.run(model, x, y)`.
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
/// Logits must be float32 (float16/bfloat16 accepted) of shape [N, K] with the same K on every batch.
/// Non-finite logits in the clean pass or a re-check stop the run with a c10::EnforceFiniteError naming
/// how many points had them, unless `nonfinite_as_broken` counts those points as broken.
///
/// **Resuming.** With `state_path`, the state file binds the settings that change results (model_id,
/// the points' hashes, norm, ε, version and attack list, budgets, seed, batch size, the non-finite
/// option) and the clean predictions; it holds the adversarial examples found so far and the progress
/// inside the running attack, so a resumed run ends with the same flags, x_adv, re-check and maximal
/// perturbation as an uninterrupted one. A file written under other settings is refused with a message
/// listing each difference (saved vs now), unless `state_mismatch_ok`.
///
/// **Example**
/// \code
/// iat::eval::AutoAttack aa(iat::eval::AutoAttackOptions().eps(8.0 / 255).seed(0).batch_size(250));
/// auto report = aa.run(net, x, y);   // x float [N,C,H,W] in [0,1], y int64 [N]
/// std::cout << "AutoAttack: " << report.robust_accuracy << "\n";
/// \endcode
class AutoAttack {
 public:
  explicit AutoAttack(AutoAttackOptions o = {}) : options(std::move(o)) { check_options(); }

  /// The options (docs/options.md): `aa.options.batch_size(500)`; checked at each run.
  OptionsField<AutoAttackOptions> options;

  /// The attacks the configured version runs, in order.
  std::vector<std::string> attack_list() const {
    if (!options.attacks().empty()) return options.attacks();
    switch (options.version()) {
      case AutoAttackVersion::kStandard: return {"apgd-ce", "apgd-t", "fab-t", "square"};
      case AutoAttackVersion::kPlus: return {"apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"};
      case AutoAttackVersion::kRand: return {"apgd-ce", "apgd-dlr"};
      case AutoAttackVersion::kCustom: return options.attacks();
    }
    return {};
  }

  /// Everything that changes the results of `run(model, x, y)`, as (name, value) pairs: the model_id, the
  /// points' count and hashes, the threat model, the attacks and their settings, the seed, the batch size.
  /// A state file records them; iat::distributed::sharded_autoattack compares them across the ranks.
  ///
  /// **Example**
  /// \code
  /// for (const auto& [name, value] : aa.settings(x, y)) std::cout << name << " = " << value << "\n";
  /// \endcode
  std::vector<std::pair<std::string, std::string>> settings(const torch::Tensor& x, const torch::Tensor& y) const {
    return settings_of(x, y, attack_list());
  }

  /// Runs the evaluation on x (float [N, C, H, W] in [0,1]) and y (int64 [N]).
  AutoAttackReport run(const ModelRef& model, const torch::Tensor& x_in, const torch::Tensor& y_in);

 private:
  void log(const std::string& s) const {
    if (options.log()) options.log()(s);
  }

  // Every process's results are in wherever this is called (after the clean pass, after each round of
  // batches, after each attack); sharded, shard 0 alone writes the file.
  void save_state(const detail::AutoAttackState& state) const {
    if (options.state_path().empty()) return;
    if (options.shard_count() > 1 && options.shard_index() != 0) return;
    state.save(options.state_path());
  }

  // Everything that changes the results, as the state file records it.
  std::vector<std::pair<std::string, std::string>> settings_of(const torch::Tensor& x, const torch::Tensor& y,
                                                               const std::vector<std::string>& attacks) const {
    const auto& o = options;
    std::vector<std::pair<std::string, std::string>> s;
    s.emplace_back("model", o.model_id().empty() ? std::string("(not given)") : o.model_id());
    s.emplace_back("points", std::to_string(x.size(0)));
    s.emplace_back("x", "hash " + iat::detail::hash_tensor(x));
    s.emplace_back("y", "hash " + iat::detail::hash_tensor(y));
    s.emplace_back("norm", o.norm() == Norm::kLinf ? "Linf" : "L2");
    s.emplace_back("eps", detail::exact(o.eps()));
    s.emplace_back("version", to_string(o.version()));
    s.emplace_back("attacks", detail::join(attacks, ","));
    s.emplace_back("apgd_steps", std::to_string(o.apgd_steps()));
    s.emplace_back("fab_steps", std::to_string(o.fab_steps()));
    s.emplace_back("square_queries", std::to_string(o.square_queries()));
    s.emplace_back("n_target_classes", std::to_string(o.n_target_classes()));
    s.emplace_back("seed", std::to_string(o.seed()));
    s.emplace_back("batch_size", std::to_string(o.batch_size()));
    s.emplace_back("nonfinite_as_broken", o.nonfinite_as_broken() ? "true" : "false");
    // Where the numbers are computed: another device, or CPU kernels splitting their sums over another
    // number of threads, can round differently and so break other points.
    const auto device_type = o.device() ? o.device()->type() : x.device().type();
    s.emplace_back("device", c10::DeviceTypeName(device_type, /*lower_case=*/true));
    s.emplace_back("threads", std::to_string(at::get_num_threads()));
    return s;
  }

  // Compares a loaded state with this run: refuses what cannot be resumed, lists every difference, and
  // either refuses (the default) or accepts them as warnings (state_mismatch_ok).
  void resume_from(detail::AutoAttackState& state, const std::vector<std::pair<std::string, std::string>>& settings,
                   const torch::Tensor& clean, const torch::Tensor& x, AutoAttackReport& report,
                   const std::function<void(const std::string&)>& warn) const {
    const char* who = "iat::eval::AutoAttack";
    const auto& path = options.state_path();
    const int64_t n = clean.size(0);
    bool sizes_ok = state.robust.size(0) == n && state.clean.size(0) == n && state.nonfinite.size(0) == n &&
                    state.current_start.size(0) == n;
    for (const auto& d : state.done) sizes_ok = sizes_ok && d.flags.size(0) == n;
    TORCH_CHECK_VALUE(sizes_ok, who, ": the state file '", path, "' holds flags for ", state.robust.size(0),
                      " points, x has ", n,
                      " points: it belongs to another evaluation and cannot be resumed, not even with "
                      "state_mismatch_ok (delete it or use another state path)");
    std::vector<std::string> diffs;
    for (const auto& [key, now] : settings) {
      std::string saved = "(not recorded)";
      for (const auto& [k, v] : state.settings) {
        if (k == key) saved = v;
      }
      if (saved != now) diffs.push_back(key + ": saved " + saved + ", now " + now);
    }
    if (options.version() != AutoAttackVersion::kRand) {
      const int64_t differ = (state.clean != clean).sum().item<int64_t>();
      if (differ > 0) {
        const auto acc = [n](const torch::Tensor& f) {
          return detail::percent(f.sum().item<double>() / static_cast<double>(n));
        };
        diffs.push_back("clean predictions: " + std::to_string(differ) + " of " + std::to_string(n) +
                        " points judged differently (clean accuracy saved " + acc(state.clean) + ", now " +
                        acc(clean) + ")");
      }
    }
    TORCH_CHECK_VALUE(diffs.empty() || options.state_mismatch_ok(), who, ": the state file '", path,
                      "' was written under other settings, and resuming from it would report another "
                      "evaluation's results as this one's: ",
                      detail::join(diffs, "; "),
                      ". Delete it or use another state path; to resume anyway set state_mismatch_ok(true) "
                      "(iat-eval: --state-mismatch-ok)");
    for (const auto& d : state.forced) warn("an earlier run resumed this state file under other settings: " + d);
    for (const auto& d : diffs) {
      warn("resumed from a state file written under other settings (state_mismatch_ok): " + d);
      state.forced.push_back(d);
    }
    // With other settings the attack that was running starts again on the current flags.
    if (!diffs.empty()) state.current.clear();
    TORCH_CHECK_VALUE(state.current_batches >= 0 && state.zero_grad_points >= 0, who, ": the state file '", path,
                      "' is inconsistent (negative progress counts); delete it or use another state path");
    // Every adversarial example it holds must be one under this run's threat model: inside the box and
    // within eps of its point (with the attacks' float rounding). Otherwise its points would count as broken
    // by examples that are not adversarial examples of this evaluation (a smaller eps forced with
    // state_mismatch_ok, or a damaged or edited file), so it is refused whatever the options.
    const auto rows = iat::detail::true_indices(state.adv_mask);
    if (rows.numel() > 0) {
      const auto xa = state.x_adv.index_select(0, rows).to(torch::kDouble);
      const auto xc = x.to(torch::kCPU).index_select(0, rows).to(torch::kDouble);
      const double reach = options.threat_model().distance(xa, xc).max().item<double>();
      const double lo = xa.min().item<double>(), hi = xa.max().item<double>();
      const double limit = options.eps() * (1 + 1e-5) + 1e-6;
      TORCH_CHECK_VALUE(std::isfinite(reach) && reach <= limit && lo >= 0 && hi <= 1, who, ": the state file '", path,
                        "' holds adversarial examples that this evaluation's threat model does not allow (largest ",
                        options.norm() == Norm::kLinf ? "Linf" : "L2", " distance ", reach, ", eps ", options.eps(),
                        "; values in [", lo, ", ", hi, "], the box is [0, 1]): its broken points cannot be counted, "
                        "not even with state_mismatch_ok (delete it or use another state path)");
    }
    report.state_mismatch = state.forced;
  }

  int64_t seed_now() const {
    return options.seed() >= 0 ? options.seed() : static_cast<int64_t>(std::time(nullptr));
  }

  void set_seed(Attack& attack) const {
    const int64_t seed = seed_now();
    if (auto* a = dynamic_cast<APGD*>(&attack)) a->options.seed(seed);
    if (auto* a = dynamic_cast<APGDT*>(&attack)) a->options.seed(seed);
    if (auto* a = dynamic_cast<FAB*>(&attack)) a->options.seed(seed);
    if (auto* a = dynamic_cast<Square*>(&attack)) a->options.seed(seed);
  }

  // The attack object for a name, with the settings of the configured version (docs/evaluation.md, "The attacks").
  std::unique_ptr<Attack> make_attack(const std::string& name, int64_t targets) const {
    const auto& o = options;
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
    if ((has("apgd-t") || has("fab-t")) && targets < options.n_target_classes()) {
      warn("the model has " + std::to_string(classes) + " classes: apgd-t/fab-t use " + std::to_string(targets) +
           " target classes instead of " + std::to_string(options.n_target_classes()));
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

  void check_options() const {
    const char* who = "iat::eval::AutoAttack";
    options.threat_model().check(who);
    iat::detail::check_at_least(who, "batch_size", options.batch_size(), 1);
    iat::detail::check_at_least(who, "apgd_steps", options.apgd_steps(), 1);
    iat::detail::check_at_least(who, "fab_steps", options.fab_steps(), 1);
    iat::detail::check_at_least(who, "square_queries", options.square_queries(), 0);
    iat::detail::check_at_least(who, "n_target_classes", options.n_target_classes(), 1);
    iat::detail::check_at_least(who, "shard_count", options.shard_count(), 1);
    TORCH_CHECK_VALUE(options.shard_index() >= 0 && options.shard_index() < options.shard_count(), who,
                      ": shard_index must be in [0, shard_count), got ", options.shard_index(), " of ",
                      options.shard_count());
    TORCH_CHECK_VALUE(options.shard_count() == 1 || options.shard_merge(), who,
                      ": shard_count > 1 needs a shard_merge function (iat::distributed::sharded_autoattack)");
    const auto& known = autoattack_attack_names();
    TORCH_CHECK_VALUE(options.version() != AutoAttackVersion::kCustom || !options.attacks().empty(), who,
                      ": version kCustom needs a non-empty attack list (from ", detail::join(known, ", "), ")");
    for (const auto& a : options.attacks()) {
      TORCH_CHECK_VALUE(std::find(known.begin(), known.end(), a) != known.end(), who, ": unknown attack '", a,
                        "'; known attacks: ", detail::join(known, ", "));
    }
  }
};

#if IAT_HEADER_BODIES  // the entry points' bodies: inline here, or compiled once (iat/detail/compiled.hpp)

IAT_INLINE AutoAttackReport AutoAttack::run(const ModelRef& model, const torch::Tensor& x_in,
                                             const torch::Tensor& y_in) {
  const char* who = "iat::eval::AutoAttack";
  iat::detail::check_images(who, x_in);
  iat::detail::check_labels(who, x_in, y_in);
  check_options();
  const AutoAttackOptions& o = options;
  if (!o.state_path().empty() && o.shard_index() == 0) iat::detail::check_writable(who, "state_path", o.state_path());
  const auto start = std::chrono::steady_clock::now();
  const torch::Device device = o.device() ? *o.device() : x_in.device();
  auto x = x_in.detach().to(torch::kFloat);
  auto y = y_in.detach();
  auto y_cpu = y.to(torch::kCPU);
  const int64_t n = x.size(0);
  const int64_t bs = o.batch_size();

  AutoAttackReport report;
  report.num_points = n;
  report.version = to_string(o.version());
  report.seed = o.seed();
  report.batch_size = bs;
  report.nonfinite_as_broken = o.nonfinite_as_broken();
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
  int64_t classes = -1;
  std::function<torch::Tensor(const torch::Tensor&)> forward = [&](const torch::Tensor& xb) {
    auto logits = model(xb.to(device));
    iat::detail::check_logits(who, logits, xb.size(0));
    const auto type = logits.scalar_type();
    TORCH_CHECK_VALUE(type == torch::kFloat || type == torch::kHalf || type == torch::kBFloat16, who,
                      ": the model must return float32 logits (float16 and bfloat16 are accepted), got ", type,
                      " (convert inside the model, e.g. with .to(torch::kFloat))");
    TORCH_CHECK_VALUE(classes < 0 || logits.size(1) == classes, who, ": the model returned logits for ",
                      logits.size(1), " classes on a batch of ", xb.size(0), " points, but for ", classes,
                      " classes on the first batch");
    return logits;
  };
  // Correct predictions and rows with non-finite logits (both bool, on the CPU).
  auto judge = [](const torch::Tensor& logits, const torch::Tensor& yb) {
    auto bad = logits.isfinite().all(1).logical_not().to(torch::kCPU);
    return std::make_pair(iat::detail::finite_and_correct(logits, yb).to(torch::kCPU), bad);
  };

  // Sanity checks on the first batch, as the reference (warnings only).
  auto x_first = x.narrow(0, 0, std::min(bs, n));
  auto y_first = y.narrow(0, 0, std::min(bs, n)).to(device);
  auto logits_first = forward(x_first);
  iat::detail::check_label_range(who, y_cpu, logits_first.size(1));  // every label, not the first batch's
  classes = logits_first.size(1);
  // With one class nothing can be misclassified (and FAB-T would be left with 0 target classes).
  TORCH_CHECK_VALUE(classes >= 2, who, ": the model returns ", classes, " logit per point: a classifier needs at "
                    "least 2 classes");
  if (o.version() != AutoAttackVersion::kRand) check_randomized(forward, x_first, y_first, warn);
  check_probabilities(logits_first, warn);

  std::vector<std::string> attacks = attack_list();
  report.n_target_classes = std::min(o.n_target_classes(), classes - 1);
  adapt_to_classes(attacks, classes, report.n_target_classes, warn);
  TORCH_CHECK_VALUE(!attacks.empty(), who, ": none of the attacks asked for applies to a model with ", classes,
                    " classes (see the warnings): robust accuracy would be the clean accuracy; add apgd-ce, "
                    "fab-t or square");
  report.attacks = attacks;

  // Correct predictions and non-finite rows of every point of `points` (the clean pass, the final
  // re-check), in batches; sharded, each process judges its batches (k % shard_count == shard_index) and
  // the merge shares the flags (another process's rows start true for its minimum, false for its maximum).
  auto judge_all = [&](const torch::Tensor& points) {
    auto correct = torch::ones({n}, torch::kBool);
    auto bad = torch::zeros({n}, torch::kBool);
    for (int64_t b = 0, k = 0; b < n; b += bs, ++k) {
      if (k % o.shard_count() != o.shard_index()) continue;
      const int64_t len = std::min(bs, n - b);
      auto judged = judge(forward(points.narrow(0, b, len)), y_cpu.narrow(0, b, len));
      correct.narrow(0, b, len).copy_(judged.first);
      bad.narrow(0, b, len).copy_(judged.second);
    }
    if (o.shard_count() > 1) {
      AutoAttackShardMerge m{torch::arange(n), correct, torch::zeros({n}, torch::kBool), bad, torch::Tensor()};
      o.shard_merge()(m);
    }
    return std::make_pair(correct, bad);
  };

  // The state file is read before the clean pass: a sharded run's shard 0 rewrites it after the clean
  // pass, which the other processes pass only together with it.
  detail::AutoAttackState state;
  const bool resumed = !o.state_path().empty() && detail::AutoAttackState::load(o.state_path(), x, state);

  // Clean pass (also when resuming: it checks the state file's clean predictions).
  auto clean_pass = judge_all(x);
  auto clean = clean_pass.first;
  auto nonfinite = clean_pass.second;
  const int64_t nonfinite_clean = nonfinite.sum().item<int64_t>();
  if (nonfinite_clean > 0 && !o.nonfinite_as_broken()) detail::throw_nonfinite(nonfinite_clean, n, "the clean pass");
  report.clean_correct = clean.sum().item<int64_t>();
  report.clean_accuracy = static_cast<double>(report.clean_correct) / static_cast<double>(n);

  // The saved state, or a fresh one.
  auto robust = clean.clone();
  auto x_adv = x.clone();
  auto adv_mask = torch::zeros({n}, torch::kBool);
  std::vector<std::pair<std::string, std::string>> settings;
  if (!o.state_path().empty()) settings = settings_of(x, y_cpu, attacks);
  if (resumed) {
    resume_from(state, settings, clean, x, report, warn);
    robust.copy_(state.robust & clean);
    nonfinite.logical_or_(state.nonfinite);
    adv_mask.copy_(state.adv_mask);
    x_adv.copy_(state.x_adv.to(x_adv.device()));
    report.resumed = true;
    std::vector<std::string> progress;  // "done apgd-ce,apgd-t", "fab-t after 3 batch(es)"
    std::vector<std::string> finished;
    for (const auto& s : state.done) finished.push_back(s.attack);
    if (!finished.empty()) progress.push_back("done " + detail::join(finished, ","));
    if (!state.current.empty()) {
      progress.push_back(state.current + " after " + std::to_string(state.current_batches) + " batch(es)");
    }
    progress.push_back("robust accuracy " + detail::percent(robust.sum().item<double>() / static_cast<double>(n)));
    log("resumed from " + o.state_path() + ": " + detail::join(progress, ", "));
  } else {
    log("initial accuracy: " + detail::percent(report.clean_accuracy));
  }
  state.settings = settings;
  state.clean = clean;
  state.robust = robust;  // these share storage with the run's tensors: saving sees every update
  state.nonfinite = nonfinite;
  state.adv_mask = adv_mask;
  state.x_adv = x_adv;
  save_state(state);

  for (const auto& name : attacks) {
    AutoAttackStep step;
    step.attack = name;
    auto saved = std::find_if(state.done.begin(), state.done.end(),
                              [&](const detail::AutoAttackState::Done& d) { return d.attack == name; });
    if (saved != state.done.end()) {
      step.resumed = true;
      step.attacked = saved->attacked;
      step.seconds = saved->seconds;
      step.robust_flags = saved->flags.clone();
      step.robust = step.robust_flags.sum().item<int64_t>();
      step.robust_accuracy = static_cast<double>(step.robust) / static_cast<double>(n);
      report.steps.push_back(step);
      continue;
    }
    torch::Tensor start_flags;
    int64_t first_batch = 0;
    double seconds_before = 0;
    if (state.current == name) {
      // Continue the attack that was running: the same points, in the same batches, from the next one.
      start_flags = state.current_start.clone();
      first_batch = state.current_batches;
      seconds_before = state.current_seconds;
      step.resumed = true;
    } else {
      start_flags = robust.clone();
      state.current = name;
      state.current_batches = 0;
      state.current_seconds = 0;
    }
    state.current_start = start_flags;
    const auto t0 = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    auto idx = iat::detail::true_indices(start_flags);
    const int64_t num_robust = idx.numel();
    if (num_robust == 0) break;
    step.attacked = num_robust;
    auto attack = make_attack(name, report.n_target_classes);
    const int64_t batches = (num_robust + bs - 1) / bs;
    // One process saves the state after every batch. Sharded, each process holds only its own batches
    // until a merge: with a state file the processes merge after every round of shard_count consecutive
    // batches (one each), so that shard 0 can save a state whose first current_batches batches are done on
    // every process; without one, once after the attack.
    const int64_t per_round = o.shard_count() == 1 ? 1 : !o.state_path().empty() ? o.shard_count() : batches;
    int64_t zero_grad_merged = state.zero_grad_points;
    std::vector<AutoAttackProgress> unreported;  // this process's batches of the round, for on_batch
    for (int64_t r0 = first_batch; r0 < batches; r0 += per_round) {
      const int64_t r1 = std::min(batches, r0 + per_round);
      for (int64_t b = r0; b < r1; ++b) {
        if (b % o.shard_count() != o.shard_index()) continue;  // another process's batch
        auto ib = idx.narrow(0, b * bs, std::min(bs, num_robust - b * bs));
        auto xb = x.index_select(0, ib.to(x.device())).to(device);
        auto yb = y.index_select(0, ib.to(y.device())).to(device);
        set_seed(*attack);
        auto adv = attack->perturb(model, xb, yb);
        if (auto* a = dynamic_cast<APGD*>(attack.get())) state.zero_grad_points += a->zero_gradient_points();
        if (auto* a = dynamic_cast<APGDT*>(attack.get())) state.zero_grad_points += a->zero_gradient_points();
        auto judged = judge(forward(adv), yb);
        const int64_t bad = judged.second.sum().item<int64_t>();
        if (bad > 0 && !o.nonfinite_as_broken()) {
          detail::throw_nonfinite(bad, ib.numel(), "the re-check after " + name + " (batch " + std::to_string(b + 1) +
                                                       "/" + std::to_string(batches) + ")");
        }
        auto fooled = judged.first.logical_not();
        auto hit = ib.masked_select(fooled);
        robust.index_fill_(0, hit, false);
        adv_mask.index_fill_(0, hit, true);
        nonfinite.index_fill_(0, ib.masked_select(judged.second), true);
        x_adv.index_copy_(0, hit.to(x_adv.device()),
                          adv.index_select(0, iat::detail::true_indices(fooled).to(adv.device())).to(x_adv.device()));
        log(name + " - " + std::to_string(b + 1) + "/" + std::to_string(batches) + " - " +
            std::to_string(hit.numel()) + " out of " + std::to_string(ib.numel()) + " successfully perturbed");
        unreported.push_back(AutoAttackProgress{name, b + 1, batches, 0});
      }
      state.current_seconds = seconds_before + elapsed();
      if (o.shard_count() > 1) {
        // Only the round's rows are combined: those of earlier rounds, and of batches a run before this
        // one finished (resumed within the attack), are the same on every process already.
        const int64_t from = std::min(r0 * bs, num_robust), to = std::min(r1 * bs, num_robust);
        AutoAttackShardMerge m{idx.narrow(0, from, to - from), robust, adv_mask, nonfinite, x_adv,
                               state.zero_grad_points - zero_grad_merged, state.current_seconds};
        o.shard_merge()(m);
        state.zero_grad_points = zero_grad_merged + m.zero_grad_points;
        zero_grad_merged = state.zero_grad_points;
        state.current_seconds = m.seconds;
      }
      state.current_batches = r1;
      save_state(state);
      for (auto& p : unreported) {
        p.robust = robust.sum().item<int64_t>();
        if (o.on_batch()) o.on_batch()(p);
      }
      unreported.clear();
    }
    step.seconds = state.current_seconds;  // seconds_before when a resumed run found every batch done
    step.robust = robust.sum().item<int64_t>();
    step.robust_accuracy = static_cast<double>(step.robust) / static_cast<double>(n);
    step.robust_flags = robust.clone();
    report.steps.push_back(step);
    state.done.push_back({name, num_robust, step.seconds, step.robust_flags});
    state.current.clear();
    state.current_start = torch::Tensor();
    state.current_batches = 0;
    state.current_seconds = 0;
    save_state(state);
    std::ostringstream line;
    line.setf(std::ios::fixed);
    line.precision(1);
    line << "robust accuracy after " << name << ": " << detail::percent(step.robust_accuracy) << " (" << step.seconds
         << " s)";
    log(line.str());
  }
  if (state.zero_grad_points > 0) {
    warn("there are " + std::to_string(state.zero_grad_points) +
         " points with zero gradient at the start of a DLR run: gradient-based attacks may be unreliable "
         "on this model (gradient masking?)");
  }
  check_square(report, warn);

  report.robust = robust;
  report.robust_count = robust.sum().item<int64_t>();
  report.robust_accuracy = static_cast<double>(report.robust_count) / static_cast<double>(n);
  report.x_adv = x_adv;
  report.max_perturbation = o.threat_model().distance(x_adv, x).max().item<double>();
  auto recheck = judge_all(x_adv);
  auto rechecked = recheck.first;
  auto recheck_bad = recheck.second;
  const int64_t bad_final = recheck_bad.sum().item<int64_t>();
  if (bad_final > 0 && !o.nonfinite_as_broken()) detail::throw_nonfinite(bad_final, n, "the final re-check");
  nonfinite.logical_or_(recheck_bad);
  report.nonfinite = nonfinite;
  report.nonfinite_points = nonfinite.sum().item<int64_t>();
  if (report.nonfinite_points > 0) {
    warn("the model returned non-finite logits (NaN or inf) for " + std::to_string(report.nonfinite_points) +
         " of " + std::to_string(n) + " points; they are counted as broken (nonfinite_as_broken)");
  }
  report.robust_rechecked = rechecked;
  report.robust_count_rechecked = rechecked.sum().item<int64_t>();
  report.robust_accuracy_rechecked = static_cast<double>(report.robust_count_rechecked) / static_cast<double>(n);
  if (report.robust_count_rechecked != report.robust_count) {
    warn("robust accuracy as counted (" + detail::percent(report.robust_accuracy) +
         ") differs from the re-evaluation on the returned points (" +
         detail::percent(report.robust_accuracy_rechecked) + "): is the model randomised or stateful?");
  }
  report.total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  log("robust accuracy: " + detail::percent(report.robust_accuracy) + " (re-checked " +
      detail::percent(report.robust_accuracy_rechecked) + ")");
  return report;
}
#endif  // IAT_HEADER_BODIES

}  // namespace eval
}  // namespace iat
