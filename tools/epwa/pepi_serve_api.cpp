// epwa serve-api: a loopback OpenAI-completions endpoint over the local model, returning prompt
// log-probabilities (echo) so that PEPI's HTTP path can be exercised end to end without a GPU
// server. Only what PEPI needs: max_tokens 0 with echo; no generation.
#include <httplib.h>

#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>

#include "command.hpp"
#include "common.hpp"
#include "epwa/error.hpp"
#include "epwa/pepi.hpp"
#include "epwa/tokenizer.hpp"

namespace epwa::cli {
namespace {

struct Args {
  ModelArgs model;
  std::string host = "127.0.0.1";
  int port = 8000;
  bool text_keys = false;
  int32_t max_k = 100;
};

std::string error_body(const std::string& msg) {
  return nlohmann::json{{"error", {{"message", msg}, {"type", "invalid_request_error"}}}}.dump();
}

const Command kServeApi{
    "serve-api", "Serve prompt log-probabilities over HTTP (OpenAI completions, echo)",
    [](CLI::App& app) {
      auto a = std::make_shared<Args>();
      a->model.add(app);
      app.add_option("--host", a->host, "address to bind (default loopback)");
      app.add_option("--port", a->port, "TCP port")->check(real_number({.lo = 1, .hi = 65535}));
      app.add_option("--max-logprobs", a->max_k, "largest logprobs K accepted")
          ->check(real_number({.lo = 0, .lo_open = true}));
      app.add_flag("--text-keys", a->text_keys,
                   "key top_logprobs by token text instead of token_id:N");
      return [a] {
        const auto path = resolve_model_path(a->model.model);
        auto model = a->model.load();
        std::shared_ptr<const Tokenizer> tok = load_tokenizer(path);
        std::mutex mu;  // one forward pass at a time: the model keeps scratch buffers
        httplib::Server srv;
        srv.Post("/v1/completions", [&](const httplib::Request& req, httplib::Response& res) {
          try {
            const auto j = nlohmann::json::parse(req.body);
            check(j.value("echo", false), "only echo=true is supported");
            check(j.value("max_tokens", 16) == 0, "only max_tokens=0 is supported (no generation)");
            const int32_t k = j.value("logprobs", 0);
            check(k >= 1 && k <= a->max_k,
                  "logprobs must be in [1, " + std::to_string(a->max_k) + "]");
            std::vector<int32_t> ids;
            const auto& p = j.at("prompt");
            if (p.is_string())
              ids = tok->encode(p.get<std::string>(), true, false);
            else
              ids = p.get<std::vector<int32_t>>();
            check(!ids.empty(), "empty prompt");
            for (int32_t id : ids)
              check(id >= 0 && id < model->config().vocab_size,
                    "token id " + std::to_string(id) + " out of range");
            std::vector<TokenDistribution> d;
            {
              std::lock_guard lock(mu);
              LocalDistributionSource src(*model, 0);
              d = src.distributions(ids);
            }
            // Top-k plus the actual next token (as vLLM adds it), from the full distribution.
            for (size_t i = 0; i < d.size(); ++i) {
              const int32_t next = i + 1 < ids.size() ? ids[i + 1] : -1;
              float lp_next = 0;
              bool in_top = false;
              for (size_t r = 0; r < d[i].tokens.size(); ++r)
                if (d[i].tokens[r] == next) {
                  lp_next = d[i].logprobs[r];
                  in_top = r < static_cast<size_t>(k);
                }
              d[i].tokens.resize(static_cast<size_t>(k));
              d[i].logprobs.resize(static_cast<size_t>(k));
              if (next >= 0 && !in_top) {
                d[i].tokens.push_back(next);
                d[i].logprobs.push_back(lp_next);
              }
            }
            res.set_content(completions_response_json(ids, d, tok.get(), !a->text_keys),
                            "application/json");
          } catch (const std::exception& e) {
            res.status = 400;
            res.set_content(error_body(e.what()), "application/json");
          }
        });
        std::cerr << "serve-api: listening on http://" << a->host << ":" << a->port
                  << "/v1/completions\n";
        check(srv.listen(a->host.c_str(), a->port),
              "serve-api: cannot listen on " + a->host + ":" + std::to_string(a->port));
        return 0;
      };
    }};

}  // namespace
}  // namespace epwa::cli
