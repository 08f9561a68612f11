#pragma once
/// \file
/// iat::models::SmallCNN: a small, fast convolutional network for tests and the Fashion-MNIST demo.

#include <iat/model_ref.hpp>
#include <iat/models/common.hpp>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace iat {
namespace models {

/// Options of iat::models::SmallCNN. The defaults fit Fashion-MNIST (1×28×28, 10 classes).
///
/// **Example**
/// \code
/// auto fashion = iat::models::SmallCNNOptions(10).in_channels(1).image_size(28);
/// auto tiny = iat::models::SmallCNNOptions(4).image_size(8).width(4).hidden(16);   // for tests
/// \endcode
struct SmallCNNOptions {
  /// `num_classes`: the number of outputs.
  SmallCNNOptions(int64_t num_classes = 10)  // NOLINT(google-explicit-constructor): as LibTorch's options
      : num_classes_(num_classes) {}
  /// Number of classes (outputs of fc2).
  TORCH_ARG(int64_t, num_classes);
  /// Channels of the input images.
  TORCH_ARG(int64_t, in_channels) = 1;
  /// Height and width of the (square) input images, >= 4.
  TORCH_ARG(int64_t, image_size) = 28;
  /// Channels of conv1; conv2 has twice as many.
  TORCH_ARG(int64_t, width) = 32;
  /// Width of the hidden linear layer fc1, whose output is the penultimate feature vector.
  TORCH_ARG(int64_t, hidden) = 128;
  /// Per-channel mean subtracted inside the model: one value or in_channels values.
  TORCH_ARG(std::vector<double>, mean) = std::vector<double>{0.0};
  /// Per-channel standard deviation divided by inside the model: one value or in_channels values, > 0.
  TORCH_ARG(std::vector<double>, std) = std::vector<double>{1.0};
  /// The non-linearity.
  TORCH_ARG(Activation, activation) = Activation::kReLU;
};

/// conv1 (3×3, width, padding 1) → act → 2×2 max-pool → conv2 (3×3, 2·width, padding 1) → act →
/// 2×2 max-pool → flatten → fc1 (hidden) → act → fc2 (num_classes). With the defaults on 28×28 inputs:
/// 421,642 parameters; a forward+backward pass on 128 images took 0.12–0.2 s on one shared core
/// (docs/models.md), `width(16)` about a third of that. Parameters keep PyTorch's default initialisation. The penultimate features
/// are act(fc1(·)), [N, hidden].
///
/// **Example**
/// \code
/// iat::models::SmallCNN net(iat::models::SmallCNNOptions(10).mean(iat::models::fashion_mnist_mean())
///                                                           .std(iat::models::fashion_mnist_std()));
/// torch::Tensor logits = net(torch::rand({128, 1, 28, 28}));   // [128, 10]
/// \endcode
class SmallCNNImpl : public torch::nn::Cloneable<SmallCNNImpl> {
 public:
  explicit SmallCNNImpl(SmallCNNOptions opts = {}) : options(std::move(opts)) { reset(); }

  void reset() override {
    namespace nn = torch::nn;
    const char* who = "iat::models::SmallCNN";
    TORCH_CHECK_VALUE(options.num_classes() >= 1, who, ": num_classes must be >= 1, got ", options.num_classes());
    TORCH_CHECK_VALUE(options.in_channels() >= 1, who, ": in_channels must be >= 1, got ", options.in_channels());
    TORCH_CHECK_VALUE(options.image_size() >= 4, who, ": image_size must be >= 4, got ", options.image_size());
    TORCH_CHECK_VALUE(options.width() >= 1, who, ": width must be >= 1, got ", options.width());
    TORCH_CHECK_VALUE(options.hidden() >= 1, who, ": hidden must be >= 1, got ", options.hidden());
    const int64_t w = options.width();
    const int64_t side = options.image_size() / 2 / 2;
    normalize = register_module("normalize",
                                InputNormalization(options.in_channels(), options.mean(), options.std(), who));
    conv1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(options.in_channels(), w, 3).padding(1)));
    conv2 = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(w, 2 * w, 3).padding(1)));
    fc1 = register_module("fc1", nn::Linear(2 * w * side * side, options.hidden()));
    fc2 = register_module("fc2", nn::Linear(options.hidden(), options.num_classes()));
  }

  /// Logits [N, num_classes] of images x [N, in_channels, image_size, image_size] in [0, 1].
  torch::Tensor forward(const torch::Tensor& x) { return forward_features(x).logits; }

  /// Logits and the penultimate features [N, hidden].
  LogitsAndFeatures forward_features(const torch::Tensor& x) {
    const Activation act = options.activation();
    TORCH_CHECK_VALUE(x.dim() == 4 && x.size(2) == options.image_size() && x.size(3) == options.image_size(),
                      "iat::models::SmallCNN: expected images [N, ", options.in_channels(), ", ", options.image_size(),
                      ", ", options.image_size(), "] (option image_size), got ", x.sizes());
    auto out = torch::max_pool2d(activate(conv1(normalize(x)), act), 2);
    out = torch::max_pool2d(activate(conv2(out), act), 2);
    auto features = activate(fc1(out.flatten(1)), act);
    return {fc2(features), features};
  }

  /// The options the model was built with.
  SmallCNNOptions options;

  InputNormalization normalize{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};

/// Module holder of SmallCNNImpl (example there).
TORCH_MODULE(SmallCNN);

}  // namespace models
}  // namespace iat
