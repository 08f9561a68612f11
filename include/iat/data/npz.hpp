#pragma once
/// \file
/// Reader and writer of numpy `.npz` archives (zip files of `.npy` arrays, stored or deflated, zip64
/// included) through libzip: read_npz for datasets such as the generated-data files of Wang et al. 2023
/// ("Better diffusion models further improve adversarial training": `image` uint8 [N, 32, 32, 3], `label`
/// [N]), read_npz_array for one array, and save_npz for tensors a numpy user opens with `np.load`
/// (iat-train's figure1.npz).
///
/// libzip is optional at build time: iat's CMake target defines IAT_WITH_LIBZIP to 1 when it links libzip
/// (the default) and to 0 when configured with -DIAT_WITH_LIBZIP=OFF (a machine without libzip, such as a
/// bare GPU image); then these functions keep their signatures and throw, naming the file and the reason.
/// Included without iat's CMake target, libzip is assumed.

#include <iat/data/dataset.hpp>
#include <iat/data/detail/io.hpp>
#include <iat/data/detail/npy.hpp>
#include <iat/detail/file_io.hpp>

#include <torch/types.h>

#ifndef IAT_WITH_LIBZIP
#define IAT_WITH_LIBZIP 1
#endif
#if IAT_WITH_LIBZIP
#include <zip.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace iat {
namespace data {
namespace detail {

#if IAT_WITH_LIBZIP
/// An open .npz archive (libzip handle), closed on destruction.
class NpzArchive {
 public:
  NpzArchive(const char* who, std::string path) : who_(who), path_(std::move(path)) {
    TORCH_CHECK(iat::detail::file_exists(path_), who_, ": cannot open '", path_, "': no such file");
    int code = 0;
    zip_ = zip_open(path_.c_str(), ZIP_RDONLY, &code);
    if (zip_ == nullptr) {
      zip_error_t error;
      zip_error_init_with_code(&error, code);
      const std::string message = zip_error_strerror(&error);
      zip_error_fini(&error);
      TORCH_CHECK(false, who_, ": '", path_, "' is not a readable .npz (zip) archive: ", message,
                  code == ZIP_ER_NOZIP ? " (no zip central directory: truncated or not a zip file)" : "");
    }
  }
  NpzArchive(const NpzArchive&) = delete;
  NpzArchive& operator=(const NpzArchive&) = delete;
  ~NpzArchive() {
    if (zip_ != nullptr) zip_discard(zip_);
  }

  /// The archive's array names ("image" for "image.npy").
  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    const zip_int64_t n = zip_get_num_entries(zip_, 0);
    for (zip_int64_t i = 0; i < n; ++i) {
      const char* name = zip_get_name(zip_, static_cast<zip_uint64_t>(i), 0);
      if (name == nullptr) continue;
      std::string s(name);
      if (s.size() > 4 && s.compare(s.size() - 4, 4, ".npy") == 0) s.resize(s.size() - 4);
      out.push_back(s);
    }
    return out;
  }

  /// Reads the array `key` (entry "key.npy", or "key"). `sink(header, read)` is called once with the
  /// parsed header; it reads the data with `read(dst, bytes)`, which fails on short or corrupt data.
  using Reader = std::function<void(void*, uint64_t)>;
  void read_array(const std::string& key, const std::function<void(const iat::detail::NpyHeader&, const Reader&)>& sink) {
    zip_int64_t index = zip_name_locate(zip_, (key + ".npy").c_str(), 0);
    if (index < 0) index = zip_name_locate(zip_, key.c_str(), 0);
    if (index < 0) {
      std::string names;
      for (const auto& k : keys()) names += (names.empty() ? "'" : ", '") + k + "'";
      TORCH_CHECK(false, who_, ": '", path_, "' has no array '", key, "' (arrays: ", names.empty() ? "none" : names, ")");
    }
    const std::string where = "'" + path_ + "' array '" + key + "'";
    zip_stat_t st;
    zip_stat_init(&st);
    TORCH_CHECK(zip_stat_index(zip_, static_cast<zip_uint64_t>(index), 0, &st) == 0 && (st.valid & ZIP_STAT_SIZE),
                who_, ": ", where, ": cannot read its zip entry: ", zip_strerror(zip_));
    const uint64_t entry_size = st.size;
    // A zip bomb, or a damaged directory, states more bytes than its compressed data can hold: refused here,
    // before the array (shape × dtype, which must equal that size) is allocated. Deflate expands at most
    // 1032:1; a stored entry's data is as long as its size. Both bounded by the archive's own length.
    if ((st.valid & ZIP_STAT_COMP_SIZE) && (st.valid & ZIP_STAT_COMP_METHOD)) {
      const uint64_t comp = st.comp_size;
      const uint64_t archive = iat::detail::file_size(path_);
      TORCH_CHECK(comp <= archive, who_, ": ", where, ": its zip entry claims ", comp,
                  " compressed bytes, more than the archive's ", archive, " (truncated or corrupt)");
      const bool stored = st.comp_method == ZIP_CM_STORE;
      TORCH_CHECK(stored ? entry_size == comp : entry_size <= comp * 1032 + 1024, who_, ": ", where,
                  ": its zip entry claims ", entry_size, " bytes from ", comp, " ",
                  stored ? "stored bytes" : "compressed bytes (deflate expands at most 1032:1)",
                  ": a corrupt or malicious archive (zip bomb)");
    }
    struct FileCloser {
      void operator()(zip_file_t* f) const { zip_fclose(f); }
    };
    std::unique_ptr<zip_file_t, FileCloser> file(zip_fopen_index(zip_, static_cast<zip_uint64_t>(index), 0));
    TORCH_CHECK(file, who_, ": ", where, ": cannot open its zip entry: ", zip_strerror(zip_));
    uint64_t consumed = 0;
    auto read = [&](void* dst, uint64_t bytes) {
      auto* out = static_cast<uint8_t*>(dst);
      uint64_t done = 0;
      while (done < bytes) {
        const zip_int64_t got = zip_fread(file.get(), out + done, bytes - done);
        TORCH_CHECK(got >= 0, who_, ": ", where, ": reading failed at byte ", consumed + done, " of ", entry_size,
                    ": ", zip_file_strerror(file.get()));
        TORCH_CHECK(got > 0, who_, ": ", where, " is truncated: it ends after ", consumed + done,
                    " bytes, ", consumed + bytes, " needed");
        done += static_cast<uint64_t>(got);
      }
      consumed += bytes;
    };
    // The .npy header: fixed prefix, then the dict.
    uint8_t prefix[12] = {0};
    TORCH_CHECK(entry_size >= 10, who_, ": ", where, " holds ", entry_size, " bytes, too few for a .npy header");
    read(prefix, 10);
    uint8_t major = 1;
    uint64_t dict_len = iat::detail::npy_dict_length(who_, where, prefix, 10, &major);
    if (major > 1) {
      read(prefix + 10, 2);
      dict_len = iat::detail::npy_dict_length(who_, where, prefix, 12, &major);
    }
    const uint64_t header_bytes = iat::detail::npy_prefix_bytes(major) + dict_len;
    TORCH_CHECK(header_bytes <= entry_size && dict_len < (uint64_t{1} << 24), who_, ": ", where, ": its header claims ",
                dict_len, " bytes, the entry holds ", entry_size);
    std::string dict(static_cast<size_t>(dict_len), '\0');
    read(&dict[0], dict_len);
    auto header = iat::detail::parse_npy_dict(who_, where, dict);
    header.header_bytes = header_bytes;
    const int64_t numel = iat::detail::checked_numel(who_, path_, header.shape);
    const uint64_t data_bytes = entry_size - header_bytes;
    std::string shape;
    for (size_t d = 0; d < header.shape.size(); ++d) shape += (d ? ", " : "") + std::to_string(header.shape[d]);
    TORCH_CHECK(iat::detail::holds_exactly(data_bytes, numel, header.item_size), who_, ": ", where, ": shape (", shape,
                ") of dtype '", header.descr, "' needs ", iat::detail::byte_count_text(numel, header.item_size),
                " data bytes, the entry holds ",
                data_bytes, " after its ", header_bytes, "-byte header");
    sink(header, read);
    if (consumed == entry_size) {
      // Reading at the end makes libzip compare the entry's CRC-32 (corrupt stored data shows here).
      uint8_t extra = 0;
      const zip_int64_t got = zip_fread(file.get(), &extra, 1);
      TORCH_CHECK(got == 0, who_, ": ", where, ": corrupt zip entry: ",
                  got < 0 ? zip_file_strerror(file.get()) : "data beyond its stated size");
    }
  }

 private:
  const char* who_;
  std::string path_;
  zip_t* zip_ = nullptr;
};
#else
/// Built without libzip: opening an archive throws, naming the file and how to get the reader.
class NpzArchive {
 public:
  using Reader = std::function<void(void*, uint64_t)>;
  NpzArchive(const char* who, const std::string& path) {
    TORCH_CHECK(false, who, ": cannot read '", path, "': this iat was built without libzip (IAT_WITH_LIBZIP=OFF); "
                "install libzip (Debian: libzip-dev) and configure with -DIAT_WITH_LIBZIP=ON to read .npz archives");
  }
  std::vector<std::string> keys() const { return {}; }
  void read_array(const std::string&, const std::function<void(const iat::detail::NpyHeader&, const Reader&)>&) {}
};
#endif

/// Reads a whole array into a tensor of its dtype and shape (Fortran-ordered arrays are transposed).
inline torch::Tensor npz_read_whole(const iat::detail::NpyHeader& h, const NpzArchive::Reader& read) {
  std::vector<int64_t> shape = h.shape;
  if (h.fortran_order) std::reverse(shape.begin(), shape.end());
  auto t = torch::empty(shape, h.dtype);
  if (t.numel() > 0) read(t.data_ptr(), static_cast<uint64_t>(t.numel() * h.item_size));
  if (h.fortran_order && t.dim() > 1) {
    std::vector<int64_t> perm(static_cast<size_t>(t.dim()));
    for (int64_t i = 0; i < t.dim(); ++i) perm[static_cast<size_t>(i)] = t.dim() - 1 - i;
    t = t.permute(perm).contiguous();
  }
  return t;
}

}  // namespace detail

/// Reads one array of an .npz archive as a tensor of its own dtype and shape (u8 → uint8, i8/u8 →
/// int64, f4 → float, …).
///
/// **Example**
/// \code
/// torch::Tensor labels = iat::data::read_npz_array("cifar10_ddpm.npz", "label");
/// \endcode
inline torch::Tensor read_npz_array(const std::string& path, const std::string& key) {
  detail::NpzArchive archive("iat::data::read_npz_array", path);
  torch::Tensor out;
  archive.read_array(key, [&](const iat::detail::NpyHeader& h, const detail::NpzArchive::Reader& read) {
    out = detail::npz_read_whole(h, read);
  });
  return out;
}

/// Reads images and labels from an .npz archive (stored or deflated entries, zip64 archives): `image_key`
/// uint8 [N, H, W, C] (NHWC, as numpy writes images; [N, H, W] is read as one channel) becomes uint8
/// [N, C, H, W]; `label_key` (any integer dtype, [N] or [N, 1]) becomes int64 [N]. The images stream
/// straight into the result in chunks, so a multi-gigabyte file needs no second full-size buffer.
///
/// **Example**
/// \code
/// // 1M DDPM images of Wang et al. 2023, to mix with CIFAR-10 at 0.3 original : 0.7 generated
/// auto generated = iat::data::read_npz("data/1m.npz");
/// auto other = iat::data::read_npz("gen.npz", "x", "y", 100);
/// \endcode
///
/// Errors (`c10::Error` naming the file): not a zip archive or truncated (no central directory), a corrupt
/// entry (CRC or inflate error), a missing key (the message lists the archive's arrays), a malformed .npy
/// header, a data size other than shape × dtype, images not uint8 of rank 3 or 4, a label count other than
/// the image count, a label outside [0, num_classes).
inline Dataset read_npz(const std::string& path, const std::string& image_key = "image",
                        const std::string& label_key = "label", int64_t num_classes = 10) {
  const char* who = "iat::data::read_npz";
  TORCH_CHECK_VALUE(num_classes >= 1, who, ": num_classes must be >= 1, got ", num_classes);
  detail::NpzArchive archive(who, path);
  Dataset ds;
  archive.read_array(image_key, [&](const iat::detail::NpyHeader& h, const detail::NpzArchive::Reader& read) {
    TORCH_CHECK(h.dtype == torch::kByte, who, ": '", path, "' array '", image_key,
                "' must be uint8 images (0..255), got dtype '", h.descr, "'");
    TORCH_CHECK(h.shape.size() == 3 || h.shape.size() == 4, who, ": '", path, "' array '", image_key,
                "' must be [N, H, W, C] or [N, H, W], got rank ", h.shape.size());
    const int64_t n = h.shape[0], hh = h.shape[1], ww = h.shape[2];
    const int64_t c = h.shape.size() == 4 ? h.shape[3] : 1;
    TORCH_CHECK(n > 0, who, ": '", path, "' array '", image_key, "' holds 0 images");
    if (h.fortran_order) {
      auto whole = detail::npz_read_whole(h, read).view({n, hh, ww, c});
      ds.images = whole.permute({0, 3, 1, 2}).contiguous();
      return;
    }
    ds.images = torch::empty({n, c, hh, ww}, torch::kByte);
    const int64_t per_image = hh * ww * c;
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(n, (int64_t{64} << 20) / std::max<int64_t>(per_image, 1)));
    auto buffer = torch::empty({chunk, hh, ww, c}, torch::kByte);
    for (int64_t start = 0; start < n; start += chunk) {
      const int64_t k = std::min(chunk, n - start);
      auto part = buffer.narrow(0, 0, k);
      if (k * per_image > 0) read(part.data_ptr(), static_cast<uint64_t>(k * per_image));
      ds.images.narrow(0, start, k).copy_(part.permute({0, 3, 1, 2}));
    }
  });
  archive.read_array(label_key, [&](const iat::detail::NpyHeader& h, const detail::NpzArchive::Reader& read) {
    TORCH_CHECK(!torch::isFloatingType(h.dtype) && h.dtype != torch::kBool, who, ": '", path, "' array '", label_key,
                "' must hold integer labels, got dtype '", h.descr, "'");
    auto labels = detail::npz_read_whole(h, read);
    TORCH_CHECK(labels.dim() == 1 || (labels.dim() == 2 && labels.size(1) == 1), who, ": '", path, "' array '",
                label_key, "' must be [N] or [N, 1], got ", labels.sizes());
    ds.labels = labels.reshape({-1}).to(torch::kLong);
  });
  TORCH_CHECK(ds.images.size(0) == ds.labels.size(0), who, ": '", path, "' holds ", ds.images.size(0), " images ('",
              image_key, "') but ", ds.labels.size(0), " labels ('", label_key, "')");
  iat::detail::check_file_labels(who, path, ds.labels, num_classes);
  ds.num_classes = num_classes;
  ds.name = path;
  return ds;
}

/// Writes tensors as a numpy `.npz` archive (what `np.savez` writes: one deflated `KEY.npy` per entry, in
/// order), which `np.load(path)` and read_npz_array read back with the same dtype, shape and values. The
/// archive is built beside `path` (`path.tmp`) and renamed over it when complete, so a kill or a full disk
/// leaves the previous file. Tensors may live on any device; they are copied to the CPU. The same arrays
/// give the same bytes (the entries carry a fixed date).
///
/// **Example**
/// \code
/// iat::data::save_npz("figure1.npz", {{"natural", x.cpu()}, {"labels", y.cpu()}});
/// // Python: a = numpy.load("figure1.npz"); a["natural"].shape == (10, 1, 28, 28)
/// \endcode
///
/// Errors (`c10::Error` naming the file): an empty or repeated key, a dtype .npy cannot hold (complex,
/// bfloat16, ...), a folder that cannot be written, libzip failing to write the archive.
inline void save_npz(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& arrays) {
  const char* who = "iat::data::save_npz";
  std::vector<std::string> files;
  files.reserve(arrays.size());
  for (size_t i = 0; i < arrays.size(); ++i) {
    const auto& key = arrays[i].first;
    TORCH_CHECK_VALUE(!key.empty(), who, ": '", path, "': array ", i, " has an empty key");
    for (size_t j = 0; j < i; ++j) {
      TORCH_CHECK_VALUE(arrays[j].first != key, who, ": '", path, "': key '", key, "' is given twice");
    }
    TORCH_CHECK_VALUE(arrays[i].second.defined(), who, ": '", path, "': array '", key, "' is an undefined tensor");
    files.push_back(iat::detail::npy_file_bytes(who, key, arrays[i].second));
  }
#if IAT_WITH_LIBZIP
  const std::string tmp = path + ".tmp";
  int code = 0;
  zip_t* zip = zip_open(tmp.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &code);
  if (zip == nullptr) {
    zip_error_t error;
    zip_error_init_with_code(&error, code);
    const std::string message = zip_error_strerror(&error);
    zip_error_fini(&error);
    TORCH_CHECK(false, who, ": cannot create '", tmp, "' (for '", path, "'): ", message);
  }
  auto fail = [&](const std::string& what) {
    const std::string message = zip_strerror(zip);
    zip_discard(zip);
    (void)std::remove(tmp.c_str());
    TORCH_CHECK(false, who, ": ", what, " '", path, "': ", message, "; '", path, "' is left as it was");
  };
  for (size_t i = 0; i < files.size(); ++i) {
    // The bytes stay in `files` until zip_close has written them (freep = 0: libzip does not own them).
    zip_source_t* source = zip_source_buffer(zip, files[i].data(), files[i].size(), 0);
    if (source == nullptr) fail("cannot stage array '" + arrays[i].first + "' of");
    const zip_int64_t index = zip_file_add(zip, (arrays[i].first + ".npy").c_str(), source, ZIP_FL_ENC_UTF_8);
    if (index < 0) {
      zip_source_free(source);
      fail("cannot add array '" + arrays[i].first + "' to");
    }
    // A fixed date (1980-01-02, the zip format's earliest day and one to spare for the time zone): the
    // same arrays give the same bytes, whenever they are written.
    if (zip_file_set_mtime(zip, static_cast<zip_uint64_t>(index), 315619200, 0) != 0) {
      fail("cannot date array '" + arrays[i].first + "' of");
    }
  }
  if (zip_close(zip) != 0) fail("cannot write");
  iat::detail::fsync_path(tmp, false);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    (void)std::remove(tmp.c_str());
    TORCH_CHECK(false, who, ": could not rename '", tmp, "' to '", path, "': ", iat::detail::errno_text(err));
  }
  iat::detail::fsync_path(iat::detail::parent_dir(path), true);
#else
  TORCH_CHECK(false, who, ": cannot write '", path, "': this iat was built without libzip (IAT_WITH_LIBZIP=OFF); "
              "install libzip (Debian: libzip-dev) and configure with -DIAT_WITH_LIBZIP=ON to write .npz archives");
#endif
}

}  // namespace data
}  // namespace iat
