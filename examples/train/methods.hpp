#pragma once
// The training methods of iat-train: each holds the library components its recipe needs and calls that
// recipe. No method logic lives here beyond choosing the components and the two schedule `if`s of the
// paper (inverse momentum from epoch T, the one-off epoch T').

#include "config.hpp"

#include <iat/attacks/fgsm.hpp>
#include <iat/attacks/nfgsm.hpp>
#include <iat/attacks/pgd.hpp>
#include <iat/data/dataset.hpp>
#include <iat/data/loader.hpp>
#include <iat/data/npz.hpp>
#include <iat/distributed/data_parallel.hpp>
#include <iat/inverse/alignment_loss.hpp>
#include <iat/inverse/inverse_attack.hpp>
#include <iat/inverse/one_off_cache.hpp>
#include <iat/inverse/universal_perturbation.hpp>
#include <iat/models/zoo.hpp>
#include <iat/train/awp.hpp>
#include <iat/train/recipes.hpp>
#include <iat/train/run_model.hpp>

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <fmt/format.h>

#include <memory>
#include <string>

namespace iat_examples {

class Method {
 public:
  Method(const TrainConfig& cfg, int64_t num_classes, std::vector<int64_t> input_shape, int64_t num_examples,
         torch::Device device)
      : cfg_(cfg), name_(cfg.method), align_(iat::AlignmentLossOptions().weight(cfg.lambda)) {
    const bool single = is_single_step_method(name_);
    uses_uip_ = uses_universal_perturbation(name_);
    // The adversary.
    if (name_ == "trades" || name_ == "trades-uiat" || name_ == "hat") {
      attack_ = std::make_unique<iat::PGD>(
          iat::train::trades_attack_options().eps(cfg.eps).step_size(cfg.step_size).steps(cfg.steps));
    } else if (name_.rfind("fgsm-rs", 0) == 0) {
      attack_ = std::make_unique<iat::FGSM>(iat::FGSMOptions().eps(cfg.eps).random_start(true));
    } else if (name_.rfind("n-fgsm", 0) == 0) {
      attack_ = std::make_unique<iat::NFGSM>(iat::NFGSMOptions().eps(cfg.eps));
    } else if (name_.rfind("gradalign", 0) == 0) {
      // GradAlign: FGSM from zero with step 1.25ε, clipped to ε, plus the regulariser.
      attack_ = std::make_unique<iat::FGSM>(iat::FGSMOptions().eps(cfg.eps).step_size(1.25 * cfg.eps));
      single_options_.grad_align_weight(cfg.grad_align_lambda).grad_align_eps(cfg.eps);
    } else {
      attack_ = std::make_unique<iat::PGD>(iat::PGDOptions().eps(cfg.eps).step_size(cfg.step_size).steps(cfg.steps));
    }
    // The friend.
    // --inv-step-size 0 leaves α' to the library: ε'/2 instance-wise, ε' universal.
    const iat::optional<double> inv_step =
        cfg.inv_step_size > 0 ? iat::optional<double>(cfg.inv_step_size) : iat::optional<double>();
    inverse_ = std::make_unique<iat::InverseAttack>(
        iat::InverseAttackOptions().eps(cfg.inv_eps).step_size(inv_step).steps(cfg.inv_steps).beta(cfg.beta));
    if (uses_uip_) {
      uip_ = iat::UniversalInversePerturbation(iat::UniversalInversePerturbationOptions(num_classes, input_shape)
                                                   .eps(cfg.inv_eps)
                                                   .step_size(inv_step)
                                                   .beta(single ? 0.0 : cfg.beta));
      uip_->to(device);
    }
    if (name_ == "uiat-one-off") {
      cache_ = iat::OneOffCache(iat::OneOffCacheOptions(num_examples, num_classes).one_off_epoch(cfg.one_off_epoch));
      cache_->to(device);
    }
    align_->to(device);
    if (name_ == "hat") load_helper(cfg.helper, num_classes, input_shape, device);
    if (cfg.awp_gamma > 0) {
      awp_ = std::make_unique<iat::train::AWP>(
          iat::train::AWPOptions().gamma(cfg.awp_gamma).proxy_lr(cfg.awp_proxy_lr).warmup_epochs(cfg.awp_warmup));
    }
  }

  /// The paper's two schedule decisions, as one visible `if` each.
  void begin_epoch(int64_t epoch) {
    if (uip_) uip_->options.momentum(cfg_.momentum_epoch >= 0 && epoch >= cfg_.momentum_epoch ? cfg_.gamma : 0.0);
  }

  /// The step's loss of `module` (seen through `model`, its precision view). With AWP active in `epoch`
  /// (docs/awp.md): x' found once at w, the weights moved to w + v by an ascent step of this same recipe on
  /// x', and the loss returned at w + v; restore_weights() after the optimiser step takes v away again.
  iat::train::StepLoss loss(iat::models::AnyClassifier& module, const iat::ModelRef& model, const iat::data::Batch& b,
                            int64_t epoch) {
    if (!awp_ || !awp_->active(epoch)) return recipe(model, b, epoch, *attack_, uip_);
    iat::train::FixedExamples adv(attack_->perturb(model, b.x, b.y));  // what the recipe's own call would find
    perturbation_ = awp_->perturb(module, [&](const iat::ModelRef& /*same module*/) {
      // UIAT's (and TRADES + UIAT's) δ and momentum step in a scratch copy here, and once in the training
      // call below.
      auto uip = uip_ ? iat::train::scratch_copy(uip_) : uip_;
      return recipe(model, b, epoch, adv, uip).loss;
    }, epoch);
    return recipe(model, b, epoch, adv, uip_);
  }

  /// After the optimiser step: w ← w − v when AWP perturbed this step's weights.
  void restore_weights(iat::models::AnyClassifier& module) {
    if (awp_) awp_->restore(module, perturbation_);
  }

  void save(torch::serialize::OutputArchive& archive) const {
    TORCH_CHECK(!perturbation_.applied, "iat-train: a checkpoint between AWP's perturb and restore would hold w + v");
    if (uip_) {
      torch::serialize::OutputArchive a;
      uip_->save(a);
      archive.write("uip", a);
    }
    if (cache_) {
      torch::serialize::OutputArchive a;
      cache_->save(a);
      archive.write("one_off_cache", a);
    }
  }

  void load(torch::serialize::InputArchive& archive) {
    if (uip_) {
      torch::serialize::InputArchive a;
      archive.read("uip", a);
      uip_->load(a);
    }
    if (cache_) {
      torch::serialize::InputArchive a;
      archive.read("one_off_cache", a);
      cache_->load(a);
    }
  }

  /// Under data parallelism: UIAT's per-class gradient sums are all-reduced before the sign step, so δ_y and
  /// its momentum are the global batch's on every rank, and AWP's ascent gradients are averaged before v is
  /// formed, so v is the global batch's too.
  void distribute(const iat::distributed::ProcessGroupPtr& pg) {
    if (uip_) uip_->set_gradient_reducer(iat::distributed::uiat_gradient_reducer(pg));
    if (awp_) awp_->set_gradient_reducer(iat::distributed::awp_gradient_reducer(pg));
  }

  /// Whether the method keeps a one-off cache whose rows the ranks must share (share_cache_rows).
  bool has_cache() const { return static_cast<bool>(cache_); }

  /// Every rank gets the one-off cache rows the others stored: `written` are this rank's dataset positions
  /// since the last call. A collective: every rank calls it at the same point.
  void share_cache_rows(const iat::distributed::ProcessGroupPtr& pg, const torch::Tensor& written) {
    if (cache_) iat::distributed::share_cache_rows(pg, cache_, written);
  }

  /// The dataset positions of `index` (a batch's) that the one-off cache holds no row for yet, on the CPU:
  /// one_off_loss stores them when it meets them after T'.
  torch::Tensor unstored_rows(const torch::Tensor& index) const {
    auto idx = index.cpu();
    return idx.masked_select(cache_->is_stored(idx).cpu().logical_not());
  }

  /// The data of the supplement's Figure 1 for this model, as a numpy archive (figure1.npz) that
  /// scripts/report.py draws: one test image per class (`natural`), its inverse adversary (`inverse`), for
  /// UIAT methods the universal inverse adversary (`universal`) and the class's δ_y (`delta`, raw), each
  /// [n, C, H, W] float32 with the model's p_y (`<name>_p_y`, [n]), and the classes (`labels`, int64 [n]).
  void write_figure(iat::models::AnyClassifier& model, const iat::data::Dataset& test, torch::Device device,
                    const std::string& path) {
    std::vector<int64_t> picks;
    for (int64_t c = 0; c < test.num_classes && picks.size() < 10; ++c) {
      auto where = (test.labels == c).nonzero();
      if (where.numel() > 0) picks.push_back(where[0][0].item<int64_t>());
    }
    if (picks.empty()) return;
    auto idx = torch::tensor(picks, torch::kLong);
    auto x = test.images.index_select(0, idx).to(device).to(torch::kFloat).div_(255);
    auto y = test.labels.index_select(0, idx).to(device);
    model->eval();
    auto x_inv = inverse_->perturb(model, x, y);
    auto p_y = [&](const torch::Tensor& images) {
      torch::NoGradGuard ng;
      return torch::softmax(model(images), 1).gather(1, y.unsqueeze(1)).squeeze(1).to(torch::kFloat).cpu();
    };
    std::vector<std::pair<std::string, torch::Tensor>> arrays = {
        {"labels", y.to(torch::kLong).cpu()}, {"natural", x.cpu()}, {"natural_p_y", p_y(x)},
        {"inverse", x_inv.detach().cpu()}, {"inverse_p_y", p_y(x_inv)}};
    if (uip_) {
      auto x_universal = uip_(x, y).detach();
      arrays.emplace_back("universal", x_universal.cpu());
      arrays.emplace_back("universal_p_y", p_y(x_universal));
      arrays.emplace_back("delta", uip_->delta().index_select(0, y).detach().to(torch::kFloat).cpu());
    }
    try {
      iat::data::save_npz(path, arrays);
    } catch (const std::exception& e) {
      std::cerr << "iat-train: warning: could not write " << path << ": " << e.what() << "\n";
    }
  }

 private:
  // HAT's standard model (iat::train::load_run_model: CRC-checked, eval mode), refused unless it classifies
  // this run's inputs into this run's classes.
  void load_helper(const std::string& path, int64_t num_classes, const std::vector<int64_t>& input_shape,
                   torch::Device device) {
    auto run = iat::train::load_run_model(path, device);
    const auto& s = run.spec;
    TORCH_CHECK_VALUE(s.num_classes == num_classes && s.in_channels == input_shape.at(0) &&
                          s.image_size == input_shape.at(1),
                      "--helper '", path, "' is a ", s.arch, " for ", s.num_classes, " classes of ", s.in_channels,
                      "x", s.image_size, "x", s.image_size, " images; this run trains ", num_classes, " classes of ",
                      input_shape.at(0), "x", input_shape.at(1), "x", input_shape.at(2),
                      " images (train the helper with --method standard on the same data)");
    helper_ = run.model;
  }

  // The method's recipe on batch b, with the adversary and universal perturbation given (AWP's ascent passes
  // the fixed x' and a scratch copy of δ).
  iat::train::StepLoss recipe(const iat::ModelRef& model, const iat::data::Batch& b, int64_t epoch, iat::Attack& attack,
                              iat::UniversalInversePerturbation& uip) {
    namespace T = iat::train;
    if (name_ == "pgd-at") return T::pgd_at_loss(model, b.x, b.y, attack);
    if (name_ == "trades") return T::trades_loss(model, b.x, b.y, attack, cfg_.trades_beta);
    if (name_ == "trades-uiat") return T::trades_uiat_loss(model, b.x, b.y, attack, uip, align_, cfg_.trades_beta);
    if (name_ == "mart") return T::mart_loss(model, b.x, b.y, attack, cfg_.mart_beta);
    if (name_ == "standard") return T::natural_loss(model, b.x, b.y);
    if (name_ == "hat") {
      return T::hat_loss(model, b.x, b.y, attack, helper_,
                         T::HATOptions().beta(cfg_.hat_beta).gamma(cfg_.hat_gamma).helper_scale(cfg_.hat_scale));
    }
    if (name_ == "iat") return T::iat_loss(model, b.x, b.y, attack, *inverse_, align_);
    if (name_ == "uiat") return T::uiat_loss(model, b.x, b.y, attack, uip, align_);
    if (name_ == "uiat-one-off") return T::one_off_loss(model, b.x, b.y, b.index, epoch, attack, *inverse_, cache_, align_);
    if (uses_uip_) return T::single_step_uiat_loss(model, b.x, b.y, attack, uip, align_, single_options_);
    return T::single_step_loss(model, b.x, b.y, attack, single_options_);
  }

  TrainConfig cfg_;
  std::string name_;
  bool uses_uip_ = false;
  std::unique_ptr<iat::Attack> attack_;
  std::unique_ptr<iat::InverseAttack> inverse_;
  iat::UniversalInversePerturbation uip_{nullptr};
  iat::OneOffCache cache_{nullptr};
  iat::AlignmentLoss align_;
  iat::train::SingleStepOptions single_options_;
  std::unique_ptr<iat::train::AWP> awp_;           // with --awp-gamma > 0
  iat::models::AnyClassifier helper_{nullptr};     // --method hat
  iat::train::WeightPerturbation perturbation_;    // v of the running step, between loss() and restore_weights()
};

inline std::unique_ptr<Method> make_method(const TrainConfig& cfg, int64_t num_classes, std::vector<int64_t> input_shape,
                                           int64_t num_examples, torch::Device device) {
  return std::make_unique<Method>(cfg, num_classes, std::move(input_shape), num_examples, device);
}

}  // namespace iat_examples
