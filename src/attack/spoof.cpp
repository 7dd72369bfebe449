// Spoofing: no key, each step pushed toward the tokens learned green.
#include "epwa/attack.hpp"
#include "epwa/error.hpp"
#include "epwa/session.hpp"

namespace epwa::attack {

std::vector<int32_t> spoof(Model& model, const StolenLists& stolen, int32_t layer,
                           double attack_delta, std::span<const int32_t> prompt,
                           const GenerateOptions& o, const Oracle* oracle, Model* writer) {
  check(attack_delta >= 0 && attack_delta <= kMaxDelta,
        "attack: --attack-delta must be in [0, 1e4]");
  ContextBias bias(
      stolen.scheme(), model_router_layer(model, layer),
      [&stolen, attack_delta](int32_t context, std::span<float> logits) {
        stolen.add_bias(context, attack_delta, logits);
      },
      stolen.vocab(), oracle);
  return writer ? bias.generate(*writer, prompt, o, &model) : bias.generate(model, prompt, o);
}

}  // namespace epwa::attack
