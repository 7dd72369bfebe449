// A memory-bandwidth probe: how fast this machine streams a large buffer from RAM, the yardstick
// for decode speed (decoding reads every active weight once per token).
#pragma once
#include <cstdint>
#include <string>

namespace epwa {

struct MemBandwidth {
  double gb_per_s = 0;       // best pass, 1e9 bytes per second
  double mean_gb_per_s = 0;  // mean over the passes
  uint64_t bytes = 0;        // buffer size read per pass
  int threads = 0;
  int passes = 0;
  std::string method;  // "avx2" (256-bit loads) or "plain" (64-bit loads)
};

// Reads a freshly allocated, touched buffer of `bytes` (rounded down to 4 KiB, at least 1 MiB) with
// `threads` threads of a private pool (0 = the global pool's size), `passes` times, and reports
// the best pass. The buffer is 2 MiB-aligned and advised for huge pages. Throws Error on
// non-positive passes or when the buffer cannot be allocated.
MemBandwidth measure_memory_bandwidth(uint64_t bytes = uint64_t{1} << 30, int threads = 2,
                                      int passes = 3);

}  // namespace epwa
