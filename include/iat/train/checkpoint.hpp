#pragma once
/// \file
/// Checkpoint files that survive crashes, full disks and bit rot: iat::train::save_atomically (write whole
/// or not at all, with a CRC-32 of the bytes), iat::train::load_checkpoint (verify the CRC-32, then read),
/// iat::train::write_file_atomically for any other output file, and the RNG-state helpers that make a
/// resumed run continue exactly where it stopped.
///
/// The checksum lives in the zip archive's own comment field (the end-of-central-directory record), so a
/// checkpoint stays a standard LibTorch archive: `torch::load`, `torch.jit.load` and zip tools read it
/// unchanged (iat/detail/archive_checksum.hpp). LibTorch itself does not check the CRCs of the zip entries
/// when it reads them.

#include <iat/detail/archive_checksum.hpp>
#include <iat/detail/file_io.hpp>

#include <torch/arg.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/types.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/core/Generator.h>

#include <string>

namespace iat {
namespace train {

/// Writes `size` bytes to `path` so that `path` always holds either its previous complete content or the
/// new complete content: the bytes go to `path.tmp` in the same folder with checked writes, are flushed to
/// disk (fsync), and the file is renamed over `path` (atomic within a file system). Any failure (a full
/// disk, a quota, an I/O error) removes `path.tmp`, leaves `path` as it was, and throws a c10::Error
/// naming the file and the system's reason.
///
/// **Example**
/// \code
/// iat::train::write_file_atomically("runs/c10/metrics.jsonl", text.data(), text.size());
/// \endcode
inline void write_file_atomically(const std::string& path, const void* data, size_t size) {
  iat::detail::write_file_atomically("iat::train::write_file_atomically", path, data, size);
}

/// write_file_atomically for a string's bytes.
inline void write_file_atomically(const std::string& path, const std::string& bytes) {
  write_file_atomically(path, bytes.data(), bytes.size());
}

/// Writes `archive` to `path` atomically (see write_file_atomically) with a CRC-32 of its bytes, which
/// load_checkpoint verifies. The archive is serialised in memory first, so a failing disk shows up as one
/// clean c10::Error naming the file and the reason, never in the middle of LibTorch's writer; `path.tmp`
/// is removed and `path` keeps its previous content. Memory: one extra copy of the serialised archive.
///
/// **Example**
/// \code
/// torch::serialize::OutputArchive archive;
/// net->save(archive);
/// iat::train::save_atomically(archive, "runs/c10/checkpoint.pt");
/// \endcode
inline void save_atomically(torch::serialize::OutputArchive& archive, const std::string& path) {
  iat::detail::write_archive_atomically("iat::train::save_atomically", archive, path);
}

/// How load_checkpoint treats a file.
struct LoadCheckpointOptions {
  /// Refuse a complete archive that carries no iat checksum (one written by torch::save, or by an iat
  /// before checkpoints had checksums). With false, such a file is read unverified; a truncated file or a
  /// checksum that does not match is refused either way.
  TORCH_ARG(bool, require_checksum) = true;
};

namespace detail {
inline torch::serialize::InputArchive load_checkpoint(const std::string& path, const torch::Device* device,
                                                      const LoadCheckpointOptions& options) {
  return iat::detail::load_verified_archive("iat::train::load_checkpoint", path, device, options.require_checksum(),
                                            "a checkpoint");
}
}  // namespace detail

/// Reads a checkpoint written by save_atomically: the whole file is read once, its CRC-32 is verified,
/// and the archive is loaded from memory, its tensors mapped to `device`. A missing, truncated, corrupt
/// or unreadable file throws a c10::ValueError naming the file and what is wrong with it.
///
/// **Example**
/// \code
/// auto archive = iat::train::load_checkpoint("runs/c10/checkpoint.pt", torch::kCPU);
/// net->load(archive);
/// \endcode
inline torch::serialize::InputArchive load_checkpoint(const std::string& path, const torch::Device& device,
                                                      const LoadCheckpointOptions& options = {}) {
  return detail::load_checkpoint(path, &device, options);
}

/// load_checkpoint with every tensor on the device it was saved from.
inline torch::serialize::InputArchive load_checkpoint(const std::string& path, const LoadCheckpointOptions& options = {}) {
  return detail::load_checkpoint(path, nullptr, options);
}

/// The state of the default generator of `device` (the CPU, or a CUDA device: "cuda" is the current one),
/// a uint8 tensor on the CPU. torch::manual_seed reseeds the CPU generator and every CUDA one, so code that
/// reseeds within a run (an evaluation with a seed of its own) keeps the run's random stream by saving and
/// restoring the generators of every device it draws on (KeepRandomStream), and a checkpoint stores them all.
///
/// **Example**
/// \code
/// archive.write("rng_cpu", iat::train::rng_state(torch::kCPU));
/// archive.write("rng_cuda", iat::train::rng_state(torch::Device("cuda:0")));
/// \endcode
inline torch::Tensor rng_state(const torch::Device& device) {
  auto gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

/// Restores a state returned by rng_state(device).
inline void set_rng_state(const torch::Device& device, const torch::Tensor& state) {
  auto gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state.cpu());
}

/// The state of LibTorch's default CPU generator (a uint8 tensor), to store in a checkpoint.
inline torch::Tensor cpu_rng_state() { return rng_state(torch::kCPU); }

/// Restores a state returned by cpu_rng_state().
inline void set_cpu_rng_state(const torch::Tensor& state) { set_rng_state(torch::kCPU, state); }

/// For its scope, whatever it draws or reseeds: on exit the CPU generator and, for a CUDA `device`, that
/// device's generator are back in the states they had on entry, so the run's random stream goes on as if the
/// scope had drawn nothing.
///
/// **Example**
/// \code
/// {
///   iat::train::KeepRandomStream keep(device);
///   torch::manual_seed(977);                      // an evaluation's own random starts
///   evaluate(model);
/// }                                               // the training's stream, as before
/// \endcode
class KeepRandomStream {
 public:
  explicit KeepRandomStream(const torch::Device& device)
      : device_(device), cpu_(rng_state(torch::kCPU)), device_state_(device.is_cpu() ? torch::Tensor() : rng_state(device)) {}
  ~KeepRandomStream() {
    set_rng_state(torch::kCPU, cpu_);
    if (device_state_.defined()) set_rng_state(device_, device_state_);
  }
  KeepRandomStream(const KeepRandomStream&) = delete;
  KeepRandomStream& operator=(const KeepRandomStream&) = delete;

 private:
  torch::Device device_;
  torch::Tensor cpu_, device_state_;
};

}  // namespace train
}  // namespace iat
