// Profiling build only (docs/history/PERF-issue9.md, "Profiles"): the phase totals, printed at exit.
#include "core/phase_stats.hpp"

#ifdef EPWA_PHASE_STATS
#include <algorithm>
#include <cstdio>
#include <map>

namespace epwa {
namespace {
struct PhaseStats {
  std::map<std::string, std::pair<int64_t, int64_t>> t;  // name -> (ns, calls)
  ~PhaseStats() {
    int64_t all = 0;
    for (const auto& [k, v] : t) all += v.first;
    for (const auto& [k, v] : t)
      std::fprintf(stderr, "phase %-16s %9.1f ms %5.1f%% %8lld calls\n", k.c_str(), v.first / 1e6,
                   100.0 * v.first / std::max<int64_t>(all, 1), static_cast<long long>(v.second));
  }
};
PhaseStats g_phases;
}  // namespace
// Calls from one thread (the caller of forward) only.
detail::PhaseTimer::PhaseTimer(const char* name) : slot(g_phases.t[name]) {}
}  // namespace epwa
#endif
