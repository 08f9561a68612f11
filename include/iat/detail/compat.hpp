#pragma once
/// \file
/// The one place where LibTorch 1.13 and 2.x differ for iat. Every other header calls these names and
/// carries no version test of its own.
///
/// - `iat::optional` / `iat::nullopt`: `c10::optional` in 1.13 (a class of its own), `std::optional` in 2.x
///   (where `c10::optional` is a deprecated alias on its way out).
/// - autocast state per device type: 1.13 has one function per backend (`set_cpu_enabled`,
///   `set_autocast_gpu_dtype`, ...), 2.4+ takes the device type (`set_autocast_enabled(kCUDA, on)`) and
///   deprecates the per-backend forms.
/// - c10d's Gloo group: in 1.13 `c10d::ProcessGroupGloo` is a `c10d::ProcessGroup` itself; in 2.x it is a
///   `c10d::Backend` that a `c10d::ProcessGroup` holds for the CPU device type.
/// - c10's warning switches: `c10::Warning::get_warnAlways()` in 1.13, where `Warning` is a namespace;
///   `c10::WarningUtils::get_warnAlways()` in 2.x, where `Warning` became the warning's class.
///
/// **Example**
/// \code
/// iat::optional<double> step;                                    // empty
/// bool on = iat::detail::autocast_enabled(torch::kCPU);
/// \endcode

#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/version.h>

#include <utility>

#if TORCH_VERSION_MAJOR >= 2
#include <optional>
#else
#include <c10/util/Optional.h>
#endif

namespace iat {

#if TORCH_VERSION_MAJOR >= 2
template <typename T>
using optional = std::optional<T>;
inline constexpr std::nullopt_t nullopt = std::nullopt;
#else
template <typename T>
using optional = c10::optional<T>;
inline constexpr c10::nullopt_t nullopt = c10::nullopt;
#endif

namespace detail {

/// Whether c10 is told to repeat one-time warnings (`set_warnAlways(true)`, as TORCH_WARN_ONCE honours).
inline bool warn_always() {
#if TORCH_VERSION_MAJOR >= 2
  return c10::WarningUtils::get_warnAlways();
#else
  return c10::Warning::get_warnAlways();
#endif
}

/// True when this LibTorch can autocast on the device type (CPU and CUDA in both versions iat supports).
inline bool autocast_supported(c10::DeviceType type) {
  return type == c10::DeviceType::CPU || type == c10::DeviceType::CUDA;
}

// Device-type forms exist from 2.4 on; before, one function per backend.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define IAT_AUTOCAST_BY_DEVICE_TYPE 1
#else
#define IAT_AUTOCAST_BY_DEVICE_TYPE 0
#endif

inline void check_autocast_device(c10::DeviceType type) {
  TORCH_CHECK_VALUE(autocast_supported(type), "iat: autocast is supported on CPU and CUDA devices, not on ",
                    c10::DeviceTypeName(type));
}

/// Whether autocast is on for the device type.
inline bool autocast_enabled(c10::DeviceType type) {
  check_autocast_device(type);
#if IAT_AUTOCAST_BY_DEVICE_TYPE
  return at::autocast::is_autocast_enabled(type);
#else
  return type == c10::DeviceType::CPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
#endif
}

/// Turns autocast on or off for the device type.
inline void set_autocast_enabled(c10::DeviceType type, bool on) {
  check_autocast_device(type);
#if IAT_AUTOCAST_BY_DEVICE_TYPE
  at::autocast::set_autocast_enabled(type, on);
#else
  if (type == c10::DeviceType::CPU) {
    at::autocast::set_cpu_enabled(on);
  } else {
    at::autocast::set_enabled(on);
  }
#endif
}

/// The lower-precision dtype autocast casts to on the device type.
inline c10::ScalarType autocast_dtype(c10::DeviceType type) {
  check_autocast_device(type);
#if IAT_AUTOCAST_BY_DEVICE_TYPE
  return at::autocast::get_autocast_dtype(type);
#else
  return type == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
#endif
}

/// Sets the lower-precision dtype autocast casts to on the device type.
inline void set_autocast_dtype(c10::DeviceType type, c10::ScalarType dtype) {
  check_autocast_device(type);
#if IAT_AUTOCAST_BY_DEVICE_TYPE
  at::autocast::set_autocast_dtype(type, dtype);
#else
  if (type == c10::DeviceType::CPU) {
    at::autocast::set_autocast_cpu_dtype(dtype);
  } else {
    at::autocast::set_autocast_gpu_dtype(dtype);
  }
#endif
}

#undef IAT_AUTOCAST_BY_DEVICE_TYPE

/// The c10d process group serving CPU tensors through `gloo` (iat/distributed/process_group.hpp). A
/// template so that this header needs none of c10d's: `ProcessGroup` is `c10d::ProcessGroup`.
template <class ProcessGroup, class Gloo, class Store>
c10::intrusive_ptr<ProcessGroup> gloo_as_process_group(c10::intrusive_ptr<Gloo> gloo,
                                                       const c10::intrusive_ptr<Store>& store, int rank, int size) {
#if TORCH_VERSION_MAJOR >= 2
  auto group = c10::make_intrusive<ProcessGroup>(store, rank, size);
  group->setBackend(c10::DeviceType::CPU, ProcessGroup::BackendType::GLOO, std::move(gloo));
  group->setDefaultBackend(ProcessGroup::BackendType::GLOO);
  return group;
#else
  (void)store;
  (void)rank;
  (void)size;
  return gloo;
#endif
}

/// Adds `nccl` to `group` for CUDA tensors (LibTorch 2.x: one c10d::ProcessGroup dispatches each collective to
/// the backend of its tensors' device). LibTorch 1.13's groups are single backends: refused there.
template <class ProcessGroup, class Nccl>
void add_cuda_backend(const c10::intrusive_ptr<ProcessGroup>& group, c10::intrusive_ptr<Nccl> nccl) {
#if TORCH_VERSION_MAJOR >= 2
  group->setBackend(c10::DeviceType::CUDA, ProcessGroup::BackendType::NCCL, std::move(nccl));
#else
  (void)group;
  (void)nccl;
  TORCH_CHECK(false, "iat::distributed: NCCL beside Gloo needs LibTorch 2.x (1.13's process groups have one backend)");
#endif
}

}  // namespace detail
}  // namespace iat
