// Times PGD-10 on a small CNN with iat: the attack alone, and a whole PGD-AT training step (attack, then
// forward/backward on x_adv and an SGD step). benchmarks/pgd_step.py does the same computation written
// directly in Python; benchmarks/run_pgd_step.sh runs both side by side and prints the ratios.
//
//   bench_pgd_step [--batch 128] [--reps 5] [--threads 1]
// Prints one JSON line: {"impl":"iat", "attack_ms":..., "train_step_ms":..., ...} (medians over reps).

#include <iat/attacks/pgd.hpp>

#include <ATen/Parallel.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/functional/pooling.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

// conv(1→32, 3×3) → ReLU → max-pool 2 → conv(32→64, 3×3) → ReLU → max-pool 2 → fc(3136→128) → ReLU → fc(128→10)
struct BenchCNNImpl : torch::nn::Module {
  BenchCNNImpl()
      : conv1(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 32, 3).padding(1)))),
        conv2(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 3).padding(1)))),
        fc1(register_module("fc1", torch::nn::Linear(64 * 7 * 7, 128))),
        fc2(register_module("fc2", torch::nn::Linear(128, 10))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = torch::max_pool2d(torch::relu(conv1(x)), 2);
    h = torch::max_pool2d(torch::relu(conv2(h)), 2);
    return fc2(torch::relu(fc1(h.flatten(1))));
  }
  torch::nn::Conv2d conv1, conv2;
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(BenchCNN);

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
double time_ms(F&& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  int64_t batch = 128, reps = 5;
  int threads = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--batch")) batch = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps")) reps = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads")) threads = std::stoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "bench_pgd_step: unknown flag %s (use --batch, --reps, --threads)\n", argv[i]);
      return 2;
    }
  }
  at::set_num_threads(threads);
  torch::manual_seed(0);
  BenchCNN net;
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  auto x = torch::rand({batch, 1, 28, 28});
  auto y = torch::randint(0, 10, {batch}, torch::kLong);
  iat::PGD pgd(iat::PGDOptions().eps(0.1).step_size(0.01).steps(10));

  std::vector<double> attack, step;
  for (int64_t r = 0; r < reps + 1; ++r) {  // the first repetition warms up and is dropped
    net->train();
    double a = 0;
    const double s = time_ms([&] {
      torch::Tensor x_adv;
      a = time_ms([&] { x_adv = pgd.perturb(net, x, y); });
      opt.zero_grad();
      auto loss = at::cross_entropy_loss(net(x_adv), y);
      loss.backward();
      opt.step();
    });
    if (r == 0) continue;
    attack.push_back(a);
    step.push_back(s);
  }
  std::printf("{\"impl\": \"iat\", \"batch\": %lld, \"threads\": %d, \"reps\": %lld, \"attack_ms\": %.2f, "
              "\"train_step_ms\": %.2f}\n",
              static_cast<long long>(batch), at::get_num_threads(), static_cast<long long>(reps), median(attack),
              median(step));
  return 0;
}
