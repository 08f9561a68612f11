#pragma once
/// \file
/// iat::OneOffCache: reference probabilities stored per training example, for the one-off strategy
/// (docs/method.md §5) and for the per-example EMA reading of inverse momentum (docs/method.md §4.3).

#include <iat/detail/checks.hpp>
#include <iat/detail/compiled.hpp>
#include <iat/inverse/alignment_loss.hpp>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <functional>
#include <ostream>

namespace iat {

/// Where the one-off strategy is in training (supplement equation (2)).
enum class OneOffPhase {
  kNatural,  ///< t < T': the reference is p(x)
  kInverse,  ///< t = T': the reference is p(x̃) of inverse examples generated now, and is stored
  kStored,   ///< t > T': the reference is the stored p(x̃) of epoch T'
};

/// Options of iat::OneOffCache. Required: the number of training examples N and of classes C.
/// Defaults: T' = 80 (of 100 epochs; 320 of 400), float32 storage.
///
/// **Example**
/// \code
/// auto c10 = iat::OneOffCacheOptions(50000, 10);                                      // CIFAR-10
/// auto ddpm = iat::OneOffCacheOptions(1050000, 100).one_off_epoch(320).dtype(torch::kHalf);  // 210 MB
/// \endcode
struct OneOffCacheOptions {
  OneOffCacheOptions(int64_t num_examples, int64_t num_classes)
      : num_examples_(num_examples), num_classes_(num_classes) {}

  /// N: the number of training examples; indices are positions in the training set, in [0, N).
  TORCH_ARG(int64_t, num_examples);
  /// C: the number of classes.
  TORCH_ARG(int64_t, num_classes);
  /// T', the one epoch in which inverse examples are generated, on the loop's own epoch counter.
  TORCH_ARG(int64_t, one_off_epoch) = 80;
  /// Storage type: torch::kFloat (4 bytes per value) or torch::kHalf (2 bytes; reads renormalise rows).
  TORCH_ARG(torch::Dtype, dtype) = torch::kFloat;
  /// Tolerance on row sums and negative entries of the probabilities passed to store() and ema().
  TORCH_ARG(double, probability_tolerance) = 1e-3;
};

/// A per-training-example store of reference probabilities, N×C values on any device.
///
/// **Memory**: N×C values of `dtype` plus N bytes of "stored" flags: CIFAR-10 50,000×10 float32 = 2 MB;
/// CIFAR-100 with 1M DDPM images 1,050,000×100 = 420 MB in float32, 210 MB with `dtype(torch::kHalf)`.
/// Both tensors are module buffers: they follow `.to(device)` (keep the cache on the CPU to spare GPU
/// memory, reads and writes move the rows), and `torch::save` / `torch::load` them with checkpoints.
///
/// The one-off policy (docs/method.md §5): `phase(epoch)` tells which reference applies; iat::train::one_off_loss
/// stores p(x̃) with store() at t = T' and reads it with read() after. The EMA policy (docs/method.md §4.3, the
/// kTargetEMA reading of inverse momentum) uses the same storage through ema().
///
/// **Example**
/// \code
/// iat::OneOffCache cache(iat::OneOffCacheOptions(50000, 10).one_off_epoch(80));
/// if (cache->phase(epoch) == iat::OneOffPhase::kInverse) cache->store(index, torch::softmax(net(x_inv), 1));
/// if (cache->phase(epoch) == iat::OneOffPhase::kStored) auto p_oo = cache->read(index);   // [B, C]
/// torch::save(cache, "cache.pt");
/// \endcode
class OneOffCacheImpl : public torch::nn::Cloneable<OneOffCacheImpl> {
 public:
  explicit OneOffCacheImpl(OneOffCacheOptions options_) : options(options_) { reset(); }

  /// Validates the options and creates empty storage on the CPU (run by the constructor and clone()).
  void reset() override;

  /// The reference in force at `epoch`: natural before T', inverse at T', stored after.
  OneOffPhase phase(int64_t epoch) const {
    if (epoch < options.one_off_epoch()) return OneOffPhase::kNatural;
    if (epoch == options.one_off_epoch()) return OneOffPhase::kInverse;
    return OneOffPhase::kStored;
  }

  /// Stores `probs` [B, C] (detached, converted to the storage type and device) at dataset positions
  /// `index` [B].
  void store(const torch::Tensor& index, const torch::Tensor& probs) {
    const char* who = "iat::OneOffCache::store";
    auto idx = checked_index(who, index);
    check_rows(who, probs, idx.size(0));
    put(idx, probs);
  }

  /// Writes rows as another cache of the same options holds them (rows of its probabilities(), in any
  /// floating dtype that holds them exactly) and marks them stored: how iat::distributed::share_cache_rows
  /// copies rows between ranks, bit for bit. Unlike store() the rows are not checked as probabilities:
  /// 16-bit rows sum to 1 only within their rounding (bfloat16: about 3e-3).
  void copy_stored_rows(const torch::Tensor& index, const torch::Tensor& rows) {
    const char* who = "iat::OneOffCache::copy_stored_rows";
    auto idx = checked_index(who, index);
    TORCH_CHECK_VALUE(rows.defined() && rows.dim() == 2 && rows.size(0) == idx.size(0) &&
                          rows.size(1) == options.num_classes(),
                      who, ": rows must have shape [", idx.size(0), ", ", options.num_classes(), "], got ",
                      rows.defined() ? rows.sizes() : c10::IntArrayRef{});
    put(idx, rows);
  }

  /// The stored probabilities of the examples at `index` [B], as float32 [B, C] on the cache's device.
  /// Throws if one of them has never been stored.
  torch::Tensor read(const torch::Tensor& index) const {
    const char* who = "iat::OneOffCache::read";
    auto idx = checked_index(who, index);
    check_all_stored(who, idx);
    return rows_at(idx);
  }

  /// Like read(), but the examples at `index` that have never been stored are stored first with
  /// `make(rows)`: `rows` (int64, on `index`'s device) are their positions within `index`, and `make`
  /// returns their probabilities [rows, C]. It runs only when some are missing. iat::train::one_off_loss
  /// makes the inverse examples of those T' never visited this way.
  torch::Tensor read_or_store(const torch::Tensor& index, const std::function<torch::Tensor(const torch::Tensor&)>& make) {
    auto idx = checked_index("iat::OneOffCache::read_or_store", index);
    auto missing = stored_.index_select(0, idx).logical_not();
    if (missing.any().item<bool>()) {
      auto rows = missing.nonzero().squeeze(1).to(index.device());
      store(index.index_select(0, rows), make(rows));
    }
    return rows_at(idx);
  }

  /// The EMA policy: for stored examples p̄ = γ·stored + (1 − γ)·probs, for the others p̄ = probs; stores
  /// p̄ (detached) and returns it, differentiable through `probs`, on `probs`' device.
  torch::Tensor ema(const torch::Tensor& index, const torch::Tensor& probs, double gamma) {
    const char* who = "iat::OneOffCache::ema";
    TORCH_CHECK_VALUE(gamma >= 0.0 && gamma < 1.0, who, ": gamma must be in [0, 1), got ", gamma);
    auto idx = checked_index(who, index);
    check_rows(who, probs, idx.size(0));
    torch::Tensor old, was_stored;
    {
      torch::NoGradGuard no_grad;
      old = rows_at(idx).to(probs.device(), probs.scalar_type());  // 16-bit rows renormalised, as read() gives them
      was_stored = stored_.index_select(0, idx).to(probs.device()).unsqueeze(1);
    }
    auto mixed = torch::where(was_stored, gamma * old + (1.0 - gamma) * probs, probs);
    store(index, mixed);
    return mixed;
  }

  /// Whether each example at `index` has stored probabilities ([B] bool on the cache's device).
  torch::Tensor is_stored(const torch::Tensor& index) const {
    return stored_.index_select(0, checked_index("iat::OneOffCache::is_stored", index));
  }
  /// How many examples have stored probabilities.
  int64_t num_stored() const { return stored_.sum().item<int64_t>(); }
  /// Forgets every stored row.
  void clear() {
    torch::NoGradGuard no_grad;
    probs_.zero_();
    stored_.fill_(false);
  }
  /// Bytes held: N×C×sizeof(dtype) + N.
  int64_t memory_bytes() const {
    return probs_.numel() * static_cast<int64_t>(probs_.element_size()) + stored_.numel();
  }
  /// The storage [N, C] (the buffer itself).
  const torch::Tensor& probabilities() const { return probs_; }

  /// Prints `iat::OneOffCache(num_examples=50000, num_classes=10, ...)`.
  void pretty_print(std::ostream& stream) const override;

  /// The options in force (change `one_off_epoch` freely; the others take effect at reset()).
  OneOffCacheOptions options;

 private:
  torch::Tensor checked_index(const char* who, const torch::Tensor& index) const {
    TORCH_CHECK_VALUE(index.defined(), who, ": index is an undefined tensor (batches must carry their dataset "
                                            "positions for the one-off strategy)");
    TORCH_CHECK_VALUE(index.scalar_type() == torch::kLong || index.scalar_type() == torch::kInt, who,
                      ": index must hold int64 (or int32) dataset positions, got ", index.scalar_type());
    TORCH_CHECK_VALUE(index.dim() == 1, who, ": index must be one-dimensional [B], got shape ", index.sizes());
    auto idx = index.to(probs_.device(), torch::kLong);
    if (idx.numel() > 0) {
      auto range = at::aminmax(idx);
      const int64_t lo = std::get<0>(range).item<int64_t>();
      const int64_t hi = std::get<1>(range).item<int64_t>();
      TORCH_CHECK_INDEX(lo >= 0 && hi < options.num_examples(), who, ": index out of range: the cache holds ",
                        options.num_examples(), " examples (valid positions [0, ", options.num_examples(),
                        ")), got positions in [", lo, ", ", hi, "]");
    }
    return idx;
  }

  void check_rows(const char* who, const torch::Tensor& probs, int64_t batch) const {
    TORCH_CHECK_VALUE(probs.defined() && probs.dim() == 2 && probs.size(0) == batch &&
                          probs.size(1) == options.num_classes(),
                      who, ": probs must have shape [", batch, ", ", options.num_classes(),
                      "] (one row per index), got ", probs.defined() ? probs.sizes() : c10::IntArrayRef{});
    detail::check_probabilities(who, probs, options.num_classes(), options.probability_tolerance());
  }

  void put(const torch::Tensor& idx, const torch::Tensor& rows) {
    torch::NoGradGuard no_grad;
    probs_.index_put_({idx}, rows.detach().to(probs_.device(), probs_.scalar_type()));
    stored_.index_put_({idx}, true);
  }

  // The stored rows at checked positions, as float32 [B, C].
  torch::Tensor rows_at(const torch::Tensor& idx) const {
    auto rows = probs_.index_select(0, idx).to(torch::kFloat);
    if (probs_.scalar_type() != torch::kFloat && probs_.scalar_type() != torch::kDouble) {
      rows = rows / rows.sum(1, true);  // undo the rounding of 16-bit storage
    }
    return rows;
  }

  void check_all_stored(const char* who, const torch::Tensor& idx) const {
    if (idx.numel() == 0) return;
    auto have = stored_.index_select(0, idx);
    if (have.all().item<bool>()) return;
    auto missing = idx.masked_select(have.logical_not());
    TORCH_CHECK_VALUE(false, who, ": read before anything was stored for ", missing.numel(), " of ", idx.numel(),
                      " examples (first: dataset position ", missing[0].item<int64_t>(), "); the one-off epoch T' = ",
                      options.one_off_epoch(), " stores every example it visits, ", num_stored(), " of ",
                      options.num_examples(), " are stored");
  }

  torch::Tensor probs_;
  torch::Tensor stored_;
};

/// A module holder for OneOffCacheImpl (see there).
TORCH_MODULE(OneOffCache);

#if IAT_HEADER_BODIES  // the entry points' bodies: inline here, or compiled once (iat/detail/compiled.hpp)

IAT_INLINE void OneOffCacheImpl::reset() {
  const char* who = "iat::OneOffCache";
  detail::check_at_least(who, "num_examples", options.num_examples(), 1);
  detail::check_at_least(who, "num_classes", options.num_classes(), 1);
  detail::check_at_least(who, "one_off_epoch", options.one_off_epoch(), 0);
  detail::check_positive(who, "probability_tolerance", options.probability_tolerance());
  TORCH_CHECK_VALUE(options.dtype() == torch::kFloat || options.dtype() == torch::kHalf ||
                        options.dtype() == torch::kDouble || options.dtype() == torch::kBFloat16,
                    who, ": dtype must be a floating type (kFloat, kHalf, kBFloat16 or kDouble), got ",
                    options.dtype());
  probs_ = register_buffer("probs", torch::zeros({options.num_examples(), options.num_classes()},
                                                 torch::TensorOptions().dtype(options.dtype())));
  stored_ = register_buffer("stored", torch::zeros({options.num_examples()}, torch::kBool));
}

IAT_INLINE void OneOffCacheImpl::pretty_print(std::ostream& stream) const {
  stream << "iat::OneOffCache(num_examples=" << options.num_examples() << ", num_classes=" << options.num_classes()
         << ", one_off_epoch=" << options.one_off_epoch() << ", dtype=" << options.dtype() << ")";
}
#endif  // IAT_HEADER_BODIES

}  // namespace iat
