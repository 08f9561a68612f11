#pragma once
/// \file
/// iat::distributed: PyTorch's own c10d process groups for data-parallel training — the torchrun
/// environment, a TCPStore rendezvous, Gloo on the CPU, NCCL beside it for CUDA tensors in a CUDA build of
/// LibTorch 2.x, and the few collectives iat needs (docs/distributed.md).
///
/// Not part of the umbrella header iat/iat.hpp: it pulls in c10d's headers, and Gloo's (Debian: libgloo-dev).
/// Without Gloo's headers everything here still compiles; `gloo_available()` is then false and
/// `init_process_group` says why it cannot make a Gloo group.

#include <iat/detail/compat.hpp>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/types.h>

// The 2.x header declares ProcessGroupGloo only when the build defines USE_C10D_GLOO (PyTorch's own CMake
// does; a LibTorch consumer's does not). 1.13's header has no such guard. Both LibTorch builds iat
// supports contain Gloo, so the declaration is asked for; only the headers of Gloo itself may be missing.
#if __has_include(<gloo/context.h>)
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#define IAT_HAVE_GLOO 1
#else
#define IAT_HAVE_GLOO 0
#endif

// NCCL: a CUDA build of LibTorch defines USE_C10D_NCCL for its consumers (torch_cuda's interface) when its
// c10d has ProcessGroupNCCL. Without it (Debian's CPU LibTorch) nccl_available() is false.
#if defined(USE_C10D_NCCL) && __has_include(<torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#define IAT_HAVE_NCCL 1
#else
#define IAT_HAVE_NCCL 0
#endif

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace iat {
namespace distributed {

/// A c10d process group: Gloo on the CPU (the only backend iat builds itself), or any group the caller made.
using ProcessGroupPtr = c10::intrusive_ptr<c10d::ProcessGroup>;

/// Whether this build can make Gloo process groups (Gloo's headers were found at compile time).
inline constexpr bool gloo_available() { return IAT_HAVE_GLOO != 0; }

/// Whether this build can add NCCL for CUDA tensors (ProcessGroupOptions::nccl_for_cuda): a CUDA build of
/// LibTorch 2.x, whose c10d has ProcessGroupNCCL.
inline constexpr bool nccl_available() { return IAT_HAVE_NCCL != 0; }

/// Where this process sits, as torchrun (or `python3 -m torch.distributed.run`) tells it in the environment.
struct Environment {
  int rank = 0;        ///< RANK: this process among all, in [0, world_size)
  int world_size = 1;  ///< WORLD_SIZE: number of processes
  int local_rank = 0;  ///< LOCAL_RANK: this process among those of its machine (picks the GPU)
  std::string master_addr = "127.0.0.1";  ///< MASTER_ADDR: host of the rendezvous store
  int master_port = 29500;                ///< MASTER_PORT: its port
  /// TORCHELASTIC_USE_AGENT_STORE=True: torchrun's agent already serves the store; every rank is a client.
  bool agent_store = false;
  /// TORCHELASTIC_RESTART_COUNT: keys of a restarted attempt are kept apart from the previous one's.
  std::string restart_count = "0";
};

namespace detail {

inline int env_int(const char* name, int fallback, int minimum) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  TORCH_CHECK_VALUE(end != text && *end == '\0' && value >= minimum && value <= 65535 * 1024L,
                    "iat::distributed: environment variable ", name, " must be an integer >= ", minimum, ", got \"",
                    text, "\"");
  return static_cast<int>(value);
}

inline std::string env_string(const char* name, const std::string& fallback) {
  const char* text = std::getenv(name);
  return text == nullptr || *text == '\0' ? fallback : std::string(text);
}

}  // namespace detail

/// True when torchrun's variables are set (WORLD_SIZE and RANK), i.e. the program runs as one of several.
inline bool launched_by_torchrun() { return std::getenv("WORLD_SIZE") != nullptr && std::getenv("RANK") != nullptr; }

/// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (absent: a single process, rank 0 of 1).
/// Throws naming the variable when one is malformed or RANK is not below WORLD_SIZE.
///
/// **Example**
/// \code
/// auto env = iat::distributed::environment_from_torchrun();
/// if (env.rank == 0) std::cout << "training on " << env.world_size << " processes\n";
/// \endcode
inline Environment environment_from_torchrun() {
  Environment env;
  env.world_size = detail::env_int("WORLD_SIZE", 1, 1);
  env.rank = detail::env_int("RANK", 0, 0);
  env.local_rank = detail::env_int("LOCAL_RANK", 0, 0);
  env.master_addr = detail::env_string("MASTER_ADDR", env.master_addr);
  env.master_port = detail::env_int("MASTER_PORT", env.master_port, 1);
  TORCH_CHECK_VALUE(env.master_port <= 65535, "iat::distributed: MASTER_PORT must be a port in [1, 65535], got ",
                    env.master_port);
  TORCH_CHECK_VALUE(env.rank < env.world_size, "iat::distributed: RANK (", env.rank, ") must be below WORLD_SIZE (",
                    env.world_size, ")");
  env.agent_store = detail::env_string("TORCHELASTIC_USE_AGENT_STORE", "") == "True";
  env.restart_count = detail::env_string("TORCHELASTIC_RESTART_COUNT", "0");
  return env;
}

/// Options of init_process_group.
struct ProcessGroupOptions {
  /// How long the rendezvous and every collective may wait for the other ranks before failing with an
  /// error (a rank that died makes the others stop after this long instead of hanging).
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
  /// Network interface Gloo binds to (like GLOO_SOCKET_IFNAME, which is read when this is empty); empty
  /// and no variable: the address this machine's hostname resolves to, or the loopback when it does not.
  std::string gloo_interface;
  /// Also NCCL, for CUDA tensors: the group then runs collectives of CUDA tensors on NCCL and of CPU tensors
  /// on Gloo (as PyTorch's "cuda:nccl,cpu:gloo"). Make the rank's GPU current first (iat-train takes
  /// LOCAL_RANK's). Refused where nccl_available() is false.
  bool nccl_for_cuda = false;
};

/// The rendezvous store of `env`: rank 0 serves a TCPStore on MASTER_ADDR:MASTER_PORT and the others
/// connect to it, or, under torchrun's agent store, every rank connects to the agent's.
inline c10::intrusive_ptr<c10d::Store> rendezvous_store(const Environment& env, std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<std::uint16_t>(env.master_port);
  o.isServer = !env.agent_store && env.rank == 0;
  o.numWorkers = static_cast<std::size_t>(env.world_size);
  o.waitWorkers = !env.agent_store;
  o.timeout = timeout;
  c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
  if (env.agent_store) {
    store = c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + env.restart_count, store);
  }
  return store;
}

/// A Gloo process group over `store` for tensors on the CPU. Throws when Gloo's headers were missing at
/// compile time (install libgloo-dev on Debian).
inline ProcessGroupPtr make_gloo_process_group(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world_size,
                                               const ProcessGroupOptions& options = {}) {
#if IAT_HAVE_GLOO
  auto gloo_options = c10d::ProcessGroupGloo::Options::create();
  gloo_options->timeout = options.timeout;
  const std::string interface = options.gloo_interface.empty() ? detail::env_string("GLOO_SOCKET_IFNAME", "")
                                                               : options.gloo_interface;
  gloo_options->devices.push_back(interface.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                                    : c10d::ProcessGroupGloo::createDeviceForInterface(interface));
  auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, gloo_options);
  return iat::detail::gloo_as_process_group<c10d::ProcessGroup>(std::move(gloo), store, rank, world_size);
#else
  (void)store;
  (void)rank;
  (void)world_size;
  (void)options;
  TORCH_CHECK(false, "iat::distributed: this build has no Gloo process groups: Gloo's headers (gloo/context.h) were "
                     "not found when it was compiled (on Debian: apt-get install libgloo-dev)");
#endif
}

/// The process group of this torchrun process: rendezvous on MASTER_ADDR:MASTER_PORT, Gloo for CPU tensors.
///
/// **Example**
/// \code
/// auto env = iat::distributed::environment_from_torchrun();
/// auto pg = iat::distributed::init_process_group(env);     // every rank calls it; returns when all have
/// \endcode
inline ProcessGroupPtr init_process_group(const Environment& env, const ProcessGroupOptions& options = {}) {
  TORCH_CHECK_VALUE(options.timeout.count() > 0, "iat::distributed::init_process_group: timeout must be positive");
  TORCH_CHECK_VALUE(!options.nccl_for_cuda || nccl_available(), "iat::distributed::init_process_group: nccl_for_cuda ",
                    "needs a CUDA build of LibTorch 2.x with NCCL; this one has none (CUDA tensors then need Gloo)");
  auto store = rendezvous_store(env, options.timeout);
  auto group = make_gloo_process_group(store, env.rank, env.world_size, options);
#if IAT_HAVE_NCCL
  if (options.nccl_for_cuda) {
    auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
    nccl_options->timeout = options.timeout;
    // Its own key space in the store, apart from Gloo's (as PyTorch gives each backend a prefix).
    auto nccl_store = c10::make_intrusive<c10d::PrefixStore>("nccl", store);
    auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(nccl_store, env.rank, env.world_size, nccl_options);
    iat::detail::add_cuda_backend(group, std::move(nccl));
  }
#endif
  return group;
}

/// Sums each tensor over all ranks in place, in one collective, and waits for it.
inline void all_reduce_sum(const ProcessGroupPtr& pg, std::vector<torch::Tensor> tensors) {
  if (tensors.empty()) return;
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  pg->allreduce(tensors, o)->wait();
}

/// Sums `tensor` over all ranks in place and waits.
inline void all_reduce_sum(const ProcessGroupPtr& pg, const torch::Tensor& tensor) {
  all_reduce_sum(pg, std::vector<torch::Tensor>{tensor});
}

/// Overwrites `tensor` with rank `root`'s values on every rank, and waits.
inline void broadcast(const ProcessGroupPtr& pg, const torch::Tensor& tensor, int root = 0) {
  std::vector<torch::Tensor> tensors{tensor};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  pg->broadcast(tensors, o)->wait();
}

/// Every rank's `tensor` (same shape and dtype on all ranks), in rank order.
inline std::vector<torch::Tensor> all_gather(const ProcessGroupPtr& pg, const torch::Tensor& tensor) {
  auto input = tensor.contiguous();
  std::vector<std::vector<torch::Tensor>> outputs(1);
  for (int r = 0; r < pg->getSize(); ++r) outputs[0].push_back(torch::empty_like(input));
  std::vector<torch::Tensor> inputs{input};
  pg->allgather(outputs, inputs)->wait();
  return outputs[0];
}

/// Waits until every rank has called it.
inline void barrier(const ProcessGroupPtr& pg) { pg->barrier()->wait(); }

/// The sum of `values` over all ranks (metrics: losses and counts summed, divided by the summed count).
///
/// **Example**
/// \code
/// auto total = iat::distributed::sum_over_ranks(pg, {loss_sum, correct, seen});   // the same on every rank
/// double accuracy = total[1] / total[2];
/// \endcode
inline std::vector<double> sum_over_ranks(const ProcessGroupPtr& pg, const std::vector<double>& values) {
  auto t = torch::tensor(values, torch::dtype(torch::kDouble));
  all_reduce_sum(pg, t);
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

}  // namespace distributed
}  // namespace iat
