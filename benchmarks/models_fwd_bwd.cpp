// Times one forward+backward pass (train mode, CE loss, parameter gradients) of iat's models:
// SmallCNN on a Fashion-MNIST batch (128×1×28×28) and PreAct ResNet-18 on a CIFAR batch (32×3×32×32).
// benchmarks/models_fwd_bwd.py times the reference PyTorch definitions (tests/python/reference_models.py)
// the same way, so the two can run side by side:
//
//   bench_models_fwd_bwd [--reps 5] [--threads 1]
// Prints one JSON line per model: {"impl":"iat", "model":..., "batch":..., "ms":...} (median over reps).

#include <iat/models/preact_resnet.hpp>
#include <iat/models/small_cnn.hpp>

#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

template <typename Net>
double median_fwd_bwd_ms(Net& net, const torch::Tensor& x, const torch::Tensor& y, int64_t reps) {
  std::vector<double> ms;
  net->train();
  for (int64_t r = 0; r < reps + 1; ++r) {  // the first repetition warms up and is dropped
    auto t0 = std::chrono::steady_clock::now();
    net->zero_grad();
    auto loss = at::cross_entropy_loss(net(x), y);
    loss.backward();
    const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int64_t reps = 5;
  int threads = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--reps")) reps = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads")) threads = std::stoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "bench_models_fwd_bwd: unknown flag %s (use --reps, --threads)\n", argv[i]);
      return 2;
    }
  }
  at::set_num_threads(threads);
  torch::manual_seed(0);
  iat::models::SmallCNN cnn(iat::models::SmallCNNOptions(10));
  iat::models::PreActResNet18 prn(iat::models::PreActResNetOptions(10));
  const double cnn_ms = median_fwd_bwd_ms(cnn, torch::rand({128, 1, 28, 28}), torch::randint(0, 10, {128}), reps);
  const double prn_ms = median_fwd_bwd_ms(prn, torch::rand({32, 3, 32, 32}), torch::randint(0, 10, {32}), reps);
  std::printf("{\"impl\": \"iat\", \"model\": \"small_cnn\", \"batch\": 128, \"threads\": %d, \"ms\": %.2f}\n",
              at::get_num_threads(), cnn_ms);
  std::printf("{\"impl\": \"iat\", \"model\": \"preact_resnet18\", \"batch\": 32, \"threads\": %d, \"ms\": %.2f}\n",
              at::get_num_threads(), prn_ms);
  return 0;
}
