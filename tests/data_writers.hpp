#pragma once
// Writers of the datasets' exact on-disk formats (CIFAR records, IDX, MATLAB level 5 with and without
// miCOMPRESSED elements, .npy, zip and zip64 archives), shared by the readers' tests (tests/test_data.cpp)
// and the fuzz targets' seed corpora (fuzz/make_seeds.cpp). Errors throw std::runtime_error.

#include <zip.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace iat_test {

using Bytes = std::vector<uint8_t>;

inline void need(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("iat_test writers: ") + what + " failed");
}



inline void put_u32_le(Bytes& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
inline void put_u32_be(Bytes& b, uint32_t v) {
  for (int i = 3; i >= 0; --i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

/// gzip (windowBits 31) or zlib (15) compression through zlib's deflate.
inline Bytes deflate_bytes(const Bytes& in, bool gzip) {
  z_stream zs{};
  need(deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, gzip ? 31 : 15, 8, Z_DEFAULT_STRATEGY) == Z_OK, "deflateInit2");
  Bytes out(deflateBound(&zs, static_cast<uLong>(in.size())) + 32);
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  need(deflate(&zs, Z_FINISH) == Z_STREAM_END, "deflate");
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// ---- CIFAR -------------------------------------------------------------------------------------------

inline uint8_t cifar_pixel(int64_t record, int64_t j) { return static_cast<uint8_t>((record * 37 + j * 11) % 256); }

/// `n` CIFAR records: `labels` label bytes each (first record index `first`), then pixels cifar_pixel.
inline Bytes cifar_records(int64_t first, int64_t n, int label_bytes, int64_t classes) {
  Bytes b;
  for (int64_t r = first; r < first + n; ++r) {
    if (label_bytes == 2) b.push_back(static_cast<uint8_t>(r % 20));  // coarse
    b.push_back(static_cast<uint8_t>(r % classes));
    for (int64_t j = 0; j < 3072; ++j) b.push_back(cifar_pixel(r, j));
  }
  return b;
}


// ---- IDX ----------------------------------------------------------------------------------------------

inline Bytes idx_images(int64_t n, int64_t rows, int64_t cols) {
  Bytes b;
  put_u32_be(b, 0x803);
  put_u32_be(b, static_cast<uint32_t>(n));
  put_u32_be(b, static_cast<uint32_t>(rows));
  put_u32_be(b, static_cast<uint32_t>(cols));
  for (int64_t i = 0; i < n * rows * cols; ++i) b.push_back(static_cast<uint8_t>((i * 7) % 251));
  return b;
}

inline Bytes idx_labels(int64_t n, int64_t classes) {
  Bytes b;
  put_u32_be(b, 0x801);
  put_u32_be(b, static_cast<uint32_t>(n));
  for (int64_t i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>((i * 3) % classes));
  return b;
}

// ---- MATLAB level 5 -----------------------------------------------------------------------------------

enum : uint32_t { miINT8 = 1, miUINT8 = 2, miINT32 = 5, miUINT32 = 6, miDOUBLE = 9, miMATRIX = 14, miCOMPRESSED = 15 };
enum : uint32_t { mxCHAR = 4, mxDOUBLE = 6, mxUINT8 = 9 };

inline void put_sub_element(Bytes& b, uint32_t type, const Bytes& data) {
  if (data.size() <= 4 && type == miINT8) {  // small data element, as MATLAB writes short names
    put_u32_le(b, static_cast<uint32_t>(data.size() << 16) | type);
    Bytes padded = data;
    padded.resize(4, 0);
    b.insert(b.end(), padded.begin(), padded.end());
    return;
  }
  put_u32_le(b, type);
  put_u32_le(b, static_cast<uint32_t>(data.size()));
  b.insert(b.end(), data.begin(), data.end());
  while (b.size() % 8 != 0) b.push_back(0);
}

/// A whole miMATRIX element (tag included).
inline Bytes mat_matrix(const std::string& name, uint32_t array_class, const std::vector<int32_t>& dims, uint32_t data_type,
                 const Bytes& data) {
  Bytes payload;
  Bytes flags;
  put_u32_le(flags, array_class);
  put_u32_le(flags, 0);
  put_sub_element(payload, miUINT32, flags);
  Bytes d;
  for (int32_t v : dims) put_u32_le(d, static_cast<uint32_t>(v));
  put_sub_element(payload, miINT32, d);
  put_sub_element(payload, miINT8, Bytes(name.begin(), name.end()));
  put_sub_element(payload, data_type, data);
  Bytes element;
  put_u32_le(element, miMATRIX);
  put_u32_le(element, static_cast<uint32_t>(payload.size()));
  element.insert(element.end(), payload.begin(), payload.end());
  return element;
}

inline Bytes mat_header() {
  std::string text = "MATLAB 5.0 MAT-file, Platform: GLNXA64, written by iat's tests";
  text.resize(116, ' ');
  Bytes b(124, 0);      // 116 bytes of text, then the subsystem data offset
  std::copy(text.begin(), text.end(), b.begin());
  b.push_back(0x00);    // version 0x0100, little-endian
  b.push_back(0x01);
  b.push_back('I');
  b.push_back('M');
  return b;
}

inline void append_element(Bytes& file, const Bytes& element, bool compressed) {
  if (!compressed) {
    file.insert(file.end(), element.begin(), element.end());
    return;
  }
  Bytes z = deflate_bytes(element, false);
  put_u32_le(file, miCOMPRESSED);
  put_u32_le(file, static_cast<uint32_t>(z.size()));
  file.insert(file.end(), z.begin(), z.end());
}

constexpr int32_t kMatH = 3, kMatW = 5, kMatC = 3;

inline int64_t svhn_value(int64_t r, int64_t c, int64_t ch, int64_t n) { return (r * 7 + c * 13 + ch * 29 + n * 31) % 256; }

/// X: H×W×C×N uint8 in MATLAB's column-major order; y: N×1 double labels 1..10 (stored as uint8, as MATLAB
/// shrinks integer-valued doubles, or as doubles).
inline Bytes svhn_mat(int32_t n, bool compressed, bool y_as_double = false, bool with_x = true, int bad_label = -1) {
  Bytes x;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < kMatC; ++ch)
      for (int64_t c = 0; c < kMatW; ++c)
        for (int64_t r = 0; r < kMatH; ++r) x.push_back(static_cast<uint8_t>(svhn_value(r, c, ch, i)));
  Bytes y;
  for (int64_t i = 0; i < n; ++i) {
    const int label = (i == 0 && bad_label >= 0) ? bad_label : static_cast<int>(i % 10) + 1;  // 1..10
    if (y_as_double) {
      const double v = label;
      const auto* p = reinterpret_cast<const uint8_t*>(&v);
      y.insert(y.end(), p, p + 8);
    } else {
      y.push_back(static_cast<uint8_t>(label));
    }
  }
  Bytes file = mat_header();
  const std::string note = "iat";
  append_element(file, mat_matrix("note", mxCHAR, {1, 3}, miUINT8, Bytes(note.begin(), note.end())), compressed);
  if (with_x) append_element(file, mat_matrix("X", mxUINT8, {kMatH, kMatW, kMatC, n}, miUINT8, x), compressed);
  append_element(file, mat_matrix("y", mxDOUBLE, {n, 1}, y_as_double ? miDOUBLE : miUINT8, y), compressed);
  return file;
}


// ---- npz ----------------------------------------------------------------------------------------------

/// An .npy file (format 1.0) with the given descr, shape and raw little-endian data.
inline Bytes npy(const std::string& descr, const std::vector<int64_t>& shape, const Bytes& data, bool fortran = false) {
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) dims += ",";
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") + ", 'shape': (" +
                     dims + "), }";
  while ((10 + dict.size() + 1) % 64 != 0) dict += ' ';
  dict += '\n';
  Bytes b = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  b.push_back(static_cast<uint8_t>(dict.size() & 0xff));
  b.push_back(static_cast<uint8_t>(dict.size() >> 8));
  b.insert(b.end(), dict.begin(), dict.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}


inline void put_u16_le(Bytes& b, uint32_t v) {
  b.push_back(static_cast<uint8_t>(v));
  b.push_back(static_cast<uint8_t>(v >> 8));
}
inline void put_u64_le(Bytes& b, uint64_t v) {
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

/// A zip64 archive of stored members, written by hand (APPNOTE 4.3.14, 4.3.15, 4.5.3): every size and
/// offset lives in zip64 extra fields and records, the classic fields hold their 0xFFFFFFFF markers, as
/// in archives larger than 4 GB (such as the 1M-image DDPM file).
inline Bytes zip64_archive(const std::vector<std::pair<std::string, Bytes>>& members) {
  Bytes out, central;
  for (const auto& m : members) {
    const uint64_t offset = out.size();
    const auto crc = static_cast<uint32_t>(crc32(0L, m.second.data(), static_cast<uInt>(m.second.size())));
    put_u32_le(out, 0x04034b50);
    put_u16_le(out, 45);  // version needed: zip64
    put_u16_le(out, 0);   // flags
    put_u16_le(out, 0);   // stored
    put_u16_le(out, 0);   // time
    put_u16_le(out, 0x21);  // date 1980-01-01
    put_u32_le(out, crc);
    put_u32_le(out, 0xffffffff);
    put_u32_le(out, 0xffffffff);
    put_u16_le(out, static_cast<uint32_t>(m.first.size()));
    put_u16_le(out, 20);
    out.insert(out.end(), m.first.begin(), m.first.end());
    put_u16_le(out, 0x0001);
    put_u16_le(out, 16);
    put_u64_le(out, m.second.size());
    put_u64_le(out, m.second.size());
    out.insert(out.end(), m.second.begin(), m.second.end());

    put_u32_le(central, 0x02014b50);
    put_u16_le(central, 45);
    put_u16_le(central, 45);
    put_u16_le(central, 0);
    put_u16_le(central, 0);
    put_u16_le(central, 0);
    put_u16_le(central, 0x21);
    put_u32_le(central, crc);
    put_u32_le(central, 0xffffffff);
    put_u32_le(central, 0xffffffff);
    put_u16_le(central, static_cast<uint32_t>(m.first.size()));
    put_u16_le(central, 28);
    put_u16_le(central, 0);  // comment
    put_u16_le(central, 0);  // disk
    put_u16_le(central, 0);  // internal attributes
    put_u32_le(central, 0);  // external attributes
    put_u32_le(central, 0xffffffff);
    central.insert(central.end(), m.first.begin(), m.first.end());
    put_u16_le(central, 0x0001);
    put_u16_le(central, 24);
    put_u64_le(central, m.second.size());
    put_u64_le(central, m.second.size());
    put_u64_le(central, offset);
  }
  const uint64_t cd_offset = out.size();
  out.insert(out.end(), central.begin(), central.end());
  const uint64_t eocd64_offset = out.size();
  put_u32_le(out, 0x06064b50);
  put_u64_le(out, 44);
  put_u16_le(out, 45);
  put_u16_le(out, 45);
  put_u32_le(out, 0);
  put_u32_le(out, 0);
  put_u64_le(out, members.size());
  put_u64_le(out, members.size());
  put_u64_le(out, central.size());
  put_u64_le(out, cd_offset);
  put_u32_le(out, 0x07064b50);
  put_u32_le(out, 0);
  put_u64_le(out, eocd64_offset);
  put_u32_le(out, 1);
  put_u32_le(out, 0x06054b50);
  put_u16_le(out, 0);
  put_u16_le(out, 0);
  put_u16_le(out, 0xffff);
  put_u16_le(out, 0xffff);
  put_u32_le(out, 0xffffffff);
  put_u32_le(out, 0xffffffff);
  put_u16_le(out, 0);
  return out;
}

inline int64_t npz_pixel(int64_t n, int64_t h, int64_t w, int64_t c) { return (n * 17 + h * 5 + w * 3 + c * 101) % 256; }

/// NHWC uint8 images [n, 4, 6, 3] and int64 labels i % 10.
inline std::vector<std::pair<std::string, Bytes>> npz_members(int64_t n, const std::string& label_descr = "<i8") {
  Bytes img;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < 4; ++h)
      for (int64_t w = 0; w < 6; ++w)
        for (int64_t c = 0; c < 3; ++c) img.push_back(static_cast<uint8_t>(npz_pixel(i, h, w, c)));
  Bytes lab;
  for (int64_t i = 0; i < n; ++i) {
    if (label_descr == "|u1") {
      lab.push_back(static_cast<uint8_t>(i % 10));
    } else {
      const int64_t v = i % 10;
      const auto* p = reinterpret_cast<const uint8_t*>(&v);
      lab.insert(lab.end(), p, p + 8);
    }
  }
  return {{"image.npy", npy("|u1", {n, 4, 6, 3}, img)}, {"label.npy", npy(label_descr, {n}, lab)}};
}

/// A zip archive of named members through libzip, stored or deflated.
inline void write_zip(const std::string& path, const std::vector<std::pair<std::string, Bytes>>& members, bool deflate) {
  int err = 0;
  zip_t* za = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  need(za != nullptr, "zip_open");
  for (const auto& m : members) {
    zip_source_t* src = zip_source_buffer(za, m.second.data(), m.second.size(), 0);
    need(src != nullptr, "zip_source_buffer");
    const zip_int64_t idx = zip_file_add(za, m.first.c_str(), src, ZIP_FL_OVERWRITE);
    need(idx >= 0, "zip_file_add");
    need(zip_set_file_compression(za, static_cast<zip_uint64_t>(idx), deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0) == 0,
         "zip_set_file_compression");
  }
  need(zip_close(za) == 0, "zip_close");
}

}  // namespace iat_test
