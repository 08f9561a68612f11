#pragma once
/// \file
/// LibTorch archives with a CRC-32 of their bytes, written whole or not at all: the implementation behind
/// iat::train::save_atomically / load_checkpoint and iat::eval::AutoAttack's state file.
///
/// The checksum lives in the zip archive's own comment field (the end-of-central-directory record), so the
/// file stays a standard LibTorch archive: `torch::load`, `torch.jit.load` and zip tools read it unchanged.
/// LibTorch itself does not check the CRCs of the zip entries when it reads them, and its reader is not
/// hardened against damaged bytes: load_verified_archive hands it only files whose checksum matches.
///
/// **Example**
/// \code
/// torch::serialize::OutputArchive a;
/// a.write("step", c10::IValue(int64_t{7}));
/// iat::detail::write_archive_atomically("my-tool", a, "state.pt");
/// auto b = iat::detail::load_verified_archive("my-tool", "state.pt", nullptr, true, "a state file");
/// \endcode

#include <iat/detail/file_io.hpp>

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/types.h>

#include <zlib.h>

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
inline void add_checksum(const char* who, std::string& bytes, const std::string& path) {
  const size_t n = bytes.size();
  TORCH_CHECK(n >= kZipEndRecord && is_zip_end_record(bytes, n - kZipEndRecord) &&
                  zip_comment_size(bytes, n - kZipEndRecord) == 0,
              who, ": the serialised archive for '", path,
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
inline ChecksumState verify_checksum(const char* who, const std::string& bytes, const std::string& path) {
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
  TORCH_CHECK_VALUE(n >= kZipEndRecord && is_zip_end_record(bytes, n - kZipEndRecord) &&
                        zip_comment_size(bytes, n - kZipEndRecord) == 0,
                    who, ": '", path, "' is truncated or corrupt: it does not end with a complete archive (", n,
                    " bytes)");
  return ChecksumState::kAbsent;
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

/// Serialises `archive` in memory, adds the checksum and writes it atomically (write_file_atomically): a
/// failing disk shows as one clean c10::Error naming the file, never inside LibTorch's writer.
inline void write_archive_atomically(const char* who, torch::serialize::OutputArchive& archive, const std::string& path) {
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
    TORCH_CHECK(false, who, ": could not serialise the archive for '", path, "': ", e.what_without_backtrace());
  }
  add_checksum(who, bytes, path);
  write_file_atomically(who, path, bytes.data(), bytes.size());
}

/// Reads `path` whole, verifies its checksum (an archive without one is refused when `require_checksum`),
/// and loads the archive from memory, its tensors on `device` (nullptr: where they were saved). Every
/// failure is a c10::ValueError naming the file; LibTorch's reader sees only bytes that passed the check.
inline torch::serialize::InputArchive load_verified_archive(const char* who, const std::string& path,
                                                            const torch::Device* device, bool require_checksum,
                                                            const char* what) {
  const std::string bytes = read_whole_file(path, who);
  const auto state = verify_checksum(who, bytes, path);
  TORCH_CHECK_VALUE(state == ChecksumState::kValid || !require_checksum, who, ": '", path,
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
    TORCH_CHECK_VALUE(false, who, ": '", path, "' is corrupt or not ", what, ": ", e.what_without_backtrace());
  }
  return archive;
}

}  // namespace detail
}  // namespace iat
