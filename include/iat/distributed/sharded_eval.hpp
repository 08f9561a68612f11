#pragma once
/// \file
/// iat::distributed: robust accuracy and AutoAttack sharded over the ranks of a process group, with
/// per-point results equal to one process (docs/distributed.md, "Sharded evaluation").
///
/// The rule: points are cut into batches exactly as one process cuts them, and rank r runs the batches b
/// with b % world_size == r (AutoAttack: of each attack, over the points still robust before it). Every
/// batch draws its random numbers from a seed of its own (AutoAttack re-seeds before every attack on every
/// batch, as the reference does; robust_accuracy with seed s seeds batch b with s + b), so a batch draws the
/// same numbers on whichever rank runs it. After each attack the ranks' results are combined, so every rank
/// starts the next attack from the same flags (with a state file also after every round of world_size
/// batches, so that rank 0 can save the progress within an attack). AutoAttack's clean pass and final
/// re-check are shared the same way (batch k on rank k % world_size); its sanity checks on the first batch
/// run on every rank.

#include <iat/attacks/detail/autoattack.hpp>
#include <iat/detail/archive_checksum.hpp>
#include <iat/distributed/process_group.hpp>
#include <iat/eval/autoattack.hpp>
#include <iat/eval/robust_accuracy.hpp>

#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

namespace iat {
namespace distributed {

namespace detail {

inline void all_reduce(const ProcessGroupPtr& pg, const torch::Tensor& tensor, c10d::ReduceOp::RedOpType op) {
  std::vector<torch::Tensor> tensors{tensor};
  c10d::AllreduceOptions o;
  o.reduceOp = op;
  pg->allreduce(tensors, o)->wait();
}

// Combines the ranks' results of one AutoAttack attack in place (see AutoAttackShardMerge); with x_adv
// undefined (the clean pass, the final re-check), the flags only.
inline void merge_autoattack_shards(const ProcessGroupPtr& pg, iat::eval::AutoAttackShardMerge& m) {
  const auto idx = m.attacked.to(torch::kCPU);
  if (idx.numel() > 0) {
    // Flags over the attacked rows: robust is the minimum (each rank only ever clears its own rows),
    // adv_mask and nonfinite the maximum.
    auto own_hit = m.adv_mask.index_select(0, idx);
    auto flags = torch::stack({m.robust.index_select(0, idx), own_hit, m.nonfinite.index_select(0, idx)})
                     .to(torch::kInt);
    auto robust = flags[0].clone();
    auto marks = flags.narrow(0, 1, 2).contiguous();
    all_reduce(pg, robust, c10d::ReduceOp::MIN);
    all_reduce(pg, marks, c10d::ReduceOp::MAX);
    auto hit = marks[0].to(torch::kBool);
    m.robust.index_copy_(0, idx, robust.to(torch::kBool));
    m.adv_mask.index_copy_(0, idx, hit);
    m.nonfinite.index_copy_(0, idx, marks[1].to(torch::kBool));
    if (m.x_adv.defined()) {
      // Adversarial examples: the one rank that found a row contributes it, the others zeros (x + 0 == x).
      auto rows = m.x_adv.index_select(0, idx.to(m.x_adv.device())).to(torch::kCPU);
      std::vector<int64_t> shape(rows.dim(), 1);
      shape[0] = rows.size(0);
      auto contribution = torch::where(own_hit.view(shape), rows, torch::zeros_like(rows)).contiguous();
      all_reduce(pg, contribution, c10d::ReduceOp::SUM);
      auto merged = torch::where(hit.view(shape), contribution, rows);
      m.x_adv.index_copy_(0, idx.to(m.x_adv.device()), merged.to(m.x_adv.device(), m.x_adv.scalar_type()));
    }
  }
  auto counts = torch::tensor({static_cast<double>(m.zero_grad_points)}, torch::kDouble);
  auto seconds = torch::tensor({m.seconds}, torch::kDouble);
  all_reduce(pg, counts, c10d::ReduceOp::SUM);
  all_reduce(pg, seconds, c10d::ReduceOp::MAX);
  m.zero_grad_points = static_cast<int64_t>(counts.item<double>());
  m.seconds = seconds.item<double>();
}

// Refuses, on every rank at once, a state file that is not the same on every rank (absent on some, or other
// bytes: the ranks would resume from different points and their collectives would no longer match) or that
// rank 0 cannot write. A rank's own failure (an unreadable file) is shared too, so that no rank goes on
// alone to wait for the others.
inline void check_state_file(const ProcessGroupPtr& pg, const std::string& path) {
  const char* who = "iat::distributed::sharded_autoattack";
  uint64_t h = 0;  // 0: absent
  std::string problem;
  try {
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) {
      const std::string bytes = iat::detail::read_whole_file(path, who);
      h = iat::detail::hash_bytes(bytes.data(), bytes.size()) | 1;
    }
    if (pg->getRank() == 0) iat::detail::check_writable(who, "state_path", path);
  } catch (const c10::Error& e) {
    problem = e.what_without_backtrace();
  }
  const auto all = all_gather(pg, torch::tensor({static_cast<int64_t>(h), static_cast<int64_t>(!problem.empty())}));
  TORCH_CHECK_VALUE(problem.empty(), problem);
  std::ostringstream seen;
  bool differ = false;
  for (size_t r = 0; r < all.size(); ++r) {
    TORCH_CHECK_VALUE(all[r][1].item<int64_t>() == 0, who, ": rank ", r, " cannot use the state file '", path,
                      "' (its own message says why)");
    const auto v = static_cast<uint64_t>(all[r][0].item<int64_t>());
    differ = differ || v != static_cast<uint64_t>(all[0][0].item<int64_t>());
    seen << (r > 0 ? ", " : "") << "rank " << r << ": " << (v == 0 ? "absent" : "hash " + iat::detail::hex64(v));
  }
  TORCH_CHECK_VALUE(!differ, who, ": the state file '", path, "' is not the same on every rank (", seen.str(),
                    "); every rank resumes from it and rank 0 writes it: put it on a filesystem all ranks share, or "
                    "remove it everywhere to start afresh");
}

}  // namespace detail

/// Refuses, on every rank at once, settings that differ between the ranks: each value of `settings` (name,
/// value) is hashed, the hashes are gathered, and the message names every setting in which a rank differs
/// from rank 0, then `advice`. Every rank must pass the same names in the same order (a different list is
/// refused as such). What a sharded evaluation runs before its first batch: ranks given another ε would
/// be merged into one report, ranks given another batch size would wait for each other until the
/// process group's timeout.
///
/// **Example**
/// \code
/// iat::distributed::check_same_settings(pg, "my-eval", {{"--eps", eps_text}, {"--batch-size", std::to_string(bs)}});
/// \endcode
inline void check_same_settings(const ProcessGroupPtr& pg, const std::string& who,
                                const std::vector<std::pair<std::string, std::string>>& settings,
                                const std::string& advice = "every rank must be given the same ones") {
  std::string names;
  std::vector<int64_t> hashes(1);
  for (const auto& [name, value] : settings) {
    names.append(name).append(1, '\n');
    const uint64_t h = iat::detail::hash_bytes(value.data(), value.size());
    hashes.push_back(static_cast<int64_t>(h));
  }
  hashes[0] = static_cast<int64_t>(iat::detail::hash_bytes(names.data(), names.size()));
  const auto all = all_gather(pg, torch::tensor(hashes, torch::kLong));
  const auto* first = all[0].data_ptr<int64_t>();
  for (size_t r = 1; r < all.size(); ++r) {
    const auto* theirs = all[r].data_ptr<int64_t>();
    TORCH_CHECK_VALUE(theirs[0] == first[0], who, ": rank ", r, " compares other settings than rank 0 (another "
                      "build of the program?); ", advice);
    std::vector<std::string> differ;
    for (size_t k = 0; k < settings.size(); ++k) {
      if (theirs[k + 1] != first[k + 1]) {
        differ.push_back(settings[k].first);
      }
    }
    if (!differ.empty()) {
      std::ostringstream list;
      for (size_t k = 0; k < differ.size(); ++k) list << (k > 0 ? ", " : "") << differ[k];
      TORCH_CHECK_VALUE(false, who, ": rank ", r, " differs from rank 0 in ", list.str(), "; ", advice);
    }
  }
}

/// iat::eval::robust_accuracy over the ranks of `pg`: rank r runs the batches b with b % world_size == r,
/// each seeded with `options.seed()` + b (a seed is required: without one a batch's draws would depend on
/// the batches before it). Every rank returns the whole result — per-point flags `robust` and `clean`,
/// counts, accuracies — equal to `iat::eval::robust_accuracy(model, x, y, attack, options)` in one process.
/// Every rank must pass the same x, y, model weights and options (the points, the attack's name, the batch
/// size and the seed are compared first: check_same_settings).
///
/// **Example**
/// \code
/// auto pg = iat::distributed::init_process_group(iat::distributed::environment_from_torchrun());
/// auto pgd = iat::eval::pgd20();
/// auto r = iat::distributed::sharded_robust_accuracy(pg, net, x, y, pgd,
///                                                    iat::eval::RobustAccuracyOptions().batch_size(128).seed(0));
/// if (pg->getRank() == 0) std::cout << "PGD-20: " << r.accuracy << "\n";
/// \endcode
inline iat::eval::RobustAccuracy sharded_robust_accuracy(const ProcessGroupPtr& pg, const ModelRef& model,
                                                         const torch::Tensor& x, const torch::Tensor& y,
                                                         Attack& attack, iat::eval::RobustAccuracyOptions options) {
  TORCH_CHECK_VALUE(options.seed().has_value(), "iat::distributed::sharded_robust_accuracy: options.seed() must be "
                    "set, so that every batch draws the same random numbers on whichever rank runs it");
  check_same_settings(pg, "iat::distributed::sharded_robust_accuracy",
                      {{"attack", attack.name()},
                       {"points", std::to_string(x.size(0))},
                       {"x", iat::detail::hash_tensor(x)},
                       {"y", iat::detail::hash_tensor(y)},
                       {"batch_size", std::to_string(options.batch_size())},
                       {"seed", std::to_string(*options.seed())}},
                      "every rank must pass the same points and options");
  options.shard_index(pg->getRank()).shard_count(pg->getSize());
  auto r = iat::eval::robust_accuracy(model, x, y, attack, options);
  auto flags = torch::stack({r.robust, r.clean}).to(torch::kInt).contiguous();
  all_reduce_sum(pg, flags);  // every point belongs to exactly one rank's batches
  r.robust = flags[0].to(torch::kBool);
  r.clean = flags[1].to(torch::kBool);
  r.total = x.size(0);
  r.correct = r.robust.sum().item<int64_t>();
  r.clean_correct = r.clean.sum().item<int64_t>();
  r.accuracy = static_cast<double>(r.correct) / static_cast<double>(r.total);
  r.clean_accuracy = static_cast<double>(r.clean_correct) / static_cast<double>(r.total);
  return r;
}

/// AutoAttack over the ranks of `pg`: the attack batches of each attack are shared round-robin (batch b on
/// rank b % world_size), each seeded as in one process, and combined after every attack, so every rank
/// returns the report of `iat::eval::AutoAttack(options).run(model, x, y)` in one process — flags per
/// attack, counts, x_adv, re-check — except the wall times (each attack's: the slowest rank's). With a
/// state file (`state_path`), the ranks combine their results after every round of world_size consecutive
/// batches (one per rank) and rank 0 writes it then, as after the clean pass and after each attack; every
/// rank resumes from it: it must be the same file on every rank (a filesystem they share; its bytes' hash is
/// compared, and rank 0's right to write it checked, on every rank before anything runs). A run stopped
/// within an attack resumes from the last round the file holds, under any number of processes, as a
/// one-process state file does (from its last batch). Every rank must pass the same x, y, weights and
/// options: the points and every setting of AutoAttack::settings but the model_id are compared first
/// (check_same_settings), and a rank that differs stops every rank with a message naming the setting; log sees this rank's batches only, on_batch this rank's batches once they are merged.
///
/// **Example**
/// \code
/// auto pg = iat::distributed::init_process_group(iat::distributed::environment_from_torchrun());
/// auto report = iat::distributed::sharded_autoattack(pg, net, x, y, iat::eval::AutoAttackOptions().seed(0));
/// if (pg->getRank() == 0) std::cout << "AutoAttack: " << report.robust_accuracy << "\n";
/// \endcode
inline iat::eval::AutoAttackReport sharded_autoattack(const ProcessGroupPtr& pg, const ModelRef& model,
                                                      const torch::Tensor& x, const torch::Tensor& y,
                                                      iat::eval::AutoAttackOptions options) {
  TORCH_CHECK_VALUE(options.seed() >= 0, "iat::distributed::sharded_autoattack: the seed must be fixed (>= 0), got ",
                    options.seed(), "; a seed from the clock could differ between ranks");
  if (!options.state_path().empty()) detail::check_state_file(pg, options.state_path());
  {
    // Every setting but the model's name (the same file may lie under another path on another machine).
    auto settings = iat::eval::AutoAttack(options).settings(x, y);
    settings.erase(std::remove_if(settings.begin(), settings.end(), [](const auto& s) { return s.first == "model"; }),
                   settings.end());
    check_same_settings(pg, "iat::distributed::sharded_autoattack", settings,
                        "every rank must pass the same points and options");
  }
  options.shard_index(pg->getRank()).shard_count(pg->getSize());
  options.shard_merge([pg](iat::eval::AutoAttackShardMerge& m) { detail::merge_autoattack_shards(pg, m); });
  iat::eval::AutoAttack aa(std::move(options));
  return aa.run(model, x, y);
}

}  // namespace distributed
}  // namespace iat
