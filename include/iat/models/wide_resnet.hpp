#pragma once
/// \file
/// iat::models::WideResNet (WRN-depth-width, Zagoruyko & Komodakis 2016) in the form of the TRADES /
/// MART codebases: WRN-34-10, WRN-28-10, ReLU or SiLU, input normalisation inside the model and
/// penultimate features for the feature-level inverse loss.

#include <iat/model_ref.hpp>
#include <iat/models/common.hpp>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/dropout.h>
#include <torch/nn/init.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <utility>
#include <string>
#include <vector>

namespace iat {
namespace models {

/// Options of iat::models::WideResNet. Required: depth (6n + 4: 28, 34, ...), widen factor and the
/// number of classes; the defaults give WRN-34-10 for CIFAR-10 without normalisation.
///
/// **Example**
/// \code
/// auto wrn34 = iat::models::WideResNetOptions(34, 10, 10);                       // TRADES / UIAT
/// auto wrn28 = iat::models::WideResNetOptions(28, 10, 10).activation(iat::models::Activation::kSiLU)
///                  .mean(iat::models::cifar10_mean()).std(iat::models::cifar10_std());
/// \endcode
struct WideResNetOptions {
  WideResNetOptions(int64_t depth = 34, int64_t widen_factor = 10, int64_t num_classes = 10)
      : depth_(depth), widen_factor_(widen_factor), num_classes_(num_classes) {}
  /// Number of layers, 6n + 4 with n >= 1 blocks per stage (34: n = 5, 28: n = 4).
  TORCH_ARG(int64_t, depth);
  /// Width multiplier k: the stages have 16k, 32k, 64k channels.
  TORCH_ARG(int64_t, widen_factor);
  /// Number of classes (outputs of `fc`).
  TORCH_ARG(int64_t, num_classes);
  /// Channels of the input images.
  TORCH_ARG(int64_t, in_channels) = 3;
  /// Per-channel mean subtracted inside the model: one value or in_channels values.
  TORCH_ARG(std::vector<double>, mean) = std::vector<double>{0.0};
  /// Per-channel standard deviation divided by inside the model: one value or in_channels values, > 0.
  TORCH_ARG(std::vector<double>, std) = std::vector<double>{1.0};
  /// The non-linearity.
  TORCH_ARG(Activation, activation) = Activation::kReLU;
  /// Dropout probability between the two convolutions of each block (0 in TRADES/MART).
  TORCH_ARG(double, drop_rate) = 0.0;
  /// Also build TRADES's `sub_block1`: a copy of block1 that forward never uses. It only exists so that
  /// checkpoints of the TRADES/MART code (which carry `sub_block1.*` keys) load with strict key
  /// matching, and files saved from this model load into that code with strict=True. It adds
  /// parameters (WRN-34-10: 48,262,586 instead of 46,160,474).
  TORCH_ARG(bool, sub_block1) = false;
};

/// The WRN basic block (pre-activation): bn1 → act → conv1 (3×3, stride) → bn2 → act → [dropout] →
/// conv2 (3×3), plus x when the channel count is unchanged, or plus convShortcut(act(bn1(x))) (1×1,
/// stride) when it changes, as in the TRADES definition (names bn1, conv1, bn2, conv2, convShortcut).
///
/// **Example**
/// \code
/// iat::models::WideBasicBlock block(16, 160, /*stride=*/1, 0.0, iat::models::Activation::kReLU);
/// torch::Tensor y = block(torch::rand({2, 16, 32, 32}));  // [2, 160, 32, 32]
/// \endcode
class WideBasicBlockImpl : public torch::nn::Cloneable<WideBasicBlockImpl> {
 public:
  WideBasicBlockImpl(int64_t in_planes, int64_t out_planes, int64_t stride, double drop_rate, Activation activation)
      : in_planes_(in_planes), out_planes_(out_planes), stride_(stride), drop_rate_(drop_rate),
        activation_(activation) {
    reset();
  }

  void reset() override {
    namespace nn = torch::nn;
    bn1 = register_module("bn1", nn::BatchNorm2d(in_planes_));
    conv1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(in_planes_, out_planes_, 3)
                                                    .stride(stride_).padding(1).bias(false)));
    bn2 = register_module("bn2", nn::BatchNorm2d(out_planes_));
    conv2 = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(out_planes_, out_planes_, 3)
                                                    .stride(1).padding(1).bias(false)));
    if (in_planes_ != out_planes_) {
      conv_shortcut = register_module("convShortcut", nn::Conv2d(nn::Conv2dOptions(in_planes_, out_planes_, 1)
                                                                    .stride(stride_).padding(0).bias(false)));
    } else {
      conv_shortcut = nullptr;
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto pre = activate(bn1(x), activation_);
    auto out = activate(bn2(conv1(pre)), activation_);
    if (drop_rate_ > 0.0) {
      out = torch::nn::functional::dropout(out,
                                           torch::nn::functional::DropoutFuncOptions().p(drop_rate_).training(is_training()));
    }
    out = conv2(out);
    return (conv_shortcut ? conv_shortcut(pre) : x) + out;
  }

  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Conv2d conv_shortcut{nullptr};  ///< registered as `convShortcut`; null when in_planes == out_planes

 private:
  int64_t in_planes_, out_planes_, stride_;
  double drop_rate_;
  Activation activation_;
};

/// Module holder of WideBasicBlockImpl (example there).
TORCH_MODULE(WideBasicBlock);

/// One WRN stage: `layer`, a Sequential of n WideBasicBlocks (the first one changes width and stride).
///
/// **Example**
/// \code
/// iat::models::WideResNetStage stage(5, 160, 320, /*stride=*/2, 0.0, iat::models::Activation::kReLU);
/// \endcode
class WideResNetStageImpl : public torch::nn::Cloneable<WideResNetStageImpl> {
 public:
  WideResNetStageImpl(int64_t blocks, int64_t in_planes, int64_t out_planes, int64_t stride, double drop_rate,
                      Activation activation)
      : blocks_(blocks), in_planes_(in_planes), out_planes_(out_planes), stride_(stride), drop_rate_(drop_rate),
        activation_(activation) {
    reset();
  }

  void reset() override {
    torch::nn::Sequential seq;
    for (int64_t i = 0; i < blocks_; ++i) {
      seq->push_back(WideBasicBlock(i == 0 ? in_planes_ : out_planes_, out_planes_, i == 0 ? stride_ : 1,
                                    drop_rate_, activation_));
    }
    layer = register_module("layer", seq);
  }

  torch::Tensor forward(const torch::Tensor& x) { return layer->forward(x); }

  torch::nn::Sequential layer{nullptr};

 private:
  int64_t blocks_, in_planes_, out_planes_, stride_;
  double drop_rate_;
  Activation activation_;
};

/// Module holder of WideResNetStageImpl (example there).
TORCH_MODULE(WideResNetStage);

/// Wide residual network for 32×32 images as in the TRADES / MART codebases: conv1 (3×3, 16) →
/// block1, block2, block3 (16k, 32k, 64k channels; strides 1, 2, 2; n = (depth − 4)/6 blocks each) →
/// act(bn1) → global average pooling → fc. The input is first normalised by the options' mean/std.
///
/// Initialisation as in the reference: convolutions N(0, 2/(k·k·out_channels)) (Kaiming normal,
/// fan_out), BatchNorm weight 1 and bias 0, `fc` bias 0 (its weight keeps PyTorch's default).
/// State-dict keys (conv1.weight, block1.layer.0.bn1.weight, block1.layer.0.convShortcut.weight,
/// bn1.running_var, fc.weight, ...) match the reference. WRN-34-10 has 46,160,474 parameters, WRN-28-10
/// 36,479,194.
///
/// `forward_features(x)` gives the logits and the 64k-d features before `fc`.
///
/// **Example**
/// \code
/// iat::models::WideResNet wrn(iat::models::WideResNetOptions(34, 10, 10));
/// torch::Tensor logits = wrn(torch::rand({2, 3, 32, 32}));  // [2, 10]; features [2, 640]
/// \endcode
class WideResNetImpl : public torch::nn::Cloneable<WideResNetImpl> {
 public:
  explicit WideResNetImpl(WideResNetOptions opts = {}) : options(std::move(opts)) { reset(); }

  void reset() override {
    namespace nn = torch::nn;
    const char* who = "iat::models::WideResNet";
    const int64_t depth = options.depth();
    TORCH_CHECK_VALUE(depth >= 10 && (depth - 4) % 6 == 0, who,
                      ": depth must be 6n + 4 with n >= 1 (e.g. 28 or 34), got ", depth);
    TORCH_CHECK_VALUE(options.widen_factor() >= 1, who, ": widen_factor must be >= 1, got ", options.widen_factor());
    TORCH_CHECK_VALUE(options.num_classes() >= 1, who, ": num_classes must be >= 1, got ", options.num_classes());
    TORCH_CHECK_VALUE(options.in_channels() >= 1, who, ": in_channels must be >= 1, got ", options.in_channels());
    TORCH_CHECK_VALUE(options.drop_rate() >= 0.0 && options.drop_rate() < 1.0, who,
                      ": drop_rate must be in [0, 1), got ", options.drop_rate());
    const int64_t n = (depth - 4) / 6;
    const int64_t k = options.widen_factor();
    const int64_t ch[4] = {16, 16 * k, 32 * k, 64 * k};
    const double p = options.drop_rate();
    const Activation act = options.activation();

    normalize = register_module("normalize",
                                InputNormalization(options.in_channels(), options.mean(), options.std(), who));
    conv1 = register_module(
        "conv1", nn::Conv2d(nn::Conv2dOptions(options.in_channels(), ch[0], 3).stride(1).padding(1).bias(false)));
    block1 = register_module("block1", WideResNetStage(n, ch[0], ch[1], 1, p, act));
    if (options.sub_block1()) {
      sub_block1 = register_module("sub_block1", WideResNetStage(n, ch[0], ch[1], 1, p, act));
    } else {
      sub_block1 = nullptr;
    }
    block2 = register_module("block2", WideResNetStage(n, ch[1], ch[2], 2, p, act));
    block3 = register_module("block3", WideResNetStage(n, ch[2], ch[3], 2, p, act));
    bn1 = register_module("bn1", nn::BatchNorm2d(ch[3]));
    fc = register_module("fc", nn::Linear(ch[3], options.num_classes()));

    torch::NoGradGuard no_grad;
    for (auto& module : modules(/*include_self=*/false)) {
      if (auto* conv = module->as<nn::Conv2d>()) {
        nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      } else if (auto* norm = module->as<nn::BatchNorm2d>()) {
        nn::init::ones_(norm->weight);
        nn::init::zeros_(norm->bias);
      } else if (auto* linear = module->as<nn::Linear>()) {
        nn::init::zeros_(linear->bias);
      }
    }
  }

  /// Logits [N, num_classes] of images x [N, in_channels, H, W] in [0, 1].
  torch::Tensor forward(const torch::Tensor& x) { return forward_features(x).logits; }

  /// Logits and the penultimate features [N, 64·widen_factor] (after global average pooling, before fc).
  LogitsAndFeatures forward_features(const torch::Tensor& x) {
    auto out = conv1(normalize(x));
    out = block3(block2(block1(out)));
    out = activate(bn1(out), options.activation());
    auto features = out.mean({2, 3});
    return {fc(features), features};
  }

  /// The options the model was built with.
  WideResNetOptions options;

  InputNormalization normalize{nullptr};
  torch::nn::Conv2d conv1{nullptr};
  WideResNetStage block1{nullptr}, sub_block1{nullptr}, block2{nullptr}, block3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  torch::nn::Linear fc{nullptr};
};

/// Module holder of WideResNetImpl (example there).
TORCH_MODULE(WideResNet);

}  // namespace models
}  // namespace iat
