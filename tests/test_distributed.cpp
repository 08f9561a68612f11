// Tests of iat::distributed (docs/distributed.md): two real processes on 127.0.0.1 talking through c10d's
// Gloo. Each TEST_CASE starts this binary twice with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set,
// running the hidden worker test case; the workers save what they computed and this process, which
// computes the one-process reference itself, compares.
#include "support.hpp"

#include <iat/attacks/fgsm.hpp>
#include <iat/attacks/pgd.hpp>
#include <iat/detail/batch_draw.hpp>
#include <iat/distributed/data_parallel.hpp>
#include <iat/distributed/sharded_eval.hpp>
#include <iat/inverse/inverse_attack.hpp>
#include <iat/train/awp.hpp>
#include <iat/train/recipes.hpp>

#include <torch/cuda.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>
#include <torch/serialize.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

using iat_test::max_abs_diff;
namespace dist = iat::distributed;
namespace fs = std::filesystem;

namespace {

constexpr int kWorld = 2;
constexpr int64_t kGlobalBatch = 16;
constexpr int64_t kSteps = 3;
constexpr int64_t kClasses = 4;

// A small convolutional model without batch norm, on 3×8×8 inputs, with one buffer (not used in forward).
struct NetImpl : torch::nn::Module {
  NetImpl()
      : conv(register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3).padding(1)))),
        fc(register_module("fc", torch::nn::Linear(4 * 8 * 8, kClasses))) {
    stat = register_buffer("stat", torch::zeros({3}));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc(torch::relu(conv(x)).flatten(1)); }
  torch::nn::Conv2d conv;
  torch::nn::Linear fc;
  torch::Tensor stat;
};
TORCH_MODULE(Net);

Net make_net(uint64_t seed) {
  torch::manual_seed(seed);
  return Net();
}

std::pair<torch::Tensor, torch::Tensor> dataset() {
  auto gen = at::detail::createCPUGenerator(7);
  auto x = at::rand({kSteps * kGlobalBatch, 3, 8, 8}, gen);
  auto y = at::randint(0, kClasses, {kSteps * kGlobalBatch}, gen);
  return {x, y};
}

torch::Tensor flat_parameters(torch::nn::Module& m) {
  std::vector<torch::Tensor> all;
  for (const auto& p : m.parameters()) all.push_back(p.detach().reshape(-1));
  return torch::cat(all);
}

torch::Tensor flat_gradients(torch::nn::Module& m) {
  std::vector<torch::Tensor> all;
  for (const auto& p : m.parameters()) all.push_back(p.grad().reshape(-1));
  return torch::cat(all);
}

// --- the methods: N steps of SGD at global batch kGlobalBatch, on one process or as one rank of several ---

struct TrainResult {
  torch::Tensor weights, delta, momentum;
};

// `pg` null: one process takes the whole global batch. Otherwise this rank takes its slice, random starts
// are the global draw's slice, gradients, UIAT's class sums and AWP's ascent gradients are reduced over
// ranks. "awp": PGD-AT inside AWP (γ = 0.05, larger than the paper's 5e-3 so that v visibly matters);
// "awp-local": the same without AWP's reducer, each rank forming v from its own slice.
TrainResult train(const std::string& method, const dist::ProcessGroupPtr& pg) {
  auto net = make_net(11);
  auto [x_all, y_all] = dataset();
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  iat::PGD pgd(method == "trades" ? iat::train::trades_attack_options().steps(3) : iat::PGDOptions().steps(3));
  iat::UniversalInversePerturbation uip(iat::UniversalInversePerturbationOptions(kClasses, {3, 8, 8}));
  iat::AlignmentLoss align;
  iat::InverseAttack inverse(iat::InverseAttackOptions().steps(2).init_std(0.05));
  iat::FGSM fgsm_rs(iat::FGSMOptions().random_start(true));
  const auto grad_align = iat::train::SingleStepOptions().grad_align_weight(0.2);
  iat::train::AWP awp(iat::train::AWPOptions().gamma(0.05).warmup_epochs(0));
  std::unique_ptr<dist::DataParallel> dp;
  if (pg) {
    dp = std::make_unique<dist::DataParallel>(pg, net.ptr(), dist::DataParallelOptions().bucket_mb(0.001));
    uip->set_gradient_reducer(dist::uiat_gradient_reducer(pg));
    if (method != "awp-local") awp.set_gradient_reducer(dist::awp_gradient_reducer(pg));
  }
  const int rank = pg ? pg->getRank() : 0, world = pg ? pg->getSize() : 1;
  torch::manual_seed(5);  // the same generator on every rank: random starts are drawn for the global batch
  for (int64_t step = 0; step < kSteps; ++step) {
    if (step == 1) uip->options.momentum(0.9);
    auto s = dist::slice_of_batch(kGlobalBatch, rank, world);
    auto x = x_all.narrow(0, step * kGlobalBatch + s.begin, s.size());
    auto y = y_all.narrow(0, step * kGlobalBatch + s.begin, s.size());
    if (dp) dp->begin_step();
    torch::Tensor loss;
    iat::train::WeightPerturbation v;
    {
      dist::GlobalDrawSlice draw(rank, world);
      if (method == "pgd-at") loss = iat::train::pgd_at_loss(net, x, y, pgd).loss;
      if (method == "trades") loss = iat::train::trades_loss(net, x, y, pgd).loss;
      if (method == "uiat") loss = iat::train::uiat_loss(net, x, y, pgd, uip, align).loss;
      // Two batch-shaped draws per step: PGD's start and the inverse attack's; FGSM-RS's start and GradAlign's noise.
      if (method == "iat") loss = iat::train::iat_loss(net, x, y, pgd, inverse, align).loss;
      if (method == "grad-align") loss = iat::train::single_step_loss(net, x, y, fgsm_rs, grad_align).loss;
      if (method == "awp" || method == "awp-local") {
        iat::train::FixedExamples adv(pgd.perturb(net, x, y));
        v = awp.perturb(net, [&](const iat::ModelRef& m) { return iat::train::pgd_at_loss(m, x, y, adv).loss; }, step);
        loss = iat::train::pgd_at_loss(net, x, y, adv).loss;
      }
      if (method == "uiat-awp") {  // UIAT inside AWP: the ascent steps a scratch copy of δ (its sums reduced too)
        iat::train::FixedExamples adv(pgd.perturb(net, x, y));
        v = awp.perturb(net, [&](const iat::ModelRef& m) {
          auto scratch = iat::train::scratch_copy(uip);
          return iat::train::uiat_loss(m, x, y, adv, scratch, align).loss;
        }, step);
        loss = iat::train::uiat_loss(net, x, y, adv, uip, align).loss;
      }
    }
    opt.zero_grad();
    loss.backward();
    if (dp) dp->synchronize_gradients();
    opt.step();
    awp.restore(net, v);
  }
  return {flat_parameters(*net), uip->delta().clone(), uip->momentum_buffer().clone()};
}

const std::vector<std::string> kMethods{"pgd-at", "trades", "uiat", "iat", "grad-align", "awp", "awp-local", "uiat-awp"};

// Sharded evaluation: 41 points in batches of 9 (5 batches: ranks 0 and 1 run 3 and 2 of them).
constexpr int64_t kEvalPoints = 41;
constexpr int64_t kEvalBatch = 9;

std::pair<torch::Tensor, torch::Tensor> eval_points() {
  auto gen = at::detail::createCPUGenerator(3);
  return {at::rand({kEvalPoints, 3, 8, 8}, gen), at::randint(0, kClasses, {kEvalPoints}, gen)};
}

iat::eval::AutoAttackOptions eval_aa_options() {
  return iat::eval::AutoAttackOptions()
      .eps(16.0 / 255)
      .seed(3)
      .batch_size(kEvalBatch)
      .apgd_steps(4)
      .fab_steps(4)
      .square_queries(30)
      .n_target_classes(2);
}

iat::eval::RobustAccuracyOptions eval_ra_options() {
  return iat::eval::RobustAccuracyOptions().batch_size(kEvalBatch).seed(5);
}

// AutoAttack's per-point results as the tests compare them: final flags, re-check, x_adv, counts, then each
// attack's flags and counts.
std::vector<torch::Tensor> report_tensors(const iat::eval::AutoAttackReport& report) {
  std::vector<torch::Tensor> out{report.robust, report.robust_rechecked, report.x_adv,
                                 torch::tensor({report.robust_count, report.robust_count_rechecked,
                                                report.clean_correct, static_cast<int64_t>(report.steps.size())})};
  for (const auto& step : report.steps) {
    out.push_back(step.robust_flags);
    out.push_back(torch::tensor({step.attacked, step.robust}));
  }
  return out;
}

// The first want.size() tensors of `got` equal `want`, both report_tensors() of an evaluation.
void check_same_report(const std::vector<torch::Tensor>& got, const std::vector<torch::Tensor>& want,
                       const std::string& what) {
  REQUIRE(got.size() >= want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("tensor " << i << " of the report " << what << " (0-3: final flags, re-check, x_adv, counts, then per attack)");
    CHECK(torch::equal(got[i], want[i]));
  }
}

// What the sharded-evaluation test compares: robust_accuracy's flags and counts, AutoAttack's flags after
// each attack, final flags, re-check, x_adv and counts; last, the rows AutoAttack passed through the model
// (not compared: the ranks share the work). `pg` null: one process.
std::vector<torch::Tensor> evaluate(const dist::ProcessGroupPtr& pg) {
  torch::set_num_threads(1);
  auto net = make_net(21);
  auto [x, y] = eval_points();
  auto pgd = iat::eval::pgd(8.0 / 255, 3);
  auto ra = pg ? dist::sharded_robust_accuracy(pg, net, x, y, pgd, eval_ra_options())
               : iat::eval::robust_accuracy(net, x, y, pgd, eval_ra_options());
  auto rows = std::make_shared<int64_t>(0);
  const auto counted = iat::ModelRef(net).wrapped([rows](const auto& call, const torch::Tensor& t) {
    *rows += t.size(0);
    return call(t);
  });
  auto report = pg ? dist::sharded_autoattack(pg, counted, x, y, eval_aa_options())
                   : iat::eval::AutoAttack(eval_aa_options()).run(counted, x, y);
  std::vector<torch::Tensor> out{ra.robust, ra.clean, torch::tensor({ra.correct, ra.clean_correct, ra.total})};
  for (auto& t : report_tensors(report)) out.push_back(t);
  out.push_back(torch::tensor({*rows}));
  return out;
}

// The state file of the state-file test: in the temporary folder, named by the launcher's process id (the
// workers' parent).
fs::path eval_state_path(pid_t launcher) {
  return fs::temp_directory_path() / ("iat_dp_" + std::to_string(launcher) + "_aa_state.pt");
}

// The stopped-within-an-attack test's state file, beside the other one.
fs::path eval_stop_path(pid_t launcher) {
  return fs::temp_directory_path() / ("iat_dp_" + std::to_string(launcher) + "_aa_stop.pt");
}

iat::eval::AutoAttackOptions eval_state_options(const fs::path& path) {
  return eval_aa_options().state_path(path.string());
}

// The state-file test's points: eval_points() labelled with the model's own predictions, so that all 41
// are clean-correct and APGD-CE runs 5 batches.
std::pair<torch::Tensor, torch::Tensor> eval_state_points(Net& net) {
  auto x = eval_points().first;
  torch::NoGradGuard no_grad;
  return {x, net(x).argmax(1)};
}

// --- the worker side ---

void save(const std::vector<torch::Tensor>& tensors, const std::string& name) {
  const std::string dir = std::getenv("IAT_DP_OUT");
  torch::save(tensors, dir + "/" + name + "_rank" + std::getenv("RANK") + ".pt");
}

void worker_collectives(const dist::ProcessGroupPtr& pg, int rank) {
  // Each rank initialises its model differently; construction gives every rank rank 0's.
  auto net = make_net(100 + static_cast<uint64_t>(rank));
  {
    torch::NoGradGuard no_grad;
    net->stat.fill_(static_cast<double>(rank + 1));
  }
  dist::DataParallel dp(pg, net.ptr());
  auto after_construction = flat_parameters(*net);
  auto stat_after_construction = net->stat.clone();
  // begin_step: a buffer changed on every rank (as batch norm does in a forward) comes back as rank 0's.
  {
    torch::NoGradGuard no_grad;
    net->stat.add_(static_cast<double>(10 * (rank + 1)));
  }
  dp.begin_step();
  auto stat_after_step = net->stat.clone();

  // One-off rows: rank r stores rows at positions of its own; afterwards both hold all of them.
  iat::OneOffCache cache(iat::OneOffCacheOptions(10, 3));
  auto index = torch::tensor({rank == 0 ? 1 : 6, rank == 0 ? 4 : 8, rank == 0 ? 2 : 9}, torch::kLong)
                   .narrow(0, 0, rank == 0 ? 3 : 2);  // unequal counts: 3 and 2 rows
  auto rows = torch::softmax(torch::arange(index.numel() * 3, torch::kFloat).view({-1, 3}) * (rank + 1) / 4.0, 1);
  cache->store(index, rows);
  dist::share_cache_rows(pg, cache, index);
  auto metrics = dist::sum_over_ranks(pg, {1.5 * (rank + 1), static_cast<double>(rank)});
  save({after_construction, stat_after_construction, stat_after_step, cache->probabilities().clone(),
        cache->is_stored(torch::arange(10)).clone(), torch::tensor(metrics, torch::dtype(torch::kDouble))},
       "collectives");
}

void worker_gradients(const dist::ProcessGroupPtr& pg, int rank, bool overlap) {
  auto net = make_net(11);
  dist::DataParallel dp(pg, net.ptr(), dist::DataParallelOptions().bucket_mb(0.001).overlap(overlap));
  auto [x_all, y_all] = dataset();
  auto s = dist::slice_of_batch(kGlobalBatch, rank, kWorld);
  auto loss = at::cross_entropy_loss(net(x_all.narrow(0, s.begin, s.size())), y_all.narrow(0, s.begin, s.size()));
  loss.backward();
  const auto in_backward = static_cast<int64_t>(dp.buckets_launched_in_backward());
  dp.synchronize_gradients();
  save({flat_gradients(*net), torch::tensor({static_cast<int64_t>(dp.num_buckets()), in_backward})},
       std::string("gradients_") + (overlap ? "overlap" : "after"));
}

// A model with a parameter only rank 1's loss reaches (`extra`), one no loss reaches (`unused`) and a frozen
// one (requires_grad false) that each rank initialises to another value.
struct PartsImpl : torch::nn::Module {
  PartsImpl()
      : used(register_parameter("used", torch::ones({3}))),
        extra(register_parameter("extra", torch::ones({3}))),
        unused(register_parameter("unused", torch::ones({3}))),
        frozen(register_parameter("frozen", torch::ones({3}), /*requires_grad=*/false)) {}
  torch::Tensor used, extra, unused, frozen;
};

void worker_parts(const dist::ProcessGroupPtr& pg, int rank) {
  auto parts = std::make_shared<PartsImpl>();
  {
    torch::NoGradGuard no_grad;
    parts->frozen.fill_(static_cast<double>(rank + 2));  // rank 0: 2, rank 1: 3
  }
  dist::DataParallel dp(pg, parts);
  auto loss = (parts->used * static_cast<double>(rank + 1)).sum();  // d/d used: 1 and 2, mean 1.5
  if (rank == 1) loss = loss + (parts->extra * 4.0).sum();            // 0 and 4, mean 2
  loss.backward();
  dp.synchronize_gradients();
  save({parts->frozen.clone(), parts->used.grad(), parts->extra.grad(),
        torch::tensor({static_cast<int64_t>(parts->unused.grad().defined())})},
       "parts");
}

void worker_train(const dist::ProcessGroupPtr& pg) {
  for (const auto& method : kMethods) {
    auto r = train(method, pg);
    save({r.weights, r.delta, r.momentum}, "train_" + method);
  }
}

// Sharded AutoAttack with a state file: first one that is not the same on both ranks (rank 1's path does not
// exist), which both refuse; then one rank 0 cannot read (a folder), which rank 1 refuses too; then the
// launcher's, from which both resume.
void worker_eval_state(const dist::ProcessGroupPtr& pg, int rank) {
  torch::set_num_threads(1);
  auto net = make_net(21);
  auto [x, y] = eval_state_points(net);
  const fs::path path = eval_state_path(::getppid());
  std::string refusal;
  try {
    dist::sharded_autoattack(pg, net, x, y, eval_state_options(rank == 0 ? path : fs::path(path.string() + ".absent")));
  } catch (const c10::Error& e) {
    refusal = e.what_without_backtrace();
  }
  const bool refused = refusal.find("is not the same on every rank") != std::string::npos &&
                       refusal.find("rank 1: absent") != std::string::npos;
  std::string unreadable;
  try {
    dist::sharded_autoattack(pg, net, x, y,
                             eval_state_options(rank == 0 ? fs::temp_directory_path() : fs::path(path.string() + ".absent")));
  } catch (const c10::Error& e) {
    unreadable = e.what_without_backtrace();
  }
  const bool refused_unreadable =
      unreadable.find(rank == 0 ? "cannot read" : "rank 0 cannot use the state file") != std::string::npos;
  auto report = dist::sharded_autoattack(pg, net, x, y, eval_state_options(path));
  auto out = report_tensors(report);
  out.push_back(torch::tensor({static_cast<int64_t>(refused && refused_unreadable), static_cast<int64_t>(report.resumed),
                               static_cast<int64_t>(report.steps.at(0).resumed),
                               static_cast<int64_t>(report.steps.at(1).resumed)}));
  save(out, "eval_state");
}

// Sharded AutoAttack with a state file stopped within an attack: both ranks stop once APGD-CE's second round
// (batches 3 and 4 of 5, one per rank) is in the state file, rank 0 keeps a copy of that file for the
// launcher's one-process resume, and both resume from it: only batch 5 is left of APGD-CE.
void worker_eval_stop(const dist::ProcessGroupPtr& pg, int rank) {
  torch::set_num_threads(1);
  auto net = make_net(21);
  auto [x, y] = eval_state_points(net);
  const fs::path path = eval_stop_path(::getppid());
  struct Stop {};
  bool stopped = false;
  try {
    dist::sharded_autoattack(pg, net, x, y, eval_state_options(path).on_batch([](const iat::eval::AutoAttackProgress& p) {
      if (p.attack == "apgd-ce" && p.batch >= 3) throw Stop{};  // rank 0's batch 3, rank 1's batch 4
    }));
  } catch (const Stop&) {
    stopped = true;
  }
  if (rank == 0) fs::copy_file(path, fs::path(path.string() + ".mid"), fs::copy_options::overwrite_existing);
  dist::barrier(pg);  // the file is whole and copied before either rank reads it again
  int64_t apgd_ce_batches = 0;
  std::string log;
  auto report = dist::sharded_autoattack(pg, net, x, y,
                                         eval_state_options(path)
                                             .on_batch([&](const iat::eval::AutoAttackProgress& p) {
                                               apgd_ce_batches += p.attack == "apgd-ce";
                                             })
                                             .log([&](const std::string& line) { log += line + "\n"; }));
  auto out = report_tensors(report);
  out.push_back(torch::tensor({static_cast<int64_t>(stopped), static_cast<int64_t>(report.steps.at(0).resumed),
                               apgd_ce_batches,
                               static_cast<int64_t>(log.find("apgd-ce after 4 batch(es)") != std::string::npos)}));
  save(out, "eval_stop");
}

// Sharded evaluations given other settings on rank 1 than on rank 0: another ε and other points for
// AutoAttack, another batch size for robust_accuracy. Each is refused on both ranks before any batch runs,
// naming the setting (without the check the first would be merged into one report, the last would wait
// for the other rank until the timeout). Saves 1 per refusal whose message names what differs.
void worker_eval_settings(const dist::ProcessGroupPtr& pg, int rank) {
  torch::set_num_threads(1);
  auto net = make_net(21);
  const auto data = eval_points();  // not a structured binding: the lambdas below capture x and y
  const torch::Tensor x = data.first, y = data.second;
  auto refusal = [](const std::function<void()>& run) {
    try {
      run();
    } catch (const c10::Error& e) {
      return std::string(e.what_without_backtrace());
    }
    return std::string("(not refused)");
  };
  auto names = [](const std::string& message, const std::string& what) {
    return static_cast<int64_t>(message.find("rank 1 differs from rank 0 in " + what + ";") != std::string::npos);
  };
  const auto eps = refusal([&] {
    dist::sharded_autoattack(pg, net, x, y, eval_aa_options().eps(rank == 0 ? 8.0 / 255 : 4.0 / 255));
  });
  const auto points = refusal([&] {
    auto mine = rank == 0 ? x : x.flip(0);
    dist::sharded_autoattack(pg, net, mine, y, eval_aa_options());
  });
  auto pgd = iat::eval::pgd(8.0 / 255, 3);
  const auto batch = refusal([&] {
    dist::sharded_robust_accuracy(pg, net, x, y, pgd, eval_ra_options().batch_size(rank == 0 ? 9 : 7));
  });
  save({torch::tensor({names(eps, "eps"), names(points, "x"), names(batch, "batch_size")})}, "eval_settings");
}

// --- the launcher side ---

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Runs the worker case `name` as kWorld processes of this binary; returns the folder of their outputs.
fs::path run_workers(const std::string& name) {
  auto out = fs::temp_directory_path() / ("iat_dp_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(out);
  fs::create_directories(out);
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int rank = 0; rank < kWorld; ++rank) {
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
    env_strings.push_back("RANK=" + std::to_string(rank));
    env_strings.push_back("LOCAL_RANK=" + std::to_string(rank));
    env_strings.push_back("WORLD_SIZE=" + std::to_string(kWorld));
    env_strings.push_back("MASTER_ADDR=127.0.0.1");
    env_strings.push_back("MASTER_PORT=" + std::to_string(port));
    env_strings.push_back("GLOO_SOCKET_IFNAME=lo");
    env_strings.push_back("IAT_DP_CASE=" + name);
    env_strings.push_back("IAT_DP_OUT=" + out.string());
    std::vector<char*> envp;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string self = fs::read_symlink("/proc/self/exe").string(), test = "distributed: worker";
    std::vector<char*> argv{self.data(), test.data(), nullptr};
    pid_t pid = 0;
    REQUIRE(::posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv.data(), envp.data()) == 0);
    pids.push_back(pid);
  }
  // Wait up to 60 s; a worker still running then is killed and the test fails.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::vector<int> status(pids.size(), -1);
  size_t done = 0;
  while (done < pids.size() && std::chrono::steady_clock::now() < deadline) {
    for (size_t i = 0; i < pids.size(); ++i) {
      if (status[i] != -1) continue;
      int st = 0;
      if (::waitpid(pids[i], &st, WNOHANG) == pids[i]) {
        status[i] = st;
        ++done;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (size_t i = 0; i < pids.size(); ++i) {
    if (status[i] != -1) continue;
    ::kill(pids[i], SIGKILL);
    ::waitpid(pids[i], &status[i], 0);
    FAIL_CHECK("worker " << i << " of case " << name << " did not finish within 60 s");
  }
  for (size_t i = 0; i < pids.size(); ++i) {
    INFO("worker " << i << " of case " << name);
    REQUIRE(WIFEXITED(status[i]));
    REQUIRE(WEXITSTATUS(status[i]) == 0);
  }
  return out;
}

std::vector<torch::Tensor> load(const fs::path& dir, const std::string& name, int rank) {
  std::vector<torch::Tensor> tensors;
  torch::load(tensors, (dir / (name + "_rank" + std::to_string(rank) + ".pt")).string());
  return tensors;
}

bool skip_without_gloo() {
  if (dist::gloo_available()) return false;
  WARN("skipped: this build has no Gloo (its headers, gloo/context.h, were not found: apt-get install libgloo-dev)");
  return true;
}

}  // namespace

TEST_CASE("distributed: worker", "[.][distributed_worker]") {
  const char* which = std::getenv("IAT_DP_CASE");
  REQUIRE(which != nullptr);
  auto env = dist::environment_from_torchrun();
  auto pg = dist::init_process_group(env, dist::ProcessGroupOptions{std::chrono::seconds(30), ""});
  const std::string name = which;
  if (name == "collectives") worker_collectives(pg, env.rank);
  if (name == "gradients") {
    worker_gradients(pg, env.rank, true);
    worker_gradients(pg, env.rank, false);
  }
  if (name == "train") worker_train(pg);
  if (name == "eval") save(evaluate(pg), "eval");
  if (name == "eval_state") worker_eval_state(pg, env.rank);
  if (name == "eval_stop") worker_eval_stop(pg, env.rank);
  if (name == "eval_settings") worker_eval_settings(pg, env.rank);
  if (name == "parts") worker_parts(pg, env.rank);
  dist::barrier(pg);
}

TEST_CASE("distributed: the global batch is sliced evenly, or refused naming the batch size", "[distributed]") {
  auto a = dist::slice_of_batch(128, 0, 2), b = dist::slice_of_batch(128, 1, 2);
  CHECK(a.begin == 0);
  CHECK(a.end == 64);
  CHECK(b.begin == 64);
  CHECK(b.end == 128);
  CHECK_THROWS_WITH(dist::slice_of_batch(130, 0, 4), Catch::Contains("batch size (130") &&
                                                         Catch::Contains("multiple of the world size (4)"));
  CHECK_THROWS_WITH(dist::slice_of_batch(8, 2, 2), Catch::Contains("rank 2"));
}

TEST_CASE("distributed: the torchrun environment is read, malformed variables are named", "[distributed]") {
  ::setenv("WORLD_SIZE", "4", 1);
  ::setenv("RANK", "3", 1);
  ::setenv("LOCAL_RANK", "1", 1);
  ::setenv("MASTER_ADDR", "10.0.0.2", 1);
  ::setenv("MASTER_PORT", "1234", 1);
  auto env = dist::environment_from_torchrun();
  CHECK(env.world_size == 4);
  CHECK(env.rank == 3);
  CHECK(env.local_rank == 1);
  CHECK(env.master_addr == "10.0.0.2");
  CHECK(env.master_port == 1234);
  ::setenv("RANK", "4", 1);
  CHECK_THROWS_WITH(dist::environment_from_torchrun(), Catch::Contains("RANK (4) must be below WORLD_SIZE (4)"));
  ::setenv("RANK", "x", 1);
  CHECK_THROWS_WITH(dist::environment_from_torchrun(), Catch::Contains("RANK must be an integer"));
  for (const char* v : {"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}) ::unsetenv(v);
  CHECK(dist::environment_from_torchrun().world_size == 1);
}

TEST_CASE("distributed: every batch-shaped draw in a GlobalDrawSlice scope is the rank's slice of the global draw",
          "[distributed]") {
  // Rows of 3×5×5 = 75 numbers (not a multiple of 16: randn's vectorised path does not apply), 3 rows a rank.
  const auto uniform = [](const torch::Tensor& like) { return torch::empty_like(like).uniform_(-1, 1); };
  const auto gaussian = [](const torch::Tensor& like) { return torch::randn_like(like); };
  for (bool channels_last : {false, true}) {
    const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    auto global_like = torch::zeros({6, 3, 5, 5}).contiguous(format);
    auto local_like = torch::zeros({3, 3, 5, 5}).contiguous(format);
    // One process: two draws for the global batch (a start, then a second one such as IAT's inverse start).
    torch::manual_seed(3);
    auto first = iat::detail::draw_for_batch(global_like, uniform);
    auto second = iat::detail::draw_for_batch(global_like, gaussian);
    auto after_global = torch::rand({4});
    for (int rank = 0; rank < 2; ++rank) {
      torch::manual_seed(3);
      torch::Tensor mine_first, mine_second;
      {
        dist::GlobalDrawSlice slice(rank, 2);
        mine_first = iat::detail::draw_for_batch(local_like, uniform);
        mine_second = iat::detail::draw_for_batch(local_like, gaussian);
      }
      INFO("channels_last " << channels_last << ", rank " << rank);
      CHECK(mine_first.sizes() == local_like.sizes());
      CHECK(mine_first.is_contiguous(format));
      CHECK(torch::equal(mine_first, first.narrow(0, 3 * rank, 3)));
      CHECK(torch::equal(mine_second, second.narrow(0, 3 * rank, 3)));
      CHECK(torch::equal(torch::rand({4}), after_global));  // the generator ends where one process's does
    }
  }
  // Outside a scope (and after one) a draw is the draw itself; scopes nest and restore what was there.
  torch::manual_seed(4);
  auto plain = torch::empty({2, 7}).uniform_(-1, 1);
  torch::manual_seed(4);
  {
    dist::GlobalDrawSlice outer(1, 2);
    { dist::GlobalDrawSlice inner(0, 1); }
    CHECK(iat::detail::batch_draw_slice().rank == 1);
    CHECK(iat::detail::batch_draw_slice().world_size == 2);
  }
  CHECK(torch::equal(iat::detail::draw_for_batch(torch::zeros({2, 7}), uniform), plain));
  CHECK_THROWS_WITH(dist::GlobalDrawSlice(2, 2), Catch::Contains("rank 2 is not in [0, world_size = 2)"));
}

TEST_CASE("distributed: construction and begin_step broadcast rank 0's state, cache rows and metrics are shared",
          "[distributed]") {
  if (skip_without_gloo()) return;
  auto dir = run_workers("collectives");
  auto r0 = load(dir, "collectives", 0), r1 = load(dir, "collectives", 1);
  // Rank 0's own initialisation, on both.
  auto expected = flat_parameters(*make_net(100));
  CHECK(torch::equal(r0[0], expected));
  CHECK(torch::equal(r1[0], expected));
  CHECK(torch::equal(r1[1], torch::full({3}, 1.0)));   // rank 1's buffer was 2, became rank 0's 1
  CHECK(torch::equal(r0[2], torch::full({3}, 11.0)));  // begin_step: rank 0's 1 + 10
  CHECK(torch::equal(r1[2], torch::full({3}, 11.0)));  // rank 1 had 1 + 20 = 21
  CHECK(torch::equal(r0[3], r1[3]));                   // the same cache on both ranks
  CHECK(torch::equal(r0[4], r1[4]));
  CHECK(r0[4].sum().item<int64_t>() == 5);             // 3 rows from rank 0, 2 from rank 1
  auto row6 = torch::softmax(torch::arange(3, torch::kFloat) * 2 / 4.0, 0);  // rank 1's first row
  CHECK(max_abs_diff(r0[3][6], row6) == 0.0);
  CHECK(r0[5][0].item<double>() == 4.5);  // 1.5 + 3
  CHECK(r1[5][1].item<double>() == 1.0);  // 0 + 1
  fs::remove_all(dir);
}

TEST_CASE("distributed: bucketed gradient averaging equals the mean of the ranks' gradients", "[distributed]") {
  if (skip_without_gloo()) return;
  auto dir = run_workers("gradients");
  // Each rank's gradient, computed here on its slice.
  auto [x_all, y_all] = dataset();
  std::vector<torch::Tensor> local;
  for (int rank = 0; rank < kWorld; ++rank) {
    auto net = make_net(11);
    auto s = dist::slice_of_batch(kGlobalBatch, rank, kWorld);
    at::cross_entropy_loss(net(x_all.narrow(0, s.begin, s.size())), y_all.narrow(0, s.begin, s.size())).backward();
    local.push_back(flat_gradients(*net));
  }
  auto mean = (local[0] + local[1]) / 2;
  for (const char* mode : {"overlap", "after"}) {
    for (int rank = 0; rank < kWorld; ++rank) {
      auto r = load(dir, std::string("gradients_") + mode, rank);
      INFO(mode << ", rank " << rank);
      CHECK(max_abs_diff(r[0], mean) < 1e-7);
      // Buckets of 1000 bytes, filled in reverse parameter order: fc.bias (16 B); fc.weight (4096 B, over
      // the cap with fc.bias, so alone); conv.bias (16 B) and conv.weight (432 B) together.
      CHECK(r[1][0].item<int64_t>() == 3);
      // With overlap, the hooks sent every bucket during backward; without, none.
      CHECK(r[1][1].item<int64_t>() == (std::string(mode) == "overlap" ? 3 : 0));
    }
  }
  fs::remove_all(dir);
}

TEST_CASE("distributed: frozen parameters start as rank 0's; a gradient no rank has stays absent, one rank's is "
          "averaged with zero", "[distributed]") {
  if (skip_without_gloo()) return;
  auto dir = run_workers("parts");
  for (int rank = 0; rank < kWorld; ++rank) {
    INFO("rank " << rank);
    auto r = load(dir, "parts", rank);
    CHECK(torch::equal(r[0], torch::full({3}, 2.0)));   // rank 0's frozen values on both
    CHECK(torch::allclose(r[1], torch::full({3}, 1.5)));
    CHECK(torch::allclose(r[2], torch::full({3}, 2.0)));
    CHECK(r[3].item<int64_t>() == 0);  // `unused`: no gradient, so SGD's weight decay and momentum skip it
  }
  fs::remove_all(dir);
}

TEST_CASE("distributed: N steps of PGD-AT, TRADES, UIAT, IAT, GradAlign and AWP on 2 processes equal 1 process "
          "at the global batch",
          "[distributed]") {
  if (skip_without_gloo()) return;
  auto dir = run_workers("train");
  const auto awp_one = train("awp", {});
  for (const auto& method : kMethods) {
    auto one = train(method, {});
    auto r0 = load(dir, "train_" + method, 0), r1 = load(dir, "train_" + method, 1);
    INFO(method << ": max |2 processes - 1 process| = " << max_abs_diff(r0[0], one.weights));
    if (method == "awp-local") {
      // Without its reducer each rank forms v from its own half of the batch: the step's gradients are still
      // averaged and v is taken back, so the ranks agree up to the rounding of (w + v_r − step) − v_r, but
      // the weights are no longer one process's (measured 1.4e-2).
      CHECK(max_abs_diff(r0[0], one.weights) > 1e-3);
      CHECK(max_abs_diff(r0[0], r1[0]) <= 1e-6);
      continue;
    }
    CHECK(max_abs_diff(r0[0], one.weights) <= 1e-5);
    CHECK(torch::equal(r0[0], r1[0]));  // the ranks' weights agree bit for bit
    CHECK(max_abs_diff(one.weights, flat_parameters(*make_net(11))) > 1e-3);  // training moved the weights
    if (method == "pgd-at") CHECK(max_abs_diff(awp_one.weights, one.weights) > 1e-4);  // and AWP changes it
    if (method == "uiat" || method == "uiat-awp") {
      CHECK(torch::equal(r0[1], r1[1]));  // δ_y bitwise equal on both ranks
      CHECK(torch::equal(r0[2], r1[2]));  // and its momentum
      CHECK(torch::equal(r0[1], one.delta));
      CHECK(one.delta.abs().sum().item<double>() > 0);
    }
  }
  fs::remove_all(dir);
}

TEST_CASE("distributed: sharded robust_accuracy and AutoAttack on 2 processes equal 1 process point for point",
          "[distributed]") {
  if (skip_without_gloo()) return;
  auto dir = run_workers("eval");
  auto one = evaluate({});
  auto r0 = load(dir, "eval", 0), r1 = load(dir, "eval", 1);
  REQUIRE(r0.size() == one.size());
  REQUIRE(r1.size() == one.size());
  // Rows through the model: the ranks share AutoAttack's clean pass and final re-check with the attacks;
  // only the sanity checks (6 passes over the first batch of 9) run on both.
  const auto rows = [](const std::vector<torch::Tensor>& r) { return r.back().item<int64_t>(); };
  CHECK(rows(r0) + rows(r1) - rows(one) == 6 * kEvalBatch);
  CHECK(rows(r0) < rows(one));
  CHECK(rows(r1) < rows(one));
  one.pop_back();
  r0.pop_back();
  r1.pop_back();
  for (size_t i = 0; i < one.size(); ++i) {
    INFO("tensor " << i << " of the results (0-1: robust_accuracy flags, 2: its counts, 3-6: AutoAttack's flags, "
                      "re-check, x_adv, counts, then per attack)");
    CHECK(torch::equal(r0[i], one[i]));
    CHECK(torch::equal(r1[i], one[i]));
  }
  const auto counts = one[2], aa = one[6];
  INFO("robust_accuracy: " << counts[0].item<int64_t>() << " robust of " << counts[1].item<int64_t>()
                           << " clean; AutoAttack: " << aa[0].item<int64_t>() << " robust");
  // The attacks changed something on both ranks' batches, so an unmerged or mis-seeded shard would show.
  auto broken = one[1] & one[0].logical_not();
  auto batch_of = torch::arange(kEvalPoints).div(kEvalBatch, "floor");
  auto on_rank1 = batch_of.remainder(2).to(torch::kBool);                    // batches 1, 3: rank 1's
  CHECK((broken & on_rank1.logical_not()).any().item<bool>());               // PGD broke points of rank 0
  CHECK((broken & on_rank1).any().item<bool>());                             // and of rank 1
  CHECK(aa[1].item<int64_t>() == aa[0].item<int64_t>());  // re-checked as counted
  CHECK(aa[3].item<int64_t>() == 4);                       // apgd-ce, apgd-t, fab-t, square
  CHECK(aa[2].item<int64_t>() > aa[0].item<int64_t>());    // AutoAttack broke points
  fs::remove_all(dir);
}

TEST_CASE("distributed: sharded evaluations given other settings on one rank are refused by every rank, naming the "
          "setting", "[distributed]") {
  if (skip_without_gloo()) return;
  auto dir = run_workers("eval_settings");
  for (int rank = 0; rank < kWorld; ++rank) {
    INFO("rank " << rank << " (1: refused naming eps, x, batch_size)");
    const auto flags = load(dir, "eval_settings", rank).at(0);
    CHECK(torch::equal(flags, torch::tensor({1, 1, 1}, torch::kLong)));
  }
  fs::remove_all(dir);
}

TEST_CASE("distributed: sharded AutoAttack resumes from a state file of one process stopped within an attack, "
          "and one process from the one it writes", "[distributed]") {
  if (skip_without_gloo()) return;
  torch::set_num_threads(1);
  auto net = make_net(21);
  auto [x, y] = eval_state_points(net);
  auto reference = iat::eval::AutoAttack(eval_aa_options()).run(net, x, y);
  REQUIRE(reference.steps.size() == 4);
  REQUIRE(reference.steps[0].attacked == kEvalPoints);  // APGD-CE on all 41: 5 batches
  REQUIRE(reference.steps[1].attacked > 0);             // APGD-T had points left
  const auto uninterrupted = report_tensors(reference);
  // One process, stopped after APGD-CE's second batch (of 5): the state holds 2 of its batches.
  const fs::path path = eval_state_path(::getpid());
  fs::remove(path);
  struct Stop {};
  auto stopping = eval_state_options(path).on_batch([](const iat::eval::AutoAttackProgress& p) {
    if (p.attack == "apgd-ce" && p.batch == 2) throw Stop{};
  });
  CHECK_THROWS_AS(iat::eval::AutoAttack(stopping).run(net, x, y), Stop);
  REQUIRE(fs::exists(path));
  // Two processes resume from it (batches 3-5 of APGD-CE shared, then the rest) and rank 0 rewrites it.
  auto dir = run_workers("eval_state");
  for (int rank = 0; rank < kWorld; ++rank) {
    INFO("rank " << rank);
    auto r = load(dir, "eval_state", rank);
    REQUIRE(r.size() == uninterrupted.size() + 1);
    const auto flags = r.back();
    CHECK(flags[0].item<int64_t>() == 1);  // files absent on rank 1, unreadable on rank 0: refused by both
    CHECK(flags[1].item<int64_t>() == 1);  // resumed
    CHECK(flags[2].item<int64_t>() == 1);  // APGD-CE continued from the state
    CHECK(flags[3].item<int64_t>() == 0);  // APGD-T run afresh
    check_same_report(r, uninterrupted, "on this rank");
  }
  // One process resumes from what rank 0 wrote: every attack done, the same report.
  auto report = iat::eval::AutoAttack(eval_state_options(path)).run(net, x, y);
  CHECK(report.resumed);
  for (const auto& step : report.steps) CHECK(step.resumed);
  const auto again = report_tensors(report);
  REQUIRE(again.size() == uninterrupted.size());
  check_same_report(again, uninterrupted, "resumed in one process");
  fs::remove(path);
  fs::remove_all(dir);
}

TEST_CASE("distributed: sharded AutoAttack stopped within an attack resumes from its last round, on 2 processes "
          "and in 1", "[distributed]") {
  if (skip_without_gloo()) return;
  torch::set_num_threads(1);
  auto net = make_net(21);
  auto [x, y] = eval_state_points(net);
  const auto uninterrupted = report_tensors(iat::eval::AutoAttack(eval_aa_options()).run(net, x, y));
  const fs::path path = eval_stop_path(::getpid()), mid = path.string() + ".mid";
  fs::remove(path);
  auto dir = run_workers("eval_stop");
  for (int rank = 0; rank < kWorld; ++rank) {
    INFO("rank " << rank);
    auto r = load(dir, "eval_stop", rank);
    REQUIRE(r.size() == uninterrupted.size() + 1);
    const auto flags = r.back();
    CHECK(flags[0].item<int64_t>() == 1);              // stopped in APGD-CE
    CHECK(flags[1].item<int64_t>() == 1);              // APGD-CE continued from the state
    CHECK(flags[2].item<int64_t>() == (rank == 0));    // ... with batch 5 alone, rank 0's
    if (rank == 0) CHECK(flags[3].item<int64_t>() == 1);  // logged "apgd-ce after 4 batch(es)"
    check_same_report(r, uninterrupted, "on this rank");
  }
  // One process resumes from the file as the two ranks left it: APGD-CE from batch 5.
  REQUIRE(fs::exists(mid));
  std::string log;
  int64_t apgd_ce_batches = 0;
  auto report = iat::eval::AutoAttack(eval_state_options(mid)
                                          .log([&](const std::string& line) { log += line + "\n"; })
                                          .on_batch([&](const iat::eval::AutoAttackProgress& p) {
                                            apgd_ce_batches += p.attack == "apgd-ce";
                                          }))
                    .run(net, x, y);
  CHECK(report.steps.at(0).resumed);
  CHECK_FALSE(report.steps.at(1).resumed);
  CHECK(apgd_ce_batches == 1);
  CHECK(log.find("apgd-ce after 4 batch(es)") != std::string::npos);
  const auto again = report_tensors(report);
  REQUIRE(again.size() == uninterrupted.size());
  check_same_report(again, uninterrupted, "resumed in one process");
  fs::remove(path);
  fs::remove(mid);
  fs::remove_all(dir);
}

// NCCL beside Gloo (ProcessGroupOptions::nccl_for_cuda), on one GPU: a group of one process whose CUDA
// collectives must reach NCCL and CPU ones Gloo. Runs in scripts/gpu_check.sh; skipped without a GPU or in a
// LibTorch without NCCL (Debian's), where the option is refused instead.
TEST_CASE("distributed: NCCL for CUDA tensors beside Gloo for CPU tensors", "[distributed][cuda]") {
  if (skip_without_gloo()) return;
  dist::Environment env;
  env.master_port = free_port();
  dist::ProcessGroupOptions options;
  options.timeout = std::chrono::seconds(60);
  options.nccl_for_cuda = true;
  if (!dist::nccl_available()) {
    CHECK_THROWS_WITH(dist::init_process_group(env, options), Catch::Contains("nccl_for_cuda needs a CUDA build"));
    return;
  }
  if (!torch::cuda::is_available()) {
    WARN("skipped: no CUDA device in this run (scripts/gpu_check.sh runs it on a GPU)");
    return;
  }
#if IAT_HAVE_NCCL
  auto pg = dist::init_process_group(env, options);
  CHECK(pg->getBackend(c10::DeviceType::CUDA)->getBackendName() == "nccl");
  CHECK(pg->getBackend(c10::DeviceType::CPU)->getBackendName() == "gloo");
  auto on_gpu = torch::arange(6, torch::kFloat).cuda();
  auto on_cpu = torch::arange(6, torch::kFloat);
  dist::all_reduce_sum(pg, on_gpu);  // one rank: the sum is the tensor itself, through each backend
  dist::all_reduce_sum(pg, on_cpu);
  CHECK(torch::equal(on_gpu.cpu(), torch::arange(6, torch::kFloat)));
  CHECK(torch::equal(on_cpu, torch::arange(6, torch::kFloat)));
  // DataParallel's buckets of a model on the GPU travel over NCCL.
  torch::nn::Linear net(4, 3);
  net->to(torch::kCUDA);
  dist::DataParallel dp(pg, net.ptr());
  auto x = torch::rand({8, 4}, torch::kCUDA);
  net->forward(x).square().sum().backward();
  auto expected = net->weight.grad().clone();
  dp.synchronize_gradients();
  CHECK(torch::allclose(net->weight.grad(), expected));
#endif
}
