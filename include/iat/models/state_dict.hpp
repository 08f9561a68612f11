#pragma once
/// \file
/// State-dict files shared with Python: iat::models::save_state_dict writes a file that
/// `torch.load(path)` returns as a dict of tensors keyed like `model.state_dict()` of the common PyTorch
/// definitions; iat::models::load_state_dict reads such files, also those written by Python's
/// `torch.save(model.state_dict(), path)`. The file format itself (torch.save's zip archive of a dict of
/// tensors) is iat::io's (iat/io/tensor_file.hpp).

#include <iat/io/tensor_file.hpp>
#include <iat/models/common.hpp>

#include <torch/nn/module.h>
#include <torch/ordered_dict.h>
#include <torch/types.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

namespace iat {
namespace models {

namespace detail {

/// Visits a module's parameters and buffers in the order of Python's `state_dict()` (each module's own
/// parameters, then its own buffers, then its children), skipping InputNormalization modules.
template <typename F>
void for_each_state_entry(const torch::nn::Module& module, const std::string& prefix, F&& visit) {
  for (const auto& p : module.named_parameters(/*recurse=*/false)) visit(prefix + p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/false)) visit(prefix + b.key(), b.value());
  for (const auto& child : module.named_children()) {
    if (dynamic_cast<const InputNormalizationImpl*>(child.value().get()) != nullptr) continue;
    for_each_state_entry(*child.value(), prefix + child.key() + ".", visit);
  }
}

inline std::string shape_string(torch::IntArrayRef sizes) {
  std::ostringstream out;
  out << sizes;
  return out.str();
}

inline std::string key_list(const std::vector<std::string>& keys) {
  std::string out;
  const size_t shown = std::min<size_t>(keys.size(), 8);
  for (size_t i = 0; i < shown; ++i) out += (i ? ", " : "") + keys[i];
  if (keys.size() > shown) out += ", ... (" + std::to_string(keys.size()) + " in all)";
  return out;
}

}  // namespace detail

/// The entries save_state_dict writes, in the order of Python's `model.state_dict()`: every parameter
/// and buffer (BatchNorm's running_mean, running_var, num_batches_tracked) by its dotted name, except
/// the mean/std buffers of InputNormalization submodules (architecture constants that the common
/// Python definitions do not have). The tensors are the module's own (not copies).
///
/// **Example**
/// \code
/// iat::models::PreActResNet18 net(10);
/// for (const auto& kv : iat::models::state_dict(*net)) std::cout << kv.key() << "\n";  // conv1.weight, ...
/// \endcode
inline torch::OrderedDict<std::string, torch::Tensor> state_dict(const torch::nn::Module& module) {
  torch::OrderedDict<std::string, torch::Tensor> out("state_dict");
  detail::for_each_state_entry(module, "", [&](const std::string& key, const torch::Tensor& t) { out.insert(key, t); });
  return out;
}

/// The name iat::io::save_tensor_dict had before iat::io: kept for one release.
[[deprecated("iat: save_tensor_dict moved to iat::io (iat/io/tensor_file.hpp); this name goes in the next release")]]
inline void save_tensor_dict(const c10::Dict<std::string, torch::Tensor>& tensors, const std::string& path) {
  io::save_tensor_dict(tensors, path);
}

/// Writes `state_dict(module)` (CPU copies) to `path` in torch.save's zip format (save_tensor_dict), so
/// that Python's `torch.load(path)` returns a dict {name: tensor} that
/// `model.load_state_dict(..., strict=True)` accepts for the common definitions of iat's models.
///
/// **Example**
/// \code
/// iat::models::save_state_dict(*net, "prn18.pt");
/// // Python: model.load_state_dict(torch.load("prn18.pt"), strict=True)
/// \endcode
inline void save_state_dict(const torch::nn::Module& module, const std::string& path) {
  c10::Dict<std::string, torch::Tensor> dict;
  for (const auto& kv : state_dict(module)) dict.insert(kv.key(), kv.value());
  io::save_tensor_dict(dict, path);
}

/// Reads a state-dict file written by Python's `torch.save(model.state_dict(), path)` (zip format, the
/// default since PyTorch 1.6) or by save_state_dict: the top-level dict's string keys and tensors, in
/// file order, on the CPU. Errors name the file and what was found there.
///
/// **Example**
/// \code
/// auto sd = iat::models::read_state_dict("model.pt");
/// torch::Tensor w = sd["conv1.weight"];
/// \endcode
inline torch::OrderedDict<std::string, torch::Tensor> read_state_dict(const std::string& path) {
  return io::detail::read_tensor_dict(path, "iat::models::read_state_dict");
}

/// Copies the tensors of a state-dict file (see read_state_dict) into `module`'s parameters and buffers,
/// matched by name as state_dict(module) names them. With `strict` (the default) the file must hold
/// exactly those keys; a missing `*.num_batches_tracked` is accepted (old checkpoints lack it) and
/// leaves the buffer as it is. Shapes must match; values are converted to each tensor's dtype and
/// device. Nothing is modified unless every check passes.
///
/// **Example**
/// \code
/// iat::models::PreActResNet18 net(10);
/// iat::models::load_state_dict(*net, "from_python.pt");   // torch.save(model.state_dict(), ...)
/// \endcode
inline void load_state_dict(torch::nn::Module& module, const std::string& path, bool strict = true) {
  const char* who = "iat::models::load_state_dict";
  const auto file = read_state_dict(path);
  const auto target = state_dict(module);
  std::vector<std::string> missing, unexpected;
  for (const auto& kv : target) {
    const std::string& key = kv.key();
    const bool optional = key.size() >= 20 && key.compare(key.size() - 20, 20, ".num_batches_tracked") == 0;
    if (!file.contains(key) && !optional) missing.push_back(key);
  }
  for (const auto& kv : file) {
    if (!target.contains(kv.key())) unexpected.push_back(kv.key());
  }
  if (strict && (!missing.empty() || !unexpected.empty())) {
    bool data_parallel = !file.is_empty();
    for (const auto& kv : file) data_parallel = data_parallel && kv.key().rfind("module.", 0) == 0;
    TORCH_CHECK_VALUE(false, who, ": '", path, "' does not match the model:",
                      missing.empty() ? "" : " missing keys [" + detail::key_list(missing) + "]",
                      unexpected.empty() ? "" : " unexpected keys [" + detail::key_list(unexpected) + "]",
                      data_parallel ? " (every key starts with 'module.': the file was saved from nn.DataParallel; "
                                      "strip that prefix in Python before saving)"
                                    : "",
                      " (pass strict = false to load the common keys only)");
  }
  for (const auto& kv : target) {
    if (!file.contains(kv.key())) continue;
    const torch::Tensor& source = file[kv.key()];
    TORCH_CHECK_VALUE(source.sizes() == kv.value().sizes(), who, ": '", path, "' entry '", kv.key(), "' has shape ",
                      detail::shape_string(source.sizes()), ", but the model expects ",
                      detail::shape_string(kv.value().sizes()));
  }
  torch::NoGradGuard no_grad;
  for (const auto& kv : target) {
    if (file.contains(kv.key())) {
      torch::Tensor dst = kv.value();
      dst.copy_(file[kv.key()]);
    }
  }
}

}  // namespace models
}  // namespace iat
