#include "eval/generation.hpp"

#include "epwa/generate.hpp"

namespace epwa::eval {

std::vector<int32_t> generate_text(Model& m, std::span<const int32_t> prompt,
                                   WatermarkProcessor* wp, uint64_t seed, const TextSampling& s) {
  const int32_t eos = m.config().eos_token_id;
  GenerateOptions go;
  go.max_new_tokens = s.tokens;
  go.sampling.temperature = s.temperature;
  go.sampling.top_p = s.top_p;
  go.sampling.seed = seed;
  go.stop_tokens = {eos};
  go.suppress_tokens = s.suppress;
  if (wp) {
    wp->reset();
    go.observer = wp;
    go.processor = wp;
    // The exp mode (and context buckets) key each step by the previous token too.
    wp->set_previous_token(prompt.back());
    go.on_token = [wp](int32_t t) { wp->set_previous_token(t); };
  }
  std::vector<int32_t> out = generate(m, prompt, go);
  if (!out.empty() && out.back() == eos) out.pop_back();
  return out;
}

}  // namespace epwa::eval
