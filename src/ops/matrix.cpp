// Matrix products, views and row conversion over stored F32/F16/BF16 weights.
#include <algorithm>
#include <string>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/thread_scratch.hpp"
#include "kernels.hpp"

namespace epwa {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

bool is_float_type(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

int64_t elem_bytes(DType t) {
  return t == DType::F32 ? 4 : 2;
}

// A validated weight matrix: rows of `cols` stored values, `row_bytes` apart.
struct Matrix {
  const std::byte* data;
  DType type;
  int64_t rows, cols, row_bytes;
};

Matrix as_matrix(const TensorView& w, const char* op) {
  const auto name = [&] { return "tensor '" + w.name + "'"; };  // built only on error
  check(is_float_type(w.dtype), [&] {
    return std::string(op) + ": " + name() + " has type " + std::string(dtype_name(w.dtype)) +
           "; these kernels take f32, f16 or bf16";
  });
  for (int64_t d : w.shape)
    check(d >= 0, [&] {
      return std::string(op) + ": " + name() + " has a negative dimension in " + shape_str(w.shape);
    });
  const int64_t rows = w.rows(), cols = w.cols();
  const int64_t bytes = rows * cols * elem_bytes(w.dtype);
  check(static_cast<int64_t>(w.data.size()) == bytes, [&] {
    return std::string(op) + ": " + name() + " of shape " + shape_str(w.shape) + " and type " +
           std::string(dtype_name(w.dtype)) + " needs " + std::to_string(bytes) + " bytes, has " +
           std::to_string(w.data.size());
  });
  return {w.data.data(), w.dtype, rows, cols, cols * elem_bytes(w.dtype)};
}

using DotFn = float (*)(const void*, const float*, int64_t);
DotFn dot_for(const ops::Kernels& k, DType t) {
  return t == DType::F32 ? k.dot_f32 : t == DType::F16 ? k.dot_f16 : k.dot_bf16;
}

void convert(const ops::Kernels& k, DType t, const std::byte* src, float* dst, int64_t n) {
  switch (t) {
    case DType::F32:
      std::copy_n(reinterpret_cast<const char*>(src), n * 4, reinterpret_cast<char*>(dst));
      break;
    case DType::F16:
      k.f16_to_f32(src, dst, n);
      break;
    case DType::BF16:
      k.bf16_to_f32(src, dst, n);
      break;
    default:
      throw Error("to_f32: type " + std::string(dtype_name(t)) + " is not f32, f16 or bf16");
  }
}

// Rows per parallel chunk so that a chunk streams at least ~32 KB of weights: fewer, larger
// chunks for the small matrices of decode (router, small experts).
int64_t row_grain(int64_t row_bytes) {
  return std::max<int64_t>(1, (32 << 10) / std::max<int64_t>(row_bytes, 1));
}

// Up to this many tokens, matmul runs matvec's dot products on each row converted once: packing
// panels cost more than the products they serve (a 16-sequence decode of the bundled model, ~4
// tokens per expert, spent half its time in pack_panel), and the values equal matvec's to the bit.
constexpr int64_t kFewTokens = 8;

}  // namespace

TensorView expert_view(const TensorView& w, int64_t e) {
  check(w.shape.size() == 3 || w.shape.size() == 2, [&] {
    return "expert_view: tensor '" + w.name + "' has shape " + shape_str(w.shape) +
           ", not {experts, rows, cols} or {experts, cols}";
  });
  check(e >= 0 && e < w.shape[0], [&] {
    return "expert_view: expert " + std::to_string(e) + " out of range for tensor '" + w.name +
           "' with " + std::to_string(w.shape[0]) + " experts";
  });
  const std::vector<int64_t> one(w.shape.begin() + 1, w.shape.end());
  const int64_t per = dtype_bytes(w.dtype, one.size() == 2 ? one[0] * one[1] : one[0]);
  check(static_cast<int64_t>(w.data.size()) == per * w.shape[0], [&] {
    return "expert_view: tensor '" + w.name + "' has " + std::to_string(w.data.size()) +
           " bytes, its shape needs " + std::to_string(per * w.shape[0]);
  });
  TensorView v;
  v.name = w.name + "[" + std::to_string(e) + "]";
  v.dtype = w.dtype;
  v.shape = one;
  v.data = w.data.subspan(static_cast<size_t>(per * e), static_cast<size_t>(per));
  return v;
}

TensorView row_range(const TensorView& w, int64_t r0, int64_t r1) {
  check(w.shape.size() == 2, [&] {
    return "row_range: tensor '" + w.name + "' has shape " + shape_str(w.shape) +
           ", not {rows, cols}";
  });
  check(0 <= r0 && r0 <= r1 && r1 <= w.shape[0], [&] {
    return "row_range: rows [" + std::to_string(r0) + ", " + std::to_string(r1) +
           ") out of range for tensor '" + w.name + "' with " + std::to_string(w.shape[0]) +
           " rows";
  });
  const int64_t row_bytes = dtype_bytes(w.dtype, w.shape[1]);
  check(static_cast<int64_t>(w.data.size()) == row_bytes * w.shape[0], [&] {
    return "row_range: tensor '" + w.name + "' has " + std::to_string(w.data.size()) +
           " bytes, its shape needs " + std::to_string(row_bytes * w.shape[0]);
  });
  TensorView v;
  v.name = w.name;
  v.dtype = w.dtype;
  v.shape = {r1 - r0, w.shape[1]};
  v.data = w.data.subspan(static_cast<size_t>(row_bytes * r0),
                          static_cast<size_t>(row_bytes * (r1 - r0)));
  return v;
}

void matvec(const TensorView& w, std::span<const float> x, std::span<float> y, ThreadPool& pool) {
  matvec(w, 0, w.rows(), x, y, pool);
}

void matvec(const TensorView& w, int64_t r0, int64_t r1, std::span<const float> x,
            std::span<float> y, ThreadPool& pool) {
  const Matrix m = as_matrix(w, "matvec");
  check(0 <= r0 && r0 <= r1 && r1 <= m.rows, [&] {
    return "matvec: rows [" + std::to_string(r0) + ", " + std::to_string(r1) +
           ") out of range for tensor '" + w.name + "' with " + std::to_string(m.rows) + " rows";
  });
  check(static_cast<int64_t>(x.size()) == m.cols, [&] {
    return "matvec: tensor '" + w.name + "' has " + std::to_string(m.cols) + " columns, x has " +
           std::to_string(x.size()) + " values";
  });
  check(static_cast<int64_t>(y.size()) == r1 - r0, [&] {
    return "matvec: " + std::to_string(r1 - r0) + " rows of tensor '" + w.name + "', y has " +
           std::to_string(y.size()) + " values";
  });
  const DotFn dotf = dot_for(ops::kernels(), m.type);
  const std::byte* base = m.data + r0 * m.row_bytes;
  const float* xp = x.data();
  float* yp = y.data();
  pool.parallel_for(
      r1 - r0,
      [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) yp[i] = dotf(base + i * m.row_bytes, xp, m.cols);
      },
      row_grain(m.row_bytes));
}

void matmul(const TensorView& w, const float* x, int64_t n, float* y, ThreadPool& pool) {
  const Matrix m = as_matrix(w, "matmul");
  check(n >= 0, [&] { return "matmul: negative token count for tensor '" + w.name + "'"; });
  if (n == 0 || m.rows == 0) return;
  check(x != nullptr && y != nullptr,
        [&] { return "matmul: null x or y for tensor '" + w.name + "'"; });
  if (n == 1) {
    matvec(w, {x, static_cast<size_t>(m.cols)}, {y, static_cast<size_t>(m.rows)}, pool);
    return;
  }
  const ops::Kernels& k = ops::kernels();
  if (n <= kFewTokens) {
    pool.parallel_for(
        m.rows,
        [&](int64_t b, int64_t e) {
          thread_local ThreadScratch<std::vector<float>> scratch_tls;
          std::vector<float>& scratch = *scratch_tls;
          scratch.resize(static_cast<size_t>(m.cols));
          k.dot_rows(m.type, m.data + b * m.row_bytes, m.row_bytes, e - b, x, n, m.cols, y + b,
                     m.rows, scratch.data());
        },
        row_grain(m.row_bytes));
    return;
  }
  // Blocking: a task owns a range of 16-row panels and all tokens. For each block of kTokens
  // tokens x kCols columns of X (128 KB, stays in L2) every panel of the task is converted once to
  // a transposed f32 panel (16 KB, stays in L1) that meets all tokens of the block in 6-token x
  // 16-row register tiles. Each weight is thus converted once per kTokens tokens. Sizes were tuned
  // on a 2-core EPYC (docs/KERNELS.md).
  constexpr int64_t kTokens = 128, kCols = 256;
  const int64_t eb = elem_bytes(m.type);
  const int64_t panels = (m.rows + ops::kPanel - 1) / ops::kPanel;
  pool.parallel_for(panels, [&](int64_t b, int64_t e) {
    thread_local ThreadScratch<std::vector<float>> panel_tls;
    std::vector<float>& panel = *panel_tls;
    panel.resize(ops::kPanel * kCols);
    for (int64_t t0 = 0; t0 < n; t0 += kTokens) {
      const int64_t nt = std::min(kTokens, n - t0);
      for (int64_t c0 = 0; c0 < m.cols; c0 += kCols) {
        const int64_t nc = std::min(kCols, m.cols - c0);
        for (int64_t p = b; p < e; ++p) {
          const int64_t r = p * ops::kPanel, mr = std::min(ops::kPanel, m.rows - r);
          k.pack_panel(m.type, m.data + r * m.row_bytes + c0 * eb, m.row_bytes, mr, nc,
                       panel.data());
          k.gemm_panel(panel.data(), mr, x + t0 * m.cols + c0, m.cols, nt, nc, y + t0 * m.rows + r,
                       m.rows, c0 > 0);
        }
      }
    }
  });
}

void to_f32(DType t, const std::byte* src, float* dst, int64_t n) {
  check(n >= 0, "to_f32: negative count");
  convert(ops::kernels(), t, src, dst, n);
}

void embedding_row(const TensorView& table, int64_t row, std::span<float> out) {
  const Matrix m = as_matrix(table, "embedding_row");
  check(row >= 0 && row < m.rows, [&] {
    return "embedding_row: row " + std::to_string(row) + " out of range for tensor '" + table.name +
           "' with " + std::to_string(m.rows) + " rows";
  });
  check(static_cast<int64_t>(out.size()) == m.cols, [&] {
    return "embedding_row: tensor '" + table.name + "' has " + std::to_string(m.cols) +
           " columns, out has " + std::to_string(out.size());
  });
  convert(ops::kernels(), m.type, m.data + row * m.row_bytes, out.data(), m.cols);
}

float dot(DType t, const std::byte* w, const float* x, int64_t n) {
  check(is_float_type(t),
        [&] { return "dot: type " + std::string(dtype_name(t)) + " is not f32, f16 or bf16"; });
  check(n >= 0, "dot: negative count");
  return dot_for(ops::kernels(), t)(w, x, n);
}

}  // namespace epwa
