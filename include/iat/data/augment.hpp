#pragma once
/// \file
/// Batched data augmentation: random crop with zero padding and horizontal flip as one gather over the
/// whole batch, on whatever device the batch lives (no per-image tensor operation).

#include <iat/detail/compat.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

namespace iat {
namespace data {

namespace detail {
/// `t` on `device`; a CPU tensor bound for a GPU goes through pinned memory, asynchronously (the caching
/// host allocator keeps the pinned block alive until the copy is done).
inline torch::Tensor to_device(const torch::Tensor& t, const torch::Device& device) {
  if (t.device() == device) return t;
  if (device.is_cuda() && t.device().is_cpu()) return t.pin_memory().to(device, /*non_blocking=*/true);
  return t.to(device);
}

/// crop_flip without argument checks (offsets int64 and flips bool on x's device, offsets in range).
inline torch::Tensor crop_flip_unchecked(const torch::Tensor& x, int64_t pad, const torch::Tensor& oy,
                                         const torch::Tensor& ox, const torch::Tensor& fl) {
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const auto dev = x.device();
  const int64_t hp = h + 2 * pad, wp = w + 2 * pad;
  auto padded = pad > 0 ? at::constant_pad_nd(x, {pad, pad, pad, pad}, 0) : x.contiguous();
  auto idx_opts = torch::TensorOptions().dtype(torch::kLong).device(dev);
  auto rows = oy.unsqueeze(1) + torch::arange(h, idx_opts);                       // [B, H]
  auto ar = torch::arange(w, idx_opts);
  auto cols = torch::where(fl.unsqueeze(1), (w - 1) - ar, ar) + ox.unsqueeze(1);  // [B, W]
  auto idx = (rows.unsqueeze(2) * wp + cols.unsqueeze(1)).view({b, 1, h * w}).expand({b, c, h * w});
  return padded.reshape({b, c, hp * wp}).gather(2, idx).view({b, c, h, w});
}
}  // namespace detail

/// Crops every image of `x` [B, C, H, W] (any dtype, any device) from its zero-padded version, at row
/// `offset_y[i]` and column `offset_x[i]` of the (H + 2·pad) × (W + 2·pad) padded image (offsets in
/// [0, 2·pad]; pad = offset means no shift), and mirrors it left-right where `flip[i]` is true. Offsets and
/// flips are int64/bool [B] tensors on any device. One gather for the whole batch.
///
/// **Example**
/// \code
/// auto y = iat::data::crop_flip(x, 4, torch::full({B}, 4, torch::kLong), torch::full({B}, 4, torch::kLong),
///                               torch::ones({B}, torch::kBool));   // a pure horizontal flip of x
/// \endcode
inline torch::Tensor crop_flip(const torch::Tensor& x, int64_t pad, const torch::Tensor& offset_y,
                               const torch::Tensor& offset_x, const torch::Tensor& flip) {
  const char* who = "iat::data::crop_flip";
  TORCH_CHECK_VALUE(x.defined() && x.dim() == 4, who, ": x must be a batch [B, C, H, W], got ",
                    x.defined() ? x.sizes() : torch::IntArrayRef{});
  TORCH_CHECK_VALUE(pad >= 0, who, ": pad must be >= 0, got ", pad);
  const int64_t b = x.size(0);
  for (const auto* t : {&offset_y, &offset_x, &flip}) {
    TORCH_CHECK_VALUE(t->defined() && t->dim() == 1 && t->size(0) == b, who, ": offsets and flips must be [B] with B = ",
                      b, ", got ", t->defined() ? t->sizes() : torch::IntArrayRef{});
  }
  if (b == 0) return x.clone();
  const auto dev = x.device();
  auto oy = offset_y.to(dev, torch::kLong);
  auto ox = offset_x.to(dev, torch::kLong);
  auto fl = flip.to(dev, torch::kBool);
  auto range = at::aminmax(torch::cat({oy, ox}));
  const int64_t lo = std::get<0>(range).item<int64_t>();
  const int64_t hi = std::get<1>(range).item<int64_t>();
  TORCH_CHECK_VALUE(lo >= 0 && hi <= 2 * pad, who, ": offsets must be in [0, ", 2 * pad, "] (2·pad), got [", lo, ", ",
                    hi, "]");
  return detail::crop_flip_unchecked(x, pad, oy, ox, fl);
}

/// Random crop with `pad` pixels of zero padding (offsets uniform in [0, 2·pad] per image) and, when
/// `flip`, a horizontal flip with probability 1/2, for the whole batch `x` [B, C, H, W] at once (on x's
/// device: the B offsets are drawn on the CPU from `generator`, or torch's default CPU generator when it
/// is undefined, and moved in one copy). Works on uint8 or float batches alike; the values stay those of x
/// or 0.
///
/// **Example**
/// \code
/// auto gen = at::detail::createCPUGenerator(42);
/// torch::Tensor augmented = iat::data::random_crop_flip(x, 4, true, gen);   // standard CIFAR augmentation
/// \endcode
inline torch::Tensor random_crop_flip(const torch::Tensor& x, int64_t pad = 4, bool flip = true,
                                      at::Generator generator = {}) {
  TORCH_CHECK_VALUE(x.defined() && x.dim() == 4, "iat::data::random_crop_flip: x must be a batch [B, C, H, W], got ",
                    x.defined() ? x.sizes() : torch::IntArrayRef{});
  TORCH_CHECK_VALUE(pad >= 0, "iat::data::random_crop_flip: pad must be >= 0, got ", pad);
  const int64_t b = x.size(0);
  iat::optional<at::Generator> gen;
  if (generator.defined()) gen = generator;
  // One [3, B] tensor of draws: row offsets, column offsets, flips; a single host-to-device copy.
  auto draws = torch::empty({3, b}, torch::kLong);
  draws[0].random_(0, 2 * pad + 1, gen);
  draws[1].random_(0, 2 * pad + 1, gen);
  if (flip) {
    draws[2].random_(0, 2, gen);
  } else {
    draws[2].zero_();
  }
  draws = detail::to_device(draws, x.device());
  if (b == 0) return x.clone();
  return detail::crop_flip_unchecked(x, pad, draws[0], draws[1], draws[2].to(torch::kBool));
}

}  // namespace data
}  // namespace iat
