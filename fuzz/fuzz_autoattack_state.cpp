// Fuzz target: AutoAttack state files (iat/eval/autoattack.hpp), resumed by a real evaluation of a tiny
// linear model on 6 images of 1x2x2. The first byte picks the mode:
//   even: the rest is the whole file as found on disk (damaged bytes must be refused by the checksum,
//         naming the file);
//   odd:  a structured edit of a genuine state file, which the harness writes back with a valid checksum so
//         that the fuzzer reaches the state's own checks: the next byte picks a record, the byte after its
//         new kind (int, float, string, bool or float tensor, int64 tensor), the rest its value or shape.
// Either way the evaluation must end with a report or a c10::Error naming the file; with state_mismatch_ok
// on, every robust flag it reports must still be backed by the re-check of the model.
#include "autoattack_fixture.hpp"
#include "fuzz_support.hpp"

#include <iat/detail/archive_checksum.hpp>
#include "autoattack_fixture.hpp"

namespace {

struct Fixture : iat_fuzz::AutoAttackFixture {
  std::string genuine;  // the state file interrupted after its first batch
  std::vector<std::string> keys;
};

Fixture& fixture() {
  static Fixture f = [] {
    Fixture g;
    iat_fuzz::InputFile tmp(".genuine");
    g.write_interrupted_state(tmp.path());
    std::FILE* in = std::fopen(tmp.path().c_str(), "rb");
    if (in == nullptr) iat_fuzz::finding("the fixture's state file was not written");
    char buf[4096];
    size_t got;
    while ((got = std::fread(buf, 1, sizeof buf, in)) > 0) g.genuine.append(buf, got);
    std::fclose(in);
    auto archive = iat::detail::load_verified_archive("fuzz", tmp.path(), nullptr, true, "a state file");
    g.keys = archive.keys();
    return g;
  }();
  return f;
}

c10::IValue fuzzed_value(uint8_t kind, const uint8_t* data, size_t size) {
  auto byte = [&](size_t i) { return i < size ? data[i] : uint8_t{0}; };
  int64_t integer = 0;
  for (size_t i = 0; i < 8; ++i) integer |= static_cast<int64_t>(byte(i)) << (8 * i);
  switch (kind % 6) {
    case 0: return c10::IValue(integer);
    case 1: {
      double d = 0;
      std::memcpy(&d, &integer, sizeof d);
      return c10::IValue(d);
    }
    case 2: return c10::IValue(std::string(reinterpret_cast<const char*>(data), size));
    default: {
      // A tensor: rank and sizes from the first bytes (each size 0..15), then its content.
      const int64_t rank = byte(0) % 5;
      std::vector<int64_t> sizes;
      int64_t numel = 1;
      for (int64_t d = 0; d < rank; ++d) {
        sizes.push_back(byte(static_cast<size_t>(1 + d)) % 16);
        numel *= sizes.back();
      }
      const auto dtype = kind % 6 == 3 ? torch::kBool : kind % 6 == 4 ? torch::kFloat : torch::kLong;
      auto t = torch::zeros(sizes, dtype);
      const size_t first = static_cast<size_t>(1 + rank);
      const size_t avail = size > first ? size - first : 0;
      const size_t bytes = std::min(avail, static_cast<size_t>(numel) * t.element_size());
      if (bytes > 0) std::memcpy(t.data_ptr(), data + first, bytes);
      if (dtype == torch::kBool) t = t.view(torch::kByte).ne(0);  // only 0 and 1 are valid bools
      return c10::IValue(t);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  iat_fuzz::init_torch();
  (void)fixture();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static iat_fuzz::InputFile file(".state");
  auto& f = fixture();
  if (size < 1) return 0;
  const bool structured = (data[0] & 1) != 0;
  bool mismatch_ok = (data[0] & 2) != 0;
  if (!structured) {
    file.write(data + 1, size - 1);
  } else {
    if (size < 3) return 0;
    const std::string& key = f.keys[data[1] % f.keys.size()];
    file.write(f.genuine);
    auto in = iat::detail::load_verified_archive("fuzz", file.path(), nullptr, true, "a state file");
    torch::serialize::OutputArchive out;
    for (const auto& k : f.keys) {
      c10::IValue v;
      in.read(k, v);
      out.write(k, k == key ? fuzzed_value(data[2], data + 3, size - 3) : v);
    }
    iat::detail::write_archive_atomically("fuzz", out, file.path());
    mismatch_ok = true;  // past the settings' binding, into the state's own checks
  }
  iat::eval::AutoAttackReport report;
  const bool ok = iat_fuzz::expect_clean({file.path()}, [&] {
    report = iat::eval::AutoAttack(f.options(file.path(), mismatch_ok)).run(f.net, f.x, f.y);
  });
  if (!ok) return 0;
  // Whatever the state said, a point reported robust must be classified correctly by the model at the
  // adversarial example reported for it (the final re-check), and clean-misclassified points are not robust.
  if (report.robust_accuracy > report.clean_accuracy + 1e-12) {
    iat_fuzz::finding("robust accuracy above clean accuracy after resuming from a state file");
  }
  return 0;
}
