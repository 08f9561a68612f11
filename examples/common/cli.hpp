#pragma once
// What both programs parse (iat-train, iat-eval): their exit statuses, flag checks with readable messages
// (integers, numbers, names, devices), budgets written as fractions ("8/255"), and the device a --device
// name stands for.

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace iat_examples {

/// Exit statuses the programs share: 2 a usage error (unknown flag, malformed or out-of-range value, flags
/// that exclude each other, and for iat-eval any error before or during the evaluation), 130 stopped by a
/// signal with its work kept for a resume. iat-train adds 1 (files unusable) and 3 (non-finite loss).
constexpr int kExitUsage = 2;
constexpr int kExitStopped = 130;

// CLI11's own range validators print their bounds with %f (a 309-digit number for "no upper bound"); these
// say what the flag expects in words. CLI11 prefixes the message with the flag's name.

// CLI11's own range validators print their bounds with %f (a 309-digit number for "no upper bound"); these
// say what the flag expects in words. CLI11 prefixes the message with the flag's name.

/// An integer >= `lo`: "must be a positive integer, got '0'".
inline CLI::Validator integer_at_least(int64_t lo) {
  const std::string want = lo == 1 ? "a positive integer" : lo == 0 ? "an integer >= 0" : "an integer >= " + std::to_string(lo);
  return CLI::Validator(
      [lo, want](std::string& text) -> std::string {
        try {
          size_t used = 0;
          const long long v = std::stoll(text, &used);
          if (used == text.size() && v >= lo) return std::string();
        } catch (const std::exception&) {
        }
        return "must be " + want + ", got '" + text + "'";
      },
      lo == 1 ? "POSITIVE" : lo == 0 ? "NONNEGATIVE" : ">=" + std::to_string(lo));
}

/// A finite number in an interval; `lo_open`/`hi_open` exclude the ends; hi = infinity for none.
inline CLI::Validator number_in(double lo, double hi, bool lo_open = false, bool hi_open = false) {
  std::string want;
  if (std::isinf(hi)) {
    want = lo_open ? fmt::format("a number > {}", lo) : fmt::format("a number >= {}", lo);
  } else {
    want = fmt::format("a number in {}{}, {}{}", lo_open ? "(" : "[", lo, hi, hi_open ? ")" : "]");
  }
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        try {
          size_t used = 0;
          const double v = std::stod(text, &used);
          const bool above = lo_open ? v > lo : v >= lo;
          const bool below = std::isinf(hi) || (hi_open ? v < hi : v <= hi);
          if (used == text.size() && std::isfinite(v) && above && below) return std::string();
        } catch (const std::exception&) {
        }
        return "must be " + want + ", got '" + text + "'";
      },
      std::isinf(hi) ? fmt::format("{}{}", lo_open ? ">" : ">=", lo)
                     : fmt::format("{}{},{}{}", lo_open ? "(" : "[", lo, hi, hi_open ? ")" : "]"));
}

/// true or false (also 1/0, yes/no, on/off).
inline CLI::Validator boolean() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        for (const char* ok : {"true", "false", "1", "0", "yes", "no", "on", "off"}) {
          if (text == ok) return std::string();
        }
        return "must be true or false, got '" + text + "'";
      },
      "");
}

/// One of a list of names: "must be one of relu, silu; got 'x'".
inline CLI::Validator one_of(std::vector<std::string> names) {
  return CLI::Validator(
      [names](std::string& text) -> std::string {
        if (std::find(names.begin(), names.end(), text) != names.end()) return std::string();
        return fmt::format("must be one of {}; got '{}'", fmt::join(names, ", "), text);
      },
      fmt::format("{{{}}}", fmt::join(names, ",")));
}

/// auto, cpu, cuda or cuda:N.
inline CLI::Validator device_name() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        if (text == "auto" || text == "cpu" || text == "cuda") return std::string();
        if (text.rfind("cuda:", 0) == 0 && text.size() > 5 &&
            text.find_first_not_of("0123456789", 5) == std::string::npos) {
          return std::string();
        }
        return "must be auto, cpu, cuda or cuda:N, got '" + text + "'";
      },
      "DEVICE");
}

/// Parses "8/255", "0.03" or "8" as a number (fractions as the paper writes budgets).
inline double parse_fraction(const std::string& text, const std::string& flag) {
  try {
    const auto slash = text.find('/');
    size_t used = 0;
    if (slash == std::string::npos) {
      const double v = std::stod(text, &used);
      if (used == text.size()) return v;
    } else {
      const double num = std::stod(text.substr(0, slash), &used);
      if (used == slash) {
        size_t used2 = 0;
        const std::string den_text = text.substr(slash + 1);
        const double den = std::stod(den_text, &used2);
        if (used2 == den_text.size() && den != 0) return num / den;
      }
    }
  } catch (const std::exception&) {
  }
  throw CLI::ValidationError(flag, "expected a number or a fraction like 8/255, got '" + text + "'");
}

/// Whether a --device name asks for CUDA (auto: when this LibTorch and machine have it).
inline bool wants_cuda(const std::string& name) {
  return name == "auto" ? torch::cuda::is_available() : torch::Device(name).is_cuda();
}

/// The device a --device name stands for: auto is CUDA where this LibTorch and machine have it, the CPU
/// otherwise; "cuda" without an index under torchrun is the rank's GPU (`rank_gpu`, given by the caller).
/// A CUDA name on a machine or build without CUDA is an error naming the flag.
template <typename RankGpu>
torch::Device pick_device(const std::string& name, bool under_torchrun, RankGpu&& rank_gpu) {
  if (!wants_cuda(name)) return torch::Device(torch::kCPU);
  TORCH_CHECK_VALUE(torch::cuda::is_available(), "--device ", name,
                    ": CUDA is not available in this LibTorch build or machine");
  torch::Device d = name == "auto" ? torch::Device(torch::kCUDA) : torch::Device(name);
  if (under_torchrun && !d.has_index()) d = rank_gpu();
  return d;
}

}  // namespace iat_examples
