// Tests of iat::data's readers. Every input file is written here, in a temporary folder, in the exact
// format of the real datasets (CIFAR records, IDX raw and gzipped, MATLAB level-5 with and without
// miCOMPRESSED elements, npz stored and deflated: tests/data_writers.hpp, which the fuzz targets' seeds
// share); the real Fashion-MNIST is read when installed.

#include <iat/data/cifar.hpp>
#include <iat/data/idx.hpp>
#include <iat/data/load.hpp>
#include <iat/data/npz.hpp>
#include <iat/data/svhn.hpp>

#include <torch/types.h>

#include "data_writers.hpp"
#include "temp_dir.hpp"

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
using namespace iat_test;  // the formats' writers (data_writers.hpp)
using Catch::Contains;

namespace {


void write_file(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

Bytes read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
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
    // Dimensions whose byte count wraps past 2^64 to the 0 bytes the element holds (2^62 doubles): refused
    // by this check, not by a failed allocation that names no file.
    Bytes wraps = mat_header();
    append_element(wraps, mat_matrix("X", mxUINT8, {1 << 30, 1 << 30, 4, 1}, miDOUBLE, Bytes{}), false);
    write_file(path, wraps);
    REQUIRE_THROWS_WITH(iat::data::read_svhn_mat(path), Contains(path) && Contains("variable 'X'") &&
                                                            Contains("need 4611686018427387904 values of 8 bytes") &&
                                                            Contains("holds 0 bytes"));
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
  SECTION("zip bombs: an entry stating more bytes than its data can hold is refused before allocating") {
    // The central directory's uncompressed size of image.npy (offset 24 of its record) set to ~4 GB.
    auto inflate_claim = [&](const std::string& name, bool deflate) {
      write_zip(dir.file(name), npz_members(n), deflate);
      Bytes b = read_all(dir.file(name));
      const std::string member = "image.npy";
      for (size_t i = 0; i + 46 + member.size() <= b.size(); ++i) {
        if (b[i] == 'P' && b[i + 1] == 'K' && b[i + 2] == 1 && b[i + 3] == 2 &&
            std::equal(member.begin(), member.end(), b.begin() + static_cast<std::ptrdiff_t>(i + 46))) {
          for (int k = 0; k < 4; ++k) b[i + 24 + static_cast<size_t>(k)] = k == 0 ? 0xf0 : 0xff;
        }
      }
      write_file(dir.file(name), b);
    };
    inflate_claim("bomb.npz", true);
    REQUIRE_THROWS_WITH(iat::data::read_npz(dir.file("bomb.npz")),
                        Contains("bomb.npz") && Contains("claims 4294967280 bytes") && Contains("zip bomb"));
    inflate_claim("stored_bomb.npz", false);
    REQUIRE_THROWS_WITH(iat::data::read_npz(dir.file("stored_bomb.npz")),
                        Contains("stored_bomb.npz") && Contains("stored bytes") && Contains("zip bomb"));
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
    // 2^31 × 2^30 labels of 8 bytes: 2^64 bytes, which wraps to the 0 the entry holds.
    members[1] = {"label.npy", npy("<i8", {int64_t{1} << 31, int64_t{1} << 30}, Bytes{})};
    write_zip(dir.file("wrap.npz"), members, false);
    REQUIRE_THROWS_WITH(iat::data::read_npz(dir.file("wrap.npz")),
                        Contains("wrap.npz") && Contains("'label'") && Contains("needs more than 2^64 data bytes"));
    members = npz_members(n);
    // No images of 2^20 × 2^20 × 3 bytes each: refused, not sized by one image (a 3 TiB buffer).
    members[0] = {"image.npy", npy("|u1", {0, int64_t{1} << 20, int64_t{1} << 20, 3}, Bytes{})};
    write_zip(dir.file("none.npz"), members, false);
    REQUIRE_THROWS_WITH(iat::data::read_npz(dir.file("none.npz")), Contains("none.npz") && Contains("holds 0 images"));
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

TEST_CASE("save_npz writes archives that read_npz_array and numpy read back exactly", "[data][npz]") {
  TempDir dir;
  const auto images = (torch::arange(2 * 3 * 4 * 5) % 256).to(torch::kByte).reshape({2, 3, 4, 5});
  const auto p = torch::linspace(-1.5, 1.5, 7);                    // float32 [7], steps of 0.5: exact in both
  const auto labels = torch::tensor(std::vector<int64_t>{-3, 1ll << 40, 9});
  const auto scalar = torch::tensor(0.25, torch::kDouble);         // 0-dim
  const auto flags = torch::tensor(std::vector<uint8_t>{1, 0, 1}).to(torch::kBool);
  const auto empty = torch::zeros({0, 3});
  const auto strided = torch::arange(12, torch::kFloat).reshape({3, 4}).t();  // not contiguous: written as values
  const std::string path = dir.file("out.npz");
  iat::data::save_npz(path, {{"images", images}, {"p", p}, {"labels", labels}, {"scalar", scalar}, {"flags", flags},
                             {"empty", empty}, {"strided", strided}});
  CHECK_FALSE(fs::exists(path + ".tmp"));
  CHECK(torch::equal(iat::data::read_npz_array(path, "images"), images));
  CHECK(torch::equal(iat::data::read_npz_array(path, "p"), p));
  CHECK(torch::equal(iat::data::read_npz_array(path, "labels"), labels));
  const auto s = iat::data::read_npz_array(path, "scalar");
  CHECK(s.dim() == 0);
  CHECK(s.scalar_type() == torch::kDouble);
  CHECK(s.item<double>() == 0.25);
  CHECK(torch::equal(iat::data::read_npz_array(path, "flags"), flags));
  CHECK(iat::data::read_npz_array(path, "empty").sizes() == torch::IntArrayRef({0, 3}));
  CHECK(torch::equal(iat::data::read_npz_array(path, "strided"), strided.contiguous()));
  // The same arrays, the same bytes (a fixed date in the archive, which numpy's check below reads).
  const std::string again = dir.file("again.npz");
  iat::data::save_npz(again, {{"images", images}, {"p", p}, {"labels", labels}, {"scalar", scalar}, {"flags", flags},
                              {"empty", empty}, {"strided", strided}});
  CHECK(read_all(again) == read_all(path));

  SECTION("numpy's np.load reads the same dtypes, shapes and values") {
    const std::string python = IAT_TEST_PYTHON;
    if (std::system(("'" + python + "' -c 'import numpy' >/dev/null 2>&1").c_str()) != 0) {
      WARN("skipped: '" << python << "' cannot import numpy");
      return;
    }
    const std::string script = R"PY(
import sys, numpy as np
a = np.load(sys.argv[1])
assert list(a.keys()) == ["images", "p", "labels", "scalar", "flags", "empty", "strided"], list(a.keys())
assert a["images"].dtype == np.uint8 and a["images"].shape == (2, 3, 4, 5)
assert (a["images"].ravel() == np.arange(120) % 256).all()
assert a["p"].dtype == np.float32 and np.array_equal(a["p"], np.linspace(-1.5, 1.5, 7, dtype=np.float32))
assert a["labels"].dtype == np.int64 and a["labels"].tolist() == [-3, 1 << 40, 9]
assert a["scalar"].shape == () and a["scalar"].dtype == np.float64 and float(a["scalar"]) == 0.25
assert a["flags"].dtype == np.bool_ and a["flags"].tolist() == [True, False, True]
assert a["empty"].shape == (0, 3)
assert a["strided"].tolist() == np.arange(12, dtype=np.float32).reshape(3, 4).T.tolist()
import zipfile
dates = [i.date_time[:2] for i in zipfile.ZipFile(sys.argv[1]).infolist()]
assert dates == [(1980, 1)] * 7, dates  # the fixed date, not the time of writing
)PY";
    std::ofstream(dir.file("check.py")) << script;
    const std::string cmd = "'" + python + "' '" + dir.file("check.py") + "' '" + path + "'";
    INFO(cmd);
    CHECK(std::system(cmd.c_str()) == 0);
  }
  SECTION("refusals name the file and the array; a failed write leaves the earlier file") {
    const auto before = read_all(path);
    CHECK_THROWS_WITH(iat::data::save_npz(path, {{"z", torch::zeros({2}, torch::kComplexFloat)}}),
                      Contains("save_npz") && Contains("'z'") && Contains("cannot hold"));
    CHECK_THROWS_WITH(iat::data::save_npz(path, {{"a", p}, {"a", p}}), Contains(path) && Contains("'a' is given twice"));
    CHECK_THROWS_WITH(iat::data::save_npz(path, {{"", p}}), Contains("empty key"));
    CHECK(read_all(path) == before);
    const std::string missing = dir.file("no_such_dir/x.npz");
    CHECK_THROWS_WITH(iat::data::save_npz(missing, {{"p", p}}), Contains(missing));
    CHECK_FALSE(fs::exists(missing));
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
