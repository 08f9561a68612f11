#pragma once
/// \file
/// Byte-level helpers of iat's data readers: whole-file reads, bounds-checked cursors over byte buffers,
/// zlib/gzip inflation through zlib, and the label checks every reader shares. Every failure is a
/// `c10::Error` naming the reader, the file, the offset and the byte counts involved.

#include <torch/types.h>

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace iat {
namespace detail {

/// A file's whole content.
using ByteBuffer = std::vector<uint8_t>;

/// Whether `path` names an existing regular file.
inline bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

/// The size in bytes of the file at `path` (0 when it cannot be read).
inline uint64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

/// `dir` + "/" + `name` (no separator doubled).
inline std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

/// Reads the whole file at `path`; errors name `who`, the path and the system's reason.
inline ByteBuffer read_file_bytes(const char* who, const std::string& path) {
  struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  TORCH_CHECK(file, who, ": cannot open '", path, "': ", std::strerror(errno));
  struct stat st {};
  TORCH_CHECK(::fstat(::fileno(file.get()), &st) == 0 && S_ISREG(st.st_mode), who, ": '", path,
              "' is not a regular file");
  ByteBuffer bytes(static_cast<size_t>(st.st_size));
  const size_t got = bytes.empty() ? 0 : std::fread(bytes.data(), 1, bytes.size(), file.get());
  TORCH_CHECK(got == bytes.size(), who, ": reading '", path, "' failed after ", got, " of ", bytes.size(),
              " bytes: ", std::strerror(errno));
  return bytes;
}

/// Whether a buffer starts with the gzip magic number 1f 8b.
inline bool is_gzip(const ByteBuffer& bytes) {
  return bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
}

/// The format inflate_bytes expects.
enum class Compression { kZlib, kGzip };

/// Inflates `size` compressed bytes at `data` (a zlib stream, or one or more concatenated gzip members),
/// read from `path` at `file_offset`. `expected` > 0 is the exact decompressed size when known (the
/// result is then allocated once); otherwise the buffer starts at `capacity_hint` bytes (when > 0) and
/// grows, up to deflate's maximum ratio of 1032:1.
inline ByteBuffer inflate_bytes(const char* who, const std::string& path, const uint8_t* data, size_t size,
                                uint64_t file_offset, Compression format, size_t expected = 0,
                                size_t capacity_hint = 0) {
  // Deflate cannot expand more than 1032:1; a larger claim is a corrupt header.
  const uint64_t max_out = static_cast<uint64_t>(size) * 1032 + 1024;
  TORCH_CHECK(expected <= max_out, who, ": '", path, "' at offset ", file_offset, ": a compressed block of ",
              size, " bytes cannot hold ", expected, " bytes (corrupt size field)");
  z_stream zs{};
  const int window = format == Compression::kGzip ? 15 + 16 : 15;
  TORCH_CHECK(inflateInit2(&zs, window) == Z_OK, who, ": zlib inflateInit2 failed");
  struct End {
    z_stream* s;
    ~End() { inflateEnd(s); }
  } end{&zs};

  // With a known size, one spare byte detects data beyond it (and lets zlib read its trailer).
  // Otherwise start from the hint (a gzip trailer's size field), or four times the input.
  const uint64_t start = capacity_hint > 0 ? uint64_t{capacity_hint} + 1 : std::max<uint64_t>(4 * uint64_t{size}, 4096);
  ByteBuffer out(expected > 0 ? expected + 1 : std::min<uint64_t>(max_out, start));
  size_t produced = 0;
  size_t consumed = 0;
  constexpr size_t kChunk = size_t{1} << 30;  // zlib counts in uInt
  for (;;) {
    if (produced == out.size()) {
      TORCH_CHECK(expected == 0, who, ": '", path, "' at offset ", file_offset, ": the compressed data holds more than ",
                  expected, " bytes (the size its header states)");
      TORCH_CHECK(out.size() < max_out, who, ": '", path, "' at offset ", file_offset,
                  ": decompressed data exceed deflate's maximum ratio (corrupt stream)");
      out.resize(static_cast<size_t>(std::min<uint64_t>(max_out, 2 * static_cast<uint64_t>(out.size()))));
    }
    zs.next_in = const_cast<Bytef*>(data + consumed);
    zs.avail_in = static_cast<uInt>(std::min(kChunk, size - consumed));
    zs.next_out = out.data() + produced;
    zs.avail_out = static_cast<uInt>(std::min(kChunk, out.size() - produced));
    const uInt in_before = zs.avail_in;
    const uInt out_before = zs.avail_out;
    const int rc = inflate(&zs, Z_NO_FLUSH);
    consumed += in_before - zs.avail_in;
    produced += out_before - zs.avail_out;
    if (rc == Z_STREAM_END) {
      // gzip files may hold several members back to back; a zlib stream ends here.
      if (format == Compression::kGzip && size - consumed >= 2 && data[consumed] == 0x1f && data[consumed + 1] == 0x8b) {
        inflateReset(&zs);
        continue;
      }
      break;
    }
    TORCH_CHECK(rc != Z_DATA_ERROR && rc != Z_NEED_DICT, who, ": '", path, "': corrupt compressed data near offset ",
                file_offset + consumed, " (zlib: ", zs.msg ? zs.msg : "invalid data", ")");
    TORCH_CHECK(rc != Z_MEM_ERROR, who, ": '", path, "': out of memory while decompressing");
    TORCH_CHECK(rc == Z_OK || rc == Z_BUF_ERROR, who, ": '", path, "': zlib error ", rc, " near offset ",
                file_offset + consumed);
    if (produced == out.size()) continue;  // the buffer grows at the top of the loop
    const bool progress = in_before != zs.avail_in || out_before != zs.avail_out;
    TORCH_CHECK(consumed < size && progress, who, ": '", path,
                "' is truncated: its compressed data starting at offset ", file_offset, " end after ", size,
                " bytes without the end-of-stream marker (", produced, " bytes decompressed)");
  }
  TORCH_CHECK(expected == 0 || produced == expected, who, ": '", path, "' at offset ", file_offset,
              ": the compressed data hold ", produced, " bytes, the header states ", expected);
  out.resize(produced);
  return out;
}

/// A bounds-checked reader over a byte range, for parsing headers: every read names the file, the
/// offset (in the file) and what was being read when the data ran out.
class ByteCursor {
 public:
  ByteCursor(const char* who, const std::string& path, const uint8_t* data, size_t size, uint64_t file_offset = 0)
      : who_(who), path_(&path), data_(data), size_(size), base_(file_offset) {}

  /// Bytes left after the current position.
  size_t remaining() const { return size_ - pos_; }
  /// Position inside the range.
  size_t position() const { return pos_; }
  /// Position in the file (range start + position).
  uint64_t file_offset() const { return base_ + pos_; }
  /// The current byte pointer.
  const uint8_t* here() const { return data_ + pos_; }

  /// Fails unless `n` more bytes are available for `what`.
  void need(uint64_t n, const char* what) const {
    TORCH_CHECK(n <= remaining(), who_, ": '", *path_, "' is truncated: ", what, " at offset ", file_offset(),
                " needs ", n, " bytes, only ", remaining(), " remain");
  }
  /// Moves `n` bytes forward (checked).
  void skip(uint64_t n, const char* what) {
    need(n, what);
    pos_ += static_cast<size_t>(n);
  }
  /// Jumps to position `p` inside the range (checked).
  void seek(size_t p, const char* what) {
    TORCH_CHECK(p <= size_, who_, ": '", *path_, "': ", what, " points to offset ", base_ + p, ", past the end (",
                base_ + size_, ")");
    pos_ = p;
  }
  uint32_t u32_be(const char* what) {
    need(4, what);
    const uint8_t* p = here();
    pos_ += 4;
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
  }
  uint32_t u32_le(const char* what) {
    need(4, what);
    const uint8_t* p = here();
    pos_ += 4;
    return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
  }
  uint16_t u16_le(const char* what) {
    need(2, what);
    const uint8_t* p = here();
    pos_ += 2;
    return static_cast<uint16_t>(p[0] | (p[1] << 8));
  }
  uint8_t u8(const char* what) {
    need(1, what);
    return data_[pos_++];
  }

 private:
  const char* who_;
  const std::string* path_;
  const uint8_t* data_;
  size_t size_;
  uint64_t base_;
  size_t pos_ = 0;
};

/// Labels of `path` must lie in [0, num_classes).
inline void check_file_labels(const char* who, const std::string& path, const torch::Tensor& labels,
                              int64_t num_classes) {
  TORCH_CHECK(num_classes >= 1, who, ": num_classes must be >= 1, got ", num_classes);
  if (labels.numel() == 0) return;
  auto bad = (labels < 0).logical_or_(labels >= num_classes);
  if (!bad.any().item<bool>()) return;
  const int64_t at = bad.nonzero().select(1, 0)[0].item<int64_t>();
  TORCH_CHECK(false, who, ": '", path, "': label ", labels[at].item<int64_t>(), " of example ", at,
              " is out of range [0, ", num_classes, ")");
}

/// Product of dimensions, failing on overflow beyond int64 (a corrupt header).
inline int64_t checked_numel(const char* who, const std::string& path, const std::vector<int64_t>& dims) {
  // The product of the non-zero dimensions is checked too: with a zero among them a reader still sizes
  // buffers by the others (an image's bytes).
  int64_t nonzero = 1;
  bool empty = false;
  for (int64_t d : dims) {
    TORCH_CHECK(d >= 0, who, ": '", path, "': negative dimension ", d, " in the header");
    if (d == 0) {
      empty = true;
      continue;
    }
    TORCH_CHECK(nonzero <= std::numeric_limits<int64_t>::max() / d, who, ": '", path,
                "': the header's dimensions overflow (corrupt header)");
    nonzero *= d;
  }
  return empty ? 0 : nonzero;
}

/// Whether `bytes` holds exactly `numel` elements of `item` bytes, without forming numel × item (which
/// wraps past 2^64 for a corrupt header and could then match a short record).
inline bool holds_exactly(uint64_t bytes, int64_t numel, int64_t item) {
  return item > 0 && numel >= 0 && bytes % static_cast<uint64_t>(item) == 0 &&
         bytes / static_cast<uint64_t>(item) == static_cast<uint64_t>(numel);
}

/// numel × item as a number for a message, or "more than 2^64" where it would wrap.
inline std::string byte_count_text(int64_t numel, int64_t item) {
  const auto n = static_cast<uint64_t>(numel), i = static_cast<uint64_t>(item);
  if (i != 0 && n > std::numeric_limits<uint64_t>::max() / i) return "more than 2^64";
  return std::to_string(n * i);
}

/// Copies `n` bytes at `data` into a new uint8 tensor of the given shape.
inline torch::Tensor bytes_to_tensor(const uint8_t* data, torch::IntArrayRef shape) {
  auto t = torch::empty(shape, torch::kByte);
  if (t.numel() > 0) std::memcpy(t.data_ptr<uint8_t>(), data, static_cast<size_t>(t.numel()));
  return t;
}

}  // namespace detail
}  // namespace iat
