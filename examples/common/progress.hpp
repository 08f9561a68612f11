#pragma once
// A progress display for the example programs: a live bar on a terminal, plain lines otherwise.

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <unistd.h>
#include <utility>
#include <vector>

namespace iat_examples {

/// One line of progress for a loop of `total` items (batches): on a terminal a bar redrawn in place with
/// the given metrics, images/s and ETA; when stdout is not a terminal (a log file, CI), a plain line at
/// every tenth of the way, so logs stay short.
///
/// **Example**
/// \code
/// Progress bar("epoch 3/30", loader.size());
/// for (...) bar.update(i + 1, batch_size, {{"loss", loss}, {"acc", acc}});
/// bar.finish();
/// \endcode
class Progress {
 public:
  Progress(std::string label, int64_t total, bool force_plain = false)
      : label_(std::move(label)), total_(total), tty_(!force_plain && ::isatty(STDOUT_FILENO)),
        start_(std::chrono::steady_clock::now()) {}

  /// Items done so far (1-based), images in the last item, and metrics to show.
  void update(int64_t done, int64_t images, const std::vector<std::pair<std::string, double>>& metrics) {
    images_ += images;
    done_ = done;
    const double elapsed = seconds();
    const double rate = elapsed > 0 ? static_cast<double>(images_) / elapsed : 0.0;
    const double eta = done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(total_ - done) : 0.0;
    std::string stats;
    for (const auto& [name, value] : metrics) stats += " " + name + " " + format_number(value);
    const std::string tail = fmt::format(" | {:.0f} img/s | {} elapsed, ETA {}", rate, clock(elapsed), clock(eta));
    if (tty_) {
      const int width = 24;
      const int filled = total_ > 0 ? static_cast<int>(width * done / total_) : width;
      std::string bar(static_cast<size_t>(filled), '#');
      bar.resize(width, '.');
      fmt::print("\r\033[K{} [{}] {}/{}{}{}", label_, bar, done, total_, stats, tail);
      std::fflush(stdout);
    } else if (total_ > 0 && (done * 10 / total_ > last_tenth_ || done == total_)) {
      last_tenth_ = done * 10 / total_;
      fmt::print("{} {}/{}{}{}\n", label_, done, total_, stats, tail);
      std::fflush(stdout);
    }
  }

  /// Ends the bar's line (terminal mode).
  void finish() {
    if (tty_) fmt::print("\n");
    std::fflush(stdout);
  }

  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  static std::string format_number(double v) {
    return v != 0 && v < 0.01 && v > -0.01 ? fmt::format("{:.2e}", v) : fmt::format("{:.4f}", v);
  }
  static std::string clock(double s) {
    const long total = static_cast<long>(s + 0.5);
    if (total >= 3600) return fmt::format("{}:{:02}:{:02}", total / 3600, (total / 60) % 60, total % 60);
    return fmt::format("{}:{:02}", total / 60, total % 60);
  }

  std::string label_;
  int64_t total_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
  int64_t images_ = 0;
  int64_t done_ = 0;
  int64_t last_tenth_ = 0;
};

}  // namespace iat_examples
