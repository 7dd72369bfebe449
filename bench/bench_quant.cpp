// Matrix-vector throughput of the packed kernels per weight type at 4096x4096: bytes of weights
// read per second, 1 and 2 threads, each ISA. Also the activation packing and the f32 reference.
// Weights are random block bytes with finite f16 scales: throughput does not depend on the values.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "epwa/half.hpp"
#include "epwa/quant.hpp"

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
  if (isa == KernelIsa::Avx2 && best_isa() != KernelIsa::Avx2) {
    state.SkipWithError("no AVX2");
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
    for (int isa : {1, 0})
      for (int threads : {1, 2}) {
        if (isa == 0 && threads == 2) continue;  // scalar: one thread is enough to compare
        b->Args({static_cast<int64_t>(t), threads, isa});
      }
}
BENCHMARK(BM_matvec)->Apply(matvec_args)->UseRealTime()->Unit(benchmark::kMicrosecond);

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
