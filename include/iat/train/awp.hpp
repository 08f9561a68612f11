#pragma once
/// \file
/// iat::train::AWP: adversarial weight perturbation (Wu, Xia & Wang, "Adversarial Weight Perturbation Helps
/// Robust Generalization", NeurIPS 2020), as a step around any training recipe (docs/awp.md, docs/method.md
/// §7.1). After the adversarial examples of a batch are found at the weights w, AWP takes one ascent step on
/// the recipe's loss in weight space, scales it layer by layer to γ·‖w_l‖, adds it to the weights, and the
/// loop computes its training loss at w + v, steps the optimiser and takes v away again:
///
///     auto x_adv = pgd.perturb(net, x, y);                       // at w
///     iat::train::FixedExamples adv(x_adv);                      // the recipe reuses x' instead of attacking
///     auto loss_at = [&](const iat::ModelRef& m) { return iat::train::pgd_at_loss(m, x, y, adv).loss; };
///     auto v = awp.perturb(net, loss_at, epoch);                 // w ← w + v (nothing before the warm-up ends)
///     auto step = iat::train::pgd_at_loss(net, x, y, adv);       // the training loss at w + v
///     optimizer.zero_grad(); step.loss.backward(); optimizer.step();
///     awp.restore(net, v);                                       // w ← w − v
///
/// The ascent runs on the model itself instead of on a copy ("proxy") of it; what the proxy's pass would
/// change is put back: the batch-norm running statistics (every buffer of the model) are restored after the
/// ascent's forward passes, and no parameter's `.grad` is touched. A recipe with state of its own (UIAT's δ
/// and momentum) is called inside the ascent loss on a scratch copy of that state (`scratch_copy`), so that
/// the state steps once per batch, in the training call.

#include <iat/attacks/attack.hpp>
#include <iat/detail/checks.hpp>
#include <iat/inverse/universal_perturbation.hpp>
#include <iat/model_ref.hpp>
#include <iat/options_field.hpp>

#include <torch/arg.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace iat {
namespace train {

/// Options of iat::train::AWP (docs/awp.md §3).
///
/// **Example**
/// \code
/// auto at_awp = iat::train::AWPOptions().gamma(1e-2).warmup_epochs(0);
/// \endcode
struct AWPOptions {
  /// γ: the size of each layer's perturbation relative to that layer's weight, ‖v_l‖ = γ·‖w_l‖ (Frobenius
  /// norms). 0 turns AWP off.
  TORCH_ARG(double, gamma) = 5e-3;
  /// Learning rate of the ascent step, d_l = proxy_lr·∇_{w_l} L (the proxy's plain SGD step). It cancels in
  /// v_l but for the 1e-20 guard in the denominator; kept so that the computation is the authors' one.
  TORCH_ARG(double, proxy_lr) = 0.01;
  /// Epochs without AWP at the start of training: perturb() does nothing in epochs 0 … warmup_epochs − 1
  /// (epochs counted from 0, docs/method.md §0).
  TORCH_ARG(int64_t, warmup_epochs) = 10;
};

/// The weight perturbation v of one batch, as AWP::perturb returns it: the perturbed parameters (the model's
/// own tensors) and v_l for each. Empty when AWP is not active in the epoch.
struct WeightPerturbation {
  std::vector<std::string> names;   ///< the parameters' names, as `named_parameters()` gives them
  std::vector<torch::Tensor> params;  ///< the model's parameters themselves (shared storage)
  std::vector<torch::Tensor> v;       ///< v_l, detached, one per entry of `params`
  bool applied = false;               ///< true between perturb() and restore()

  bool empty() const { return params.empty(); }
};

/// An attack that returns a batch found beforehand: lets a recipe run twice on the same x' (AWP's ascent
/// loss, then the training loss) without attacking twice. Refuses an input of another shape than the batch.
///
/// **Example**
/// \code
/// iat::train::FixedExamples adv(pgd.perturb(net, x, y));
/// auto step = iat::train::pgd_at_loss(net, x, y, adv);   // uses that x'
/// \endcode
class FixedExamples : public Attack {
 public:
  explicit FixedExamples(torch::Tensor x_adv) : x_adv_(x_adv.detach()) {}
  torch::Tensor perturb(const ModelRef& /*model*/, const torch::Tensor& x, const torch::Tensor& /*y*/) override {
    TORCH_CHECK_VALUE(x.sizes() == x_adv_.sizes(), "iat::train::FixedExamples: the batch has shape ", x.sizes(),
                      ", the stored examples ", x_adv_.sizes());
    return x_adv_;
  }
  std::string name() const override { return "FixedExamples"; }
  const torch::Tensor& examples() const { return x_adv_; }

 private:
  torch::Tensor x_adv_;
};

/// A copy of `uip` (δ, momentum buffers and options) whose steps leave `uip` as it is: UIAT's recipe inside
/// AWP's ascent loss steps this copy, and the training call steps `uip` once (docs/awp.md §4).
///
/// **Example**
/// \code
/// auto loss_at = [&](const iat::ModelRef& m) {
///   auto scratch = iat::train::scratch_copy(uip);
///   return iat::train::uiat_loss(m, x, y, adv, scratch, align).loss;
/// };
/// \endcode
inline UniversalInversePerturbation scratch_copy(const UniversalInversePerturbation& uip) {
  return UniversalInversePerturbation(std::dynamic_pointer_cast<UniversalInversePerturbationImpl>(uip->clone()));
}

/// Adversarial weight perturbation (docs/awp.md): for each weight w_l of a layer (parameters with two or more
/// dimensions whose name contains "weight": convolution and linear weights; biases and batch-norm affine
/// parameters are left alone, as the authors' code does),
///
///     d_l = proxy_lr · ∇_{w_l} L(w)              L: the ascent loss given, in train mode, at the current w
///     v_l = γ · ‖w_l‖ / (‖d_l‖ + 1e-20) · d_l
///
/// perturb() adds v to the weights and returns it; restore() subtracts it after the optimiser step. Before
/// `warmup_epochs` it does nothing (the ascent loss is not even evaluated) and returns an empty perturbation,
/// which restore() accepts, so the loop needs no `if`.
///
/// **Example** (TRADES-AWP; PGD-AT and UIAT in docs/awp.md §5)
/// \code
/// iat::train::AWP awp(iat::train::AWPOptions().gamma(5e-3).warmup_epochs(10));
/// iat::PGD trades_pgd(iat::train::trades_attack_options());
/// for (auto& [x, y] : batches) {
///   iat::train::FixedExamples adv(trades_pgd.perturb(net, x, y));
///   auto v = awp.perturb(net, [&](const iat::ModelRef& m) { return iat::train::trades_loss(m, x, y, adv).loss; },
///                        epoch);
///   auto step = iat::train::trades_loss(net, x, y, adv);
///   optimizer.zero_grad();
///   step.loss.backward();
///   optimizer.step();
///   awp.restore(net, v);
/// }
/// \endcode
class AWP {
 public:
  /// The ascent loss: a scalar computed from the model it is given (the same model, at the current weights).
  using LossFn = std::function<torch::Tensor(const ModelRef&)>;

  explicit AWP(AWPOptions o = {}) : options(std::move(o)) { check_options(); }

  /// The options (docs/options.md): `awp.options.gamma(0.005)`; checked at each perturb.
  OptionsField<AWPOptions> options;

  /// Data-parallel training: a hook called in perturb() with the ascent gradients ∇_{w_l} of the perturbed
  /// weights (in the model's parameter order; zeros for a weight the ascent loss does not reach), before v is
  /// formed from them. It must replace them by their mean over the ranks, as
  /// `iat::distributed::awp_gradient_reducer(pg)` does: each rank's ascent loss is the mean over its equal
  /// slice of the global batch, so the mean of the ranks' gradients is the global batch's, and v, like the
  /// weights, is the same on every rank and equal to one process's (docs/distributed.md).
  using GradientReducer = std::function<void(std::vector<torch::Tensor>& grads)>;

  /// Installs the hook (see GradientReducer); an empty function removes it.
  void set_gradient_reducer(GradientReducer reducer) { reducer_ = std::move(reducer); }

  /// True when perturb() perturbs in `epoch` (counted from 0): epoch ≥ warmup_epochs and γ > 0.
  bool active(int64_t epoch) const { return options.gamma() > 0.0 && epoch >= options.warmup_epochs(); }

  /// v at the current weights from `ascent_loss`, added to the weights (w ← w + v). `model` is a module
  /// holder (TORCH_MODULE), a std::shared_ptr to a module, or a torch::nn::Module. The loss runs in train
  /// mode (the mode is restored afterwards); the model's buffers (batch-norm running statistics) are put
  /// back as they were before it; parameters' `.grad` are not touched. Empty, with nothing evaluated, when
  /// not active(epoch).
  template <typename Net>
  WeightPerturbation perturb(Net& model, const LossFn& ascent_loss, int64_t epoch) {
    const char* who = "iat::train::AWP::perturb";
    check_options();
    if (!active(epoch)) return {};
    torch::nn::Module& module = module_of(model);
    WeightPerturbation out;
    for (const auto& item : module.named_parameters(/*recurse=*/true)) {
      const auto& p = item.value();
      if (p.dim() > 1 && p.requires_grad() && item.key().find("weight") != std::string::npos) {
        out.names.push_back(item.key());
        out.params.push_back(p);
      }
    }
    TORCH_CHECK_VALUE(!out.empty(), who, ": the model has no weight to perturb (a parameter with two or more ",
                      "dimensions whose name contains \"weight\" and that requires grad)");

    // The proxy's pass: train mode, buffers put back afterwards (the proxy's statistics are thrown away).
    std::vector<torch::Tensor> buffers, saved;
    for (auto& b : module.buffers(/*recurse=*/true)) {
      buffers.push_back(b);
      saved.push_back(b.detach().clone());
    }
    std::vector<torch::Tensor> grads;
    {
      ModelRef ref(model);
      ModeGuard train_mode(ref, true);
      at::AutoGradMode grad_mode(true);
      torch::Tensor loss = ascent_loss(ref);
      TORCH_CHECK_VALUE(loss.defined() && loss.numel() == 1, who, ": the ascent loss must be a scalar");
      TORCH_CHECK_VALUE(loss.requires_grad(), who,
                        ": the ascent loss does not depend on the model's parameters (computed without autograd?)");
      grads = torch::autograd::grad({loss.reshape({})}, out.params, /*grad_outputs=*/{}, /*retain_graph=*/false,
                                    /*create_graph=*/false, /*allow_unused=*/true);
    }
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(saved[i]);
    for (size_t i = 0; i < out.params.size(); ++i) {
      grads[i] = grads[i].defined() ? grads[i].detach() : torch::zeros_like(out.params[i]);
    }
    if (reducer_) reducer_(grads);
    for (size_t i = 0; i < out.params.size(); ++i) {
      const auto& w = out.params[i];
      auto d = options.proxy_lr() * grads[i];
      auto scale = options.gamma() * w.norm() / (d.norm() + kNormGuard);
      out.v.push_back(scale * d);
    }
    for (size_t i = 0; i < out.params.size(); ++i) out.params[i].add_(out.v[i]);
    out.applied = true;
    return out;
  }

  /// Takes v away again (w ← w − v), after the optimiser step; nothing for an empty or restored perturbation.
  template <typename Net>
  void restore(Net& /*model*/, WeightPerturbation& v) const {
    if (v.empty() || !v.applied) return;
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < v.params.size(); ++i) v.params[i].sub_(v.v[i]);
    v.applied = false;
  }

  /// The guard added to ‖d_l‖ (the authors' value).
  static constexpr double kNormGuard = 1e-20;

 private:
  template <typename Net>
  static torch::nn::Module& module_of(Net& model) {
    if constexpr (std::is_base_of_v<torch::nn::Module, Net>) {
      return model;
    } else {
      static_assert(std::is_base_of_v<torch::nn::Module, std::decay_t<decltype(*model)>>,
                    "iat::train::AWP: the model must be a torch::nn::Module, a module holder or a pointer to one");
      return *model;
    }
  }

  GradientReducer reducer_;

  void check_options() const {
    const char* who = "iat::train::AWP";
    iat::detail::check_non_negative(who, "gamma", options.gamma());
    iat::detail::check_positive(who, "proxy_lr", options.proxy_lr());
    iat::detail::check_at_least(who, "warmup_epochs", options.warmup_epochs(), 0);
  }
};

}  // namespace train
}  // namespace iat
