// Progress of long work on a terminal: one line on stderr, redrawn at most ten times a second,
// shown only when stderr is a terminal and the command is not quiet (piped output stays clean).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace epwa::cli {

class TerminalProgress {
 public:
  TerminalProgress(std::string what, bool quiet);
  ~TerminalProgress() { finish(); }
  void finish();  // ends the line if one was drawn (before other output)
  TerminalProgress(const TerminalProgress&) = delete;
  TerminalProgress& operator=(const TerminalProgress&) = delete;
  // `done` of `total` units (total <= 0: unknown, only `done` is shown); `unit` names them.
  void update(int64_t done, int64_t total, const char* unit = "");

 private:
  std::string what_;
  bool on_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace epwa::cli
