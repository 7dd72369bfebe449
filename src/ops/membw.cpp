// The memory-bandwidth probe: every thread sums its own contiguous slice of a large buffer, so the
// only traffic is the streaming read (no writes, no sharing).
#include "epwa/membw.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <new>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/memory.hpp"
#include "epwa/platform.hpp"
#include "epwa/thread_pool.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace epwa {
namespace {

uint64_t sum_plain(const uint64_t* p, size_t n) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (size_t i = 0; i + 4 <= n; i += 4) {
    s0 += p[i];
    s1 += p[i + 1];
    s2 += p[i + 2];
    s3 += p[i + 3];
  }
  return s0 ^ s1 ^ s2 ^ s3;
}

#if defined(__x86_64__)
// Four independent 256-bit accumulators keep enough loads in flight to saturate the memory bus.
__attribute__((target("avx2"))) uint64_t sum_avx2(const uint64_t* p, size_t n) {
  const auto* v = reinterpret_cast<const __m256i*>(p);
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 4 <= n / 4; i += 4) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(v + i));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(v + i + 1));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(v + i + 2));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(v + i + 3));
  }
  const __m256i s = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
  alignas(32) uint64_t out[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(out), s);
  return out[0] ^ out[1] ^ out[2] ^ out[3];
}
#endif

}  // namespace

MemBandwidth measure_memory_bandwidth(uint64_t bytes, int threads, int passes) {
  check(passes > 0,
        "memory bandwidth probe: passes must be positive, got " + std::to_string(passes));
  constexpr uint64_t kAlign = uint64_t{2} << 20;  // huge-page alignment
  bytes = std::max<uint64_t>(bytes, uint64_t{1} << 20) & ~uint64_t{4095};
  const uint64_t alloc = (bytes + kAlign - 1) / kAlign * kAlign;
  // LargeBuffer: 2 MB aligned and huge-page backed where the OS gives them (throws if refused).
  LargeBuffer mem(alloc);
  std::memset(mem.data(), 1, alloc);  // touch every page before timing

  ThreadPool own(threads > 0 ? threads : ThreadPool::global().size());
  bool avx2 = false;
#if defined(__x86_64__)
  avx2 = cpu_features().avx2;
#endif
  const auto* words = static_cast<const uint64_t*>(mem.data());
  // Slices of 64 KiB words per chunk keep every 256-bit load aligned.
  constexpr int64_t kChunkWords = 8192;
  const int64_t chunks = static_cast<int64_t>(bytes / 8 / kChunkWords);
  MemBandwidth r;
  r.bytes = static_cast<uint64_t>(chunks * kChunkWords * 8);
  r.threads = own.size();
  r.passes = passes;
  r.method = avx2 ? "avx2" : "plain";
  double total = 0;
  std::vector<uint64_t> sink(static_cast<size_t>(chunks));
  for (int pass = 0; pass < passes; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    // One range per thread: each streams one contiguous half, as a matrix-vector split does.
    own.parallel_for(
        chunks,
        [&](int64_t b, int64_t e) {
          const uint64_t* p = words + b * kChunkWords;
          const size_t n = static_cast<size_t>((e - b) * kChunkWords);
#if defined(__x86_64__)
          sink[b] = avx2 ? sum_avx2(p, n) : sum_plain(p, n);
#else
          sink[b] = sum_plain(p, n);
#endif
        },
        std::max<int64_t>(1, chunks / own.size()));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double gbs = static_cast<double>(r.bytes) / std::max(s, 1e-9) * 1e-9;
    r.gb_per_s = std::max(r.gb_per_s, gbs);
    total += gbs;
  }
  r.mean_gb_per_s = total / passes;
  // Keep the sums observable so the reads cannot be optimised away.
  volatile uint64_t keep = 0;
  for (uint64_t v : sink) keep = keep ^ v;
  (void)keep;
  return r;
}

}  // namespace epwa
