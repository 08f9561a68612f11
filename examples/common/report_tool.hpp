#pragma once
// The programs' pictures (iat-train, iat-eval): at the end of a run they start the report tool,
// scripts/report.py, which draws them with matplotlib from the files just written. A machine without
// Python or matplotlib still gets every data file: the program then prints the command that draws the
// pictures later, and the run's exit status does not change.

#include <fmt/format.h>

#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

extern char** environ;

// The build's defaults (examples/CMakeLists.txt): the Python with matplotlib and the script's path.
#ifndef IAT_REPORT_PYTHON
#define IAT_REPORT_PYTHON "/usr/bin/python3"
#endif
#ifndef IAT_REPORT_SCRIPT
#define IAT_REPORT_SCRIPT "scripts/report.py"
#endif

namespace iat_examples {

/// The report tool's command: `$IAT_REPORT_PYTHON` (else the build's Python) running `$IAT_REPORT_SCRIPT`
/// (else the source tree's scripts/report.py) on `paths`.
inline std::vector<std::string> report_command(const std::vector<std::string>& paths) {
  const char* python = std::getenv("IAT_REPORT_PYTHON");
  const char* script = std::getenv("IAT_REPORT_SCRIPT");
  std::vector<std::string> argv = {python && *python ? python : IAT_REPORT_PYTHON,
                                   script && *script ? script : IAT_REPORT_SCRIPT};
  argv.insert(argv.end(), paths.begin(), paths.end());
  return argv;
}

/// `argv` as one line a POSIX shell runs as is (single quotes where a word needs them).
inline std::string shell_line(const std::vector<std::string>& argv) {
  std::string line;
  for (const auto& a : argv) {
    if (!line.empty()) line += ' ';
    const bool plain = !a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                         "0123456789_-./=:,+@%") == std::string::npos;
    if (plain) {
      line += a;
      continue;
    }
    line += '\'';
    for (char c : a) line += c == '\'' ? std::string("'\\''") : std::string(1, c);
    line += '\'';
  }
  return line;
}

/// Runs the report tool on `paths` (run folders, iat-eval reports) and waits for it. Whatever goes wrong
/// (no Python, no matplotlib, no script, bad input) is a warning naming the command to run later: the
/// pictures never decide a run's outcome. Returns true when the pictures were drawn.
///
/// **Example**
/// \code
/// if (!cfg.no_report) iat_examples::run_report_tool("iat-train", {cfg.out});
/// \endcode
inline bool run_report_tool(const char* program, const std::vector<std::string>& paths) {
  const auto argv = report_command(paths);
  auto later = [&](const std::string& why) {
    std::cerr << fmt::format("{}: warning: no pictures drawn ({}); draw them later with: {}\n", program, why,
                             shell_line(argv));
    return false;
  };
  std::error_code ec;
  if (!std::filesystem::is_regular_file(argv[1], ec)) return later(fmt::format("no report tool at '{}'", argv[1]));
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::cout.flush();
  std::cerr.flush();
  pid_t pid = 0;
  const int err = ::posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ);
  if (err != 0) return later(fmt::format("cannot start '{}': {}", argv[0], std::strerror(err)));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return later(fmt::format("waiting for '{}': {}", argv[0], std::strerror(errno)));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 3) return later("matplotlib is not installed for " + argv[0]);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127) return later(fmt::format("'{}' did not start", argv[0]));
  return later(WIFEXITED(status) ? fmt::format("the report tool exited with status {}", WEXITSTATUS(status))
                                 : fmt::format("the report tool was stopped by signal {}", WTERMSIG(status)));
}

}  // namespace iat_examples
