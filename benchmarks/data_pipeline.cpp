// Throughput of iat::data's batch pipeline on CIFAR-shaped data (50 000 × 3 × 32 × 32 uint8, batch 128,
// random crop with 4-pixel padding + flip + conversion to float), side by side with
//   - a per-image pipeline (one pad/crop/flip/convert tensor operation chain per image, as data loaders
//     written per sample do), and
//   - what a training step consumes: one SGD step (forward, backward, update) of PreAct ResNet-18 on the
//     same batch, the cheapest step of docs/method.md §8 (PGD-AT adds 10 forward/backward passes of the attack).
// Prints images per second and the ratios. Usage: bench_data_pipeline [threads=1] [epochs=2]
#include <iat/data/loader.hpp>
#include <iat/models/preact_resnet.hpp>

#include <ATen/Parallel.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/sgd.h>
#include <torch/types.h>
#include <torch/version.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

/// Images per second of full passes over the loader; the consumer only touches the batch.
double loader_rate(iat::data::Loader& loader, int epochs) {
  for (auto& b : loader) (void)b;  // warm-up pass
  int64_t images = 0;
  double checksum = 0;
  auto t0 = Clock::now();
  for (int e = 0; e < epochs; ++e) {
    for (auto& b : loader) {
      images += b.x.size(0);
      checksum += b.x.data_ptr<float>()[0];
    }
  }
  const double s = seconds_since(t0);
  if (checksum < 0) std::printf("impossible\n");
  return static_cast<double>(images) / s;
}

/// The same work, one image at a time: select, pad, crop, flip, convert.
double per_image_rate(const iat::data::Dataset& ds, int64_t batch, int64_t images_total) {
  auto gen = iat::detail::cpu_generator(3);
  int64_t images = 0;
  double checksum = 0;
  auto t0 = Clock::now();
  auto perm = torch::randperm(ds.size(), gen, torch::kLong);
  const int64_t* p = perm.data_ptr<int64_t>();
  for (int64_t start = 0; images < images_total; start += batch) {
    std::vector<torch::Tensor> xs;
    for (int64_t i = 0; i < batch; ++i) {
      const int64_t k = p[(start + i) % ds.size()];
      auto img = at::constant_pad_nd(ds.images[k], {4, 4, 4, 4}, 0);
      auto draws = torch::randint(0, 9, {3}, gen, torch::kLong);
      const int64_t oy = draws[0].item<int64_t>(), ox = draws[1].item<int64_t>();
      img = img.slice(1, oy, oy + 32).slice(2, ox, ox + 32);
      if (draws[2].item<int64_t>() % 2 == 1) img = img.flip({2});
      xs.push_back(img.to(torch::kFloat).div(255));
    }
    auto x = torch::stack(xs);
    checksum += x.data_ptr<float>()[0];
    images += batch;
  }
  const double s = seconds_since(t0);
  if (checksum < 0) std::printf("impossible\n");
  return static_cast<double>(images) / s;
}

/// Images per second one plain SGD step of PreAct ResNet-18 processes (batch 128, after a warm-up step).
double training_rate(int64_t batch, int steps) {
  iat::models::PreActResNet18 net(iat::models::PreActResNetOptions(10));
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  auto x = torch::rand({batch, 3, 32, 32});
  auto y = torch::randint(0, 10, {batch}, torch::kLong);
  auto step = [&] {
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net->forward(x), y);
    loss.backward();
    opt.step();
  };
  step();
  auto t0 = Clock::now();
  for (int i = 0; i < steps; ++i) step();
  return static_cast<double>(batch * steps) / seconds_since(t0);
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  const int epochs = argc > 2 ? std::atoi(argv[2]) : 2;
  at::set_num_threads(threads);
  std::printf("iat data pipeline benchmark: LibTorch %s, intra-op threads %d, epochs %d\n", TORCH_VERSION,
              at::get_num_threads(), epochs);

  const int64_t n = 50000, batch = 128;
  auto gen = iat::detail::cpu_generator(1);
  iat::data::Dataset ds;
  ds.images = torch::randint(0, 256, {n, 3, 32, 32}, gen, torch::kLong).to(torch::kByte);
  ds.labels = torch::randint(0, 10, {n}, gen, torch::kLong);
  ds.num_classes = 10;
  ds.name = "cifar-shaped";

  auto opts = iat::data::LoaderOptions().batch_size(batch).augment(true).seed(0);
  iat::data::Loader sync(ds, opts.prefetch(0));
  const double sync_rate = loader_rate(sync, epochs);
  std::printf("Loader, crop+flip+float, on the calling thread (prefetch 0): %10.0f images/s\n", sync_rate);
  iat::data::Loader pre(ds, opts.prefetch(2));
  const double pre_rate = loader_rate(pre, epochs);
  std::printf("Loader, crop+flip+float, background thread (prefetch 2):    %10.0f images/s\n", pre_rate);
  iat::data::Loader plain(ds, iat::data::LoaderOptions().batch_size(batch).prefetch(0));
  const double plain_rate = loader_rate(plain, epochs);
  std::printf("Loader, float only, no augmentation (prefetch 0):            %10.0f images/s\n", plain_rate);
  const double per_image = per_image_rate(ds, batch, 20 * batch);
  std::printf("per-image pipeline (pad/crop/flip/convert per image):       %10.0f images/s\n", per_image);
  const double train = training_rate(batch, 2);
  std::printf("consumer: PreAct ResNet-18 SGD step, batch 128 (no attack):  %10.1f images/s\n", train);
  std::printf("ratios: Loader(prefetch 0) / per-image = %.1fx; Loader(prefetch 0) / training step = %.0fx\n",
              sync_rate / per_image, sync_rate / train);
  return 0;
}
