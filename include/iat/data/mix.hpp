#pragma once
/// \file
/// iat::data::MixedLoader: batches mixing original and generated data at a fixed ratio (docs/method.md §8.2: 0.3
/// original : 0.7 generated for CIFAR-10 with the 1M DDPM images, 0.4 for CIFAR-100), with epochs counted
/// in original-dataset-size units, as the codebases of Gowal et al. 2021 and Wang et al. 2023 count them.

#include <iat/data/loader.hpp>

#include <cmath>
#include <memory>

namespace iat {
namespace data {

namespace detail {

/// Positions [start, start + k) of an endless stream that visits 0..n−1 in a fresh order per pass
/// (pass p's order seeded by (seed, tag, p); identity order without shuffle), as indices in [0, n).
class EndlessStream {
 public:
  EndlessStream(int64_t n, bool shuffle, uint64_t seed, uint64_t tag) : n_(n), shuffle_(shuffle), seed_(seed), tag_(tag) {}

  torch::Tensor take(int64_t start, int64_t k) {
    std::vector<torch::Tensor> parts;
    while (k > 0) {
      const int64_t pass = start / n_;
      const int64_t at = start % n_;
      const int64_t m = std::min(k, n_ - at);
      parts.push_back(order(pass).slice(0, at, at + m));
      start += m;
      k -= m;
    }
    if (parts.empty()) return torch::empty({0}, torch::kLong);
    return parts.size() == 1 ? parts[0] : torch::cat(parts);
  }

 private:
  const torch::Tensor& order(int64_t pass) {
    if (pass != pass_ || !order_.defined()) {
      pass_ = pass;
      order_ = shuffle_ ? torch::randperm(n_, iat::detail::cpu_generator(iat::detail::mix_seed(seed_, tag_,
                                                                                                  static_cast<uint64_t>(pass))),
                                          torch::kLong)
                        : torch::arange(n_, torch::kLong);
    }
    return order_;
  }
  int64_t n_;
  bool shuffle_;
  uint64_t seed_, tag_;
  int64_t pass_ = -1;
  torch::Tensor order_;
};

}  // namespace detail

/// Batches of `round(original_fraction · batch_size)` original examples followed by generated ones (0.3
/// means 3 original for every 7 generated). An epoch has as many batches as the original dataset alone
/// would give (⌈N_orig / B⌉, or ⌊N_orig / B⌋ with drop_last), so "400 epochs" means 400 original-dataset
/// sizes of examples seen. Each source is read as an endless stream of shuffled passes, so every original
/// and every generated image is used equally often over time; epoch e's batches depend on (seed, e) only.
/// `index` of a generated example is N_orig + its position in the generated set, so one per-example store
/// of size index_range() covers both. All of Loader's options (augmentation, device, prefetch) apply; with
/// num_shards = W, an epoch has ⌈N_orig / (W·B)⌉ batches per shard and the W shards take consecutive,
/// disjoint parts of both streams.
///
/// **Example**
/// \code
/// auto c10 = iat::data::read_cifar10("data", iat::data::Split::kTrain);
/// auto ddpm = iat::data::read_npz("data/1m.npz");
/// iat::data::MixedLoader loader(c10, ddpm, 0.3, iat::data::LoaderOptions().batch_size(512).augment(true));
/// // loader.size() == 98 batches of 154 CIFAR-10 + 358 generated images;
/// // 400 passes = the 400 epochs of docs/method.md §8.2
/// for (auto& batch : loader) train_step(batch.x, batch.y, batch.index);
/// \endcode
///
/// Errors: a fraction outside [0, 1], datasets with different image shapes or class counts, and
/// Loader's option errors.
class MixedLoader : public Loader {
 public:
  MixedLoader(Dataset original, Dataset generated, double original_fraction, LoaderOptions options = {})
      : Loader(std::move(options), std::move(original)), generated_(std::move(generated)), fraction_(original_fraction) {
    const char* who = "iat::data::MixedLoader";
    data_.check(who);
    generated_.check(who);
    check_options(who);
    TORCH_CHECK_VALUE(std::isfinite(fraction_) && fraction_ >= 0 && fraction_ <= 1, who,
                      ": original_fraction must be in [0, 1], got ", fraction_);
    TORCH_CHECK_VALUE(data_.images.sizes().slice(1) == generated_.images.sizes().slice(1), who,
                      ": original and generated images must have the same shape, got ", data_.images.sizes().slice(1),
                      " and ", generated_.images.sizes().slice(1));
    TORCH_CHECK_VALUE(data_.num_classes == generated_.num_classes, who, ": original and generated datasets must have the",
                      " same number of classes, got ", data_.num_classes, " and ", generated_.num_classes);
    const int64_t bs = options_.batch_size();
    const int64_t n_orig = data_.size();
    const int64_t n_gen = generated_.size();
    per_batch_original_ = static_cast<int64_t>(std::llround(fraction_ * static_cast<double>(bs)));
    index_range_ = n_orig + n_gen;
    // With data-parallel shards, one step consumes num_shards batches (one per shard).
    const int64_t shards = options_.num_shards();
    const int64_t shard = options_.shard();
    const int64_t global_batch = bs * shards;
    num_batches_ = options_.drop_last() ? n_orig / global_batch : (n_orig + global_batch - 1) / global_batch;
    TORCH_CHECK_VALUE(num_batches_ > 0, who, ": drop_last with batch_size ", bs, " x ", shards,
                      " shards > the original dataset's ", n_orig, " examples leaves no batch");
    sources_.push_back(detail::Source{data_.images, data_.labels, 0});
    sources_.push_back(detail::Source{generated_.images, generated_.labels, n_orig});
    stage_sources();
    const int64_t k_orig = per_batch_original_;
    const int64_t k_gen = bs - k_orig;
    const int64_t batches = num_batches_;
    const bool shuffle = options_.shuffle();
    const uint64_t seed = options_.seed();
    make_plan_ = [=](int64_t epoch) -> detail::PassPlan {
      auto orig = std::make_shared<detail::EndlessStream>(n_orig, shuffle, seed, detail::kMixOriginalStream);
      auto gen = std::make_shared<detail::EndlessStream>(n_gen, shuffle, seed, detail::kMixGeneratedStream);
      return [=](int64_t b) -> std::vector<torch::Tensor> {
        const int64_t step = epoch * batches + b;  // batches since the start of training
        return {orig->take((step * shards + shard) * k_orig, k_orig), gen->take((step * shards + shard) * k_gen, k_gen)};
      };
    };
  }

  /// The generated dataset.
  const Dataset& generated() const { return generated_; }
  /// The fraction of original examples per batch.
  double original_fraction() const { return fraction_; }
  /// Original examples per batch, round(original_fraction · batch_size); the rest are generated.
  int64_t original_per_batch() const { return per_batch_original_; }

 private:
  Dataset generated_;
  double fraction_;
  int64_t per_batch_original_ = 0;
};

}  // namespace data
}  // namespace iat
