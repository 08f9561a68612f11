// Step cost of IAT, UIAT and the one-off strategy against PGD-AT, and of TRADES+UIAT against TRADES: one
// whole training step each (recipe, backward, SGD step), run side by side in one process, interleaved
// repetition by repetition so that machine load hits every method alike. Prints a table of median step
// times and their ratio to PGD-AT.
//
//   bench_step_cost [--model cnn|preact|demo|both] [--batch 32] [--reps 5] [--threads 1] [--only METHOD]
//                   [--malloc kept|glibc]
//
// cnn and preact: CIFAR-shaped (3×32×32) inputs, the paper's budget (PGD-10, ε = 8/255, α = 2/255; ε' = 4/255).
// demo: the demo's presets (fashion-pgd-at-cnn / fashion-uiat-cnn): iat::models::SmallCNN on 1×28×28 inputs,
// PGD-5 with ε = 0.1, α = 0.025, ε' = α' = 0.05, δ momentum 0.9, λ = 3.5 (use --batch 128 as iat-train does).
//
// --malloc kept (default) calls iat::keep_freed_memory() first, as iat-train and iat-eval do; glibc keeps the C
// library's default thresholds (every freed activation buffer back to the kernel, page faults on reuse).
// --only runs one method (its name as the table prints it, e.g. "PGD-AT" or "UIAT (fused, beta=1)") and
// nothing else in the process, so that /usr/bin/time's peak resident memory is that method's; several
// names separated by ';' run those methods only (ratios then to the first named), e.g.
// --only "TRADES;TRADES+UIAT (beta=1)".
//
// The accounting (forwards+backwards of the model, PGD-10 attack): PGD-AT = 11 units; UIAT (fused) adds one
// forward of x̌ with its backward share and one input-gradient backward (~1.1×), plus a no-grad forward of
// x for the pull term; IAT adds the 5-step inverse attack and its target forwards (~1.5×); one-off after
// T' adds nothing (~1.0×), before T' one forward/backward of x.
//
// Before the methods it times the passes the accounting counts, on the same model and batch: a no-grad
// forward (f), a forward with the input-gradient backward in evaluation mode as an attack step runs it
// (a), and a training forward with the full backward (t). From them it prints the ratios that pass counting
// alone predicts, K being the attack's steps:
//   PGD-AT                          K·a + t
//   UIAT, β = 1 (the defaults)      K·a + t + a + t           x̌'s forward with δ's input gradient (a), the
//                                                              training backward through x̌ (t − f), the
//                                                              no-grad p(x) (f)
//   UIAT, β = 0                     K·a + t + a + t − f       no p(x)
//   UIAT, β = 0, detach_reference   K·a + t + a               no training backward through x̌ either
//   IAT                             K·a + t + 5·a + 2·f + t    the 5-step inverse attack, its targets h(x) and
//                                                              h(x'), the training forward and backward of x̃
//   TRADES                          f + K·a + 2·t              p(x) for the KL attack, x and x' trained
//   TRADES + UIAT                   f + K·a + 2·t + a + t − f  x̌ as in UIAT; its h(x) is the attack's p(x)
// so that the measured rows can be read against what the passes themselves cost.

#include <iat/attacks/pgd.hpp>
#include <iat/cpu_allocator.hpp>
#include <iat/inverse/alignment_loss.hpp>
#include <iat/inverse/inverse_attack.hpp>
#include <iat/inverse/one_off_cache.hpp>
#include <iat/inverse/universal_perturbation.hpp>
#include <iat/models/preact_resnet.hpp>
#include <iat/models/small_cnn.hpp>
#include <iat/train/recipes.hpp>

#include <ATen/Parallel.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace {

// A small CIFAR-shaped CNN: conv(3→32) → BN → ReLU → pool → conv(32→64) → BN → ReLU → pool → fc(4096→128)
// → ReLU → fc(128→10).
struct BenchCNNImpl : torch::nn::Module {
  BenchCNNImpl()
      : conv1(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 32, 3).padding(1)))),
        bn1(register_module("bn1", torch::nn::BatchNorm2d(32))),
        conv2(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 3).padding(1)))),
        bn2(register_module("bn2", torch::nn::BatchNorm2d(64))),
        fc1(register_module("fc1", torch::nn::Linear(64 * 8 * 8, 128))),
        fc2(register_module("fc2", torch::nn::Linear(128, 10))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = torch::max_pool2d(torch::relu(bn1(conv1(x))), 2);
    h = torch::max_pool2d(torch::relu(bn2(conv2(h))), 2);
    return fc2(torch::relu(fc1(h.flatten(1))));
  }
  torch::nn::Conv2d conv1;
  torch::nn::BatchNorm2d bn1;
  torch::nn::Conv2d conv2;
  torch::nn::BatchNorm2d bn2;
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(BenchCNN);

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Wall time and CPU time of the process (all threads), in ms. On a shared machine the CPU time is the
// steadier measure of the work a step does; both are reported.
struct Times {
  double wall, cpu;
};

template <typename F>
Times time_ms(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::clock_t c0 = std::clock();
  f();
  const std::clock_t c1 = std::clock();
  const double wall = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return {wall, 1000.0 * static_cast<double>(c1 - c0) / CLOCKS_PER_SEC};
}

// The budget a model is benchmarked at: the paper's CIFAR one, or the demo's Fashion-MNIST presets.
struct Budget {
  std::vector<int64_t> input_shape;  // C, H, W
  iat::PGDOptions attack;
  iat::InverseAttackOptions inverse;
  double inv_eps, inv_step;
};

Budget cifar_budget() {
  return {{3, 32, 32}, iat::PGDOptions(), iat::InverseAttackOptions(), 4.0 / 255, 2.0 / 255};
}

Budget demo_budget() {  // the fashion-*-cnn presets of iat-train
  return {{1, 28, 28}, iat::PGDOptions().eps(0.1).step_size(0.025).steps(5),
          iat::InverseAttackOptions().eps(0.05).step_size(0.025), 0.05, 0.05};
}

// The passes of the accounting, timed on this model and batch (medians of `reps` after a warm-up).
template <typename Net>
void print_passes(Net& net, const torch::Tensor& x, const torch::Tensor& y, int64_t steps, int64_t reps) {
  auto timed = [&](auto&& f) {
    f();
    std::vector<double> cpu;
    for (int64_t r = 0; r < reps; ++r) cpu.push_back(time_ms(f).cpu);
    return median(cpu);
  };
  net->eval();
  const double f = timed([&] {
    torch::NoGradGuard no_grad;
    net->forward(x);
  });
  const double a = timed([&] {
    auto xv = x.detach().requires_grad_(true);
    auto loss = torch::cross_entropy_loss(net->forward(xv), y);
    torch::autograd::grad(std::vector<torch::Tensor>{loss}, std::vector<torch::Tensor>{xv});
  });
  net->train();
  const double t = timed([&] {
    auto loss = torch::cross_entropy_loss(net->forward(x), y);
    loss.backward();
  });
  net->zero_grad();
  const double k = static_cast<double>(steps), pgd_at = k * a + t;
  std::printf("\npasses (CPU ms): no-grad forward f %.1f, attack step a (forward + input gradient) %.1f, "
              "training forward + backward t %.1f\n",
              f, a, t);
  const double trades = f + k * a + 2 * t;
  std::printf("pass counting predicts (x PGD-AT): UIAT beta=1 %.2f, beta=0 %.2f, beta=0 detach_reference %.2f; "
              "IAT %.2f; (x TRADES) TRADES+UIAT %.2f\n",
              (pgd_at + a + t) / pgd_at, (pgd_at + a + t - f) / pgd_at, (pgd_at + a) / pgd_at,
              (pgd_at + 5 * a + 2 * f + t) / pgd_at, (trades + a + t - f) / trades);
}

template <typename Net>
void run(const char* model_name, Net net, const Budget& budget, int64_t batch, int64_t reps,
         const std::string& only) {
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  std::vector<int64_t> shape{batch};
  shape.insert(shape.end(), budget.input_shape.begin(), budget.input_shape.end());
  auto x = torch::rand(shape);
  auto y = torch::randint(0, 10, {batch}, torch::kLong);
  auto index = torch::arange(batch, torch::kLong);

  iat::PGD pgd(budget.attack);
  // TRADES' attack at the same budget: KL from x + 0.001·N(0, 1).
  iat::PGD trades_pgd(iat::PGDOptions(budget.attack).loss(iat::Loss::kKL).init_noise(iat::InitNoise::kGaussian).init_std(0.001));
  iat::InverseAttack inverse(budget.inverse);  // 5 steps, β = 1
  iat::AlignmentLoss align;                    // λ = 3.5
  iat::AlignmentLoss align_detached(iat::AlignmentLossOptions().detach_reference(true));
  const auto uip_options = iat::UniversalInversePerturbationOptions(10, budget.input_shape)
                               .eps(budget.inv_eps)
                               .step_size(budget.inv_step);
  iat::UniversalInversePerturbation uip(iat::UniversalInversePerturbationOptions(uip_options).momentum(0.9));
  iat::UniversalInversePerturbation uip_ce(iat::UniversalInversePerturbationOptions(uip_options).beta(0));
  iat::UniversalInversePerturbation uip_trades(iat::UniversalInversePerturbationOptions(uip_options).momentum(0.9));
  iat::OneOffCache cache(iat::OneOffCacheOptions(batch, 10).one_off_epoch(1));
  cache->store(index, torch::full({batch, 10}, 0.1));

  struct Method {
    std::string name;
    std::function<iat::train::StepLoss()> loss;
    std::vector<double> wall, cpu;
  };
  std::vector<Method> methods;
  methods.push_back({"PGD-AT", [&] { return iat::train::pgd_at_loss(net, x, y, pgd); }, {}, {}});
  methods.push_back({"UIAT (fused, beta=1)", [&] { return iat::train::uiat_loss(net, x, y, pgd, uip, align); }, {}, {}});
  methods.push_back({"UIAT (fused, beta=0)", [&] { return iat::train::uiat_loss(net, x, y, pgd, uip_ce, align); }, {}, {}});
  methods.push_back({"UIAT (fused, beta=0, detach_reference)",
                     [&] { return iat::train::uiat_loss(net, x, y, pgd, uip_ce, align_detached); },
                     {},
                     {}});
  methods.push_back({"UIAT (two-pass)",
                     [&] {
                       return iat::train::uiat_loss(net, x, y, pgd, uip, align, iat::train::UIATLossOptions().fused(false));
                     },
                     {},
                     {}});
  methods.push_back({"IAT", [&] { return iat::train::iat_loss(net, x, y, pgd, inverse, align); }, {}, {}});
  methods.push_back({"one-off, t > T'",
                     [&] { return iat::train::one_off_loss(net, x, y, index, 2, pgd, inverse, cache, align); },
                     {},
                     {}});
  methods.push_back({"one-off, t < T'",
                     [&] { return iat::train::one_off_loss(net, x, y, index, 0, pgd, inverse, cache, align); },
                     {},
                     {}});
  methods.push_back({"TRADES", [&] { return iat::train::trades_loss(net, x, y, trades_pgd); }, {}, {}});
  methods.push_back({"TRADES+UIAT (beta=1)",
                     [&] { return iat::train::trades_uiat_loss(net, x, y, trades_pgd, uip_trades, align); },
                     {},
                     {}});

  if (!only.empty()) {
    std::vector<Method> kept;
    for (size_t start = 0; start <= only.size();) {
      const size_t end = std::min(only.find(';', start), only.size());
      const std::string name = only.substr(start, end - start);
      auto keep = std::find_if(methods.begin(), methods.end(), [&](const Method& m) { return m.name == name; });
      if (keep == methods.end()) {
        std::fprintf(stderr, "bench_step_cost: --only: '%s' names no method; the methods are:\n", name.c_str());
        for (const auto& m : methods) std::fprintf(stderr, "  %s\n", m.name.c_str());
        std::exit(2);
      }
      kept.push_back(*keep);
      start = end + 1;
    }
    methods = kept;
  }
  if (methods.size() > 1) print_passes(net, x, y, budget.attack.steps(), reps);
  net->train();
  auto train_step = [&](Method& m) {
    return time_ms([&] {
      opt.zero_grad();
      auto step = m.loss();
      step.loss.backward();
      opt.step();
    });
  };
  train_step(methods[0]);  // warm-up, dropped
  for (int64_t r = 0; r < reps; ++r) {
    for (auto& m : methods) {
      const Times t = train_step(m);
      m.wall.push_back(t.wall);
      m.cpu.push_back(t.cpu);
    }
  }
  const double base_wall = median(methods[0].wall), base_cpu = median(methods[0].cpu);
  std::printf("\n%s, batch %lld, %lld reps (medians), threads %d\n", model_name, static_cast<long long>(batch),
              static_cast<long long>(reps), at::get_num_threads());
  std::printf("| method | CPU ms | ratio (CPU) | wall ms | ratio (wall) |\n|---|---|---|---|---|\n");
  for (auto& m : methods) {
    std::printf("| %s | %.0f | %.2f | %.0f | %.2f |\n", m.name.c_str(), median(m.cpu), median(m.cpu) / base_cpu,
                median(m.wall), median(m.wall) / base_wall);
  }
  auto row = [&](const char* name) {
    auto it = std::find_if(methods.begin(), methods.end(), [&](const Method& m) { return m.name == name; });
    return it == methods.end() ? nullptr : &*it;
  };
  if (const Method *trades = row("TRADES"), *both = row("TRADES+UIAT (beta=1)"); trades && both) {
    std::printf("TRADES+UIAT / TRADES: %.2f (CPU), %.2f (wall)\n", median(both->cpu) / median(trades->cpu),
                median(both->wall) / median(trades->wall));
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t batch = 32, reps = 5;
  int threads = 1;
  std::string model = "both", only, malloc_mode = "kept";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--batch")) batch = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps")) reps = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads")) threads = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--model")) model = argv[i + 1];
    else if (!std::strcmp(argv[i], "--only")) only = argv[i + 1];
    else if (!std::strcmp(argv[i], "--malloc")) malloc_mode = argv[i + 1];
    else {
      std::fprintf(stderr, "bench_step_cost: unknown flag %s (use --model, --batch, --reps, --threads, --only, --malloc)\n",
                   argv[i]);
      return 2;
    }
  }
  if (model != "cnn" && model != "preact" && model != "demo" && model != "both") {
    std::fprintf(stderr, "bench_step_cost: --model must be cnn, preact, demo or both, got %s\n", model.c_str());
    return 2;
  }
  if (malloc_mode != "kept" && malloc_mode != "glibc") {
    std::fprintf(stderr, "bench_step_cost: --malloc must be kept or glibc, got %s\n", malloc_mode.c_str());
    return 2;
  }
  if (malloc_mode == "kept" && !iat::keep_freed_memory()) {
    std::fprintf(stderr, "bench_step_cost: --malloc kept: this C library has no mallopt (not glibc)\n");
    return 2;
  }
  std::printf("allocator: %s\n", malloc_mode == "kept" ? "iat::keep_freed_memory() (as iat-train)" : "glibc defaults");
  at::set_num_threads(threads);
  torch::manual_seed(0);
  if (model == "demo") {
    run("the demo's SmallCNN (1x28x28, PGD-5, eps 0.1)", iat::models::SmallCNN(iat::models::SmallCNNOptions(10)),
        demo_budget(), batch, reps, only);
    return 0;
  }
  if (model != "preact") run("small CNN (3x32x32)", BenchCNN(), cifar_budget(), batch, reps, only);
  if (model != "cnn") {
    run("PreAct ResNet-18 (3x32x32)", iat::models::PreActResNet18(iat::models::PreActResNetOptions(10)),
        cifar_budget(), batch, reps, only);
  }
  return 0;
}
