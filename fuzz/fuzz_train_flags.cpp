// Fuzz target: iat-train's command line (examples/train/command_line.hpp: presets, flags, their checks and
// the defaults resolved after them). The input is the argument list, NUL-separated, after argv[0].
// Properties: nothing escapes parse_command_line; the status is "train", 0 or the documented usage status
// 2 with a message; a configuration that is let through to training holds the ranges the flags promise and
// can be recorded as config.json.
#include "fuzz_support.hpp"

#include "../examples/train/command_line.hpp"

#include <sstream>

namespace {

std::vector<std::string> arguments(const uint8_t* data, size_t size) {
  std::vector<std::string> args{"iat-train"};
  std::string current;
  for (size_t i = 0; i < size && args.size() < 64; ++i) {
    if (data[i] == 0) {
      args.push_back(current);
      current.clear();
    } else {
      current.push_back(static_cast<char>(data[i]));
    }
  }
  if (!current.empty() && args.size() < 64) args.push_back(current);
  return args;
}

void check_ranges(const iat_examples::TrainConfig& c) {
  const auto& methods = iat_examples::methods();
  const bool ok = std::find(methods.begin(), methods.end(), c.method) != methods.end() &&
                  c.eps > 0 && c.eps <= 1 && c.step_size > 0 && c.step_size <= 1 && c.inv_eps > 0 &&
                  c.inv_eps <= 1 && c.inv_step_size >= 0 && c.inv_step_size <= 1 && c.epochs >= 1 &&
                  c.batch_size >= 1 && c.steps >= 1 && c.inv_steps >= 1 && c.eval_pgd_steps >= 1 &&
                  c.threads >= 1 && c.train_subset >= 0 && c.test_subset >= 1 && c.max_lr > 0 &&
                  std::isfinite(c.max_lr) && c.momentum >= 0 && c.momentum < 1 && c.gamma >= 0 && c.gamma < 1 &&
                  c.ema_decay >= 0 && c.ema_decay < 1 && c.gen_ratio >= 0 && c.gen_ratio <= 1 &&
                  c.weight_decay >= 0 && c.beta >= 0 && c.lambda >= 0 && c.momentum_epoch >= -1 &&
                  c.one_off_epoch >= 0 && c.trades_beta >= 0 && c.mart_beta >= 0 && c.grad_align_lambda >= 0 &&
                  c.awp_gamma >= 0 && c.awp_gamma <= 1 && c.awp_warmup >= 0 && c.awp_proxy_lr > 0 &&
                  std::isfinite(c.awp_proxy_lr) &&
                  !(c.resume_force && !c.resume) && !(c.overwrite && c.resume);
  if (!ok) iat_fuzz::finding("a configuration outside the flags' documented ranges reached training: " +
                             c.to_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  try {
    (void)c.to_json().dump(2);  // what --print-config prints and config.json holds
  } catch (const std::exception& e) {
    iat_fuzz::finding(std::string("the accepted configuration cannot be written as config.json: ") + e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto args = arguments(data, size);
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  iat_examples::TrainConfig cfg;
  std::ostringstream out, err;
  int status = 0;
  try {
    status = iat_examples::parse_command_line(static_cast<int>(args.size()), argv.data(), cfg, out, err);
  } catch (const std::exception& e) {
    iat_fuzz::finding(std::string("parse_command_line threw: ") + e.what());
  }
  if (status == iat_examples::kRunTraining) {
    check_ranges(cfg);
  } else if (status == iat_examples::kExitUsage) {
    if (err.str().find("iat-train: ") == std::string::npos) iat_fuzz::finding("usage status 2 without a message");
  } else if (status != 0) {
    iat_fuzz::finding("parse_command_line returned the undocumented status " + std::to_string(status));
  }
  return 0;
}
