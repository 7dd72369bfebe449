// Matrix-vector throughput of the packed kernels per weight type at 4096x4096: bytes of weights
// read per second, 1 and 2 threads, each ISA. Also the activation packing and the f32 reference.
// Weights are random block bytes with finite f16 scales: throughput does not depend on the values.
// BM_matvec_mem is the memory-bound decode case: >= 256 MiB of weights in 4096 x 4096 matrices
// cycled so none is still in L3 when its turn comes, reported as bytes/s and as a ratio (x_probe)
// to a 2-thread read of the same buffer size measured in the same run (BM_read_probe).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "epwa/half.hpp"
#include "epwa/quant.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

using namespace epwa;

namespace {
constexpr int64_t kRows = 4096, kCols = 4096;
const DType kTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0,
                        DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                        DType::Q4_K, DType::Q5_K, DType::Q6_K};

const std::vector<std::byte>& weights(DType t) {
  static std::map<DType, std::vector<std::byte>> cache;
  auto& w = cache[t];
  if (!w.empty()) return w;
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.0f, 0.02f);
  const int64_t rb = dtype_bytes(t, kCols);
  w.resize(static_cast<size_t>(rb * kRows));
  if (t == DType::F32 || t == DType::F16 || t == DType::BF16) {
    std::vector<float> row(kCols);
    for (int64_t r = 0; r < kRows; ++r) {
      for (float& v : row) v = g(rng);
      quantize_row(t, row.data(), w.data() + r * rb, kCols);
    }
    return w;
  }
  for (auto& b : w) b = std::byte(static_cast<uint8_t>(rng()));
  const int64_t bb = dtype_block_bytes(t);
  std::vector<size_t> halves{0};
  if (t == DType::Q4_1 || t == DType::Q5_1 || t == DType::Q4_K || t == DType::Q5_K) halves = {0, 2};
  if (t == DType::Q6_K) halves = {208};
  for (size_t blk = 0; blk < w.size() / bb; ++blk)
    for (size_t o : halves) {
      const uint16_t h = f32_to_f16(g(rng) * 0.1f);
      std::memcpy(&w[blk * bb + o], &h, 2);
    }
  return w;
}

// Persistent helper threads that spin for work, as a decode loop's pool would: start() hands each
// helper its part, the caller does part 0, wait() spins until all are done.
class Spinners {
 public:
  explicit Spinners(int n) : parts_(n) {
    for (int i = 1; i < n; ++i)
      threads_.emplace_back([this, i] {
        uint64_t seen = 0;
        while (true) {
          uint64_t g;
          while ((g = gen_.load(std::memory_order_acquire)) == seen) {
          }
          if (g == UINT64_MAX) return;
          seen = g;
          job_(i);
          done_.fetch_add(1, std::memory_order_acq_rel);
        }
      });
  }
  ~Spinners() {
    gen_.store(UINT64_MAX, std::memory_order_release);
    for (auto& t : threads_) t.join();
  }
  void run(const std::function<void(int)>& job) {
    job_ = job;
    done_.store(0, std::memory_order_relaxed);
    gen_.fetch_add(1, std::memory_order_acq_rel);
    job(0);
    while (done_.load(std::memory_order_acquire) != parts_ - 1) {
    }
  }

 private:
  int parts_;
  std::function<void(int)> job_;
  std::atomic<uint64_t> gen_{0};
  std::atomic<int> done_{0};
  std::vector<std::thread> threads_;
};

void BM_matvec(benchmark::State& state) {
  const auto t = static_cast<DType>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const auto isa = static_cast<KernelIsa>(state.range(2));
  if (!isa_available(isa)) {
    state.SkipWithError("kernel level not available on this CPU");
    return;
  }
  const auto& w = weights(t);
  const int64_t rb = dtype_bytes(t, kCols);
  std::vector<float> x(kCols), y(kRows);
  std::mt19937 rng(3);
  std::normal_distribution<float> g;
  for (float& v : x) v = g(rng);
  PackedVector p;
  Spinners pool(threads);
  for (auto _ : state) {
    p.pack(t, x);  // part of every decode matvec
    pool.run([&](int part) {
      const int64_t lo = kRows * part / threads, hi = kRows * (part + 1) / threads;
      vec_dot_rows(w.data(), rb, p, lo, hi, y.data(), isa);
    });
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * rb * kRows);
  state.SetLabel(std::string(dtype_name(t)) + " " + std::string(isa_name(isa)) + " t" +
                 std::to_string(threads));
}

void matvec_args(benchmark::internal::Benchmark* b) {
  for (DType t : kTypes)
    for (int isa : {2, 1, 0})  // avx512vnni (decode: Q4_0), avx2, scalar
      for (int threads : {1, 2}) {
        if (isa == 0 && threads == 2) continue;  // scalar: one thread is enough to compare
        b->Args({static_cast<int64_t>(t), threads, isa});
      }
}
BENCHMARK(BM_matvec)->Apply(matvec_args)->UseRealTime()->Unit(benchmark::kMicrosecond);

// --- memory-bound decode -------------------------------------------------------------------------
constexpr int64_t kMemBytes = int64_t{256} << 20;

// Matrices of kRows x kCols of type t, together >= kMemBytes. Only the last type asked for is kept
// (the buffers are large). Rows are 64 quantized Gaussian rows tiled: the kernels' speed does not
// depend on the values, and tiling keeps set-up fast.
struct MemSet {
  DType t{};
  int64_t rb = 0, mats = 0;
  std::vector<std::byte> w;
};
const MemSet& mem_weights(DType t) {
  static MemSet s;
  if (!s.w.empty() && s.t == t) return s;
  s.t = t;
  s.rb = dtype_bytes(t, kCols);
  s.mats = (kMemBytes + s.rb * kRows - 1) / (s.rb * kRows) + 1;
  s.w.assign(0, std::byte{});
  s.w.shrink_to_fit();
  s.w.resize(static_cast<size_t>(s.rb * kRows * s.mats));
  std::mt19937 rng(11);
  std::normal_distribution<float> g(0.0f, 0.02f);
  std::vector<float> row(kCols);
  const int64_t tile = 64;
  for (int64_t r = 0; r < tile; ++r) {
    for (float& v : row) v = g(rng);
    quantize_row(t, row.data(), s.w.data() + r * s.rb, kCols);
  }
  const auto tile_bytes = static_cast<size_t>(tile * s.rb);
  for (size_t o = tile_bytes; o < s.w.size(); o += tile_bytes)
    std::memcpy(s.w.data() + o, s.w.data(), std::min(tile_bytes, s.w.size() - o));
  return s;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) uint64_t read_sum(const std::byte* p, size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 128 <= n; i += 128) {
    a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  alignas(32) uint64_t v[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(v), s);
  return v[0] + v[1] + v[2] + v[3];
}
#else
uint64_t read_sum(const std::byte* p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    s += v;
  }
  return s;
}
#endif

// Seconds for `threads` threads to read a kMemBytes buffer once (best of `reps`).
double read_seconds(int threads, int reps) {
  static std::vector<std::byte> buf(static_cast<size_t>(kMemBytes), std::byte{1});
  Spinners pool(threads);
  std::atomic<uint64_t> sink{0};
  double best = 1e30;
  for (int k = 0; k < reps; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.run([&](int part) {
      const size_t lo = buf.size() * part / threads, hi = buf.size() * (part + 1) / threads;
      sink += read_sum(buf.data() + lo, hi - lo);
    });
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  benchmark::DoNotOptimize(sink.load());
  return best;
}
// The 2-thread read bandwidth, measured once per run.
double probe_bytes_per_second() {
  static const double bps = static_cast<double>(kMemBytes) / read_seconds(2, 5);
  return bps;
}

void BM_read_probe(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  for (auto _ : state) state.SetIterationTime(read_seconds(threads, 1));
  state.SetBytesProcessed(state.iterations() * kMemBytes);
  state.SetLabel("read t" + std::to_string(threads));
}
BENCHMARK(BM_read_probe)->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMillisecond);

void BM_matvec_mem(benchmark::State& state) {
  const auto t = static_cast<DType>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const double probe = probe_bytes_per_second();
  const MemSet& m = mem_weights(t);
  std::vector<float> x(kCols), y(kRows);
  std::mt19937 rng(3);
  std::normal_distribution<float> g;
  for (float& v : x) v = g(rng);
  PackedVector p;
  Spinners pool(threads);
  int64_t k = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    const std::byte* w = m.w.data() + (k++ % m.mats) * m.rb * kRows;
    p.pack(t, x);
    pool.run([&](int part) {
      const int64_t lo = kRows * part / threads, hi = kRows * (part + 1) / threads;
      vec_dot_rows(w, m.rb, p, lo, hi, y.data());
    });
    benchmark::DoNotOptimize(y.data());
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double bytes = static_cast<double>(state.iterations() * m.rb * kRows);
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["x_probe"] = bytes / secs / probe;
  state.counters["probe_GBps"] = probe / 1e9;
  state.SetLabel(std::string(dtype_name(t)) + " t" + std::to_string(threads) + " " +
                 std::to_string(m.mats) + " mats");
}
void matvec_mem_args(benchmark::internal::Benchmark* b) {
  for (DType t : {DType::Q4_0, DType::Q8_0, DType::F16, DType::Q4_K, DType::Q6_K, DType::Q5_K,
                  DType::BF16, DType::F32, DType::Q4_1, DType::Q5_0, DType::Q5_1})
    for (int threads : {1, 2}) b->Args({static_cast<int64_t>(t), threads});
}
BENCHMARK(BM_matvec_mem)->Apply(matvec_mem_args)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_pack(benchmark::State& state) {
  const auto t = static_cast<DType>(state.range(0));
  std::vector<float> x(kCols, 0.5f);
  PackedVector p;
  for (auto _ : state) {
    p.pack(t, x);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * kCols * 4);
  state.SetLabel(std::string(dtype_name(t)));
}
BENCHMARK(BM_pack)->Arg(static_cast<int64_t>(DType::Q8_0))->Arg(static_cast<int64_t>(DType::Q4_K));

void BM_dequantize_row(benchmark::State& state) {
  const auto t = static_cast<DType>(state.range(0));
  const auto& w = weights(t);
  std::vector<float> y(kCols);
  int64_t r = 0;
  for (auto _ : state) {
    dequantize_row(t, w.data() + (r++ % kRows) * dtype_bytes(t, kCols), y.data(), kCols);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * dtype_bytes(t, kCols));
  state.SetLabel(std::string(dtype_name(t)));
}
BENCHMARK(BM_dequantize_row)->DenseRange(0, 10);

}  // namespace
