#pragma once
/// \file
/// iat::distributed::DataParallel: data-parallel training over a c10d process group, as PyTorch's DDP
/// does it — parameters and buffers from rank 0 at start, buffers (batch-norm statistics) from rank 0 at
/// each step's start, gradients averaged in ~25 MB buckets launched from autograd hooks during backward —
/// plus what the method needs: the global batch sliced per rank, random draws made for the global batch,
/// UIAT's per-class sums and the one-off cache's rows shared by all ranks (docs/distributed.md).

#include <iat/detail/batch_draw.hpp>
#include <iat/distributed/process_group.hpp>
#include <iat/inverse/one_off_cache.hpp>
#include <iat/inverse/universal_perturbation.hpp>
#include <iat/train/awp.hpp>

#include <torch/arg.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <utility>
#include <vector>

namespace iat {
namespace distributed {

/// Which examples of a global batch one rank takes: [begin, end).
struct BatchSlice {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};

/// Rank `rank`'s contiguous share of a global batch of `global_batch` examples. The world size must divide
/// the global batch (each rank then averages over the same count, so averaged gradients are the global
/// batch's mean); otherwise throws naming the batch size.
///
/// **Example**
/// \code
/// auto s = iat::distributed::slice_of_batch(128, /*rank=*/1, /*world_size=*/2);   // [64, 128)
/// \endcode
inline BatchSlice slice_of_batch(int64_t global_batch, int rank, int world_size) {
  TORCH_CHECK_VALUE(world_size >= 1 && rank >= 0 && rank < world_size, "iat::distributed::slice_of_batch: rank ",
                    rank, " is not in [0, world_size = ", world_size, ")");
  TORCH_CHECK_VALUE(global_batch >= world_size && global_batch % world_size == 0,
                    "iat::distributed: the batch size (", global_batch, ", the global batch) must be a multiple of the ",
                    "world size (", world_size, "); each rank takes batch size / world size examples");
  const int64_t share = global_batch / world_size;
  return {rank * share, (rank + 1) * share};
}

/// Options of iat::distributed::DataParallel. Defaults as PyTorch's DDP: 25 MB buckets, buffers broadcast
/// from rank 0 at each step's start, gradient communication overlapped with the backward pass.
///
/// **Example**
/// \code
/// auto o = iat::distributed::DataParallelOptions().bucket_mb(50).overlap(false);
/// \endcode
struct DataParallelOptions {
  /// Bucket capacity in MB (10⁶ bytes): gradients are all-reduced in groups of about this size.
  TORCH_ARG(double, bucket_mb) = 25.0;
  /// Launch each bucket's all-reduce from autograd hooks as soon as its gradients are ready, during the
  /// backward pass (false: all of them in synchronize_gradients()).
  TORCH_ARG(bool, overlap) = true;
  /// begin_step() broadcasts the module's buffers (batch-norm running statistics) from rank 0.
  TORCH_ARG(bool, broadcast_buffers) = true;
};

namespace detail {

// Tensors grouped by dtype and device, each group sent as one flat tensor: c10d's vector arguments mean
// "one tensor per device of this process", not a list of tensors to reduce.
inline std::vector<std::vector<torch::Tensor>> group_by_type(const std::vector<torch::Tensor>& tensors) {
  std::vector<std::vector<torch::Tensor>> groups;
  std::vector<std::pair<c10::ScalarType, c10::Device>> keys;
  for (const auto& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    std::pair<c10::ScalarType, c10::Device> key{t.scalar_type(), t.device()};
    size_t g = 0;
    while (g < keys.size() && keys[g] != key) ++g;
    if (g == keys.size()) {
      keys.push_back(key);
      groups.emplace_back();
    }
    groups[g].push_back(t);
  }
  return groups;
}

// The tensors one after the other in one 1-D tensor: written into `out` when it is given (a buffer of the
// right size, reused from step to step), a new tensor otherwise.
inline torch::Tensor flatten(const std::vector<torch::Tensor>& tensors, torch::Tensor out = {}) {
  std::vector<torch::Tensor> flat;
  flat.reserve(tensors.size());
  for (const auto& t : tensors) flat.push_back(t.reshape(-1));
  if (out.defined()) return torch::cat_out(out, flat);
  return torch::cat(flat);
}

inline void unflatten_into(const torch::Tensor& flat, const std::vector<torch::Tensor>& tensors) {
  int64_t offset = 0;
  for (const auto& t : tensors) {
    t.copy_(flat.narrow(0, offset, t.numel()).view_as(t));
    offset += t.numel();
  }
}

// An autograd post hook: runs `ready` after a parameter's gradient accumulator has written .grad.
struct GradReadyHook : torch::autograd::FunctionPostHook {
  explicit GradReadyHook(std::function<void()> ready) : ready_(std::move(ready)) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    ready_();
    return outputs;
  }
  std::function<void()> ready_;
};

}  // namespace detail

/// Overwrites every tensor with rank `root`'s values (grouped by dtype, one broadcast per group).
inline void broadcast_coalesced(const ProcessGroupPtr& pg, const std::vector<torch::Tensor>& tensors, int root = 0) {
  torch::NoGradGuard no_grad;
  for (const auto& group : detail::group_by_type(tensors)) {
    auto flat = detail::flatten(group);
    broadcast(pg, flat, root);
    detail::unflatten_into(flat, group);
  }
}

/// Sums every tensor over the ranks in place (grouped by dtype, one all-reduce per group).
inline void all_reduce_sum_coalesced(const ProcessGroupPtr& pg, const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  for (const auto& group : detail::group_by_type(tensors)) {
    auto flat = detail::flatten(group);
    all_reduce_sum(pg, flat);
    detail::unflatten_into(flat, group);
  }
}

/// The data-parallel hook of iat::UniversalInversePerturbation: sums the per-class gradients and counts
/// over the ranks before the sign step, so that δ_y and its momentum stay identical on every rank.
///
/// **Example**
/// \code
/// uip->set_gradient_reducer(iat::distributed::uiat_gradient_reducer(pg));
/// \endcode
inline UniversalInversePerturbationImpl::GradientReducer uiat_gradient_reducer(ProcessGroupPtr pg) {
  return [pg](torch::Tensor& class_grad, torch::Tensor& class_count) {
    all_reduce_sum(pg, class_grad);
    all_reduce_sum(pg, class_count);
  };
}

/// The data-parallel hook of iat::train::AWP: averages the ascent gradients over the ranks before the weight
/// perturbation v is formed, so that v is identical on every rank and equal to one process's at the global
/// batch.
///
/// **Example**
/// \code
/// awp.set_gradient_reducer(iat::distributed::awp_gradient_reducer(pg));
/// \endcode
inline train::AWP::GradientReducer awp_gradient_reducer(ProcessGroupPtr pg) {
  return [pg](std::vector<torch::Tensor>& grads) {
    all_reduce_sum_coalesced(pg, grads);
    const double ranks = static_cast<double>(pg->getSize());
    for (auto& g : grads) g.div_(ranks);
  };
}

/// Gives every rank the one-off cache rows that the others wrote: each rank passes the dataset positions it
/// stored since the last call (e.g. the indices of its slices during epoch T'); every rank ends with all of
/// them. Call it on every rank at the same point, before the rows are read (at the end of the epoch).
///
/// **Example**
/// \code
/// std::vector<torch::Tensor> written;                       // during epoch T': written.push_back(index_local)
/// iat::distributed::share_cache_rows(pg, cache, torch::cat(written));
/// \endcode
inline void share_cache_rows(const ProcessGroupPtr& pg, OneOffCache& cache, const torch::Tensor& written_index) {
  const char* who = "iat::distributed::share_cache_rows";
  TORCH_CHECK_VALUE(written_index.defined() && written_index.dim() == 1, who,
                    ": written_index must be a one-dimensional tensor of dataset positions");
  torch::NoGradGuard no_grad;
  const auto& probs = cache->probabilities();
  auto index = written_index.to(probs.device(), torch::kLong);
  // Ranks may have written different numbers of rows: gather the counts, then rows padded to the largest.
  auto counts = all_gather(pg, torch::full({1}, index.numel(), torch::dtype(torch::kLong).device(probs.device())));
  int64_t most = 0;
  for (const auto& c : counts) most = std::max(most, c.item<int64_t>());
  if (most == 0) return;
  auto padded_index = torch::zeros({most}, index.options());
  auto padded_rows = torch::zeros({most, probs.size(1)}, torch::dtype(torch::kFloat).device(probs.device()));
  if (index.numel() > 0) {
    padded_index.narrow(0, 0, index.numel()).copy_(index);
    // The stored values themselves (float32 holds 16-bit ones exactly), so that every rank's copy is the same.
    padded_rows.narrow(0, 0, index.numel()).copy_(probs.index_select(0, index));
  }
  auto all_index = all_gather(pg, padded_index);
  auto all_rows = all_gather(pg, padded_rows);
  for (size_t r = 0; r < counts.size(); ++r) {
    const int64_t n = counts[r].item<int64_t>();
    if (n == 0 || static_cast<int>(r) == pg->getRank()) continue;
    cache->copy_stored_rows(all_index[r].narrow(0, 0, n), all_rows[r].narrow(0, 0, n));
  }
}

/// Makes the batch-shaped random draws of a training step — PGD's, FGSM's and N-FGSM's starts and noise,
/// TRADES' Gaussian start, the inverse attack's start (IAT, the one-off method's epoch T'), GradAlign's
/// noise, any number of them — this rank's slice of the draws one process would make for the global batch.
/// While the scope lives, each such draw is made for the global batch (world_size times the rank's rows,
/// the shape one process draws) and the rank keeps its rows, so every rank's generator ends where one
/// process's would, on any device. All ranks must share one generator seed and hold equal slices
/// (slice_of_batch). Only draws made by iat's components are sliced (they go through
/// iat::detail::draw_for_batch); a draw of your own inside the scope is this rank's own. Scope the
/// training step, not evaluation (sharded evaluation seeds each batch itself). The cost: drawing the
/// other ranks' numbers too (a few ms per million).
///
/// **Example**
/// \code
/// {
///   iat::distributed::GlobalDrawSlice slice(env.rank, env.world_size);
///   auto step = iat::train::iat_loss(net, x_local, y_local, pgd, inverse, align);   // both starts sliced
/// }
/// \endcode
class GlobalDrawSlice {
 public:
  GlobalDrawSlice(int rank, int world_size) : previous_(iat::detail::batch_draw_slice()) {
    TORCH_CHECK_VALUE(world_size >= 1 && rank >= 0 && rank < world_size, "iat::distributed::GlobalDrawSlice: rank ",
                      rank, " is not in [0, world_size = ", world_size, ")");
    iat::detail::batch_draw_slice() = {rank, world_size};
  }
  ~GlobalDrawSlice() { iat::detail::batch_draw_slice() = previous_; }
  GlobalDrawSlice(const GlobalDrawSlice&) = delete;
  GlobalDrawSlice& operator=(const GlobalDrawSlice&) = delete;

 private:
  iat::detail::BatchDrawSlice previous_;
};

/// Data parallelism for one module over a c10d process group (docs/distributed.md).
///
/// - Construction broadcasts the parameters and buffers from rank 0, so every rank starts identical.
/// - `begin_step()`, at the start of each step: broadcasts the buffers from rank 0 (PyTorch DDP's default
///   for batch-norm running statistics: rank 0's statistics win, the others' updates are overwritten).
/// - After `loss.backward()`, `synchronize_gradients()`: every parameter's .grad becomes the mean over the
///   ranks. With `overlap` the buckets' all-reduces start from autograd hooks while backward still runs;
///   buckets are sent in a fixed order (the reverse of the parameters', roughly the order gradients become
///   ready), so all ranks issue the same collectives in the same order.
///
/// Zero the gradients before each backward (`optimizer.zero_grad()`): a bucket sends .grad as it is.
/// One backward per synchronize_gradients(); a second one before it is refused.
///
/// **Example**
/// \code
/// auto env = iat::distributed::environment_from_torchrun();
/// auto pg = iat::distributed::init_process_group(env);
/// iat::distributed::DataParallel dp(pg, net.ptr());
/// for (auto& batch : loader) {                                  // the same global batches on every rank
///   auto s = iat::distributed::slice_of_batch(batch.x.size(0), dp.rank(), dp.world_size());
///   auto x = batch.x.slice(0, s.begin, s.end), y = batch.y.slice(0, s.begin, s.end);
///   dp.begin_step();
///   auto loss = iat::train::pgd_at_loss(net, x, y, pgd).loss;
///   opt.zero_grad();
///   loss.backward();
///   dp.synchronize_gradients();
///   opt.step();
/// }
/// \endcode
class DataParallel {
 public:
  DataParallel(ProcessGroupPtr pg, std::shared_ptr<torch::nn::Module> module, DataParallelOptions options = {})
      : pg_(std::move(pg)), module_(std::move(module)), options_(options) {
    const char* who = "iat::distributed::DataParallel";
    TORCH_CHECK_VALUE(pg_, who, ": the process group is null");
    TORCH_CHECK_VALUE(module_ != nullptr, who, ": the module is null");
    TORCH_CHECK_VALUE(options_.bucket_mb() > 0, who, ": bucket_mb must be positive, got ", options_.bucket_mb());
    for (const auto& p : module_->parameters()) {
      if (p.requires_grad()) params_.push_back(p);
    }
    buffers_ = module_->buffers();
    broadcast_parameters();
    make_buckets();
    if (options_.overlap()) install_hooks();
  }

  ~DataParallel() {
    for (size_t i = 0; i < hooks_.size(); ++i) accumulators_[i]->del_post_hook(hooks_[i]);
  }
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const { return pg_->getRank(); }
  int world_size() const { return pg_->getSize(); }
  const ProcessGroupPtr& process_group() const { return pg_; }
  /// The options, fixed at construction (the buckets and hooks are laid out then), so read-only: an
  /// accessor, not a field as on the attacks (docs/options.md).
  const DataParallelOptions& options() const { return options_; }

  /// Overwrites the parameters and buffers with rank 0's (done at construction; again e.g. after loading a
  /// checkpoint on rank 0 only).
  void broadcast_parameters() {
    // Every parameter, frozen ones (requires_grad false) too: only the gradient buckets leave them out.
    std::vector<torch::Tensor> all = module_->parameters();
    all.insert(all.end(), buffers_.begin(), buffers_.end());
    broadcast_coalesced(pg_, all, 0);
  }

  /// The start of a step: rank 0's buffers to every rank when `broadcast_buffers` (batch-norm statistics).
  void begin_step() {
    if (options_.broadcast_buffers()) broadcast_coalesced(pg_, buffers_, 0);
  }

  /// After backward: every parameter's gradient becomes its mean over the ranks. A gradient absent on this
  /// rank counts as zero where another rank has one (and is created); a parameter no rank's loss reached
  /// keeps no gradient, as in one process (an optimiser then skips it: no weight decay or momentum step)
  /// and as PyTorch's DDP leaves it. Waits for the buckets' all-reduces.
  void synchronize_gradients() {
    for (size_t b = 0; b < buckets_.size(); ++b) buckets_[b].ready = true;
    launch_ready_buckets();
    torch::NoGradGuard no_grad;
    const auto ranks = torch::scalar_tensor(static_cast<double>(world_size()), torch::kDouble);
    for (auto& bucket : buckets_) {
      bucket.work->wait();
      int64_t offset = 0;
      // The bucket's last elements count the ranks that had each gradient: read only where this rank had none.
      const int64_t grads_end = bucket.flat.numel() - static_cast<int64_t>(bucket.params.size());
      torch::Tensor had;
      for (size_t i : bucket.params) {
        if (!params_[i].grad().defined()) {
          had = bucket.flat.narrow(0, grads_end, static_cast<int64_t>(bucket.params.size())).to(torch::kCPU, torch::kDouble);
          break;
        }
      }
      for (size_t j = 0; j < bucket.params.size(); ++j) {
        auto& p = params_[bucket.params[j]];
        auto sum = bucket.flat.narrow(0, offset, p.numel()).view_as(p);
        offset += p.numel();
        if (!p.grad().defined()) {
          if (had[static_cast<int64_t>(j)].item<double>() == 0) continue;  // no rank's loss reached it
          p.mutable_grad() = torch::empty_like(p);
        }
        torch::div_out(p.mutable_grad(), sum, ranks);  // the mean, written straight into .grad
      }
      bucket.work.reset();
      bucket.ready = false;
      bucket.pending = bucket.params.size();
    }
    param_ready_.assign(params_.size(), false);
    next_bucket_ = 0;
  }

  /// How many buckets the gradients travel in.
  size_t num_buckets() const { return buckets_.size(); }
  /// The parameters' positions (in module->parameters() order, trainable ones) of each bucket.
  std::vector<std::vector<size_t>> bucket_layout() const {
    std::vector<std::vector<size_t>> out;
    for (const auto& b : buckets_) out.push_back(b.params);
    return out;
  }
  /// Bytes all-reduced per step: the size of every trainable parameter's gradient, and one element per
  /// parameter saying whether the rank had its gradient.
  int64_t gradient_bytes() const {
    int64_t bytes = 0;
    for (const auto& p : params_) bytes += (p.numel() + 1) * static_cast<int64_t>(p.element_size());
    return bytes;
  }
  /// How many buckets the autograd hooks launched during the last backward, before synchronize_gradients().
  size_t buckets_launched_in_backward() const { return launched_in_backward_; }

 private:
  struct Bucket {
    std::vector<size_t> params;
    size_t pending = 0;
    bool ready = false;
    torch::Tensor flat;
    c10::intrusive_ptr<c10d::Work> work;
  };

  // Reverse parameter order, split at the byte cap and wherever dtype or device changes.
  void make_buckets() {
    const double cap = options_.bucket_mb() * 1e6;
    param_bucket_.assign(params_.size(), 0);
    param_ready_.assign(params_.size(), false);
    double bytes = 0;
    for (size_t k = params_.size(); k-- > 0;) {
      const auto& p = params_[k];
      const double size = static_cast<double>(p.numel()) * static_cast<double>(p.element_size());
      bool fresh = buckets_.empty() || bytes + size > cap;
      if (!fresh) {
        const auto& first = params_[buckets_.back().params.front()];
        fresh = first.scalar_type() != p.scalar_type() || first.device() != p.device();
      }
      if (fresh) {
        buckets_.emplace_back();
        bytes = 0;
      }
      buckets_.back().params.push_back(k);
      buckets_.back().pending += 1;
      param_bucket_[k] = buckets_.size() - 1;
      bytes += size;
    }
  }

  void install_hooks() {
    for (size_t i = 0; i < params_.size(); ++i) {
      auto accumulator = torch::autograd::impl::grad_accumulator(params_[i]);
      TORCH_CHECK(accumulator, "iat::distributed::DataParallel: parameter ", i, " has no gradient accumulator");
      hooks_.push_back(accumulator->add_post_hook(std::make_unique<detail::GradReadyHook>([this, i] { on_ready(i); })));
      accumulators_.push_back(std::move(accumulator));
    }
  }

  void on_ready(size_t i) {
    auto& bucket = buckets_[param_bucket_[i]];
    TORCH_CHECK(!param_ready_[i], "iat::distributed::DataParallel: a second backward reached parameter ", i,
                " before synchronize_gradients(); call it after every backward (or use overlap(false) to "
                "accumulate gradients over several)");
    param_ready_[i] = true;
    if (--bucket.pending == 0) {
      bucket.ready = true;
      const size_t before = next_bucket_;
      launch_ready_buckets();
      launched_in_backward_ += next_bucket_ - before;
    }
  }

  // Buckets go out strictly in index order, so every rank issues the same sequence of collectives.
  void launch_ready_buckets() {
    if (next_bucket_ == 0) launched_in_backward_ = 0;
    torch::NoGradGuard no_grad;
    while (next_bucket_ < buckets_.size() && buckets_[next_bucket_].ready) {
      auto& bucket = buckets_[next_bucket_];
      std::vector<torch::Tensor> grads;
      std::vector<double> had;  // 1 per gradient this rank has: summed, how many ranks had it
      for (size_t i : bucket.params) {
        const auto& p = params_[i];
        grads.push_back(p.grad().defined() ? p.grad() : torch::zeros_like(p));
        had.push_back(p.grad().defined() ? 1.0 : 0.0);
      }
      const auto& first = params_[bucket.params.front()];
      grads.push_back(std::all_of(had.begin(), had.end(), [](double h) { return h == 1.0; })
                          ? torch::ones({static_cast<int64_t>(had.size())}, first.options())
                          : torch::tensor(had, torch::kDouble).to(first.options()));
      // The bucket's buffer is allocated at the first step and refilled; the sum is divided on the way back.
      bucket.flat = detail::flatten(grads, bucket.flat);
      std::vector<torch::Tensor> tensors{bucket.flat};
      c10d::AllreduceOptions o;
      o.reduceOp = c10d::ReduceOp::SUM;
      bucket.work = pg_->allreduce(tensors, o);
      ++next_bucket_;
    }
  }

  ProcessGroupPtr pg_;
  std::shared_ptr<torch::nn::Module> module_;
  DataParallelOptions options_;
  std::vector<torch::Tensor> params_;
  std::vector<torch::Tensor> buffers_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> param_bucket_;
  std::vector<bool> param_ready_;
  size_t next_bucket_ = 0;
  size_t launched_in_backward_ = 0;
  // The accumulators are held so that the hooks stay on them (a parameter only holds its accumulator weakly).
  std::vector<decltype(torch::autograd::impl::grad_accumulator(std::declval<const torch::Tensor&>()))> accumulators_;
  std::vector<uintptr_t> hooks_;
};

}  // namespace distributed
}  // namespace iat
