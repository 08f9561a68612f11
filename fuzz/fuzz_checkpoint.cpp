// Fuzz target: iat-train checkpoints through iat::train::load_checkpoint (iat/train/checkpoint.hpp): the
// whole file as found on disk. Every file whose bytes are not exactly as written (CRC-32 in the zip
// comment) must be refused naming it, before LibTorch's archive reader (not hardened against damaged
// bytes) sees it; a file that passes is read record by record.
#include "fuzz_support.hpp"

#include <iat/train/checkpoint.hpp>

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  iat_fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static iat_fuzz::InputFile file(".pt");
  const auto& path = file.write(data, size);
  torch::serialize::InputArchive archive;
  if (!iat_fuzz::expect_clean({path}, [&] { archive = iat::train::load_checkpoint(path, torch::kCPU); })) return 0;
  for (const auto& key : archive.keys()) {
    c10::IValue v;
    (void)archive.try_read(key, v);
  }
  return 0;
}
