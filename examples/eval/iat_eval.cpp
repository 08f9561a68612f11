// iat-eval: robust accuracy of a model under AutoAttack (and optionally PGD-20 / CW∞), as the reference
// implementation fra31/auto-attack computes it.
//
//   iat-eval --model net.pt --data points.pt --eps 8/255 --out report.json
//   iat-eval --model net.pt --dataset fashion-mnist --n 1000 --attacks apgd-ce,square --eps 0.1
//
// The model is a TorchScript file (torch.jit.save in Python, or torch::jit::save) that maps a float batch
// [N, C, H, W] in [0,1] to logits [N, K], or an iat-train checkpoint. The points come from a file torch.save'd
// in Python as a dict {'x': float [N,C,H,W] in [0,1], 'y': int64 [N]}, or from a dataset read by
// iat::data::load_dataset (test split). Progress goes to stderr, a table to stdout, the full report to --out
// as JSON.
//
// Under torchrun (RANK and WORLD_SIZE set, more than one process) the attack batches are shared over the
// ranks (iat::distributed::sharded_autoattack); rank 0 prints and writes the same report as one process.
//
// The parts: config.hpp (the command line), inputs.hpp (model and points), report.hpp (table, JSON,
// adversarial examples); this file runs them in order, with the signal handling of --state.
#include <iat/attacks/pgd.hpp>
#include <iat/cpu_allocator.hpp>
#include <iat/distributed/sharded_eval.hpp>
#include <iat/eval/autoattack.hpp>
#include <iat/eval/robust_accuracy.hpp>

#include "config.hpp"
#include "inputs.hpp"
#include "report.hpp"
#include "report_tool.hpp"
#include "torchrun.hpp"

#include <ATen/Parallel.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

using namespace iat_examples;

// SIGINT / SIGTERM with --state (docs/evaluation.md, "Stopping and resuming"): during AutoAttack the batch
// that is running finishes, the state file gets it, and iat-eval exits with kExitStopped; after AutoAttack
// (the clean pass over all points, --also) nothing is in flight that the state file lacks, so it exits at
// once; while the outputs are written the signal is noted and the run completes (exit 0). A second signal
// ends the process at once (the state file is only ever replaced whole).
enum Phase : int { kAttacking = 0, kAfterAttacks = 1, kWriting = 2 };
std::atomic<int> g_stop_signal{0};
std::atomic<int> g_phase{kAttacking};

void write_stderr(const char* text) {
  size_t len = 0;
  while (text[len] != 0) ++len;
  (void)!::write(2, text, len);
}

extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal.exchange(sig) != 0) {  // the second one: at once
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  const int phase = g_phase.load();
  if (phase == kAfterAttacks) {
    write_stderr("iat-eval: stopped by a signal after AutoAttack; the state file holds all of it: run the same "
                 "command again to write the report\n");
    ::_exit(kExitStopped);
  }
  if (phase == kAttacking) {
    write_stderr("iat-eval: stopping after the running batch, once the state file holds it (signal again to stop "
                 "at once)\n");
  }
}

const char* signal_name(int sig) { return sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "a signal"; }

// Thrown from AutoAttack's on_batch callback (after the state file holds the batch) to stop the run.
struct Stopped {
  iat::eval::AutoAttackProgress at;
};

// Under torchrun: this process's place (rank 0 of 1 otherwise) and whether it joined the others, for the
// lost-rank message of main().
iat::distributed::Environment g_env;
bool g_pg_joined = false;
int64_t g_dist_timeout = 300;

// AutoAttack's options from the command line; `model_id` binds the state file to the model's bytes.
iat::eval::AutoAttackOptions autoattack_options(const EvalConfig& c, const EvalModel& model, const torch::Device& device) {
  iat::eval::AutoAttackOptions opts;
  opts.version(c.aa_version).attacks(c.aa_attacks);
  opts.norm(c.norm).eps(c.eps).seed(c.seed).batch_size(c.batch_size).device(device).state_path(c.state);
  opts.nonfinite_as_broken(c.nonfinite_as_broken).state_mismatch_ok(c.state_mismatch_ok);
  if (!c.state.empty() && g_env.world_size == 1) {  // under torchrun no signal is caught (run() says why)
    opts.on_batch([](const iat::eval::AutoAttackProgress& p) {
      if (g_stop_signal.load() != 0) throw Stopped{p};  // the state file holds this batch
    });
  }
  // The graph executor's optimisation changes the kernels, and so the gradients: part of the model's identity.
  opts.model_id(c.model_file() + " " + model.weights + " " + iat::detail::hex64(model.file_hash) +
                (c.jit_optimize ? " (--jit-optimize)" : ""));
  opts.apgd_steps(c.apgd_steps).fab_steps(c.fab_steps).square_queries(c.square_queries).n_target_classes(c.n_targets);
  return opts;
}

int run(int argc, char** argv) {
  // The attacks allocate and free many tensors of a few hundred kB per iteration; with glibc's default
  // thresholds each becomes an mmap/munmap pair and page faults (measured: a third of FAB-T's CPU time
  // in system calls). Keeping freed memory in the heap removes that.
  iat::keep_freed_memory();
  EvalConfig c;
  if (parse_eval_command_line(argc, argv, c) == 0) return 0;  // --help

  // Under torchrun: the process group first, before anything can fail on one rank alone.
  try {
    g_env = iat::distributed::environment_from_torchrun();
  } catch (const c10::Error& e) {
    eval_fail(e.what_without_backtrace());
  }
  const bool main_rank = g_env.rank == 0;
  iat::distributed::ProcessGroupPtr pg;
  if (g_env.world_size > 1) {
    if (c.seed < 0) {
      eval_fail(fmt::format("--seed must be >= 0 under torchrun, got {}: a seed from the clock would differ between the "
                            "ranks", c.seed));
    }
    pg = join_torchrun("iat-eval", g_env, c.dist_timeout, wants_cuda(c.device));
    g_dist_timeout = c.dist_timeout;
    g_pg_joined = true;
  }
  // Without a state file nothing would be kept; under torchrun the ranks would have to agree on where to stop
  // (a signal reaches each rank at another batch), and rank 0's file already holds every finished round of
  // batches (one per rank): the signals' default (at once) for both.
  if (!c.state.empty() && !pg) {
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
  }
  // Every output is checked before the evaluation starts, not after it (by rank 0, which writes them).
  if (main_rank) try {
    if (!c.out.empty()) iat::detail::check_writable("iat-eval", "--out", c.out);
    if (!c.save_adv.empty()) iat::detail::check_writable("iat-eval", "--save-adv", c.save_adv);
    if (!c.state.empty()) iat::detail::check_writable("iat-eval", "--state", c.state);
  } catch (const c10::Error& e) {
    eval_fail(e.what_without_backtrace());
  }
  at::set_num_threads(static_cast<int>(c.threads));
  torch::Device device(torch::kCPU);
  try {
    device = pick_device(c.device, pg != nullptr, [] { return rank_gpu(g_env); });
  } catch (const c10::Error& e) {
    eval_fail(e.what_without_backtrace());
  }

  const EvalModel model = load_eval_model(c, device);
  const EvalPoints points = load_eval_points(c, device);
  const auto& x = points.x;
  const auto& y = points.y;
  const int64_t aa_n = c.autoattack_n > 0 ? std::min(c.autoattack_n, x.size(0)) : x.size(0);
  check_model_on_points(model, points);
  if (pg) check_same_on_every_rank(pg, c, model, points);  // each rank evaluates its share of the same points

  const auto t_start = std::chrono::steady_clock::now();
  auto opts = autoattack_options(c, model, device);
  if (!c.quiet && main_rank) {  // under torchrun: rank 0's batches
    opts.log([t_start](const std::string& line) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      fmt::print(stderr, "[{:7.1f} s] {}\n", s, line);
    });
  }
  const iat::ModelRef forward(model.forward);
  EvalResults results;
  results.num_points = x.size(0);
  try {
    iat::eval::AutoAttack aa(opts);
    if (!c.quiet && main_rank) {
      fmt::print(stderr, "iat-eval: AutoAttack on {} of {} points from {}, {} eps={} ({:.6f}), attacks {}, seed {}, bs {}, "
                 "{} thread(s){}\n", aa_n, x.size(0), points.source, c.norm_text, c.eps_text, c.eps,
                 fmt::join(aa.attack_list(), ","), c.seed, c.batch_size, at::get_num_threads(),
                 pg ? fmt::format(", {} processes (gloo), batches shared round-robin", g_env.world_size) : "");
    }
    const auto x_aa = x.narrow(0, 0, aa_n), y_aa = y.narrow(0, 0, aa_n);
    results.autoattack = pg ? iat::distributed::sharded_autoattack(pg, forward, x_aa, y_aa, opts) : aa.run(forward, x_aa, y_aa);
    g_phase.store(kAfterAttacks);  // from here a signal stops iat-eval at once
    if (const int sig = g_stop_signal.load()) {
      fmt::print(stderr, "iat-eval: stopped by {} after AutoAttack's last batch; the state file '{}' holds all of it: "
                 "run the same command again to write the report\n", signal_name(sig), c.state);
      return kExitStopped;
    }
    for (const auto& e : c.extras) {
      iat::PGD attack = e == "pgd20" ? iat::eval::pgd20(c.eps) : iat::eval::cw_inf(c.eps);
      // Seeded per batch (seed + b) when the seed is fixed, so that the result does not depend on how many
      // processes share the batches; a seed from the clock (negative) lets the generator run on.
      iat::eval::RobustAccuracyOptions ro;
      ro.batch_size(c.batch_size);
      if (c.seed >= 0) ro.seed(c.seed);
      results.extras.emplace_back(e, pg ? iat::distributed::sharded_robust_accuracy(pg, forward, x, y, attack, ro)
                                        : iat::eval::robust_accuracy(forward, x, y, attack, ro));
    }
  } catch (const Stopped& s) {
    fmt::print(stderr, "iat-eval: stopped by {} after {} batch {}/{}; the state file '{}' holds it: run the same command "
               "again to resume\n", signal_name(g_stop_signal.load()), s.at.attack, s.at.batch, s.at.batches, c.state);
    return kExitStopped;
  } catch (const c10::Error& e) {
    eval_fail(e.what_without_backtrace());
  }

  // Clean accuracy over all points: AutoAttack's clean pass counted the first aa_n; only the points past
  // --autoattack-n need a forward pass here, counted the same way (a row with non-finite logits is wrong).
  results.clean_all_correct = results.autoattack.clean_correct;
  {
    torch::NoGradGuard ng;
    for (int64_t b = aa_n; b < x.size(0); b += c.batch_size) {
      const int64_t len = std::min(c.batch_size, x.size(0) - b);
      results.clean_all_correct +=
          iat::detail::finite_and_correct(model.forward(x.narrow(0, b, len)), y.narrow(0, b, len)).sum().item<int64_t>();
    }
  }
  if (!main_rank) return 0;  // rank 0 prints and writes the report; every rank holds the same one

  print_eval_table(c, results);
  g_phase.store(kWriting);  // a signal from here on is noted only: the outputs are completed
  if (!c.save_adv.empty()) save_adversarial_examples(c.save_adv, results.autoattack);
  if (!c.out.empty()) {
    write_eval_report(c.out, eval_report_json(c, model, points, device, g_env.world_size,
                                              pg ? backend_name(device.is_cuda()) : "none", results));
    if (!c.no_report) run_report_tool("iat-eval", {c.out});  // the per-attack breakdown, or its command
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Whatever escapes (a TorchScript model throwing a non-c10 exception, an allocation failure) ends in
  // the documented one-line error and exit status 2, never in std::terminate.
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    const std::string what = error_text(e);
    if (g_pg_joined && is_lost_rank_error(what)) {
      eval_fail(lost_ranks_message(g_env, g_dist_timeout) + "; stopping (nothing written). Gloo said: " + what);
    }
    eval_fail(what);
  }
}
