// Training-step throughput of PGD-AT, UIAT, IAT and the one-off strategy (t > T') on PreAct ResNet-18 and
// WRN-34-10 with CIFAR-shaped batches, in fp32, bf16 autocast and bf16 + channels-last, on the CPU or a GPU.
// Each configuration: warm-up steps (dropped, also cudnn's autotuning), then timed steps of the whole
// training step (recipe, backward, SGD step), synchronised on CUDA. scripts/gpu_check.sh runs it on a GPU;
// `--dry-run` sizes (tiny batch, 1 step) run the same path on the CPU.
//
//   bench_train_step_throughput [--device cpu|cuda] [--models prn18,wrn-34-10] [--methods pgd-at,uiat,iat,one-off]
//                               [--precisions fp32,bf16,bf16-cl] [--batch 128] [--steps 10] [--warmup 3]
//                               [--threads N] [--image-size 32]
// Prints one JSON line per configuration: model, method, precision, batch, step_ms (median), images_per_second,
// peak_memory_mib (CUDA only; -1 elsewhere).

#include <iat/attacks/pgd.hpp>
#include <iat/inverse/alignment_loss.hpp>
#include <iat/inverse/inverse_attack.hpp>
#include <iat/inverse/one_off_cache.hpp>
#include <iat/inverse/universal_perturbation.hpp>
#include <iat/models/preact_resnet.hpp>
#include <iat/models/wide_resnet.hpp>
#include <iat/precision.hpp>
#include <iat/train/recipes.hpp>

#include "cuda_stats.hpp"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Settings {
  torch::Device device{torch::kCPU};
  int64_t batch = 128, steps = 10, warmup = 3, image_size = 32;
};

// One model: every method and precision, each measured on the same weights.
template <typename Net>
void run_model(const std::string& model_name, Net net, const Settings& s, const std::vector<std::string>& methods,
               const std::vector<std::string>& precisions) {
  net->to(s.device);
  net->train();
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9).nesterov(true));
  const auto on = torch::TensorOptions().device(s.device);
  auto x = torch::rand({s.batch, 3, s.image_size, s.image_size}, on);
  auto y = torch::randint(0, 10, {s.batch}, on.dtype(torch::kLong));
  auto index = torch::arange(s.batch, on.dtype(torch::kLong));

  iat::PGD pgd;                  // ε = 8/255, α = 2/255, 10 steps
  iat::InverseAttack inverse;    // ε' = 4/255, α' = 2/255, 5 steps
  iat::AlignmentLoss align;      // λ = 3.5
  iat::UniversalInversePerturbation uip(iat::UniversalInversePerturbationOptions(10, {3, s.image_size, s.image_size}));
  iat::OneOffCache cache(iat::OneOffCacheOptions(s.batch, 10).one_off_epoch(1));
  uip->to(s.device);
  align->to(s.device);
  cache->to(s.device);
  cache->store(index, torch::full({s.batch, 10}, 0.1, on));

  for (const auto& precision : precisions) {
    const bool channels_last = precision == "bf16-cl";
    const auto options =
        iat::PrecisionOptions().autocast(precision == "fp32" ? torch::kFloat : torch::kBFloat16).channels_last(channels_last);
    iat::check_precision(options, s.device);
    if (channels_last) iat::to_channels_last(*net);
    const auto xb = channels_last ? x.contiguous(at::MemoryFormat::ChannelsLast) : x.contiguous();
    const iat::ModelRef model = iat::with_precision(net, options);
    for (const auto& method : methods) {
      std::function<iat::train::StepLoss()> loss;
      if (method == "pgd-at") loss = [&] { return iat::train::pgd_at_loss(model, xb, y, pgd); };
      else if (method == "uiat") loss = [&] { return iat::train::uiat_loss(model, xb, y, pgd, uip, align); };
      else if (method == "iat") loss = [&] { return iat::train::iat_loss(model, xb, y, pgd, inverse, align); };
      else if (method == "one-off") loss = [&] { return iat::train::one_off_loss(model, xb, y, index, 2, pgd, inverse, cache, align); };
      else TORCH_CHECK_VALUE(false, "--methods: unknown method '", method, "' (pgd-at, uiat, iat, one-off)");
      iat_bench::reset_peak_memory(s.device);
      std::vector<double> ms;
      for (int64_t i = 0; i < s.warmup + s.steps; ++i) {
        if (s.device.is_cuda()) torch::cuda::synchronize();
        const auto t0 = std::chrono::steady_clock::now();
        opt.zero_grad();
        auto step = loss();
        step.loss.backward();
        opt.step();
        if (s.device.is_cuda()) torch::cuda::synchronize();
        const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (i >= s.warmup) ms.push_back(t);
      }
      const double step_ms = median(ms);
      std::printf("{\"model\": \"%s\", \"method\": \"%s\", \"precision\": \"%s\", \"device\": \"%s\", \"batch\": %lld, "
                  "\"steps\": %lld, \"step_ms\": %.3f, \"images_per_second\": %.1f, \"peak_memory_mib\": %.1f}\n",
                  model_name.c_str(), method.c_str(), precision.c_str(), s.device.str().c_str(),
                  static_cast<long long>(s.batch), static_cast<long long>(s.steps), step_ms,
                  1000.0 * static_cast<double>(s.batch) / step_ms, iat_bench::peak_memory_mib(s.device));
      std::fflush(stdout);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  std::string device = "cpu", models = "prn18,wrn-34-10", methods = "pgd-at,uiat,iat,one-off";
  std::string precisions = "fp32,bf16,bf16-cl";
  int threads = 0;
  try {
    for (int i = 1; i < argc; i += 2) {
      const std::string flag = argv[i];
      TORCH_CHECK_VALUE(i + 1 < argc, flag, " needs a value");
      const std::string value = argv[i + 1];
      if (flag == "--device") device = value;
      else if (flag == "--models") models = value;
      else if (flag == "--methods") methods = value;
      else if (flag == "--precisions") precisions = value;
      else if (flag == "--batch") s.batch = std::stoll(value);
      else if (flag == "--steps") s.steps = std::stoll(value);
      else if (flag == "--warmup") s.warmup = std::stoll(value);
      else if (flag == "--threads") threads = std::stoi(value);
      else if (flag == "--image-size") s.image_size = std::stoll(value);
      else TORCH_CHECK_VALUE(false, "unknown flag ", flag,
                             " (--device, --models, --methods, --precisions, --batch, --steps, --warmup, --threads, --image-size)");
    }
    TORCH_CHECK_VALUE(s.batch >= 1 && s.steps >= 1 && s.warmup >= 0, "--batch and --steps must be >= 1, --warmup >= 0");
    s.device = torch::Device(device);
    TORCH_CHECK_VALUE(!s.device.is_cuda() || torch::cuda::is_available(), "--device ", device, ": no CUDA device here");
    if (threads > 0) at::set_num_threads(threads);
    if (s.device.is_cuda()) at::globalContext().setBenchmarkCuDNN(true);  // fixed shapes: let cuDNN pick its kernels
    torch::manual_seed(0);
    for (const auto& m : split(models)) {
      if (m == "prn18") {
        run_model(m, iat::models::PreActResNet18(iat::models::PreActResNetOptions(10)), s, split(methods), split(precisions));
      } else if (m == "wrn-34-10") {
        run_model(m, iat::models::WideResNet(iat::models::WideResNetOptions(34, 10, 10)), s, split(methods), split(precisions));
      } else {
        TORCH_CHECK_VALUE(false, "--models: unknown model '", m, "' (prn18, wrn-34-10)");
      }
    }
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "bench_train_step_throughput: %s\n", e.what_without_backtrace());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train_step_throughput: %s\n", e.what());
    return 2;
  }
  return 0;
}
