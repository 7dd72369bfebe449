// Runs the epwa command line (EPWA_BINARY, set by tests/CMakeLists.txt) from a test and captures
// its exit code and output. Header only: tests/support/ holds no test program.
#pragma once
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace epwa_test {

struct CliResult {
  int code = -1;    // exit status, or 128 + signal
  std::string out;  // stdout (and stderr when merged)
};

// Runs a shell command line as given.
inline CliResult run_command(const std::string& cmd) {
  CliResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

enum class Stderr { Merge, Drop };

// `epwa ARGS`, stderr merged into the output or dropped.
inline CliResult run_cli(const std::string& args, Stderr err = Stderr::Merge) {
  return run_command(std::string(EPWA_BINARY) + " " + args +
                     (err == Stderr::Merge ? " 2>&1" : " 2>/dev/null"));
}

}  // namespace epwa_test
