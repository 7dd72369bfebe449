// epwa serve: the OpenAI-compatible server (include/epwa/server.hpp, docs/SERVER.md).
#include <cstdio>

#include "command.hpp"
#include "common.hpp"
#include "epwa/chat_template.hpp"
#include "epwa/files.hpp"
#include "epwa/server.hpp"

namespace epwa::cli {
namespace {

struct Args {
  ModelArgs model;
  ServerOptions o;
  std::string policy = "off", keyring, api_keys, chat_template, mode = "gsg";
  int port = 8080;
  int64_t max_body = 1 << 20;
  int32_t timeout_s = 10;
};

const Command kServe{
    "serve", "Serve completions (watermarked by policy) and detection over HTTP, OpenAI-compatible",
    [](CLI::App& app) {
      auto a = std::make_shared<Args>();
      a->model.add(app);
      ServerOptions& o = a->o;
      app.add_option("--host", o.host, "IP address to bind (default 127.0.0.1, loopback only)")
          ->capture_default_str();
      app.add_option("--port", a->port, "TCP port (0: any free port)")
          ->check(CLI::Range(0, 65535))
          ->capture_default_str();
      app.add_option("--threads", o.threads, "HTTP threads")
          ->check(CLI::Range(1, 256))
          ->capture_default_str();
      app.add_option("--model-id", o.model_id, "the model's name in the API")
          ->capture_default_str();
      app.add_option("--policy", a->policy, "watermark policy: off, opt-in or enforced")
          ->check(CLI::IsMember({"off", "opt-in", "enforced"}))
          ->capture_default_str();
      app.add_option("--keyring", a->keyring,
                     "JSON keyring {\"default\": id, \"keys\": {id: secret}}, mode 0600");
      app.add_flag("--rotate-keys", o.rotate_keys,
                   "watermark each response with a key picked per response from the keyring "
                   "(KR-v1; responses name no key; detection tests every key)");
      app.add_option("--context-buckets", o.watermark.context_buckets,
                     "CTX-v1: green lists keyed by the expert and one of H keyed buckets of the "
                     "previous token (0: off; docs/SPEC.md section 10)")
          ->check(CLI::Range(0, 65536))
          ->capture_default_str();
      app.add_option("--api-keys", a->api_keys,
                     "JSON bearer keys {\"keys\": [{\"name\", \"key\", \"roles\"}]}, mode 0600 "
                     "(default: no authentication)");
      app.add_option("--detect-per-minute", o.limits.detect_per_minute,
                     "detection requests a minute for each key (or client address)")
          ->check(CLI::Range(0.0, 1e6))
          ->capture_default_str();
      app.add_flag("--detect-verdict-only", o.limits.detect_verdict_only,
                   "detection answers callers without an admin API key with the verdict and "
                   "p-value only (no z, g, n)");
      app.add_option("--verdict-min-tokens", o.limits.verdict_min_tokens,
                     "with --detect-verdict-only: fewer scored tokens than this is 'not detected'")
          ->check(CLI::Range(int64_t{10}, int64_t{1} << 24))
          ->capture_default_str();
      app.add_option("--mode", a->mode,
                     "watermark: gsg, ewp (green lists) or exp (distortion-free; requests need a "
                     "temperature above 0); detection scores the same scheme")
          ->check(CLI::IsMember({"gsg", "ewp", "exp"}))
          ->capture_default_str();
      app.add_option("--gamma", o.watermark.gamma, "green-list fraction")
          ->check(CLI::Range(0.0, 1.0))
          ->capture_default_str();
      app.add_option("--delta", o.watermark.delta, "green-list bias")
          ->check(CLI::Range(0.0, 100.0))
          ->capture_default_str();
      app.add_option("--min-entropy", o.watermark.min_entropy,
                     "bias only steps whose next-token entropy is at least this (nats), and score "
                     "only such tokens in detection (docs/SPEC.md)")
          ->check(CLI::Range(0.0, 20.0))
          ->capture_default_str();
      o.watermark.router_layer = -1;
      app.add_option("--router-layer", o.watermark.router_layer,
                     "watermark layer among the MoE layers (negative: from the last)")
          ->capture_default_str();
      app.add_option("--slots", o.engine.slots, "requests generating together at most")
          ->check(CLI::Range(1, 1024))
          ->capture_default_str();
      app.add_option("--context", o.engine.context, "positions per request (prompt + new tokens)")
          ->check(CLI::Range(int64_t{2}, int64_t{1} << 24))
          ->capture_default_str();
      app.add_option("--queue", o.engine.queue, "requests waiting for a slot at most (then 429)")
          ->check(CLI::Range(0, 1 << 20))
          ->capture_default_str();
      app.add_option("--max-tokens", o.limits.max_tokens, "largest max_tokens of a request")
          ->check(CLI::Range(1, 1 << 24))
          ->capture_default_str();
      add_path_option(app, "--tls-cert", o.tls_cert,
                      "PEM certificate chain: serve HTTPS (with --tls-key)");
      add_path_option(app, "--tls-key", o.tls_key, "PEM private key of --tls-cert (mode 0600)");
      app.add_option("--chat-template", a->chat_template,
                     "Jinja chat template for /v1/chat/completions (default: the model's own, "
                     "docs/CHAT.md)");
      app.add_option("--max-body", a->max_body, "largest request body in bytes")
          ->check(CLI::Range(int64_t{1024}, int64_t{1} << 30))
          ->capture_default_str();
      app.add_option("--header-timeout", a->timeout_s,
                     "seconds a client has to send its headers (and to stay idle)")
          ->check(CLI::Range(1, 3600))
          ->capture_default_str();
      return [a] {
        ServerOptions o = a->o;
        o.detect.min_entropy = o.watermark.min_entropy;  // detection scores as generation biased
        o.watermark.mode = watermark_mode_from_name(a->mode);
        o.port = static_cast<uint16_t>(a->port);
        o.policy = watermark_policy_from_name(a->policy);
        o.limits.max_body_bytes = static_cast<size_t>(a->max_body);
        o.limits.header_timeout = std::chrono::seconds(a->timeout_s);
        if (!a->keyring.empty()) o.keyring = Keyring::load(path_from_utf8(a->keyring));
        if (!a->api_keys.empty()) o.api_keys = ApiKeys::load(path_from_utf8(a->api_keys));
        auto model = a->model.load();
        std::shared_ptr<const Tokenizer> tok;
        try {
          tok = std::shared_ptr<const Tokenizer>(&a->model.tokenizer(), [](const Tokenizer*) {});
        } catch (const Error& e) {
          std::fprintf(stderr, "epwa serve: %s; prompts must be token ids\n", e.what());
        }
        if (!a->chat_template.empty()) {
          o.chat_template = read_input_file(path_from_utf8(a->chat_template), "--chat-template");
        } else if (auto found = find_chat_template(a->model.path())) {
          o.chat_template = *found;
        } else {
          std::fprintf(stderr,
                       "epwa serve: the model has no chat template: /v1/chat/completions answers "
                       "400 (give one with --chat-template)\n");
        }
        Server server(*model, tok, o);
        if (o.host != "127.0.0.1" && o.host != "::1" && o.api_keys.keys.empty())
          std::fprintf(stderr,
                       "epwa serve: warning: listening on %s, beyond this machine, without "
                       "authentication\n",
                       o.host.c_str());
        std::fprintf(stderr, "epwa serve: %s://%s:%u (policy %s, %d slots); Ctrl-C stops\n",
                     o.tls_cert.empty() ? "http" : "https", o.host.c_str(), server.port(),
                     a->policy.c_str(), o.engine.slots);
        server.run();
        return 0;
      };
    }};

}  // namespace
}  // namespace epwa::cli
