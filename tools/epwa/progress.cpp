#include "progress.hpp"

#include <cstdio>

#include "epwa/platform.hpp"

namespace epwa::cli {

TerminalProgress::TerminalProgress(std::string what, bool quiet)
    : what_(std::move(what)), on_(!quiet && stderr_is_terminal()) {}

void TerminalProgress::finish() {
  if (drawn_) std::fputc('\n', stderr);
  drawn_ = false;
}

void TerminalProgress::update(int64_t done, int64_t total, const char* unit) {
  if (!on_) return;
  const auto now = std::chrono::steady_clock::now();
  const bool last = total > 0 && done >= total;
  if (!last && drawn_ && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  drawn_ = true;
  if (total > 0)
    std::fprintf(stderr, "\r%s: %lld/%lld%s (%.0f%%)\x1b[K", what_.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total), unit,
                 100.0 * static_cast<double>(done) / static_cast<double>(total));
  else
    std::fprintf(stderr, "\r%s: %lld%s\x1b[K", what_.c_str(), static_cast<long long>(done), unit);
  std::fflush(stderr);
}

}  // namespace epwa::cli
