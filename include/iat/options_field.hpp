#pragma once
/// \file
/// `iat::OptionsField<T>`: how every iat component holds its options, as a public field named `options`,
/// the way LibTorch's modules do (`linear->options.in_features()`).

#include <utility>

namespace iat {

/// A component's options, held as its public field `options`: read them with `pgd.options.eps()`, change
/// them with `pgd.options.steps(20)`. A component checks its options where it uses them (each `perturb`,
/// `run`, `step`, ...), so a bad value set after construction gets the same error as one given to the
/// constructor. The two components whose options take effect only when they are built (`data::Loader`,
/// which plans its batches then, and `distributed::DataParallel`, which lays out its buckets then) keep a
/// read-only accessor `options()` instead: a field there would accept changes that do nothing.
///
/// The call form `pgd.options()` of earlier iat versions still compiles, with a deprecation warning, for
/// one release; write `pgd.options.` instead.
///
/// **Example**
/// \code
/// iat::PGD pgd;                              // ε = 8/255, 10 steps, α = ε/4
/// pgd.options.steps(20).eps(4.0 / 255);      // from here on a PGD-20 at 4/255 (α = 1/255)
/// double alpha = pgd.options.effective_step_size();
/// iat::PGD copy(pgd.options);                // a field converts to its options struct
/// \endcode
template <typename Options>
class OptionsField : public Options {
 public:
  /// From the options struct; implicit, so that `component.options = SomeOptions().x(1)` assigns.
  OptionsField(Options options) : Options(std::move(options)) {}  // NOLINT(google-explicit-constructor)

  /// The call form of earlier versions, kept for one release.
  [[deprecated("iat: options is a public field, as in LibTorch's modules: write .options.x() instead of "
               ".options().x(); the call form goes in the next release")]] Options&
  operator()() {
    return *this;
  }
  /// The call form of earlier versions, kept for one release.
  [[deprecated("iat: options is a public field, as in LibTorch's modules: write .options.x() instead of "
               ".options().x(); the call form goes in the next release")]] const Options&
  operator()() const {
    return *this;
  }
};

}  // namespace iat
