#pragma once
/// \file
/// iat::models::PreActResNet (PreAct ResNet-18 by default): the pre-activation ResNet of He et al.
/// (2016) in the CIFAR form of the PGD-AT codebases (fast-adversarial, robust-overfitting), with input
/// normalisation inside the model and penultimate features for the feature-level inverse loss.

#include <iat/model_ref.hpp>
#include <iat/models/common.hpp>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <utility>
#include <string>
#include <vector>

namespace iat {
namespace models {

/// Options of iat::models::PreActResNet. The defaults give PreAct ResNet-18 for CIFAR-10 without
/// normalisation (mean 0, std 1).
///
/// **Example**
/// \code
/// auto opts = iat::models::PreActResNetOptions(10)
///                 .mean(iat::models::cifar10_mean())
///                 .std(iat::models::cifar10_std())
///                 .activation(iat::models::Activation::kReLU);
/// iat::models::PreActResNet18 net(opts);
/// \endcode
struct PreActResNetOptions {
  /// `num_classes`: the number of outputs.
  PreActResNetOptions(int64_t num_classes = 10)  // NOLINT(google-explicit-constructor): as LibTorch's options
      : num_classes_(num_classes) {}
  /// Number of classes (outputs of the last linear layer).
  TORCH_ARG(int64_t, num_classes);
  /// Channels of the input images (3 for CIFAR/SVHN, 1 for Fashion-MNIST).
  TORCH_ARG(int64_t, in_channels) = 3;
  /// Per-channel mean subtracted inside the model: one value or in_channels values.
  TORCH_ARG(std::vector<double>, mean) = std::vector<double>{0.0};
  /// Per-channel standard deviation divided by inside the model: one value or in_channels values, > 0.
  TORCH_ARG(std::vector<double>, std) = std::vector<double>{1.0};
  /// The non-linearity.
  TORCH_ARG(Activation, activation) = Activation::kReLU;
  /// Pre-activation basic blocks per stage (64, 128, 256, 512 channels): {2, 2, 2, 2} is ResNet-18,
  /// {3, 4, 6, 3} ResNet-34.
  TORCH_ARG(std::vector<int64_t>, num_blocks) = std::vector<int64_t>{2, 2, 2, 2};
};

/// The pre-activation basic block: out = conv2(act(bn2(conv1(act(bn1(x)))))) + shortcut, where the
/// shortcut is x, or a 1×1 strided convolution of x when the shape changes. This follows the PGD-AT
/// codebases (fast-adversarial, robust-overfitting), whose projection shortcut takes the block's input x
/// (other copies apply it to act(bn1(x))). Submodule names (bn1, conv1, bn2, conv2, shortcut.0) are
/// those of that definition.
///
/// **Example**
/// \code
/// iat::models::PreActBlock block(64, 128, /*stride=*/2, iat::models::Activation::kReLU);
/// torch::Tensor y = block(torch::rand({2, 64, 32, 32}));  // [2, 128, 16, 16]
/// \endcode
class PreActBlockImpl : public torch::nn::Cloneable<PreActBlockImpl> {
 public:
  PreActBlockImpl(int64_t in_planes, int64_t planes, int64_t stride, Activation activation)
      : in_planes_(in_planes), planes_(planes), stride_(stride), activation_(activation) {
    reset();
  }

  void reset() override {
    namespace nn = torch::nn;
    bn1 = register_module("bn1", nn::BatchNorm2d(in_planes_));
    conv1 = register_module(
        "conv1", nn::Conv2d(nn::Conv2dOptions(in_planes_, planes_, 3).stride(stride_).padding(1).bias(false)));
    bn2 = register_module("bn2", nn::BatchNorm2d(planes_));
    conv2 = register_module("conv2",
                            nn::Conv2d(nn::Conv2dOptions(planes_, planes_, 3).stride(1).padding(1).bias(false)));
    if (stride_ != 1 || in_planes_ != planes_) {
      shortcut = register_module(
          "shortcut", nn::Sequential(nn::Conv2d(nn::Conv2dOptions(in_planes_, planes_, 1).stride(stride_).bias(false))));
    } else {
      shortcut = nullptr;
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto skip = shortcut ? shortcut->forward(x) : x;
    auto out = conv1(activate(bn1(x), activation_));
    out = conv2(activate(bn2(out), activation_));
    return out + skip;
  }

  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Sequential shortcut{nullptr};  ///< empty (null) when the block keeps its shape

 private:
  int64_t in_planes_, planes_, stride_;
  Activation activation_;
};

/// Module holder of PreActBlockImpl (example there).
TORCH_MODULE(PreActBlock);

/// Pre-activation ResNet for 32×32 images (He et al., "Identity Mappings in Deep Residual Networks",
/// 2016), as defined in the PGD-AT codebases: conv1 (3×3, 64) → layer1..layer4 (64, 128, 256, 512
/// channels, strides 1, 2, 2, 2) → act(bn) → global average pooling → linear. The input is first
/// normalised by the options' mean/std (buffers of the submodule `normalize`). Parameters keep
/// PyTorch's default initialisation, as the reference does. State-dict keys (conv1.weight,
/// layer1.0.bn1.weight, layer2.0.shortcut.0.weight, bn.running_mean, linear.weight, ...) match the
/// reference, so iat::models::save_state_dict files load there with strict=True.
///
/// `forward(x)` gives logits [N, num_classes]; `forward_features(x)` also gives the 512-d features after
/// global pooling, before `linear`, which iat::ModelRef picks up for the feature-level inverse loss.
///
/// **Example**
/// \code
/// iat::models::PreActResNet18 net(iat::models::PreActResNetOptions(10));
/// torch::Tensor logits = net(torch::rand({8, 3, 32, 32}));            // [8, 10]
/// iat::LogitsAndFeatures lf = net->forward_features(torch::rand({8, 3, 32, 32}));  // features [8, 512]
/// \endcode
class PreActResNetImpl : public torch::nn::Cloneable<PreActResNetImpl> {
 public:
  explicit PreActResNetImpl(PreActResNetOptions opts = {}) : options(std::move(opts)) { reset(); }

  void reset() override {
    namespace nn = torch::nn;
    const char* who = "iat::models::PreActResNet";
    TORCH_CHECK_VALUE(options.num_classes() >= 1, who, ": num_classes must be >= 1, got ", options.num_classes());
    TORCH_CHECK_VALUE(options.in_channels() >= 1, who, ": in_channels must be >= 1, got ", options.in_channels());
    TORCH_CHECK_VALUE(options.num_blocks().size() == 4, who, ": num_blocks must hold 4 stage sizes, got ",
                      options.num_blocks().size());
    for (int64_t n : options.num_blocks()) {
      TORCH_CHECK_VALUE(n >= 1, who, ": every entry of num_blocks must be >= 1, got ", n);
    }
    normalize = register_module("normalize",
                                InputNormalization(options.in_channels(), options.mean(), options.std(), who));
    conv1 = register_module(
        "conv1", nn::Conv2d(nn::Conv2dOptions(options.in_channels(), 64, 3).stride(1).padding(1).bias(false)));
    int64_t in_planes = 64;
    const int64_t widths[4] = {64, 128, 256, 512};
    const int64_t strides[4] = {1, 2, 2, 2};
    nn::Sequential* stages[4] = {&layer1, &layer2, &layer3, &layer4};
    for (int s = 0; s < 4; ++s) {
      nn::Sequential stage;
      for (int64_t b = 0; b < options.num_blocks()[s]; ++b) {
        stage->push_back(PreActBlock(in_planes, widths[s], b == 0 ? strides[s] : 1, options.activation()));
        in_planes = widths[s];
      }
      *stages[s] = register_module("layer" + std::to_string(s + 1), stage);
    }
    bn = register_module("bn", nn::BatchNorm2d(512));
    linear = register_module("linear", nn::Linear(512, options.num_classes()));
  }

  /// Logits [N, num_classes] of images x [N, in_channels, H, W] in [0, 1].
  torch::Tensor forward(const torch::Tensor& x) { return forward_features(x).logits; }

  /// Logits and the penultimate features [N, 512] (after global average pooling, before `linear`).
  LogitsAndFeatures forward_features(const torch::Tensor& x) {
    auto out = conv1(normalize(x));
    out = layer4->forward(layer3->forward(layer2->forward(layer1->forward(out))));
    out = activate(bn(out), options.activation());
    auto features = out.mean({2, 3});
    return {linear(features), features};
  }

  /// The options the model was built with.
  PreActResNetOptions options;

  InputNormalization normalize{nullptr};
  torch::nn::Conv2d conv1{nullptr};
  torch::nn::Sequential layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  torch::nn::Linear linear{nullptr};
};

/// Module holder of PreActResNetImpl (example there).
TORCH_MODULE(PreActResNet);

/// PreAct ResNet-18: iat::models::PreActResNet with its default num_blocks {2, 2, 2, 2}.
///
/// **Example**
/// \code
/// iat::models::PreActResNet18 net(iat::models::PreActResNetOptions(100).mean(iat::models::cifar100_mean())
///                                                                     .std(iat::models::cifar100_std()));
/// \endcode
using PreActResNet18 = PreActResNet;
/// The module type behind iat::models::PreActResNet18.
///
/// **Example**
/// \code
/// auto net = std::make_shared<iat::models::PreActResNet18Impl>(iat::models::PreActResNetOptions(10));
/// \endcode
using PreActResNet18Impl = PreActResNetImpl;

}  // namespace models
}  // namespace iat
