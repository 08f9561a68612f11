#pragma once
// Shared by iat's fuzz targets (fuzz/*.cpp): the fuzzer's bytes as a file that the readers open by path, and
// the rule every target checks: a reader either returns or throws c10::Error naming the file. Anything else
// (a crash, a sanitizer report, another exception type, an allocation above libFuzzer's -malloc_limit_mb, a
// hang) is a finding.

#include <c10/util/Exception.h>
#include <ATen/Parallel.h>
#include <torch/types.h>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace iat_fuzz {

/// One file per process under $TMPDIR (or /tmp), rewritten for every input and removed at exit.
class InputFile {
 public:
  explicit InputFile(const char* suffix) {
    const char* dir = std::getenv("TMPDIR");
    path_ = std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") + "/iat-fuzz-" + std::to_string(::getpid()) + suffix;
  }
  ~InputFile() { std::remove(path_.c_str()); }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  /// Replaces the file's content with `size` bytes at `data`; returns its path.
  const std::string& write(const uint8_t* data, size_t size) {
    std::FILE* f = std::fopen(path_.c_str(), "wb");
    if (f == nullptr) fail("cannot create the input file " + path_);
    if (size > 0 && std::fwrite(data, 1, size, f) != size) fail("cannot write the input file " + path_);
    if (std::fclose(f) != 0) fail("cannot close the input file " + path_);
    return path_;
  }
  const std::string& write(const std::string& bytes) {
    return write(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
  const std::string& path() const { return path_; }

 private:
  [[noreturn]] static void fail(const std::string& what) {
    std::fprintf(stderr, "iat fuzz harness: %s\n", what.c_str());
    std::abort();
  }
  std::string path_;
};

/// A finding that is not a memory error: prints it and aborts (libFuzzer saves the input).
[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "iat fuzz finding: %s\n", what.c_str());
  std::abort();
}

/// Runs `read`: true when it returned. A c10::Error is the clean refusal (false), but its message must
/// name one of `paths` (the files the user gave); any other exception escapes and is a finding.
template <typename F>
bool expect_clean(const std::vector<std::string>& paths, F&& read) {
  try {
    read();
    return true;
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    bool named = paths.empty();
    for (const auto& p : paths) named = named || message.find(p) != std::string::npos;
    if (!named) finding("the error names none of the input files: " + message);
    return false;
  }
}

/// The harness's framing of several inputs in one: [u32 little-endian length][bytes] ..., the last part
/// taking what is left. Seeds are written with frame() (fuzz/make_seeds.cpp).
inline std::vector<std::string> unframe(const uint8_t* data, size_t size, size_t parts) {
  std::vector<std::string> out;
  size_t at = 0;
  for (size_t p = 0; p + 1 < parts; ++p) {
    uint32_t n = 0;
    if (size - at >= 4) {
      n = uint32_t{data[at]} | (uint32_t{data[at + 1]} << 8) | (uint32_t{data[at + 2]} << 16) |
          (uint32_t{data[at + 3]} << 24);
      at += 4;
    } else {
      at = size;
    }
    const size_t take = std::min<size_t>(n, size - at);
    out.emplace_back(reinterpret_cast<const char*>(data + at), take);
    at += take;
  }
  out.emplace_back(reinterpret_cast<const char*>(data + at), size - at);
  return out;
}

inline std::string frame(const std::vector<std::string>& parts) {
  std::string out;
  for (size_t p = 0; p < parts.size(); ++p) {
    if (p + 1 < parts.size()) {
      const auto n = static_cast<uint32_t>(parts[p].size());
      for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
    }
    out += parts[p];
  }
  return out;
}

/// One thread for LibTorch (reproducible and fast for small inputs), warnings kept quiet.
inline void init_torch() {
  at::set_num_threads(1);
}

}  // namespace iat_fuzz
