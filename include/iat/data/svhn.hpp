#pragma once
/// \file
/// Reader of SVHN's cropped-digits format (http://ufldl.stanford.edu/housenumbers/): `train_32x32.mat`
/// and `test_32x32.mat`, MATLAB level-5 files with `X` (32×32×3×N uint8) and `y` (N×1, label 10 for the
/// digit 0), compressed (`-v7`) or not.

#include <iat/data/dataset.hpp>
#include <iat/data/detail/mat.hpp>

#include <torch/types.h>

#include <string>

namespace iat {
namespace data {

/// Reads an SVHN-format MAT-file: `X` [H, W, C, N] (MATLAB's order) becomes uint8 images [N, C, H, W];
/// `y` [N, 1] becomes int64 labels with 10 mapped to 0 (labels 0..9 are also accepted as they are).
///
/// **Example**
/// \code
/// auto extra = iat::data::read_svhn_mat("data/svhn/extra_32x32.mat");
/// \endcode
///
/// Errors (`c10::Error` naming the file): not a level-5 MAT-file, truncated elements, a corrupt compressed
/// element, a missing `X` or `y`, `X` not 4-dimensional or not holding integers in 0..255, `y` with a count
/// other than X's or a label outside 0..10.
inline Dataset read_svhn_mat(const std::string& path) {
  const char* who = "iat::data::read_svhn";
  const auto arrays = iat::detail::read_mat_file(who, path, {"X", "y"});
  const iat::detail::MatArray* x = nullptr;
  const iat::detail::MatArray* y = nullptr;
  std::string names;
  for (const auto& a : arrays) {
    names += (names.empty() ? "" : ", ") + a.name;
    if (a.name == "X") x = &a;
    if (a.name == "y") y = &a;
  }
  if (names.empty()) names = "none";
  TORCH_CHECK(x != nullptr, who, ": '", path, "' has no variable 'X' (variables: ", names, ")");
  TORCH_CHECK(y != nullptr, who, ": '", path, "' has no variable 'y' (variables: ", names, ")");
  TORCH_CHECK(x->values.defined() && !x->complex, who, ": '", path, "': 'X' must be a real numeric array (class ",
              x->array_class, ")");
  TORCH_CHECK(y->values.defined() && !y->complex, who, ": '", path, "': 'y' must be a real numeric array (class ",
              y->array_class, ")");
  TORCH_CHECK(x->dims.size() == 4 && (x->dims[2] == 3 || x->dims[2] == 1), who, ": '", path,
              "': 'X' must be H x W x C x N with C = 3 (or 1), got dimensions ", torch::IntArrayRef(x->dims));
  const int64_t n = x->dims[3];
  TORCH_CHECK(y->values.numel() == n && (y->dims.size() == 2 && (y->dims[0] == 1 || y->dims[1] == 1)), who, ": '",
              path, "': 'y' must be an N x 1 vector with N = ", n, " (X's count), got dimensions ",
              torch::IntArrayRef(y->dims));

  // X's column-major bytes read row-major are [N, C, W, H]: one transpose to [N, C, H, W].
  torch::Tensor images = x->values;
  if (images.scalar_type() != torch::kByte) {
    auto range = at::aminmax(images);
    const double lo = std::get<0>(range).item<double>();
    const double hi = std::get<1>(range).item<double>();
    TORCH_CHECK(lo >= 0 && hi <= 255 && images.eq(images.round()).all().item<bool>(), who, ": '", path,
                "': 'X' must hold integer pixel values in [0, 255], got values in [", lo, ", ", hi, "]");
    images = images.to(torch::kByte);
  }
  Dataset ds;
  ds.images = images.transpose(2, 3).contiguous();

  torch::Tensor labels = y->values.reshape({n});
  if (labels.is_floating_point()) {
    auto fractional = labels.ne(labels.round());
    if (fractional.any().item<bool>()) {
      const int64_t at = fractional.nonzero().select(1, 0)[0].item<int64_t>();
      TORCH_CHECK(false, who, ": '", path, "': label ", labels[at].item<double>(), " of example ", at,
                  " is not an integer");
    }
  }
  labels = labels.to(torch::kLong);
  iat::detail::check_file_labels(who, path, labels, 11);  // 0..10, 10 meaning the digit 0
  ds.labels = labels.masked_fill(labels == 10, 0);
  ds.num_classes = 10;
  ds.name = "svhn";
  return ds;
}

/// Reads SVHN from `dir`: `train_32x32.mat` (73 257 images) or `test_32x32.mat` (26 032), as
/// read_svhn_mat. Images uint8 [N, 3, 32, 32], labels 0..9 (the files' 10 becomes 0).
///
/// **Example**
/// \code
/// auto train = iat::data::read_svhn("data/svhn", iat::data::Split::kTrain);
/// \endcode
inline Dataset read_svhn(const std::string& dir, Split split) {
  return read_svhn_mat(iat::detail::join_path(dir, split == Split::kTrain ? "train_32x32.mat" : "test_32x32.mat"));
}

}  // namespace data
}  // namespace iat
