// The small interface between the engine and everything that watches it (watermark, detection,
// PEPI): router observations in, logits adjusted. Header-only so that watermark/ and detect/ need
// not link the model.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace epwa {

// How one MoE layer's pathway, its top-1 expert and router confidence (docs/SPEC.md sections 0
// and 3), is read from its router logits.
struct PathwayRule {
  // Softmax routers: the confidence is the softmax over this many largest logits (0: all E, the
  // softmax families; k: GPT-OSS's top-k softmax).
  int32_t confidence_over = 0;
  // Sigmoid routers that choose by score + bias (DeepSeek-V3), when this holds E values: the
  // top-1 is the best sigmoid(l) + bias among the experts of the kept groups (groups scored by
  // their two best), the confidence its sigmoid score over the sum of the top_k chosen (raw: the
  // score alone).
  std::vector<float> selection_bias;
  int32_t groups = 1, groups_kept = 1, top_k = 1;
  bool renormalize = false;

  static PathwayRule softmax_over(int32_t k) {
    PathwayRule r;
    r.confidence_over = k;
    return r;
  }
  bool sigmoid() const { return !selection_bias.empty(); }
  bool operator==(const PathwayRule&) const = default;
};

// What the router of one MoE layer decided for one sequence position. Views are valid only during
// the observe() call.
struct RouterObservation {
  int32_t layer = 0;     // MoE layer index, 0-based among the MoE layers (dense layers have none)
  int64_t position = 0;  // sequence position (0 = first token of the sequence, BOS included)
  std::span<const float> logits;   // E router logits
  std::span<const int32_t> topk;   // the k chosen experts, best first (ties -> lower index)
  std::span<const float> weights;  // their routing weights, as the model applies them
  int32_t sequence = 0;            // the sequence of the context (0 for a single-sequence context)
  const PathwayRule* pathway = nullptr;  // the layer's rule; null: the softmax over all E
};

class RouterObserver {
 public:
  virtual ~RouterObserver() = default;
  virtual void observe(const RouterObservation& obs) = 0;
  // The MoE layers it reads (empty = every layer): the engine reports only those, since each
  // report makes a GPU backend wait mid-pass.
  virtual std::vector<int32_t> layers() const { return {}; }
};

// Per-token uniforms in (0, 1) that a sampler races instead of drawing its own (exponential-
// minimum sampling: the distribution is unchanged, the choice is the key's; docs/SPEC.md 11).
class KeyedUniforms {
 public:
  virtual ~KeyedUniforms() = default;
  virtual double uniform(int32_t token) const = 0;
};

// Adjusts the raw next-token logits of the last processed position before sampling.
class LogitsProcessor {
 public:
  virtual ~LogitsProcessor() = default;
  virtual void process(std::span<float> logits) = 0;
  // The uniforms the sampler races for the step process() prepared (null: it draws its own).
  virtual const KeyedUniforms* uniforms() const { return nullptr; }
};

}  // namespace epwa
