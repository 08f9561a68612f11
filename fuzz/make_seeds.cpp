// Writes the fuzz targets' seed corpora with the tests' own writers (tests/data_writers.hpp) and iat's own
// savers: make_seeds OUT_DIR [PYTHON] makes OUT_DIR/<target>/seed-*. With PYTHON (an interpreter with
// torch), a state dict written by Python's torch.save joins the state_dict corpus.
#include "autoattack_fixture.hpp"
#include "fuzz_support.hpp"

#include "../tests/data_writers.hpp"

#include <caffe2/serialize/inline_container.h>
#include <iat/detail/archive_checksum.hpp>
#include <iat/eval/autoattack.hpp>
#include <iat/models/state_dict.hpp>
#include <iat/train/checkpoint.hpp>

#include <torch/nn/modules/linear.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

namespace fs = std::filesystem;
using iat_test::Bytes;

namespace {

std::string text_of(const Bytes& b) { return std::string(b.begin(), b.end()); }

/// The mode byte some targets read first, then `rest`.
std::string mode(char byte, const std::string& rest) { return std::string(1, byte) + rest; }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

struct Corpus {
  fs::path dir;
  int count = 0;
  void add(const std::string& bytes) {
    fs::create_directories(dir);
    std::ofstream out(dir / ("seed-" + std::to_string(count++)), std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw std::runtime_error("cannot write a seed under " + dir.string());
  }
};

std::string npz_bytes(const fs::path& tmp, const std::vector<std::pair<std::string, Bytes>>& members, bool deflate) {
  const auto path = (tmp / "seed.npz").string();
  iat_test::write_zip(path, members, deflate);
  return read_file(path);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::cerr << "usage: make_seeds OUT_DIR [PYTHON]\n";
    return 2;
  }
  const fs::path out = argv[1];
  const fs::path tmp = out / ".tmp";
  fs::create_directories(tmp);
  torch::manual_seed(0);
  try {
    Corpus cifar{out / "cifar"};
    cifar.add(mode('\x00', text_of(iat_test::cifar_records(0, 2, 1, 10))));
    cifar.add(mode('\x01', text_of(iat_test::cifar_records(0, 2, 2, 100))));

    Corpus idx{out / "idx"};
    const Bytes images = iat_test::idx_images(3, 4, 5), labels = iat_test::idx_labels(3, 10);
    idx.add(iat_fuzz::frame({text_of(images), text_of(labels)}));
    idx.add(iat_fuzz::frame({text_of(iat_test::deflate_bytes(images, true)), text_of(iat_test::deflate_bytes(labels, true))}));

    Corpus svhn{out / "svhn"};
    svhn.add(text_of(iat_test::svhn_mat(2, true)));
    svhn.add(text_of(iat_test::svhn_mat(2, false, true)));

    Corpus npz{out / "npz"}, npy{out / "npy_header"};
    npz.add(npz_bytes(tmp, iat_test::npz_members(2), false));
    npz.add(npz_bytes(tmp, iat_test::npz_members(2, "|u1"), true));
    npz.add(text_of(iat_test::zip64_archive(iat_test::npz_members(2))));
    for (const auto& m : iat_test::npz_members(2)) npy.add(text_of(m.second));
    npy.add(text_of(iat_test::npy("<f4", {2, 1}, Bytes(8, 0), true)));

    // State dicts: iat's own writer (whole file, and its pickle alone), and Python's torch.save if given.
    Corpus sd{out / "state_dict"};
    torch::nn::Linear lin(3, 2);
    const auto sd_path = (tmp / "sd.pt").string();
    iat::models::save_state_dict(*lin, sd_path);
    sd.add(mode('\x01', read_file(sd_path)));
    {
      caffe2::serialize::PyTorchStreamReader reader(sd_path);
      auto record = reader.getRecord("data.pkl");
      sd.add(mode('\x00', std::string(static_cast<const char*>(std::get<0>(record).get()), std::get<1>(record))));
    }
    if (argc == 3) {
      const auto py_path = (tmp / "py.pt").string();
      const std::string cmd = std::string(argv[2]) +
                              " -c \"import sys, torch; m = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), "
                              "torch.nn.BatchNorm2d(2)); torch.save(m.state_dict(), sys.argv[1])\" '" + py_path + "'";
      if (std::system(cmd.c_str()) == 0) {
        sd.add(mode('\x01', read_file(py_path)));
        caffe2::serialize::PyTorchStreamReader reader(py_path);
        auto record = reader.getRecord("data.pkl");
        sd.add(mode('\x00', std::string(static_cast<const char*>(std::get<0>(record).get()), std::get<1>(record))));
      } else {
        std::cerr << "make_seeds: '" << argv[2] << "' could not write a torch.save state dict; skipped\n";
      }
    }

    // A checkpoint as iat-train writes one (model, settings, counters, tensors), with its checksum.
    Corpus ckpt{out / "checkpoint"};
    {
      torch::serialize::OutputArchive a, model;
      lin->save(model);
      a.write("identity", c10::IValue(std::string("{\"format\":1}")));
      a.write("epoch", c10::IValue(int64_t{1}));
      a.write("model", model);
      a.write("epoch_sums", torch::zeros({3}, torch::kDouble));
      const auto path = (tmp / "checkpoint.pt").string();
      iat::train::save_atomically(a, path);
      ckpt.add(read_file(path));
    }

    // An AutoAttack state file stopped after one batch (mode byte 0: the whole file), and structured edits.
    Corpus aa{out / "autoattack_state"};
    {
      const auto path = (tmp / "aa.state").string();
      iat_fuzz::AutoAttackFixture().write_interrupted_state(path);
      aa.add(mode('\x00', read_file(path)));
      for (int record = 0; record < 8; ++record) aa.add(std::string{'\x01', static_cast<char>(record * 3), '\x05', '\x01', '\x06'});
    }
    // iat-train command lines (NUL-separated arguments): a preset with overrides, every kind of flag value
    // (fractions, integers, booleans, names, paths), flags that need or exclude each other, and the listings.
    Corpus flags{out / "train_flags"};
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"--preset", "fashion-pgd-at-cnn", "--epochs", "2", "--out", "runs/x"},
             {"--preset=cifar10-uiat-prn18", "--eps", "8/255", "--step-size", "2/255", "--inv-eps=4/255"},
             {"--method", "trades", "--data", "synthetic", "--batch-size", "16", "--augment", "false", "--seed", "3"},
             {"--method", "uiat", "--momentum-epoch", "-1", "--gamma", "0.9", "--one-off-epoch", "3", "--bf16"},
             {"--generated", "gen.npz", "--gen-ratio", "0.3", "--ema-decay", "0.995", "--model", "wrn-28-10"},
             {"--resume", "--resume-force", "--device", "cuda:1", "--threads", "2", "--print-config"},
             {"--overwrite", "--resume"},
             {"--eps", "8", "--max-lr", "1e309"},
             {"--preset=", "cifar10-uiat-prn18", "--print-config"},  // a finding once: the name went unapplied
             {"--method", "hat", "--helper", "runs/std", "--hat-beta", "2.5", "--awp-gamma", "0.005"},
             {"--list-presets"},
             {"--help"}}) {
      std::string bytes;
      for (size_t i = 0; i < args.size(); ++i) bytes += (i ? std::string(1, '\0') : std::string()) + args[i];
      flags.add(bytes);
    }
    fs::remove_all(tmp);
  } catch (const std::exception& e) {
    std::cerr << "make_seeds: " << e.what() << "\n";
    return 1;
  }
  std::cout << "make_seeds: corpora in " << out.string() << "\n";
  return 0;
}
