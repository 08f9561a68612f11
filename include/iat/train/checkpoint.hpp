#pragma once
/// \file
/// Atomic checkpoint files: iat::train::save_atomically and the RNG-state helpers that make a resumed
/// run continue exactly where it stopped.

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/types.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>

#include <cstdio>
#include <fcntl.h>
#include <string>
#include <unistd.h>

namespace iat {
namespace detail {
inline void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return;  // best effort: some file systems don't allow opening folders
  (void)::fsync(fd);
  (void)::close(fd);
}
inline std::string parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : (slash == 0 ? std::string("/") : path.substr(0, slash));
}
}  // namespace detail

namespace train {

/// Writes `archive` to `path` so that `path` always holds either the previous complete file or the new
/// complete file, never a partial one: the archive goes to `path.tmp` in the same folder, is flushed to
/// disk, and is renamed over `path` (rename is atomic within a file system). A failure leaves `path` as it
/// was and throws a c10::Error naming the file.
///
/// **Example**
/// \code
/// torch::serialize::OutputArchive archive;
/// net->save(archive);
/// iat::train::save_atomically(archive, "runs/c10/checkpoint.pt");
/// \endcode
inline void save_atomically(torch::serialize::OutputArchive& archive, const std::string& path) {
  const std::string tmp = path + ".tmp";
  try {
    archive.save_to(tmp);
  } catch (const c10::Error& e) {
    std::remove(tmp.c_str());
    TORCH_CHECK(false, "iat::train::save_atomically: could not write '", tmp, "' (for '", path,
                "'): ", e.what_without_backtrace());
  }
  iat::detail::fsync_path(tmp, false);
  TORCH_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "iat::train::save_atomically: could not rename '", tmp,
              "' to '", path, "'");
  iat::detail::fsync_path(iat::detail::parent_dir(path), true);
}

/// The state of LibTorch's default CPU generator (a uint8 tensor), to store in a checkpoint.
inline torch::Tensor cpu_rng_state() { return at::detail::getDefaultCPUGenerator().get_state(); }

/// Restores a state returned by cpu_rng_state().
inline void set_cpu_rng_state(const torch::Tensor& state) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

}  // namespace train
}  // namespace iat
