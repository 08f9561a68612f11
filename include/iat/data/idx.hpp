#pragma once
/// \file
/// Readers of IDX files (MNIST, Fashion-MNIST), gzipped or not: the gzip magic number decides, not the
/// file name. Each file is read (and inflated) once and reshaped.

#include <iat/data/dataset.hpp>
#include <iat/data/detail/io.hpp>

#include <torch/types.h>

#include <string>
#include <vector>

namespace iat {
namespace data {
namespace detail {

/// An IDX file's uint8 content and its dimensions.
struct IdxArray {
  std::vector<int64_t> dims;
  torch::Tensor values;  // uint8 with shape dims
};

/// Reads an IDX file of unsigned bytes (type code 0x08) with `expected_dims` dimensions.
inline IdxArray read_idx_file(const char* who, const std::string& path, int64_t expected_dims) {
  iat::detail::ByteBuffer bytes = iat::detail::read_file_bytes(who, path);
  if (iat::detail::is_gzip(bytes)) {
    // A gzip member ends with its uncompressed size modulo 2^32: a good first allocation.
    const size_t n = bytes.size();
    const size_t hint = n >= 18 ? (size_t{bytes[n - 4]} | (size_t{bytes[n - 3]} << 8) | (size_t{bytes[n - 2]} << 16) |
                                   (size_t{bytes[n - 1]} << 24))
                                : 0;
    bytes = iat::detail::inflate_bytes(who, path, bytes.data(), n, 0, iat::detail::Compression::kGzip, 0, hint);
  }
  iat::detail::ByteCursor cur(who, path, bytes.data(), bytes.size());
  const uint32_t magic = cur.u32_be("the IDX magic number");
  const uint32_t type = (magic >> 8) & 0xff;
  const uint32_t ndim = magic & 0xff;
  TORCH_CHECK((magic >> 16) == 0 && type == 0x08 && static_cast<int64_t>(ndim) == expected_dims, who, ": '", path,
              "' is not an IDX file of ", expected_dims, "-dimensional unsigned bytes: magic number 0x", std::hex,
              magic, std::dec, ", expected 0x", std::hex, 0x800 + expected_dims, std::dec,
              (magic >> 16) != 0 ? " (the first two bytes must be zero)" : "");
  IdxArray out;
  for (uint32_t d = 0; d < ndim; ++d) out.dims.push_back(static_cast<int64_t>(cur.u32_be("an IDX dimension")));
  const int64_t numel = iat::detail::checked_numel(who, path, out.dims);
  std::string shape;
  for (size_t d = 0; d < out.dims.size(); ++d) shape += (d ? "x" : "") + std::to_string(out.dims[d]);
  TORCH_CHECK(static_cast<uint64_t>(numel) == cur.remaining(), who, ": '", path, "': the header's dimensions ", shape,
              " need ", numel, " data bytes after the ", cur.position(), "-byte header, the file holds ",
              cur.remaining(),
              static_cast<uint64_t>(numel) > cur.remaining() ? " (truncated)" : "");
  out.values = iat::detail::bytes_to_tensor(cur.here(), out.dims);
  return out;
}

/// The first of `names` that exists in `dir`, or the first name (so that the error names it).
inline std::string first_existing(const std::string& dir, const std::vector<std::string>& names) {
  for (const auto& n : names) {
    const std::string p = iat::detail::join_path(dir, n);
    if (iat::detail::file_exists(p)) return p;
  }
  return iat::detail::join_path(dir, names.front());
}

}  // namespace detail

/// Reads an IDX image file ([N, rows, cols] unsigned bytes, magic 0x00000803) and its IDX label file ([N]
/// unsigned bytes, magic 0x00000801), each gzipped or not. Images come back as [N, 1, rows, cols].
///
/// **Example**
/// \code
/// auto test = iat::data::read_idx("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz");
/// // test.images: uint8 [10000, 1, 28, 28]
/// \endcode
///
/// Errors (`c10::Error` naming the file): missing or truncated file, a corrupt gzip stream, a wrong magic
/// number, a data size other than the header's dimensions state, different image and label counts, a
/// label outside [0, num_classes).
inline Dataset read_idx(const std::string& images_path, const std::string& labels_path, int64_t num_classes = 10) {
  const char* who = "iat::data::read_idx";
  TORCH_CHECK_VALUE(num_classes >= 1, who, ": num_classes must be >= 1, got ", num_classes);
  auto images = detail::read_idx_file(who, images_path, 3);
  auto labels = detail::read_idx_file(who, labels_path, 1);
  TORCH_CHECK(images.dims[0] == labels.dims[0], who, ": '", images_path, "' holds ", images.dims[0],
              " images but '", labels_path, "' holds ", labels.dims[0], " labels");
  Dataset ds;
  ds.labels = labels.values.to(torch::kLong);
  iat::detail::check_file_labels(who, labels_path, ds.labels, num_classes);
  ds.images = images.values.unsqueeze(1);
  ds.num_classes = num_classes;
  ds.name = images_path;
  return ds;
}

namespace detail {
inline Dataset read_idx_dir(const std::string& dir, Split split, const std::string& name) {
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  Dataset ds = read_idx(first_existing(dir, {prefix + "-images-idx3-ubyte.gz", prefix + "-images-idx3-ubyte",
                                             prefix + "-images.idx3-ubyte"}),
                        first_existing(dir, {prefix + "-labels-idx1-ubyte.gz", prefix + "-labels-idx1-ubyte",
                                             prefix + "-labels.idx1-ubyte"}),
                        10);
  ds.name = name;
  return ds;
}
}  // namespace detail

/// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST.
inline const char* default_fashion_mnist_dir() { return "/usr/share/datasets/fashion-mnist"; }

/// Reads Fashion-MNIST from `dir`: `train-images-idx3-ubyte.gz` and `train-labels-idx1-ubyte.gz` (60 000
/// images) or the `t10k-` pair (10 000), gzipped or not. 10 classes, images [N, 1, 28, 28].
///
/// **Example**
/// \code
/// auto train = iat::data::read_fashion_mnist();   // Debian's dataset-fashion-mnist package
/// auto test = iat::data::read_fashion_mnist("/data/fmnist", iat::data::Split::kTest);
/// \endcode
inline Dataset read_fashion_mnist(const std::string& dir = default_fashion_mnist_dir(), Split split = Split::kTrain) {
  return detail::read_idx_dir(dir, split, "fashion-mnist");
}

/// Reads MNIST from `dir` (the same file names as Fashion-MNIST).
///
/// **Example**
/// \code
/// auto test = iat::data::read_mnist("data/mnist", iat::data::Split::kTest);   // 10 000 images [1, 28, 28]
/// \endcode
inline Dataset read_mnist(const std::string& dir, Split split) { return detail::read_idx_dir(dir, split, "mnist"); }

}  // namespace data
}  // namespace iat
