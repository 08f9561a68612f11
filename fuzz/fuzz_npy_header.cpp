// Fuzz target: .npy headers (magic, version, header length, the Python-literal dict; iat/data/detail/npy.hpp)
// as the npz reader parses them.
#include "fuzz_support.hpp"

#include <iat/data/detail/npy.hpp>

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  iat_fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string where = "'fuzz.npz' array 'x'";
  iat_fuzz::expect_clean({where}, [&] {
    // As the npz reader: the 10-byte prefix first, the 12-byte one for versions 2 and 3.
    uint8_t major = 1;
    TORCH_CHECK(size >= 10, "fuzz: ", where, " is shorter than a .npy prefix");
    uint64_t dict_len = iat::detail::npy_dict_length("fuzz", where, data, 10, &major);
    if (major > 1) {
      TORCH_CHECK(size >= 12, "fuzz: ", where, " is shorter than a version 2 .npy prefix");
      dict_len = iat::detail::npy_dict_length("fuzz", where, data, 12, &major);
    }
    const size_t start = static_cast<size_t>(iat::detail::npy_prefix_bytes(major));
    TORCH_CHECK(start <= size && dict_len <= size - start, "fuzz: ", where, " is shorter than its header");
    const std::string dict(reinterpret_cast<const char*>(data + start), static_cast<size_t>(dict_len));
    const auto header = iat::detail::parse_npy_dict("fuzz", where, dict);
    if (header.item_size <= 0) iat_fuzz::finding("a header accepted with item size " + std::to_string(header.item_size));
    for (int64_t d : header.shape) {
      if (d < 0) iat_fuzz::finding("a header accepted with a negative dimension");
    }
  });
  return 0;
}
