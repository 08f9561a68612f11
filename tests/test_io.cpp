// iat::io: torch.save files of a dict of tensors. Round trips with real values, the reader's errors on
// damaged and hostile files (each names the file), and the exchange with Python's torch.save/torch.load.
#include "support.hpp"
#include "temp_dir.hpp"

#include <iat/io/tensor_file.hpp>

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

using namespace iat_test;
namespace io = iat::io;
namespace fs = std::filesystem;

namespace {

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// Tensors of every element type a state dict or an evaluation's output holds, with distinct values.
c10::Dict<std::string, torch::Tensor> some_tensors() {
  c10::Dict<std::string, torch::Tensor> d;
  d.insert("w", torch::arange(12, torch::kFloat).reshape({3, 4}) / 7);
  d.insert("t", torch::arange(6, torch::kDouble).reshape({2, 3}).t());  // not contiguous
  d.insert("h", torch::linspace(-2, 2, 5).to(torch::kHalf));
  d.insert("b16", torch::linspace(-1, 3, 4).to(torch::kBFloat16));
  d.insert("n", torch::tensor({int64_t{-5}, int64_t{1} << 40, int64_t{7}}));
  d.insert("i", torch::tensor({-3, 4}, torch::kInt));
  d.insert("c", torch::tensor({-128, 127}, torch::kChar));
  d.insert("u", torch::tensor({0, 255}, torch::kByte));
  d.insert("flag", torch::tensor({true, false, true}));
  d.insert("scalar", torch::tensor(2.5));
  d.insert("empty", torch::zeros({0, 3}));
  return d;
}

const std::string kPython = IAT_TEST_PYTHON;
bool python_torch_available() { return std::system(("'" + kPython + "' -c 'import torch' >/dev/null 2>&1").c_str()) == 0; }

}  // namespace

TEST_CASE("tensor files: what save_tensor_dict writes, read_tensor_dict reads back", "[io]") {
  TempDir dir("iat_io");
  const auto tensors = some_tensors();
  const auto path = dir.file("t.pt");
  io::save_tensor_dict(tensors, path);
  const auto back = io::read_tensor_dict(path);
  SECTION("every key in order, with its dtype, shape and values") {
    REQUIRE(back.size() == tensors.size());
    size_t i = 0;
    for (const auto& kv : tensors) {
      INFO(kv.key());
      CHECK(back.keys()[i++] == kv.key());
      const auto& got = back[kv.key()];
      CHECK(got.scalar_type() == kv.value().scalar_type());
      CHECK(got.sizes() == kv.value().sizes());
      CHECK(torch::equal(got, kv.value()));
    }
    CHECK(back["n"][1].item<int64_t>() == int64_t{1} << 40);
    CHECK(back["t"][2][1].item<double>() == 5.0);  // the transposed view's element, not the storage's
  }
  SECTION("a second save replaces the file and leaves no temporary file; a left NAME.tmp is replaced") {
    c10::Dict<std::string, torch::Tensor> other;
    other.insert("x", torch::ones({2}));
    write_bytes(path + ".tmp", {'o', 'l', 'd'});  // what a killed save leaves
    io::save_tensor_dict(other, path);
    const auto again = io::read_tensor_dict(path);
    REQUIRE(again.size() == 1);
    CHECK(torch::equal(again["x"], torch::ones({2})));
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir.path)) names.push_back(entry.path().filename().string());
    CHECK(names == std::vector<std::string>{"t.pt"});
  }
  SECTION("an unwritable destination is named, with the reason") {
    const auto bad = dir.file("no/such/folder/m.pt");
    REQUIRE_THROWS_WITH(io::save_tensor_dict(tensors, bad),
                        Catch::StartsWith("iat::io::save_tensor_dict: cannot create '" + bad + ".tmp' (for '" + bad +
                                          "'): No such file or directory"));
  }
}

TEST_CASE("tensor-file errors name the file and what was found there", "[io]") {
  TempDir dir("iat_io");
  SECTION("no such file, not a zip, a truncated zip") {
    REQUIRE_THROWS_WITH(io::read_tensor_dict(dir.file("nope.pt")), Catch::Contains("cannot open '") &&
                                                                           Catch::Contains("nope.pt"));
    write_bytes(dir.file("text.pt"), {'h', 'e', 'l', 'l', 'o'});
    REQUIRE_THROWS_WITH(io::read_tensor_dict(dir.file("text.pt")),
                        Catch::Contains("text.pt' is not a zip archive"));
    io::save_tensor_dict(some_tensors(), dir.file("good.pt"));
    std::ifstream in(dir.file("good.pt"), std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    bytes.resize(bytes.size() / 2);
    write_bytes(dir.file("half.pt"), bytes);
    REQUIRE_THROWS_WITH(io::read_tensor_dict(dir.file("half.pt")),
                        Catch::Contains("half.pt' is not a readable torch.save archive"));
  }
  SECTION("a file that is not a dict of tensors") {
    write_bytes(dir.file("tensor.pt"), torch::jit::pickle_save(torch::zeros({2})));
    REQUIRE_THROWS_WITH(io::read_tensor_dict(dir.file("tensor.pt")),
                        Catch::Contains("holds a tensor, not a dict of tensors"));
    c10::Dict<std::string, int64_t> ints;
    ints.insert("conv1.weight", 3);
    write_bytes(dir.file("ints.pt"), torch::jit::pickle_save(ints));
    REQUIRE_THROWS_WITH(io::read_tensor_dict(dir.file("ints.pt")),
                        Catch::Contains("entry 'conv1.weight' is not a tensor (found: int)"));
  }
  SECTION("a corrupt pickle inside a valid archive") {
    auto write_pickle = [&](const std::string& name, const std::string& pickle) {
      caffe2::serialize::PyTorchStreamWriter writer(dir.file(name));
      writer.writeRecord("data.pkl", pickle.data(), pickle.size());
      writer.writeEndOfFile();
    };
    write_pickle("badop.pt", std::string("\x80\x02\xff", 3));
    REQUIRE_THROWS_WITH(io::read_tensor_dict(dir.file("badop.pt")),
                        Catch::Contains("unsupported pickle opcode 0xff at offset 2"));
    write_pickle("long.pt", std::string("\x80\x02X\xff\xff\x00\x00" "ab", 9));
    REQUIRE_THROWS_WITH(io::read_tensor_dict(dir.file("long.pt")), Catch::Contains("runs past the end"));
    write_pickle("nostop.pt", std::string("\x80\x02}", 3));
    REQUIRE_THROWS_WITH(io::read_tensor_dict(dir.file("nostop.pt")), Catch::Contains("without a STOP"));
    write_pickle("obj.pt", std::string("\x80\x02""c__main__\nNet\n)R.", 19));
    REQUIRE_THROWS_WITH(io::read_tensor_dict(dir.file("obj.pt")),
                        Catch::Contains("unsupported object __main__.Net"));
  }
  SECTION("hostile pickles: cycles, deep nesting and huge sizes end in an error before any large allocation") {
    auto write_pickle = [&](const std::string& name, const std::string& pickle) {
      caffe2::serialize::PyTorchStreamWriter writer(dir.file(name));
      const std::vector<char> storage(16, 0);
      writer.writeRecord("data/0", storage.data(), storage.size());  // 4 floats
      writer.writeRecord("data.pkl", pickle.data(), pickle.size());
      writer.writeEndOfFile();
    };
    auto text = [](const std::string& t) {
      std::string out = "X";
      for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((t.size() >> (8 * i)) & 0xff));
      return out + t;
    };
    auto long1 = [](uint64_t v) {
      std::string out = "\x8a\x08";
      for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
      return out;
    };
    const std::string proto("\x80\x02", 2);
    const std::string zero(1, '\0');
    auto storage = [&](const std::string& numel) {
      return "(" + text("storage") + "ctorch\nFloatStorage\n" + text("0") + text("cpu") + numel + "tQ";
    };
    // {"w": _rebuild_tensor_v2(storage(numel), 0, (size,), (stride,), False, ())}
    auto one_tensor = [&](const std::string& numel, const std::string& size, const std::string& stride) {
      return proto + "}" + text("w") + "ctorch._utils\n_rebuild_tensor_v2\n(" + storage(numel) + "K" + zero + size +
             "\x85" + stride + "\x85\x89)tRs.";
    };
    write_pickle("fine.pt", one_tensor("K\x04", "K\x04", "K\x01"));
    CHECK(io::read_tensor_dict(dir.file("fine.pt"))["w"].sizes() == torch::IntArrayRef({4}));

    write_pickle("self.pt", proto + "]q" + zero + "h" + zero + "a.");
    REQUIRE_THROWS_WITH(io::read_tensor_dict(dir.file("self.pt")), Catch::Contains("a list put into itself"));
    // list1 holds list0; then list1 is appended to list0, which is held: a cycle.
    write_pickle("cycle.pt", proto + "]q" + zero + "]q\x01h" + zero + "ah" + zero + "h\x01" "a.");
    REQUIRE_THROWS_WITH(io::read_tensor_dict(dir.file("cycle.pt")),
                        Catch::Contains("a list changed after it was put into another container"));
    write_pickle("deep.pt", proto + std::string(100, ']') + std::string(99, 'a') + ".");
    REQUIRE_THROWS_WITH(io::read_tensor_dict(dir.file("deep.pt")), Catch::Contains("nested deeper than 64 levels"));
    // A storage claiming 2^62 floats (2^64 bytes wraps to 0 in a careless product) in a 16-byte record.
    write_pickle("numel.pt", one_tensor(long1(uint64_t{1} << 62), "K\x04", "K\x01"));
    REQUIRE_THROWS_WITH(io::read_tensor_dict(dir.file("numel.pt")),
                        Catch::Contains("holds 16 bytes, too few for 4611686018427387904 elements"));
    // Sizes and strides whose last element overflows int64.
    write_pickle("stride.pt", one_tensor("K\x04", long1(uint64_t{1} << 40), long1(uint64_t{1} << 40)));
    REQUIRE_THROWS_WITH(io::read_tensor_dict(dir.file("stride.pt")), Catch::Contains("runs past its storage of 4 elements"));
    // 2^40 repetitions of one element (stride 0): kept as a view of the 16-byte storage, not materialised.
    write_pickle("repeat.pt", one_tensor("K\x04", long1(uint64_t{1} << 40), "K" + zero));
    const auto repeated = io::read_tensor_dict(dir.file("repeat.pt"))["w"];
    CHECK(repeated.numel() == int64_t{1} << 40);
    CHECK(repeated.storage().nbytes() == 16);
    // A rebuild over that view instead of a storage: 2^32 of its elements passed the bounds check against
    // the view's 2^40 and were cloned (16 GiB from a 500-byte file). Only a storage may be rebuilt.
    auto rebuild = [&](const std::string& from, const std::string& size, const std::string& stride) {
      return "ctorch._utils\n_rebuild_tensor_v2\n(" + from + "K" + zero + size + "\x85" + stride + "\x85\x89)tR";
    };
    write_pickle("nested.pt", proto + "}" + text("w") +
                                  rebuild(rebuild(storage("K\x04"), long1(uint64_t{1} << 40), "K" + zero),
                                          long1(uint64_t{1} << 32), "K\x01") +
                                  "s.");
    REQUIRE_THROWS_WITH(io::read_tensor_dict(dir.file("nested.pt")),
                        Catch::Contains("_rebuild_tensor_v2 on a tensor, not a storage"));
  }
  SECTION("a damaged record inside a readable archive: the error names the file (found by fuzz_state_dict)") {
    const auto path = dir.file("damaged_record.pt");
    io::save_tensor_dict(some_tensors(), path);
    std::string bytes;
    {
      std::ifstream in(path, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    // The local header of the first storage record (the central directory still lists it).
    const auto at = bytes.find("/data/0");
    REQUIRE(at != std::string::npos);
    const auto header = bytes.rfind("PK\x03\x04", at);
    REQUIRE(header != std::string::npos);
    bytes[header + 2] = 'X';
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    REQUIRE_THROWS_WITH(io::read_tensor_dict(path), Catch::Contains(path) && Catch::Contains("cannot be read"));
  }
}

// One Python start (~2 s for `import torch`) for both directions.
TEST_CASE("tensor files travel between C++ and Python's torch.save / torch.load", "[io][python]") {
  if (!python_torch_available()) {
    WARN("skipped: '" << kPython << "' cannot import torch");
    return;
  }
  TempDir dir("iat_io");
  io::save_tensor_dict(some_tensors(), dir.file("from_cpp.pt"));
  // Python checks what C++ wrote (with weights_only=True, torch.load's default from 2.6 on) and writes a
  // dict with views sharing one storage, a parameter, a stride-0 expand and pickle protocol 4.
  const std::string script = R"PY(
import sys, torch
d = torch.load(sys.argv[1] + "/from_cpp.pt", weights_only=True)
assert list(d) == ["w", "t", "h", "b16", "n", "i", "c", "u", "flag", "scalar", "empty"], list(d)
assert torch.equal(d["w"], torch.arange(12, dtype=torch.float).reshape(3, 4) / 7)
assert torch.equal(d["t"], torch.arange(6, dtype=torch.double).reshape(2, 3).t())
assert d["h"].dtype == torch.half and torch.equal(d["h"], torch.linspace(-2, 2, 5).half())
assert d["b16"].dtype == torch.bfloat16 and torch.equal(d["b16"], torch.linspace(-1, 3, 4).bfloat16())
assert d["n"].tolist() == [-5, 1 << 40, 7] and d["i"].tolist() == [-3, 4]
assert d["c"].tolist() == [-128, 127] and d["u"].tolist() == [0, 255] and d["flag"].tolist() == [True, False, True]
assert d["scalar"].dim() == 0 and d["scalar"].item() == 2.5 and d["empty"].shape == (0, 3)
base = torch.arange(10, dtype=torch.float)
out = {"head": base[:4], "tail": base[6:], "every_other": base[::2],
       "param": torch.nn.Parameter(torch.full((2, 2), 0.5)), "row": torch.tensor([1.0, 2.0]).expand(3, 2),
       "long": torch.tensor([3, -4])}
torch.save(out, sys.argv[1] + "/from_python.pt")
torch.save(out, sys.argv[1] + "/from_python_p4.pt", pickle_protocol=4)
)PY";
  {
    std::ofstream(dir.file("check.py")) << script;
  }
  const std::string cmd = "'" + kPython + "' '" + dir.file("check.py") + "' '" + dir.path.string() + "'";
  INFO(cmd);
  REQUIRE(std::system(cmd.c_str()) == 0);
  for (const char* name : {"from_python.pt", "from_python_p4.pt"}) {
    INFO(name);
    const auto d = io::read_tensor_dict(dir.file(name));
    REQUIRE(d.keys() == std::vector<std::string>{"head", "tail", "every_other", "param", "row", "long"});
    const auto base = torch::arange(10, torch::kFloat);
    CHECK(torch::equal(d["head"], base.slice(0, 0, 4)));
    CHECK(torch::equal(d["tail"], base.slice(0, 6)));
    CHECK(torch::equal(d["every_other"], base.slice(0, 0, 10, 2)));
    CHECK(torch::equal(d["param"], torch::full({2, 2}, 0.5)));
    CHECK(torch::equal(d["row"], torch::tensor({1.0f, 2.0f}).expand({3, 2})));
    CHECK(d["row"].storage().nbytes() == 2 * sizeof(float));  // the repeat stays a view of its 2 elements
    CHECK(torch::equal(d["long"], torch::tensor({int64_t{3}, int64_t{-4}})));
    d["head"].fill_(-1);  // each tensor is its own copy: the shared storage is not shared after reading
    CHECK(d["tail"][0].item<float>() == 6.0f);
  }
}
