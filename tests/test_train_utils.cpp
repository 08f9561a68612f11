#include "support.hpp"

#include <iat/train/checkpoint.hpp>
#include <iat/train/ema.hpp>
#include <iat/train/one_cycle.hpp>

#include <torch/nn/modules/batchnorm.h>

#include <filesystem>
#include <fstream>

using namespace iat_test;

TEST_CASE("OneCycleLR rises linearly to max_lr at 2/5 of training and falls to 0", "[train][schedule]") {
  TinyNet net;
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(1.0));
  iat::train::OneCycleLR schedule(opt, iat::train::OneCycleOptions(0.1, 100));
  CHECK(schedule.lr_at(0) == Approx(0.0));
  CHECK(schedule.lr_at(20) == Approx(0.05));
  CHECK(schedule.lr_at(40) == Approx(0.1));
  CHECK(schedule.lr_at(70) == Approx(0.05));
  CHECK(schedule.lr_at(100) == Approx(0.0));
  CHECK(schedule.lr_at(500) == Approx(0.0));
  CHECK(schedule.set_step(10) == Approx(0.025));
  CHECK(opt.param_groups()[0].options().get_lr() == Approx(0.025));
  REQUIRE_THROWS_WITH(iat::train::OneCycleLR(opt, iat::train::OneCycleOptions(0.1, 0)), Catch::Contains("total_steps"));
  REQUIRE_THROWS_WITH(iat::train::OneCycleLR(opt, iat::train::OneCycleOptions(-1, 10)), Catch::Contains("max_lr"));
}

namespace {
struct BNNetImpl : torch::nn::Module {
  BNNetImpl() : fc(register_module("fc", torch::nn::Linear(4, 3))), bn(register_module("bn", torch::nn::BatchNorm1d(3))) {}
  torch::Tensor forward(const torch::Tensor& x) { return bn(fc(x)); }
  torch::nn::Linear fc;
  torch::nn::BatchNorm1d bn;
};
TORCH_MODULE(BNNet);
}  // namespace

TEST_CASE("ModelEMA averages weights and batch-norm statistics", "[train][ema]") {
  BNNet live, avg;
  iat::train::ModelEMA ema(*live, *avg, iat::train::ModelEMAOptions().decay(0.9));
  CHECK(torch::equal(avg->fc->weight, live->fc->weight));  // starts as a copy

  auto w0 = live->fc->weight.detach().clone();
  {
    torch::NoGradGuard ng;
    live->fc->weight.add_(1.0);
  }
  live->train();
  live(torch::randn({16, 4}));  // moves the running statistics
  auto mean1 = live->bn->running_mean.clone();
  ema.update();
  CHECK(torch::allclose(avg->fc->weight, 0.9 * w0 + 0.1 * (w0 + 1.0)));
  CHECK(torch::allclose(avg->bn->running_mean, 0.1 * mean1));  // average of 0 (initial) and mean1
  CHECK(avg->bn->num_batches_tracked.item<int64_t>() == 1);   // integer buffer copied
  CHECK(ema.updates() == 1);

  SECTION("buffers copied when not averaged") {
    BNNet avg2;
    iat::train::ModelEMA copy_bufs(*live, *avg2, iat::train::ModelEMAOptions().decay(0.9).average_buffers(false));
    live(torch::randn({16, 4}));
    copy_bufs.update();
    CHECK(torch::equal(avg2->bn->running_mean, live->bn->running_mean));
  }
  SECTION("warm-up uses min(decay, (1+t)/(10+t))") {
    BNNet avg3;
    iat::train::ModelEMA warm(*live, *avg3, iat::train::ModelEMAOptions().decay(0.995).warmup(true));
    CHECK(warm.update() == Approx(0.1));
    CHECK(warm.update() == Approx(2.0 / 11.0));
  }
  SECTION("a different architecture is refused") {
    TinyNet other;
    REQUIRE_THROWS_WITH(iat::train::ModelEMA(*live, *other), Catch::Contains("differ in architecture"));
  }
}

TEST_CASE("save_atomically replaces the file whole and keeps it on failure", "[train][checkpoint]") {
  namespace fs = std::filesystem;
  auto dir = fs::temp_directory_path() / ("iat_ckpt_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "checkpoint.pt").string();
  TinyNet net;
  torch::serialize::OutputArchive a1;
  net->save(a1);
  iat::train::save_atomically(a1, path);
  CHECK(fs::exists(path));
  CHECK_FALSE(fs::exists(path + ".tmp"));

  TinyNet loaded;
  torch::serialize::InputArchive in;
  in.load_from(path);
  loaded->load(in);
  CHECK(torch::equal(loaded->fc1->weight, net->fc1->weight));

  // A write into a folder that doesn't exist fails and names the file.
  torch::serialize::OutputArchive a2;
  net->save(a2);
  REQUIRE_THROWS_WITH(iat::train::save_atomically(a2, (dir / "missing" / "c.pt").string()),
                      Catch::Contains("missing/c.pt"));
  CHECK(fs::exists(path));

  SECTION("RNG state round trip reproduces the same draws") {
    auto state = iat::train::cpu_rng_state();
    auto a = torch::rand({5});
    iat::train::set_cpu_rng_state(state);
    auto b = torch::rand({5});
    CHECK(torch::equal(a, b));
  }
  fs::remove_all(dir);
}
