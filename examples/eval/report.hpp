// iat-eval's outputs: the table on stdout, the JSON report (--out) and the adversarial examples
// (--save-adv), each written atomically.
#pragma once

#include <iat/detail/file_io.hpp>
#include <iat/eval/autoattack.hpp>
#include <iat/eval/robust_accuracy.hpp>
#include <iat/io/tensor_file.hpp>
#include <iat/version.hpp>

#include "config.hpp"
#include "inputs.hpp"

#include <ATen/Parallel.h>
#include <torch/version.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace iat_examples {

/// What an evaluation found: AutoAttack's report on the first --autoattack-n points, the --also results and
/// the clean accuracy over all points.
struct EvalResults {
  iat::eval::AutoAttackReport autoattack;
  std::vector<std::pair<std::string, iat::eval::RobustAccuracy>> extras;  ///< ("pgd20" | "cw", result)
  int64_t clean_all_correct = 0;
  int64_t num_points = 0;  ///< all points (AutoAttack's may be fewer)
  double clean_all_accuracy() const {
    return static_cast<double>(clean_all_correct) / static_cast<double>(num_points);
  }
};

/// The table on stdout: each stage's accuracy, its points and its time.
inline void print_eval_table(const EvalConfig& c, const EvalResults& r) {
  const auto& report = r.autoattack;
  fmt::print("\n{:<22} {:>10} {:>10} {:>10}\n", "stage", "accuracy", "points", "time [s]");
  if (report.num_points < r.num_points) {
    fmt::print("{:<22} {:>9.2f}% {:>10}   (of {} points)\n", "clean (all)", 100 * r.clean_all_accuracy(),
               r.clean_all_correct, r.num_points);
  }
  fmt::print("{:<22} {:>9.2f}% {:>10} {:>10}\n", "clean", 100 * report.clean_accuracy, report.clean_correct, "");
  for (const auto& s : report.steps) {
    fmt::print("{:<22} {:>9.2f}% {:>10} {:>10.1f}{}\n", "after " + s.attack, 100 * s.robust_accuracy, s.robust, s.seconds,
               s.resumed ? " (resumed)" : "");
  }
  fmt::print("{:<22} {:>9.2f}% {:>10} {:>10.1f}\n", "AutoAttack (counted)", 100 * report.robust_accuracy,
             report.robust_count, report.total_seconds);
  fmt::print("{:<22} {:>9.2f}% {:>10}\n", "AutoAttack (re-check)", 100 * report.robust_accuracy_rechecked,
             report.robust_count_rechecked);
  for (const auto& [name, e] : r.extras) {
    fmt::print("{:<22} {:>9.2f}% {:>10}\n", name == "pgd20" ? "PGD-20" : "CW-inf (PGD-20)", 100 * e.accuracy, e.correct);
  }
  fmt::print("max {} perturbation: {:.6f} (eps {:.6f})\n", c.norm_text, report.max_perturbation, c.eps);
  for (const auto& w : report.warnings) fmt::print("warning: {}\n", w);
  std::fflush(stdout);
}

/// --save-adv: {'x_adv': float [N,C,H,W], 'robust': bool [N]}, which torch.load reads (also weights_only).
inline void save_adversarial_examples(const std::string& path, const iat::eval::AutoAttackReport& report) {
  c10::Dict<std::string, torch::Tensor> dict;
  dict.insert("x_adv", report.x_adv.to(torch::kCPU));
  dict.insert("robust", report.robust.to(torch::kCPU));
  try {
    iat::io::save_tensor_dict(dict, path);
  } catch (const c10::Error& e) {
    eval_fail(std::string("--save-adv: ") + e.what_without_backtrace());
  }
}

/// The JSON report of --out (docs/evaluation.md lists its keys).
inline nlohmann::json eval_report_json(const EvalConfig& c, const EvalModel& model, const EvalPoints& points,
                                       const torch::Device& device, int64_t world_size, const std::string& backend,
                                       const EvalResults& r) {
  using json = nlohmann::json;
  const auto& report = r.autoattack;
  json j;
  j["tool"] = "iat-eval";
  j["iat_version"] = iat::version();
  j["torch_version"] = TORCH_VERSION;
  j["model"] = c.model_file();
  j["data"] = points.source;
  j["num_points"] = report.num_points;
  j["norm"] = c.norm_text;
  j["eps"] = c.eps;
  j["eps_text"] = c.eps_text;
  j["version"] = report.version;
  j["attacks"] = report.attacks;
  j["seed"] = c.seed;
  j["batch_size"] = c.batch_size;
  j["device"] = device.str();
  j["threads"] = at::get_num_threads();
  j["distributed"] = {{"world_size", world_size}, {"backend", backend}};
  j["standard_budgets"] = report.standard_budgets;
  j["budgets"] = {{"apgd_steps", c.apgd_steps}, {"fab_steps", c.fab_steps}, {"square_queries", c.square_queries},
                  {"n_target_classes", report.n_target_classes}};
  j["clean_accuracy"] = report.clean_accuracy;
  j["clean_correct"] = report.clean_correct;
  auto flag_list = [](const torch::Tensor& t) {
    std::vector<int> v(static_cast<size_t>(t.size(0)));
    auto acc = t.accessor<bool, 1>();
    for (int64_t i = 0; i < t.size(0); ++i) v[static_cast<size_t>(i)] = acc[i] ? 1 : 0;
    return v;
  };
  json steps = json::array();
  for (const auto& s : report.steps) {
    steps.push_back({{"attack", s.attack}, {"attacked", s.attacked}, {"robust", s.robust},
                     {"robust_accuracy", s.robust_accuracy}, {"seconds", s.seconds}, {"resumed", s.resumed},
                     {"robust_flags", flag_list(s.robust_flags)}});
  }
  j["steps"] = steps;
  j["robust_accuracy"] = report.robust_accuracy;
  j["robust_count"] = report.robust_count;
  j["robust_accuracy_rechecked"] = report.robust_accuracy_rechecked;
  j["robust_count_rechecked"] = report.robust_count_rechecked;
  j["max_perturbation"] = report.max_perturbation;
  j["total_seconds"] = report.total_seconds;
  j["warnings"] = report.warnings;
  j["robust_flags"] = flag_list(report.robust);
  j["robust_flags_rechecked"] = flag_list(report.robust_rechecked);
  json ex = json::object();
  for (const auto& [name, e] : r.extras) {
    ex[name] = {{"accuracy", e.accuracy}, {"correct", e.correct}, {"clean_accuracy", e.clean_accuracy}};
  }
  j["also"] = ex;
  // The keys the demo's comparison reads (scripts/report.py --compare).
  j["weights"] = model.weights;
  j["test_examples"] = r.num_points;
  j["clean_acc"] = r.clean_all_accuracy();
  j["autoattack_acc"] = report.robust_accuracy;
  j["autoattack_examples"] = report.num_points;
  for (const auto& [name, e] : r.extras) j[name == "pgd20" ? "pgd20_acc" : "cw_acc"] = e.accuracy;
  j["nonfinite_as_broken"] = report.nonfinite_as_broken;
  j["nonfinite_points"] = report.nonfinite_points;
  j["resumed"] = report.resumed;
  j["state_mismatch"] = report.state_mismatch;
  return j;
}

/// Writes the report to `path` atomically (NAME.tmp, fsync, rename).
inline void write_eval_report(const std::string& path, const nlohmann::json& j) {
  try {
    const std::string text = j.dump(2) + "\n";
    iat::detail::write_file_atomically("iat-eval", path, text.data(), text.size());
  } catch (const c10::Error& e) {
    eval_fail(std::string("--out: ") + e.what_without_backtrace());
  }
}

}  // namespace iat_examples
