// Fuzz target: state-dict files as torch.save writes them, through iat's pickle reader
// (iat/io/tensor_file.hpp, through iat/models/state_dict.hpp: read_state_dict). The first byte picks what the rest is:
//   even: the pickle (data.pkl) alone, which the harness puts into a well-formed archive beside storages
//         data/0 … data/3 of 0, 4, 64 and 1024 bytes, so the fuzzer works on the pickle VM itself;
//   odd:  a whole file (the zip archive as well).
// Nested containers, huge sizes and unknown globals must end in a c10::Error naming the file.
#include "fuzz_support.hpp"

#include <caffe2/serialize/inline_container.h>
#include <iat/models/state_dict.hpp>

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  iat_fuzz::init_torch();
  return 0;
}

namespace {

std::string archive_with_pickle(const uint8_t* pickle, size_t size) {
  std::string bytes;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* p, size_t n) {
    bytes.append(static_cast<const char*>(p), n);
    return n;
  });
  static const std::vector<char> storage(1024, '\x3f');
  const size_t sizes[4] = {0, 4, 64, 1024};
  for (int i = 0; i < 4; ++i) writer.writeRecord("data/" + std::to_string(i), storage.data(), sizes[i]);
  writer.writeRecord("data.pkl", pickle, size);
  writer.writeEndOfFile();
  return bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static iat_fuzz::InputFile file(".pt");
  if (size == 0) return 0;
  const auto& path = (data[0] & 1) == 0 ? file.write(archive_with_pickle(data + 1, size - 1)) : file.write(data + 1, size - 1);
  torch::OrderedDict<std::string, torch::Tensor> sd;
  if (!iat_fuzz::expect_clean({path}, [&] { sd = iat::models::read_state_dict(path); })) return 0;
  for (const auto& kv : sd) {
    const auto& t = kv.value();
    if (!t.defined()) iat_fuzz::finding("an undefined tensor accepted for '" + kv.key() + "'");
    // Every element must be readable: a view past its storage would show here (under ASan).
    if (t.numel() > 0) (void)t.sum().item<double>();
  }
  return 0;
}
