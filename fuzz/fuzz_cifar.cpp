// Fuzz target: CIFAR-10 / CIFAR-100 binary records (iat/data/cifar.hpp). The first byte picks the layout
// (even: CIFAR-10, 1 label byte; odd: CIFAR-100, coarse + fine label bytes), the rest is the file.
#include "fuzz_support.hpp"

#include <iat/data/cifar.hpp>

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  iat_fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static iat_fuzz::InputFile file(".bin");
  if (size == 0) return 0;
  const bool cifar100 = (data[0] & 1) != 0;
  const auto& path = file.write(data + 1, size - 1);
  iat::data::Dataset ds;
  const bool ok = iat_fuzz::expect_clean({path}, [&] {
    ds = cifar100 ? iat::data::detail::read_cifar_records("fuzz", {path}, 2, 1, 100, "cifar100")
                  : iat::data::detail::read_cifar_records("fuzz", {path}, 1, 0, 10, "cifar10");
  });
  if (!ok) return 0;
  const int64_t record = cifar100 ? 3074 : 3073;
  if (ds.images.dim() != 4 || ds.images.size(0) * record != static_cast<int64_t>(size - 1) ||
      ds.labels.size(0) != ds.images.size(0) || ds.labels.min().item<int64_t>() < 0 ||
      ds.labels.max().item<int64_t>() >= ds.num_classes) {
    iat_fuzz::finding("CIFAR records accepted with inconsistent images or labels");
  }
  return 0;
}
