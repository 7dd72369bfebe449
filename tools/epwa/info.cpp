// epwa info: what a model file holds.
#include <fmt/core.h>
#include <fmt/ranges.h>

#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "command.hpp"
#include "common.hpp"
#include "epwa/model.hpp"
#include "epwa/platform.hpp"

namespace epwa::cli {
namespace {

void count(std::map<std::string, std::pair<int64_t, int64_t>>& by_type, const TensorView& t) {
  auto& [params, bytes] = by_type[std::string(dtype_name(t.dtype))];
  params += t.numel();
  bytes += static_cast<int64_t>(t.data.size());
}

const Command kInfo{
    "info", "Show a model's architecture, sizes and tensor types", [](CLI::App& app) {
      auto model = std::make_shared<ModelArgs>();
      auto json = std::make_shared<bool>(false);
      model->add(app);
      app.add_flag("--json", *json, "print JSON");
      return [=] {
        model->json_stats = *json;
        auto m = model->load();
        const ModelConfig& c = m->config();
        const ModelWeights& w = m->weights();
        std::map<std::string, std::pair<int64_t, int64_t>> by_type;
        const bool tied = w.head.data.data() == w.embed.data.data();
        for_each_tensor(c, [&](const TensorSpec& s) {
          if (!(s.kind == TensorKind::Output && tied)) count(by_type, weight_slot(w, s));
        });
        int64_t params = 0, bytes = 0;
        for (auto& [_, pb] : by_type) params += pb.first, bytes += pb.second;
        nlohmann::json j{{"path", path_to_utf8(m->source())},
                         {"format", m->format()},
                         {"architecture", c.architecture},
                         {"family", c.family},
                         {"vocab_size", c.vocab_size},
                         {"hidden_size", c.hidden_size},
                         {"intermediate_size", c.intermediate_size},
                         {"expert_intermediate_size", c.expert_intermediate_size},
                         {"shared_expert_intermediate_size", c.shared_expert_intermediate_size},
                         {"moe_layers", c.moe_layers()},
                         {"dense_layers", c.dense_layers},
                         {"norm_topk_prob", c.norm_topk_prob},
                         {"attention_bias", c.attention_bias},
                         {"qk_norm", c.qk_norm == QkNorm::None   ? "none"
                                     : c.qk_norm == QkNorm::Full ? "full"
                                                                 : "per-head"},
                         {"clip_qkv", c.clip_qkv},
                         {"layers", c.num_layers},
                         {"heads", c.num_heads},
                         {"kv_heads", c.num_kv_heads},
                         {"head_dim", c.head_dim},
                         {"experts", c.num_experts},
                         {"experts_per_token", c.experts_per_token},
                         {"rope_theta", c.rope_theta},
                         {"rms_norm_eps", c.rms_norm_eps},
                         {"tie_word_embeddings", c.tie_word_embeddings},
                         {"parameters", params},
                         {"bytes", bytes}};
        for (auto& [type, pb] : by_type)
          j["tensor_types"][type] = {{"parameters", pb.first}, {"bytes", pb.second}};
        j["load"] = model->load_json();
        if (*json) {
          std::cout << j.dump(2) << "\n";
          return 0;
        }
        fmt::print("model        {} ({})\n", path_to_utf8(m->source()), m->format());
        fmt::print("architecture {}: {} layers, hidden {}, heads {}/{} (head dim {})\n",
                   c.architecture, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads,
                   c.head_dim);
        fmt::print("attention    q/k/v bias: {}, q/k norm: {}, clip_qkv: {}\n",
                   c.attention_bias ? "yes" : "no", j["qk_norm"].get<std::string>(),
                   c.clip_qkv > 0 ? fmt::format("{}", c.clip_qkv) : "off");
        fmt::print("experts      {} per MoE layer, top-{}, expert FFN {}, weights {}renormalised\n",
                   c.num_experts, c.experts_per_token, c.expert_intermediate_size,
                   c.norm_topk_prob ? "" : "not ");
        if (c.shared_expert_intermediate_size > 0)
          fmt::print("shared       one shared expert, FFN {}{}\n",
                     c.shared_expert_intermediate_size,
                     c.shared_expert_gate ? ", sigmoid gate" : "");
        fmt::print("layers       {} MoE, {} dense{}\n", c.num_moe_layers(), c.dense_layers.size(),
                   c.dense_layers.empty() ? ""
                                          : fmt::format(" (FFN {}: layers {})", c.intermediate_size,
                                                        fmt::join(c.dense_layers, ", ")));
        fmt::print("vocabulary   {} (tied head: {})\n", c.vocab_size,
                   c.tie_word_embeddings ? "yes" : "no");
        fmt::print("rope theta   {}, rms eps {}\n", c.rope_theta, c.rms_norm_eps);
        fmt::print("parameters   {} ({:.2f} M), {} bytes\n", params, params / 1e6, bytes);
        for (auto& [type, pb] : by_type)
          fmt::print("  {:<6} {:>14} parameters {:>14} bytes\n", type, pb.first, pb.second);
        const auto r = model->resolved();
        const LoadReport& rep = model->report();
        fmt::print("load mode    {} ({}) -> {}; {}\n", load_mode_name(rep.requested),
                   r.sources.at("mode"), rep.effective, rep.reason);
        fmt::print("device       {}{}\n", rep.device,
                   rep.device_why.empty()
                       ? ""
                       : " (" + (rep.cpu ? r.sources.at("cpu") : rep.device_why) + ")");
        if (!rep.cache.empty())
          fmt::print("cache        {} {}\n", rep.cache, path_to_utf8(rep.cache_path));
        fmt::print("router hash  {}\n", model->router_hash());
        return 0;
      };
    }};

}  // namespace
}  // namespace epwa::cli
