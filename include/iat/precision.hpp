#pragma once
/// \file
/// Mixed precision and memory format for every forward pass iat makes: iat::PrecisionOptions,
/// iat::with_precision (a ModelRef whose forwards run under bf16 autocast and/or on channels-last
/// inputs), iat::AutocastGuard (the same autocast scope for a user's own forward passes) and
/// iat::to_channels_last (a module's weights in channels-last memory format).
///
/// Only the model's forward passes change. The logits come back as fp32, so every loss, reduction, sign
/// step and projection an attack, an inverse component or a recipe computes stays fp32, and so do the
/// perturbations, δ_y and its momentum, the one-off cache and the optimiser's state.

#include <iat/detail/compat.hpp>
#include <iat/model_ref.hpp>

#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/types.h>

namespace iat {

/// How iat runs a model's forward passes.
///
/// **Example**
/// \code
/// auto fast = iat::PrecisionOptions().autocast(torch::kBFloat16).channels_last(true);
/// \endcode
struct PrecisionOptions {
  /// True when the forward passes run under autocast.
  bool mixed() const { return autocast() != torch::kFloat; }

  /// The autocast dtype of the forward passes: torch::kFloat (default) is full precision;
  /// torch::kBFloat16 (CPU, and CUDA on compute capability 8.0 or newer) or torch::kHalf
  /// (CUDA) runs them under autocast, as `torch.autocast(device_type, dtype)` does in Python.
  TORCH_ARG(torch::ScalarType, autocast) = torch::kFloat;
  /// Hand the model its 4-D inputs in channels-last memory format (convert the model's weights once
  /// with iat::to_channels_last as well).
  TORCH_ARG(bool, channels_last) = false;
};

/// Stops with an error when this LibTorch or `device` cannot run `options`; the message names the
/// option and the reason. iat::with_precision calls it on every forward pass; call it yourself to fail
/// early (before a run starts).
///
/// **Example**
/// \code
/// iat::check_precision(iat::PrecisionOptions().autocast(torch::kBFloat16), torch::kCUDA);
/// \endcode
inline void check_precision(const PrecisionOptions& options, const torch::Device& device) {
  if (!options.mixed()) return;
  const auto dtype = options.autocast();
  TORCH_CHECK_VALUE(dtype == torch::kBFloat16 || dtype == torch::kHalf,
                    "iat::PrecisionOptions: autocast must be torch::kFloat (off), torch::kBFloat16 or torch::kHalf, got ",
                    dtype);
  TORCH_CHECK_VALUE(device.is_cpu() || device.is_cuda(), "iat::PrecisionOptions: autocast ", dtype,
                    " needs a CPU or CUDA device, got ", device.str());
  if (device.is_cpu()) {
    TORCH_CHECK_VALUE(dtype == torch::kBFloat16, "iat::PrecisionOptions: autocast ", dtype,
                      " is supported on CUDA only; on the CPU use torch::kBFloat16");
  } else if (dtype == torch::kBFloat16) {
    TORCH_CHECK_VALUE(at::detail::getCUDAHooks().supportsBFloat16ConvolutionWithCuDNNv8(),
                      "iat::PrecisionOptions: bf16 autocast on ", device.str(),
                      " needs a GPU of compute capability 8.0 or newer (Ampere, Hopper, ...) and cuDNN 8; use "
                      "torch::kHalf or full precision on this GPU");
  }
}

/// Autocast for a scope, as Python's `with torch.autocast(device_type, dtype):` — on entry autocast is
/// set for `device`'s type, on exit the previous state comes back and, when the outermost scope closes,
/// the cache of cast weights is cleared (so the next optimiser step is seen). `dtype` torch::kFloat
/// turns autocast off for the scope. Exit the scope before `backward()`, as in Python.
///
/// **Example**
/// \code
/// torch::Tensor logits;
/// {
///   iat::AutocastGuard bf16(x.device(), torch::kBFloat16);
///   logits = net(x).to(torch::kFloat);
/// }
/// auto loss = torch::nn::functional::cross_entropy(logits, y);
/// \endcode
class AutocastGuard {
 public:
  AutocastGuard(const torch::Device& device, torch::ScalarType dtype)
      : type_(device.type()),
        previous_enabled_(detail::autocast_enabled(type_)),
        previous_dtype_(detail::autocast_dtype(type_)) {
    const bool on = dtype != torch::kFloat;
    if (on) check_precision(PrecisionOptions().autocast(dtype), device);
    detail::set_autocast_enabled(type_, on);
    if (on) detail::set_autocast_dtype(type_, dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    detail::set_autocast_enabled(type_, previous_enabled_);
    detail::set_autocast_dtype(type_, previous_dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType type_;
  bool previous_enabled_;
  c10::ScalarType previous_dtype_;
};

namespace detail {

inline torch::Tensor to_fp32(const torch::Tensor& t) {
  return t.defined() && t.is_floating_point() && t.scalar_type() != torch::kFloat ? t.to(torch::kFloat) : t;
}
inline LogitsAndFeatures to_fp32(const LogitsAndFeatures& out) { return {to_fp32(out.logits), to_fp32(out.features)}; }

inline torch::Tensor maybe_channels_last(const torch::Tensor& x, bool on) {
  return on && x.dim() == 4 ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
}

}  // namespace detail

/// A view of `model` whose forward passes run as `options` say: under autocast (logits and features
/// returned as fp32), on channels-last inputs. Pass it wherever iat takes a model: attacks, inverse
/// components and recipes then run every forward pass that way, while their own arithmetic stays fp32.
/// With default options it is `model` itself.
///
/// **Example**
/// \code
/// iat::to_channels_last(*net);                      // weights once, after net->to(device)
/// iat::ModelRef fast = iat::with_precision(net, iat::PrecisionOptions().autocast(torch::kBFloat16).channels_last(true));
/// auto step = iat::train::uiat_loss(fast, x, y, pgd, uip, align);   // bf16 forwards, fp32 loss
/// step.loss.backward();
/// \endcode
inline ModelRef with_precision(const ModelRef& model, PrecisionOptions options) {
  if (!options.mixed() && !options.channels_last()) return model;
  return model.wrapped([options](const auto& call, const torch::Tensor& x) {
    auto input = detail::maybe_channels_last(x, options.channels_last());
    if (!options.mixed()) return call(input);
    AutocastGuard guard(x.device(), options.autocast());
    return detail::to_fp32(call(input));
  });
}

/// Converts every 4-D parameter and buffer of `module` (convolution weights) to channels-last memory
/// format in place; the tensors keep their identity, so an optimiser built before still holds them.
///
/// **Example**
/// \code
/// net->to(torch::kCUDA);
/// iat::to_channels_last(*net);
/// \endcode
inline void to_channels_last(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) {
    if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
  }
  for (auto& b : module.buffers()) {
    if (b.dim() == 4) b.set_data(b.data().contiguous(at::MemoryFormat::ChannelsLast));
  }
}

}  // namespace iat
