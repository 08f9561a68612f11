// iat::PrecisionOptions, iat::with_precision, iat::AutocastGuard, iat::to_channels_last: bf16 autocast
// and channels-last on the CPU (both LibTorch versions iat supports), and on CUDA when a GPU is present.

#include <iat/attacks/pgd.hpp>
#include <iat/functional/losses.hpp>
#include <iat/inverse/alignment_loss.hpp>
#include <iat/inverse/universal_perturbation.hpp>
#include <iat/models/preact_resnet.hpp>
#include <iat/models/small_cnn.hpp>
#include <iat/precision.hpp>
#include <iat/train/recipes.hpp>

#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>

#include "support.hpp"

using Catch::Matchers::Contains;

namespace {

iat::models::SmallCNN tiny_cnn() {
  return iat::models::SmallCNN(iat::models::SmallCNNOptions(4).image_size(8).width(4).hidden(16));
}

// The PRN-18 at 16×16: batch norm between convolutions, the case CPU autocast must get right.
iat::models::PreActResNet18 tiny_resnet() {
  return iat::models::PreActResNet18(iat::models::PreActResNetOptions(4).in_channels(1));
}

double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

const auto kBF16 = iat::PrecisionOptions().autocast(torch::kBFloat16);

}  // namespace

TEST_CASE("AutocastGuard turns autocast on for its scope and restores the previous state", "[precision]") {
  const torch::Device cpu(torch::kCPU);
  REQUIRE_FALSE(iat::detail::autocast_enabled(torch::kCPU));
  auto w = torch::randn({8, 8});
  auto x = torch::randn({2, 8});
  {
    iat::AutocastGuard outer(cpu, torch::kBFloat16);
    CHECK(iat::detail::autocast_enabled(torch::kCPU));
    CHECK(iat::detail::autocast_dtype(torch::kCPU) == torch::kBFloat16);
    CHECK(torch::mm(x, w).scalar_type() == torch::kBFloat16);  // mm is on autocast's lower-precision list
    {
      iat::AutocastGuard off(cpu, torch::kFloat);  // kFloat: full precision inside
      CHECK_FALSE(iat::detail::autocast_enabled(torch::kCPU));
      CHECK(torch::mm(x, w).scalar_type() == torch::kFloat);
    }
    CHECK(iat::detail::autocast_enabled(torch::kCPU));
  }
  CHECK_FALSE(iat::detail::autocast_enabled(torch::kCPU));
  CHECK(torch::mm(x, w).scalar_type() == torch::kFloat);
  // Also when an exception leaves the scope.
  try {
    iat::AutocastGuard g(cpu, torch::kBFloat16);
    throw std::runtime_error("boom");
  } catch (const std::runtime_error&) {
  }
  CHECK_FALSE(iat::detail::autocast_enabled(torch::kCPU));
}

TEST_CASE("with_precision: bf16 forwards, fp32 logits close to the fp32 model's", "[precision]") {
  auto net = tiny_resnet();
  net->eval();
  auto x = torch::rand({4, 1, 16, 16});
  iat::ModelRef fp32(net);
  iat::ModelRef bf16 = iat::with_precision(net, kBF16);
  torch::NoGradGuard ng;
  auto ref = fp32(x);
  auto low = bf16(x);
  CHECK(low.scalar_type() == torch::kFloat);
  CHECK_FALSE(torch::equal(low, ref));        // the forward really ran in bf16
  CHECK(relative_error(low, ref) < 0.05);     // ... and stayed close (bf16 has 8 mantissa bits)
  auto lf = bf16.forward_features(x);
  CHECK(lf.features.scalar_type() == torch::kFloat);
  CHECK(relative_error(lf.logits, ref) < 0.05);
  // The train flag is the model's own.
  bf16.train(true);
  CHECK(net->is_training());
  CHECK(fp32.is_training());
}

TEST_CASE("a bf16 PGD stays in the ball and the box and reaches the fp32 PGD's loss", "[precision]") {
  auto net = tiny_cnn();
  auto x = torch::rand({32, 1, 8, 8});
  auto y = torch::randint(0, 4, {32}, torch::kLong);
  const double eps = 8.0 / 255;
  iat::PGD pgd(iat::PGDOptions().eps(eps).steps(10));
  torch::manual_seed(3);
  auto x32 = pgd.perturb(net, x, y);
  torch::manual_seed(3);
  auto x16 = pgd.perturb(iat::with_precision(net, kBF16), x, y);
  CHECK(x16.scalar_type() == torch::kFloat);
  CHECK((x16 - x).abs().max().item<double>() <= eps + 1e-6);
  CHECK(x16.min().item<double>() >= 0.0);
  CHECK(x16.max().item<double>() <= 1.0);
  CHECK_FALSE(torch::equal(x16, x32));
  torch::NoGradGuard ng;
  const double clean = torch::nn::functional::cross_entropy(net(x), y).item<double>();
  const double loss32 = torch::nn::functional::cross_entropy(net(x32), y).item<double>();
  const double loss16 = torch::nn::functional::cross_entropy(net(x16), y).item<double>();
  REQUIRE(loss32 > clean);
  CHECK(loss16 > clean);
  CHECK(std::abs(loss16 - loss32) < 0.1 * (loss32 - clean) + 1e-3);
}

TEST_CASE("channels-last: weights and inputs in channels-last, the fp32 logits unchanged", "[precision]") {
  // Three channels: with one, channels-last and contiguous are the same layout (LibTorch 2.x says both).
  auto net = iat::models::PreActResNet18(iat::models::PreActResNetOptions(4).in_channels(3));
  net->eval();
  auto x = torch::rand({4, 3, 16, 16});
  torch::Tensor ref;
  {
    torch::NoGradGuard ng;
    ref = net(x);
  }
  auto params_before = net->parameters();
  iat::to_channels_last(*net);
  auto params_after = net->parameters();
  REQUIRE(params_before.size() == params_after.size());
  int64_t converted = 0;
  for (size_t i = 0; i < params_after.size(); ++i) {
    CHECK(params_after[i].is_same(params_before[i]));  // same tensors: an optimiser built before keeps them
    if (params_after[i].dim() == 4) {
      CHECK(params_after[i].is_contiguous(at::MemoryFormat::ChannelsLast));
      ++converted;
    }
  }
  CHECK(converted > 10);
  bool saw_channels_last = false;
  iat::ModelRef seen([&](const torch::Tensor& t) {
    saw_channels_last = t.is_contiguous(at::MemoryFormat::ChannelsLast) && !t.is_contiguous();
    return net(t);
  });
  auto cl = iat::with_precision(seen, iat::PrecisionOptions().channels_last(true));
  torch::NoGradGuard ng;
  auto out = cl(x);
  CHECK(saw_channels_last);
  CHECK(torch::allclose(out, ref, 1e-4, 1e-5));
}

TEST_CASE("recipes under bf16: finite losses, fp32 state, gradients on the parameters", "[precision]") {
  auto net = tiny_cnn();
  net->train();
  auto x = torch::rand({16, 1, 8, 8});
  auto y = torch::arange(16, torch::kLong) % 4;
  auto fast = iat::with_precision(net, kBF16);
  iat::PGD pgd(iat::PGDOptions().steps(3));
  iat::UniversalInversePerturbation uip(iat::UniversalInversePerturbationOptions(4, {1, 8, 8}));
  iat::AlignmentLoss align;
  auto step = iat::train::uiat_loss(fast, x, y, pgd, uip, align);
  REQUIRE(std::isfinite(step.loss.item<double>()));
  CHECK(step.loss.scalar_type() == torch::kFloat);
  CHECK(step.adv_logits.scalar_type() == torch::kFloat);
  CHECK(step.x_adv.scalar_type() == torch::kFloat);
  CHECK(uip->delta().scalar_type() == torch::kFloat);
  CHECK(uip->delta().abs().max().item<double>() > 0.0);  // δ took its step
  step.loss.backward();
  for (const auto& p : net->parameters()) {
    REQUIRE(p.grad().defined());
    CHECK(p.grad().scalar_type() == torch::kFloat);
    CHECK(torch::isfinite(p.grad()).all().item<bool>());
  }
  // The same step in fp32 gives a different (but close) loss: bf16 was really used.
  torch::manual_seed(5);
  auto s16 = iat::train::pgd_at_loss(fast, x, y, pgd);
  torch::manual_seed(5);
  auto s32 = iat::train::pgd_at_loss(net, x, y, pgd);
  CHECK(s16.loss.item<double>() != s32.loss.item<double>());
  CHECK(std::abs(s16.loss.item<double>() - s32.loss.item<double>()) < 0.05 * s32.loss.item<double>());
}

TEST_CASE("check_precision refuses what the device or dtype cannot do, naming the option", "[precision]") {
  const torch::Device cpu(torch::kCPU);
  REQUIRE_NOTHROW(iat::check_precision(kBF16, cpu));
  REQUIRE_NOTHROW(iat::check_precision(iat::PrecisionOptions(), cpu));
  REQUIRE_THROWS_WITH(iat::check_precision(iat::PrecisionOptions().autocast(torch::kHalf), cpu),
                      Contains("autocast Half is supported on CUDA only"));
  REQUIRE_THROWS_WITH(iat::check_precision(iat::PrecisionOptions().autocast(torch::kInt), cpu),
                      Contains("autocast must be torch::kFloat (off), torch::kBFloat16 or torch::kHalf, got Int"));
  auto net = tiny_cnn();
  auto half = iat::with_precision(net, iat::PrecisionOptions().autocast(torch::kHalf));
  REQUIRE_THROWS_WITH(half(torch::rand({2, 1, 8, 8})), Contains("CUDA only"));
}

TEST_CASE("bf16 and channels-last on CUDA", "[precision][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("skipped: no CUDA device in this run (the CUDA precision path is exercised by scripts/gpu_check.sh)");
    return;
  }
  const torch::Device cuda(torch::kCUDA);
  auto net = tiny_resnet();
  net->to(cuda);
  net->eval();
  iat::to_channels_last(*net);
  auto x = torch::rand({8, 1, 16, 16}, torch::Device(cuda));
  auto y = torch::randint(0, 4, {8}, torch::TensorOptions(cuda).dtype(torch::kLong));
  auto opts = iat::PrecisionOptions().autocast(torch::kBFloat16).channels_last(true);
  iat::check_precision(opts, cuda);
  auto fast = iat::with_precision(net, opts);
  torch::Tensor ref, low;
  {
    torch::NoGradGuard ng;
    ref = net(x);
    low = fast(x);
  }
  CHECK(low.scalar_type() == torch::kFloat);
  CHECK(relative_error(low, ref) < 0.05);
  auto x_adv = iat::PGD().perturb(fast, x, y);
  CHECK(x_adv.is_cuda());
  CHECK(x_adv.scalar_type() == torch::kFloat);
  CHECK((x_adv - x).abs().max().item<double>() <= 8.0 / 255 + 1e-6);
}
