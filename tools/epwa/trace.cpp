// epwa trace: logits and router decisions of every position, as one JSON object.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "command.hpp"
#include "common.hpp"
#include "epwa/error.hpp"
#include "epwa/model.hpp"
#include "epwa/tokenizer.hpp"

namespace epwa::cli {
namespace {

struct Collector : RouterObserver {
  nlohmann::json layers = nlohmann::json::array();
  void observe(const RouterObservation& o) override {
    while (static_cast<int32_t>(layers.size()) <= o.layer)
      layers.push_back({{"layer", layers.size()},
                        {"logits", nlohmann::json::array()},
                        {"topk", nlohmann::json::array()},
                        {"weights", nlohmann::json::array()}});
    auto& L = layers[o.layer];
    L["logits"].push_back(std::vector<float>(o.logits.begin(), o.logits.end()));
    L["topk"].push_back(std::vector<int32_t>(o.topk.begin(), o.topk.end()));
    L["weights"].push_back(std::vector<float>(o.weights.begin(), o.weights.end()));
  }
};

const Command kTrace{
    "trace", "Print logits and router decisions for a token sequence", [](CLI::App& app) {
      auto model = std::make_shared<ModelArgs>();
      auto tokens = std::make_shared<std::string>();
      auto text = std::make_shared<std::string>();
      auto json = std::make_shared<bool>(false);
      model->add(app);
      auto* tok_opt = app.add_option("--tokens", *tokens, "comma-separated token ids");
      auto* text_opt =
          app.add_option("--text", *text, "text, tokenized with the model's tokenizer (BOS added)");
      tok_opt->excludes(text_opt);
      app.add_flag("--json", *json, "print JSON (the only format)");
      return [=] {
        check(tok_opt->count() || text_opt->count(), "trace needs --tokens or --text");
        model->json_stats = true;  // JSON is the only format: the statistics go in its "load" field
        auto m = model->load();
        const auto ids = text_opt->count() ? load_tokenizer(m->source())->encode(*text)
                                           : parse_token_list(*tokens);
        check(!ids.empty(), "trace: no tokens");
        Collector col;
        Context cache = m->make_context(static_cast<int64_t>(ids.size()));
        ForwardOptions fo;
        fo.observer = &col;
        fo.all_logits = true;
        const std::vector<float> logits = m->forward(ids, cache, fo);
        const int64_t v = m->config().vocab_size;
        nlohmann::json out;
        out["tokens"] = ids;
        out["logits"] = nlohmann::json::array();
        for (size_t i = 0; i < ids.size(); ++i)
          out["logits"].push_back(
              std::vector<float>(logits.begin() + i * v, logits.begin() + (i + 1) * v));
        out["router"] = std::move(col.layers);
        out["load"] = model->load_json();
        std::cout << out.dump() << "\n";
        return 0;
      };
    }};

}  // namespace
}  // namespace epwa::cli
