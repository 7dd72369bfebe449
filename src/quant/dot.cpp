// Dispatch of the packed kernels: the best ISA is chosen once from cpu_features().
#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "epwa/platform.hpp"
#include "epwa/thread_scratch.hpp"
#include "quant/blocks.hpp"
#include "quant/kernels.hpp"

namespace epwa {

bool isa_available(KernelIsa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case KernelIsa::Scalar:
      return true;
    case KernelIsa::Avx2:
      return f.avx2 && f.fma && f.f16c && quant::row_dot_avx2(DType::F32);
    case KernelIsa::Avx512Vnni:
      return isa_available(KernelIsa::Avx2) && f.avx512f && f.avx512bw && f.avx512vl &&
             f.avx512vnni && quant::gemm_avx512vnni(DType::Q8_0);
  }
  return false;
}

KernelIsa best_isa() {
  static const KernelIsa isa = [] {
    KernelIsa best = KernelIsa::Scalar;
    for (KernelIsa i : {KernelIsa::Avx2, KernelIsa::Avx512Vnni})
      if (isa_available(i)) best = i;
    if (const char* env = std::getenv("EPWA_ISA")) {
      const std::string_view s(env);
      KernelIsa cap = KernelIsa::Scalar;
      if (s == "avx2")
        cap = KernelIsa::Avx2;
      else if (s == "avx512vnni")
        cap = KernelIsa::Avx512Vnni;
      else if (s != "scalar")
        throw Error("EPWA_ISA=" + std::string(s) +
                    ": unknown kernel level (scalar, avx2, avx512vnni)");
      best = std::min(best, cap);
    }
    return best;
  }();
  return isa;
}

std::string_view isa_name(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::Scalar:
      return "scalar";
    case KernelIsa::Avx2:
      return "avx2";
    case KernelIsa::Avx512Vnni:
      return "avx512vnni";
  }
  return "unknown";
}

namespace quant {
RowDot row_dot(DType t, KernelIsa isa) {
  if (isa == KernelIsa::Scalar) return row_dot_scalar(t);
  if (!isa_available(isa))
    throw Error("quant kernels: " + std::string(isa_name(isa)) +
                " is not available on this CPU or build");
  // MXFP4 has its own AVX-512 arithmetic; every other type decodes with the AVX2 kernels.
  if (isa == KernelIsa::Avx512Vnni && t == DType::MXFP4)
    if (const RowDot k = mxfp4_row_avx512()) return k;
  const RowDot k = row_dot_avx2(t);
  if (!k) throw Error("quant kernels: no AVX2 kernel for " + std::string(dtype_name(t)));
  return k;
}
}  // namespace quant

float vec_dot_packed(const std::byte* wrow, const PackedVector& x, KernelIsa isa) {
  return quant::row_dot(x.wtype(), isa)(wrow, x);
}
float vec_dot_packed(const std::byte* wrow, const PackedVector& x) {
  return vec_dot_packed(wrow, x, best_isa());
}

void vec_dot_rows(const std::byte* w, int64_t row_bytes, const PackedVector& x, int64_t row_begin,
                  int64_t row_end, float* out, KernelIsa isa) {
  check(row_begin >= 0 && row_begin <= row_end, [&] {
    return "vec_dot_rows: bad row range [" + std::to_string(row_begin) + ", " +
           std::to_string(row_end) + ")";
  });
  check(row_bytes >= dtype_bytes(x.wtype(), x.size()), [&] {
    return "vec_dot_rows: row stride " + std::to_string(row_bytes) + " bytes is shorter than a " +
           std::string(dtype_name(x.wtype())) + " row of " + std::to_string(x.size()) + " elements";
  });
  const quant::RowDot k = quant::row_dot(x.wtype(), isa);  // checks that isa runs here
  if (isa == KernelIsa::Avx512Vnni && row_end - row_begin >= quant::kVnniDecodeMinRows)
    if (const quant::RangeDot d = quant::rows_dot_avx512vnni(x.wtype()))
      return d(w, row_bytes, x, row_begin, row_end, out);
  int64_t r = row_begin;
  if (const quant::RowsDot k4 = isa >= KernelIsa::Avx2 ? quant::rows4_dot_avx2(x.wtype()) : nullptr)
    for (; r + quant::kRowsAtOnce <= row_end; r += quant::kRowsAtOnce)
      k4(w + r * row_bytes, row_bytes, x, out + r);
  for (; r < row_end; ++r) out[r] = k(w + r * row_bytes, x);
}
void vec_dot_rows(const std::byte* w, int64_t row_bytes, const PackedVector& x, int64_t row_begin,
                  int64_t row_end, float* out) {
  vec_dot_rows(w, row_bytes, x, row_begin, row_end, out, best_isa());
}

void vec_dot_rows_multi(const std::byte* w, int64_t row_bytes,
                        std::span<const PackedVector* const> xs, int64_t row_begin, int64_t row_end,
                        float* out, int64_t out_stride, KernelIsa isa) {
  if (xs.empty()) return;
  const DType t = xs[0]->wtype();
  for (const PackedVector* x : xs)
    check(x->wtype() == t && x->size() == xs[0]->size(),
          "vec_dot_rows_multi: vectors packed for different types or lengths");
  check(row_begin >= 0 && row_begin <= row_end, [&] {
    return "vec_dot_rows_multi: bad row range [" + std::to_string(row_begin) + ", " +
           std::to_string(row_end) + ")";
  });
  check(row_bytes >= dtype_bytes(t, xs[0]->size()), [&] {
    return "vec_dot_rows_multi: row stride " + std::to_string(row_bytes) +
           " bytes is shorter than a " + std::string(dtype_name(t)) + " row of " +
           std::to_string(xs[0]->size()) + " elements";
  });
  const quant::RowDot k = quant::row_dot(t, isa);  // checks that isa runs here
  quant::RowsMultiDot g = isa == KernelIsa::Avx512Vnni ? quant::gemm_avx512vnni(t) : nullptr;
  if (!g && isa >= KernelIsa::Avx2) g = quant::gemm_avx2(t);
  if (g) {
    g(w, row_bytes, xs, row_begin, row_end, out, out_stride);
    return;
  }
  const quant::RowMultiDot k4v = isa >= KernelIsa::Avx2 ? quant::row_dot4v_avx2(t) : nullptr;
  // About 256 KiB of packed activations per group (int8 x for the integer kernels, f32 otherwise).
  const int64_t per = act_format(t) == ActFormat::F32 ? 4 * xs[0]->size() : xs[0]->size() + 64;
  const auto group =
      static_cast<size_t>(std::max<int64_t>(1, (256 << 10) / std::max<int64_t>(per, 1)));
  for (size_t v0 = 0; v0 < xs.size(); v0 += group) {
    const size_t v1 = std::min(xs.size(), v0 + group);
    for (int64_t r = row_begin; r < row_end; ++r) {
      const std::byte* row = w + r * row_bytes;
      size_t v = v0;
      if (k4v) {
        for (; v + quant::kVectorsAtOnce <= v1; v += quant::kVectorsAtOnce) {
          const PackedVector* ptrs[quant::kVectorsAtOnce];
          float res[quant::kVectorsAtOnce];
          for (int j = 0; j < quant::kVectorsAtOnce; ++j) ptrs[j] = xs[v + j];
          k4v(row, ptrs, res);
          for (int j = 0; j < quant::kVectorsAtOnce; ++j)
            out[static_cast<int64_t>(v + j) * out_stride + r] = res[j];
        }
      }
      for (; v < v1; ++v) out[static_cast<int64_t>(v) * out_stride + r] = k(row, *xs[v]);
    }
  }
}
void vec_dot_rows_multi(const std::byte* w, int64_t row_bytes,
                        std::span<const PackedVector* const> xs, int64_t row_begin, int64_t row_end,
                        float* out, int64_t out_stride) {
  vec_dot_rows_multi(w, row_bytes, xs, row_begin, row_end, out, out_stride, best_isa());
}
void vec_dot_rows_multi(const std::byte* w, int64_t row_bytes, std::span<const PackedVector> xs,
                        int64_t row_begin, int64_t row_end, float* out, int64_t out_stride,
                        KernelIsa isa) {
  // Reused: no allocation per call.
  thread_local ThreadScratch<std::vector<const PackedVector*>> ptrs_tls;
  std::vector<const PackedVector*>& ptrs = *ptrs_tls;
  ptrs.resize(xs.size());
  for (size_t v = 0; v < xs.size(); ++v) ptrs[v] = &xs[v];
  vec_dot_rows_multi(w, row_bytes, std::span<const PackedVector* const>(ptrs), row_begin, row_end,
                     out, out_stride, isa);
}
void vec_dot_rows_multi(const std::byte* w, int64_t row_bytes, std::span<const PackedVector> xs,
                        int64_t row_begin, int64_t row_end, float* out, int64_t out_stride) {
  vec_dot_rows_multi(w, row_bytes, xs, row_begin, row_end, out, out_stride, best_isa());
}

void TiledVectors::reserve(DType wtype, int64_t n, int64_t count, KernelIsa isa) {
  check(n >= 0 && count >= 0, "TiledVectors: negative size");
  check(isa_available(isa), [&] {
    return "TiledVectors: kernel level " + std::string(isa_name(isa)) + " does not run here";
  });
  wtype_ = wtype;
  n_ = n;
  count_ = count;
  // The format vec_dot_rows_multi takes on this level (the VNNI level falls back to AVX2 tiles).
  const quant::TileFormat* f = isa == KernelIsa::Avx512Vnni
                                   ? quant::tile_format_avx512vnni(wtype, cpu_features().avx512vbmi)
                                   : nullptr;
  if (!f && isa >= KernelIsa::Avx2) f = quant::tile_format_avx2(wtype);
  format_ = count > 0 && n > 0 ? f : nullptr;
  if (!format_) return;
  stride_ = quant::tile_stride(*f, n);
  buf_.resize(static_cast<size_t>(count * stride_) + 64);
}
void TiledVectors::set(int64_t v, const PackedVector& x) {
  check(v >= 0 && v < count_ && x.wtype() == wtype_ && x.size() == n_,
        "TiledVectors: vector of another type, length or index");
  if (!format_) return;
  uint8_t* const base = buf_.data() + ((64 - reinterpret_cast<uintptr_t>(buf_.data()) % 64) % 64);
  quant::tile_repack(*static_cast<const quant::TileFormat*>(format_), x, base + v * stride_);
}
void TiledVectors::repack(std::span<const PackedVector* const> xs, KernelIsa isa) {
  reserve(xs.empty() ? DType::F32 : xs[0]->wtype(), xs.empty() ? 0 : xs[0]->size(),
          static_cast<int64_t>(xs.size()), isa);
  for (size_t v = 0; v < xs.size(); ++v) set(static_cast<int64_t>(v), *xs[v]);
}
void TiledVectors::repack(std::span<const PackedVector* const> xs) {
  repack(xs, best_isa());
}

void vec_dot_rows_multi(const std::byte* w, int64_t row_bytes, const TiledVectors& xs,
                        int64_t row_begin, int64_t row_end, float* out, int64_t out_stride) {
  check(xs.tiled(), "vec_dot_rows_multi: vectors not repacked for tiles");
  check(row_begin >= 0 && row_begin <= row_end, [&] {
    return "vec_dot_rows_multi: bad row range [" + std::to_string(row_begin) + ", " +
           std::to_string(row_end) + ")";
  });
  check(row_bytes >= dtype_bytes(xs.wtype_, xs.n_), [&] {
    return "vec_dot_rows_multi: row stride " + std::to_string(row_bytes) +
           " bytes is shorter than a " + std::string(dtype_name(xs.wtype_)) + " row of " +
           std::to_string(xs.n_) + " elements";
  });
  const uint8_t* base =
      xs.buf_.data() + ((64 - reinterpret_cast<uintptr_t>(xs.buf_.data()) % 64) % 64);
  quant::run_tile_passes(*static_cast<const quant::TileFormat*>(xs.format_), w, row_bytes, base,
                         xs.count_, xs.stride_, xs.n_, row_begin, row_end, out, out_stride);
}

void matvec(DType wtype, const std::byte* w, int64_t rows, int64_t cols, const float* x, float* y) {
  // Reused: decode calls this for every matrix of every token.
  thread_local ThreadScratch<PackedVector> packed_tls;
  PackedVector& packed = *packed_tls;
  packed.pack(wtype, {x, static_cast<size_t>(cols)});
  vec_dot_rows(w, dtype_bytes(wtype, cols), packed, 0, rows, y);
}

}  // namespace epwa
