#pragma once
/// \file
/// Checkpoint files that survive crashes, full disks and bit rot: iat::train::save_atomically (write whole
/// or not at all, with a CRC-32 of the bytes), iat::train::load_checkpoint (verify the CRC-32, then read),
/// iat::train::write_file_atomically for any other output file, and the RNG-state helpers that make a
/// resumed run continue exactly where it stopped.
///
/// The checksum lives in the zip archive's own comment field (the end-of-central-directory record), so a
/// checkpoint stays a standard LibTorch archive: `torch::load`, `torch.jit.load` and zip tools read it
/// unchanged. LibTorch itself does not check the CRCs of the zip entries when it reads them.

#include <iat/detail/file_io.hpp>

#include <torch/arg.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/types.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace iat {
namespace detail {
/// CRC-32 (zlib's) of `size` bytes, in chunks zlib's 32-bit length takes.
inline uint32_t crc32_of(const char* data, size_t size) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  while (size > 0) {
    const uInt n = static_cast<uInt>(size > (size_t{1} << 30) ? (size_t{1} << 30) : size);
    crc = ::crc32(crc, reinterpret_cast<const Bytef*>(data), n);
    data += n;
    size -= n;
  }
  return static_cast<uint32_t>(crc);
}

// The zip end-of-central-directory record: 22 bytes, signature PK\5\6, comment length at offset 20, then
// the comment. iat's checksum comment has a fixed length.
constexpr size_t kZipEndRecord = 22;
constexpr char kChecksumMagic[] = "iat-checksum-1 crc32 ";
// "iat-checksum-1 crc32 xxxxxxxx bytes nnnnnnnnnnnnnnnnnnnn"
constexpr size_t kChecksumCommentSize = sizeof(kChecksumMagic) - 1 + 8 + 7 + 20;

inline bool is_zip_end_record(const std::string& bytes, size_t at) {
  return at + kZipEndRecord <= bytes.size() && bytes[at] == 'P' && bytes[at + 1] == 'K' && bytes[at + 2] == 5 &&
         bytes[at + 3] == 6;
}
inline size_t zip_comment_size(const std::string& bytes, size_t end_record) {
  return static_cast<unsigned char>(bytes[end_record + 20]) |
         (static_cast<size_t>(static_cast<unsigned char>(bytes[end_record + 21])) << 8);
}

/// Appends iat's checksum comment to a serialised archive that has no comment yet. The CRC covers every
/// byte before the comment-length field.
inline void add_checksum(std::string& bytes, const std::string& path) {
  const size_t n = bytes.size();
  TORCH_CHECK(n >= kZipEndRecord && is_zip_end_record(bytes, n - kZipEndRecord) &&
                  zip_comment_size(bytes, n - kZipEndRecord) == 0,
              "iat::train::save_atomically: the serialised archive for '", path,
              "' does not end with a comment-free zip end record (", n, " bytes); cannot add its checksum");
  const size_t covered = n - 2;
  char comment[kChecksumCommentSize + 1];
  std::snprintf(comment, sizeof(comment), "%s%08x bytes %020llu", kChecksumMagic,
                static_cast<unsigned>(crc32_of(bytes.data(), covered)), static_cast<unsigned long long>(covered));
  bytes[n - 2] = static_cast<char>(kChecksumCommentSize & 0xff);
  bytes[n - 1] = static_cast<char>((kChecksumCommentSize >> 8) & 0xff);
  bytes.append(comment, kChecksumCommentSize);
}

enum class ChecksumState { kValid, kAbsent };

/// Checks the checksum comment of a whole file's bytes; throws naming `path` when the file is truncated
/// or its bytes changed. A complete archive without iat's comment gives kAbsent.
inline ChecksumState verify_checksum(const std::string& bytes, const std::string& path) {
  const char* who = "iat::train::load_checkpoint";
  const size_t n = bytes.size();
  const size_t with_comment = kZipEndRecord + kChecksumCommentSize;
  if (n >= with_comment && is_zip_end_record(bytes, n - with_comment) &&
      zip_comment_size(bytes, n - with_comment) == kChecksumCommentSize &&
      bytes.compare(n - kChecksumCommentSize, sizeof(kChecksumMagic) - 1, kChecksumMagic) == 0) {
    const std::string comment = bytes.substr(n - kChecksumCommentSize);
    unsigned stored_crc = 0;
    unsigned long long stored_size = 0;
    const int got = std::sscanf(comment.c_str() + sizeof(kChecksumMagic) - 1, "%8x bytes %20llu", &stored_crc,
                                &stored_size);
    const size_t covered = n - kChecksumCommentSize - 2;
    TORCH_CHECK_VALUE(got == 2 && stored_size == covered, who, ": '", path,
                      "' is corrupt: its checksum record is damaged (it names ", stored_size, " bytes, the file holds ",
                      covered, " before it)");
    const uint32_t actual = crc32_of(bytes.data(), covered);
    if (actual != stored_crc) {
      char msg[160];
      std::snprintf(msg, sizeof(msg), "its bytes have CRC-32 %08x, but %08x was stored when it was written",
                    static_cast<unsigned>(actual), stored_crc);
      TORCH_CHECK_VALUE(false, who, ": '", path, "' is corrupt: ", msg, " (", n,
                        " bytes): it was changed or damaged after it was written; restore it from a copy or start "
                        "the run again");
    }
    return ChecksumState::kValid;
  }
  if (n >= kZipEndRecord && is_zip_end_record(bytes, n - kZipEndRecord) && zip_comment_size(bytes, n - kZipEndRecord) == 0) {
    return ChecksumState::kAbsent;
  }
  TORCH_CHECK_VALUE(false, who, ": '", path, "' is truncated or corrupt: it does not end with a complete archive (",
                    n, " bytes)");
}

/// The whole content of a file; throws naming the file and the system's reason.
inline std::string read_whole_file(const std::string& path, const char* who) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TORCH_CHECK_VALUE(fd >= 0, who, ": cannot open '", path, "': ", errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    TORCH_CHECK_VALUE(false, who, ": cannot read '", path, "': ", errno_text(err));
  }
  std::string bytes;
  bytes.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t got = ::read(fd, buf, sizeof(buf));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int err = errno;
      ::close(fd);
      TORCH_CHECK_VALUE(false, who, ": cannot read '", path, "' after ", bytes.size(), " bytes: ", errno_text(err));
    }
    if (got == 0) break;
    bytes.append(buf, static_cast<size_t>(got));
  }
  ::close(fd);
  return bytes;
}
}  // namespace detail

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
  std::string bytes;
  try {
    archive.save_to([&bytes](const void* buf, size_t n) -> size_t {
      if (buf == nullptr) {
        bytes.append(n, '\0');  // padding
      } else {
        bytes.append(static_cast<const char*>(buf), n);
      }
      return n;
    });
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "iat::train::save_atomically: could not serialise the archive for '", path,
                "': ", e.what_without_backtrace());
  }
  iat::detail::add_checksum(bytes, path);
  write_file_atomically(path, bytes);
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
  const char* who = "iat::train::load_checkpoint";
  const std::string bytes = iat::detail::read_whole_file(path, who);
  const auto state = iat::detail::verify_checksum(bytes, path);
  TORCH_CHECK_VALUE(state == iat::detail::ChecksumState::kValid || !options.require_checksum(), who, ": '", path,
                    "' carries no iat checksum (written by torch::save or an older iat), so its content cannot be "
                    "verified; it may be truncated or damaged");
  torch::serialize::InputArchive archive;
  try {
    if (device != nullptr) {
      archive.load_from(bytes.data(), bytes.size(), *device);
    } else {
      archive.load_from(bytes.data(), bytes.size());
    }
  } catch (const c10::Error& e) {
    TORCH_CHECK_VALUE(false, who, ": '", path, "' is corrupt or not a checkpoint: ", e.what_without_backtrace());
  }
  return archive;
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
