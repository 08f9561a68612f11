#pragma once
/// \file
/// iat::data::load_dataset: one entry point over the readers, by dataset name.

#include <iat/data/cifar.hpp>
#include <iat/data/dataset.hpp>
#include <iat/data/idx.hpp>
#include <iat/data/svhn.hpp>

#include <string>

namespace iat {
namespace data {

/// The names load_dataset accepts.
inline const char* dataset_names() { return "cifar10, cifar100, cifar100-coarse, svhn, fashion-mnist, mnist"; }

/// Reads the dataset `name` from `dir`: "cifar10" (read_cifar10), "cifar100" (read_cifar100, fine labels),
/// "cifar100-coarse" (20 superclasses), "svhn" (read_svhn), "fashion-mnist" (read_fashion_mnist; an empty
/// `dir` means Debian's /usr/share/datasets/fashion-mnist), "mnist" (read_mnist). Names are case-insensitive
/// and "cifar-10", "cifar-100", "fmnist", "fashion_mnist" are accepted too.
///
/// **Example**
/// \code
/// auto train = iat::data::load_dataset(args.dataset, args.data_dir, iat::data::Split::kTrain);
/// auto test = iat::data::load_dataset(args.dataset, args.data_dir, iat::data::Split::kTest);
/// \endcode
///
/// Errors: an unknown name (`c10::ValueError` listing the valid names), and each reader's file errors.
inline Dataset load_dataset(const std::string& name, const std::string& dir, Split split) {
  std::string key;
  for (char c : name) key += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (key == "cifar10" || key == "cifar-10") return read_cifar10(dir, split);
  if (key == "cifar100" || key == "cifar-100") return read_cifar100(dir, split, true);
  if (key == "cifar100-coarse" || key == "cifar-100-coarse") return read_cifar100(dir, split, false);
  if (key == "svhn") return read_svhn(dir, split);
  if (key == "fashion-mnist" || key == "fashion_mnist" || key == "fmnist") {
    return read_fashion_mnist(dir.empty() ? default_fashion_mnist_dir() : dir, split);
  }
  TORCH_CHECK_VALUE(key == "mnist", "iat::data::load_dataset: unknown dataset '", name,
                    "'; valid names: ", dataset_names());
  return read_mnist(dir, split);
}

}  // namespace data
}  // namespace iat
