// Data-parallel training step on the CPU: one process, or the ranks torchrun starts, at the same global
// batch (docs/benchmarks.md, "Data parallelism"; run_data_parallel.sh runs 1 process and 2 side by side).
// Each rank trains PreAct ResNet-18 (CIFAR-shaped random batch) on its slice of the global batch with
// iat::distributed::DataParallel: begin_step (buffers from rank 0), forward, CE, backward (bucketed
// all-reduces launched from autograd hooks when --overlap 1), synchronize_gradients, SGD step. With
// --attack-steps K > 0 the step is PGD-AT's (iat::train::pgd_at_loss with PGD-K, ε = 8/255, α = 2/255, its
// random start drawn for the global batch and sliced, as iat-train does): K attack steps of compute per rank
// before the same backward and the same gradients to all-reduce. 0 (the default) is a plain step, the worst
// case for the share of communication.
//
//   bench_data_parallel_step [--batch 64] [--steps 5] [--warmup 1] [--overlap 1] [--threads 1] [--bucket-mb 25]
//                            [--attack-steps 0]
//
// Prints one JSON line (rank 0): world_size, global and per-rank batch, step_ms (median over the timed
// steps, the slowest rank's), sync_ms (median time in synchronize_gradients after backward: the part of the
// communication not hidden behind backward), allreduce_ms (one all-reduce of every gradient alone, median of
// 5, after the steps), gradient_bytes, model_bytes (parameters and buffers), buckets and how many of them
// were launched during backward. Freed memory is kept in the heap (iat::keep_freed_memory), as in iat-train.

#include <iat/cpu_allocator.hpp>
#include <iat/distributed/data_parallel.hpp>
#include <iat/attacks/pgd.hpp>
#include <iat/models/preact_resnet.hpp>
#include <iat/train/recipes.hpp>

#include <ATen/Parallel.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

struct Args {
  int64_t batch = 64, steps = 5, warmup = 1, threads = 1, overlap = 1, attack_steps = 0;
  double bucket_mb = 25;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "bench_data_parallel_step: %s needs a value\n", flag.c_str());
      std::exit(2);
    }
    const std::string value = argv[++i];
    if (flag == "--batch") a.batch = std::stoll(value);
    else if (flag == "--steps") a.steps = std::stoll(value);
    else if (flag == "--warmup") a.warmup = std::stoll(value);
    else if (flag == "--threads") a.threads = std::stoll(value);
    else if (flag == "--overlap") a.overlap = std::stoll(value);
    else if (flag == "--bucket-mb") a.bucket_mb = std::stod(value);
    else if (flag == "--attack-steps") a.attack_steps = std::stoll(value);
    else {
      std::fprintf(stderr, "bench_data_parallel_step: unknown flag %s\n", flag.c_str());
      std::exit(2);
    }
  }
  if (a.batch < 1 || a.steps < 1 || a.warmup < 0 || a.threads < 1 || a.bucket_mb <= 0 || a.attack_steps < 0) {
    std::fprintf(stderr, "bench_data_parallel_step: --batch, --steps, --threads >= 1, --warmup, --attack-steps >= 0, "
                 "--bucket-mb > 0\n");
    std::exit(2);
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  iat::keep_freed_memory();  // as iat-train does: freed activation buffers stay in the heap
  at::set_num_threads(static_cast<int>(a.threads));
  namespace dist = iat::distributed;
  const auto env = dist::environment_from_torchrun();
  dist::ProcessGroupPtr pg;
  if (env.world_size > 1) pg = dist::init_process_group(env);
  if (a.batch % env.world_size != 0) {
    std::fprintf(stderr, "bench_data_parallel_step: --batch %lld is not a multiple of WORLD_SIZE %d\n",
                 static_cast<long long>(a.batch), env.world_size);
    return 2;
  }

  torch::manual_seed(0);
  iat::models::PreActResNet18 net(iat::models::PreActResNetOptions(10));
  net->train();
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  std::unique_ptr<dist::DataParallel> dp;
  if (pg) {
    dp = std::make_unique<dist::DataParallel>(
        pg, net.ptr(), dist::DataParallelOptions().bucket_mb(a.bucket_mb).overlap(a.overlap != 0));
  }
  const auto slice = dist::slice_of_batch(a.batch, env.rank, env.world_size);
  iat::PGD pgd(iat::PGDOptions().steps(a.attack_steps > 0 ? a.attack_steps : 1));

  std::vector<double> step_ms, sync_ms;
  for (int64_t s = 0; s < a.warmup + a.steps; ++s) {
    torch::manual_seed(1000 + s);  // the same global batch on every rank
    auto x = torch::rand({a.batch, 3, 32, 32}).slice(0, slice.begin, slice.end);
    auto y = torch::randint(0, 10, {a.batch}, torch::kLong).slice(0, slice.begin, slice.end);
    if (pg) dist::barrier(pg);  // every rank starts the step together: the step time is the slowest rank's
    const auto t0 = std::chrono::steady_clock::now();
    if (dp) dp->begin_step();
    torch::Tensor loss;
    if (a.attack_steps > 0) {
      dist::GlobalDrawSlice draw(env.rank, env.world_size);  // the global batch's random start, sliced
      loss = iat::train::pgd_at_loss(net, x, y, pgd).loss;
    } else {
      loss = torch::nn::functional::cross_entropy(net->forward(x), y);
    }
    opt.zero_grad();
    loss.backward();
    const auto t_sync = std::chrono::steady_clock::now();
    if (dp) dp->synchronize_gradients();
    const double sync = ms_since(t_sync);
    opt.step();
    double step = ms_since(t0);
    if (pg) {  // the slowest rank's
      for (const auto& t : dist::all_gather(pg, torch::tensor({step}, torch::kDouble))) step = std::max(step, t.item<double>());
    }
    if (s >= a.warmup) {
      step_ms.push_back(step);
      sync_ms.push_back(sync);
    }
  }

  int64_t grad_bytes = 0, model_bytes = 0;
  for (const auto& p : net->parameters()) grad_bytes += p.numel() * static_cast<int64_t>(p.element_size());
  model_bytes = grad_bytes;
  for (const auto& b : net->buffers()) model_bytes += b.numel() * static_cast<int64_t>(b.element_size());
  double allreduce = 0;
  if (pg) {
    auto flat = torch::zeros({grad_bytes / 4}, torch::kFloat);
    std::vector<double> times;
    for (int i = 0; i < 5; ++i) {
      dist::barrier(pg);
      const auto t = std::chrono::steady_clock::now();
      dist::all_reduce_sum(pg, flat);
      times.push_back(ms_since(t));
    }
    allreduce = median(times);
  }
  if (env.rank == 0) {
    std::printf("{\"world_size\": %d, \"global_batch\": %lld, \"rank_batch\": %lld, \"overlap\": %s, \"threads\": %lld, "
                "\"attack_steps\": %lld, "
                "\"step_ms\": %.1f, \"sync_ms\": %.1f, \"allreduce_ms\": %.1f, \"gradient_bytes\": %lld, "
                "\"model_bytes\": %lld, \"buckets\": %zu, \"buckets_launched_in_backward\": %zu}\n",
                env.world_size, static_cast<long long>(a.batch), static_cast<long long>(slice.end - slice.begin),
                pg ? (a.overlap ? "true" : "false") : "null", static_cast<long long>(a.threads),
                static_cast<long long>(a.attack_steps), median(step_ms),
                median(sync_ms), allreduce, static_cast<long long>(grad_bytes), static_cast<long long>(model_bytes),
                dp ? dp->num_buckets() : size_t{0}, dp ? dp->buckets_launched_in_backward() : size_t{0});
  }
  return 0;
}
