#include "support.hpp"

#include <iat/cpu_allocator.hpp>
#include <iat/train/checkpoint.hpp>
#include <iat/train/ema.hpp>
#include <iat/train/one_cycle.hpp>

#include <torch/cuda.h>
#include <torch/nn/modules/batchnorm.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sys/resource.h>

using namespace iat_test;

TEST_CASE("OneCycleLR rises linearly to max_lr at 2/5 of training and falls to 0", "[train][schedule]") {
  TinyNet net;
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(1.0));
  iat::train::OneCycleLR schedule(opt, iat::train::OneCycleOptions(0.1, 100));
  // Step s runs at t = (s + 1) / 100 (Wong et al.): the first step at 1/40 of the rise, the last at 0.
  CHECK(schedule.lr_at(0) == Approx(0.1 / 40));
  CHECK(schedule.lr_at(19) == Approx(0.05));
  CHECK(schedule.lr_at(39) == Approx(0.1));
  CHECK(schedule.lr_at(69) == Approx(0.05));
  CHECK(schedule.lr_at(98) == Approx(0.1 / 60));
  CHECK(schedule.lr_at(99) == Approx(0.0).margin(1e-15));
  CHECK(schedule.lr_at(500) == Approx(0.0));
  CHECK(schedule.set_step(9) == Approx(0.025));
  CHECK(opt.param_groups()[0].options().get_lr() == Approx(0.025));
  REQUIRE_THROWS_WITH(schedule.lr_at(-1), Catch::Contains("step must be >= 0"));
  REQUIRE_THROWS_WITH(iat::train::OneCycleLR(opt, iat::train::OneCycleOptions(0.1, 0)), Catch::Contains("total_steps"));
  REQUIRE_THROWS_WITH(iat::train::OneCycleLR(opt, iat::train::OneCycleOptions(-1, 10)), Catch::Contains("max_lr"));
}

TEST_CASE("OneCycleLR's options are a field: a change takes effect at the next step, a bad one is refused",
          "[train][schedule][options]") {
  TinyNet net;
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(1.0));
  iat::train::OneCycleLR schedule(opt, iat::train::OneCycleOptions(0.1, 100));
  schedule.options.max_lr(0.2);
  CHECK(schedule.lr_at(39) == Approx(0.2));
  CHECK(schedule.set_step(19) == Approx(0.1));
  schedule.options.total_steps(0);
  REQUIRE_THROWS_WITH(schedule.lr_at(10), Catch::Contains("total_steps must be >= 1"));
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
  SECTION("the options are a field: a new decay is the next update's, a bad one is refused there") {
    BNNet avg4;
    iat::train::ModelEMA changed(*live, *avg4);
    changed.options.decay(0.5);
    CHECK(changed.update() == Approx(0.5));
    changed.options.decay(1.5);
    REQUIRE_THROWS_WITH(changed.update(), Catch::Contains("decay must be in [0, 1), got 1.5"));
  }
  SECTION("a different architecture is refused") {
    TinyNet other;
    REQUIRE_THROWS_WITH(iat::train::ModelEMA(*live, *other), Catch::Contains("differ in architecture"));
  }
}

namespace {
std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
void spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}
}  // namespace

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

  SECTION("load_checkpoint verifies and reads it; plain LibTorch reads it too") {
    TinyNet loaded;
    auto in = iat::train::load_checkpoint(path, torch::Device(torch::kCPU));
    loaded->load(in);
    CHECK(torch::equal(loaded->fc1->weight, net->fc1->weight));
    TinyNet plain;
    torch::serialize::InputArchive in2;
    in2.load_from(path);  // the checksum is a zip comment: still a standard archive
    plain->load(in2);
    CHECK(torch::equal(plain->fc1->weight, net->fc1->weight));
  }
  SECTION("a write into a folder that doesn't exist fails and names the file") {
    torch::serialize::OutputArchive a2;
    net->save(a2);
    REQUIRE_THROWS_WITH(iat::train::save_atomically(a2, (dir / "missing" / "c.pt").string()),
                        Catch::Contains("missing/c.pt") && Catch::Contains("No such file or directory"));
    CHECK(fs::exists(path));
  }
  SECTION("a failing write (file size limit) throws cleanly, removes the temporary file, keeps the old one") {
    const std::string before = slurp(path);
    TinyNet other;
    torch::serialize::OutputArchive a3;
    other->save(a3);
    // A real short write: the file-size limit makes write() fail with EFBIG once the file reaches it.
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit small = old;
    small.rlim_cur = 512;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    std::string message;
    try {
      iat::train::save_atomically(a3, path);
    } catch (const c10::Error& e) {
      message = e.what_without_backtrace();
    }
    ::setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, old_handler);
    CHECK_THAT(message, Catch::Contains("could not write byte") && Catch::Contains("checkpoint.pt.tmp") &&
                            Catch::Contains("File too large") && Catch::Contains("left as it was"));
    CHECK_FALSE(fs::exists(path + ".tmp"));
    CHECK(slurp(path) == before);
  }
  SECTION("changed bytes are refused with the file's name") {
    std::string bytes = slurp(path);
    bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x5a);
    spit(path, bytes);
    REQUIRE_THROWS_WITH(iat::train::load_checkpoint(path),
                        Catch::Contains(path) && Catch::Contains("is corrupt") && Catch::Contains("CRC-32"));
  }
  SECTION("a truncated file is refused with the file's name") {
    const std::string bytes = slurp(path);
    for (size_t keep : {size_t{0}, size_t{10}, bytes.size() / 2, bytes.size() - 1}) {
      spit(path, bytes.substr(0, keep));
      REQUIRE_THROWS_WITH(iat::train::load_checkpoint(path), Catch::Contains(path) && Catch::Contains("truncated"));
    }
  }
  SECTION("a damaged checksum record is refused") {
    std::string bytes = slurp(path);
    bytes[bytes.size() - 3] = bytes[bytes.size() - 3] == '1' ? '2' : '1';  // a digit of the byte count
    spit(path, bytes);
    REQUIRE_THROWS_WITH(iat::train::load_checkpoint(path), Catch::Contains(path) && Catch::Contains("corrupt"));
  }
  SECTION("an archive without a checksum is refused unless asked for, and a missing file names itself") {
    torch::serialize::OutputArchive a4;
    net->save(a4);
    const std::string plain = (dir / "plain.pt").string();
    a4.save_to(plain);
    REQUIRE_THROWS_WITH(iat::train::load_checkpoint(plain), Catch::Contains(plain) && Catch::Contains("no iat checksum"));
    TinyNet loaded;
    auto in = iat::train::load_checkpoint(plain, iat::train::LoadCheckpointOptions().require_checksum(false));
    loaded->load(in);
    CHECK(torch::equal(loaded->fc1->weight, net->fc1->weight));
    const std::string missing = (dir / "nothing.pt").string();
    REQUIRE_THROWS_WITH(iat::train::load_checkpoint(missing), Catch::Contains(missing) && Catch::Contains("No such file"));
  }
  SECTION("write_file_atomically replaces a text file whole") {
    const std::string text_path = (dir / "metrics.jsonl").string();
    iat::train::write_file_atomically(text_path, std::string("a\n"));
    iat::train::write_file_atomically(text_path, std::string("b\nc\n"));
    CHECK(slurp(text_path) == "b\nc\n");
    CHECK_FALSE(fs::exists(text_path + ".tmp"));
  }
  SECTION("RNG state round trip reproduces the same draws") {
    auto state = iat::train::cpu_rng_state();
    auto a = torch::rand({5});
    iat::train::set_cpu_rng_state(state);
    auto b = torch::rand({5});
    CHECK(torch::equal(a, b));
    // rng_state(kCPU) is the same generator.
    iat::train::set_rng_state(torch::kCPU, iat::train::rng_state(torch::kCPU));
    auto c = torch::rand({5});
    iat::train::set_rng_state(torch::kCPU, state);
    CHECK(torch::equal(torch::rand({5}), a));
    CHECK_FALSE(torch::equal(c, a));
  }
  fs::remove_all(dir);
}

TEST_CASE("a CUDA generator's state round trip survives torch::manual_seed", "[train][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("no CUDA device: the CUDA generator's state is not exercised in this run");
    return;
  }
  const torch::Device cuda("cuda:0");
  const auto state = iat::train::rng_state(cuda);
  const auto a = torch::rand({5}, torch::TensorOptions().device(cuda));
  torch::manual_seed(977);  // reseeds the CUDA generators too: what iat-train's per-epoch evaluation does
  const auto reseeded = torch::rand({5}, torch::TensorOptions().device(cuda));
  iat::train::set_rng_state(cuda, state);
  const auto b = torch::rand({5}, torch::TensorOptions().device(cuda));
  CHECK(torch::equal(a, b));
  CHECK_FALSE(torch::equal(a, reseeded));
}

// Under AddressSanitizer or ThreadSanitizer the sanitizer's allocator replaces glibc's (its mallopt does nothing
// and returns 0), so the test is for the plain builds.
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define IAT_TEST_SANITIZED_MALLOC 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define IAT_TEST_SANITIZED_MALLOC 1
#endif

#if defined(__GLIBC__) && !defined(IAT_TEST_SANITIZED_MALLOC)
namespace {
// Allocates `bytes`, writes them, and tells how glibc served them: the growth of its mmapped bytes and
// of its heap, measured while the block is alive.
struct Served {
  std::size_t mmapped, heap_growth, heap_after_free;
};
Served serve(std::size_t bytes) {
  const struct mallinfo2 before = mallinfo2();
  auto* p = static_cast<char*>(std::malloc(bytes));
  REQUIRE(p != nullptr);
  std::memset(p, 1, bytes);
  asm volatile("" : : "r"(p) : "memory");  // the block is used: the compiler may not drop the pair
  const struct mallinfo2 during = mallinfo2();
  std::free(p);
  const struct mallinfo2 after = mallinfo2();
  return {during.hblkhd - before.hblkhd, during.arena - before.arena, after.arena};
}
}  // namespace

TEST_CASE("keep_freed_memory serves blocks below its threshold from the heap and keeps them when freed",
          "[train][allocator]") {
  REQUIRE(iat::keep_freed_memory());
  // 48 MiB: above glibc's largest dynamic threshold (32 MiB), so without the setting it would be mmapped.
  const std::size_t block = std::size_t{48} << 20;
  const Served mid = serve(block);
  CHECK(mid.mmapped == 0);
  CHECK(mid.heap_growth >= block);
  CHECK(mid.heap_after_free >= block);  // not trimmed back to the kernel (trim threshold 256 MiB)
  // Above the 64 MiB threshold a block is still a mapping of its own.
  const Served big = serve(std::size_t{80} << 20);
  CHECK(big.mmapped >= (std::size_t{80} << 20));
}
#endif
