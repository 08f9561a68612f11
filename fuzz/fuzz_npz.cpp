// Fuzz target: .npz archives (zip of .npy arrays, stored or deflated, zip64) through read_npz and
// read_npz_array (iat/data/npz.hpp). Zip bombs must be refused before their data is allocated (libFuzzer's
// -malloc_limit_mb makes a large allocation a finding).
#include "fuzz_support.hpp"

#include <iat/data/npz.hpp>

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  iat_fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static iat_fuzz::InputFile file(".npz");
  const auto& path = file.write(data, size);
  iat::data::Dataset ds;
  if (iat_fuzz::expect_clean({path}, [&] { ds = iat::data::read_npz(path); })) {
    if (ds.images.dim() != 4 || ds.labels.size(0) != ds.images.size(0) ||
        (ds.labels.numel() > 0 && (ds.labels.min().item<int64_t>() < 0 || ds.labels.max().item<int64_t>() >= 10))) {
      iat_fuzz::finding("an npz accepted with inconsistent images or labels");
    }
  }
  iat_fuzz::expect_clean({path}, [&] { (void)iat::data::read_npz_array(path, "label"); });
  return 0;
}
