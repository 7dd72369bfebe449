// Profiling build only (-DEPWA_PHASE_STATS, docs/history/PERF-issue9.md "Profiles"): wall time of each phase of
// the forward pass, printed at exit. EPWA_PHASE("name") times the rest of the enclosing scope.
#pragma once

#ifdef EPWA_PHASE_STATS
#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

namespace epwa::detail {
struct PhaseTimer {
  std::pair<int64_t, int64_t>& slot;  // (ns, calls)
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  explicit PhaseTimer(const char* name);
  ~PhaseTimer() {
    slot.first +=
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    ++slot.second;
  }
};
}  // namespace epwa::detail
#define EPWA_PHASE_CAT(a, b) a##b
#define EPWA_PHASE_VAR(line) EPWA_PHASE_CAT(epwa_phase_timer_, line)
#define EPWA_PHASE(name) ::epwa::detail::PhaseTimer EPWA_PHASE_VAR(__LINE__)(name)
#else
#define EPWA_PHASE(name) (void)0
#endif
