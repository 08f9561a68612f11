#pragma once
// Building a classifier by name for the example programs (iat-train, iat-eval), behind one module type.

#include <iat/model_ref.hpp>
#include <iat/models/common.hpp>
#include <iat/models/preact_resnet.hpp>
#include <iat/models/small_cnn.hpp>
#include <iat/models/wide_resnet.hpp>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <string>
#include <vector>

namespace iat_examples {

/// What a model needs to know about its data: shape, classes, normalisation constants.
struct ModelSpec {
  std::string arch;        ///< "small-cnn", "prn18", "wrn-34-10", "wrn-28-10" (any "wrn-D-W")
  std::string activation;  ///< "relu" or "silu"
  int64_t num_classes = 10;
  int64_t in_channels = 3;
  int64_t image_size = 32;
  std::vector<double> mean{0.0}, std{1.0};
};

/// Any of iat's models behind one module type: `forward` gives logits, `forward_features` logits and
/// penultimate features (so iat::ModelRef finds both), and the concrete model is the submodule `net`.
class AnyClassifierImpl : public torch::nn::Module {
 public:
  template <typename Holder>
  explicit AnyClassifierImpl(Holder net) {
    auto impl = net.ptr();
    inner_ = register_module("net", impl);
    auto* p = impl.get();
    forward_ = [p](const torch::Tensor& x) { return p->forward(x); };
    features_ = [p](const torch::Tensor& x) { return p->forward_features(x); };
  }
  torch::Tensor forward(const torch::Tensor& x) { return forward_(x); }
  iat::LogitsAndFeatures forward_features(const torch::Tensor& x) { return features_(x); }
  /// The concrete model (for iat::models::save_state_dict: key names without the `net.` prefix).
  torch::nn::Module& inner() { return *inner_; }

 private:
  std::shared_ptr<torch::nn::Module> inner_;
  std::function<torch::Tensor(const torch::Tensor&)> forward_;
  std::function<iat::LogitsAndFeatures(const torch::Tensor&)> features_;
};
TORCH_MODULE(AnyClassifier);

/// The per-channel mean and std a model normalises its inputs with, by dataset name (identity for
/// unknown or synthetic data).
inline std::pair<std::vector<double>, std::vector<double>> normalization_for(const std::string& dataset) {
  namespace M = iat::models;
  if (dataset == "cifar10") return {M::cifar10_mean(), M::cifar10_std()};
  if (dataset == "cifar100") return {M::cifar100_mean(), M::cifar100_std()};
  if (dataset == "svhn") return {M::svhn_mean(), M::svhn_std()};
  if (dataset == "fashion-mnist") return {M::fashion_mnist_mean(), M::fashion_mnist_std()};
  return {{0.0}, {1.0}};
}

inline iat::models::Activation parse_activation(const std::string& name) {
  if (name == "relu") return iat::models::Activation::kReLU;
  TORCH_CHECK_VALUE(name == "silu", "--activation must be relu or silu, got '", name, "'");
  return iat::models::Activation::kSiLU;
}

/// Builds the model a spec names; unknown names get an error listing the valid ones.
inline AnyClassifier make_model(const ModelSpec& s) {
  const auto act = parse_activation(s.activation);
  if (s.arch == "small-cnn") {
    return AnyClassifier(iat::models::SmallCNN(iat::models::SmallCNNOptions(s.num_classes)
                                                   .in_channels(s.in_channels)
                                                   .image_size(s.image_size)
                                                   .mean(s.mean)
                                                   .std(s.std)
                                                   .activation(act)));
  }
  if (s.arch == "prn18") {
    return AnyClassifier(iat::models::PreActResNet18(
        iat::models::PreActResNetOptions(s.num_classes).in_channels(s.in_channels).mean(s.mean).std(s.std).activation(act)));
  }
  int depth = 0, width = 0;
  TORCH_CHECK_VALUE(std::sscanf(s.arch.c_str(), "wrn-%d-%d", &depth, &width) == 2,
                    "--model must be small-cnn, prn18 or wrn-<depth>-<width> (wrn-34-10, wrn-28-10), got '", s.arch,
                    "'");
  return AnyClassifier(iat::models::WideResNet(iat::models::WideResNetOptions(depth, width, s.num_classes)
                                                   .in_channels(s.in_channels)
                                                   .mean(s.mean)
                                                   .std(s.std)
                                                   .activation(act)));
}

}  // namespace iat_examples
