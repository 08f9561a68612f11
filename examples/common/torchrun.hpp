#pragma once
// The programs under torchrun (iat-train, iat-eval): joining the other ranks with the documented timeout
// flag, and telling a lost rank apart from other errors. The library's layer is iat/distributed/.

#include <iat/distributed/process_group.hpp>

#include <c10/core/impl/VirtualGuardImpl.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>

namespace iat_examples {

/// The GPU of this rank under torchrun: cuda:LOCAL_RANK, refused naming the count when the machine has fewer.
inline c10::Device rank_gpu(const iat::distributed::Environment& env) {
  const auto count = static_cast<int>(torch::cuda::device_count());
  TORCH_CHECK_VALUE(env.local_rank < count, "rank ", env.rank, ": LOCAL_RANK ", env.local_rank, " has no GPU: this ",
                    "machine has ", count, " (start at most that many processes per machine, --nproc_per_node)");
  return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(env.local_rank));
}

/// Joins the process group of torchrun's environment `env` (Gloo; with `cuda`, NCCL beside it for CUDA
/// tensors where the build has it, after making LOCAL_RANK's GPU current), waiting `timeout_s` seconds (the
/// program's --dist-timeout) for the others; ranks other than 0 print nothing on stdout from here on
/// (their errors still reach stderr). Throws naming the rank, the rendezvous address and the flag.
///
/// **Example**
/// \code
/// auto env = iat::distributed::environment_from_torchrun();
/// auto pg = env.world_size > 1 ? iat_examples::join_torchrun("iat-eval", env, 300) : nullptr;
/// \endcode
inline iat::distributed::ProcessGroupPtr join_torchrun(const char* program, const iat::distributed::Environment& env,
                                                       int64_t timeout_s, bool cuda = false) {
  if (env.rank != 0 && std::freopen("/dev/null", "w", stdout) == nullptr) {
    std::cerr << program << ": rank " << env.rank << ": could not silence stdout; its lines follow\n";
  }
  iat::distributed::ProcessGroupOptions options;
  options.timeout = std::chrono::seconds(timeout_s);
  if (cuda) {
    c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).setDevice(rank_gpu(env));
    options.nccl_for_cuda = iat::distributed::nccl_available();
  }
  try {
    return iat::distributed::init_process_group(env, options);
  } catch (const c10::Error& e) {
    C10_THROW_ERROR(Error, c10::str("rank ", env.rank, " of ", env.world_size, ": no process group with the others at ",
                                    env.master_addr, ":", env.master_port, " within --dist-timeout ", timeout_s,
                                    " s: ", e.what_without_backtrace()));
  }
}

/// The backend name the programs record: "nccl+gloo" when CUDA tensors go over NCCL, else "gloo".
inline const char* backend_name(bool cuda) { return cuda && iat::distributed::nccl_available() ? "nccl+gloo" : "gloo"; }

/// The text of an error as the programs print it (c10's without its backtrace).
inline std::string error_text(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  return c10_error != nullptr ? c10_error->what_without_backtrace() : e.what();
}

/// Whether an error under torchrun is a lost peer: Gloo's transport errors (a rank stopped, died or did
/// not answer within the timeout) name gloo, c10d's own errors do not.
inline bool is_lost_rank_error(const std::string& what) { return what.find("gloo") != std::string::npos; }

/// The first words of the message for a lost peer: "rank R of W lost the other ranks (...)".
inline std::string lost_ranks_message(const iat::distributed::Environment& env, int64_t timeout_s) {
  return fmt::format("rank {} of {} lost the other ranks (one stopped or died, or did not answer within "
                     "--dist-timeout {} s)", env.rank, env.world_size, timeout_s);
}

}  // namespace iat_examples
