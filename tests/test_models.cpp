#include "support.hpp"
#include "temp_dir.hpp"

#include <iat/model_ref.hpp>
#include <iat/models/common.hpp>
#include <iat/models/preact_resnet.hpp>
#include <iat/models/small_cnn.hpp>
#include <iat/models/state_dict.hpp>
#include <iat/models/wide_resnet.hpp>
#include <iat/models/zoo.hpp>
#include <iat/train/checkpoint.hpp>
#include <iat/train/run_model.hpp>

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/nn/modules/batchnorm.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using namespace iat_test;
namespace M = iat::models;
namespace fs = std::filesystem;

namespace {


/// Random BatchNorm affine parameters and running statistics, so that eval-mode outputs depend on all
/// of them (the default 1/0/0/1 would hide a swapped or dropped tensor).
void randomise_batchnorm(torch::nn::Module& module, int64_t batches = 7) {
  torch::NoGradGuard no_grad;
  for (auto& m : module.modules(/*include_self=*/false)) {
    if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.normal_(0.0, 0.1);
      bn->running_mean.normal_(0.0, 0.1);
      bn->running_var.uniform_(0.5, 1.5);
      bn->num_batches_tracked.fill_(batches);
    }
  }
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// Logits and features of a model, and the check that its last linear layer maps features to logits.
template <typename Net, typename Linear>
void check_features(Net& net, Linear& last, const torch::Tensor& x, int64_t classes, int64_t dim) {
  iat::ModelRef ref(net);
  REQUIRE(ref.has_features());
  auto lf = ref.forward_features(x);
  CHECK(lf.logits.sizes() == torch::IntArrayRef({x.size(0), classes}));
  CHECK(lf.features.sizes() == torch::IntArrayRef({x.size(0), dim}));
  CHECK(max_abs_diff(last(lf.features), lf.logits) < 1e-5);
  CHECK(max_abs_diff(ref(x), lf.logits) < 1e-5);
}

// The Python whose torch matches this build's LibTorch (tests/CMakeLists.txt: IAT_PYTHON).
const std::string kPython = IAT_TEST_PYTHON;

bool python_torch_available() { return std::system(("'" + kPython + "' -c 'import torch' >/dev/null 2>&1").c_str()) == 0; }

}  // namespace

TEST_CASE("model output shapes and penultimate features", "[models]") {
  SECTION("PreAct ResNet-18 on CIFAR-sized inputs, ReLU and SiLU") {
    for (auto act : {M::Activation::kReLU, M::Activation::kSiLU}) {
      M::PreActResNet18 net(M::PreActResNetOptions(10).activation(act));
      net->eval();
      check_features(net, net->linear, torch::rand({2, 3, 32, 32}), 10, 512);
    }
  }
  SECTION("PreAct ResNet-18 on Fashion-MNIST-sized inputs") {
    M::PreActResNet18 net(M::PreActResNetOptions(10).in_channels(1));
    net->eval();
    check_features(net, net->linear, torch::rand({2, 1, 28, 28}), 10, 512);
  }
  SECTION("WideResNet, small depth and width, ReLU and SiLU") {
    for (auto act : {M::Activation::kReLU, M::Activation::kSiLU}) {
      M::WideResNet net(M::WideResNetOptions(10, 2, 100).activation(act));
      net->eval();
      check_features(net, net->fc, torch::rand({2, 3, 32, 32}), 100, 128);
    }
  }
  SECTION("SmallCNN on Fashion-MNIST and on CIFAR-sized inputs") {
    M::SmallCNN fashion(M::SmallCNNOptions(10));
    check_features(fashion, fashion->fc2, torch::rand({2, 1, 28, 28}), 10, 128);
    M::SmallCNN cifar(M::SmallCNNOptions(10).in_channels(3).image_size(32).hidden(64));
    check_features(cifar, cifar->fc2, torch::rand({2, 3, 32, 32}), 10, 64);
  }
}

TEST_CASE("parameter counts and state-dict keys match the reference definitions", "[models]") {
  // Counts of the reference definitions (tests/python/reference_models.py count).
  CHECK(M::count_parameters(*M::PreActResNet18(10)) == 11172170);
  CHECK(M::count_parameters(*M::WideResNet(M::WideResNetOptions(28, 10, 10))) == 36479194);
  CHECK(M::count_parameters(*M::SmallCNN(10)) == 421642);
  // The normalisation buffers are not parameters, and the count does not depend on them.
  CHECK(M::count_parameters(*M::SmallCNN(M::SmallCNNOptions(10).mean({0.5}).std({0.25}))) == 421642);

  auto prn = M::state_dict(*M::PreActResNet18(10));
  CHECK(prn.size() == 107);  // len(PreActResNet18().state_dict()) in Python
  std::vector<std::string> first;
  for (size_t i = 0; i < 7; ++i) first.push_back(prn.keys()[i]);
  CHECK(first == std::vector<std::string>{"conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias",
                                          "layer1.0.bn1.running_mean", "layer1.0.bn1.running_var",
                                          "layer1.0.bn1.num_batches_tracked", "layer1.0.conv1.weight"});
  for (const char* key : {"layer2.0.shortcut.0.weight", "layer4.1.conv2.weight", "bn.running_var", "linear.bias"}) {
    CHECK(prn.contains(key));
  }
  CHECK_FALSE(prn.contains("layer1.0.shortcut.0.weight"));
  CHECK_FALSE(prn.contains("normalize.mean"));

  M::WideResNet wrn(M::WideResNetOptions(34, 10, 10));
  CHECK(M::count_parameters(*wrn) == 46160474);
  auto wsd = M::state_dict(*wrn);
  CHECK(wsd.size() == 191);
  for (const char* key : {"conv1.weight", "block1.layer.0.bn1.weight", "block1.layer.0.convShortcut.weight",
                          "block3.layer.4.conv2.weight", "bn1.num_batches_tracked", "fc.weight", "fc.bias"}) {
    CHECK(wsd.contains(key));
  }
  CHECK_FALSE(wsd.contains("block1.layer.1.convShortcut.weight"));
  CHECK_FALSE(wsd.contains("sub_block1.layer.0.conv1.weight"));
  // TRADES's unused sub_block1: a copy of block1 (so WRN-34-10 with it has 46,160,474 + 2,102,112 =
  // 48,262,586 parameters, as the Python reference counts).
  CHECK(M::count_parameters(*wrn->block1) == 2102112);
  M::WideResNet small(M::WideResNetOptions(16, 2, 10));
  M::WideResNet trades(M::WideResNetOptions(16, 2, 10).sub_block1(true));
  CHECK(M::count_parameters(*trades) == M::count_parameters(*small) + M::count_parameters(*small->block1));
  CHECK(M::state_dict(*trades).contains("sub_block1.layer.1.conv2.weight"));
  CHECK(M::state_dict(*trades).size() == M::state_dict(*small).size() + M::state_dict(*small->block1).size());

  SECTION("WideResNet initialisation follows the reference") {
    // conv: N(0, 2 / (k·k·out)); BN weight 1, bias 0; fc bias 0.
    const auto w = wrn->block3->layer->ptr<M::WideBasicBlockImpl>(0)->conv2->weight;  // 640×640×3×3
    CHECK(std::abs(w.mean().item<double>()) < 1e-3);
    CHECK(w.std().item<double>() == Approx(std::sqrt(2.0 / (9 * 640))).epsilon(0.01));
    const auto s = wrn->block2->layer->ptr<M::WideBasicBlockImpl>(0)->conv_shortcut->weight;  // 1×1, 160→320
    CHECK(s.std().item<double>() == Approx(std::sqrt(2.0 / 320)).epsilon(0.02));
    CHECK(wrn->bn1->weight.eq(1).all().item<bool>());
    CHECK(wrn->bn1->bias.eq(0).all().item<bool>());
    CHECK(wrn->fc->bias.eq(0).all().item<bool>());
    CHECK(wrn->fc->weight.abs().max().item<double>() <= 1.0 / std::sqrt(640.0) + 1e-6);  // PyTorch default
  }
}

TEST_CASE("the activation option is applied everywhere", "[models]") {
  // SmallCNN recomputed from its layers: ReLU and SiLU give what the formula gives, and differ.
  for (auto act : {M::Activation::kReLU, M::Activation::kSiLU}) {
    M::SmallCNN net(M::SmallCNNOptions(5).image_size(12).width(4).hidden(8).activation(act));
    auto x = torch::rand({3, 1, 12, 12});
    auto f = [&](const torch::Tensor& t) { return act == M::Activation::kReLU ? torch::relu(t) : torch::silu(t); };
    auto h = torch::max_pool2d(f(net->conv1(x)), 2);
    h = torch::max_pool2d(f(net->conv2(h)), 2);
    auto expected = net->fc2(f(net->fc1(h.flatten(1))));
    CHECK(max_abs_diff(net(x), expected) < 1e-6);
  }
  // Same weights, different activation: different outputs (WideResNet, via a state-dict copy).
  TempDir dir("iat_models");
  M::WideResNet relu(M::WideResNetOptions(10, 1, 10));
  M::WideResNet silu(M::WideResNetOptions(10, 1, 10).activation(M::Activation::kSiLU));
  M::save_state_dict(*relu, dir.file("w.pt"));
  M::load_state_dict(*silu, dir.file("w.pt"));
  relu->eval();
  silu->eval();
  auto x = torch::rand({2, 3, 32, 32});
  CHECK(max_abs_diff(relu(x), silu(x)) > 1e-4);
}

TEST_CASE("BatchNorm uses batch statistics in train mode and running ones in eval mode", "[models]") {
  M::WideResNet net(M::WideResNetOptions(10, 1, 10));
  auto x = torch::rand({4, 3, 32, 32});
  auto running = net->bn1->running_mean.clone();

  net->eval();
  auto all = net(x);
  CHECK(max_abs_diff(all.slice(0, 0, 1), net(x.slice(0, 0, 1))) < 1e-5);  // per-example in eval mode
  CHECK(torch::equal(net->bn1->running_mean, running));
  CHECK(net->bn1->num_batches_tracked.item<int64_t>() == 0);

  net->train();
  auto batch = net(x);
  CHECK(max_abs_diff(batch.slice(0, 0, 2), net(x.slice(0, 0, 2))) > 1e-4);  // depends on the batch
  CHECK_FALSE(torch::equal(net->bn1->running_mean, running));
  CHECK(net->bn1->num_batches_tracked.item<int64_t>() == 2);
}

TEST_CASE("input normalisation by mean/std inside the model", "[models]") {
  TempDir dir("iat_models");
  SECTION("PreAct ResNet-18 with the CIFAR-10 constants") {
    M::PreActResNet18 plain(10);
    M::PreActResNet18 normed(M::PreActResNetOptions(10).mean(M::cifar10_mean()).std(M::cifar10_std()));
    M::save_state_dict(*plain, dir.file("p.pt"));
    M::load_state_dict(*normed, dir.file("p.pt"));  // the normalisation buffers are not in the file
    plain->eval();
    normed->eval();
    auto x = torch::rand({2, 3, 32, 32});
    auto m = torch::tensor(M::cifar10_mean()).view({1, 3, 1, 1});
    auto s = torch::tensor(M::cifar10_std()).view({1, 3, 1, 1});
    CHECK(max_abs_diff(normed(x), plain((x - m) / s)) < 1e-4);
    CHECK(max_abs_diff(normed(x), plain(x)) > 1e-3);
    auto buffers = normed->named_buffers();
    REQUIRE(buffers.contains("normalize.mean"));
    CHECK(max_abs_diff(buffers["normalize.std"].flatten(), s.flatten()) < 1e-7);
  }
  SECTION("WideResNet and SmallCNN, one value for all channels") {
    M::WideResNet plain(M::WideResNetOptions(10, 1, 10));
    M::WideResNet normed(M::WideResNetOptions(10, 1, 10).mean({0.5}).std({0.25}));
    M::save_state_dict(*plain, dir.file("w.pt"));
    M::load_state_dict(*normed, dir.file("w.pt"));
    plain->eval();
    normed->eval();
    auto x = torch::rand({2, 3, 32, 32});
    CHECK(max_abs_diff(normed(x), plain((x - 0.5) / 0.25)) < 1e-4);

    M::SmallCNN cnn(M::SmallCNNOptions(10).mean(M::fashion_mnist_mean()).std(M::fashion_mnist_std()));
    auto y = torch::rand({2, 1, 28, 28});
    auto expected = cnn->fc2(torch::relu(cnn->fc1(
        torch::max_pool2d(torch::relu(cnn->conv2(torch::max_pool2d(torch::relu(cnn->conv1((y - 0.2860) / 0.3530)), 2))), 2)
            .flatten(1))));
    CHECK(max_abs_diff(cnn(y), expected) < 1e-5);
  }
  SECTION("errors") {
    REQUIRE_THROWS_WITH(M::PreActResNet18(M::PreActResNetOptions(10).mean({0.1, 0.2})),
                        Catch::Contains("mean must hold 1 or in_channels = 3 values, got 2"));
    REQUIRE_THROWS_WITH(M::SmallCNN(M::SmallCNNOptions(10).std({0.0})),
                        Catch::Contains("iat::models::SmallCNN: std must hold positive values, got 0"));
    M::PreActResNet18 net(10);
    REQUIRE_THROWS_WITH(net(torch::rand({2, 1, 32, 32})),
                        Catch::Contains("expected an image batch [N, 3, H, W], got [2, 1, 32, 32]"));
    M::SmallCNN cnn(10);
    REQUIRE_THROWS_WITH(cnn(torch::rand({2, 1, 32, 32})), Catch::Contains("option image_size"));
  }
}

TEST_CASE("model option validation", "[models]") {
  REQUIRE_THROWS_WITH(M::WideResNet(M::WideResNetOptions(30, 10, 10)),
                      Catch::Contains("depth must be 6n + 4 with n >= 1 (e.g. 28 or 34), got 30"));
  REQUIRE_THROWS_WITH(M::WideResNet(M::WideResNetOptions(4, 10, 10)), Catch::Contains("got 4"));
  REQUIRE_THROWS_WITH(M::WideResNet(M::WideResNetOptions(28, 0, 10)), Catch::Contains("widen_factor must be >= 1"));
  REQUIRE_THROWS_WITH(M::WideResNet(M::WideResNetOptions(28, 10, 10).drop_rate(1.0)),
                      Catch::Contains("drop_rate must be in [0, 1)"));
  REQUIRE_THROWS_WITH(M::PreActResNet18(0), Catch::Contains("num_classes must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(M::PreActResNet18(M::PreActResNetOptions(10).num_blocks({2, 2})),
                      Catch::Contains("num_blocks must hold 4 stage sizes, got 2"));
  REQUIRE_THROWS_WITH(M::SmallCNN(M::SmallCNNOptions(10).image_size(3)), Catch::Contains("image_size must be >= 4"));
}

TEST_CASE("state-dict round trip in C++", "[models]") {
  TempDir dir("iat_models");
  auto round_trip = [&](auto& a, auto& b, const torch::Tensor& x) {
    randomise_batchnorm(*a);
    M::save_state_dict(*a, dir.file("m.pt"));
    for (const auto& entry : fs::directory_iterator(dir.path)) {  // no temporary file left behind
      CHECK(entry.path().filename().string().find(".tmp") == std::string::npos);
    }
    M::load_state_dict(*b, dir.file("m.pt"));
    a->eval();
    b->eval();
    CHECK(max_abs_diff(a(x), b(x)) == 0.0);
    auto sa = M::state_dict(*a);
    auto sb = M::state_dict(*b);
    REQUIRE(sa.size() == sb.size());
    for (const auto& kv : sa) {
      INFO(kv.key());
      CHECK(torch::equal(kv.value(), sb[kv.key()]));
    }
  };
  SECTION("PreAct ResNet-18") {
    M::PreActResNet18 a(10), b(10);
    round_trip(a, b, torch::rand({2, 3, 32, 32}));
    CHECK(b->bn->num_batches_tracked.item<int64_t>() == 7);
  }
  SECTION("WideResNet with TRADES's sub_block1, SiLU") {
    auto opts = M::WideResNetOptions(10, 2, 10).sub_block1(true).activation(M::Activation::kSiLU);
    M::WideResNet a(opts), b(opts);
    round_trip(a, b, torch::rand({2, 3, 32, 32}));
  }
  SECTION("SmallCNN, and the file as read back") {
    M::SmallCNN a(10), b(10);
    round_trip(a, b, torch::rand({2, 1, 28, 28}));
    auto file = M::read_state_dict(dir.file("m.pt"));
    CHECK(file.keys() == std::vector<std::string>{"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                                  "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"});
    CHECK(torch::equal(file["fc1.weight"], a->fc1->weight));
  }
  SECTION("a temporary file left by a killed save is replaced, and nothing else is left") {
    // A SIGKILL during a save leaves NAME.tmp (the soak, scripts/soak_train.py, found model.pt.tmp<random
    // digits> files that no later save removed). The next save of NAME must write through NAME.tmp.
    M::SmallCNN a(10), b(10);
    write_bytes(dir.file("k.pt.tmp"), std::vector<char>(100, 'x'));
    M::save_state_dict(*a, dir.file("k.pt"));
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir.path)) names.push_back(entry.path().filename().string());
    CHECK(names == std::vector<std::string>{"k.pt"});
    M::load_state_dict(*b, dir.file("k.pt"));
    CHECK(torch::equal(a->fc2->weight, b->fc2->weight));
  }
  SECTION("clone() copies weights and buffers") {
    M::WideResNet a(M::WideResNetOptions(10, 1, 10).mean({0.5}).std({0.5}));
    randomise_batchnorm(*a);
    auto b = std::dynamic_pointer_cast<M::WideResNetImpl>(a->clone());
    REQUIRE(b);
    a->eval();
    b->eval();
    auto x = torch::rand({2, 3, 32, 32});
    CHECK(max_abs_diff(a(x), b->forward(x)) == 0.0);
  }
  SECTION("a missing num_batches_tracked is accepted; strict = false skips unknown and missing keys") {
    M::PreActResNet18 a(10), b(10);
    randomise_batchnorm(*a);
    c10::Dict<std::string, torch::Tensor> dict;
    for (const auto& kv : M::state_dict(*a)) {
      if (kv.key().find("num_batches_tracked") == std::string::npos) dict.insert(kv.key(), kv.value());
    }
    dict.insert("extra.weight", torch::zeros({3}));
    write_bytes(dir.file("partial.pt"), torch::jit::pickle_save(dict));
    REQUIRE_THROWS_WITH(M::load_state_dict(*b, dir.file("partial.pt")),
                        Catch::Contains("unexpected keys [extra.weight]"));
    M::load_state_dict(*b, dir.file("partial.pt"), /*strict=*/false);
    a->eval();
    b->eval();
    auto x = torch::rand({2, 3, 32, 32});
    CHECK(max_abs_diff(a(x), b(x)) == 0.0);
    CHECK(b->bn->num_batches_tracked.item<int64_t>() == 0);
  }
}

TEST_CASE("state-dict errors name the file, the key and the shapes", "[models]") {
  TempDir dir("iat_models");
  M::SmallCNN net(10);
  SECTION("the file's own errors (tests/test_io.cpp) name the function called") {
    REQUIRE_THROWS_WITH(M::load_state_dict(*net, dir.file("nope.pt")),
                        Catch::StartsWith("iat::models::read_state_dict: cannot open '") && Catch::Contains("nope.pt"));
    write_bytes(dir.file("tensor.pt"), torch::jit::pickle_save(torch::zeros({2})));
    REQUIRE_THROWS_WITH(M::read_state_dict(dir.file("tensor.pt")),
                        Catch::StartsWith("iat::models::read_state_dict: '") &&
                            Catch::Contains("holds a tensor, not a dict of tensors"));
  }
  SECTION("missing and unexpected keys") {
    M::WideResNet plain(M::WideResNetOptions(10, 1, 10));
    M::WideResNet trades(M::WideResNetOptions(10, 1, 10).sub_block1(true));
    M::save_state_dict(*plain, dir.file("plain.pt"));
    M::save_state_dict(*trades, dir.file("trades.pt"));
    REQUIRE_THROWS_WITH(M::load_state_dict(*trades, dir.file("plain.pt")),
                        Catch::Contains("plain.pt' does not match the model: missing keys [sub_block1.layer.0.bn1.weight"));
    REQUIRE_THROWS_WITH(M::load_state_dict(*plain, dir.file("trades.pt")),
                        Catch::Contains("unexpected keys [sub_block1.layer.0.bn1.weight"));
    M::load_state_dict(*plain, dir.file("trades.pt"), /*strict=*/false);  // TRADES checkpoint, unused block dropped
    plain->eval();
    trades->eval();
    auto x = torch::rand({2, 3, 32, 32});
    CHECK(max_abs_diff(plain(x), trades(x)) == 0.0);  // forward never uses sub_block1
    REQUIRE_THROWS_WITH(M::load_state_dict(*net, dir.file("plain.pt")), Catch::Contains("missing keys [conv1.bias"));
  }
  SECTION("a shape mismatch, with nothing modified") {
    M::SmallCNN wide(M::SmallCNNOptions(10).hidden(64));
    M::save_state_dict(*wide, dir.file("wide.pt"));
    auto before = net->conv1->weight.clone();
    REQUIRE_THROWS_WITH(M::load_state_dict(*net, dir.file("wide.pt")),
                        Catch::Contains("wide.pt' entry 'fc1.weight' has shape [64, 3136], but the model expects "
                                        "[128, 3136]"));
    CHECK(torch::equal(before, net->conv1->weight));
  }
  SECTION("keys saved from nn.DataParallel get a hint") {
    c10::Dict<std::string, torch::Tensor> dict;
    for (const auto& kv : M::state_dict(*net)) dict.insert("module." + kv.key(), kv.value());
    write_bytes(dir.file("dp.pt"), torch::jit::pickle_save(dict));
    REQUIRE_THROWS_WITH(M::load_state_dict(*net, dir.file("dp.pt")), Catch::Contains("nn.DataParallel"));
  }
  SECTION("an unwritable destination") {
    const auto path = dir.file("no/such/folder/m.pt");
    REQUIRE_THROWS_WITH(M::save_state_dict(*net, path),
                        Catch::Contains("cannot create '" + path + ".tmp' (for '" + path + "'): No such file or directory"));
  }
}

namespace {

/// Runs tests/python/reference_models.py on jobs "<spec>;sd=..;input=..;out=.." (files in `dir`).
struct PythonJobs {
  explicit PythonJobs(const TempDir& d) : dir(d) {}
  void add(const std::string& spec, const std::string& sd, const std::string& input, const std::string& out) {
    args += " '" + spec + ";sd=" + dir.file(sd) + ";input=" + dir.file(input) + ";out=" + dir.file(out) + "'";
  }
  int run() const {
    const std::string cmd =
        "'" + kPython + "' '" + std::string(IAT_TEST_SOURCE_DIR) + "/python/reference_models.py'" + args;
    INFO(cmd);
    return std::system(cmd.c_str());
  }
  torch::Tensor logits(const std::string& name) const { return M::read_state_dict(dir.file(name))["logits"]; }
  const TempDir& dir;
  std::string args;
};

}  // namespace

// One Python start (~2 s for `import torch`) per test case, hence the small models here and the big
// ones in the [slow] test below.
TEST_CASE("SmallCNN state dicts travel between C++ and Python", "[models][python]") {
  if (!python_torch_available()) {
    WARN("skipped: " << kPython << " cannot import torch");
    return;
  }
  TempDir dir("iat_models");
  auto x = torch::rand({2, 1, 28, 28});
  write_bytes(dir.file("x.pt"), torch::jit::pickle_save(x));
  M::SmallCNN cnn(M::SmallCNNOptions(10).activation(M::Activation::kSiLU));
  M::save_state_dict(*cnn, dir.file("cnn.pt"));
  PythonJobs py(dir);
  py.add("mode=load;arch=small_cnn;act=silu", "cnn.pt", "x.pt", "cnn_out.pt");  // C++ → Python, strict=True
  py.add("mode=export;arch=small_cnn;classes=4;hidden=16", "cnn_py.pt", "x.pt", "cnn_py_out.pt");  // Python → C++
  REQUIRE(py.run() == 0);

  torch::NoGradGuard no_grad;
  CHECK(max_abs_diff(cnn(x), py.logits("cnn_out.pt")) < 1e-5);
  M::SmallCNN from_py(M::SmallCNNOptions(4).hidden(16));
  auto before = from_py(x);
  M::load_state_dict(*from_py, dir.file("cnn_py.pt"));
  CHECK(max_abs_diff(from_py(x), py.logits("cnn_py_out.pt")) < 1e-5);
  CHECK(max_abs_diff(from_py(x), before) > 1e-3);  // the weights are Python's, not this model's own
}

TEST_CASE("PreAct ResNet-18 and WideResNet state dicts travel between C++ and Python",
          "[models][python][slow]") {
  if (!python_torch_available()) {
    WARN("skipped: " << kPython << " cannot import torch");
    return;
  }
  TempDir dir("iat_models");
  auto x = torch::rand({2, 3, 32, 32});
  write_bytes(dir.file("x.pt"), torch::jit::pickle_save(x));

  // C++ → Python: save_state_dict files load with strict=True and give the same logits.
  M::PreActResNet18 prn(10);
  M::WideResNet wrn(M::WideResNetOptions(10, 2, 10).activation(M::Activation::kSiLU).sub_block1(true));
  randomise_batchnorm(*prn);
  randomise_batchnorm(*wrn);
  M::save_state_dict(*prn, dir.file("prn.pt"));
  M::save_state_dict(*wrn, dir.file("wrn.pt"));
  PythonJobs py(dir);
  py.add("mode=load;arch=preact_resnet18", "prn.pt", "x.pt", "prn_out.pt");
  py.add("mode=load;arch=wide_resnet;depth=10;widen=2;act=silu;sub_block1=1", "wrn.pt", "x.pt", "wrn_out.pt");
  // Python → C++: torch.save(model.state_dict()) files (an OrderedDict with _metadata) load here.
  py.add("mode=export;arch=preact_resnet18;seed=3", "prn_py.pt", "x.pt", "prn_py_out.pt");
  py.add("mode=export;arch=wide_resnet;depth=16;widen=2;classes=7;seed=5", "wrn_py.pt", "x.pt", "wrn_py_out.pt");
  REQUIRE(py.run() == 0);

  prn->eval();
  wrn->eval();
  torch::NoGradGuard no_grad;
  CHECK(max_abs_diff(prn(x), py.logits("prn_out.pt")) < 1e-4);
  CHECK(max_abs_diff(wrn(x), py.logits("wrn_out.pt")) < 1e-4);

  M::PreActResNet18 prn_py(10);
  M::WideResNet wrn_py(M::WideResNetOptions(16, 2, 7));
  M::load_state_dict(*prn_py, dir.file("prn_py.pt"));
  M::load_state_dict(*wrn_py, dir.file("wrn_py.pt"));
  prn_py->eval();
  wrn_py->eval();
  CHECK(prn_py->bn->num_batches_tracked.item<int64_t>() == 3);
  CHECK(max_abs_diff(prn_py(x), py.logits("prn_py_out.pt")) < 1e-4);
  CHECK(max_abs_diff(wrn_py(x), py.logits("wrn_py_out.pt")) < 1e-4);
  CHECK(max_abs_diff(prn_py(x), prn(x)) > 1e-3);
}

TEST_CASE("models by name: make_model builds each architecture with its normalisation", "[models][zoo]") {
  M::ModelSpec cnn{"small-cnn", "relu", 10, 1, 28, {0.5}, {0.25}};
  auto a = M::make_model(cnn);
  CHECK(M::count_parameters(*a) == 421642);
  CHECK(dynamic_cast<M::SmallCNNImpl*>(&a->inner()) != nullptr);
  CHECK(a(torch::rand({2, 1, 28, 28})).sizes() == torch::IntArrayRef({2, 10}));
  // The normalisation reaches the model: its buffers hold the spec's constants.
  auto buffers = a->named_buffers();
  CHECK(buffers["net.normalize.mean"].flatten().item<double>() == Approx(0.5));
  CHECK(buffers["net.normalize.std"].flatten().item<double>() == Approx(0.25));

  auto [mean, std] = M::normalization_for("cifar10");
  CHECK(mean == M::cifar10_mean());
  CHECK(std == M::cifar10_std());
  CHECK(M::normalization_for("synthetic").first == std::vector<double>{0.0});
  auto prn = M::make_model({"prn18", "relu", 10, 3, 32, mean, std});
  CHECK(M::count_parameters(prn->inner()) == 11172170);
  auto wrn = M::make_model({"wrn-16-2", "silu", 4, 3, 32, {0.0}, {1.0}});
  CHECK(dynamic_cast<M::WideResNetImpl*>(&wrn->inner()) != nullptr);
  auto lf = wrn->forward_features(torch::rand({2, 3, 8, 8}));
  CHECK(lf.logits.sizes() == torch::IntArrayRef({2, 4}));
  CHECK(lf.features.size(1) == 128);  // 64 x width 2
  CHECK(iat::ModelRef(wrn).has_features());

  CHECK(M::architecture_problem("prn18").empty());
  CHECK(M::architecture_problem("wrn-34-10").empty());
  CHECK_FALSE(M::architecture_problem("wrn-34").empty());
  CHECK_FALSE(M::architecture_problem("wrn-34-10x").empty());
  CHECK_FALSE(M::architecture_problem("resnet50").empty());
  REQUIRE_THROWS_WITH(M::make_model({"resnet50", "relu", 10, 3, 32, {0.0}, {1.0}}),
                      Catch::Contains("make_model: the architecture must be small-cnn, prn18 or wrn-<depth>-<width>") &&
                          Catch::Contains("got 'resnet50'"));
  REQUIRE_THROWS_WITH(M::make_model({"prn18", "gelu", 10, 3, 32, {0.0}, {1.0}}),
                      Catch::Contains("activation must be relu or silu, got 'gelu'"));
}

TEST_CASE("an iat-train run's model: load_run_model rebuilds it from the checkpoint", "[models][zoo][checkpoint]") {
  TempDir dir("iat_models");
  const M::ModelSpec spec{"small-cnn", "silu", 4, 1, 12, {0.3}, {0.2}};
  torch::manual_seed(1);
  auto live = M::make_model(spec), average = M::make_model(spec);
  // A checkpoint as iat-train writes one: the spec's record, the live weights and the weight average.
  auto write = [&](const std::string& file, bool with_spec, bool with_ema) {
    torch::serialize::OutputArchive archive, a, b;
    if (with_spec) M::write_model_spec(archive, spec);
    live->save(a);
    archive.write("model", a);
    if (with_ema) {
      average->save(b);
      archive.write("ema_model", b);
    }
    iat::train::save_atomically(archive, file);
  };
  write(dir.file("checkpoint.pt"), true, true);
  auto x = torch::rand({3, 1, 12, 12});
  torch::NoGradGuard no_grad;
  live->eval();
  average->eval();

  auto run = iat::train::load_run_model(dir.path.string());  // the run folder: its checkpoint.pt
  CHECK(run.weights == "ema_model");                          // a run with EMA evaluates the average
  CHECK(run.spec.arch == "small-cnn");
  CHECK(run.spec.activation == "silu");
  CHECK(run.spec.image_size == 12);
  CHECK(run.spec.mean == std::vector<double>{0.3});
  CHECK_FALSE(run.model->is_training());
  CHECK(torch::equal(run.model(x), average(x)));
  CHECK_FALSE(torch::equal(run.model(x), live(x)));
  auto trained = iat::train::load_run_model(dir.file("checkpoint.pt"), torch::kCPU, iat::train::RunWeights::kLive);
  CHECK(trained.weights == "model");
  CHECK(torch::equal(trained.model(x), live(x)));

  // Without a weight average: kAuto gives the live weights, kEMA is refused.
  write(dir.file("plain.pt"), true, false);
  CHECK(iat::train::load_run_model(dir.file("plain.pt")).weights == "model");
  REQUIRE_THROWS_WITH(iat::train::load_run_model(dir.file("plain.pt"), torch::kCPU, iat::train::RunWeights::kEMA),
                      Catch::Contains("holds no weight average"));
  // Without the spec's record (an older iat-train): refused unless the spec is given.
  write(dir.file("old.pt"), false, false);
  REQUIRE_THROWS_WITH(iat::train::load_run_model(dir.file("old.pt")), Catch::Contains("has no model_spec record"));
  CHECK(torch::equal(iat::train::load_run_model(dir.file("old.pt"), torch::kCPU, iat::train::RunWeights::kAuto, spec)
                         .model(x),
                     live(x)));
  // A spec the weights do not fit, a file that is not a checkpoint.
  M::ModelSpec other = spec;
  other.num_classes = 10;
  REQUIRE_THROWS_WITH(iat::train::load_run_model(dir.file("old.pt"), torch::kCPU, iat::train::RunWeights::kAuto, other),
                      Catch::Contains("do not fit a small-cnn with 10 classes"));
  REQUIRE_THROWS_WITH(iat::train::load_run_model(dir.file("missing.pt")), Catch::Contains("missing.pt"));
}

TEST_CASE("the model spec's record: round trip and damaged entries named", "[models][zoo]") {
  const M::ModelSpec spec{"wrn-28-10", "silu", 100, 3, 32, M::cifar100_mean(), M::cifar100_std()};
  torch::serialize::OutputArchive out;
  M::write_model_spec(out, spec);
  std::ostringstream bytes;
  out.save_to(bytes);
  std::istringstream in_bytes(bytes.str());
  torch::serialize::InputArchive in;
  in.load_from(in_bytes);
  M::ModelSpec back;
  REQUIRE(M::read_model_spec(in, back));
  CHECK(back.arch == spec.arch);
  CHECK(back.activation == spec.activation);
  CHECK(back.num_classes == 100);
  CHECK(back.in_channels == 3);
  CHECK(back.image_size == 32);
  CHECK(back.mean == spec.mean);
  CHECK(back.std == spec.std);
  CHECK_FALSE(M::read_model_spec(in, back, "no_such_record"));

  torch::serialize::OutputArchive bad, record;
  record.write("arch", c10::IValue(std::string("prn18")));
  record.write("activation", c10::IValue(int64_t{3}));
  bad.write("model_spec", record);
  std::ostringstream bad_bytes;
  bad.save_to(bad_bytes);
  std::istringstream bad_in(bad_bytes.str());
  torch::serialize::InputArchive damaged;
  damaged.load_from(bad_in);
  REQUIRE_THROWS_WITH(M::read_model_spec(damaged, back), Catch::Contains("'model_spec/activation' must be a string"));
}
