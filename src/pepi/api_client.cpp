// PEPI over HTTP: an OpenAI legacy-completions client (prompt log-probabilities through echo) and
// the matching response writer used by `epwa serve-api`. Plain HTTP only for now (the loopback /
// proxy case); Debian's compiled cpp-httplib has OpenSSL, so https is a small follow-up.
#include <httplib.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "epwa/error.hpp"
#include "epwa/pepi.hpp"
#include "epwa/thread_scratch.hpp"
#include "epwa/tokenizer.hpp"

namespace epwa {

namespace {

struct Endpoint {
  std::string host_port, path;  // "http://127.0.0.1:8000", "/v1/completions"
};

Endpoint parse_url(const std::string& url) {
  check(!url.empty(), "API: empty --api-url");
  check(!url.starts_with("https://"),
        "API " + url + ": https is not supported (use plain http, e.g. through a local proxy)");
  check(url.starts_with("http://"), "API " + url + ": expected a URL starting with http://");
  const size_t slash = url.find('/', 7);
  Endpoint e;
  e.host_port = url.substr(0, slash);
  check(e.host_port.size() > 7, "API " + url + ": no host");
  std::string path = slash == std::string::npos ? "" : url.substr(slash);
  while (!path.empty() && path.back() == '/') path.pop_back();
  if (path.ends_with("/completions")) path.resize(path.size() - 12);
  if (path.ends_with("/v1")) path.resize(path.size() - 3);
  e.path = path + "/v1/completions";
  return e;
}

// Token text as the completions API writes it -> id (first id wins), for servers without
// token-id keys. The SentencePiece meta space becomes a real space as in decoded text.
const std::unordered_map<std::string, int32_t>& text_ids(const Tokenizer& tok) {
  struct Cache {
    const Tokenizer* tok = nullptr;
    std::unordered_map<std::string, int32_t> map;
  };
  thread_local ThreadScratch<Cache> cache;
  auto& [cached, map] = *cache;
  if (cached != &tok) {
    map.clear();
    for (int32_t id = 0; id < tok.vocab_size(); ++id) {
      map.emplace(tok.token_bytes(id), id);
      map.emplace(tok.token_to_piece(id), id);
    }
    cached = &tok;
  }
  return map;
}

int32_t key_to_id(const std::string& key, const Tokenizer* tok, size_t pos) {
  if (key.starts_with("token_id:")) {
    int32_t id = -1;
    const char* b = key.data() + 9;
    const auto r = std::from_chars(b, key.data() + key.size(), id);
    check(r.ec == std::errc() && r.ptr == key.data() + key.size() && id >= 0,
          "API response: top_logprobs[" + std::to_string(pos) + "] has a bad key '" + key + "'");
    return id;
  }
  check(tok != nullptr, "API response: top_logprobs keys are token text ('" + key +
                            "') and no tokenizer was given to map them to ids");
  const auto& m = text_ids(*tok);
  const auto it = m.find(key);
  return it == m.end() ? -1 : it->second;
}

}  // namespace

std::vector<TokenDistribution> parse_completions_logprobs(std::string_view body, size_t expected,
                                                          const Tokenizer* tok) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(body);
  } catch (const nlohmann::json::exception& e) {
    throw Error("API response is not JSON: " + std::string(e.what()));
  }
  if (j.is_object() && j.contains("error")) {
    const auto& e = j["error"];
    throw Error("API returned an error: " +
                (e.is_object() && e.contains("message") && e["message"].is_string()
                     ? e["message"].get<std::string>()
                     : e.dump()));
  }
  check(j.is_object() && j.contains("choices") && j["choices"].is_array() && !j["choices"].empty(),
        "API response: no choices[0]");
  const auto& c = j["choices"][0];
  check(c.is_object() && c.contains("logprobs") && c["logprobs"].is_object(),
        "API response: choices[0].logprobs is missing (does the server support logprobs?)");
  const auto& lp = c["logprobs"];
  check(lp.contains("top_logprobs") && lp["top_logprobs"].is_array(),
        "API response: choices[0].logprobs.top_logprobs is missing or not an array");
  const auto& top = lp["top_logprobs"];
  check(top.size() >= expected,
        "API response: " + std::to_string(top.size()) + " top_logprobs entries for a prompt of " +
            std::to_string(expected) + " tokens (does the server echo prompt log-probabilities?)");
  // Entry i is the distribution token i was drawn from, i.e. the one after tokens[0..i-1]; the
  // first (no context) is null.
  std::vector<TokenDistribution> out;
  out.reserve(expected);
  for (size_t i = 1; i < expected; ++i) {
    const auto& e = top[i];
    check(e.is_object(), "API response: top_logprobs[" + std::to_string(i) + "] is not an object");
    TokenDistribution d;
    for (const auto& [key, val] : e.items()) {
      check(val.is_number(),
            "API response: top_logprobs[" + std::to_string(i) + "]['" + key + "'] is not a number");
      const double v = val.get<double>();
      check(!std::isnan(v) && v <= 1e-3, "API response: top_logprobs[" + std::to_string(i) + "]['" +
                                             key + "'] = " + std::to_string(v) +
                                             " is not a log-probability");
      const int32_t id = key_to_id(key, tok, i);
      if (id < 0) continue;  // text the tokenizer cannot map back (rare byte pieces)
      d.tokens.push_back(id);
      d.logprobs.push_back(static_cast<float>(std::max(v, -1e4)));
    }
    check(!d.tokens.empty(), "API response: top_logprobs[" + std::to_string(i) +
                                 "] has no token this tokenizer knows");
    // JSON objects carry no order: best first, ties to the lower id (as top_logprobs() does).
    std::vector<size_t> ord(d.tokens.size());
    for (size_t j = 0; j < ord.size(); ++j) ord[j] = j;
    std::sort(ord.begin(), ord.end(), [&](size_t a, size_t b) {
      return d.logprobs[a] > d.logprobs[b] ||
             (d.logprobs[a] == d.logprobs[b] && d.tokens[a] < d.tokens[b]);
    });
    TokenDistribution sorted;
    for (size_t j : ord) {
      sorted.tokens.push_back(d.tokens[j]);
      sorted.logprobs.push_back(d.logprobs[j]);
    }
    out.push_back(std::move(sorted));
  }
  return out;
}

std::string completions_response_json(std::span<const int32_t> tokens,
                                      std::span<const TokenDistribution> dists,
                                      const Tokenizer* tok, bool token_ids_as_keys) {
  auto key = [&](int32_t id) {
    return token_ids_as_keys || tok == nullptr ? "token_id:" + std::to_string(id)
                                               : tok->token_bytes(id);
  };
  nlohmann::json toks = nlohmann::json::array(), tlp = nlohmann::json::array(),
                 top = nlohmann::json::array(), offs = nlohmann::json::array();
  std::string text;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string k = key(tokens[i]);
    offs.push_back(text.size());
    text += tok ? tok->token_bytes(tokens[i]) : k;
    toks.push_back(k);
    if (i == 0 || i - 1 >= dists.size()) {
      tlp.push_back(nullptr);
      top.push_back(nullptr);
      continue;
    }
    const TokenDistribution& d = dists[i - 1];
    nlohmann::json o = nlohmann::json::object();
    nlohmann::json mine = nullptr;
    for (size_t j = 0; j < d.tokens.size(); ++j) {
      const std::string kk = key(d.tokens[j]);
      if (!o.contains(kk)) o[kk] = d.logprobs[j];
      if (d.tokens[j] == tokens[i]) mine = d.logprobs[j];
    }
    tlp.push_back(mine);
    top.push_back(std::move(o));
  }
  nlohmann::json r = {{"id", "cmpl-epwa"},
                      {"object", "text_completion"},
                      {"model", "epwa"},
                      {"choices",
                       {{{"index", 0},
                         {"text", text},
                         {"finish_reason", "length"},
                         {"logprobs",
                          {{"tokens", toks},
                           {"token_logprobs", tlp},
                           {"top_logprobs", top},
                           {"text_offset", offs}}}}}},
                      {"usage",
                       {{"prompt_tokens", tokens.size()},
                        {"completion_tokens", 0},
                        {"total_tokens", tokens.size()}}}};
  return r.dump();
}

ApiDistributionSource::ApiDistributionSource(ApiOptions opt, std::shared_ptr<const Tokenizer> tok)
    : opt_(std::move(opt)), tok_(std::move(tok)) {
  parse_url(opt_.url);  // fail early on a bad URL
  check(opt_.top_k > 0, "API: --api-top-k must be positive");
}

std::vector<TokenDistribution> ApiDistributionSource::distributions(
    std::span<const int32_t> tokens) {
  if (tokens.size() < 2) return {};
  const Endpoint ep = parse_url(opt_.url);
  httplib::Client cli(ep.host_port);
  cli.set_connection_timeout(opt_.timeout_s, 0);
  cli.set_read_timeout(opt_.timeout_s, 0);
  cli.set_write_timeout(opt_.timeout_s, 0);
  nlohmann::json req = {{"prompt", std::vector<int32_t>(tokens.begin(), tokens.end())},
                        {"max_tokens", 0},
                        {"echo", true},
                        {"logprobs", opt_.top_k},
                        {"temperature", 0}};
  if (!opt_.model.empty()) req["model"] = opt_.model;
  auto res = cli.Post(ep.path, req.dump(), "application/json");
  if (!res)
    throw Error("API " + ep.host_port + ep.path + ": request failed (" +
                httplib::to_string(res.error()) + ")");
  if (res->status != 200) {
    std::string detail = res->body.substr(0, 300);
    try {
      const auto j = nlohmann::json::parse(res->body);
      if (j.contains("error") && j["error"].is_object() && j["error"].contains("message"))
        detail = j["error"]["message"].dump();
    } catch (...) {
    }
    throw Error("API " + ep.host_port + ep.path + ": HTTP " + std::to_string(res->status) + ": " +
                detail);
  }
  try {
    return parse_completions_logprobs(res->body, tokens.size(), tok_.get());
  } catch (const Error& e) {
    throw Error(ep.host_port + ep.path + ": " + e.what());
  }
}

}  // namespace epwa
