#pragma once
// iat-train's loop: data, model, optimiser, schedule, weight averaging, the method's loss recipe,
// per-epoch evaluation, atomic checkpoints with exact resume, progress, metrics and pictures.

#include "config.hpp"
#include "methods.hpp"

#include "../common/progress.hpp"
#include "../common/report_tool.hpp"
#include "../common/torchrun.hpp"

#include <iat/attacks/pgd.hpp>
#include <iat/data/load.hpp>
#include <iat/data/loader.hpp>
#include <iat/data/mix.hpp>
#include <iat/data/npz.hpp>
#include <iat/distributed/data_parallel.hpp>
#include <iat/eval/robust_accuracy.hpp>
#include <iat/models/state_dict.hpp>
#include <iat/models/zoo.hpp>
#include <iat/precision.hpp>
#include <iat/train/checkpoint.hpp>
#include <iat/train/ema.hpp>
#include <iat/train/one_cycle.hpp>
#include <iat/train/run_model.hpp>

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/optim/sgd.h>
#include <torch/serialize.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <unistd.h>

namespace iat_examples {

/// Set by SIGINT/SIGTERM: the loop writes a checkpoint at the next batch boundary and exits.
inline std::atomic<int>& stop_signal() {
  static std::atomic<int> s{0};
  return s;
}
inline void install_stop_handlers() {
  auto handler = [](int sig) { stop_signal().store(sig); };
  std::signal(SIGINT, handler);
  std::signal(SIGTERM, handler);
}

/// A deterministic 10-class problem generated from `seed`, for tests and timing: [channels, size, size]
/// images whose class is a bright patch (a quarter of the side) at one of 9 places, or none.
/// `--data synthetic` is 1×12×12 (tests); `--data synthetic-cifar` is 3×32×32 (CIFAR-shaped timing).
inline iat::data::Dataset synthetic_dataset(int64_t n, uint64_t seed, int64_t channels = 1, int64_t size = 12) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto labels = at::randint(0, 10, {n}, gen, torch::kLong);
  auto images = at::rand({n, channels, size, size}, gen, torch::kFloat) * 0.4;
  const int64_t patch = size / 3;
  auto acc = labels.accessor<int64_t, 1>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = acc[i];
    if (c == 9) continue;
    images[i].slice(1, (c / 3) * patch, (c / 3 + 1) * patch).slice(2, (c % 3) * patch, (c % 3 + 1) * patch) += 0.6;
  }
  return iat::data::Dataset{(images.clamp(0, 1) * 255).round().to(torch::kByte), labels, 10, "synthetic"};
}

/// --bf16 and --channels-last as the library's precision options; a device that cannot run them stops the
/// run before it starts, with the flag and the reason.
inline iat::PrecisionOptions precision_for(const TrainConfig& cfg, const torch::Device& device) {
  auto precision = iat::PrecisionOptions()
                       .autocast(cfg.bf16 ? torch::kBFloat16 : torch::kFloat)
                       .channels_last(cfg.channels_last);
  try {
    iat::check_precision(precision, device);
  } catch (const c10::Error& e) {
    TORCH_CHECK_VALUE(false, "--bf16 cannot run on device ", device.str(), ": ", e.what_without_backtrace());
  }
  return precision;
}

class Trainer {
 public:
  explicit Trainer(TrainConfig cfg) : cfg_(std::move(cfg)) {}

  int run() {
    try {
      return train();
    } catch (const std::exception& e) {
      // Under torchrun a failed collective means another rank stopped, died or hung: say so, not only Gloo's words
      // (Gloo's transport errors reach here as c10::Error or as gloo's own exceptions).
      const std::string what = iat_examples::error_text(e);
      if (!pg_ || !iat_examples::is_lost_rank_error(what)) throw;
      TORCH_CHECK(false, iat_examples::lost_ranks_message(env_, cfg_.dist_timeout), "; stopping. The last checkpoint, ",
                  last_checkpoint_.empty() ? std::string("(none written by this run)") : last_checkpoint_,
                  ", resumes with --resume. Gloo said: ", what);
    }
  }

 private:
  int train() {
    start_distributed();  // under torchrun: the process group, before anything can fail on one rank alone
    // Before any work: an unusable --out or another run's folder stops here (rank 0 owns the folder).
    on_every_rank("checking --out", [&] {
      if (main_rank()) prepare_output_folder();
    });
    on_every_rank("setting up", [&] {
      setup();
      if (cfg_.resume) {
        load_checkpoint();  // every rank reads the checkpoint: under torchrun --out is on a shared filesystem
      } else if (cfg_.overwrite && main_rank()) {
        remove_earlier_outputs();
      }
    });
    if (pg_) {
      // Rank 0's weights everywhere (equal already: same seed, same checkpoint), buckets and hooks.
      dp_ = std::make_unique<iat::distributed::DataParallel>(pg_, model_.ptr());
      method_->distribute(pg_);
    }
    if (main_rank()) {
      write_config();
      write_metrics();   // on resume: rebuilt from the checkpoint, so no row is lost or doubled by a kill
      write_progress();  // likewise: the rows appended after the checkpoint are dropped and measured again
    }
    const int64_t batches = loader_->size();
    // The running loss and accuracy are recorded twenty times an epoch (progress.jsonl; after every batch
    // when there are fewer), each row the mean over the batches since the previous one, the last row at the
    // epoch's last batch: batch b ends a row when b * 20 / batches passes a whole number.
    auto ends_progress_row = [batches](int64_t b) {
      return b * kProgressRowsPerEpoch / batches != (b - 1) * kProgressRowsPerEpoch / batches;
    };
    for (int64_t epoch = start_epoch_; epoch < cfg_.epochs; ++epoch) {
      method_->begin_epoch(epoch);
      model_->train();
      loader_->set_epoch(epoch, start_batch_);  // start_batch_ > 0 only when resuming mid-epoch
      Progress bar(fmt::format("epoch {}/{}", epoch + 1, cfg_.epochs), batches, cfg_.plain_progress);
      // Running sums of this epoch (restored from the checkpoint when resuming mid-epoch).
      double& loss_sum = epoch_sums_[0];
      double& correct = epoch_sums_[1];
      double& seen = epoch_sums_[2];
      const auto t0 = std::chrono::steady_clock::now();
      const double seen_before = seen;  // resumed mid-epoch: the examples before the interruption
      int64_t b = start_batch_;
      for (auto& global_batch : *loader_) {
        schedule_->set_step(step_);
        // Every rank draws the same global batch (same seed) and trains on its slice of it.
        auto batch = rank_slice(global_batch);
        if (cfg_.channels_last) batch.x = batch.x.contiguous(at::MemoryFormat::ChannelsLast);
        if (dp_) dp_->begin_step();  // rank 0's buffers (batch-norm statistics), as PyTorch's DDP
        // After T' the step stores the rows T' never visited; the ranks share them as they share T''s.
        torch::Tensor late_rows;
        if (pg_ && method_->has_cache() && epoch > cfg_.one_off_epoch) late_rows = method_->unstored_rows(batch.index);
        iat::train::StepLoss out;
        {
          // Every random draw of the step (starts, noise, the inverse start) is this rank's slice of the one a
          // single process would make for the global batch.
          iat::distributed::GlobalDrawSlice draw(env_.rank, env_.world_size);
          out = method_->loss(model_, iat::with_precision(model_, precision_), batch, epoch);
        }
        if (one_off_epoch(epoch)) written_rows_.push_back(batch.index.cpu());
        if (late_rows.defined() && late_rows.numel() > 0) written_rows_.push_back(late_rows);
        auto loss = out.loss;
        if (step_ == cfg_.inject_nan_at_step) loss = loss * std::numeric_limits<float>::quiet_NaN();
        const double n_local = static_cast<double>(batch.y.size(0));
        // The step's sums over the ranks (loss, correct, examples, stop requests): one small all-reduce, so
        // that every rank sees the same numbers and stops at the same step.
        const auto sums = over_ranks({loss.item<double>() * n_local,
                                      out.adv_logits.argmax(1).eq(batch.y).sum().item<double>(), n_local,
                                      stop_signal().load() != 0 ? 1.0 : 0.0});
        const double loss_value = sums[0] / sums[2];
        if (!std::isfinite(loss_value)) {
          bar.finish();
          if (main_rank()) std::cerr << fmt::format("iat-train: non-finite loss ({}) at step {} (epoch {}, batch {}); stopping. {}\n",
                                   loss_value, step_, epoch + 1, b + 1,
                                   last_checkpoint_.empty()
                                       ? "No checkpoint was written by this run before it; lower --max-lr or check "
                                         "the data, and start again."
                                       : fmt::format("The last good checkpoint '{}' ({}) is left as it was; lower "
                                                     "--max-lr or check the data, then continue from it with "
                                                     "--resume (and --resume-force for a changed setting).",
                                                     checkpoint_path(), last_checkpoint_));
          return kExitNonFinite;
        }
        optimizer_->zero_grad();
        loss.backward();
        if (dp_) dp_->synchronize_gradients();  // every .grad is now the mean over the ranks
        optimizer_->step();
        method_->restore_weights(model_);  // AWP: w + v - step -> w - step (nothing without AWP)
        if (ema_) ema_->update();
        ++step_;
        ++b;
        loss_sum += sums[0];
        correct += sums[1];
        seen += sums[2];
        for (size_t i = 0; i < window_sums_.size(); ++i) window_sums_[i] += sums[i];
        if (ends_progress_row(b)) record_progress(epoch, b, batches);
        bar.update(b, static_cast<int64_t>(sums[2]),
                   {{"loss", loss_sum / seen}, {"adv_acc", correct / seen}, {"lr", schedule_->lr_at(std::max<int64_t>(step_ - 1, 0))}});
        if (sums[3] > 0 || (cfg_.stop_after_steps > 0 && step_ >= cfg_.stop_after_steps)) {
          bar.finish();
          save_checkpoint(epoch, b);
          std::cout << fmt::format("iat-train: stopped at step {} (epoch {}, batch {}/{}); checkpoint written to {}; "
                                   "continue with --resume\n",
                                   step_, epoch + 1, b, batches, checkpoint_path());
          return kExitStopped;
        }
      }
      bar.finish();
      start_batch_ = 0;
      const double train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      train_seconds_total_ += train_seconds;
      auto eval = evaluate();
      nlohmann::json row = {{"epoch", epoch + 1},
                            {"step", step_},
                            {"train_loss", loss_sum / std::max(seen, 1.0)},
                            {"train_adv_acc", correct / std::max(seen, 1.0)},
                            {"lr", schedule_->lr_at(std::max<int64_t>(step_ - 1, 0))},
                            {"natural_acc", eval.natural},
                            {fmt::format("pgd{}_acc", cfg_.eval_pgd_steps), eval.robust},
                            {"seconds", train_seconds},
                            // The examples this process trained on over the time it took (a resumed epoch's
                            // earlier part ran in another process, in a time no clock here measured).
                            {"images_per_second", (seen - seen_before) / std::max(train_seconds, 1e-9)}};
      if (ema_) {
        row["ema_natural_acc"] = eval.ema_natural;
        row[fmt::format("ema_pgd{}_acc", cfg_.eval_pgd_steps)] = eval.ema_robust;
      }
      metrics_.push_back(row);
      std::cout << fmt::format("epoch {}/{}: loss {:.4f}, natural {:.2f}%, PGD-{} {:.2f}%{} ({:.0f} s)\n", epoch + 1,
                               cfg_.epochs, row["train_loss"].get<double>(), 100 * eval.natural, cfg_.eval_pgd_steps,
                               100 * eval.robust,
                               ema_ ? fmt::format(", EMA natural {:.2f}% PGD {:.2f}%", 100 * eval.ema_natural,
                                                  100 * eval.ema_robust)
                                    : "",
                               train_seconds);
      epoch_sums_ = {0, 0, 0};
      save_checkpoint(epoch + 1, 0);
      if (main_rank()) {
        write_metrics();  // after the checkpoint holding this row is committed (a resume rebuilds it anyway)
      }
    }
    if (main_rank()) finish();
    return 0;
  }

 private:
  struct Eval {
    double natural = 0, robust = 0, ema_natural = 0, ema_robust = 0;
  };

  // ---- several processes ---------------------------------------------------------------------------
  bool main_rank() const { return env_.rank == 0; }

  // Under torchrun (RANK and WORLD_SIZE set, more than one process): a Gloo process group from torchrun's
  // environment, waiting --dist-timeout seconds for the others. Ranks other than 0 print nothing on stdout
  // (errors still go to stderr, prefixed with the rank by torchrun's --tee / --redirects when asked).
  void start_distributed() {
    env_ = iat::distributed::environment_from_torchrun();
    if (env_.world_size == 1) return;
    TORCH_CHECK_VALUE(cfg_.batch_size % env_.world_size == 0, "--batch-size ", cfg_.batch_size,
                      " is the global batch and must be a multiple of the number of processes (WORLD_SIZE = ",
                      env_.world_size, "); each rank trains on --batch-size / WORLD_SIZE examples of it");
    pg_ = iat_examples::join_torchrun("iat-train", env_, cfg_.dist_timeout, wants_cuda());
  }

  // Runs `work` on every rank; when it fails on any rank, every rank stops (the failing one with its own
  // error, the others saying so) instead of waiting for the failed rank at the next collective.
  template <typename F>
  void on_every_rank(const char* what, F&& work) {
    if (!pg_) return work();
    std::exception_ptr error;
    try {
      work();
    } catch (...) {
      error = std::current_exception();
    }
    const double failed = iat::distributed::sum_over_ranks(pg_, {error ? 1.0 : 0.0})[0];
    if (error) std::rethrow_exception(error);
    TORCH_CHECK(failed == 0, "rank ", env_.rank, ": ", static_cast<int>(failed), " other rank(s) failed while ", what,
                " (their messages are above); stopping too");
  }

  // Sums over the ranks (the values themselves in a single process).
  std::vector<double> over_ranks(const std::vector<double>& values) const {
    if (!pg_) return values;
    try {
      return iat::distributed::sum_over_ranks(pg_, values);
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, "rank ", env_.rank, ": the other ranks did not answer within --dist-timeout ",
                  cfg_.dist_timeout, " s (did one stop or die?): ", e.what_without_backtrace());
    }
  }

  // This rank's share of a global batch (the batch itself in a single process).
  iat::data::Batch rank_slice(const iat::data::Batch& global) const {
    if (env_.world_size == 1) return global;
    const auto s = iat::distributed::slice_of_batch(global.x.size(0), env_.rank, env_.world_size);
    return {global.x.slice(0, s.begin, s.end), global.y.slice(0, s.begin, s.end),
            global.index.defined() ? global.index.slice(0, s.begin, s.end) : global.index};
  }

  bool one_off_epoch(int64_t epoch) const { return method_->has_cache() && pg_ && epoch == cfg_.one_off_epoch; }

  // The one-off rows this rank stored since the last checkpoint go to every rank (a collective).
  void share_written_rows() {
    if (!pg_ || !method_->has_cache()) return;
    method_->share_cache_rows(pg_, written_rows_.empty() ? torch::empty({0}, torch::kLong) : torch::cat(written_rows_));
    written_rows_.clear();
  }

  std::string checkpoint_path() const { return (std::filesystem::path(cfg_.out) / "checkpoint.pt").string(); }

  // Whether --device asks for CUDA, and the device it names (under torchrun "cuda" is LOCAL_RANK's GPU).
  bool wants_cuda() const { return iat_examples::wants_cuda(cfg_.device); }
  torch::Device pick_device() const {
    return iat_examples::pick_device(cfg_.device, pg_ != nullptr, [this] { return iat_examples::rank_gpu(env_); });
  }

  void setup() {
    at::set_num_threads(cfg_.threads);
    torch::manual_seed(cfg_.seed);
    device_ = pick_device();
    precision_ = precision_for(cfg_, device_);
    // Every batch has the same shape: let cuDNN time its convolution algorithms once and keep the fastest.
    if (device_.is_cuda()) at::globalContext().setBenchmarkCuDNN(true);
    std::filesystem::create_directories(cfg_.out);

    // Data.
    if (cfg_.dataset.rfind("synthetic", 0) == 0) {
      const bool cifar = cfg_.dataset == "synthetic-cifar";
      const int64_t c = cifar ? 3 : 1, side = cifar ? 32 : 12;
      train_ = synthetic_dataset(cfg_.train_subset > 0 ? cfg_.train_subset : 512, cfg_.seed + 1, c, side);
      test_ = synthetic_dataset(cfg_.test_subset, cfg_.seed + 2, c, side);
    } else {
      std::string dir = cfg_.data_dir;
      if (dir.empty() && cfg_.dataset == "fashion-mnist") dir = iat::data::default_fashion_mnist_dir();
      TORCH_CHECK_VALUE(!dir.empty(), "--data-dir is required for --data ", cfg_.dataset);
      train_ = iat::data::load_dataset(cfg_.dataset, dir, iat::data::Split::kTrain);
      test_ = iat::data::load_dataset(cfg_.dataset, dir, iat::data::Split::kTest);
      if (cfg_.train_subset > 0 && cfg_.train_subset < train_.size()) train_ = train_.subset(torch::arange(cfg_.train_subset));
    }
    if (cfg_.test_subset < test_.size()) test_ = test_.subset(torch::arange(cfg_.test_subset));
    auto loader_options = iat::data::LoaderOptions()
                              .batch_size(cfg_.batch_size)
                              .shuffle(true)
                              .seed(cfg_.seed)
                              .drop_last(true)
                              .augment(cfg_.augment)
                              .device(device_);
    if (!cfg_.generated.empty()) {
      auto generated = iat::data::read_npz(cfg_.generated, "image", "label", train_.num_classes);
      loader_ = std::make_unique<iat::data::MixedLoader>(train_, generated, cfg_.gen_ratio, loader_options);
    } else {
      loader_ = std::make_unique<iat::data::Loader>(train_, loader_options);
    }
    examples_ = loader_->index_range();

    // Model, optimiser, schedule, weight averaging.
    const auto [mean, std] = iat::models::normalization_for(cfg_.dataset);
    spec_ = iat::models::ModelSpec{cfg_.model, cfg_.activation, train_.num_classes, train_.channels(), train_.height(), mean, std};
    model_ = iat::models::make_model(spec_);
    model_->to(device_);
    if (cfg_.channels_last) iat::to_channels_last(*model_);
    optimizer_ = std::make_unique<torch::optim::SGD>(
        model_->parameters(), torch::optim::SGDOptions(cfg_.max_lr)
                                  .momentum(cfg_.momentum)
                                  .nesterov(cfg_.nesterov)
                                  .weight_decay(cfg_.weight_decay));
    schedule_ = std::make_unique<iat::train::OneCycleLR>(
        *optimizer_, iat::train::OneCycleOptions(cfg_.max_lr, cfg_.epochs * loader_->size()));
    if (cfg_.ema_decay > 0) {
      ema_model_ = iat::models::make_model(spec_);
      ema_model_->to(device_);
      if (cfg_.channels_last) iat::to_channels_last(*ema_model_);
      ema_model_->eval();
      ema_ = std::make_unique<iat::train::ModelEMA>(*model_, *ema_model_,
                                                    iat::train::ModelEMAOptions().decay(cfg_.ema_decay));
    }
    method_ = make_method(cfg_, train_.num_classes, {train_.channels(), train_.height(), train_.width()}, examples_,
                          device_);
    std::cout << fmt::format("iat-train: {} with {} on {} ({} training examples{}, {} test), {} parameters, "
                             "device {}, {} thread(s), {} epochs of {} batches\n",
                             cfg_.method, cfg_.model, cfg_.dataset, train_.size(),
                             cfg_.generated.empty() ? "" : fmt::format(" + {} generated", examples_ - train_.size()),
                             test_.size(), iat::models::count_parameters(*model_), device_.str(), cfg_.threads,
                             cfg_.epochs, loader_->size());
  }

  // ---- evaluation ---------------------------------------------------------------------------------
  std::pair<double, double> evaluate_model(iat::models::AnyClassifier& model) {
    // The library's evaluation PGD (iat::eval::pgd, α = ε/4): at --eval-pgd-steps 20 it is iat::eval::pgd20.
    iat::PGD pgd = iat::eval::pgd(cfg_.eps, cfg_.eval_pgd_steps);
    const bool was_training = model->is_training();
    model->eval();
    const iat::ModelRef fast = iat::with_precision(model, precision_);  // the training run's precision
    double nat = 0, rob = 0;
    const int64_t n = test_.size();
    for (int64_t i = 0; i < n; i += cfg_.batch_size) {
      const int64_t j = std::min(n, i + cfg_.batch_size);
      auto x = test_.images.slice(0, i, j).to(device_).to(torch::kFloat).div_(255);
      auto y = test_.labels.slice(0, i, j).to(device_);
      // The library's count, as iat-eval's --also pgd20: a non-finite row is wrong, and a point is robust
      // only when its clean input is classified correctly too.
      const auto r = iat::eval::robust_accuracy(fast, x, y, pgd, j - i);
      nat += static_cast<double>(r.clean_correct);
      rob += static_cast<double>(r.correct);
    }
    model->train(was_training);
    return {nat / static_cast<double>(n), rob / static_cast<double>(n)};
  }

  Eval evaluate() {
    // The evaluation draws random starts; keep them out of the training stream so that a resumed run
    // (which does not repeat this evaluation) sees the same random numbers as an uninterrupted one.
    // torch::manual_seed reseeds the CUDA generators too: on a GPU the device's stream is kept as well (else
    // every epoch after the first would draw its random starts from the same CUDA state).
    iat::train::KeepRandomStream keep(device_);
    torch::manual_seed(cfg_.seed + 977);
    Eval e;
    std::tie(e.natural, e.robust) = evaluate_model(model_);
    if (ema_) std::tie(e.ema_natural, e.ema_robust) = evaluate_model(ema_model_);
    return e;
  }

  // ---- checkpoints ----------------------------------------------------------------------------------
  nlohmann::json identity() const {
    return {{"format", "iat-train checkpoint 1"}, {"model", spec_.arch},          {"activation", spec_.activation},
            {"num_classes", spec_.num_classes},   {"in_channels", spec_.in_channels}, {"image_size", spec_.image_size},
            {"mean", spec_.mean},                 {"std", spec_.std},             {"dataset", cfg_.dataset},
            {"method", cfg_.method},              {"examples", examples_},        {"ema", ema_ != nullptr}};
  }

  void save_checkpoint(int64_t epoch, int64_t batch_in_epoch) {
    share_written_rows();  // so the checkpoint holds every rank's one-off rows, and every rank has them
    if (main_rank()) write_checkpoint(epoch, batch_in_epoch);  // the other ranks hold the same state
    last_checkpoint_ = batch_in_epoch == 0 ? fmt::format("end of epoch {}, step {}", epoch, step_)
                                           : fmt::format("epoch {}, batch {}, step {}", epoch + 1, batch_in_epoch, step_);
  }

  void write_checkpoint(int64_t epoch, int64_t batch_in_epoch) {
    torch::serialize::OutputArchive archive;
    archive.write("identity", c10::IValue(identity().dump()));
    iat::models::write_model_spec(archive, spec_);  // what iat::train::load_run_model rebuilds the model from
    archive.write("settings", c10::IValue(settings().dump()));
    archive.write("resume_log", c10::IValue(resume_log_.dump()));
    archive.write("epoch", c10::IValue(epoch));
    archive.write("batch_in_epoch", c10::IValue(batch_in_epoch));
    archive.write("step", c10::IValue(step_));
    archive.write("train_seconds", c10::IValue(train_seconds_total_));
    archive.write("metrics", c10::IValue(nlohmann::json(metrics_).dump()));
    archive.write("rng_cpu", iat::train::cpu_rng_state());
    if (device_.is_cuda()) archive.write("rng_cuda", iat::train::rng_state(device_));
    archive.write("epoch_sums", torch::tensor(std::vector<double>(epoch_sums_.begin(), epoch_sums_.end()), torch::kDouble));
    archive.write("progress", c10::IValue(nlohmann::json(progress_).dump()));
    archive.write("window_sums", torch::tensor(std::vector<double>(window_sums_.begin(), window_sums_.end()), torch::kDouble));
    torch::serialize::OutputArchive model_archive, optimizer_archive, method_archive;
    model_->save(model_archive);
    archive.write("model", model_archive);
    optimizer_->save(optimizer_archive);
    archive.write("optimizer", optimizer_archive);
    method_->save(method_archive);
    archive.write("method", method_archive);
    if (ema_) {
      torch::serialize::OutputArchive ema_archive;
      ema_model_->save(ema_archive);
      archive.write("ema_model", ema_archive);
      archive.write("ema_updates", c10::IValue(ema_->updates()));
    }
    iat::train::save_atomically(archive, checkpoint_path());
  }

  // Everything that changes a run's results, bound by its checkpoint: every setting of config.json but the
  // preset's name and the --generated and --helper paths (bound_settings), the device type, and the content
  // of the data and of the helper model.
  nlohmann::json settings() {
    if (data_fingerprint_.is_null()) {
      auto crc_of = [](const iat::data::Dataset& d) {
        auto images = d.images.cpu().contiguous();
        auto labels = d.labels.cpu().contiguous();
        const auto a = iat::detail::crc32_of(static_cast<const char*>(images.data_ptr()), images.nbytes());
        const auto b = iat::detail::crc32_of(static_cast<const char*>(labels.data_ptr()), labels.nbytes());
        return fmt::format("{} images {:08x}, labels {:08x}", d.size(), a, b);
      };
      data_fingerprint_ = {{"train_data", crc_of(train_)}, {"test_data", crc_of(test_)}};
      auto file_crc = [](const char* flag, const std::string& path) {
        std::ifstream in(path, std::ios::binary);
        TORCH_CHECK_VALUE(in, flag, ": cannot read '", path, "'");
        std::vector<char> buf(1 << 20);
        uLong crc = ::crc32(0L, Z_NULL, 0);
        size_t total = 0;
        while (in) {
          in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
          const auto got = static_cast<size_t>(in.gcount());
          crc = ::crc32(crc, reinterpret_cast<const Bytef*>(buf.data()), static_cast<uInt>(got));
          total += got;
        }
        return fmt::format("{} bytes, CRC-32 {:08x}", total, static_cast<unsigned>(crc));
      };
      if (!cfg_.generated.empty()) data_fingerprint_["generated_data"] = file_crc("--generated", cfg_.generated);
      if (!cfg_.helper.empty()) {
        data_fingerprint_["helper_model"] = file_crc("--helper", iat::train::run_checkpoint_file(cfg_.helper));
      }
    }
    auto j = bound_settings(cfg_);
    j["device_type"] = device_.is_cuda() ? "cuda" : device_.str();
    for (const auto& [key, value] : data_fingerprint_.items()) j[key] = value;
    return j;
  }

  static std::string setting_label(const std::string& key) {
    if (key == "device_type") return "device type (--device)";
    if (key == "train_data") return "training data (--data, --data-dir, --train-subset)";
    if (key == "test_data") return "test data (--data, --data-dir, --test-subset)";
    if (key == "generated_data") return "generated data (the --generated file's content)";
    if (key == "helper_model") return "HAT's standard model (the --helper checkpoint's content)";
    return flag_of(key);
  }

  void load_checkpoint() {
    const auto path = checkpoint_path();
    // Verifies the checksum: a truncated or damaged file stops here, naming itself.
    auto archive = iat::train::load_checkpoint(path, device_);
    auto fail_read = [&](const c10::Error& e) {
      TORCH_CHECK_VALUE(false, "--resume: cannot restore the run from '", path, "' (an incomplete or foreign checkpoint): ",
                        e.what_without_backtrace());
    };
    c10::IValue v;
    nlohmann::json saved_identity, saved_settings = nlohmann::json::object();
    try {
      archive.read("identity", v);
      saved_identity = nlohmann::json::parse(v.toStringRef());
      if (archive.try_read("settings", v)) saved_settings = nlohmann::json::parse(v.toStringRef());
      if (archive.try_read("resume_log", v)) resume_log_ = nlohmann::json::parse(v.toStringRef());
    } catch (const c10::Error& e) {
      fail_read(e);
    } catch (const nlohmann::json::exception& e) {
      TORCH_CHECK_VALUE(false, "--resume: '", path, "' holds an unreadable settings record: ", e.what());
    }

    // Every setting that changes results must match, unless --resume-force says otherwise.
    const auto now = settings();
    std::vector<std::string> keys;
    for (const auto& [key, value] : saved_settings.items()) keys.push_back(key);
    for (const auto& [key, value] : now.items()) {
      if (!saved_settings.contains(key)) keys.push_back(key);
    }
    std::string listing;
    nlohmann::json changes = nlohmann::json::array();
    for (const auto& key : keys) {
      const auto saved = saved_settings.contains(key)           ? saved_settings[key]
                         : settings_added_later().contains(key) ? settings_added_later()[key]
                                                                : nlohmann::json();
      const auto mine = now.contains(key) ? now[key] : nlohmann::json();
      if (saved == mine) continue;
      auto text = [](const nlohmann::json& j) { return j.is_null() ? std::string("(not recorded)") : j.dump(); };
      listing += fmt::format("\n  {}: saved {}, now {}", setting_label(key), text(saved), text(mine));
      changes.push_back({{"setting", setting_label(key)}, {"saved", saved}, {"now", mine}});
    }
    if (!changes.empty()) {
      TORCH_CHECK_VALUE(cfg_.resume_force, "--resume: the checkpoint '", path,
                        "' was written with other settings than this run's, and continuing would mix two runs:",
                        listing,
                        "\nResume with the saved values (config.json in --out lists them), or add --resume-force to "
                        "continue with the new ones (the result then matches neither run).");
      std::cout << fmt::format("iat-train: --resume-force: continuing '{}' with {} setting(s) that differ from the "
                               "checkpoint's (recorded in config.json and summary.json):{}\n",
                               path, changes.size(), listing);
    }

    // What the checkpoint's tensors are shaped for must match even when forced.
    const auto mine = identity();
    for (const char* key : {"format", "model", "activation", "num_classes", "in_channels", "image_size", "dataset",
                            "method", "examples", "ema"}) {
      TORCH_CHECK_VALUE(saved_identity.contains(key) && saved_identity[key] == mine[key], "--resume: the checkpoint '", path,
                        "' was written for ", key, " = ", saved_identity.contains(key) ? saved_identity[key].dump() : "(missing)",
                        ", but this run has ", key, " = ", mine[key].dump(), "; refusing to mix them");
    }

    try {
      archive.read("epoch", v);
      start_epoch_ = v.toInt();
      archive.read("batch_in_epoch", v);
      start_batch_ = v.toInt();
      archive.read("step", v);
      step_ = v.toInt();
      archive.read("train_seconds", v);
      train_seconds_total_ = v.toDouble();
      archive.read("metrics", v);
      metrics_ = nlohmann::json::parse(v.toStringRef()).get<std::vector<nlohmann::json>>();
      torch::serialize::InputArchive model_archive, optimizer_archive, method_archive;
      archive.read("model", model_archive);
      model_->load(model_archive);
      archive.read("optimizer", optimizer_archive);
      optimizer_->load(optimizer_archive);
      archive.read("method", method_archive);
      method_->load(method_archive);
      if (ema_) {
        torch::serialize::InputArchive ema_archive;
        archive.read("ema_model", ema_archive);
        ema_model_->load(ema_archive);
        archive.read("ema_updates", v);
        ema_->set_updates(v.toInt());
      }
      torch::Tensor sums;
      archive.read("epoch_sums", sums);
      for (size_t i = 0; i < epoch_sums_.size(); ++i) epoch_sums_[i] = sums[static_cast<int64_t>(i)].item<double>();
      // A checkpoint of an iat older than progress.jsonl has neither: the run goes on recording from here.
      if (archive.try_read("progress", v)) {
        progress_ = nlohmann::json::parse(v.toStringRef()).get<std::vector<nlohmann::json>>();
      }
      if (archive.try_read("window_sums", sums)) {
        for (size_t i = 0; i < window_sums_.size(); ++i) window_sums_[i] = sums[static_cast<int64_t>(i)].item<double>();
      }
      torch::Tensor rng;
      archive.read("rng_cpu", rng);
      iat::train::set_cpu_rng_state(rng.cpu());
      // A CUDA run's device stream; a run resumed on another kind of device goes on from its own seed.
      if (device_.is_cuda() && archive.try_read("rng_cuda", rng)) iat::train::set_rng_state(device_, rng);
    } catch (const c10::Error& e) {
      fail_read(e);
    } catch (const nlohmann::json::exception& e) {
      TORCH_CHECK_VALUE(false, "--resume: '", path, "' holds an unreadable metrics record: ", e.what());
    }
    if (!changes.empty()) {
      // A forced batch-size change: continue from the same number of examples into the epoch.
      const auto old_bs = saved_settings.value("batch_size", cfg_.batch_size);
      if (old_bs != cfg_.batch_size) start_batch_ = start_batch_ * old_bs / cfg_.batch_size;
      start_batch_ = std::min(start_batch_, loader_->size());
      resume_log_.push_back({{"epoch", start_epoch_}, {"batch_in_epoch", start_batch_}, {"step", step_}, {"changes", changes}});
    }
    last_checkpoint_ = start_batch_ == 0 ? fmt::format("end of epoch {}, step {}", start_epoch_, step_)
                                         : fmt::format("epoch {}, batch {}, step {}", start_epoch_ + 1, start_batch_, step_);
    std::cout << fmt::format("iat-train: resumed from {} at epoch {}, batch {}, step {}\n", path, start_epoch_ + 1,
                             start_batch_, step_);
  }

  // Stops before any work when --out cannot hold this run's outputs: a file in its place, a folder that
  // cannot be created or written, another run's checkpoint (without --resume or --overwrite), or no
  // checkpoint to resume from.
  void prepare_output_folder() const {
    namespace fs = std::filesystem;
    const fs::path out(cfg_.out);
    std::error_code ec;
    const auto st = fs::status(out, ec);
    TORCH_CHECK_VALUE(!fs::exists(st) || fs::is_directory(st), "--out '", cfg_.out,
                      "' is a file, not a folder; give a folder for the run's outputs");
    fs::create_directories(out, ec);
    TORCH_CHECK_VALUE(!ec, "--out '", cfg_.out, "': cannot create the folder: ", ec.message());
    std::string probe = (out / ".iat-train-write-test.XXXXXX").string();
    const int fd = ::mkstemp(probe.data());
    TORCH_CHECK_VALUE(fd >= 0, "--out '", cfg_.out, "' is not writable: ", iat::detail::errno_text(errno));
    ::close(fd);
    ::unlink(probe.c_str());
    const bool has_run = fs::exists(checkpoint_path());
    if (cfg_.resume) {
      TORCH_CHECK_VALUE(has_run, "--resume: no checkpoint at '", checkpoint_path(), "' (start without --resume)");
    } else {
      TORCH_CHECK_VALUE(!has_run || cfg_.overwrite, "--out '", cfg_.out, "' already holds a run ('", checkpoint_path(),
                        "'); continue it with --resume, choose another --out, or start over with --overwrite (which "
                        "replaces that run's outputs)");
    }
  }

  // --overwrite: the earlier run's outputs go before this run writes its own, so the folder never mixes two.
  void remove_earlier_outputs() const {
    const auto out = std::filesystem::path(cfg_.out);
    int removed = 0;
    for (const char* name : {"checkpoint.pt", "metrics.jsonl", "progress.jsonl", "config.json", "summary.json",
                             "model.pt", "model_ema.pt", "figure1.npz", "curves.png", "curves.svg", "figure1.png",
                             "figure1.svg"}) {
      std::error_code ec;
      if (std::filesystem::remove(out / name, ec)) ++removed;
      TORCH_CHECK_VALUE(!ec, "--overwrite: cannot remove '", (out / name).string(), "': ", ec.message());
    }
    if (removed > 0) std::cout << fmt::format("iat-train: --overwrite: removed {} output file(s) of the earlier run in {}\n", removed, cfg_.out);
  }

  // ---- outputs --------------------------------------------------------------------------------------
  // Every output file is replaced whole (temporary file + rename): a kill or a full disk leaves the
  // previous version, never a partial one.
  void write_config() const {
    auto j = cfg_.to_json();
    j["distributed"] = distributed_json();
    if (!resume_log_.empty()) j["resume_forced"] = resume_log_;
    iat::train::write_file_atomically((std::filesystem::path(cfg_.out) / "config.json").string(), j.dump(2) + "\n");
  }

  // metrics.jsonl is the checkpoint's metrics, rewritten whole after each checkpoint and on resume.
  void write_metrics() const {
    std::string text;
    for (const auto& row : metrics_) text += row.dump() + "\n";
    iat::train::write_file_atomically((std::filesystem::path(cfg_.out) / "metrics.jsonl").string(), text);
  }

  // How many processes ran and over what (config.json, summary.json): a run's results do not depend on it.
  nlohmann::json distributed_json() const {
    return {{"world_size", env_.world_size}, {"backend", pg_ ? iat_examples::backend_name(wants_cuda()) : "none"}};
  }

  // One row of progress.jsonl: the loss and adversarial accuracy over the batches since the previous row
  // (every rank holds the same sums; rank 0 appends the row, one write, flushed).
  void record_progress(int64_t epoch, int64_t batch, int64_t batches) {
    const double seen = std::max(window_sums_[2], 1.0);
    nlohmann::json row = {{"epoch", static_cast<double>(epoch) + static_cast<double>(batch) / static_cast<double>(batches)},
                          {"step", step_},
                          {"train_loss", window_sums_[0] / seen},
                          {"train_adv_acc", window_sums_[1] / seen},
                          {"lr", schedule_->lr_at(std::max<int64_t>(step_ - 1, 0))},
                          {"examples", window_sums_[2]}};
    window_sums_ = {0, 0, 0};
    progress_.push_back(row);
    if (!main_rank()) return;
    const auto path = std::filesystem::path(cfg_.out) / "progress.jsonl";
    std::ofstream f(path, std::ios::app);
    f << row.dump() + "\n" << std::flush;
    if (!f) std::cerr << fmt::format("iat-train: warning: could not append to '{}'\n", path.string());
  }

  // progress.jsonl is rewritten whole from the checkpoint's rows when a run starts or resumes.
  void write_progress() const {
    std::string text;
    for (const auto& row : progress_) text += row.dump() + "\n";
    iat::train::write_file_atomically((std::filesystem::path(cfg_.out) / "progress.jsonl").string(), text);
  }

  void finish() {
    const auto out = std::filesystem::path(cfg_.out);
    // Weights Python can read: torch.load(path) gives a state dict of the common PyTorch definitions.
    iat::models::save_state_dict(model_->inner(), (out / "model.pt").string());
    if (ema_) iat::models::save_state_dict(ema_model_->inner(), (out / "model_ema.pt").string());
    method_->write_figure(model_, test_, device_, (out / "figure1.npz").string());
    nlohmann::json summary = {{"config", cfg_.to_json()},
                              {"identity", identity()},
                              {"train_seconds", train_seconds_total_},
                              {"steps", step_},
                              {"train_examples", examples_},
                              {"test_examples", test_.size()},
                              {"final", metrics_.empty() ? nlohmann::json() : metrics_.back()},
                              {"distributed", distributed_json()}};
    if (!resume_log_.empty()) summary["resume_forced"] = resume_log_;
    iat::train::write_file_atomically((out / "summary.json").string(), summary.dump(2) + "\n");
    std::cout << fmt::format("iat-train: done in {:.0f} s of training; outputs in {}\n", train_seconds_total_, cfg_.out);
    // The pictures (curves, Figure 1) from what was just written, or the command that draws them.
    if (!cfg_.no_report) iat_examples::run_report_tool("iat-train", {cfg_.out});
  }

  TrainConfig cfg_;
  torch::Device device_{torch::kCPU};
  iat::PrecisionOptions precision_;
  iat::data::Dataset train_, test_;
  std::unique_ptr<iat::data::Loader> loader_;
  int64_t examples_ = 0;
  iat::models::ModelSpec spec_;
  iat::models::AnyClassifier model_{nullptr}, ema_model_{nullptr};
  std::unique_ptr<torch::optim::SGD> optimizer_;
  std::unique_ptr<iat::train::OneCycleLR> schedule_;
  std::unique_ptr<iat::train::ModelEMA> ema_;
  std::unique_ptr<Method> method_;
  int64_t start_epoch_ = 0, start_batch_ = 0, step_ = 0;
  double train_seconds_total_ = 0;
  std::array<double, 3> epoch_sums_{0, 0, 0};   // loss sum, correct, seen of the running epoch
  std::array<double, 3> window_sums_{0, 0, 0};  // the same since the last progress row
  static constexpr int64_t kProgressRowsPerEpoch = 20;
  std::vector<nlohmann::json> metrics_;
  std::vector<nlohmann::json> progress_;  // progress.jsonl's rows, kept in the checkpoint
  nlohmann::json data_fingerprint_;                    // CRC-32s of the data, computed once (settings())
  nlohmann::json resume_log_ = nlohmann::json::array();  // every --resume-force: where, and what changed
  std::string last_checkpoint_;                         // what the last checkpoint of this run holds ("" = none)
  // Under torchrun: where this process sits, the process group and the gradient averaging (none alone).
  iat::distributed::Environment env_;
  iat::distributed::ProcessGroupPtr pg_;
  std::unique_ptr<iat::distributed::DataParallel> dp_;
  std::vector<torch::Tensor> written_rows_;  // dataset positions of one-off rows stored since the last share
};

}  // namespace iat_examples
