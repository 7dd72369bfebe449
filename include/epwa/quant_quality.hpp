// How far a quantized model strays from a reference one on given token sequences: perplexity, KL
// divergence and top-1 agreement of the next-token distributions, and router agreement per layer.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "epwa/model.hpp"

namespace epwa {

struct QuantQuality {
  int64_t positions = 0;         // positions with a next token (perplexity, KL, top-1)
  int64_t router_positions = 0;  // positions observed by the routers
  double ref_perplexity = 0, perplexity = 0;
  double mean_kl = 0;         // mean KL(ref || test) of the next-token distributions, nats
  double top1_agreement = 0;  // fraction of positions whose most likely next token matches
  std::vector<double> router_agreement;  // per MoE layer: fraction whose top-1 expert matches
  double watermark_layer_agreement = 0;  // router_agreement[watermark_layer]
};

// Runs both models over each sequence (all logits, fresh cache) and compares them. Sequences of
// fewer than 2 tokens are skipped; each is cut to the models' context. `watermark_layer` < 0 means
// the last MoE layer. Throws Error when the models' vocabularies or layer counts differ.
QuantQuality compare_models(Model& ref, Model& test,
                            std::span<const std::vector<int32_t>> sequences,
                            int32_t watermark_layer = -1);

}  // namespace epwa
