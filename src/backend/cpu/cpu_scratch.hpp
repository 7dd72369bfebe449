// The CPU backend's per-context state: scratch arrays that only grow (no allocation per token once
// grown), the prepared activations, and the RoPE table.
#pragma once
#include <algorithm>
#include <array>
#include <cstddef>
#include <deque>
#include <optional>
#include <vector>

#include "epwa/backend.hpp"
#include "epwa/memory.hpp"
#include "epwa/ops.hpp"
#include "linear.hpp"

namespace epwa::cpu {

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

// Rows [r0, r1) of one expert's matrix over the tokens routed to it (a prompt's job's task).
struct ExpertTask {
  int32_t expert, in_wave;  // in_wave: its place in Scratch::wave_experts
  int64_t r0, r1;
};

struct Scratch : BackendScratch {
  std::array<ScratchArray<std::byte>, 64> slots;  // Backend::buffer's activation memory
  RopeTable rope;
  std::optional<RopeTable> latent_rope;  // MLA's rope part (interleaved, YaRN)
  InputSet inputs;
  std::vector<RowTask> tasks;
  // Expert outputs: one token's k experts side by side (decode), or one expert's tokens (prompt).
  ScratchArray<float> gathered, gate, up, down;
  ScratchArray<int32_t> expert_begin, expert_fill, rows, slot_expert;
  ScratchArray<float> rw, bias, probs;
  ScratchArray<float> sinks;  // a layer's sink logits as f32
  // Decode's selected experts: index, weight, prepared inputs of gate and up (the prompt's: per
  // expert, and the down inputs of a wave of experts, prepared in wave_inputs).
  std::vector<int32_t> sel;
  std::vector<float> sel_w;
  std::vector<const LinearInput*> in_gate, in_up, in_down;
  InputSet wave_inputs;
  std::vector<ExpertTask> expert_tasks;  // the prompt's (expert, row range) tasks of one job
  std::vector<int32_t> wave_experts;
  // The wave's experts' vectors repacked once for the prompt tiles (by place in wave_experts):
  // gate's (up's too where they share the packed input), up's, down's.
  std::vector<TiledVectors> tiled_gate, tiled_up, tiled_down;
  // The most bytes of gate and down outputs a wave of a prompt's experts keeps (at least one
  // expert per wave; tests lower it to run many waves).
  int64_t moe_wave_bytes = int64_t{8} << 20;
  Scratch(int64_t head_dim, float theta, const Yarn& yarn) : rope(head_dim, theta, yarn) {}
};

// cpu_deepseek.cpp: Backend::latent_attention and Backend::route_grouped.
void latent_attention(const float* q, const float* kv, int64_t n, int64_t p0, const LatentShape& sh,
                      const TensorView& kv_b, const KvLayer& cache, float* att, Scratch& s);
void route_grouped(const float* logits, int64_t n, int64_t experts, const RouteRule& r,
                   int32_t* topk, float* topw, Scratch& s);

// y = W x for each (W, y) of one token reading the same activations `x` (decode): one job.
void run_one_token(std::span<const TensorView* const> ws, std::span<float* const> ys,
                   const float* x, int64_t cols, Scratch& s);

}  // namespace epwa::cpu
