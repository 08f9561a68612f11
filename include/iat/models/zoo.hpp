#pragma once
/// \file
/// Models by name: iat::models::ModelSpec (architecture, activation, classes, input shape, normalisation),
/// make_model() building any of iat's classifiers from one behind one module type (AnyClassifier), the
/// per-dataset normalisation constants by name, and the spec's record in a LibTorch archive (what an
/// iat-train checkpoint stores, so iat/train/run_model.hpp can rebuild its model).

#include <iat/model_ref.hpp>
#include <iat/models/common.hpp>
#include <iat/models/preact_resnet.hpp>
#include <iat/models/small_cnn.hpp>
#include <iat/models/wide_resnet.hpp>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace iat {
namespace models {

/// What building a model needs: its architecture by name and what it must know about its data.
///
/// `arch`: "small-cnn", "prn18" (PreAct ResNet-18), or "wrn-<depth>-<width>" ("wrn-34-10", "wrn-28-10").
/// `activation`: "relu" or "silu". `mean` / `std`: the per-channel normalisation the model applies first
/// (one value for all channels, or one per channel; see normalization_for).
///
/// **Example**
/// \code
/// auto [mean, std] = iat::models::normalization_for("cifar10");
/// iat::models::ModelSpec spec{"wrn-34-10", "relu", 10, 3, 32, mean, std};
/// auto net = iat::models::make_model(spec);
/// \endcode
struct ModelSpec {
  std::string arch = "prn18";        ///< "small-cnn", "prn18", "wrn-<depth>-<width>"
  std::string activation = "relu";   ///< "relu" or "silu"
  int64_t num_classes = 10;          ///< classes C
  int64_t in_channels = 3;           ///< input channels
  int64_t image_size = 32;           ///< input height = width (used by small-cnn; the others pool globally)
  std::vector<double> mean{0.0};     ///< per-channel mean subtracted first
  std::vector<double> std{1.0};      ///< per-channel standard deviation divided by
};

/// Any of iat's models behind one module type: `forward` gives logits, `forward_features` logits and
/// penultimate features (so iat::ModelRef finds both), and the concrete model is the submodule `net`
/// (its parameters are named `net.<name>`; `inner()` is the model itself, for state dicts shared with
/// Python, whose keys have no `net.` prefix).
///
/// **Example**
/// \code
/// iat::models::AnyClassifier any(iat::models::PreActResNet18(iat::models::PreActResNetOptions(10)));
/// torch::Tensor logits = any(x);
/// iat::models::save_state_dict(any->inner(), "prn18.pt");
/// \endcode
class AnyClassifierImpl : public torch::nn::Module {
 public:
  /// Wraps a module holder of a model with `forward` and `forward_features` (every iat model).
  template <typename Holder>
  explicit AnyClassifierImpl(Holder net) {
    auto impl = net.ptr();
    inner_ = register_module("net", impl);
    auto* p = impl.get();
    forward_ = [p](const torch::Tensor& x) { return p->forward(x); };
    features_ = [p](const torch::Tensor& x) { return p->forward_features(x); };
  }
  /// Logits [N, C].
  torch::Tensor forward(const torch::Tensor& x) { return forward_(x); }
  /// Logits and penultimate features from one pass.
  LogitsAndFeatures forward_features(const torch::Tensor& x) { return features_(x); }
  /// The concrete model.
  torch::nn::Module& inner() { return *inner_; }

 private:
  std::shared_ptr<torch::nn::Module> inner_;
  std::function<torch::Tensor(const torch::Tensor&)> forward_;
  std::function<LogitsAndFeatures(const torch::Tensor&)> features_;
};
TORCH_MODULE(AnyClassifier);

/// The per-channel mean and std of a dataset's training images, by the names iat's readers give
/// ("cifar10", "cifar100", "svhn", "fashion-mnist"); the identity (0, 1) for any other name (synthetic
/// data, or data normalised elsewhere).
///
/// **Example**
/// \code
/// auto [mean, std] = iat::models::normalization_for("svhn");
/// \endcode
inline std::pair<std::vector<double>, std::vector<double>> normalization_for(const std::string& dataset) {
  if (dataset == "cifar10") return {cifar10_mean(), cifar10_std()};
  if (dataset == "cifar100") return {cifar100_mean(), cifar100_std()};
  if (dataset == "svhn") return {svhn_mean(), svhn_std()};
  if (dataset == "fashion-mnist") return {fashion_mnist_mean(), fashion_mnist_std()};
  return {{0.0}, {1.0}};
}

/// The activation of a name: "relu" or "silu"; anything else is refused, naming it.
///
/// **Example**
/// \code
/// auto act = iat::models::parse_activation("silu");  // Activation::kSiLU
/// \endcode
inline Activation parse_activation(const std::string& name) {
  if (name == "relu") return Activation::kReLU;
  TORCH_CHECK_VALUE(name == "silu", "iat::models: activation must be relu or silu, got '", name, "'");
  return Activation::kSiLU;
}

/// Empty when make_model() builds the architecture `arch`, otherwise what is wrong with the name (for a
/// command line's validation).
///
/// **Example**
/// \code
/// std::string why = iat::models::architecture_problem("wrn-34");  // "must be small-cnn, prn18 or ..."
/// \endcode
inline std::string architecture_problem(const std::string& arch) {
  int depth = 0, width = 0;
  char rest = 0;
  if (arch == "small-cnn" || arch == "prn18" ||
      (std::sscanf(arch.c_str(), "wrn-%d-%d%c", &depth, &width, &rest) == 2 && depth > 0 && width > 0)) {
    return std::string();
  }
  return "must be small-cnn, prn18 or wrn-<depth>-<width> (wrn-34-10, wrn-28-10), got '" + arch + "'";
}

/// Builds the model a spec names, with its normalisation, freshly initialised; an unknown architecture is
/// refused with the valid names.
///
/// **Example**
/// \code
/// auto cnn = iat::models::make_model({"small-cnn", "relu", 10, 1, 28, {0.2860}, {0.3530}});
/// \endcode
inline AnyClassifier make_model(const ModelSpec& s) {
  const auto act = parse_activation(s.activation);
  if (s.arch == "small-cnn") {
    return AnyClassifier(SmallCNN(SmallCNNOptions(s.num_classes)
                                      .in_channels(s.in_channels)
                                      .image_size(s.image_size)
                                      .mean(s.mean)
                                      .std(s.std)
                                      .activation(act)));
  }
  if (s.arch == "prn18") {
    return AnyClassifier(PreActResNet18(
        PreActResNetOptions(s.num_classes).in_channels(s.in_channels).mean(s.mean).std(s.std).activation(act)));
  }
  const auto problem = architecture_problem(s.arch);
  TORCH_CHECK_VALUE(problem.empty(), "iat::models::make_model: the architecture ", problem);
  int depth = 0, width = 0;
  std::sscanf(s.arch.c_str(), "wrn-%d-%d", &depth, &width);
  return AnyClassifier(WideResNet(WideResNetOptions(depth, width, s.num_classes)
                                      .in_channels(s.in_channels)
                                      .mean(s.mean)
                                      .std(s.std)
                                      .activation(act)));
}

/// Stores a spec in `archive` under `key` (a nested archive of plain values: arch, activation, num_classes,
/// in_channels, image_size, mean, std), as iat-train does in its checkpoints.
///
/// **Example**
/// \code
/// torch::serialize::OutputArchive archive;
/// iat::models::write_model_spec(archive, spec);
/// \endcode
inline void write_model_spec(torch::serialize::OutputArchive& archive, const ModelSpec& s,
                             const std::string& key = "model_spec") {
  torch::serialize::OutputArchive a;
  a.write("arch", c10::IValue(s.arch));
  a.write("activation", c10::IValue(s.activation));
  a.write("num_classes", c10::IValue(s.num_classes));
  a.write("in_channels", c10::IValue(s.in_channels));
  a.write("image_size", c10::IValue(s.image_size));
  a.write("mean", c10::IValue(s.mean));
  a.write("std", c10::IValue(s.std));
  archive.write(key, a);
}

/// Reads what write_model_spec stored; false when `archive` has no `key`. A record of the wrong shape is
/// refused, naming the entry.
///
/// **Example**
/// \code
/// iat::models::ModelSpec spec;
/// if (iat::models::read_model_spec(archive, spec)) auto net = iat::models::make_model(spec);
/// \endcode
inline bool read_model_spec(torch::serialize::InputArchive& archive, ModelSpec& out,
                            const std::string& key = "model_spec") {
  torch::serialize::InputArchive a;
  if (!archive.try_read(key, a)) return false;
  const char* who = "iat::models::read_model_spec";
  auto entry = [&](const char* name) {
    c10::IValue v;
    TORCH_CHECK_VALUE(a.try_read(name, v), who, ": the '", key, "' record has no '", name, "' entry");
    return v;
  };
  auto text = [&](const char* name) {
    auto v = entry(name);
    TORCH_CHECK_VALUE(v.isString(), who, ": '", key, "/", name, "' must be a string, got ", v.tagKind());
    return v.toStringRef();
  };
  auto integer = [&](const char* name) {
    auto v = entry(name);
    TORCH_CHECK_VALUE(v.isInt(), who, ": '", key, "/", name, "' must be an integer, got ", v.tagKind());
    return v.toInt();
  };
  auto numbers = [&](const char* name) {
    auto v = entry(name);
    TORCH_CHECK_VALUE(v.isDoubleList(), who, ": '", key, "/", name, "' must be a list of numbers, got ", v.tagKind());
    return v.toDoubleVector();
  };
  out = ModelSpec{text("arch"),         text("activation"), integer("num_classes"), integer("in_channels"),
                  integer("image_size"), numbers("mean"),  numbers("std")};
  return true;
}

}  // namespace models
}  // namespace iat
