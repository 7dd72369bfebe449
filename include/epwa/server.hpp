// `epwa serve`: an OpenAI-compatible HTTP server over one loaded model (docs/SERVER.md). Requests
// generate through the BatchEngine (continuous batching), watermarked according to the server's
// policy, and detect on request. Bound to loopback unless told otherwise.
#pragma once
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "epwa/batch_engine.hpp"
#include "epwa/detect.hpp"
#include "epwa/model.hpp"
#include "epwa/tokenizer.hpp"
#include "epwa/watermark.hpp"

namespace epwa {

enum class WatermarkPolicy : uint8_t {
  Off,       // nothing is watermarked; a request asking for it is refused
  OptIn,     // a request watermarks with "watermark": true (or a key id)
  Enforced,  // every response is watermarked; a request cannot turn it off
};
std::string_view watermark_policy_name(WatermarkPolicy p);     // "off", "opt-in", "enforced"
WatermarkPolicy watermark_policy_from_name(std::string_view);  // throws Error on others

// Watermark keys by id, from a JSON file {"default": "<id>", "keys": {"<id>": "<secret>", ...}}
// that only its owner may read (mode 0600 or stricter; checked like ssh checks its keys).
struct Keyring {
  std::map<std::string, std::string> keys;
  std::string default_id;
  // Throws Error naming the file and the problem (missing, readable by others, bad JSON, no keys,
  // an empty secret, a default that is not a key).
  static Keyring load(const std::filesystem::path& path);
};

// What an API key may do.
enum Role : uint8_t { kGenerate = 1, kDetect = 2, kAdmin = 4 };

// Bearer API keys from a JSON file {"keys": [{"name": "alice", "key": "<secret>", "roles":
// ["generate", "detect", "admin"]}, ...]}, mode 0600 like the keyring. With no keys the server
// is open (and stays on loopback unless told otherwise).
struct ApiKeys {
  struct Key {
    std::string name;
    std::string digest;  // SHA-256 of the secret: keys are compared digest to digest
    uint8_t roles = 0;
  };
  std::vector<Key> keys;
  // Throws Error naming the file and the problem.
  static ApiKeys load(const std::filesystem::path& path);
  // The key whose secret is `bearer`, or null; the time taken does not depend on which key (or
  // how much of one) matches.
  const Key* find(std::string_view bearer) const;
};

struct ServerLimits {
  size_t max_body_bytes = 1 << 20;
  int32_t default_max_tokens = 16;                  // OpenAI's default for completions
  int32_t max_tokens = 1024;                        // the most a request may ask for
  int64_t max_detect_tokens = 16384;                // per text
  int64_t max_detect_batch = 64;                    // texts in one batch detection request
  std::chrono::milliseconds header_timeout{10000};  // to receive a request's headers (and idle)
  std::chrono::milliseconds body_timeout{30000};    // to receive its body
  std::chrono::milliseconds write_timeout{30000};   // for each write to the client
  int32_t max_connections = 256;
  // Detection answers are an oracle for learning green lists: at most this many per minute for
  // each API key (each client address when the server has no keys).
  double detect_per_minute = 30;
  // Verdict-only detection (docs/THREAT_MODEL.md, defence 3): callers without an admin API key
  // get the verdict, its p-value and reason only (no z, g, n), and "not detected" for a text with
  // fewer than verdict_min_tokens scored tokens, so that a query tells about a whole text.
  bool detect_verdict_only = false;
  int64_t verdict_min_tokens = 50;
};

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;  // 0: any free port (Server::port() says which)
  int32_t threads = 2;   // HTTP threads; generation runs on the engine's own thread
  std::string model_id = "epwa";
  BatchEngineOptions engine;
  ServerLimits limits;
  WatermarkPolicy policy = WatermarkPolicy::Off;
  Keyring keyring;  // needed unless the policy is off
  // KR-v1 (docs/SPEC.md section 9): each watermarked choice uses the key the rotation picks from
  // its seed and prompt; responses name no key, and detection tests every key (Bonferroni),
  // naming the matching key to admins only.
  bool rotate_keys = false;
  ApiKeys api_keys;  // empty: no authentication
  // Scheme and parameters (router_layer < 0: the last MoE layer; context_buckets > 0: CTX-v1
  // lists, docs/SPEC.md section 10, for generation and detection alike).
  WatermarkConfig watermark;
  DetectOptions detect;  // threshold etc. for /v1/watermark/detect
  // HTTPS (TLS 1.2 or later) with a PEM certificate chain and its private key (mode 0600), both or
  // neither.
  std::filesystem::path tls_cert, tls_key;
  // The Jinja chat template of /v1/chat/completions (docs/CHAT.md); empty: that endpoint answers
  // 400. `epwa serve` passes the model's own unless --chat-template names another.
  std::string chat_template;
};

class Server {
 public:
  // Binds the address and builds the green lists of every key. Throws Error when it cannot.
  Server(Model& model, std::shared_ptr<const Tokenizer> tokenizer, ServerOptions options);
  ~Server();
  uint16_t port() const;
  // Serves until stop() (from any thread, a signal handler's thread included).
  void run();
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace epwa
