#pragma once
/// \file
/// iat::data::Loader: float batches {x, y, index} from an in-memory Dataset, shuffled reproducibly (epoch
/// e's order is a function of (seed, e) only), optionally augmented (random crop with zero padding and
/// horizontal flip, batched, on the target device), prefetched on a background thread.

#include <iat/data/augment.hpp>
#include <iat/data/dataset.hpp>
#include <iat/detail/compat.hpp>
#include <iat/data/detail/prefetch.hpp>

#include <torch/arg.h>
#include <torch/types.h>

#include <cstddef>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace iat {
namespace data {

/// One batch: `x` float [B, C, H, W] in [0, 1] on the loader's device, `y` int64 [B] labels and `index`
/// int64 [B] the examples' positions in the dataset (for per-example stores), both on the same device.
///
/// **Example**
/// \code
/// for (auto& batch : loader) {
///   auto logits = net(batch.x);
///   store.update(batch.index, torch::softmax(logits, 1));
/// }
/// \endcode
struct Batch {
  torch::Tensor x;
  torch::Tensor y;
  torch::Tensor index;
};

/// Options of iat::data::Loader. The defaults give the batch of 128 of docs/method.md §8.2, shuffled, without
/// augmentation; `.augment(true)` adds the CIFAR random crop (pad 4) and flip.
///
/// **Example**
/// \code
/// auto opts = iat::data::LoaderOptions().batch_size(128).augment(true).seed(1).device(torch::kCUDA);
/// auto eval = iat::data::LoaderOptions().batch_size(500).shuffle(false);
/// \endcode
struct LoaderOptions {
  /// Examples per batch.
  TORCH_ARG(int64_t, batch_size) = 128;
  /// Visit the examples in a new random order every epoch (epoch e's order depends on seed and e only).
  TORCH_ARG(bool, shuffle) = true;
  /// Seed of the order and of the augmentation draws; independent of torch's global generator.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Leave out the last, smaller batch of an epoch.
  TORCH_ARG(bool, drop_last) = false;
  /// Random crop from the image padded by `pad` zero pixels, then a horizontal flip with probability 1/2
  /// (when `flip`), per image, done on whole batches.
  TORCH_ARG(bool, augment) = false;
  /// Zero padding of the random crop, in pixels.
  TORCH_ARG(int64_t, pad) = 4;
  /// With augment: also flip horizontally (false: crop only).
  TORCH_ARG(bool, flip) = true;
  /// Where batches are delivered. Selection, crop and flip run on uint8 data; the crop and flip run on
  /// this device (for a GPU, the uint8 batch is copied from pinned memory first).
  TORCH_ARG(torch::Device, device) = torch::Device(torch::kCPU);
  /// Floating type of x.
  TORCH_ARG(torch::Dtype, dtype) = torch::kFloat;
  /// Batches prepared ahead by a background thread; 0 prepares each batch on the calling thread.
  TORCH_ARG(int64_t, prefetch) = 2;
  /// Copy the whole uint8 dataset to `device` once (CIFAR-10: 150 MB), so that batches are selected
  /// there and nothing crosses the bus per batch.
  TORCH_ARG(bool, data_on_device) = false;
  /// Data-parallel training: the number of processes (shards) each epoch is split over. All shards draw
  /// the same epoch order (same seed) and shard r takes its positions r, r + num_shards, … of it, so the
  /// shards of an epoch are disjoint and together cover the dataset (as torch's DistributedSampler).
  /// Without drop_last the order is padded by wrapping around so that every shard gets ⌈N / num_shards⌉
  /// examples; with drop_last it is cut to ⌊N / num_shards⌋ per shard. batch_size is per shard.
  TORCH_ARG(int64_t, num_shards) = 1;
  /// This process's shard, in [0, num_shards).
  TORCH_ARG(int64_t, shard) = 0;
};

namespace detail {

/// One dataset a loader draws from; its examples have indices offset … offset+N−1 in batches.
struct Source {
  torch::Tensor images;  // uint8 [N, C, H, W], on the CPU or (data_on_device) on the device
  torch::Tensor labels;  // int64 [N], same device as images
  int64_t offset = 0;
};

/// Positions (per source, local to it) of the examples of batch b of a pass.
using PassPlan = std::function<std::vector<torch::Tensor>(int64_t)>;

/// Turns local positions per source into a Batch: one index_select per source, transfer, crop/flip on
/// the device, one conversion to float.
inline Batch materialise(const std::vector<Source>& sources, const std::vector<torch::Tensor>& parts,
                         const LoaderOptions& o, uint64_t augment_seed) {
  std::vector<torch::Tensor> xs, ys, is;
  for (size_t s = 0; s < sources.size(); ++s) {
    const auto& idx = parts[s];
    if (!idx.defined() || idx.numel() == 0) continue;
    auto local = to_device(idx, sources[s].images.device());
    xs.push_back(sources[s].images.index_select(0, local));
    ys.push_back(sources[s].labels.index_select(0, local));
    is.push_back(idx + sources[s].offset);
  }
  auto x = xs.size() == 1 ? xs[0] : torch::cat(xs);
  auto y = ys.size() == 1 ? ys[0] : torch::cat(ys);
  auto index = is.size() == 1 ? is[0] : torch::cat(is);
  const auto& dev = o.device();
  x = to_device(x, dev);
  y = to_device(y, dev);
  index = to_device(index, dev);
  if (o.augment()) x = random_crop_flip(x, o.pad(), o.flip(), iat::detail::cpu_generator(augment_seed));
  x = x.to(o.dtype()).div_(255);
  return Batch{x, y, index};
}

/// Tags separating the random streams derived from one seed.
enum : uint64_t { kOrderStream = 1, kAugmentStream = 2, kMixOriginalStream = 3, kMixGeneratedStream = 4 };

}  // namespace detail

/// Batches over an in-memory Dataset for one epoch per pass: range-for (`for (auto& b : loader)`) or
/// `next()`. Each pass covers epoch `epoch()`, then the epoch advances by one; `set_epoch(e)` chooses the
/// next pass's epoch (and optionally a batch to resume from). Epoch e's order and augmentation depend
/// on (seed, e) alone: the same with or without prefetch, and after a restart.
///
/// A background thread prepares `prefetch` batches ahead; it is stopped and joined when the pass is
/// abandoned (set_epoch, a new begin()) or the loader is destroyed, and an exception it throws is
/// rethrown by the consuming call. One thread consumes a loader at a time.
///
/// **Example**
/// \code
/// auto train = iat::data::read_cifar10("data", iat::data::Split::kTrain);
/// iat::data::Loader loader(train, iat::data::LoaderOptions().augment(true).seed(7).device(device));
/// for (int64_t epoch = 0; epoch < 100; ++epoch) {
///   loader.set_epoch(epoch);                       // optional: passes advance on their own
///   for (auto& batch : loader) {
///     optimizer.zero_grad();
///     auto loss = torch::nn::functional::cross_entropy(net(batch.x), batch.y);
///     loss.backward();
///     optimizer.step();
///   }
/// }
/// \endcode
class Loader {
 public:
  /// An input iterator over one pass.
  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;
    using pointer = Batch*;
    using reference = Batch&;

    Iterator() = default;
    Batch& operator*() { return batch_; }
    Batch* operator->() { return &batch_; }
    Iterator& operator++() {
      fetch();
      return *this;
    }
    bool operator==(const Iterator& other) const { return loader_ == other.loader_; }
    bool operator!=(const Iterator& other) const { return !(*this == other); }

   private:
    friend class Loader;
    explicit Iterator(Loader* loader) : loader_(loader) { fetch(); }
    void fetch() {
      if (loader_ == nullptr) return;
      auto b = loader_->next();
      if (b) {
        batch_ = std::move(*b);
      } else {
        loader_ = nullptr;
        batch_ = Batch{};
      }
    }
    Loader* loader_ = nullptr;
    Batch batch_;
  };

  /// A loader over `data` (checked: uint8 [N, C, H, W] images, int64 labels in range, on the CPU).
  explicit Loader(Dataset data, LoaderOptions options = {}) : options_(std::move(options)), data_(std::move(data)) {
    const char* who = "iat::data::Loader";
    data_.check(who);
    check_options(who);
    index_range_ = data_.size();
    const int64_t n = data_.size();
    const int64_t bs = options_.batch_size();
    const int64_t shards = options_.num_shards();
    const int64_t shard = options_.shard();
    // Examples per shard and epoch: all of them, padded by wrapping (or cut with drop_last) to a multiple
    // of the shard count.
    const int64_t per_shard = options_.drop_last() ? n / shards : (n + shards - 1) / shards;
    num_batches_ = options_.drop_last() ? per_shard / bs : (per_shard + bs - 1) / bs;
    TORCH_CHECK_VALUE(num_batches_ > 0, who, ": drop_last with batch_size ", bs, " > the ", per_shard,
                      " examples per shard (dataset of ", n, " over ", shards, " shards) leaves no batch");
    sources_.push_back(detail::Source{data_.images, data_.labels, 0});
    stage_sources();
    const bool shuffle = options_.shuffle();
    const uint64_t seed = options_.seed();
    make_plan_ = [n, bs, shuffle, seed, shards, shard, per_shard](int64_t epoch) -> detail::PassPlan {
      auto order = shuffle ? torch::randperm(n, iat::detail::cpu_generator(iat::detail::mix_seed(
                                                    seed, detail::kOrderStream, static_cast<uint64_t>(epoch))),
                                             torch::kLong)
                           : torch::arange(n, torch::kLong);
      if (shards > 1) {
        const int64_t total = per_shard * shards;
        // Wrap around, as often as needed: more than twice as many shards as examples wraps more than once.
        if (total > n) order = order.repeat({(total + n - 1) / n}).slice(0, 0, total);
        order = order.slice(0, shard, total, shards).contiguous();
      }
      return [order, per_shard, bs](int64_t b) -> std::vector<torch::Tensor> {
        const int64_t start = b * bs;
        return {order.slice(0, start, std::min(per_shard, start + bs))};
      };
    };
  }

  Loader(Loader&&) = default;
  Loader& operator=(Loader&&) = default;
  virtual ~Loader() = default;

  /// Batches per pass (epoch).
  int64_t size() const { return num_batches_; }
  /// Range of `index` values: the dataset's size (for a MixedLoader, original + generated sizes).
  int64_t index_range() const { return index_range_; }
  /// The dataset.
  const Dataset& dataset() const { return data_; }
  /// The options, fixed at construction (the batches are planned then), so read-only: an accessor, not a
  /// field as on the attacks (docs/options.md).
  const LoaderOptions& options() const { return options_; }

  /// The epoch of the running pass, or of the next one when none runs.
  int64_t epoch() const { return running_ ? current_epoch_ : next_epoch_; }

  /// Makes the next pass cover epoch `epoch`, starting at batch `start_batch` (to resume mid-epoch);
  /// abandons a running pass.
  void set_epoch(int64_t epoch, int64_t start_batch = 0) {
    TORCH_CHECK_VALUE(epoch >= 0, "iat::data::Loader::set_epoch: epoch must be >= 0, got ", epoch);
    TORCH_CHECK_VALUE(start_batch >= 0 && start_batch <= num_batches_, "iat::data::Loader::set_epoch: start_batch must be in [0, ",
                      num_batches_, "], got ", start_batch);
    stop();
    next_epoch_ = epoch;
    next_start_ = start_batch;
  }

  /// The next batch of the running pass (starting a pass if none runs), or nothing at the pass's end (the
  /// following call starts the next epoch).
  iat::optional<Batch> next() {
    if (!running_) start();
    Batch b;
    bool got = false;
    try {
      if (prefetcher_) {
        got = prefetcher_->next(&b);
      } else if (cursor_ < num_batches_) {
        torch::NoGradGuard no_grad;
        b = produce_(cursor_++);
        got = true;
      }
    } catch (...) {
      stop();
      throw;
    }
    if (!got) {
      stop();
      return iat::nullopt;
    }
    return b;
  }

  /// Starts a pass over epoch epoch() (abandoning a running one) and returns its first batch.
  Iterator begin() {
    stop();
    return Iterator(this);
  }
  /// The end of a pass.
  Iterator end() { return Iterator(); }

  /// The order in which epoch `epoch` visits the examples: the `index` values of its batches, concatenated.
  torch::Tensor epoch_order(int64_t epoch) const {
    auto plan = make_plan_(epoch);
    std::vector<torch::Tensor> all;
    for (int64_t b = 0; b < num_batches_; ++b) {
      auto parts = plan(b);
      for (size_t s = 0; s < parts.size(); ++s) all.push_back(parts[s] + sources_[s].offset);
    }
    return torch::cat(all);
  }

 protected:
  /// For MixedLoader: the sources, index range, batches per pass and plan are set by the derived class.
  Loader(LoaderOptions options, Dataset data) : options_(std::move(options)), data_(std::move(data)) {}

  void check_options(const char* who) const {
    TORCH_CHECK_VALUE(options_.batch_size() >= 1, who, ": batch_size must be >= 1, got ", options_.batch_size());
    TORCH_CHECK_VALUE(options_.pad() >= 0, who, ": pad must be >= 0, got ", options_.pad());
    TORCH_CHECK_VALUE(options_.prefetch() >= 0, who, ": prefetch must be >= 0, got ", options_.prefetch());
    TORCH_CHECK_VALUE(options_.num_shards() >= 1, who, ": num_shards must be >= 1, got ", options_.num_shards());
    TORCH_CHECK_VALUE(options_.shard() >= 0 && options_.shard() < options_.num_shards(), who, ": shard must be in [0, ",
                      options_.num_shards(), "), got ", options_.shard());
    TORCH_CHECK_VALUE(torch::isFloatingType(options_.dtype()), who, ": dtype must be a floating type, got ",
                      options_.dtype());
  }

  /// Moves the sources to the device when data_on_device.
  void stage_sources() {
    if (!options_.data_on_device()) return;
    for (auto& s : sources_) {
      s.images = s.images.to(options_.device());
      s.labels = s.labels.to(options_.device());
    }
  }

  LoaderOptions options_;
  Dataset data_;
  std::vector<detail::Source> sources_;
  int64_t index_range_ = 0;
  int64_t num_batches_ = 0;
  std::function<detail::PassPlan(int64_t)> make_plan_;

 private:
  void start() {
    stop();
    current_epoch_ = next_epoch_;
    const int64_t first = next_start_;
    next_epoch_ = current_epoch_ + 1;
    next_start_ = 0;
    auto plan = make_plan_(current_epoch_);
    const auto sources = sources_;
    const auto opts = options_;
    const uint64_t seed = options_.seed();
    const int64_t epoch = current_epoch_;
    produce_ = [plan, sources, opts, seed, epoch](int64_t b) {
      const uint64_t aug = iat::detail::mix_seed(seed, detail::kAugmentStream, static_cast<uint64_t>(epoch),
                                                 static_cast<uint64_t>(b));
      return detail::materialise(sources, plan(b), opts, aug);
    };
    running_ = true;
    if (options_.prefetch() > 0) {
      prefetcher_ = std::make_unique<iat::detail::Prefetcher<Batch>>(first, num_batches_,
                                                                      static_cast<size_t>(options_.prefetch()), produce_);
    } else {
      cursor_ = first;
    }
  }

  void stop() {
    prefetcher_.reset();  // joins the worker
    running_ = false;
  }

  bool running_ = false;
  int64_t current_epoch_ = 0;
  int64_t next_epoch_ = 0;
  int64_t next_start_ = 0;
  int64_t cursor_ = 0;
  std::function<Batch(int64_t)> produce_;
  std::unique_ptr<iat::detail::Prefetcher<Batch>> prefetcher_;
};

}  // namespace data
}  // namespace iat
