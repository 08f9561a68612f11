// Tests of iat::data's batching: Loader (order, reproducibility, resumption, prefetch), the batched
// crop/flip, MixedLoader's ratio and epoch accounting, and the background worker's error handling.

#include <iat/data/augment.hpp>
#include <iat/data/loader.hpp>
#include <iat/data/mix.hpp>

#include <torch/cuda.h>
#include <torch/types.h>

#include <atomic>
#include <stdexcept>
#include <vector>

// Last: torch's headers define glog's CHECK macro, which must not replace Catch's.
#include <catch2/catch.hpp>

using Catch::Contains;

namespace {

/// N images [C, H, W] whose every pixel is 1..255 (never 0, so that padding shows), labels i % classes.
iat::data::Dataset synthetic(int64_t n, int64_t classes = 10, int64_t c = 3, int64_t h = 8, int64_t w = 8,
                             int64_t salt = 0) {
  auto gen = iat::detail::cpu_generator(static_cast<uint64_t>(1234 + salt));
  iat::data::Dataset ds;
  ds.images = torch::randint(1, 256, {n, c, h, w}, gen, torch::kLong).to(torch::kByte);
  ds.labels = torch::arange(n, torch::kLong) % classes;
  ds.num_classes = classes;
  ds.name = "synthetic";
  return ds;
}

struct Pass {
  std::vector<torch::Tensor> x, y, index;
};

Pass run_pass(iat::data::Loader& loader) {
  Pass p;
  for (auto& b : loader) {
    p.x.push_back(b.x);
    p.y.push_back(b.y);
    p.index.push_back(b.index);
  }
  return p;
}

bool same_pass(const Pass& a, const Pass& b) {
  if (a.x.size() != b.x.size()) return false;
  for (size_t i = 0; i < a.x.size(); ++i) {
    if (!torch::equal(a.x[i], b.x[i]) || !torch::equal(a.y[i], b.y[i]) || !torch::equal(a.index[i], b.index[i])) {
      return false;
    }
  }
  return true;
}

/// Reference crop/flip of one image [C, H, W], written with plain loops.
torch::Tensor reference_crop_flip(const torch::Tensor& img, int64_t pad, int64_t oy, int64_t ox, bool flip) {
  const int64_t c = img.size(0), h = img.size(1), w = img.size(2);
  auto out = torch::zeros_like(img);
  auto src = img.accessor<uint8_t, 3>();
  auto dst = out.accessor<uint8_t, 3>();
  for (int64_t k = 0; k < c; ++k)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j) {
        const int64_t jj = flip ? w - 1 - j : j;
        const int64_t si = i + oy - pad, sj = jj + ox - pad;
        dst[k][i][j] = (si >= 0 && si < h && sj >= 0 && sj < w) ? src[k][si][sj] : 0;
      }
  return out;
}

}  // namespace

TEST_CASE("Loader without shuffle gives the dataset in order, as floats k/255", "[data][loader]") {
  auto ds = synthetic(50);
  for (int64_t prefetch : {0, 2}) {
    iat::data::Loader loader(ds, iat::data::LoaderOptions().batch_size(16).shuffle(false).prefetch(prefetch));
    REQUIRE(loader.size() == 4);
    CHECK(loader.index_range() == 50);
    auto p = run_pass(loader);
    REQUIRE(p.x.size() == 4);
    CHECK(p.x[3].size(0) == 2);  // the last, smaller batch
    auto x = torch::cat(p.x);
    CHECK(x.scalar_type() == torch::kFloat);
    CHECK(torch::equal(torch::cat(p.index), torch::arange(50)));
    CHECK(torch::equal(torch::cat(p.y), ds.labels));
    CHECK(torch::equal(x, ds.images.to(torch::kFloat) / 255));
    CHECK_FALSE(x.requires_grad());
  }
  SECTION("drop_last and the next-style interface") {
    iat::data::Loader loader(ds, iat::data::LoaderOptions().batch_size(16).drop_last(true).prefetch(0));
    CHECK(loader.size() == 3);
    int64_t count = 0;
    while (auto b = loader.next()) {
      CHECK(b->x.size(0) == 16);
      ++count;
    }
    CHECK(count == 3);
    CHECK(loader.epoch() == 1);  // the next pass covers epoch 1
    CHECK(loader.next().has_value());
    CHECK(loader.epoch() == 1);
  }
}

TEST_CASE("Loader shuffles reproducibly: epoch e's order is a function of (seed, e)", "[data][loader]") {
  auto ds = synthetic(45);
  auto opts = iat::data::LoaderOptions().batch_size(8).seed(11).augment(true);
  iat::data::Loader a(ds, opts);
  iat::data::Loader b(ds, opts.prefetch(0));  // prefetch changes nothing
  auto a0 = run_pass(a), a1 = run_pass(a);
  auto b0 = run_pass(b), b1 = run_pass(b);
  CHECK(same_pass(a0, b0));
  CHECK(same_pass(a1, b1));
  CHECK_FALSE(same_pass(a0, a1));
  // Each epoch is a permutation of the dataset.
  CHECK(torch::equal(std::get<0>(torch::cat(a0.index).sort()), torch::arange(45)));
  CHECK(torch::equal(std::get<0>(torch::cat(a1.index).sort()), torch::arange(45)));
  CHECK(torch::equal(torch::cat(a1.index), a.epoch_order(1)));
  // Labels and images follow the indices.
  CHECK(torch::equal(torch::cat(a0.y), ds.labels.index_select(0, torch::cat(a0.index))));

  SECTION("set_epoch jumps straight to an epoch, and resumes mid-epoch") {
    iat::data::Loader c(ds, opts);
    c.set_epoch(1);
    CHECK(same_pass(run_pass(c), a1));
    c.set_epoch(1, 3);
    auto tail = run_pass(c);
    REQUIRE(tail.x.size() == a1.x.size() - 3);
    for (size_t i = 0; i < tail.x.size(); ++i) CHECK(torch::equal(tail.x[i], a1.x[i + 3]));
  }
  SECTION("another seed gives another order") {
    iat::data::Loader d(ds, opts.seed(12));
    CHECK_FALSE(torch::equal(torch::cat(run_pass(d).index), torch::cat(a0.index)));
  }
  SECTION("abandoning a pass midway (the worker is stopped and joined) and starting another") {
    iat::data::Loader e(ds, opts.prefetch(3));
    for (auto& batch : e) {
      CHECK(batch.x.size(0) == 8);
      break;
    }
    CHECK(e.epoch() == 0);
    auto next = run_pass(e);  // begin() starts the following epoch
    CHECK(same_pass(next, a1));
  }
}

TEST_CASE("Loader and MixedLoader shards split each epoch disjointly for data-parallel training", "[data][loader]") {
  auto ds = synthetic(23);
  auto opts = iat::data::LoaderOptions().batch_size(4).seed(8).num_shards(3);
  std::vector<torch::Tensor> parts;
  for (int64_t r = 0; r < 3; ++r) {
    iat::data::Loader shard(ds, opts.shard(r));
    CHECK(shard.size() == 2);  // ⌈23 / 3⌉ = 8 examples per shard, batches of 4
    auto p = run_pass(shard);
    parts.push_back(torch::cat(p.index));
    CHECK(parts.back().size(0) == 8);
  }
  // Together the shards cover the epoch's order, padded by wrapping around to 24 positions.
  iat::data::Loader whole(ds, iat::data::LoaderOptions().batch_size(4).seed(8));
  auto order = whole.epoch_order(0);
  auto padded = torch::cat({order, order.slice(0, 0, 1)});
  for (int64_t r = 0; r < 3; ++r) CHECK(torch::equal(parts[static_cast<size_t>(r)], padded.slice(0, r, 24, 3)));
  // drop_last cuts instead: 7 per shard, 21 distinct examples.
  std::vector<torch::Tensor> cut;
  for (int64_t r = 0; r < 3; ++r) {
    iat::data::Loader shard(ds, opts.shard(r).drop_last(true).batch_size(7));
    cut.push_back(shard.epoch_order(0));
  }
  CHECK(std::get<0>(at::_unique(torch::cat(cut))).size(0) == 21);
  // More than twice as many shards as examples: the order wraps around more than once (2 examples over 5
  // shards: 0 1 0 1 0 of the epoch's order), so no shard is left without one.
  auto two = synthetic(2);
  iat::data::Loader two_whole(two, iat::data::LoaderOptions().batch_size(1).seed(8));
  const auto two_order = two_whole.epoch_order(0);
  for (int64_t r = 0; r < 5; ++r) {
    INFO("shard " << r << " of 5 over 2 examples");
    iat::data::Loader shard(two, iat::data::LoaderOptions().batch_size(1).seed(8).num_shards(5).shard(r));
    auto p = run_pass(shard);
    REQUIRE(p.index.size() == 1);
    CHECK(torch::equal(p.index[0], two_order.slice(0, r % 2, r % 2 + 1)));
  }

  auto orig = synthetic(30, 10, 3, 8, 8, 1);
  auto gen = synthetic(70, 10, 3, 8, 8, 2);
  std::vector<torch::Tensor> mixed;
  for (int64_t r = 0; r < 2; ++r) {
    iat::data::MixedLoader shard(orig, gen, 0.3, iat::data::LoaderOptions().batch_size(5).num_shards(2).shard(r));
    CHECK(shard.size() == 3);  // ⌈30 / (2 · 5)⌉
    mixed.push_back(shard.epoch_order(0));
  }
  auto all = torch::cat(mixed);
  CHECK(std::get<0>(at::_unique(all)).size(0) == all.size(0));  // disjoint within the epoch
  REQUIRE_THROWS_WITH(iat::data::Loader(ds, opts.shard(3)), Contains("shard must be in [0, 3), got 3"));
}

TEST_CASE("crop_flip matches a per-image reference and random_crop_flip stays within its bounds", "[data][augment]") {
  auto ds = synthetic(20, 10, 2, 6, 7);
  const int64_t pad = 3;
  auto gen = iat::detail::cpu_generator(5);
  auto oy = torch::randint(0, 2 * pad + 1, {20}, gen, torch::kLong);
  auto ox = torch::randint(0, 2 * pad + 1, {20}, gen, torch::kLong);
  auto fl = torch::randint(0, 2, {20}, gen, torch::kLong).to(torch::kBool);
  auto out = iat::data::crop_flip(ds.images, pad, oy, ox, fl);
  for (int64_t i = 0; i < 20; ++i) {
    CHECK(torch::equal(out[i], reference_crop_flip(ds.images[i], pad, oy[i].item<int64_t>(), ox[i].item<int64_t>(),
                                                   fl[i].item<bool>())));
  }
  // Same on float batches.
  auto outf = iat::data::crop_flip(ds.images.to(torch::kFloat), pad, oy, ox, fl);
  CHECK(torch::equal(outf, out.to(torch::kFloat)));

  SECTION("every augmented image is one of the (2·pad+1)² × 2 crops, and several occur") {
    auto x = ds.images;
    auto y = iat::data::random_crop_flip(x, 4, true, iat::detail::cpu_generator(9));
    std::vector<int> seen(81 * 2, 0);
    for (int64_t i = 0; i < x.size(0); ++i) {
      int matches = 0;
      for (int64_t a = 0; a <= 8; ++a)
        for (int64_t b = 0; b <= 8; ++b)
          for (int f = 0; f < 2; ++f)
            if (torch::equal(y[i], reference_crop_flip(x[i], 4, a, b, f == 1))) {
              ++matches;
              ++seen[static_cast<size_t>((a * 9 + b) * 2 + f)];
            }
      CHECK(matches >= 1);
    }
    int distinct = 0;
    for (int s : seen) distinct += s > 0;
    CHECK(distinct >= 5);
  }
  SECTION("the loader's augmented batches are crops of the original images, values in [0, 1]") {
    iat::data::Loader loader(ds, iat::data::LoaderOptions().batch_size(7).augment(true).seed(3));
    int64_t flipped_or_shifted = 0;
    for (auto& b : loader) {
      CHECK(b.x.min().item<double>() >= 0.0);
      CHECK(b.x.max().item<double>() <= 1.0);
      auto orig = ds.images.index_select(0, b.index).to(torch::kFloat) / 255;
      for (int64_t i = 0; i < b.x.size(0); ++i) {
        // The visible part keeps original values: every nonzero value of the crop occurs in the original.
        auto vals = b.x[i].flatten();
        auto nz = vals.masked_select(vals > 0);
        CHECK(torch::isin(nz, orig[i].flatten()).all().item<bool>());
        flipped_or_shifted += !torch::equal(b.x[i], orig[i]);
      }
    }
    CHECK(flipped_or_shifted > 10);
  }
  SECTION("argument errors") {
    REQUIRE_THROWS_WITH(iat::data::crop_flip(ds.images, 2, oy, ox, fl), Contains("offsets must be in [0, 4]"));
    REQUIRE_THROWS_WITH(iat::data::crop_flip(ds.images[0], 2, oy, ox, fl), Contains("[B, C, H, W]"));
    REQUIRE_THROWS_WITH(iat::data::crop_flip(ds.images, pad, oy.slice(0, 0, 3), ox, fl), Contains("B = 20"));
  }
}

TEST_CASE("MixedLoader: original:generated ratio per batch, epochs in original-size units", "[data][loader][mix]") {
  auto orig = synthetic(30, 10, 3, 8, 8, 1);
  auto gen = synthetic(70, 10, 3, 8, 8, 2);
  iat::data::MixedLoader loader(orig, gen, 0.3, iat::data::LoaderOptions().batch_size(10).seed(4));
  CHECK(loader.size() == 3);  // ⌈30 / 10⌉
  CHECK(loader.original_per_batch() == 3);
  CHECK(loader.index_range() == 100);

  std::vector<int64_t> count(100, 0);
  for (int epoch = 0; epoch < 10; ++epoch) {
    for (auto& b : loader) {
      REQUIRE(b.x.size(0) == 10);
      auto idx = b.index;
      CHECK((idx.slice(0, 0, 3) < 30).all().item<bool>());
      CHECK((idx.slice(0, 3) >= 30).all().item<bool>());
      // Each example comes from the right dataset.
      auto from_orig = orig.images.index_select(0, idx.slice(0, 0, 3)).to(torch::kFloat) / 255;
      auto from_gen = gen.images.index_select(0, idx.slice(0, 3) - 30).to(torch::kFloat) / 255;
      CHECK(torch::equal(b.x, torch::cat({from_orig, from_gen})));
      CHECK(torch::equal(b.y, torch::cat({orig.labels.index_select(0, idx.slice(0, 0, 3)),
                                          gen.labels.index_select(0, idx.slice(0, 3) - 30)})));
      for (int64_t i : std::vector<int64_t>(idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + idx.numel())) ++count[static_cast<size_t>(i)];
    }
  }
  // 10 epochs × 3 batches × 3 = 90 originals (3 passes over 30), × 7 = 210 generated (3 passes over 70).
  for (int64_t i = 0; i < 100; ++i) CHECK(count[static_cast<size_t>(i)] == 3);

  SECTION("reproducible by (seed, epoch)") {
    iat::data::MixedLoader again(orig, gen, 0.3, iat::data::LoaderOptions().batch_size(10).seed(4).prefetch(0));
    again.set_epoch(7);
    loader.set_epoch(7);
    CHECK(same_pass(run_pass(again), run_pass(loader)));
    CHECK(torch::equal(again.epoch_order(7), loader.epoch_order(7)));
  }
  SECTION("errors") {
    REQUIRE_THROWS_WITH(iat::data::MixedLoader(orig, gen, 1.5), Contains("original_fraction must be in [0, 1], got 1.5"));
    REQUIRE_THROWS_WITH(iat::data::MixedLoader(orig, synthetic(5, 10, 3, 9, 8), 0.3), Contains("same shape"));
    REQUIRE_THROWS_WITH(iat::data::MixedLoader(orig, synthetic(5, 100), 0.3), Contains("same number of classes"));
  }
}

TEST_CASE("Loader checks its dataset and options", "[data][loader]") {
  auto ds = synthetic(10);
  REQUIRE_THROWS_WITH(iat::data::Loader(ds, iat::data::LoaderOptions().batch_size(0)), Contains("batch_size must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(iat::data::Loader(ds, iat::data::LoaderOptions().batch_size(11).drop_last(true)),
                      Contains("leaves no batch"));
  REQUIRE_THROWS_WITH(iat::data::Loader(ds, iat::data::LoaderOptions().dtype(torch::kLong)), Contains("floating type"));
  auto bad = ds;
  bad.labels = ds.labels.clone();
  bad.labels[4] = 10;
  REQUIRE_THROWS_WITH(iat::data::Loader(bad), Contains("labels must be in [0, 10), got [0, 10]"));
  bad = ds;
  bad.images = ds.images.to(torch::kFloat);
  REQUIRE_THROWS_WITH(iat::data::Loader(bad), Contains("images must be uint8 [N, C, H, W]"));
  iat::data::Loader ok(ds);
  REQUIRE_THROWS_WITH(ok.set_epoch(-1), Contains("epoch must be >= 0"));
  REQUIRE_THROWS_WITH(ok.set_epoch(0, 5), Contains("start_batch must be in [0, 1]"));
  auto sub = ds.subset(torch::tensor({3, 1}, torch::kLong));
  CHECK(torch::equal(sub.labels, torch::tensor({3, 1}, torch::kLong)));
  CHECK(torch::equal(sub.images[0], ds.images[3]));
  REQUIRE_THROWS_WITH(ds.subset(torch::tensor({10}, torch::kLong)), Contains("indices must be in [0, 10)"));
}

TEST_CASE("the prefetch worker rethrows its errors in the consumer and is joined when abandoned", "[data][loader]") {
  SECTION("items produced before the error come first") {
    iat::detail::Prefetcher<int64_t> p(0, 10, 2, [](int64_t i) -> int64_t {
      if (i == 3) throw std::runtime_error("worker failed at 3");
      return i * i;
    });
    int64_t v = -1;
    for (int64_t i = 0; i < 3; ++i) {
      REQUIRE(p.next(&v));
      CHECK(v == i * i);
    }
    REQUIRE_THROWS_WITH(p.next(&v), Contains("worker failed at 3"));
    CHECK_FALSE(p.next(&v));
  }
  SECTION("destroyed while the worker waits on a full queue") {
    std::atomic<int64_t> produced{0};
    {
      iat::detail::Prefetcher<int64_t> p(0, 1000, 2, [&](int64_t i) {
        ++produced;
        return i;
      });
      int64_t v = 0;
      REQUIRE(p.next(&v));
    }
    CHECK(produced.load() <= 4);  // at most the queue's capacity ahead
  }
  SECTION("a Loader's worker error reaches the consumer") {
    auto ds = synthetic(10);
    if (torch::cuda::is_available()) {
      WARN("CUDA is available: the CPU-only failure used here does not happen; skipped");
      return;
    }
    // On a CPU-only LibTorch, moving a batch to CUDA fails inside the worker thread.
    iat::data::Loader loader(ds, iat::data::LoaderOptions().batch_size(4).device(torch::kCUDA));
    REQUIRE_THROWS_AS(loader.next(), c10::Error);
    REQUIRE_THROWS_AS(loader.next(), c10::Error);  // a new pass, the same failure: no hang, no crash
  }
}
