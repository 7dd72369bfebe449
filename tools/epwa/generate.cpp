// epwa generate: continue a prompt.
#include <nlohmann/json.hpp>

#include <iostream>

#include "command.hpp"
#include "common.hpp"
#include "epwa/error.hpp"
#include "epwa/generate.hpp"

namespace epwa::cli {
namespace {

struct Args {
  ModelArgs model;
  std::string prompt_tokens;
  int32_t max_new = 32;
  SamplingOptions s;
  bool json = false;
};

const Command kGenerate{"generate", "Generate tokens after a prompt", [](CLI::App& app) {
  auto a = std::make_shared<Args>();
  a->model.add(app);
  app.add_option("--prompt-tokens", a->prompt_tokens, "comma-separated prompt token ids")->required();
  app.add_option("--max-new-tokens,-n", a->max_new, "tokens to generate")->check(CLI::NonNegativeNumber);
  app.add_option("--temperature", a->s.temperature, "0 = greedy")->check(CLI::NonNegativeNumber);
  app.add_option("--top-k", a->s.top_k, "keep the k most likely tokens (0 = off)")->check(CLI::NonNegativeNumber);
  app.add_option("--top-p", a->s.top_p, "nucleus sampling mass (1 = off)")->check(CLI::Range(0.0f, 1.0f));
  app.add_option("--seed", a->s.seed, "sampling seed");
  app.add_flag("--json", a->json, "print JSON");
  return [a] {
    const auto prompt = parse_token_list(a->prompt_tokens);
    auto m = a->model.load();
    GenerateOptions o;
    o.max_new_tokens = a->max_new;
    o.sampling = a->s;
    o.stop_tokens = {m->config().eos_token_id};
    const auto out = generate(*m, prompt, o);
    if (a->json) {
      std::cout << nlohmann::json{{"prompt_tokens", prompt}, {"tokens", out}}.dump() << "\n";
    } else {
      for (size_t i = 0; i < out.size(); ++i) std::cout << (i ? "," : "") << out[i];
      std::cout << "\n";
    }
    return 0;
  };
}};

}  // namespace
}  // namespace epwa::cli
