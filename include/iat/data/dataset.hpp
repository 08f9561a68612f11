#pragma once
/// \file
/// iat::data::Dataset: a whole image classification dataset in memory (uint8 images [N, C, H, W] and
/// int64 labels [N], on the CPU), the form every reader returns and every loader takes.

#include <torch/types.h>

#include <string>

namespace iat {
namespace data {

/// Which part of a dataset a reader returns.
enum class Split {
  kTrain,  ///< the training set
  kTest,   ///< the test set
};

/// A whole dataset in memory: uint8 images [N, C, H, W] (pixel values 0..255) and int64 labels [N] in
/// [0, num_classes). Readers fill it once from their files; loaders turn it into float batches.
///
/// **Example**
/// \code
/// iat::data::Dataset train = iat::data::read_cifar10("data/cifar-10-batches-bin", iat::data::Split::kTrain);
/// std::cout << train.name << ": " << train.size() << " images of " << train.images.sizes() << "\n";
/// auto first = train.images[0];                       // uint8 [3, 32, 32]
/// iat::data::Dataset small = train.subset(torch::arange(1000));
/// \endcode
struct Dataset {
  /// uint8 [N, C, H, W], on the CPU.
  torch::Tensor images;
  /// int64 [N] class labels.
  torch::Tensor labels;
  /// Number of classes (labels lie in [0, num_classes)).
  int64_t num_classes = 0;
  /// A short name: "cifar10", "cifar100", "svhn", "fashion-mnist", "mnist", or the file it came from.
  std::string name;

  /// Number of examples N.
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
  /// Channels C.
  int64_t channels() const { return images.size(1); }
  /// Height H.
  int64_t height() const { return images.size(2); }
  /// Width W.
  int64_t width() const { return images.size(3); }

  /// The examples at `indices` (int64 [K], any order, repeats allowed), copied; same classes and name.
  Dataset subset(const torch::Tensor& indices) const {
    TORCH_CHECK_VALUE(indices.dim() == 1 && indices.scalar_type() == torch::kLong,
                      "iat::data::Dataset::subset: indices must be an int64 vector, got ", indices.scalar_type(), " ",
                      indices.sizes());
    if (indices.numel() > 0) {
      const int64_t lo = indices.min().item<int64_t>();
      const int64_t hi = indices.max().item<int64_t>();
      TORCH_CHECK_VALUE(lo >= 0 && hi < size(), "iat::data::Dataset::subset: indices must be in [0, ", size(),
                        "), got [", lo, ", ", hi, "]");
    }
    auto idx = indices.cpu();
    return Dataset{images.index_select(0, idx), labels.index_select(0, idx), num_classes, name};
  }

  /// Fails with a message naming `who` unless the dataset is well formed: uint8 [N, C, H, W] images and
  /// int64 [N] labels in [0, num_classes), N > 0, on the CPU.
  void check(const char* who) const {
    TORCH_CHECK_VALUE(images.defined() && labels.defined(), who, ": the dataset '", name, "' is empty (undefined tensors)");
    TORCH_CHECK_VALUE(images.scalar_type() == torch::kByte && images.dim() == 4, who, ": dataset '", name,
                      "': images must be uint8 [N, C, H, W], got ", images.scalar_type(), " ", images.sizes());
    TORCH_CHECK_VALUE(labels.scalar_type() == torch::kLong && labels.dim() == 1 && labels.size(0) == images.size(0),
                      who, ": dataset '", name, "': labels must be int64 [N] with N = ", images.size(0), ", got ",
                      labels.scalar_type(), " ", labels.sizes());
    TORCH_CHECK_VALUE(images.size(0) > 0, who, ": dataset '", name, "' has no examples");
    TORCH_CHECK_VALUE(images.device().is_cpu() && labels.device().is_cpu(), who, ": dataset '", name,
                      "' must be on the CPU (loaders move batches to the device)");
    TORCH_CHECK_VALUE(num_classes >= 1, who, ": dataset '", name, "': num_classes must be >= 1, got ", num_classes);
    auto range = at::aminmax(labels);
    const int64_t lo = std::get<0>(range).item<int64_t>();
    const int64_t hi = std::get<1>(range).item<int64_t>();
    TORCH_CHECK_VALUE(lo >= 0 && hi < num_classes, who, ": dataset '", name, "': labels must be in [0, ", num_classes,
                      "), got [", lo, ", ", hi, "]");
  }
};

}  // namespace data
}  // namespace iat
