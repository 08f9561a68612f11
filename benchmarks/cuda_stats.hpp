#pragma once
// Peak GPU memory for the benchmarks, from LibTorch's CUDA caching allocator. Built with the allocator only
// where the LibTorch has CUDA (benchmarks/CMakeLists.txt defines IAT_BENCH_CUDA for a torch_cuda target);
// elsewhere the functions report -1.

#include <torch/types.h>

#if IAT_BENCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace iat_bench {

/// Starts a new peak-memory window on `device` (CUDA only).
inline void reset_peak_memory(const torch::Device& device) {
#if IAT_BENCH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.has_index() ? device.index() : 0);
#else
  (void)device;
#endif
}

/// Peak bytes allocated by tensors on `device` since the last reset, in MiB; -1 where not measured.
inline double peak_memory_mib(const torch::Device& device) {
#if IAT_BENCH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.has_index() ? device.index() : 0);
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1024.0 * 1024.0);  // [0]: the aggregate pool
  }
#else
  (void)device;
#endif
  return -1.0;
}

}  // namespace iat_bench
