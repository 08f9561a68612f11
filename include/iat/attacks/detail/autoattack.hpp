#pragma once
/// \file
/// Internals shared by iat's AutoAttack components (APGD, APGD-T, FAB, Square, iat::eval::AutoAttack):
/// seeding of the global CPU generator, CPU-drawn random tensors and index helpers (the per-example norms
/// are iat/threat_model.hpp's).
/// The reference implementation (fra31/auto-attack) draws every random tensor on the CPU generator and
/// re-seeds it per attack and per batch; these helpers do the same so that the same points fall.
/// Also a content hash of bytes and tensors, which binds a state file to the points it was made for.

#include <iat/threat_model.hpp>

#include <ATen/Context.h>
#include <torch/types.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace iat {
namespace detail {

/// Seeds the global CPU (and, where present, CUDA) generator, as `torch.manual_seed` does; a negative
/// seed leaves the generator alone.
inline void reseed(int64_t seed) {
  if (seed >= 0) at::manual_seed(static_cast<uint64_t>(seed));
}

/// U[0,1) numbers drawn from the global CPU generator, moved to `device` afterwards.
inline torch::Tensor cpu_rand(at::IntArrayRef sizes, const torch::Device& device) {
  return torch::rand(sizes, torch::TensorOptions().dtype(torch::kFloat)).to(device);
}

/// N(0,1) numbers drawn from the global CPU generator, moved to `device` afterwards.
inline torch::Tensor cpu_randn(at::IntArrayRef sizes, const torch::Device& device) {
  return torch::randn(sizes, torch::TensorOptions().dtype(torch::kFloat)).to(device);
}

/// Independent random signs in {−1, +1} (0 only with probability ~2^-24), drawn as sign(2U − 1).
inline torch::Tensor cpu_random_signs(at::IntArrayRef sizes, const torch::Device& device) {
  return (cpu_rand(sizes, device) * 2 - 1).sign();
}

/// Predicted classes: the index of the largest logit (the first one on ties).
inline torch::Tensor predicted_class(const torch::Tensor& logits) { return std::get<1>(logits.max(1)); }

/// Per row of logits [N, K] (bool [N]): the predicted class is the label and every logit is finite, so that a
/// row of NaNs (whose max index may happen to be the label) counts as wrong. AutoAttack's clean pass and
/// iat-eval's clean accuracy count with it.
inline torch::Tensor finite_and_correct(const torch::Tensor& logits, const torch::Tensor& y) {
  return (predicted_class(logits) == y.to(logits.device())) & logits.isfinite().all(1);
}

/// Indices (int64 [k]) of the true entries of a bool vector.
inline torch::Tensor true_indices(const torch::Tensor& flags) { return flags.nonzero().view({-1}); }

/// The class with the m-th largest logit of each row (m = 1: the top class), as AutoAttack picks its
/// targets: an ascending sort and the m-th index from the end.
inline torch::Tensor class_of_rank(const torch::Tensor& logits, int64_t m) {
  auto order = std::get<1>(logits.sort(1));
  return order.select(1, logits.size(1) - m);
}

/// A fast 64-bit hash of bytes (not cryptographic: it tells files and tensors apart, it does not resist
/// forgery), eight bytes at a time, continuing from `h`.
inline uint64_t hash_bytes(const void* data, size_t size, uint64_t h = 0x9e3779b97f4a7c15ULL) {
  const auto* p = static_cast<const unsigned char*>(data);
  auto mix = [](uint64_t v) {
    v ^= v >> 30;
    v *= 0xbf58476d1ce4e5b9ULL;
    v ^= v >> 27;
    v *= 0x94d049bb133111ebULL;
    return v ^ (v >> 31);
  };
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ (w * 0x87c37b91114253d5ULL)) * 0x4cf5ad432745937fULL;
    h = (h << 31) | (h >> 33);
  }
  uint64_t tail = 0;
  for (size_t k = 0; i + k < size; ++k) tail |= static_cast<uint64_t>(p[i + k]) << (8 * k);
  h ^= tail * 0x87c37b91114253d5ULL;
  return mix(h ^ static_cast<uint64_t>(size));
}

inline std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

/// The hash of a tensor's dtype, shape and bytes (contiguous, on the CPU), as 16 hex digits.
inline std::string hash_tensor(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU).contiguous();
  std::string header = std::string(c10::toString(c.scalar_type()));
  for (auto s : c.sizes()) header.append(1, ' ').append(std::to_string(s));
  uint64_t h = hash_bytes(header.data(), header.size());
  h = hash_bytes(c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size(), h);
  return hex64(h);
}

}  // namespace detail
}  // namespace iat
