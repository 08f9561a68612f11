// iat-eval's inputs: the model (a TorchScript file or an iat-train checkpoint) and the points (a torch.save'd
// dict or a dataset's test split), each checked with a message naming the file and what was found; and, under
// torchrun, the check that every rank holds the same ones.
#pragma once

#include <iat/attacks/detail/autoattack.hpp>
#include <iat/data/load.hpp>
#include <iat/distributed/process_group.hpp>
#include <iat/distributed/sharded_eval.hpp>
#include <iat/models/zoo.hpp>
#include <iat/train/checkpoint.hpp>
#include <iat/train/run_model.hpp>

#include "config.hpp"

#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <torch/script.h>
#include <torch/serialize.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace iat_examples {

namespace eval_detail {

inline std::string shape_text(torch::IntArrayRef sizes) {
  std::ostringstream s;
  s << sizes;
  return s.str();
}

inline std::vector<char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f.good()) eval_fail("cannot open '" + path + "'");
  return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// The last non-empty line of a message: a TorchScript error is a traceback ending in the reason.
inline std::string last_line(const std::string& message) {
  std::istringstream in(message);
  std::string line, last;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t") != std::string::npos) last = line;
  }
  return last.empty() ? message : last;
}

// The points of a torch.save'd dict {'x': float [N,C,H,W] in [0,1], 'y': int64 [N]}.
inline std::pair<torch::Tensor, torch::Tensor> load_points_file(const std::string& path) {
  auto bytes = read_file(path);
  c10::IValue value;
  try {
    value = torch::pickle_load(bytes);
  } catch (const c10::Error& e) {
    eval_fail(fmt::format("cannot read '{}' ({} bytes) as torch.save({{'x': float [N,C,H,W], 'y': int64 [N]}}) (a dict "
                          "with exactly these two keys): {}",
                          path, bytes.size(), e.what_without_backtrace()));
  }
  if (!value.isGenericDict()) eval_fail("'" + path + "' must hold a dict {'x': tensor, 'y': tensor}, got " + value.tagKind());
  auto dict = value.toGenericDict();
  auto get = [&](const char* key) {
    for (const auto& entry : dict) {
      if (entry.key().isString() && entry.key().toStringRef() == key) {
        if (!entry.value().isTensor()) eval_fail("'" + path + "': entry '" + key + "' is not a tensor");
        return entry.value().toTensor();
      }
    }
    eval_fail("'" + path + "' has no entry '" + std::string(key) + "' (expected a dict with keys 'x' and 'y')");
  };
  auto x = get("x");
  auto y = get("y");
  if (!x.is_floating_point() || x.dim() != 4) {
    eval_fail(fmt::format("'{}': x must be a float tensor [N, C, H, W], got {} {}", path, c10::toString(x.scalar_type()),
                          shape_text(x.sizes())));
  }
  if (y.scalar_type() != torch::kLong || y.dim() != 1) {
    eval_fail(fmt::format("'{}': y must be an int64 tensor [N], got {} {}", path, c10::toString(y.scalar_type()),
                          shape_text(y.sizes())));
  }
  if (x.size(0) != y.size(0)) eval_fail(fmt::format("'{}': x holds {} points, y {} labels", path, x.size(0), y.size(0)));
  if (x.size(0) == 0) eval_fail("'" + path + "' holds 0 points: nothing to evaluate");
  if (x.numel() > 0) {
    const double lo = x.min().item<double>(), hi = x.max().item<double>();
    if (!(lo >= 0 && hi <= 1)) {  // NaN fails both comparisons: refused too
      eval_fail("'" + path + "': x must lie in [0, 1] (normalisation belongs inside the model), got values in [" +
                std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
  }
  return {x.to(torch::kFloat).contiguous(), y.contiguous()};
}

// The model of an iat-train checkpoint (iat::train::load_run_model): the weights of `ema_model` when the
// run kept an EMA (what it evaluated), `model` otherwise. The identity record says it is an iat-train
// checkpoint and, for one written before the model_spec record existed, which architecture it holds.
inline iat::models::AnyClassifier load_iat_checkpoint(const std::string& path, const torch::Device& device,
                                                      std::string& weights) {
  using json = nlohmann::json;
  torch::serialize::InputArchive archive;
  try {
    archive = iat::train::load_checkpoint(path, device);  // verifies the checkpoint's CRC-32 first
  } catch (const c10::Error& e) {
    eval_fail(std::string("cannot read the iat-train checkpoint: ") + e.what_without_backtrace());
  }
  c10::IValue v;
  if (!archive.try_read("identity", v) || !v.isString()) {
    eval_fail("'" + path + "' has no identity record: not an iat-train checkpoint (for TorchScript files use --model)");
  }
  json id;
  try {
    id = json::parse(v.toStringRef());
  } catch (const std::exception& e) {
    eval_fail("'" + path + "': unreadable identity record: " + e.what());
  }
  if (id.value("format", std::string()) != "iat-train checkpoint 1") {
    eval_fail("'" + path + "': unknown checkpoint format '" + id.value("format", std::string("?")) + "'");
  }
  iat::optional<iat::models::ModelSpec> spec;
  iat::models::ModelSpec recorded;
  if (!iat::models::read_model_spec(archive, recorded)) {
    try {
      spec = iat::models::ModelSpec{id.at("model").get<std::string>(),       id.at("activation").get<std::string>(),
                                    id.at("num_classes").get<int64_t>(),     id.at("in_channels").get<int64_t>(),
                                    id.at("image_size").get<int64_t>(),      id.at("mean").get<std::vector<double>>(),
                                    id.at("std").get<std::vector<double>>()};
    } catch (const std::exception& e) {
      eval_fail("'" + path + "': incomplete identity record: " + e.what());
    }
  }
  try {
    auto run = iat::train::load_run_model(archive, path, device, iat::train::RunWeights::kAuto, spec);
    weights = run.weights;
    return run.model;
  } catch (const c10::Error& e) {
    eval_fail(e.what_without_backtrace());
  }
}

}  // namespace eval_detail

/// The model under evaluation: what `forward` runs, which weights ("torchscript", "model" or "ema_model"),
/// and a hash of the file's bytes (its identity in the state file and across torchrun's ranks).
struct EvalModel {
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  std::string weights = "torchscript";
  uint64_t file_hash = 0;
  // What `forward` calls: one of the two.
  std::shared_ptr<torch::jit::script::Module> module;
  iat::models::AnyClassifier net{nullptr};
};

/// Loads --model (TorchScript, in eval mode, graph optimisation as --jit-optimize says) or --checkpoint.
inline EvalModel load_eval_model(const EvalConfig& c, const torch::Device& device) {
  EvalModel m;
  torch::jit::setGraphExecutorOptimize(c.jit_optimize);
  if (!c.checkpoint.empty()) {
    m.net = eval_detail::load_iat_checkpoint(c.checkpoint, device, m.weights);
    m.forward = [net = m.net](const torch::Tensor& x) mutable { return net->forward(x); };
  } else {
    try {
      m.module = std::make_shared<torch::jit::script::Module>(torch::jit::load(c.model, device));
    } catch (const c10::Error& e) {
      eval_fail("cannot load the TorchScript model '" + c.model + "': " + e.what_without_backtrace());
    } catch (const std::exception& e) {
      eval_fail("cannot load the TorchScript model '" + c.model + "': " + e.what());
    }
    if (!m.module->find_method("forward")) {
      // torch::save archives (an iat-train checkpoint, for instance) load as modules without code.
      eval_fail("'" + c.model + "' has no forward method: not a TorchScript model (for an iat-train checkpoint use "
                "--checkpoint)");
    }
    m.module->eval();
    m.forward = [module = m.module](const torch::Tensor& x) -> torch::Tensor {
      auto out = module->forward({x});
      TORCH_CHECK_VALUE(out.isTensor(), "iat-eval: the model returns a ", out.tagKind(),
                        ", expected a tensor of logits [N, K]");
      return out.toTensor();
    };
  }
  const auto bytes = eval_detail::read_file(c.model_file());
  m.file_hash = iat::detail::hash_bytes(bytes.data(), bytes.size());
  return m;
}

/// The points under evaluation, on `device`: the first --n of --data or of --dataset's test split.
struct EvalPoints {
  torch::Tensor x, y;
  std::string source;  ///< the file, or "<dataset> (test)"
};

inline EvalPoints load_eval_points(const EvalConfig& c, const torch::Device& device) {
  EvalPoints p;
  if (!c.data.empty()) {
    std::tie(p.x, p.y) = eval_detail::load_points_file(c.data);
    p.source = c.data;
  } else {
    try {
      auto ds = iat::data::load_dataset(c.dataset, c.data_dir, iat::data::Split::kTest);
      p.x = ds.images.to(torch::kFloat).div_(255.0);
      p.y = ds.labels;
      p.source = ds.name + " (test)";
    } catch (const c10::Error& e) {
      eval_fail(e.what_without_backtrace());
    }
  }
  if (c.n > 0 && c.n < p.x.size(0)) {
    p.x = p.x.narrow(0, 0, c.n).contiguous();
    p.y = p.y.narrow(0, 0, c.n).contiguous();
  }
  p.x = p.x.to(device);
  p.y = p.y.to(device);
  return p;
}

/// Runs the model on the first two points: a model that fails on their shape, returns no logits [N, K] or
/// has fewer outputs than the labels need is refused with a message saying which.
inline void check_model_on_points(const EvalModel& m, const EvalPoints& p) {
  torch::NoGradGuard ng;
  const int64_t two = std::min<int64_t>(2, p.x.size(0));
  torch::Tensor out;
  auto fails_on_shape = [&](const std::string& why) {
    eval_fail("the model fails on inputs of shape " + eval_detail::shape_text(p.x.sizes()) + ": " +
              eval_detail::last_line(why));
  };
  try {
    out = m.forward(p.x.narrow(0, 0, two));
  } catch (const c10::Error& e) {
    fails_on_shape(e.what_without_backtrace());
  } catch (const std::exception& e) {  // the TorchScript interpreter's errors are std::runtime_error
    fails_on_shape(e.what());
  }
  if (out.dim() != 2 || out.size(0) != two) {
    eval_fail(fmt::format("the model must return logits [N, K]; for a batch of {} it returned shape {}", two,
                          eval_detail::shape_text(out.sizes())));
  }
  const int64_t ymax = p.y.max().item<int64_t>();
  if (p.y.min().item<int64_t>() < 0 || ymax >= out.size(1)) {
    eval_fail(fmt::format("labels must lie in [0, {0}) for a model with {0} outputs; got up to {1}", out.size(1), ymax));
  }
}

/// Under torchrun every rank must run the same evaluation: the model file's bytes, the points and every flag
/// that changes the results are compared (iat::distributed::check_same_settings), and every rank stops with
/// the same message naming what differs. Without it a rank started with another --eps would be merged into
/// one report, and one with another --batch-size would wait for the others until --dist-timeout.
inline void check_same_on_every_rank(const iat::distributed::ProcessGroupPtr& pg, const EvalConfig& c,
                                     const EvalModel& m, const EvalPoints& p) {
  const std::vector<std::pair<std::string, std::string>> settings{
      {"model file (its bytes)", iat::detail::hex64(m.file_hash)},
      {"points (--data, --dataset, --data-dir or --n)", iat::detail::hash_tensor(p.x) + iat::detail::hash_tensor(p.y)},
      {"--norm", c.norm == iat::Norm::kLinf ? "Linf" : "L2"},
      {"--eps", fmt::format("{:a}", c.eps)},
      {"--version", c.version},
      {"--attacks", fmt::format("{}", fmt::join(c.aa_attacks, ","))},
      {"--also", fmt::format("{}", fmt::join(c.extras, ","))},
      {"--autoattack-n", std::to_string(c.autoattack_n)},
      {"--seed", std::to_string(c.seed)},
      {"--batch-size", std::to_string(c.batch_size)},
      {"--apgd-steps", std::to_string(c.apgd_steps)},
      {"--fab-steps", std::to_string(c.fab_steps)},
      {"--square-queries", std::to_string(c.square_queries)},
      {"--n-targets", std::to_string(c.n_targets)},
      {"--nonfinite-as-broken", c.nonfinite_as_broken ? "on" : "off"},
      {"--state-mismatch-ok", c.state_mismatch_ok ? "on" : "off"},
      {"--state (given or not)", c.state.empty() ? "no" : "yes"},
      {"--threads", std::to_string(c.threads)},
      {"--jit-optimize", c.jit_optimize ? "on" : "off"}};
  try {
    iat::distributed::check_same_settings(pg, "under torchrun", settings,
                                          "every rank must run the same command on the same files");
  } catch (const c10::Error& e) {
    eval_fail(e.what_without_backtrace());
  }
}

}  // namespace iat_examples
