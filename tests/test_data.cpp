// Tests of iat::data's readers. Every input file is written here, in a temporary folder, in the exact
// format of the real datasets (CIFAR records, IDX raw and gzipped, MATLAB level-5 with and without
// miCOMPRESSED elements, npz stored and deflated); the real Fashion-MNIST is read when installed.

#include <iat/data/cifar.hpp>
#include <iat/data/idx.hpp>
#include <iat/data/load.hpp>
#include <iat/data/npz.hpp>
#include <iat/data/svhn.hpp>

#include <torch/types.h>

#include <zip.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

// Last: torch's headers define glog's CHECK macro, which must not replace Catch's.
#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;
using Catch::Contains;

namespace {

/// A fresh folder under the system's temporary directory, removed with its content at scope exit.
struct TempDir {
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "iat_test_data_XXXXXX").string();
    REQUIRE(::mkdtemp(&tmpl[0]) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (fs::path(path) / name).string(); }
  std::string path;
};

void write_file(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

Bytes read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void put_u32_le(Bytes& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_u32_be(Bytes& b, uint32_t v) {
  for (int i = 3; i >= 0; --i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

/// gzip (windowBits 31) or zlib (15) compression through zlib's deflate.
Bytes deflate_bytes(const Bytes& in, bool gzip) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, gzip ? 31 : 15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  Bytes out(deflateBound(&zs, static_cast<uLong>(in.size())) + 32);
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// ---- CIFAR -------------------------------------------------------------------------------------------

uint8_t cifar_pixel(int64_t record, int64_t j) { return static_cast<uint8_t>((record * 37 + j * 11) % 256); }

/// `n` CIFAR records: `labels` label bytes each (first record index `first`), then pixels cifar_pixel.
Bytes cifar_records(int64_t first, int64_t n, int label_bytes, int64_t classes) {
  Bytes b;
  for (int64_t r = first; r < first + n; ++r) {
    if (label_bytes == 2) b.push_back(static_cast<uint8_t>(r % 20));  // coarse
    b.push_back(static_cast<uint8_t>(r % classes));
    for (int64_t j = 0; j < 3072; ++j) b.push_back(cifar_pixel(r, j));
  }
  return b;
}

void check_cifar_pixels(const torch::Tensor& images, int64_t first) {
  REQUIRE(images.scalar_type() == torch::kByte);
  auto flat = images.reshape({images.size(0), 3072}).to(torch::kLong);
  auto r = torch::arange(first, first + images.size(0), torch::kLong).unsqueeze(1);
  auto j = torch::arange(3072, torch::kLong).unsqueeze(0);
  CHECK(torch::equal(flat, (r * 37 + j * 11) % 256));
  // Channel-major layout: pixel (c=1, h=2, w=3) of record `first` is byte 1024 + 2*32 + 3.
  CHECK(images[0][1][2][3].item<int64_t>() == cifar_pixel(first, 1024 + 64 + 3));
}

// ---- IDX ----------------------------------------------------------------------------------------------

Bytes idx_images(int64_t n, int64_t rows, int64_t cols) {
  Bytes b;
  put_u32_be(b, 0x803);
  put_u32_be(b, static_cast<uint32_t>(n));
  put_u32_be(b, static_cast<uint32_t>(rows));
  put_u32_be(b, static_cast<uint32_t>(cols));
  for (int64_t i = 0; i < n * rows * cols; ++i) b.push_back(static_cast<uint8_t>((i * 7) % 251));
  return b;
}

Bytes idx_labels(int64_t n, int64_t classes) {
  Bytes b;
  put_u32_be(b, 0x801);
  put_u32_be(b, static_cast<uint32_t>(n));
  for (int64_t i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>((i * 3) % classes));
  return b;
}

// ---- MATLAB level 5 -----------------------------------------------------------------------------------

enum : uint32_t { miINT8 = 1, miUINT8 = 2, miINT32 = 5, miUINT32 = 6, miDOUBLE = 9, miMATRIX = 14, miCOMPRESSED = 15 };
enum : uint32_t { mxCHAR = 4, mxDOUBLE = 6, mxUINT8 = 9 };

void put_sub_element(Bytes& b, uint32_t type, const Bytes& data) {
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
Bytes mat_matrix(const std::string& name, uint32_t array_class, const std::vector<int32_t>& dims, uint32_t data_type,
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

Bytes mat_header() {
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

void append_element(Bytes& file, const Bytes& element, bool compressed) {
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

int64_t svhn_value(int64_t r, int64_t c, int64_t ch, int64_t n) { return (r * 7 + c * 13 + ch * 29 + n * 31) % 256; }

/// X: H×W×C×N uint8 in MATLAB's column-major order; y: N×1 double labels 1..10 (stored as uint8, as MATLAB
/// shrinks integer-valued doubles, or as doubles).
Bytes svhn_mat(int32_t n, bool compressed, bool y_as_double = false, bool with_x = true, int bad_label = -1) {
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

void check_svhn(const iat::data::Dataset& ds, int64_t n) {
  REQUIRE(ds.images.sizes() == torch::IntArrayRef({n, kMatC, kMatH, kMatW}));
  auto nn = torch::arange(n).view({n, 1, 1, 1});
  auto ch = torch::arange(kMatC).view({1, kMatC, 1, 1});
  auto r = torch::arange(kMatH).view({1, 1, kMatH, 1});
  auto c = torch::arange(kMatW).view({1, 1, 1, kMatW});
  CHECK(torch::equal(ds.images.to(torch::kLong), (r * 7 + c * 13 + ch * 29 + nn * 31) % 256));
  // Files hold 1..10 with 10 for the digit 0.
  CHECK(torch::equal(ds.labels, (torch::arange(n) % 10 + 1) % 10));
  CHECK(ds.num_classes == 10);
  CHECK(ds.name == "svhn");
}

// ---- npz ----------------------------------------------------------------------------------------------

/// An .npy file (format 1.0) with the given descr, shape and raw little-endian data.
Bytes npy(const std::string& descr, const std::vector<int64_t>& shape, const Bytes& data, bool fortran = false) {
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

/// A zip archive of named members through libzip, stored or deflated.
void write_zip(const std::string& path, const std::vector<std::pair<std::string, Bytes>>& members, bool deflate) {
  int err = 0;
  zip_t* za = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  REQUIRE(za != nullptr);
  for (const auto& m : members) {
    zip_source_t* src = zip_source_buffer(za, m.second.data(), m.second.size(), 0);
    REQUIRE(src != nullptr);
    const zip_int64_t idx = zip_file_add(za, m.first.c_str(), src, ZIP_FL_OVERWRITE);
    REQUIRE(idx >= 0);
    REQUIRE(zip_set_file_compression(za, static_cast<zip_uint64_t>(idx), deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0) == 0);
  }
  REQUIRE(zip_close(za) == 0);
}

void put_u16_le(Bytes& b, uint32_t v) {
  b.push_back(static_cast<uint8_t>(v));
  b.push_back(static_cast<uint8_t>(v >> 8));
}
void put_u64_le(Bytes& b, uint64_t v) {
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

/// A zip64 archive of stored members, written by hand (APPNOTE 4.3.14, 4.3.15, 4.5.3): every size and
/// offset lives in zip64 extra fields and records, the classic fields hold their 0xFFFFFFFF markers, as
/// in archives larger than 4 GB (such as the 1M-image DDPM file).
Bytes zip64_archive(const std::vector<std::pair<std::string, Bytes>>& members) {
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

int64_t npz_pixel(int64_t n, int64_t h, int64_t w, int64_t c) { return (n * 17 + h * 5 + w * 3 + c * 101) % 256; }

/// NHWC uint8 images [n, 4, 6, 3] and int64 labels i % 10.
std::vector<std::pair<std::string, Bytes>> npz_members(int64_t n, const std::string& label_descr = "<i8") {
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

void check_npz(const iat::data::Dataset& ds, int64_t n) {
  REQUIRE(ds.images.sizes() == torch::IntArrayRef({n, 3, 4, 6}));
  auto nn = torch::arange(n).view({n, 1, 1, 1});
  auto c = torch::arange(3).view({1, 3, 1, 1});
  auto h = torch::arange(4).view({1, 1, 4, 1});
  auto w = torch::arange(6).view({1, 1, 1, 6});
  CHECK(torch::equal(ds.images.to(torch::kLong), (nn * 17 + h * 5 + w * 3 + c * 101) % 256));
  CHECK(torch::equal(ds.labels, torch::arange(n) % 10));
  CHECK(ds.labels.scalar_type() == torch::kLong);
}

}  // namespace

TEST_CASE("CIFAR-10 and CIFAR-100 binary files are read whole, in channel-major layout", "[data][readers]") {
  TempDir dir;
  const int64_t per = 3;
  for (int i = 1; i <= 5; ++i) write_file(dir.file("data_batch_" + std::to_string(i) + ".bin"), cifar_records((i - 1) * per, per, 1, 10));
  write_file(dir.file("test_batch.bin"), cifar_records(100, 4, 1, 10));

  SECTION("CIFAR-10 train concatenates the five batches in order") {
    auto ds = iat::data::read_cifar10(dir.path, iat::data::Split::kTrain);
    REQUIRE(ds.size() == 5 * per);
    CHECK(ds.images.sizes() == torch::IntArrayRef({5 * per, 3, 32, 32}));
    CHECK(torch::equal(ds.labels, torch::arange(5 * per) % 10));
    check_cifar_pixels(ds.images, 0);
    CHECK(ds.num_classes == 10);
    CHECK(ds.name == "cifar10");
  }
  SECTION("CIFAR-10 test, also through the archive's subfolder and load_dataset") {
    TempDir outer;
    fs::create_directory(outer.file("cifar-10-batches-bin"));
    write_file(outer.file("cifar-10-batches-bin/test_batch.bin"), cifar_records(100, 4, 1, 10));
    auto ds = iat::data::load_dataset("CIFAR10", outer.path, iat::data::Split::kTest);
    REQUIRE(ds.size() == 4);
    CHECK(torch::equal(ds.labels, torch::arange(100, 104) % 10));
    check_cifar_pixels(ds.images, 100);
  }
  SECTION("CIFAR-100 fine and coarse labels") {
    write_file(dir.file("train.bin"), cifar_records(0, 7, 2, 100));
    auto fine = iat::data::read_cifar100(dir.path, iat::data::Split::kTrain);
    auto coarse = iat::data::read_cifar100(dir.path, iat::data::Split::kTrain, false);
    CHECK(fine.num_classes == 100);
    CHECK(coarse.num_classes == 20);
    CHECK(torch::equal(fine.labels, torch::arange(7) % 100));
    CHECK(torch::equal(coarse.labels, torch::arange(7) % 20));
    check_cifar_pixels(fine.images, 0);
    CHECK(torch::equal(fine.images, coarse.images));
  }
  SECTION("errors name the file and what is wrong") {
    Bytes truncated = cifar_records(0, 2, 1, 10);
    truncated.resize(truncated.size() - 100);
    write_file(dir.file("data_batch_3.bin"), truncated);
    REQUIRE_THROWS_WITH(iat::data::read_cifar10(dir.path, iat::data::Split::kTrain),
                        Contains("data_batch_3.bin") && Contains("6046 bytes") && Contains("3073-byte record") &&
                            Contains("truncated after 2973 bytes"));
    Bytes bad_label = cifar_records(0, 2, 1, 10);
    bad_label[3073] = 10;  // second record's label
    write_file(dir.file("test_batch.bin"), bad_label);
    REQUIRE_THROWS_WITH(iat::data::read_cifar10(dir.path, iat::data::Split::kTest),
                        Contains("test_batch.bin") && Contains("label 10 of example 1") && Contains("[0, 10)"));
    REQUIRE_THROWS_WITH(iat::data::read_cifar100(dir.path, iat::data::Split::kTest),
                        Contains("cannot open") && Contains("test.bin"));
    write_file(dir.file("test.bin"), Bytes{});
    REQUIRE_THROWS_WITH(iat::data::read_cifar100(dir.path, iat::data::Split::kTest), Contains("has 0 bytes"));
  }
}

TEST_CASE("IDX files are read raw or gzipped, with rows and columns in place", "[data][readers]") {
  TempDir dir;
  const int64_t n = 9, rows = 4, cols = 5;
  const Bytes images = idx_images(n, rows, cols);
  const Bytes labels = idx_labels(n, 10);
  write_file(dir.file("img"), images);
  write_file(dir.file("lab"), labels);
  write_file(dir.file("img.gz"), deflate_bytes(images, true));
  write_file(dir.file("lab.gz"), deflate_bytes(labels, true));
  auto expected_images = (torch::arange(n * rows * cols) * 7 % 251).view({n, 1, rows, cols});
  auto expected_labels = torch::arange(n) * 3 % 10;

  SECTION("raw and gzipped give the same arrays") {
    for (auto [ip, lp] : {std::pair<std::string, std::string>{"img", "lab"}, {"img.gz", "lab.gz"}, {"img.gz", "lab"}}) {
      auto ds = iat::data::read_idx(dir.file(ip), dir.file(lp));
      CHECK(ds.images.scalar_type() == torch::kByte);
      CHECK(torch::equal(ds.images.to(torch::kLong), expected_images));
      CHECK(torch::equal(ds.labels, expected_labels));
      CHECK(ds.num_classes == 10);
    }
  }
  SECTION("concatenated gzip members are one stream") {
    const Bytes half1(images.begin(), images.begin() + 30), half2(images.begin() + 30, images.end());
    Bytes two = deflate_bytes(half1, true);
    const Bytes second = deflate_bytes(half2, true);
    two.insert(two.end(), second.begin(), second.end());
    write_file(dir.file("two.gz"), two);
    auto ds = iat::data::read_idx(dir.file("two.gz"), dir.file("lab"));
    CHECK(torch::equal(ds.images.to(torch::kLong), expected_images));
  }
  SECTION("Fashion-MNIST and MNIST file names in a folder") {
    write_file(dir.file("t10k-images-idx3-ubyte.gz"), deflate_bytes(images, true));
    write_file(dir.file("t10k-labels-idx1-ubyte"), labels);
    auto f = iat::data::read_fashion_mnist(dir.path, iat::data::Split::kTest);
    CHECK(f.name == "fashion-mnist");
    CHECK(torch::equal(f.labels, expected_labels));
    auto m = iat::data::load_dataset("mnist", dir.path, iat::data::Split::kTest);
    CHECK(m.name == "mnist");
    CHECK(torch::equal(m.images, f.images));
  }
  SECTION("bad input") {
    Bytes wrong = images;
    wrong[2] = 0x09;  // type code 0x09 (signed bytes)
    write_file(dir.file("wrong"), wrong);
    REQUIRE_THROWS_WITH(iat::data::read_idx(dir.file("wrong"), dir.file("lab")),
                        Contains("'" + dir.file("wrong") + "'") && Contains("magic number 0x903") && Contains("0x803"));
    REQUIRE_THROWS_WITH(iat::data::read_idx(dir.file("lab"), dir.file("lab")), Contains("magic number 0x801"));
    Bytes short_data(images.begin(), images.end() - 7);
    write_file(dir.file("short"), short_data);
    REQUIRE_THROWS_WITH(iat::data::read_idx(dir.file("short"), dir.file("lab")),
                        Contains("9x4x5 need 180 data bytes") && Contains("holds 173") && Contains("truncated"));
    Bytes long_data = images;
    long_data.push_back(0);
    write_file(dir.file("long"), long_data);
    REQUIRE_THROWS_WITH(iat::data::read_idx(dir.file("long"), dir.file("lab")), Contains("holds 181"));
    Bytes header_only(images.begin(), images.begin() + 6);
    write_file(dir.file("header"), header_only);
    REQUIRE_THROWS_WITH(iat::data::read_idx(dir.file("header"), dir.file("lab")),
                        Contains("truncated") && Contains("an IDX dimension at offset 4 needs 4 bytes, only 2 remain"));
    write_file(dir.file("lab8"), idx_labels(8, 10));
    REQUIRE_THROWS_WITH(iat::data::read_idx(dir.file("img"), dir.file("lab8")),
                        Contains("holds 9 images") && Contains("holds 8 labels"));
    REQUIRE_THROWS_WITH(iat::data::read_idx(dir.file("img"), dir.file("lab"), 5),
                        Contains("label 6 of example 2") && Contains("[0, 5)"));
    Bytes gz = deflate_bytes(images, true);
    Bytes cut(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2));
    write_file(dir.file("cut.gz"), cut);
    REQUIRE_THROWS_WITH(iat::data::read_idx(dir.file("cut.gz"), dir.file("lab")),
                        Contains("cut.gz") && Contains("is truncated") && Contains("end-of-stream"));
    Bytes corrupt = gz;
    for (size_t i = 10; i < corrupt.size() - 8; ++i) corrupt[i] = 0xff;
    write_file(dir.file("corrupt.gz"), corrupt);
    REQUIRE_THROWS_WITH(iat::data::read_idx(dir.file("corrupt.gz"), dir.file("lab")),
                        Contains("corrupt.gz") && Contains("corrupt compressed data"));
    REQUIRE_THROWS_WITH(iat::data::read_fashion_mnist(dir.path, iat::data::Split::kTrain),
                        Contains("cannot open") && Contains("train-images-idx3-ubyte.gz"));
  }
}

TEST_CASE("SVHN .mat files (level 5, compressed or not) become [N, C, H, W] with label 10 as 0", "[data][readers]") {
  TempDir dir;
  const int32_t n = 12;

  SECTION("miCOMPRESSED elements, y stored as uint8") {
    write_file(dir.file("train_32x32.mat"), svhn_mat(n, true));
    check_svhn(iat::data::read_svhn(dir.path, iat::data::Split::kTrain), n);
  }
  SECTION("uncompressed elements, y stored as double") {
    write_file(dir.file("test_32x32.mat"), svhn_mat(n, false, true));
    check_svhn(iat::data::load_dataset("svhn", dir.path, iat::data::Split::kTest), n);
  }
  SECTION("bad input") {
    const std::string path = dir.file("bad.mat");
    write_file(path, svhn_mat(n, true, false, /*with_x=*/false));
    REQUIRE_THROWS_WITH(iat::data::read_svhn_mat(path),
                        Contains(path) && Contains("no variable 'X'") && Contains("variables: note, y"));
    write_file(path, svhn_mat(n, true, false, true, /*bad_label=*/11));
    REQUIRE_THROWS_WITH(iat::data::read_svhn_mat(path), Contains("label 11 of example 0"));
    write_file(path, svhn_mat(n, false, true, true, /*bad_label=*/-1));
    REQUIRE_NOTHROW(iat::data::read_svhn_mat(path));

    Bytes good = svhn_mat(n, true);
    Bytes cut(good.begin(), good.end() - 20);  // inside y's compressed element
    write_file(path, cut);
    REQUIRE_THROWS_WITH(iat::data::read_svhn_mat(path), Contains(path) && Contains("truncated"));
    Bytes plain = svhn_mat(n, false);
    Bytes plain_cut(plain.begin(), plain.begin() + 300);  // inside X's data
    write_file(path, plain_cut);
    REQUIRE_THROWS_WITH(iat::data::read_svhn_mat(path), Contains("truncated") && Contains("a variable at offset"));
    Bytes bad_version = good;
    bad_version[126] = 'X';
    write_file(path, bad_version);
    REQUIRE_THROWS_WITH(iat::data::read_svhn_mat(path), Contains("not a level-5 MAT-file"));
    Bytes v73 = good;
    const std::string hdf = "MATLAB 7.3 MAT-file";
    std::copy(hdf.begin(), hdf.end(), v73.begin());
    write_file(path, v73);
    REQUIRE_THROWS_WITH(iat::data::read_svhn_mat(path), Contains("HDF5"));
    write_file(path, Bytes(good.begin(), good.begin() + 60));
    REQUIRE_THROWS_WITH(iat::data::read_svhn_mat(path), Contains("the 128-byte MAT-file header"));

    // X's data element claims fewer bytes than its dimensions need.
    Bytes file = mat_header();
    append_element(file, mat_matrix("X", mxUINT8, {kMatH, kMatW, kMatC, 2}, miUINT8, Bytes(10, 0)), true);
    write_file(path, file);
    REQUIRE_THROWS_WITH(iat::data::read_svhn_mat(path),
                        Contains("variable 'X'") && Contains("need 90 values") && Contains("holds 10 bytes"));
    // y with a count other than X's.
    Bytes counts = mat_header();
    append_element(counts, mat_matrix("X", mxUINT8, {kMatH, kMatW, kMatC, 2}, miUINT8, Bytes(90, 0)), false);
    append_element(counts, mat_matrix("y", mxDOUBLE, {3, 1}, miUINT8, Bytes{1, 2, 3}), false);
    write_file(path, counts);
    REQUIRE_THROWS_WITH(iat::data::read_svhn_mat(path), Contains("'y' must be an N x 1 vector with N = 2"));
    // A compressed element whose zlib stream is damaged.
    Bytes damaged = good;
    for (size_t i = 128 + 60; i < 128 + 90; ++i) damaged[i] ^= 0x5a;
    write_file(path, damaged);
    REQUIRE_THROWS_AS(iat::data::read_svhn_mat(path), c10::Error);
  }
}

TEST_CASE("npz archives, stored or deflated, give NCHW uint8 images and int64 labels", "[data][readers]") {
  TempDir dir;
  const int64_t n = 11;

  SECTION("stored and deflated archives read alike") {
    write_zip(dir.file("stored.npz"), npz_members(n), false);
    write_zip(dir.file("deflated.npz"), npz_members(n, "|u1"), true);
    check_npz(iat::data::read_npz(dir.file("stored.npz")), n);
    check_npz(iat::data::read_npz(dir.file("deflated.npz")), n);
    // The deflated file really is compressed (a repetitive 792-byte image array).
    CHECK(read_all(dir.file("deflated.npz")).size() < read_all(dir.file("stored.npz")).size());
    auto labels = iat::data::read_npz_array(dir.file("deflated.npz"), "label");
    CHECK(labels.scalar_type() == torch::kByte);
    CHECK(torch::equal(labels.to(torch::kLong), torch::arange(n) % 10));
  }
  SECTION("zip64 archives (sizes and offsets in zip64 records)") {
    write_file(dir.file("zip64.npz"), zip64_archive(npz_members(n)));
    check_npz(iat::data::read_npz(dir.file("zip64.npz")), n);
  }
  SECTION("other keys, grayscale [N, H, W] and Fortran order") {
    Bytes gray;
    for (int64_t i = 0; i < 2 * 3 * 4; ++i) gray.push_back(static_cast<uint8_t>(i));
    Bytes fortran_labels;  // [2, 1] int64 in column-major order is just the two values
    for (int64_t v : {7, 3}) {
      const auto* p = reinterpret_cast<const uint8_t*>(&v);
      fortran_labels.insert(fortran_labels.end(), p, p + 8);
    }
    write_zip(dir.file("gray.npz"), {{"x.npy", npy("|u1", {2, 3, 4}, gray)}, {"y.npy", npy("<i8", {2, 1}, fortran_labels, true)}},
              true);
    auto ds = iat::data::read_npz(dir.file("gray.npz"), "x", "y", 8);
    CHECK(ds.images.sizes() == torch::IntArrayRef({2, 1, 3, 4}));
    CHECK(torch::equal(ds.images.to(torch::kLong).flatten(), torch::arange(24)));
    CHECK(torch::equal(ds.labels, torch::tensor({7, 3}, torch::kLong)));
  }
  SECTION("bad input") {
    write_zip(dir.file("ok.npz"), npz_members(n), true);
    REQUIRE_THROWS_WITH(iat::data::read_npz(dir.file("ok.npz"), "images"),
                        Contains("ok.npz") && Contains("no array 'images'") && Contains("'image', 'label'"));
    REQUIRE_THROWS_WITH(iat::data::read_npz(dir.file("ok.npz"), "image", "label", 5),
                        Contains("label 5 of example 5") && Contains("[0, 5)"));
    Bytes whole = read_all(dir.file("ok.npz"));
    write_file(dir.file("cut.npz"), Bytes(whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(whole.size() / 2)));
    REQUIRE_THROWS_WITH(iat::data::read_npz(dir.file("cut.npz")),
                        Contains("cut.npz") && Contains("not a readable .npz (zip) archive"));
    REQUIRE_THROWS_WITH(iat::data::read_npz(dir.file("absent.npz")), Contains("absent.npz") && Contains("no such file"));

    auto members = npz_members(n);
    members[0].second.resize(members[0].second.size() - 5);  // image data shorter than its shape
    write_zip(dir.file("short.npz"), members, false);
    REQUIRE_THROWS_WITH(iat::data::read_npz(dir.file("short.npz")),
                        Contains("'image'") && Contains("(11, 4, 6, 3)") && Contains("needs 792 data bytes") &&
                            Contains("holds 787"));
    members = npz_members(n);
    members[1] = {"label.npy", npy("<i8", {n - 1}, Bytes(static_cast<size_t>(8 * (n - 1)), 0))};
    write_zip(dir.file("count.npz"), members, true);
    REQUIRE_THROWS_WITH(iat::data::read_npz(dir.file("count.npz")), Contains("11 images") && Contains("10 labels"));
    members = npz_members(n);
    members[0] = {"image.npy", npy("<f4", {n, 4, 6, 3}, Bytes(static_cast<size_t>(4 * n * 72), 0))};
    write_zip(dir.file("float.npz"), members, true);
    REQUIRE_THROWS_WITH(iat::data::read_npz(dir.file("float.npz")), Contains("must be uint8") && Contains("'<f4'"));
    members = npz_members(n);
    members[1].second[0] = 'X';  // broken .npy magic
    write_zip(dir.file("magic.npz"), members, false);
    REQUIRE_THROWS_WITH(iat::data::read_npz(dir.file("magic.npz")), Contains("'label'") && Contains("NUMPY magic"));

    // A stored member whose bytes were altered after zipping: libzip's CRC check catches it.
    write_zip(dir.file("crc.npz"), npz_members(n), false);
    Bytes crc = read_all(dir.file("crc.npz"));
    crc[200] ^= 0xff;  // inside the first member's data
    write_file(dir.file("crc.npz"), crc);
    REQUIRE_THROWS_WITH(iat::data::read_npz(dir.file("crc.npz")), Contains("crc.npz") && Contains("CRC"));
  }
}

TEST_CASE("load_dataset names its valid datasets", "[data][readers]") {
  REQUIRE_THROWS_WITH(iat::data::load_dataset("imagenet", ".", iat::data::Split::kTrain),
                      Contains("unknown dataset 'imagenet'") && Contains("cifar10") && Contains("svhn") &&
                          Contains("fashion-mnist"));
}

TEST_CASE("the real Fashion-MNIST, when installed: 60 000 / 10 000 images, 6 000 per class in train", "[data][readers][real]") {
  const std::string dir = iat::data::default_fashion_mnist_dir();
  if (!fs::exists(fs::path(dir) / "train-images-idx3-ubyte.gz")) {
    WARN("Fashion-MNIST not installed at " << dir << " (Debian package dataset-fashion-mnist); skipped");
    return;
  }
  auto train = iat::data::read_fashion_mnist(dir, iat::data::Split::kTrain);
  auto test = iat::data::load_dataset("fashion-mnist", "", iat::data::Split::kTest);
  CHECK(train.images.sizes() == torch::IntArrayRef({60000, 1, 28, 28}));
  CHECK(test.images.sizes() == torch::IntArrayRef({10000, 1, 28, 28}));
  CHECK(torch::equal(train.labels.bincount(), torch::full({10}, 6000, torch::kLong)));
  CHECK(torch::equal(test.labels.bincount(), torch::full({10}, 1000, torch::kLong)));
  // Real images: dark background, bright garments.
  const double mean = train.images.to(torch::kDouble).mean().item<double>() / 255;
  CHECK(mean > 0.2);
  CHECK(mean < 0.4);
  CHECK(train.images.max().item<int64_t>() == 255);
}
