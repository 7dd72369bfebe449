// The small interface between the engine and everything that watches it (watermark, detection,
// PEPI): router observations in, logits adjusted. Header-only so that watermark/ and detect/ need
// not link the model.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace epwa {

// What the router of one MoE layer decided for one sequence position. Views are valid only during
// the observe() call.
struct RouterObservation {
  int32_t layer = 0;     // MoE layer index, 0-based among the MoE layers (dense layers have none)
  int64_t position = 0;  // sequence position (0 = first token of the sequence, BOS included)
  std::span<const float> logits;   // E router logits
  std::span<const int32_t> topk;   // the k chosen experts, best first (ties -> lower index)
  std::span<const float> weights;  // their routing weights, as the model applies them
  int32_t sequence = 0;            // the sequence of the context (0 for a single-sequence context)
  // The router confidence (docs/SPEC.md section 3) is the softmax over this many largest logits:
  // 0 for all E (the softmax families), k for GPT-OSS's top-k softmax.
  int32_t confidence_over = 0;
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
