#pragma once
/// \file
/// Files written whole or not at all, and outputs checked before the work that fills them: the one
/// implementation behind iat::train::write_file_atomically (checkpoints, metrics, reports) and
/// iat::eval::AutoAttack's state file.
///
/// **Example**
/// \code
/// iat::detail::check_writable("iat-eval", "--out", "report.json");        // before a long evaluation
/// iat::detail::write_file_atomically("iat-eval", "report.json", text.data(), text.size());
/// \endcode

#include <c10/util/Exception.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace iat {
namespace detail {

/// fsync of a file or folder, best effort (some file systems do not allow opening folders).
inline void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return;
  (void)::fsync(fd);
  (void)::close(fd);
}

/// The folder of a path ("." for a bare file name).
inline std::string parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : (slash == 0 ? std::string("/") : path.substr(0, slash));
}

inline std::string errno_text(int err) { return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")"; }

/// Writes `size` bytes to `path` so that `path` always holds either its previous complete content or the
/// new complete content: the bytes go to `path.tmp` in the same folder with checked writes, are flushed to
/// disk (fsync), and the file is renamed over `path`. Any failure removes `path.tmp`, leaves `path` as it
/// was, and throws a c10::Error starting with `who` and naming the file and the system's reason.
inline void write_file_atomically(const char* who, const std::string& path, const void* data, size_t size) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TORCH_CHECK(fd >= 0, who, ": cannot create '", tmp, "' (for '", path, "'): ", errno_text(errno), "; '", path,
              "' is left as it was");
  auto fail = [&](const std::string& what, int err, bool open) {
    if (open) (void)::close(fd);
    (void)::unlink(tmp.c_str());
    TORCH_CHECK(false, who, ": ", what, " '", tmp, "' (for '", path, "'): ", errno_text(err), "; '", path,
                "' is left as it was");
  };
  const char* p = static_cast<const char*>(data);
  size_t done = 0;
  while (done < size) {
    const size_t chunk = std::min(size - done, size_t{1} << 30);
    const ssize_t w = ::write(fd, p + done, chunk);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      fail("could not write byte " + std::to_string(done) + " of " + std::to_string(size) + " to", w < 0 ? errno : ENOSPC,
           true);
    }
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) fail("could not flush", errno, true);
  if (::close(fd) != 0) fail("could not close", errno, false);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("could not rename", errno, false);
  fsync_path(parent_dir(path), true);
}

/// Checks, before any work, that `path` can later be written by write_file_atomically: it is not a
/// folder, and a file can be created beside it (a probe `path.tmp`, removed at once unless it existed).
/// An existing `path` is not touched. Throws a c10::ValueError naming `what` (e.g. "--out") and the reason.
inline void check_writable(const char* who, const std::string& what, const std::string& path) {
  TORCH_CHECK_VALUE(!path.empty(), who, ": ", what, " is an empty path");
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    TORCH_CHECK_VALUE(!S_ISDIR(st.st_mode), who, ": ", what, " '", path, "' is a folder, expected a file path");
  }
  const std::string probe = path + ".tmp";
  struct stat probe_st {};
  const bool probe_existed = ::stat(probe.c_str(), &probe_st) == 0;
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  TORCH_CHECK_VALUE(fd >= 0, who, ": ", what, " '", path, "' cannot be written (creating a file in '", parent_dir(path),
                    "' failed: ", errno_text(errno), ")");
  (void)::close(fd);
  if (!probe_existed) (void)::unlink(probe.c_str());
}

}  // namespace detail
}  // namespace iat
