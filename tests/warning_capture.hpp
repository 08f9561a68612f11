#pragma once
// Collects the warnings LibTorch's TORCH_WARN emits while it is alive (instead of printing them).

#include <c10/util/Exception.h>
#include <torch/version.h>

#include <algorithm>
#include <string>
#include <vector>

namespace iat_test {

/// Installs itself as c10's warning handler for its lifetime and keeps every message.
class WarningCapture : public c10::WarningHandler {
 public:
  WarningCapture() : guard_(this) {}

#if TORCH_VERSION_MAJOR >= 2
  void process(const c10::Warning& warning) override { messages.push_back(warning.msg()); }
#else
  void process(const c10::SourceLocation&, const std::string& msg, const bool) override { messages.push_back(msg); }
#endif

  /// How many captured messages contain `text`.
  int64_t count(const std::string& text) const {
    return std::count_if(messages.begin(), messages.end(),
                         [&](const std::string& m) { return m.find(text) != std::string::npos; });
  }

  std::vector<std::string> messages;

 private:
#if TORCH_VERSION_MAJOR >= 2
  c10::WarningUtils::WarningHandlerGuard guard_;
#else
  c10::Warning::WarningHandlerGuard guard_;
#endif
};

}  // namespace iat_test
