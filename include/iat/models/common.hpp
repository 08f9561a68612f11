#pragma once
/// \file
/// Pieces shared by iat's models: the activation switch, input normalisation by mean/std inside the
/// model, the usual per-dataset normalisation constants, and a parameter counter.

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace iat {
namespace models {

/// The non-linearity used throughout a model.
///
/// **Example**
/// \code
/// auto opts = iat::models::WideResNetOptions(28, 10, 10).activation(iat::models::Activation::kSiLU);
/// \endcode
enum class Activation {
  kReLU,  ///< max(x, 0): PreAct ResNet-18 and WRN-34-10 as in the PGD-AT / TRADES codebases
  kSiLU,  ///< x·sigmoid(x) (Swish): the WRN-28-10 of the generated-data setting
};

/// Applies `activation` to `x`.
///
/// **Example**
/// \code
/// auto y = iat::models::activate(x, iat::models::Activation::kSiLU);  // == torch::silu(x)
/// \endcode
inline torch::Tensor activate(const torch::Tensor& x, Activation activation) {
  return activation == Activation::kSiLU ? torch::silu(x) : torch::relu(x);
}

/// Per-channel mean of the CIFAR-10 training images (inputs in [0, 1]).
///
/// **Example**
/// \code
/// auto opts = iat::models::PreActResNetOptions(10).mean(iat::models::cifar10_mean())
///                                                 .std(iat::models::cifar10_std());
/// \endcode
inline std::vector<double> cifar10_mean() { return {0.4914, 0.4822, 0.4465}; }
/// Per-channel standard deviation of the CIFAR-10 training images.
///
/// **Example**
/// \code
/// iat::models::InputNormalization norm(3, iat::models::cifar10_mean(), iat::models::cifar10_std());
/// \endcode
inline std::vector<double> cifar10_std() { return {0.2471, 0.2435, 0.2616}; }
/// Per-channel mean of the CIFAR-100 training images.
///
/// **Example**
/// \code
/// auto opts = iat::models::WideResNetOptions(34, 10, 100).mean(iat::models::cifar100_mean())
///                                                        .std(iat::models::cifar100_std());
/// \endcode
inline std::vector<double> cifar100_mean() { return {0.5071, 0.4865, 0.4409}; }
/// Per-channel standard deviation of the CIFAR-100 training images.
///
/// **Example**
/// \code
/// iat::models::InputNormalization norm(3, iat::models::cifar100_mean(), iat::models::cifar100_std());
/// \endcode
inline std::vector<double> cifar100_std() { return {0.2673, 0.2564, 0.2762}; }
/// Per-channel mean of the SVHN training images.
///
/// **Example**
/// \code
/// auto opts = iat::models::PreActResNetOptions(10).mean(iat::models::svhn_mean()).std(iat::models::svhn_std());
/// \endcode
inline std::vector<double> svhn_mean() { return {0.4377, 0.4438, 0.4728}; }
/// Per-channel standard deviation of the SVHN training images.
///
/// **Example**
/// \code
/// iat::models::InputNormalization norm(3, iat::models::svhn_mean(), iat::models::svhn_std());
/// \endcode
inline std::vector<double> svhn_std() { return {0.1980, 0.2010, 0.1970}; }
/// Mean of the Fashion-MNIST training images (one channel).
///
/// **Example**
/// \code
/// auto opts = iat::models::SmallCNNOptions(10).mean(iat::models::fashion_mnist_mean())
///                                             .std(iat::models::fashion_mnist_std());
/// \endcode
inline std::vector<double> fashion_mnist_mean() { return {0.2860}; }
/// Standard deviation of the Fashion-MNIST training images (one channel).
///
/// **Example**
/// \code
/// iat::models::InputNormalization norm(1, iat::models::fashion_mnist_mean(), iat::models::fashion_mnist_std());
/// \endcode
inline std::vector<double> fashion_mnist_std() { return {0.3530}; }

/// Number of scalar parameters of a module and all its submodules (buffers not counted), as
/// `sum(p.numel() for p in model.parameters())` counts them in Python.
///
/// **Example**
/// \code
/// iat::models::PreActResNet18 net(10);
/// int64_t n = iat::models::count_parameters(*net);  // 11,172,170 for PreActResNet18(10)
/// \endcode
inline int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters(/*recurse=*/true)) n += p.numel();
  return n;
}

/// (x - mean) / std per channel, with mean and std held as buffers `mean` and `std` of shape
/// [1, C, 1, 1], so that they move with `.to(device)`. Every iat model starts with one, registered as
/// the submodule `normalize`. Its buffers are architecture constants (they come from the options), so
/// iat::models::save_state_dict leaves them out of the file and iat::models::load_state_dict does not
/// expect them (docs/models.md, "Interop").
///
/// **Example**
/// \code
/// iat::models::InputNormalization norm(3, iat::models::cifar10_mean(), iat::models::cifar10_std());
/// torch::Tensor z = norm(x);  // x: [N, 3, H, W] in [0, 1]
/// \endcode
class InputNormalizationImpl : public torch::nn::Cloneable<InputNormalizationImpl> {
 public:
  /// `mean` and `std` hold one value (used for every channel) or one value per channel; every std must
  /// be > 0. `who` names the owning model in error messages.
  InputNormalizationImpl(int64_t channels, std::vector<double> mean, std::vector<double> stddev,
                         std::string who = "iat::models::InputNormalization")
      : channels_(channels), mean_values_(std::move(mean)), std_values_(std::move(stddev)), who_(std::move(who)) {
    TORCH_CHECK_VALUE(channels_ >= 1, who_, ": in_channels must be >= 1, got ", channels_);
    check_values("mean", mean_values_, /*positive=*/false);
    check_values("std", std_values_, /*positive=*/true);
    reset();
  }

  void reset() override {
    mean_ = register_buffer("mean", expand(mean_values_));
    std_ = register_buffer("std", expand(std_values_));
  }

  /// Normalises a batch [N, C, H, W].
  torch::Tensor forward(const torch::Tensor& x) {
    TORCH_CHECK_VALUE(x.defined() && x.dim() == 4 && x.size(1) == channels_, who_,
                      ": expected an image batch [N, ", channels_, ", H, W], got ",
                      x.defined() ? x.sizes() : torch::IntArrayRef{});
    return (x - mean_) / std_;
  }

  /// The number of input channels.
  int64_t channels() const { return channels_; }

 private:
  void check_values(const char* option, const std::vector<double>& values, bool positive) const {
    TORCH_CHECK_VALUE(values.size() == 1 || static_cast<int64_t>(values.size()) == channels_, who_, ": ", option,
                      " must hold 1 or in_channels = ", channels_, " values, got ", values.size());
    for (double v : values) {
      TORCH_CHECK_VALUE(std::isfinite(v) && (!positive || v > 0.0), who_, ": ", option, " must hold ",
                        positive ? "positive" : "finite", " values, got ", v);
    }
  }

  torch::Tensor expand(const std::vector<double>& values) const {
    auto t = torch::tensor(values, torch::kFloat);
    if (t.numel() == 1) t = t.expand({channels_}).clone();
    return t.reshape({1, channels_, 1, 1});
  }

  int64_t channels_;
  std::vector<double> mean_values_;
  std::vector<double> std_values_;
  std::string who_;
  torch::Tensor mean_, std_;
};

/// Module holder of InputNormalizationImpl (example there).
TORCH_MODULE(InputNormalization);

}  // namespace models
}  // namespace iat
