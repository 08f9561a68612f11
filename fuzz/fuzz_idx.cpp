// Fuzz target: IDX image and label files, raw or gzipped (iat/data/idx.hpp). The input frames two files
// (fuzz_support.hpp: unframe): images, then labels.
#include "fuzz_support.hpp"

#include <iat/data/idx.hpp>

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  iat_fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static iat_fuzz::InputFile images(".images"), labels(".labels");
  const auto parts = iat_fuzz::unframe(data, size, 2);
  images.write(parts[0]);
  labels.write(parts[1]);
  iat::data::Dataset ds;
  const bool ok = iat_fuzz::expect_clean({images.path(), labels.path()},
                                         [&] { ds = iat::data::read_idx(images.path(), labels.path(), 10); });
  if (!ok) return 0;
  if (ds.images.dim() != 4 || ds.images.size(1) != 1 || ds.labels.size(0) != ds.images.size(0) ||
      (ds.labels.numel() > 0 && (ds.labels.min().item<int64_t>() < 0 || ds.labels.max().item<int64_t>() >= 10))) {
    iat_fuzz::finding("IDX files accepted with inconsistent images or labels");
  }
  return 0;
}
