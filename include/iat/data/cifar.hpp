#pragma once
/// \file
/// Readers of the binary versions of CIFAR-10 and CIFAR-100 (https://www.cs.toronto.edu/~kriz/cifar.html).
/// Each file is read once and reshaped: no tensor operation per record.

#include <iat/data/dataset.hpp>
#include <iat/data/detail/io.hpp>

#include <torch/types.h>

#include <string>
#include <vector>

namespace iat {
namespace data {
namespace detail {

/// Parses fixed-size records of `label_bytes` label bytes followed by a 3×32×32 image from each file;
/// returns the images and the label byte at `label_column` of every record.
inline Dataset read_cifar_records(const char* who, const std::vector<std::string>& paths, int64_t label_bytes,
                                  int64_t label_column, int64_t num_classes, const std::string& name) {
  constexpr int64_t kImageBytes = 3 * 32 * 32;
  const int64_t record = label_bytes + kImageBytes;
  std::vector<torch::Tensor> images, labels;
  for (const auto& path : paths) {
    const iat::detail::ByteBuffer bytes = iat::detail::read_file_bytes(who, path);
    const auto size = static_cast<int64_t>(bytes.size());
    TORCH_CHECK(size > 0 && size % record == 0, who, ": '", path, "' has ", size,
                " bytes, not a positive multiple of the ", record, "-byte record (", label_bytes, " label byte",
                label_bytes > 1 ? "s" : "", " + 3072 pixel bytes)", size % record != 0 && size > record
                    ? "; the last record is truncated after " + std::to_string(size % record) + " bytes"
                    : std::string());
    const int64_t n = size / record;
    auto raw = torch::from_blob(const_cast<uint8_t*>(bytes.data()), {n, record}, torch::kByte);
    auto label = raw.select(1, label_column).to(torch::kLong);  // copies
    iat::detail::check_file_labels(who, path, label, num_classes);
    labels.push_back(label);
    images.push_back(raw.slice(1, label_bytes).reshape({n, 3, 32, 32}).clone());
  }
  Dataset ds;
  ds.images = images.size() == 1 ? images[0] : torch::cat(images);
  ds.labels = labels.size() == 1 ? labels[0] : torch::cat(labels);
  ds.num_classes = num_classes;
  ds.name = name;
  return ds;
}

/// `dir`, or its subfolder `sub` when `dir` lacks `probe` and the subfolder has it.
inline std::string resolve_dir(const std::string& dir, const std::string& sub, const std::string& probe) {
  if (iat::detail::file_exists(iat::detail::join_path(dir, probe))) return dir;
  const std::string nested = iat::detail::join_path(dir, sub);
  if (iat::detail::file_exists(iat::detail::join_path(nested, probe))) return nested;
  return dir;
}

}  // namespace detail

/// Reads CIFAR-10's binary version: `data_batch_1.bin` … `data_batch_5.bin` (train, 50 000 images) or
/// `test_batch.bin` (test, 10 000), each record 1 label byte + 3072 pixel bytes (R, G, B planes, row-major).
/// `dir` holds the files, or holds the `cifar-10-batches-bin` folder the archive unpacks to.
///
/// **Example**
/// \code
/// auto train = iat::data::read_cifar10("data", iat::data::Split::kTrain);   // data/cifar-10-batches-bin/...
/// // train.images: uint8 [50000, 3, 32, 32], train.labels: int64 [50000], train.num_classes == 10
/// \endcode
///
/// Errors (`c10::Error` naming the file): missing file, a size that is not a multiple of 3073 bytes
/// (truncated record), a label outside [0, 10).
inline Dataset read_cifar10(const std::string& dir, Split split) {
  const std::string root = detail::resolve_dir(dir, "cifar-10-batches-bin", "test_batch.bin");
  std::vector<std::string> paths;
  if (split == Split::kTrain) {
    for (int i = 1; i <= 5; ++i) paths.push_back(iat::detail::join_path(root, "data_batch_" + std::to_string(i) + ".bin"));
  } else {
    paths.push_back(iat::detail::join_path(root, "test_batch.bin"));
  }
  return detail::read_cifar_records("iat::data::read_cifar10", paths, 1, 0, 10, "cifar10");
}

/// Reads CIFAR-100's binary version: `train.bin` (50 000 images) or `test.bin` (10 000), each record a
/// coarse label byte (20 superclasses), a fine label byte (100 classes) and 3072 pixel bytes. `dir` holds
/// the files, or the `cifar-100-binary` folder the archive unpacks to.
///
/// **Example**
/// \code
/// auto fine = iat::data::read_cifar100("data", iat::data::Split::kTest);               // 100 classes
/// auto coarse = iat::data::read_cifar100("data", iat::data::Split::kTest, false);      // 20 superclasses
/// \endcode
///
/// Errors (`c10::Error` naming the file): missing file, a size that is not a multiple of 3074 bytes, a
/// label out of range.
inline Dataset read_cifar100(const std::string& dir, Split split, bool fine_labels = true) {
  const std::string root = detail::resolve_dir(dir, "cifar-100-binary", "test.bin");
  const std::string path = iat::detail::join_path(root, split == Split::kTrain ? "train.bin" : "test.bin");
  return detail::read_cifar_records("iat::data::read_cifar100", {path}, 2, fine_labels ? 1 : 0,
                                    fine_labels ? 100 : 20, fine_labels ? "cifar100" : "cifar100-coarse");
}

}  // namespace data
}  // namespace iat
