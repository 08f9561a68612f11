// Fuzz target: SVHN's MATLAB level-5 .mat files, with and without miCOMPRESSED elements; v7.3 (HDF5) files
// must be refused cleanly (iat/data/svhn.hpp, iat/data/detail/mat.hpp).
#include "fuzz_support.hpp"

#include <iat/data/svhn.hpp>

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  iat_fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static iat_fuzz::InputFile file(".mat");
  const auto& path = file.write(data, size);
  iat::data::Dataset ds;
  if (!iat_fuzz::expect_clean({path}, [&] { ds = iat::data::read_svhn_mat(path); })) return 0;
  if (ds.images.dim() != 4 || ds.labels.size(0) != ds.images.size(0) ||
      (ds.labels.numel() > 0 && (ds.labels.min().item<int64_t>() < 0 || ds.labels.max().item<int64_t>() >= 10))) {
    iat_fuzz::finding("an SVHN file accepted with inconsistent images or labels");
  }
  return 0;
}
