#pragma once
/// \file
/// iat::ModelRef: a non-owning view of "anything that maps a batch of inputs to logits".

#include <torch/nn/module.h>
#include <torch/types.h>

#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace iat {

/// Logits and penultimate features of one forward pass, as a feature-exposing model returns them.
struct LogitsAndFeatures {
  torch::Tensor logits;    ///< f(x), shape [N, num_classes]
  torch::Tensor features;  ///< φ(x), shape [N, D]: after global pooling, before the last linear layer
};

namespace detail {

template <typename T, typename = void>
struct HasTrainFlag : std::false_type {};
template <typename T>
struct HasTrainFlag<T, std::void_t<decltype(std::declval<T&>().is_training()),
                                   decltype(std::declval<T&>().train(true))>> : std::true_type {};

template <typename T, typename = void>
struct IsDereferenceable : std::false_type {};
template <typename T>
struct IsDereferenceable<T, std::void_t<decltype(*std::declval<T&>())>> : std::true_type {};

template <typename T, typename = void>
struct HasTensorForward : std::false_type {};
template <typename T>
struct HasTensorForward<T, std::void_t<decltype(std::declval<T&>().forward(std::declval<const torch::Tensor&>()))>>
    : std::true_type {};

template <typename T, typename = void>
struct HasForwardFeatures : std::false_type {};
template <typename T>
struct HasForwardFeatures<T, std::void_t<decltype(std::declval<T&>().forward_features(
                                 std::declval<const torch::Tensor&>()))>> : std::true_type {};

/// The object that carries the train flag and member functions: the model itself, or what a module
/// holder / smart pointer points to.
template <typename M>
decltype(auto) target_of(M& model) {
  if constexpr (HasTrainFlag<M>::value || HasForwardFeatures<M>::value || !IsDereferenceable<M>::value) {
    return (model);
  } else {
    return (*model);
  }
}

template <typename M>
torch::Tensor call_model(M& model, const torch::Tensor& x) {
  if constexpr (std::is_invocable_v<M&, const torch::Tensor&>) {
    return model(x);
  } else if constexpr (HasTensorForward<M>::value) {
    // A module's Impl (what a holder or std::shared_ptr<NetImpl> points to).
    return model.forward(x);
  } else if constexpr (std::is_invocable_v<M&, std::vector<c10::IValue>>) {
    // torch::jit::script::Module (and anything else taking a stack of IValues).
    return model(std::vector<c10::IValue>{x}).toTensor();
  } else if constexpr (IsDereferenceable<M>::value) {
    // std::shared_ptr<SomeModuleImpl> and similar.
    return call_model(*model, x);
  } else {
    static_assert(std::is_invocable_v<M&, const torch::Tensor&>,
                  "iat: a model must be callable as torch::Tensor(const torch::Tensor&), be a "
                  "torch::jit::script::Module, or point to such an object");
    return {};
  }
}

}  // namespace detail

/// A non-owning, type-erased view of a classifier, as every iat attack takes it.
///
/// Anything callable as `torch::Tensor(const torch::Tensor&)` converts to a ModelRef: a module holder
/// (`Net` from `TORCH_MODULE`), a `std::shared_ptr<NetImpl>`, a `torch::jit::script::Module`, or a
/// lambda. When the model has a train flag (`is_training()` / `train(bool)`), the view can read and set
/// it, which attacks use to run in eval mode and restore the caller's mode afterwards. The view refers
/// to the model: it must not outlive it (iat's functions only hold it for the duration of a call).
///
/// **Penultimate features.** A model exposes φ(x) for the feature-level inverse loss by providing a
/// member `iat::LogitsAndFeatures forward_features(const torch::Tensor& x)` that returns the logits
/// and the features of one forward pass; the models in `iat::models` do. For a lambda or a TorchScript
/// model, pass a second callable to the two-argument constructor.
///
/// **Example**
/// \code
/// Net net;                                      // TORCH_MODULE(Net)
/// iat::ModelRef m(net);                         // or pass `net` straight to an attack
/// torch::Tensor logits = m(x);
/// auto lf = m.forward_features(x);              // needs NetImpl::forward_features
/// iat::ModelRef f([&](const torch::Tensor& t) { return net(t) / 2.0; });
/// \endcode
class ModelRef {
 public:
  using Forward = std::function<torch::Tensor(const torch::Tensor&)>;
  using ForwardFeatures = std::function<LogitsAndFeatures(const torch::Tensor&)>;

  /// Views `model`, which must outlive this object.
  template <typename M, typename = std::enable_if_t<!std::is_same_v<std::decay_t<M>, ModelRef>>>
  ModelRef(M& model)  // NOLINT(google-explicit-constructor): implicit by design
      : forward_([p = std::addressof(model)](const torch::Tensor& x) { return detail::call_model(*p, x); }) {
    using Target = std::remove_reference_t<decltype(detail::target_of(model))>;
    if constexpr (detail::HasTrainFlag<Target>::value) {
      auto* p = std::addressof(model);
      is_training_ = [p] { return detail::target_of(*p).is_training(); };
      set_training_ = [p](bool on) { detail::target_of(*p).train(on); };
    }
    if constexpr (std::is_base_of_v<torch::nn::Module, Target>) {
      // Module::train(on) sets every submodule: the flags of all of them are kept, so that a submodule the
      // caller put in another mode (a frozen batch norm in eval mode) is put back in it.
      auto* p = std::addressof(model);
      save_modes_ = [p] {
        auto& root = detail::target_of(*p);
        std::vector<std::pair<std::shared_ptr<torch::nn::Module>, bool>> flags;
        for (const auto& m : root.modules(/*include_self=*/false)) flags.emplace_back(m, m->is_training());
        return std::function<void()>([p, flags = std::move(flags), self = root.is_training()] {
          detail::target_of(*p).train(self);
          for (const auto& [m, on] : flags) m->train(on);  // parents before their children (pre-order)
        });
      };
    }
    if constexpr (detail::HasForwardFeatures<Target>::value) {
      auto* p = std::addressof(model);
      forward_features_ = [p](const torch::Tensor& x) -> LogitsAndFeatures {
        auto out = detail::target_of(*p).forward_features(x);
        if constexpr (std::is_same_v<std::decay_t<decltype(out)>, LogitsAndFeatures>) {
          return out;
        } else {
          return {std::get<0>(out), std::get<1>(out)};
        }
      };
    }
  }

  /// Views a temporary callable (a lambda written in the call): it is moved into the view.
  template <typename M, typename = std::enable_if_t<!std::is_same_v<std::decay_t<M>, ModelRef> &&
                                                    !std::is_lvalue_reference_v<M>>>
  ModelRef(M&& model)  // NOLINT(google-explicit-constructor)
      : ModelRef(std::make_shared<std::decay_t<M>>(std::forward<M>(model)), 0) {}

  /// A model given as two callables: logits, and logits with penultimate features.
  ModelRef(Forward forward, ForwardFeatures forward_features)
      : forward_(std::move(forward)), forward_features_(std::move(forward_features)) {}

  /// f(x): the logits.
  torch::Tensor operator()(const torch::Tensor& x) const { return forward_(x); }

  /// True when the model exposes penultimate features (see the class documentation).
  bool has_features() const { return static_cast<bool>(forward_features_); }

  /// Logits and penultimate features of one forward pass.
  LogitsAndFeatures forward_features(const torch::Tensor& x) const {
    TORCH_CHECK(has_features(),
                "iat::ModelRef: this model does not expose penultimate features; give its module a "
                "member `iat::LogitsAndFeatures forward_features(const torch::Tensor&)` or build the "
                "ModelRef from two callables");
    return forward_features_(x);
  }

  /// True when the model has a train flag that the view can read and set.
  bool has_train_flag() const { return static_cast<bool>(is_training_); }
  /// The model's train flag (false for models without one).
  bool is_training() const { return is_training_ ? is_training_() : false; }
  /// Sets the model's train flag; does nothing for models without one.
  void train(bool on) const {
    if (set_training_) set_training_(on);
  }
  /// The train flags of the model now, as a callable that puts them back: for a torch::nn::Module those of
  /// every submodule too (Module::train sets them all), otherwise the model's own.
  std::function<void()> save_modes() const {
    if (save_modes_) return save_modes_();
    return [set = set_training_, on = is_training()] {
      if (set) set(on);
    };
  }

  /// A view of the same model (same train flag) whose forward passes, with and without features, run
  /// through `wrap`: `wrap(call, x)` receives the original pass as a callable and the input, and
  /// returns what `call(x)` returns, changed as it likes. iat::with_precision is built on it.
  ///
  /// **Example**
  /// \code
  /// auto halved = iat::ModelRef(net).wrapped([](const auto& call, const torch::Tensor& x) {
  ///   return call(x * 0.5);
  /// });
  /// \endcode
  template <typename Wrap>
  ModelRef wrapped(Wrap wrap) const {
    ModelRef out = *this;
    out.forward_ = [wrap, f = forward_](const torch::Tensor& x) { return wrap(f, x); };
    if (forward_features_) {
      out.forward_features_ = [wrap, f = forward_features_](const torch::Tensor& x) { return wrap(f, x); };
    }
    return out;
  }

 private:
  template <typename F>
  ModelRef(std::shared_ptr<F> owned, int /*tag*/) : ModelRef(*owned) {
    auto call = std::move(forward_);
    forward_ = [owned, call](const torch::Tensor& x) { return call(x); };
  }

  Forward forward_;
  ForwardFeatures forward_features_;
  std::function<bool()> is_training_;
  std::function<void(bool)> set_training_;
  std::function<std::function<void()>()> save_modes_;
};

/// Puts a model in the requested mode for a scope and restores its previous modes on exit, also when
/// an exception leaves the scope: a torch::nn::Module's and each of its submodules' (a batch norm the
/// caller froze in eval mode inside a training model stays in eval mode afterwards). training = false puts
/// every submodule in eval mode; training = true leaves a model that is already training as it is, so the
/// frozen layer stays frozen during the scope too.
///
/// **Example**
/// \code
/// { iat::ModeGuard eval(model, /*training=*/false); x_adv = ...; }  // model back in its old modes
/// \endcode
class ModeGuard {
 public:
  ModeGuard(const ModelRef& model, bool training) : restore_(model.save_modes()) {
    // Eval mode is put on everything (an attack must not update any batch-norm statistics); train mode
    // only on a model not already training, so that the parts the caller froze stay frozen.
    if (!training || !model.is_training()) model.train(training);
  }
  ~ModeGuard() { restore_(); }
  ModeGuard(const ModeGuard&) = delete;
  ModeGuard& operator=(const ModeGuard&) = delete;

 private:
  std::function<void()> restore_;
};

}  // namespace iat
