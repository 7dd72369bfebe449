// The scratch buffers of one Context's forward pass: they only grow, so a generation allocates
// nothing per token.
#pragma once
#include <algorithm>
#include <deque>
#include <vector>

#include "epwa/memory.hpp"
#include "epwa/model.hpp"
#include "epwa/ops.hpp"
#include "linear.hpp"

namespace epwa {

// A scratch array that only grows (its contents are lost when it does); large ones get huge pages.
template <class T>
class Buffer {
 public:
  T* data() const { return static_cast<T*>(mem_.data()); }
  std::span<T> span() const { return {data(), n_}; }
  size_t size() const { return n_; }
  T& operator[](size_t i) const { return data()[i]; }
  T* resize(int64_t n) {
    const auto need = static_cast<size_t>(n) * sizeof(T);
    if (need > mem_.size()) mem_ = LargeBuffer(std::max(need, mem_.size() + mem_.size() / 2));
    n_ = static_cast<size_t>(n);
    return data();
  }

 private:
  LargeBuffer mem_;
  size_t n_ = 0;
};

// Inputs prepared for the weight types that read the same activations; references stay valid
// until reset().
class InputSet {
 public:
  void reset() { used_ = 0; }
  const LinearInput& get(DType t, const float* x, int64_t n, int64_t cols) {
    for (size_t i = 0; i < used_; ++i) {
      const LinearInput& in = inputs_[i];
      if (in.wtype() == t && in.x() == x && in.rows() == n && in.cols() == cols) return in;
    }
    if (used_ == inputs_.size()) inputs_.emplace_back();
    inputs_[used_].prepare(t, x, n, cols);
    return inputs_[used_++];
  }

 private:
  std::deque<LinearInput> inputs_;  // a deque: growing keeps references
  size_t used_ = 0;
};

struct Context::Scratch {
  RopeTable rope;
  Buffer<float> x, xn, q, k, v, att, o, router, probs, gathered, gate, up, down, bias, shared;
  Buffer<int32_t> topk, expert_begin, expert_fill, rows;
  Buffer<float> topw, rw;
  InputSet inputs;
  std::vector<RowTask> tasks;
  // Decode's selected experts: index, weight, prepared inputs of gate and up.
  std::vector<int32_t> sel;
  std::vector<float> sel_w;
  std::vector<const LinearInput*> in_gate, in_up;
  explicit Scratch(const ModelConfig& c) : rope(c.head_dim, c.rope_theta) {}
};

// y = W x for each (W, y) of one token reading the same activations `x` (decode).
inline void run_one_token(std::span<const TensorView* const> ws, std::span<float* const> ys,
                          const float* x, int64_t cols, InputSet& inputs,
                          std::vector<RowTask>& tasks) {
  tasks.clear();
  for (size_t i = 0; i < ws.size(); ++i)
    tasks.push_back({ws[i], &inputs.get(ws[i]->dtype, x, 1, cols), ys[i]});
  linear_tasks(tasks);
}

// Y = X W^T for n rows of `x`: one job per matrix for a single token (decode), matrix products for
// a prompt. Outputs are the same either way.
inline void linear_rows_of(const TensorView& w, const float* x, int64_t n, int64_t cols, float* y,
                           Context::Scratch& s) {
  if (n == 1) {
    const TensorView* ws[] = {&w};
    float* ys[] = {y};
    run_one_token(ws, ys, x, cols, s.inputs, s.tasks);
  } else {
    linear(w, s.inputs.get(w.dtype, x, n, cols), y);
  }
}

inline void rmsnorm_rows(const float* x, int64_t n, int64_t d, const TensorView& w, float eps,
                         float* out) {
  for (int64_t i = 0; i < n; ++i)
    rmsnorm({x + i * d, static_cast<size_t>(d)}, w, eps, {out + i * d, static_cast<size_t>(d)});
}

}  // namespace epwa
