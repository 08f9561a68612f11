// iat-eval: robust accuracy of a model under AutoAttack (and optionally PGD-20 / CW∞), as the reference
// implementation fra31/auto-attack computes it.
//
//   iat-eval --model net.pt --data points.pt --eps 8/255 --out report.json
//   iat-eval --model net.pt --dataset fashion-mnist --n 1000 --attacks apgd-ce,square --eps 0.1
//
// The model is a TorchScript file (torch.jit.save in Python, or torch::jit::save) that maps a float batch
// [N, C, H, W] in [0,1] to logits [N, K]. The points come from a file torch.save'd in Python as a dict
// {'x': float [N,C,H,W] in [0,1], 'y': int64 [N]}, or from a dataset read by iat::data::load_dataset
// (test split). Progress goes to stderr, a table to stdout, the full report to --out as JSON.
//
// Under torchrun (RANK and WORLD_SIZE set, more than one process) the attack batches are shared over the
// ranks (iat::distributed::sharded_autoattack); rank 0 prints and writes the same report as one process.
#include <iat/attacks/pgd.hpp>
#include <iat/data/load.hpp>
#include <iat/distributed/sharded_eval.hpp>
#include <iat/eval/autoattack.hpp>
#include <iat/eval/robust_accuracy.hpp>
#include <iat/detail/file_io.hpp>
#include <iat/models/state_dict.hpp>
#include <iat/models/zoo.hpp>
#include <iat/train/checkpoint.hpp>
#include <iat/train/run_model.hpp>
#include <iat/version.hpp>

#include "recordable_text.hpp"
#include "torchrun.hpp"

#include <ATen/Parallel.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <torch/script.h>
#include <torch/serialize.h>
#include <torch/version.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <cmath>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

using json = nlohmann::json;

struct Args {
  std::string model, checkpoint, data, dataset, data_dir, out, state, device = "cpu", attacks, version = "standard", eps = "8/255";
  std::string norm = "Linf", also, save_adv;
  int64_t n = -1, autoattack_n = -1, seed = 0, batch_size = 250, threads = 1, apgd_steps = 100, fab_steps = 100, square_queries = 5000,
          n_targets = 9, dist_timeout = 300;
  bool quiet = false, jit_optimize = false, nonfinite_as_broken = false, state_mismatch_ok = false;
};

// SIGINT / SIGTERM with --state (docs/evaluation.md, "Stopping and resuming"): during AutoAttack the batch
// that is running finishes, the state file gets it, and iat-eval exits with kExitStopped; after AutoAttack
// (the clean pass over all points, --also) nothing is in flight that the state file lacks, so it exits at
// once; while the outputs are written the signal is noted and the run completes (exit 0). A second signal
// ends the process at once (the state file is only ever replaced whole).
constexpr int kExitStopped = 130;
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
// Under torchrun: this process's place (rank 0 of 1 otherwise) and whether it joined the others, for the
// lost-rank message of main().
iat::distributed::Environment g_env;
bool g_pg_joined = false;
int64_t g_dist_timeout = 300;

struct Stopped {
  iat::eval::AutoAttackProgress at;
};

[[noreturn]] void fail(const std::string& msg) {
  std::cerr << "iat-eval: error: " << msg << "\n";
  std::exit(2);
}

// "8/255", "0.0314", "0.5": a budget in pixel units; 8 gets the 8/255 hint.
double parse_eps(const std::string& text, bool linf) {
  double value = 0;
  try {
    size_t used = 0;
    const auto slash = text.find('/');
    if (slash == std::string::npos) {
      value = std::stod(text, &used);
      if (used != text.size()) throw std::invalid_argument(text);
    } else {
      size_t u1 = 0, u2 = 0;
      const std::string num = text.substr(0, slash), den = text.substr(slash + 1);
      const double a = std::stod(num, &u1), b = std::stod(den, &u2);
      if (u1 != num.size() || u2 != den.size() || b == 0) throw std::invalid_argument(text);
      value = a / b;
    }
  } catch (const std::exception&) {
    fail("--eps: cannot read '" + text + "' as a number or a fraction such as 8/255");
  }
  if (!linf && value > 0 && std::isfinite(value)) return value;  // an L2 radius may exceed 1
  if (!(value > 0 && value <= 1)) {
    std::string hint;
    if (value > 1 && value <= 255) hint = " (did you mean " + std::to_string(static_cast<int>(std::lround(value))) + "/255?)";
    fail("--eps must be in (0, 1] for inputs in [0,1], got " + text + hint);
  }
  return value;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f.good()) fail("cannot open '" + path + "'");
  return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// The points of a torch.save'd dict {'x': float [N,C,H,W] in [0,1], 'y': int64 [N]}.
std::pair<torch::Tensor, torch::Tensor> load_points(const std::string& path) {
  auto bytes = read_file(path);
  c10::IValue value;
  try {
    value = torch::pickle_load(bytes);
  } catch (const c10::Error& e) {
    fail("cannot read '" + path + "' (" + std::to_string(bytes.size()) +
         " bytes) as torch.save({'x': float [N,C,H,W], 'y': int64 [N]}) (a dict with exactly these two keys): " +
         e.what_without_backtrace());
  }
  if (!value.isGenericDict()) fail("'" + path + "' must hold a dict {'x': tensor, 'y': tensor}, got " + value.tagKind());
  auto dict = value.toGenericDict();
  auto get = [&](const char* key) {
    for (const auto& entry : dict) {
      if (entry.key().isString() && entry.key().toStringRef() == key) {
        if (!entry.value().isTensor()) fail("'" + path + "': entry '" + key + "' is not a tensor");
        return entry.value().toTensor();
      }
    }
    fail("'" + path + "' has no entry '" + std::string(key) + "' (expected a dict with keys 'x' and 'y')");
  };
  auto x = get("x");
  auto y = get("y");
  std::ostringstream xs, ys;
  xs << x.sizes();
  ys << y.sizes();
  if (!x.is_floating_point() || x.dim() != 4) {
    fail("'" + path + "': x must be a float tensor [N, C, H, W], got " + std::string(c10::toString(x.scalar_type())) +
         " " + xs.str());
  }
  if (y.scalar_type() != torch::kLong || y.dim() != 1) {
    fail("'" + path + "': y must be an int64 tensor [N], got " + std::string(c10::toString(y.scalar_type())) + " " +
         ys.str());
  }
  if (x.size(0) != y.size(0)) fail("'" + path + "': x holds " + std::to_string(x.size(0)) + " points, y " +
                                   std::to_string(y.size(0)) + " labels");
  if (x.size(0) == 0) fail("'" + path + "' holds 0 points: nothing to evaluate");
  if (x.numel() > 0) {
    const double lo = x.min().item<double>(), hi = x.max().item<double>();
    if (lo < 0 || hi > 1) {
      fail("'" + path + "': x must lie in [0, 1] (normalisation belongs inside the model), got values in [" +
           std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
  }
  return {x.to(torch::kFloat).contiguous(), y.contiguous()};
}

// The model of an iat-train checkpoint (iat::train::load_run_model): the weights of `ema_model` when the
// run kept an EMA (what it evaluated), `model` otherwise. The identity record says it is an iat-train
// checkpoint and, for one written before the model_spec record existed, which architecture it holds.
iat::models::AnyClassifier load_iat_checkpoint(const std::string& path, const torch::Device& device,
                                               std::string& weights) {
  torch::serialize::InputArchive archive;
  try {
    archive = iat::train::load_checkpoint(path, device);  // verifies the checkpoint's CRC-32 first
  } catch (const c10::Error& e) {
    fail(std::string("cannot read the iat-train checkpoint: ") + e.what_without_backtrace());
  }
  c10::IValue v;
  if (!archive.try_read("identity", v) || !v.isString()) {
    fail("'" + path + "' has no identity record: not an iat-train checkpoint (for TorchScript files use --model)");
  }
  json id;
  try {
    id = json::parse(v.toStringRef());
  } catch (const std::exception& e) {
    fail("'" + path + "': unreadable identity record: " + e.what());
  }
  if (id.value("format", std::string()) != "iat-train checkpoint 1") {
    fail("'" + path + "': unknown checkpoint format '" + id.value("format", std::string("?")) + "'");
  }
  iat::optional<iat::models::ModelSpec> spec;
  iat::models::ModelSpec recorded;
  if (!iat::models::read_model_spec(archive, recorded)) {
    try {
      spec = iat::models::ModelSpec{id.at("model").get<std::string>(),       id.at("activation").get<std::string>(),
                                    id.at("num_classes").get<int64_t>(),     id.at("in_channels").get<int64_t>(),
                                    id.at("image_size").get<int64_t>(),      id.at("mean").get<std::vector<double>>(),
                                    id.at("std").get<std::vector<double>>()};
    } catch (const std::exception& e) {
      fail("'" + path + "': incomplete identity record: " + e.what());
    }
  }
  try {
    auto run = iat::train::load_run_model(archive, path, device, iat::train::RunWeights::kAuto, spec);
    weights = run.weights;
    return run.model;
  } catch (const c10::Error& e) {
    fail(e.what_without_backtrace());
  }
}

// Every rank must evaluate the same model on the same points: their hashes are gathered and compared, and
// every rank stops with the same message when one differs.
void check_same_on_every_rank(const iat::distributed::ProcessGroupPtr& pg, uint64_t model_hash, const torch::Tensor& x,
                              const torch::Tensor& y) {
  auto to_i64 = [](uint64_t v) {
    int64_t out;
    std::memcpy(&out, &v, sizeof out);
    return out;
  };
  auto hash_of = [](const torch::Tensor& t) { return std::stoull(iat::detail::hash_tensor(t), nullptr, 16); };
  auto mine = torch::tensor({to_i64(model_hash), to_i64(hash_of(x)), to_i64(hash_of(y))}, torch::kLong);
  const auto all = iat::distributed::all_gather(pg, mine);
  for (size_t r = 1; r < all.size(); ++r) {
    const auto same = all[r] == all[0];
    if (!same[0].item<bool>()) fail("rank " + std::to_string(r) + " loaded another model file than rank 0 (its bytes differ)");
    if (!same[1].item<bool>() || !same[2].item<bool>()) {
      fail("rank " + std::to_string(r) + " loaded other points than rank 0 (--data, --dataset, --data-dir or --n differ)");
    }
  }
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// The last non-empty line of a message: a TorchScript error is a traceback ending in the reason.
std::string last_line(const std::string& message) {
  std::istringstream in(message);
  std::string line, last;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t") != std::string::npos) last = line;
  }
  return last.empty() ? message : last;
}

std::string read_file_bytes(const std::string& path) {
  const auto bytes = read_file(path);
  return std::string(bytes.begin(), bytes.end());
}

int run(int argc, char** argv) {
#ifdef __GLIBC__
  // The attacks allocate and free many tensors of a few hundred kB per iteration; with glibc's default
  // thresholds each becomes an mmap/munmap pair and page faults (measured: a third of FAB-T's CPU time
  // in system calls). Keeping freed memory in the heap removes that.
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
  Args a;
  CLI::App app{"iat-eval: robust accuracy under AutoAttack (fra31/auto-attack, standard version by default)"};
  const auto recorded = iat_examples::recordable_text("the --out report");  // the paths the report names
  auto* model_opt =
      app.add_option("--model", a.model, "TorchScript model file (float [N,C,H,W] in [0,1] -> logits [N,K])")
          ->check(recorded);
  auto* ckpt_opt = app.add_option("--checkpoint", a.checkpoint, "an iat-train checkpoint (checkpoint.pt)")
                       ->check(recorded);
  model_opt->excludes(ckpt_opt);
  auto* data_opt = app.add_option("--data", a.data, "points file: torch.save({'x': float [N,C,H,W], 'y': int64 [N]})")
                       ->check(recorded);
  auto* ds_opt = app.add_option("--dataset", a.dataset, std::string("dataset (test split): ") + iat::data::dataset_names());
  app.add_option("--data-dir", a.data_dir, "directory of --dataset")->check(recorded);
  data_opt->excludes(ds_opt);
  app.add_option("--version", a.version, "standard | plus | rand | custom (the reference's versions)");
  app.add_option("--attacks", a.attacks,
                 "comma list of apgd-ce,apgd-dlr,apgd-t,fab,fab-t,square, run with the version's settings "
                 "(default: the version's list; custom: required)");
  app.add_option("--also", a.also, "extra single-attack evaluations: pgd20,cw (docs/method.md §8.5; also accepted in --attacks)");
  app.add_option("--eps", a.eps, "perturbation budget in pixel units, e.g. 8/255 or 0.1");
  app.add_option("--norm", a.norm, "Linf or L2");
  auto* n_opt = app.add_option("--n", a.n, "evaluate the first N >= 1 points (default: all)");
  app.add_option("--autoattack-n", a.autoattack_n,
                 "run AutoAttack on the first N of those points only (clean, PGD-20 and CW use all)");
  app.add_option("--seed", a.seed, "seed re-applied per attack and batch (negative: time, as the reference's None)");
  app.add_option("--batch-size", a.batch_size, "points per batch (the reference's bs)");
  app.add_option("--device", a.device, "cpu, cuda, cuda:1, ...");
  app.add_option("--threads", a.threads, "intra-op threads (at::set_num_threads)");
  app.add_option("--state", a.state, "state file: an interrupted evaluation resumes from it (refused when it was "
                 "written for another model, other points or other settings)");
  app.add_flag("--state-mismatch-ok", a.state_mismatch_ok,
               "resume from --state even when its settings differ (each difference is warned about and reported)");
  app.add_flag("--nonfinite-as-broken", a.nonfinite_as_broken,
               "count points whose logits are NaN/inf as broken (default: stop with an error naming how many)");
  app.add_option("--out", a.out, "write the JSON report here");
  app.add_option("--save-adv", a.save_adv,
                 "write {'x_adv': float [N,C,H,W], 'robust': bool [N]} here (torch.load reads it)");
  app.add_option("--apgd-steps", a.apgd_steps, "APGD iterations (non-standard if not 100)");
  app.add_option("--fab-steps", a.fab_steps, "FAB iterations (non-standard if not 100)");
  app.add_option("--square-queries", a.square_queries, "Square queries (non-standard if not 5000)");
  app.add_option("--n-targets", a.n_targets, "target classes of APGD-T / FAB-T (non-standard if not 9)");
  app.add_flag("--quiet", a.quiet, "no progress on stderr");
  app.add_option("--dist-timeout", a.dist_timeout,
                 "under torchrun: seconds a rank waits for the others (rendezvous, every exchange) before it stops "
                 "with an error, e.g. when another rank died");
  app.add_flag("--jit-optimize", a.jit_optimize,
               "let the TorchScript executor optimise the graph (off by default: gradients then come from the "
               "same kernels as in eager PyTorch, which point-for-point agreement with the reference needs)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    // Every usage error exits with the documented status 2 (CLI11's own codes are 105, 109, ...).
    fail(std::string(e.what()) + " (`iat-eval --help` lists every flag)");
  }
  if (n_opt->count() > 0 && a.n < 1) fail("--n must be >= 1 (leave it out to evaluate every point), got " + std::to_string(a.n));
  if (a.dist_timeout < 1) fail("--dist-timeout must be >= 1 (seconds), got " + std::to_string(a.dist_timeout));
  // Under torchrun: the process group first, before anything can fail on one rank alone.
  try {
    g_env = iat::distributed::environment_from_torchrun();
  } catch (const c10::Error& e) {
    fail(e.what_without_backtrace());
  }
  const bool main_rank = g_env.rank == 0;
  iat::distributed::ProcessGroupPtr pg;
  if (g_env.world_size > 1) {
    if (!a.state.empty()) {
      fail("--state is for one process: under torchrun (WORLD_SIZE = " + std::to_string(g_env.world_size) +
           ") each rank runs only its share of the batches, which no one state file holds; leave --state out "
           "or evaluate in one process");
    }
    if (a.seed < 0) {
      fail("--seed must be >= 0 under torchrun, got " + std::to_string(a.seed) +
           ": a seed from the clock would differ between the ranks");
    }
    pg = iat_examples::join_torchrun("iat-eval", g_env, a.dist_timeout, a.device.rfind("cuda", 0) == 0);
    g_dist_timeout = a.dist_timeout;
    g_pg_joined = true;
  }
  if (!a.state.empty()) {  // without a state file nothing would be kept: the signals' default (at once)
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
  }
  // Every output is checked before the evaluation starts, not after it (by rank 0, which writes them).
  if (main_rank) try {
    if (!a.out.empty()) iat::detail::check_writable("iat-eval", "--out", a.out);
    if (!a.save_adv.empty()) iat::detail::check_writable("iat-eval", "--save-adv", a.save_adv);
    if (!a.state.empty()) iat::detail::check_writable("iat-eval", "--state", a.state);
  } catch (const c10::Error& e) {
    fail(e.what_without_backtrace());
  }

  if (a.data.empty() && a.dataset.empty()) fail("give the points with --data FILE or --dataset NAME");
  iat::Norm norm = iat::Norm::kLinf;
  if (a.norm == "Linf" || a.norm == "linf" || a.norm == "inf") norm = iat::Norm::kLinf;
  else if (a.norm == "L2" || a.norm == "l2") norm = iat::Norm::kL2;
  else fail("--norm must be Linf or L2, got '" + a.norm + "'");
  const double eps = parse_eps(a.eps, norm == iat::Norm::kLinf);
  if (a.threads < 1) fail("--threads must be >= 1, got " + std::to_string(a.threads));
  at::set_num_threads(static_cast<int>(a.threads));

  iat::eval::AutoAttackOptions opts;
  if (a.attacks == "standard" || a.attacks == "plus" || a.attacks == "rand") std::swap(a.attacks, a.version);
  if (a.version == "standard") opts.version(iat::eval::AutoAttackVersion::kStandard);
  else if (a.version == "plus") opts.version(iat::eval::AutoAttackVersion::kPlus);
  else if (a.version == "rand") opts.version(iat::eval::AutoAttackVersion::kRand);
  else if (a.version == "custom") opts.version(iat::eval::AutoAttackVersion::kCustom);
  else fail("--version must be standard, plus, rand or custom, got '" + a.version + "'");
  auto extras = split(a.also, ',');
  {
    auto list = split(a.attacks, ',');
    for (auto it = list.begin(); it != list.end();) {
      if (*it == "pgd20" || *it == "cw") {
        extras.push_back(*it);
        it = list.erase(it);
      } else {
        ++it;
      }
    }
    const auto& known = iat::eval::autoattack_attack_names();
    for (const auto& name : list) {
      if (std::find(known.begin(), known.end(), name) == known.end()) {
        fail("unknown attack '" + name + "' in --attacks; known attacks: " + iat::eval::detail::join(known, ","));
      }
    }
    if (list.empty() && a.version == "custom") fail("--version custom needs --attacks");
    opts.attacks(list);
  }
  for (const auto& e : extras) {
    if (e != "pgd20" && e != "cw") fail("unknown evaluation '" + e + "' in --also; use pgd20, cw");
  }

  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(a.device);
  } catch (const c10::Error&) {
    fail("--device: cannot parse '" + a.device + "' (cpu, cuda, cuda:0, ...)");
  }
  if (pg && device.is_cuda() && !device.has_index()) device = iat_examples::rank_gpu(g_env);  // LOCAL_RANK's GPU

  // The model.
  if (a.model.empty() && a.checkpoint.empty()) {
    fail("give the model with --model FILE (TorchScript) or --checkpoint FILE (iat-train)");
  }
  torch::jit::setGraphExecutorOptimize(a.jit_optimize);
  torch::jit::script::Module module;
  iat::models::AnyClassifier net{nullptr};
  std::string weights = "torchscript";
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  if (!a.checkpoint.empty()) {
    net = load_iat_checkpoint(a.checkpoint, device, weights);
    forward = [&net](const torch::Tensor& x) { return net->forward(x); };
  } else {
    try {
      module = torch::jit::load(a.model, device);
    } catch (const c10::Error& e) {
      fail("cannot load the TorchScript model '" + a.model + "': " + e.what_without_backtrace());
    } catch (const std::exception& e) {
      fail("cannot load the TorchScript model '" + a.model + "': " + e.what());
    }
    if (!module.find_method("forward")) {
      // torch::save archives (an iat-train checkpoint, for instance) load as modules without code.
      fail("'" + a.model + "' has no forward method: not a TorchScript model (for an iat-train checkpoint use "
           "--checkpoint)");
    }
    module.eval();
    forward = [&module](const torch::Tensor& x) -> torch::Tensor {
      auto out = module.forward({x});
      TORCH_CHECK_VALUE(out.isTensor(), "iat-eval: the model returns a ", out.tagKind(),
                        ", expected a tensor of logits [N, K]");
      return out.toTensor();
    };
  }

  // The points.
  torch::Tensor x, y;
  std::string source;
  if (!a.data.empty()) {
    std::tie(x, y) = load_points(a.data);
    source = a.data;
  } else {
    try {
      auto ds = iat::data::load_dataset(a.dataset, a.data_dir, iat::data::Split::kTest);
      x = ds.images.to(torch::kFloat).div_(255.0);
      y = ds.labels;
      source = ds.name + " (test)";
    } catch (const c10::Error& e) {
      fail(e.what_without_backtrace());
    }
  }
  if (a.n > 0 && a.n < x.size(0)) {
    x = x.narrow(0, 0, a.n).contiguous();
    y = y.narrow(0, 0, a.n).contiguous();
  }
  x = x.to(device);
  y = y.to(device);
  if (a.autoattack_n == 0 || a.autoattack_n < -1) fail("--autoattack-n must be >= 1, got " + std::to_string(a.autoattack_n));
  const int64_t aa_n = a.autoattack_n > 0 ? std::min(a.autoattack_n, x.size(0)) : x.size(0);

  // Shape check on a small batch, with a clear message.
  {
    torch::NoGradGuard ng;
    torch::Tensor out;
    auto fails_on_shape = [&](const std::string& why) {
      std::ostringstream s;
      s << x.sizes();
      fail("the model fails on inputs of shape " + s.str() + ": " + last_line(why));
    };
    try {
      out = forward(x.narrow(0, 0, std::min<int64_t>(2, x.size(0))));
    } catch (const c10::Error& e) {
      fails_on_shape(e.what_without_backtrace());
    } catch (const std::exception& e) {  // the TorchScript interpreter's errors are std::runtime_error
      fails_on_shape(e.what());
    }
    std::ostringstream s;
    s << out.sizes();
    if (out.dim() != 2 || out.size(0) != std::min<int64_t>(2, x.size(0))) {
      fail("the model must return logits [N, K]; for a batch of " + std::to_string(std::min<int64_t>(2, x.size(0))) +
           " it returned shape " + s.str());
    }
    const int64_t ymax = y.max().item<int64_t>();
    if (y.min().item<int64_t>() < 0 || ymax >= out.size(1)) {
      fail("labels must lie in [0, " + std::to_string(out.size(1)) + ") for a model with " +
           std::to_string(out.size(1)) + " outputs; got up to " + std::to_string(ymax));
    }
  }

  // Under torchrun every rank must hold the same model and points (each evaluates its share of them).
  const std::string& model_file = a.checkpoint.empty() ? a.model : a.checkpoint;
  const std::string model_bytes = read_file_bytes(model_file);
  const uint64_t model_hash = iat::detail::hash_bytes(model_bytes.data(), model_bytes.size());
  if (pg) check_same_on_every_rank(pg, model_hash, x, y);

  auto t_start = std::chrono::steady_clock::now();
  opts.norm(norm).eps(eps).seed(a.seed).batch_size(a.batch_size).device(device).state_path(a.state);
  opts.nonfinite_as_broken(a.nonfinite_as_broken).state_mismatch_ok(a.state_mismatch_ok);
  if (!a.state.empty()) {
    opts.on_batch([](const iat::eval::AutoAttackProgress& p) {
      if (g_stop_signal.load() != 0) throw Stopped{p};  // the state file holds this batch
    });
  }
  // The model's identity, bound into the state file: a hash of the file's bytes (and which weights).
  opts.model_id(model_file + " " + weights + " " + iat::detail::hex64(model_hash));
  opts.apgd_steps(a.apgd_steps).fab_steps(a.fab_steps).square_queries(a.square_queries).n_target_classes(a.n_targets);
  if (!a.quiet && main_rank) {  // under torchrun: rank 0's batches
    opts.log([t_start](const std::string& line) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      std::fprintf(stderr, "[%7.1f s] %s\n", s, line.c_str());
    });
  }
  iat::eval::AutoAttackReport report;
  std::vector<std::pair<std::string, iat::eval::RobustAccuracy>> extra_results;
  try {
    iat::eval::AutoAttack aa(opts);
    if (!a.quiet && main_rank) {
      std::fprintf(stderr, "iat-eval: AutoAttack on %lld of %lld points from %s, %s eps=%s (%.6f), attacks %s, seed %lld, bs %lld, %d thread(s)%s\n",
                   static_cast<long long>(aa_n), static_cast<long long>(x.size(0)), source.c_str(), a.norm.c_str(), a.eps.c_str(), eps,
                   iat::eval::detail::join(aa.attack_list(), ",").c_str(), static_cast<long long>(a.seed),
                   static_cast<long long>(a.batch_size), at::get_num_threads(),
                   pg ? (", " + std::to_string(g_env.world_size) + " processes (gloo), batches shared round-robin").c_str() : "");
    }
    const auto x_aa = x.narrow(0, 0, aa_n), y_aa = y.narrow(0, 0, aa_n);
    report = pg ? iat::distributed::sharded_autoattack(pg, iat::ModelRef(forward), x_aa, y_aa, opts)
                : aa.run(iat::ModelRef(forward), x_aa, y_aa);
    g_phase.store(kAfterAttacks);  // from here a signal stops iat-eval at once
    if (const int sig = g_stop_signal.load()) {
      std::fprintf(stderr, "iat-eval: stopped by %s after AutoAttack's last batch; the state file '%s' holds all of "
                   "it: run the same command again to write the report\n", signal_name(sig), a.state.c_str());
      return kExitStopped;
    }
    for (const auto& e : extras) {
      iat::PGD attack = e == "pgd20" ? iat::eval::pgd20(eps) : iat::eval::cw_inf(eps);
      if (norm != iat::Norm::kLinf) fail("--also " + e + " is defined for Linf only");
      // Seeded per batch (seed + b) when the seed is fixed, so that the result does not depend on how many
      // processes share the batches; a seed from the clock (negative) lets the generator run on.
      iat::eval::RobustAccuracyOptions ro;
      ro.batch_size(a.batch_size);
      if (a.seed >= 0) ro.seed(a.seed);
      extra_results.emplace_back(e, pg ? iat::distributed::sharded_robust_accuracy(pg, iat::ModelRef(forward), x, y, attack, ro)
                                       : iat::eval::robust_accuracy(iat::ModelRef(forward), x, y, attack, ro));
    }
  } catch (const Stopped& s) {
    std::fprintf(stderr, "iat-eval: stopped by %s after %s batch %lld/%lld; the state file '%s' holds it: run the "
                 "same command again to resume\n", signal_name(g_stop_signal.load()), s.at.attack.c_str(),
                 static_cast<long long>(s.at.batch), static_cast<long long>(s.at.batches), a.state.c_str());
    return kExitStopped;
  } catch (const c10::Error& e) {
    fail(e.what_without_backtrace());
  }

  // Clean accuracy over all points (AutoAttack's clean pass saw only the first aa_n).
  int64_t clean_all = 0;
  {
    torch::NoGradGuard ng;
    for (int64_t b = 0; b < x.size(0); b += a.batch_size) {
      const int64_t len = std::min(a.batch_size, x.size(0) - b);
      clean_all += (forward(x.narrow(0, b, len)).argmax(1) == y.narrow(0, b, len)).sum().item<int64_t>();
    }
  }
  const double clean_all_acc = static_cast<double>(clean_all) / static_cast<double>(x.size(0));
  if (!main_rank) return 0;  // rank 0 prints and writes the report; every rank holds the same one

  // Table.
  std::printf("\n%-22s %10s %10s %10s\n", "stage", "accuracy", "points", "time [s]");
  if (aa_n < x.size(0)) {
    std::printf("%-22s %9s%% %10lld   (of %lld points)\n", "clean (all)", fixed(100 * clean_all_acc, 2).c_str(),
                static_cast<long long>(clean_all), static_cast<long long>(x.size(0)));
  }
  std::printf("%-22s %9s%% %10lld %10s\n", "clean", fixed(100 * report.clean_accuracy, 2).c_str(),
              static_cast<long long>(report.clean_correct), "");
  for (const auto& s : report.steps) {
    std::printf("%-22s %9s%% %10lld %10s%s\n", ("after " + s.attack).c_str(), fixed(100 * s.robust_accuracy, 2).c_str(),
                static_cast<long long>(s.robust), fixed(s.seconds, 1).c_str(), s.resumed ? " (resumed)" : "");
  }
  std::printf("%-22s %9s%% %10lld %10s\n", "AutoAttack (counted)", fixed(100 * report.robust_accuracy, 2).c_str(),
              static_cast<long long>(report.robust_count), fixed(report.total_seconds, 1).c_str());
  std::printf("%-22s %9s%% %10lld\n", "AutoAttack (re-check)", fixed(100 * report.robust_accuracy_rechecked, 2).c_str(),
              static_cast<long long>(report.robust_count_rechecked));
  for (const auto& [name, r] : extra_results) {
    std::printf("%-22s %9s%% %10lld\n", name == "pgd20" ? "PGD-20" : "CW-inf (PGD-20)", fixed(100 * r.accuracy, 2).c_str(),
                static_cast<long long>(r.correct));
  }
  std::printf("max %s perturbation: %.6f (eps %.6f)\n", a.norm.c_str(), report.max_perturbation, eps);
  for (const auto& w : report.warnings) std::printf("warning: %s\n", w.c_str());

  g_phase.store(kWriting);  // a signal from here on is noted only: the outputs are completed
  if (!a.save_adv.empty()) {
    c10::Dict<std::string, torch::Tensor> dict;
    dict.insert("x_adv", report.x_adv.to(torch::kCPU));
    dict.insert("robust", report.robust.to(torch::kCPU));
    try {
      iat::io::save_tensor_dict(dict, a.save_adv);  // torch.load reads it, also with weights_only=True
    } catch (const c10::Error& e) {
      fail(std::string("--save-adv: ") + e.what_without_backtrace());
    }
  }
  if (!a.out.empty()) {
    json j;
    j["tool"] = "iat-eval";
    j["iat_version"] = iat::version();
    j["torch_version"] = TORCH_VERSION;
    j["model"] = a.model.empty() ? a.checkpoint : a.model;
    j["data"] = source;
    j["num_points"] = report.num_points;
    j["norm"] = a.norm;
    j["eps"] = eps;
    j["eps_text"] = a.eps;
    j["version"] = report.version;
    j["attacks"] = report.attacks;
    j["seed"] = a.seed;
    j["batch_size"] = a.batch_size;
    j["device"] = device.str();
    j["threads"] = at::get_num_threads();
    j["distributed"] = {{"world_size", g_env.world_size},
                        {"backend", pg ? iat_examples::backend_name(device.is_cuda()) : "none"}};
    j["standard_budgets"] = report.standard_budgets;
    j["budgets"] = {{"apgd_steps", a.apgd_steps}, {"fab_steps", a.fab_steps}, {"square_queries", a.square_queries},
                    {"n_target_classes", report.n_target_classes}};
    j["clean_accuracy"] = report.clean_accuracy;
    j["clean_correct"] = report.clean_correct;
    auto flag_list = [](const torch::Tensor& t) {
      std::vector<int> v(static_cast<size_t>(t.size(0)));
      auto acc = t.accessor<bool, 1>();
      for (int64_t i = 0; i < t.size(0); ++i) v[static_cast<size_t>(i)] = acc[i] ? 1 : 0;
      return v;
    };
    json steps = json::array();
    for (const auto& s : report.steps) {
      steps.push_back({{"attack", s.attack}, {"attacked", s.attacked}, {"robust", s.robust},
                       {"robust_accuracy", s.robust_accuracy}, {"seconds", s.seconds}, {"resumed", s.resumed},
                       {"robust_flags", flag_list(s.robust_flags)}});
    }
    j["steps"] = steps;
    j["robust_accuracy"] = report.robust_accuracy;
    j["robust_count"] = report.robust_count;
    j["robust_accuracy_rechecked"] = report.robust_accuracy_rechecked;
    j["robust_count_rechecked"] = report.robust_count_rechecked;
    j["max_perturbation"] = report.max_perturbation;
    j["total_seconds"] = report.total_seconds;
    j["warnings"] = report.warnings;
    j["robust_flags"] = flag_list(report.robust);
    j["robust_flags_rechecked"] = flag_list(report.robust_rechecked);
    json ex = json::object();
    for (const auto& [name, r] : extra_results) {
      ex[name] = {{"accuracy", r.accuracy}, {"correct", r.correct}, {"clean_accuracy", r.clean_accuracy}};
    }
    j["also"] = ex;
    // The keys the demo's report reads (scripts/demo_report.py).
    j["weights"] = weights;
    j["test_examples"] = x.size(0);
    j["clean_acc"] = clean_all_acc;
    j["autoattack_acc"] = report.robust_accuracy;
    j["autoattack_examples"] = report.num_points;
    for (const auto& [name, r] : extra_results) j[name == "pgd20" ? "pgd20_acc" : "cw_acc"] = r.accuracy;
    j["nonfinite_as_broken"] = report.nonfinite_as_broken;
    j["nonfinite_points"] = report.nonfinite_points;
    j["resumed"] = report.resumed;
    j["state_mismatch"] = report.state_mismatch;
    try {
      const std::string text = j.dump(2) + "\n";
      iat::detail::write_file_atomically("iat-eval", a.out, text.data(), text.size());
    } catch (const c10::Error& e) {
      fail(std::string("--out: ") + e.what_without_backtrace());
    }
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
    const std::string what = iat_examples::error_text(e);
    if (g_pg_joined && iat_examples::is_lost_rank_error(what)) {
      fail(iat_examples::lost_ranks_message(g_env, g_dist_timeout) + "; stopping (nothing written). Gloo said: " + what);
    }
    fail(what);
  }
}
