#pragma once
/// \file
/// iat::train::load_run_model: the trained model of an iat-train run, rebuilt from its checkpoint (the
/// architecture from the checkpoint's model_spec record, the weights verified by their CRC-32), ready to
/// evaluate, attack or export from your own code: what iat-eval --checkpoint does.

#include <iat/detail/compat.hpp>
#include <iat/models/zoo.hpp>
#include <iat/train/checkpoint.hpp>

#include <torch/serialize/input-archive.h>
#include <torch/types.h>

#include <filesystem>
#include <functional>
#include <string>

namespace iat {
namespace train {

/// Which weights of a run load_run_model returns.
enum class RunWeights {
  kAuto,  ///< the weight average when the run kept one (--ema), the live weights otherwise: what it evaluated
  kLive,  ///< the weights the optimiser trained
  kEMA,   ///< the weight average (refused when the run kept none)
};

/// A run's model: the module (in eval mode, on the device asked for), the spec it was built from, and
/// which weights it holds ("model" or "ema_model", the checkpoint's record names).
struct RunModel {
  models::AnyClassifier model{nullptr};
  models::ModelSpec spec;
  std::string weights;
};

/// The checkpoint file of `path`: its checkpoint.pt when `path` is a folder (an iat-train run's --out),
/// `path` itself otherwise.
///
/// **Example**
/// \code
/// std::string file = iat::train::run_checkpoint_file("runs/c10-uiat");   // "runs/c10-uiat/checkpoint.pt"
/// \endcode
inline std::string run_checkpoint_file(const std::string& path) {
  return std::filesystem::is_directory(path) ? (std::filesystem::path(path) / "checkpoint.pt").string() : path;
}

/// The model of an iat-train checkpoint already read (by load_checkpoint): the architecture from its
/// `model_spec` record (or `spec`, which replaces the record), built with make_model, with the weights
/// `which` names. `file` names the checkpoint in error messages.
///
/// **Example**
/// \code
/// auto archive = iat::train::load_checkpoint("runs/c10-uiat/checkpoint.pt", torch::kCPU);
/// auto run = iat::train::load_run_model(archive, "runs/c10-uiat/checkpoint.pt");
/// \endcode
inline RunModel load_run_model(torch::serialize::InputArchive& archive, const std::string& file,
                               const torch::Device& device = torch::kCPU, RunWeights which = RunWeights::kAuto,
                               const optional<models::ModelSpec>& spec = {}) {
  const char* who = "iat::train::load_run_model";
  RunModel run;
  if (spec) {
    run.spec = *spec;
  } else {
    TORCH_CHECK_VALUE(models::read_model_spec(archive, run.spec), who, ": '", file,
                      "' has no model_spec record: not an iat-train checkpoint, or one written before iat-train "
                      "stored it (give the spec, as iat-eval --checkpoint does from the identity record)");
  }
  run.model = models::make_model(run.spec);
  torch::serialize::InputArchive weights;
  const bool has_ema = archive.try_read("ema_model", weights);
  TORCH_CHECK_VALUE(has_ema || which != RunWeights::kEMA, who, ": '", file,
                    "' holds no weight average (the run was trained without --ema)");
  run.weights = has_ema && which != RunWeights::kLive ? "ema_model" : "model";
  if (run.weights == "model") {
    TORCH_CHECK_VALUE(archive.try_read("model", weights), who, ": '", file, "' holds no 'model' weights");
  }
  // Module::load replaces a tensor of another shape without a word: every entry is checked first, walking
  // the nested archives (one per submodule) as Module::load does.
  auto mismatch = [&](const std::string& key, const std::string& in_file, c10::IntArrayRef in_model) {
    TORCH_CHECK_VALUE(false, who, ": '", file, "': the weights '", run.weights, "' do not fit a ", run.spec.arch,
                      " with ", run.spec.num_classes, " classes and ", run.spec.in_channels, " input channels: ", key,
                      " is ", in_file, " in the file, ", in_model, " in the model");
  };
  std::function<void(torch::nn::Module&, torch::serialize::InputArchive&, const std::string&)> check =
      [&](torch::nn::Module& module, torch::serialize::InputArchive& archive_of, const std::string& prefix) {
        auto check_tensors = [&](const torch::OrderedDict<std::string, torch::Tensor>& tensors, bool is_buffer) {
          for (const auto& item : tensors) {
            torch::Tensor saved;
            if (!archive_of.try_read(item.key(), saved, is_buffer)) {
              mismatch(prefix + item.key(), "missing", item.value().sizes());
            } else if (saved.sizes() != item.value().sizes()) {
              mismatch(prefix + item.key(), c10::str(saved.sizes()), item.value().sizes());
            }
          }
        };
        check_tensors(module.named_parameters(/*recurse=*/false), false);
        check_tensors(module.named_buffers(/*recurse=*/false), true);
        for (const auto& child : module.named_children()) {
          torch::serialize::InputArchive sub;
          if (!archive_of.try_read(child.key(), sub)) mismatch(prefix + child.key(), "missing", {});
          check(*child.value(), sub, prefix + child.key() + ".");
        }
      };
  check(*run.model, weights, "");
  run.model->load(weights);
  run.model->to(device);
  run.model->eval();
  return run;
}

/// The model of an iat-train run. `path` is the run folder (--out; its checkpoint.pt is read) or a
/// checkpoint file. The checkpoint's CRC-32 is verified first (load_checkpoint), the architecture is read
/// from its `model_spec` record and built with make_model, and the weights `which` names are loaded into
/// it, on `device`, in eval mode. `spec` replaces the record, for a checkpoint written before iat-train
/// stored one (iat-eval then takes the spec from the checkpoint's identity record). Every failure (no such
/// file, not an iat-train checkpoint, weights of another shape) throws a c10::ValueError naming the file
/// and what is wrong.
///
/// **Example**
/// \code
/// auto run = iat::train::load_run_model("runs/c10-uiat", torch::kCUDA);
/// iat::eval::AutoAttack aa(iat::eval::AutoAttackOptions().eps(8.0 / 255));
/// auto report = aa.run(run.model, x_test, y_test);
/// \endcode
inline RunModel load_run_model(const std::string& path, const torch::Device& device = torch::kCPU,
                               RunWeights which = RunWeights::kAuto, const optional<models::ModelSpec>& spec = {}) {
  const std::string file = run_checkpoint_file(path);
  auto archive = load_checkpoint(file, device);
  return load_run_model(archive, file, device, which, spec);
}

}  // namespace train
}  // namespace iat
