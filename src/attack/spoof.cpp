// Spoofing: no key, each step pushed toward the tokens learned green.
#include <limits>
#include <vector>

#include "epwa/attack.hpp"
#include "epwa/error.hpp"
#include "epwa/session.hpp"
#include "epwa/thread_scratch.hpp"

namespace epwa::attack {

std::vector<int32_t> spoof(Model& model, const StolenLists& stolen, int32_t layer,
                           double attack_delta, std::span<const int32_t> prompt,
                           const GenerateOptions& o, const Oracle* oracle, Model* writer,
                           int32_t api_top_k) {
  check(attack_delta >= 0 && attack_delta <= kMaxDelta,
        "attack: --attack-delta must be in [0, 1e4]");
  ContextBias bias(
      stolen.scheme(), model_router_layer(model, layer),
      [&stolen, attack_delta, api_top_k, &o](int32_t context, std::span<float> logits) {
        if (api_top_k > 0) {
          // An API's writer offers its top k of the tokens it may write (the sampler drops the
          // suppressed ones after this bias).
          constexpr float kNone = -std::numeric_limits<float>::infinity();
          for (const int32_t t : o.suppress_tokens)
            if (t >= 0 && static_cast<size_t>(t) < logits.size())
              logits[static_cast<size_t>(t)] = kNone;
          thread_local ThreadScratch<std::vector<uint8_t>> mask_tls;
          std::vector<uint8_t>& mask = *mask_tls;
          top_k_mask(logits, api_top_k, mask);
          for (size_t v = 0; v < logits.size(); ++v)
            if (!mask[v]) logits[v] = kNone;
        }
        stolen.add_bias(context, attack_delta, logits);
      },
      stolen.vocab(), oracle);
  return writer ? bias.generate(*writer, prompt, o, &model) : bias.generate(model, prompt, o);
}

}  // namespace epwa::attack
