#pragma once
/// \file
/// iat::keep_freed_memory: keeps the memory LibTorch frees on the CPU in the process heap (glibc malloc), so
/// that a training or evaluation loop does not pay a page fault for every fresh activation buffer.
///
/// Why: glibc serves each allocation above its mmap threshold (128 KiB at start, raised dynamically up to
/// 32 MiB) with its own mmap and returns it to the kernel with munmap when it is freed; the heap's top is
/// trimmed back to the kernel above 128 KiB of free space. A CPU training step allocates and frees
/// hundreds of activation and gradient buffers of that size, and each one then comes back as fresh pages,
/// every one a page fault when first written. Measured on a 2-core Xeon with Debian's LibTorch 1.13.1
/// (docs/benchmarks.md, "CPU memory allocator"): the step-cost benchmark of a small CNN (every method's
/// training steps in one process) took 2.3 million page faults with glibc's defaults and 39 thousand with
/// this setting, and 17–20 % less CPU time; for PreAct ResNet-18, whose convolutions dominate, the time did
/// not change measurably. iat-train and iat-eval call it first thing.
///
/// It is a process-wide setting of the C library, so the library never makes it on its own: a program
/// calls it once, before the first tensor is allocated. The price is memory: freed buffers stay mapped to
/// the process (up to `trim_threshold` of free heap top is kept, and blocks below `mmap_threshold` come from
/// the heap), so the resident size stays near the peak instead of falling back between steps. Without glibc
/// (musl, macOS, Windows) it does nothing and returns false. The same can be had without code through
/// glibc's environment variables `MALLOC_MMAP_THRESHOLD_` and `MALLOC_TRIM_THRESHOLD_`.
///
/// **Example**
/// \code
/// int main() {
///   iat::keep_freed_memory();          // before the model and the data are made
///   auto net = iat::models::PreActResNet18(iat::models::PreActResNetOptions(10));
///   // ... the training loop ...
/// }
/// \endcode

#include <algorithm>
#include <climits>
#include <cstddef>

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace iat {

/// Raises glibc's mmap threshold to `mmap_threshold` bytes (allocations below it come from the heap) and its
/// trim threshold to `trim_threshold` bytes (free heap top kept before returning it to the kernel). Returns
/// true when both were set, false without glibc or when glibc refused a value (older glibc releases cap the
/// mmap threshold at 32 MiB on 64-bit systems; Debian bookworm's 2.36 takes the default of 64 MiB). Values
/// above INT_MAX are clamped to it, as mallopt takes an int.
inline bool keep_freed_memory(std::size_t mmap_threshold = std::size_t{64} << 20,
                              std::size_t trim_threshold = std::size_t{256} << 20) {
#ifdef __GLIBC__
  const auto as_int = [](std::size_t v) { return static_cast<int>(std::min<std::size_t>(v, INT_MAX)); };
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, as_int(mmap_threshold)) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, as_int(trim_threshold)) == 1;
  return mmap_ok && trim_ok;
#else
  (void)mmap_threshold;
  (void)trim_threshold;
  return false;
#endif
}

}  // namespace iat
