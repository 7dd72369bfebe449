// Kernel throughput: matvec (decode) per weight type and thread count, reported as weight bytes/s
// so that it compares directly with the machine's memory bandwidth; matmul (prompt) for 64 tokens
// against 64 matvecs. Run: build/bench/bench_ops [--benchmark_filter=...]; EPWA_ISA=scalar to see
// the portable path.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "epwa/half.hpp"
#include "epwa/ops.hpp"
#include "epwa/quant.hpp"
#include "quant/kernels.hpp"

namespace {
using epwa::DType;

// One weight buffer per (type, rows, cols), filled once with small pseudo-random values.
struct Weights {
  std::vector<std::byte> bytes;
  epwa::TensorView view;
};

const Weights& weights(DType t, int64_t rows, int64_t cols) {
  static std::map<std::tuple<int, int64_t, int64_t>, std::unique_ptr<Weights>> cache;
  auto& w = cache[{static_cast<int>(t), rows, cols}];
  if (!w) {
    w = std::make_unique<Weights>();
    const int64_t eb = t == DType::F32 ? 4 : 2;
    w->bytes.resize(static_cast<size_t>(rows * cols * eb));
    uint32_t s = 12345;
    for (int64_t i = 0; i < rows * cols; ++i) {
      s = s * 1664525u + 1013904223u;
      const float f = static_cast<float>(static_cast<int32_t>(s >> 8) - (1 << 23)) * 1e-9f;
      if (t == DType::F32) {
        std::memcpy(&w->bytes[i * 4], &f, 4);
      } else {
        const uint16_t h = t == DType::F16 ? epwa::f32_to_f16(f) : epwa::f32_to_bf16(f);
        std::memcpy(&w->bytes[i * 2], &h, 2);
      }
    }
    w->view.name = "bench";
    w->view.dtype = t;
    w->view.shape = {rows, cols};
    w->view.data = w->bytes;
  }
  return *w;
}

epwa::ThreadPool& pool(int threads) {
  static std::map<int, std::unique_ptr<epwa::ThreadPool>> pools;
  auto& p = pools[threads];
  if (!p) p = std::make_unique<epwa::ThreadPool>(threads);
  return *p;
}

// Args: dtype, rows, cols, threads.
void BM_Matvec(benchmark::State& state) {
  const auto t = static_cast<DType>(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2);
  const Weights& w = weights(t, rows, cols);
  epwa::ThreadPool& p = pool(static_cast<int>(state.range(3)));
  std::vector<float> x(cols, 0.5f), y(rows);
  for (auto _ : state) {
    epwa::matvec(w.view, x, y, p);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.bytes.size()));
  state.SetLabel(std::string(epwa::dtype_name(t)) + " " +
                 std::string(epwa::ops::isa_name(epwa::ops::active_isa())));
}

// Args: dtype, rows, cols, threads, tokens, as_matvecs (1: n matvecs, the unblocked baseline).
void BM_Matmul(benchmark::State& state) {
  const auto t = static_cast<DType>(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2), n = state.range(4);
  const Weights& w = weights(t, rows, cols);
  epwa::ThreadPool& p = pool(static_cast<int>(state.range(3)));
  std::vector<float> x(n * cols, 0.25f), y(n * rows);
  for (auto _ : state) {
    if (state.range(5)) {
      for (int64_t i = 0; i < n; ++i)
        epwa::matvec(w.view, std::span<const float>(x).subspan(i * cols, cols),
                     std::span<float>(y).subspan(i * rows, rows), p);
    } else {
      epwa::matmul(w.view, x.data(), n, y.data(), p);
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * n);  // tokens/s
  state.counters["GFLOPS"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * 2.0 * n * rows * cols * 1e-9,
                         benchmark::Counter::kIsRate);
  state.SetLabel(std::string(epwa::dtype_name(t)) + (state.range(5) ? " n x matvec" : " matmul"));
}

// Memory-bandwidth probe of the same run: a plain read of a 512 MB buffer split across the pool,
// the yardstick for the matvec numbers (arg: threads).
void BM_MemRead(benchmark::State& state) {
  static std::vector<uint64_t> buf(size_t{64} << 20, 1);
  epwa::ThreadPool& p = pool(static_cast<int>(state.range(0)));
  const int64_t n = static_cast<int64_t>(buf.size());
  for (auto _ : state) {
    std::atomic<uint64_t> total{0};
    p.parallel_for(
        n,
        [&](int64_t b, int64_t e) {
          uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
          for (int64_t i = b; i + 4 <= e; i += 4) {
            s0 += buf[i];
            s1 += buf[i + 1];
            s2 += buf[i + 2];
            s3 += buf[i + 3];
          }
          total += s0 + s1 + s2 + s3;
        },
        1 << 16);
    benchmark::DoNotOptimize(total.load());
  }
  state.SetBytesProcessed(state.iterations() * n * 8);
}

// Quantized prompt product of one MoE expert matrix: `vectors` packed activation rows against a
// {rows, cols} matrix, rows split across the pool as the engine's linear() does. Args: dtype, rows,
// cols, vectors, threads, kernel (below; before/after pairs in one run).
void BM_QuantMatmul(benchmark::State& state) {
  const auto t = static_cast<DType>(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2), nv = state.range(3);
  epwa::ThreadPool& p = pool(static_cast<int>(state.range(4)));
  // 0: the tiles of the best kernel level; 1: the AVX2 tiles (VNNI against AVX2 in one run);
  // 2: the one-row x four-vector kernel the tiles replaced; 3: the AVX-512 VNNI tiles without the
  // byte permutes of AVX-512 VBMI (Q4_0; mode 0 has them where the CPU does)
  const int64_t mode = state.range(5);
  const bool old = mode == 2;
  const epwa::KernelIsa isa = mode == 1 ? epwa::KernelIsa::Avx2 : epwa::best_isa();
  const epwa::quant::RowsMultiDot no_vbmi =
      mode == 3 ? epwa::quant::gemm_avx512vnni(t, false) : nullptr;
  if (!epwa::isa_available(isa) || (mode == 1 && epwa::best_isa() == epwa::KernelIsa::Avx2) ||
      (mode == 3 && (isa != epwa::KernelIsa::Avx512Vnni || !no_vbmi))) {
    state.SkipWithError("kernel level not available here, or the same as mode 0");
    return;
  }
  const int64_t rb = epwa::dtype_bytes(t, cols);
  std::vector<std::byte> w(static_cast<size_t>(rows * rb));
  {
    std::vector<float> row(cols);
    uint32_t s = 777;
    for (int64_t r = 0; r < rows; ++r) {
      for (float& v : row) {
        s = s * 1664525u + 1013904223u;
        v = static_cast<float>(static_cast<int32_t>(s >> 8) - (1 << 23)) * 1e-7f;
      }
      epwa::quantize_row(t, row.data(), w.data() + r * rb, cols);
    }
  }
  std::vector<epwa::PackedVector> xs(nv);
  for (int64_t v = 0; v < nv; ++v) {
    std::vector<float> x(cols);
    for (int64_t i = 0; i < cols; ++i) x[i] = static_cast<float>((i * 7 + v * 13) % 31) - 15.0f;
    xs[v].pack(t, x);
  }
  const epwa::quant::RowMultiDot k4v = epwa::quant::row_dot4v_avx2(t);
  if (old && (!k4v || !epwa::isa_available(epwa::KernelIsa::Avx2))) {
    state.SkipWithError("no one-row x four-vector kernel here");
    return;
  }
  std::vector<float> out(nv * rows);
  std::vector<const epwa::PackedVector*> ptrs;
  for (const epwa::PackedVector& x : xs) ptrs.push_back(&x);
  for (auto _ : state) {
    p.parallel_for(
        rows,
        [&](int64_t r0, int64_t r1) {
          if (no_vbmi) return no_vbmi(w.data(), rb, ptrs, r0, r1, out.data(), rows);
          if (!old)
            return epwa::vec_dot_rows_multi(w.data(), rb, xs, r0, r1, out.data(), rows, isa);
          for (int64_t r = r0; r < r1; ++r)  // the replaced loop (nv a multiple of 4 here)
            for (int64_t v = 0; v < nv; v += 4) {
              const epwa::PackedVector* ptr[4] = {&xs[v], &xs[v + 1], &xs[v + 2], &xs[v + 3]};
              float res[4];
              k4v(w.data() + r * rb, ptr, res);
              for (int j = 0; j < 4; ++j) out[(v + j) * rows + r] = res[j];
            }
        },
        16);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["GFLOPS"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * 2.0 * nv * rows * cols * 1e-9,
                         benchmark::Counter::kIsRate);
  state.SetLabel(std::string(epwa::dtype_name(t)) +
                 (old ? " 1x4 (old)" : " tiles " + std::string(epwa::isa_name(isa))) +
                 (no_vbmi ? " without VBMI" : ""));
}

void QuantMatmulArgs(benchmark::internal::Benchmark* b) {
  for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q6_K, DType::Q4_K, DType::Q5_K})
    for (int threads : {1, 2})
      for (int mode : {0, 1, 2}) b->Args({static_cast<int64_t>(t), 1024, 2048, 64, threads, mode});
  // A prompt's Mixtral-shaped expert products (128 tokens an expert), with and without VBMI.
  for (int64_t cols : {4096, 14336})
    for (int mode : {0, 3}) b->Args({static_cast<int64_t>(DType::Q4_0), 512, cols, 128, 1, mode});
}

void MatvecArgs(benchmark::internal::Benchmark* b) {
  for (DType t : {DType::F32, DType::F16, DType::BF16})
    for (int64_t rows : {4096, 14336})
      for (int threads : {1, 2}) b->Args({static_cast<int64_t>(t), rows, 4096, threads});
}

void MatmulArgs(benchmark::internal::Benchmark* b) {
  for (DType t : {DType::F16, DType::BF16, DType::F32})
    for (int threads : {1, 2})
      for (int as_matvec : {0, 1})
        b->Args({static_cast<int64_t>(t), 4096, 4096, threads, 64, as_matvec});
  // A 16-sequence decode step's LM head and expert products on the bundled model's shapes.
  for (int64_t n : {4, 16}) {
    b->Args({static_cast<int64_t>(DType::BF16), 8000, 256, 1, n, 0});
    b->Args({static_cast<int64_t>(DType::BF16), 384, 256, 1, n, 0});
  }
}

BENCHMARK(BM_MemRead)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Matvec)->Apply(MatvecArgs)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Matmul)->Apply(MatmulArgs)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_QuantMatmul)->Apply(QuantMatmulArgs)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
