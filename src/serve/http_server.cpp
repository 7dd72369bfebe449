// The HTTP layer of `epwa serve` (include/epwa/server.hpp) on Boost.Beast: asynchronous sessions on
// a few threads, each connection on its own strand, deadlines for headers, bodies and writes (a
// slow or idle client holds no thread), a body size limit and a connection limit. Generation runs
// on the BatchEngine's thread, detection on a worker thread; their results come back to the
// connection's strand.
#include <algorithm>
#include <array>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
// HTTPS where the build has OpenSSL (EPWA_HTTPS, set by CMake; not in Windows builds,
// docs/WINDOWS.md).
#if EPWA_HTTPS
#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>
#endif
#include <chrono>
#include <csignal>
#include <cstdio>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "epwa/harmony.hpp"
#include "epwa/json_constraint.hpp"
#include "epwa/platform.hpp"
#include "epwa/server.hpp"
#include "epwa/session.hpp"
#include "epwa/tool_calls.hpp"
#include "openai_api.hpp"

namespace epwa {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using serve::ApiError;
using serve::bad_request;

struct Server::Impl {
  Model& model;
  std::shared_ptr<const Tokenizer> tok;
  ServerOptions opt;
  std::map<std::string, std::shared_ptr<const GreenLists>> lists;  // by key id
  std::string rotation_secret;  // KR-v1's, with opt.rotate_keys (keys in id order, as `lists`)
  std::string router_hash;
  int32_t layer = 0;
  std::vector<int32_t> suppress;  // ids that are not text (control, unknown), EOS aside
  // /v1/chat/completions: the chat template, the tokens that end an assistant turn (stop tokens
  // there, so not suppressed), and the suppressed ids without them.
  std::optional<ChatTemplate> chat;
  std::vector<int32_t> end_of_turn, chat_suppress;
  // Tool calls: the template's syntax, and the suppressed ids of its markers (let through for a
  // request with tools).
  ToolCallSyntax tool_syntax = ToolCallSyntax::None;
  std::vector<int32_t> tool_markers;
  // GPT-OSS's harmony format: every reply is written with its markers (let through for every
  // chat) and parsed into channels.
  bool harmony = false;
  std::shared_ptr<const TokenTexts> texts;  // the vocabulary's bytes, for constrained decoding
  // How the template writes a call (tool_choice's forced calls), or why there is none.
  std::optional<ToolCallShape> tool_shape;
  std::string tool_shape_error;
  std::atomic<int32_t> connections{0};
  std::atomic<uint64_t> completions{0};
  // /metrics: answers by (endpoint, status), completion latency, detections.
  struct Metrics {
    std::mutex mu;
    std::map<std::pair<std::string, int>, uint64_t> answers;
    static constexpr std::array<double, 11> kBounds = {0.05, 0.1, 0.25, 0.5, 1,  2.5,
                                                       5,    10,  30,   60,  300};
    std::array<uint64_t, kBounds.size()> buckets{};
    double seconds = 0;
    uint64_t completed = 0, detections = 0;
  } metrics;
  // Detection allowance per API key or client address: a bucket refilled continuously.
  std::mutex rate_mu;
  std::map<std::string, std::pair<double, std::chrono::steady_clock::time_point>> allowance;
  // Destroyed in reverse order: the engine and the detection worker (which post to the I/O
  // context) before the context.
#if EPWA_HTTPS
  std::optional<net::ssl::context> tls;  // with tls_cert and tls_key; outlives the sessions
#endif
  net::io_context ioc;
  // On a strand: the accept loop's handler (any I/O thread) and stop()'s close must not overlap
  // (ThreadSanitizer saw the two race once with several I/O threads).
  tcp::acceptor acceptor{net::make_strand(ioc)};
  net::signal_set signals{ioc};
  net::thread_pool detect_pool{1};
  std::unique_ptr<BatchEngine> engine;

  Impl(Model& m, std::shared_ptr<const Tokenizer> t, ServerOptions o)
      : model(m), tok(std::move(t)), opt(std::move(o)) {}
  void accept();
  // key_id empty: not named (rotation).
  nlohmann::json watermark_record(bool applied, const std::string& key_id) const;
  std::string rotated_key(uint64_t seed, std::span<const int32_t> prompt) const;
  void count(const std::string& endpoint, int status);
  void observe_completion(double seconds);
  bool allow_detection(const std::string& who, double n);  // n texts
  std::string metrics_text();
};

namespace {

int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string dump(const nlohmann::json& j) {
  // Generated text can hold invalid UTF-8 (a byte-level token split): replaced, never a throw.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// One generation request's progress, touched only on its connection's strand.
struct Generation;
// The n choices of one request: the answer (or the end of the stream) waits for all of them.
struct Choices {
  std::vector<std::shared_ptr<Generation>> all;
  size_t pending = 0;
  bool failed = false;  // one choice's generation failed: the request is answered with 500 once
};

struct Generation {
  int32_t index = 0;               // the choice's index
  std::shared_ptr<Choices> group;  // its request's choices
  bool chat = false;               // /v1/chat/completions (its chunks carry messages and deltas)
  bool sent_role = false;          // a streamed chat's first delta names the role
  bool tools = false;              // a chat with tools: the reply may be tool calls
  bool harmony = false;            // a chat of a harmony template: the reply has channels
  size_t sent_content = 0, sent_reasoning = 0;  // a harmony stream's bytes of each, sent
  std::string forced;        // what starts the reply: a forced call's opening (tool_choice), or
                             // harmony's final channel for response_format
  size_t forced_tokens = 0;  // its tokens (after the rendered prompt)
  std::vector<int32_t> prompt, tokens, stop_tokens;
  std::vector<std::string> stop;
  std::string text;      // the text so far (cut at a stop string)
  size_t sent = 0;       // bytes of text already streamed
  bool stopped = false;  // a stop string was met
  bool stream = false;
  int32_t logprobs = -1;  // >= 0: log-probabilities with this many alternatives
  bool echo = false;
  bool echo_sent = false;          // a stream's echoed prompt (and its log-probabilities) went out
  std::vector<TokenLogprobs> lps;  // the echoed prompt's (tokens 1..), then each new token's
  uint64_t job = 0;
  std::string id;
  std::string finish;    // the choice's finish_reason, once done
  size_t lp_sent = 0;    // new tokens whose log-probabilities were sent (streams)
  size_t lp_offset = 0;  // bytes of new text those tokens cover
  nlohmann::json watermark;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
};

// One client connection; Stream is a plain TCP stream or a TLS stream over one.
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

 public:
  template <class... TlsContext>
  Session(tcp::socket s, Server::Impl& srv, TlsContext&... tls)
      : stream_(std::move(s), tls...), srv_(srv) {
    ++srv_.connections;
    beast::error_code ec;
    const auto peer = lowest().socket().remote_endpoint(ec);
    peer_ = ec ? "unknown" : peer.address().to_string();
  }
  ~Session() { --srv_.connections; }

  void start() {
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if constexpr (kTls) {
        // The handshake has the header deadline: a client that never completes it holds nothing.
        self->lowest().expires_after(self->limits().header_timeout);
        self->stream_.async_handshake(Stream::server, [self](beast::error_code ec) {
          if (ec) return self->drop();
          self->read();
        });
      } else {
        self->read();
      }
    });
  }
  void refuse_busy() {
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if constexpr (kTls) return self->drop();  // no handshake spent on a refusal
      self->send_error(ApiError(503, "server_error", "too many connections; try again later"),
                       false);
    });
  }

 private:
  const ServerLimits& limits() const { return srv_.opt.limits; }

  void read() {
    parser_.emplace();
    parser_->body_limit(limits().max_body_bytes);
    parser_->header_limit(16 * 1024);
    lowest().expires_after(limits().header_timeout);
    http::async_read_header(
        stream_, buf_, *parser_,
        beast::bind_front_handler(&Session::on_header, this->shared_from_this()));
  }

  void on_header(beast::error_code ec, size_t) {
    if (ec) return on_read_error(ec);
    lowest().expires_after(limits().body_timeout);
    http::async_read(stream_, buf_, *parser_,
                     beast::bind_front_handler(&Session::on_body, this->shared_from_this()));
  }

  void on_body(beast::error_code ec, size_t) {
    if (ec) return on_read_error(ec);
    handle(parser_->release());
  }

  void on_read_error(beast::error_code ec) {
    if (ec == http::error::body_limit)
      return send_error(
          ApiError(413, "invalid_request_error",
                   "the body is larger than " + std::to_string(limits().max_body_bytes) + " bytes"),
          false);
    if (ec == http::error::header_limit)
      return send_error(ApiError(431, "invalid_request_error", "the headers are too large"), false);
    if (ec.category() == http::make_error_code(http::error::bad_target).category())
      return send_error(bad_request("malformed HTTP request"), false);
    close();  // closed by the client, or a deadline passed: nothing to answer
  }

  // Ends the connection: TLS says close_notify first (bounded by the write deadline).
  void close() {
    if constexpr (kTls) {
      if (!tls_closing_) {
        tls_closing_ = true;
        lowest().expires_after(limits().write_timeout);
        return stream_.async_shutdown(
            [self = this->shared_from_this()](beast::error_code) { self->drop(); });
      }
    }
    drop();
  }
  void drop() {
    beast::error_code ignored;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
    lowest().close();
  }
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  void send(http::status status, std::string body, bool keep_alive,
            const char* content_type = "application/json") {
    srv_.count(endpoint_, static_cast<int>(status));
    auto res = std::make_shared<http::response<http::string_body>>(status, 11);
    res->set(http::field::server, "epwa");
    res->set(http::field::content_type, content_type);
    res->keep_alive(keep_alive);
    res->body() = std::move(body);
    res->prepare_payload();
    lowest().expires_after(limits().write_timeout);
    http::async_write(stream_, *res,
                      [self = this->shared_from_this(), res](beast::error_code ec, size_t) {
                        if (ec || !res->keep_alive()) return self->close();
                        self->read();
                      });
  }

  void send_error(const ApiError& e, bool keep_alive) {
    send(static_cast<http::status>(e.status), dump(serve::error_json(e)), keep_alive);
  }

  void handle(http::request<http::string_body> req) {
    keep_alive_ = req.keep_alive();
    std::string target(req.target());
    target = target.substr(0, target.find('?'));
    const auto method = req.method();
    auto only = [&](http::verb v) {
      if (method != v)
        throw ApiError(405, "invalid_request_error",
                       std::string(req.method_string()) + " is not allowed on " + target);
    };
    static const std::set<std::string> kEndpoints = {"/health",
                                                     "/metrics",
                                                     "/v1/models",
                                                     "/v1/completions",
                                                     "/v1/chat/completions",
                                                     "/v1/watermark/detect"};
    endpoint_ = kEndpoints.count(target) ? target : "other";
    try {
      // With API keys, everything but /health needs one, and the role for what it asks.
      const ApiKeys::Key* key = nullptr;
      if (!srv_.opt.api_keys.keys.empty() && target != "/health") {
        const std::string_view auth = req[http::field::authorization];
        if (auth.substr(0, 7) != "Bearer ")
          throw ApiError(401, "authentication_error",
                         "no API key: send the header 'Authorization: Bearer <key>'");
        key = srv_.opt.api_keys.find(auth.substr(7));
        if (!key) throw ApiError(401, "authentication_error", "invalid API key");
      }
      auto need = [&](uint8_t role, const char* what) {
        if (key && !(key->roles & role))
          throw ApiError(403, "permission_error", std::string("this API key may not ") + what);
      };
      who_ = key ? "key:" + key->name : "addr:" + peer_;
      admin_ = !key || (key->roles & kAdmin);
      if (target == "/metrics") {
        only(http::verb::get);
        need(kAdmin, "read the metrics");
        return send(http::status::ok, srv_.metrics_text(), keep_alive_,
                    "text/plain; version=0.0.4");  // Prometheus' text format
      }
      if (target == "/health") {
        only(http::verb::get);
        const auto st = srv_.engine->stats();
        return send(http::status::ok,
                    dump({{"status", "ok"}, {"running", st.running}, {"queued", st.queued}}),
                    keep_alive_);
      }
      if (target == "/v1/models") {
        only(http::verb::get);
        return send(http::status::ok,
                    dump({{"object", "list"},
                          {"data",
                           {{{"id", srv_.opt.model_id},
                             {"object", "model"},
                             {"created", 0},
                             {"owned_by", "epwa"}}}}}),
                    keep_alive_);
      }
      if (target == "/v1/completions") {
        only(http::verb::post);
        need(kGenerate, "generate");
        return completion(req.body(), false);
      }
      if (target == "/v1/chat/completions") {
        only(http::verb::post);
        need(kGenerate, "generate");
        return completion(req.body(), true);
      }
      if (target == "/v1/watermark/detect") {
        only(http::verb::post);
        need(kDetect, "detect");
        return detect(req.body());
      }
      throw ApiError(404, "invalid_request_error",
                     "unknown endpoint " + std::string(req.method_string()) + " " + target);
    } catch (const ApiError& e) {
      send_error(e, keep_alive_);
    } catch (const QueueFull& e) {
      send_error(ApiError(429, "rate_limit_error", e.what()), keep_alive_);
    } catch (const Error& e) {  // the library's checks of a request: a bad request
      send_error(bad_request(e.what()), keep_alive_);
    }
  }

  // Whether a request is watermarked under the server's policy; with rotation, "*" (each choice's
  // key is picked from its seed), else the key id.
  std::string watermark_key(const serve::CompletionParams& p) const {
    const ServerOptions& o = srv_.opt;
    bool on = false;
    switch (o.policy) {
      case WatermarkPolicy::Off:
        if (p.watermark.value_or(false))
          throw bad_request("watermarking is off on this server", "watermark");
        return {};
      case WatermarkPolicy::OptIn:
        on = p.watermark.value_or(false);
        break;
      case WatermarkPolicy::Enforced:
        if (p.watermark == false)
          throw bad_request("this server watermarks every response (policy enforced)", "watermark");
        on = true;
        break;
    }
    if (!on) return {};
    if (o.rotate_keys) {
      if (!p.key_id.empty())
        throw bad_request("this server picks the key of each response (key rotation)", "watermark");
      return "*";
    }
    const std::string id = p.key_id.empty() ? o.keyring.default_id : p.key_id;
    if (!srv_.lists.count(id)) throw bad_request("unknown watermark key id", "watermark");
    return id;
  }

  void completion(const std::string& body, bool chat) {
    const ModelConfig& c = srv_.model.config();
    const auto j = serve::parse_body(body);
    const auto p = chat ? serve::parse_chat_completion(j, body, srv_.chat ? &*srv_.chat : nullptr,
                                                       srv_.tool_syntax, srv_.tok.get(),
                                                       c.vocab_size, limits())
                        : serve::parse_completion(j, srv_.tok.get(), c.vocab_size, limits());
    const std::string key = watermark_key(p);
    // tool_choice "required" or naming a function: the reply opens with a call as the template
    // writes one; its tokens follow the rendered prompt and its text starts the reply.
    std::vector<int32_t> prompt = p.prompt;
    std::string forced, closing;
    std::vector<JsonAlternative> alternatives;  // a forced call: its name(s) and arguments
    std::vector<int32_t> stop_tokens = {c.eos_token_id};
    if (chat)
      stop_tokens.insert(stop_tokens.end(), srv_.end_of_turn.begin(), srv_.end_of_turn.end());
    if (chat && (p.tool_required || !p.tool_name.empty())) {
      if (!srv_.tool_shape) throw bad_request(srv_.tool_shape_error, "tool_choice");
      const ToolCallShape& shape = *srv_.tool_shape;
      forced = shape.opening(p.tool_name);
      // The call's arguments follow its function's schema (after the function's name and what
      // the template writes before the arguments, when "required" leaves the name open), then
      // the template's closing.
      char call_id[16];  // where the template writes a call id: 9 letters and digits
      std::snprintf(call_id, sizeof call_id, "c%08x",
                    static_cast<unsigned>(srv_.completions.load() + 1));
      closing = shape.closing(call_id);
      for (const auto& [name, schema] : p.tool_schemas)
        alternatives.push_back(
            {p.tool_name.empty() ? name + shape.before_arguments : std::string(), schema});
      const std::vector<int32_t> ids = srv_.tok->encode(forced, false, true);
      prompt.insert(prompt.end(), ids.begin(), ids.end());
    }
    if (p.response_schema) {
      alternatives.push_back({"", p.response_schema});
      // Harmony: the value is the final channel's message, from the reply's first token.
      if (chat && srv_.harmony) {
        forced = "<|channel|>final<|message|>";
        const std::vector<int32_t> ids = srv_.tok->encode(forced, false, true);
        prompt.insert(prompt.end(), ids.begin(), ids.end());
      }
    }
    if (!alternatives.empty() && p.min_tokens > 0)
      throw bad_request(
          "'min_tokens' and JSON output (response_format, a forced tool call) exclude each other: "
          "a finished value allows only the end of the turn",
          "min_tokens");
    // The tokens no choice samples: not text, except a request with tools's call markers and the
    // marker tokens of a forced call's closing (Qwen's </tool_call>), which the constraint writes.
    const bool tools = chat && p.tools && srv_.tool_syntax != ToolCallSyntax::None;
    std::vector<int32_t> suppress = chat ? srv_.chat_suppress : srv_.suppress;
    if (tools)
      std::erase_if(suppress, [&](int32_t t) {
        return std::find(srv_.tool_markers.begin(), srv_.tool_markers.end(), t) !=
               srv_.tool_markers.end();
      });
    if (!alternatives.empty() && !closing.empty())
      std::erase_if(suppress, [&](int32_t t) {
        const std::string piece = srv_.tok->token_to_piece(t);
        return !piece.empty() && closing.find(piece) != std::string::npos;
      });
    auto group = std::make_shared<Choices>();
    const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(now_s()) + "-" +
                           std::to_string(++srv_.completions);
    std::vector<BatchRequest> requests;
    for (int32_t i = 0; i < p.n; ++i) {
      auto g = std::make_shared<Generation>();
      g->index = i;
      g->group = group;
      g->chat = chat;
      g->prompt = prompt;
      g->forced = forced;
      g->forced_tokens = prompt.size() - p.prompt.size();
      g->text = forced;
      g->stop = p.stop;
      g->stream = p.stream;
      g->logprobs = p.logprobs;
      g->echo = p.echo;
      g->tools = tools;
      g->harmony = chat && srv_.harmony;
      g->stop_tokens = stop_tokens;
      g->id = id;
      BatchRequest r;
      r.prompt = prompt;
      r.max_new_tokens = p.max_tokens;
      r.min_new_tokens = p.min_tokens;
      r.sampling = p.sampling;
      r.sampling.seed = p.sampling.seed + static_cast<uint64_t>(i);  // choices differ, reproducibly
      const std::string choice_key = key == "*" ? srv_.rotated_key(r.sampling.seed, p.prompt) : key;
      g->watermark = srv_.watermark_record(!key.empty(), key == "*" ? "" : key);
      r.stop_tokens = g->stop_tokens;
      r.suppress_tokens = suppress;
      if (!alternatives.empty()) {
        try {
          r.constraint =
              std::make_unique<JsonConstraint>(alternatives, srv_.texts, closing, stop_tokens);
        } catch (const Error& e) {  // two tools of the same name
          throw bad_request(e.what(), "tools");
        }
      }
      if (!key.empty()) {
        if (srv_.opt.watermark.mode == WatermarkMode::Exp && r.sampling.temperature == 0)
          throw bad_request(
              "this server's watermark (exp) makes the sampling draw: temperature 0 leaves "
              "nothing to key; use a temperature above 0",
              "temperature");
        WatermarkConfig wc = srv_.opt.watermark;
        wc.router_layer = srv_.layer;
        r.watermark = std::make_unique<WatermarkProcessor>(wc, srv_.lists.at(choice_key));
      }
      auto self = this->shared_from_this();
      auto ex = stream_.get_executor();
      r.on_token = [self, g, ex](int32_t t) {
        net::post(ex, [self, g, t] { self->on_token(*g, t); });
      };
      if (p.logprobs >= 0 || p.echo) {
        r.logprobs = std::max(p.logprobs, 0);
        r.prompt_logprobs = p.echo;
        r.on_logprobs = [g, ex](const TokenLogprobs& lp) {
          net::post(ex, [g, lp] { g->lps.push_back(lp); });
        };
      }
      r.on_done = [self, g, ex](FinishReason why, const std::string& error) {
        net::post(ex, [self, g, why, error] { self->on_done(*g, why, error); });
      };
      group->all.push_back(g);
      requests.push_back(std::move(r));
    }
    // All n or none: a choice refused (queue full) takes back those already queued.
    jobs_.clear();
    for (size_t i = 0; i < requests.size(); ++i) {
      try {
        group->all[i]->job = srv_.engine->submit(std::move(requests[i]));
      } catch (...) {
        for (size_t k = 0; k < i; ++k) srv_.engine->cancel(group->all[k]->job);
        group->all.clear();  // their cancellations are not answered
        throw;               // QueueFull -> 429, Error -> 400
      }
      jobs_.push_back(group->all[i]->job);
    }
    group->pending = group->all.size();
    if (p.stream) {
      srv_.count(endpoint_, 200);
      push(
          "HTTP/1.1 200 OK\r\nServer: epwa\r\nContent-Type: text/event-stream\r\n"
          "Cache-Control: no-cache\r\nConnection: close\r\n\r\n");
    } else {
      watch_for_hangup();
    }
  }

  // While a plain completion is generated nothing is written: a client that hangs up is seen as
  // its socket turning readable with nothing to read (end of stream), and its work is cancelled.
  void watch_for_hangup() {
    watching_ = true;
    lowest().socket().async_wait(
        tcp::socket::wait_read, [self = this->shared_from_this()](beast::error_code ec) {
          if (ec || !self->watching_) return;  // cancelled: the answer is being written
          // Peek without blocking: readable with nothing to read is the end of the stream.
          auto& sock = self->lowest().socket();
          char c;
          beast::error_code peek;
          sock.non_blocking(true, peek);
          const size_t n = sock.receive(net::buffer(&c, 1), tcp::socket::message_peek, peek);
          beast::error_code ignored;
          sock.non_blocking(false, ignored);
          if (peek == net::error::would_block) return self->watch_for_hangup();  // spurious
          self->watching_ = false;
          // Bytes waiting are a pipelined request, read after the answer: not a hang-up. Under
          // TLS they are the client's close_notify (TLS clients do not pipeline): a hang-up.
          if (n == 0 || peek || kTls) self->cancel_jobs();
        });
  }
  void stop_watching() {
    if (!watching_) return;
    watching_ = false;
    beast::error_code ignored;
    lowest().socket().cancel(ignored);
  }

  // One answer (or streamed chunk) in the endpoint's shape: a completion's "text", a chat's
  // "message" (whole answer) or "delta" (streamed, the first naming the role); a harmony reply's
  // analysis as "reasoning_content".
  nlohmann::json chunk(Generation& g, const std::string& text, const nlohmann::json& finish,
                       const std::string& reasoning = {}) const {
    nlohmann::json choice = {{"index", g.index}, {"logprobs", nullptr}, {"finish_reason", finish}};
    const char* object = "text_completion";
    if (!g.chat) {
      choice["text"] = text;
    } else if (!g.stream) {
      object = "chat.completion";
      choice["message"] = {{"role", "assistant"}, {"content", text}};
      if (!reasoning.empty()) choice["message"]["reasoning_content"] = reasoning;
    } else {
      object = "chat.completion.chunk";
      choice["delta"] = nlohmann::json::object();
      if (!g.sent_role) choice["delta"]["role"] = "assistant";
      g.sent_role = true;
      if (!reasoning.empty()) choice["delta"]["reasoning_content"] = reasoning;
      if (!text.empty() || (finish.is_null() && reasoning.empty()))
        choice["delta"]["content"] = text;
    }
    return {{"id", g.id},
            {"object", object},
            {"created", now_s()},
            {"model", srv_.opt.model_id},
            {"choices", {choice}}};
  }

  void on_token(Generation& g, int32_t t) {
    if (g.stopped ||
        std::find(g.stop_tokens.begin(), g.stop_tokens.end(), t) != g.stop_tokens.end())
      return;
    g.tokens.push_back(t);
    g.text = g.forced + continuation(g);
    for (const std::string& s : g.stop) {
      const size_t at = g.text.find(s, g.forced.size());
      if (at != std::string::npos) {
        g.text.resize(at);
        g.stopped = true;
      }
    }
    if (g.stopped) srv_.engine->cancel(g.job);
    if (!g.stream) return;
    // Hold back what could still become a stop string, and a character split across tokens.
    size_t ready = serve::complete_utf8_prefix(g.text);
    if (!g.stopped)
      for (const std::string& s : g.stop)
        ready = std::min(ready, g.text.size() - std::min(g.text.size(), s.size() - 1));
    if (g.harmony)
      ready = std::min(ready, harmony_ready(g.text));
    else if (g.tools)
      ready = std::min(ready, tool_call_start(srv_.tool_syntax, g.text));
    // An echoed prompt goes out with the first token, whatever of the new text is held back.
    if (ready > g.sent || (g.echo && !g.echo_sent)) {
      const nlohmann::json out = stream_chunk(g, ready, nullptr);
      if (!out.is_null()) push("data: " + dump(out) + "\n\n");
      g.sent = std::max(g.sent, ready);
    }
  }

  // A streamed chunk of the new text up to `ready` bytes: the echoed prompt first in a stream's
  // first chunk; log-probabilities when asked for (echo asks for the prompt's). A harmony reply's
  // chunk carries the growth of its content and reasoning (null when neither grew and no
  // log-probabilities are due).
  nlohmann::json stream_chunk(Generation& g, size_t ready, const nlohmann::json& finish) const {
    const std::string echoed = g.echo ? token_texts(g.prompt) : std::string();
    const size_t from = std::min(g.sent, ready);
    std::string text = g.text.substr(from, ready - from), reasoning;
    if (g.harmony) {
      const AssistantReply r =
          parse_harmony(std::string_view(g.text).substr(0, ready), !finish.is_null(), g.tools);
      text = r.content.substr(std::min(g.sent_content, r.content.size()));
      reasoning = r.reasoning.substr(std::min(g.sent_reasoning, r.reasoning.size()));
      g.sent_content = std::max(g.sent_content, r.content.size());
      g.sent_reasoning = std::max(g.sent_reasoning, r.reasoning.size());
      if (text.empty() && reasoning.empty() && finish.is_null() && g.logprobs < 0) return nullptr;
    }
    auto out = chunk(g, (g.echo_sent ? std::string() : echoed) + text, finish, reasoning);
    if (g.logprobs >= 0 || g.echo)
      out["choices"][0]["logprobs"] = logprobs_json(g, echoed.size(), ready);
    g.echo_sent = true;
    return out;
  }

  // The new tokens' text as it continues the prompt (a word's leading space kept); with tools
  // or harmony, the special tokens that mark tool calls and messages as their text.
  std::string continuation(const Generation& g) const {
    return srv_.tok ? srv_.tok->decode_continuation(g.tokens, !g.tools && !g.harmony)
                    : std::string();
  }

  // The whole reply split into content, reasoning and tool calls.
  AssistantReply reply_of(const Generation& g) const {
    if (g.harmony) return parse_harmony(g.text, true, g.tools);
    return g.tools ? parse_tool_calls(srv_.tool_syntax, g.text) : AssistantReply{g.text, {}, {}};
  }

  // OpenAI's tool_calls of a reply: [{id, type, function: {name, arguments}}] (a stream's delta
  // also numbers them).
  nlohmann::json tool_calls_json(const Generation& g, const std::vector<ToolCall>& calls) const {
    nlohmann::json out = nlohmann::json::array();
    for (size_t k = 0; k < calls.size(); ++k) {
      nlohmann::json c = {
          {"id", "call_" + std::to_string(g.index) + "_" + std::to_string(k) + "_" + g.id},
          {"type", "function"},
          {"function", {{"name", calls[k].name}, {"arguments", calls[k].arguments}}}};
      if (g.stream) c["index"] = k;
      out.push_back(std::move(c));
    }
    return out;
  }

  void on_done(Generation& g, FinishReason why, const std::string& error) {
    Choices& group = *g.group;
    if (group.all.empty()) return;  // the request was refused while its choices were queued
    const bool last = --group.pending == 0;
    if (why == FinishReason::Error) {
      std::fprintf(stderr, "epwa serve: generation %s failed: %s\n", g.id.c_str(), error.c_str());
      if (group.failed) return;
      group.failed = true;
      cancel_jobs();
      const ApiError e(500, "server_error", "the generation failed");
      if (!g.stream) {
        stop_watching();
        return send_error(e, false);
      }
      push("data: " + dump(serve::error_json(e)) + "\n\n");
      return end_stream();
    }
    if (group.failed) return;
    srv_.observe_completion(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - g.start).count());
    g.finish = g.stopped || why == FinishReason::Stop ? "stop"
               : why == FinishReason::Length          ? "length"
                                                      : "cancelled";
    size_t generated = 0;
    for (const auto& x : group.all) generated += x->forced_tokens + x->tokens.size();
    const size_t prompt_tokens = g.prompt.size() - g.forced_tokens;  // the reply's opening aside
    const nlohmann::json usage = {{"prompt_tokens", prompt_tokens},
                                  {"completion_tokens", generated},
                                  {"total_tokens", prompt_tokens + generated}};
    const AssistantReply reply = reply_of(g);
    if (!reply.calls.empty()) g.finish = "tool_calls";
    if (g.stream) {
      // With tool calls the text from the first call on was held back: it goes as the calls.
      const size_t upto = reply.calls.empty() || g.harmony
                              ? g.text.size()
                              : std::min(g.text.size(), tool_call_start(srv_.tool_syntax, g.text));
      auto out = stream_chunk(g, upto, g.finish);
      if (!reply.calls.empty())
        out["choices"][0]["delta"]["tool_calls"] = tool_calls_json(g, reply.calls);
      if (last) {  // the usage and the watermark record close the stream
        out["usage"] = usage;
        out["watermark"] = g.watermark;
      }
      push("data: " + dump(out) + "\n\n");
      if (last) end_stream();
      return;
    }
    if (!last) return;
    nlohmann::json res, choices = nlohmann::json::array();
    for (const auto& x : group.all) {
      const std::string echoed = x->echo ? token_texts(x->prompt) : std::string();
      auto one = chunk(*x, echoed + x->text, x->finish);
      if (x->logprobs >= 0 || x->echo)
        one["choices"][0]["logprobs"] = logprobs_json(*x, echoed.size(), x->text.size());
      if (x->tools || x->harmony) {
        const AssistantReply r = reply_of(*x);
        auto& m = one["choices"][0]["message"];
        if (x->harmony) m["content"] = r.content;
        if (!r.reasoning.empty()) m["reasoning_content"] = r.reasoning;
        if (!r.calls.empty()) {
          m["content"] = r.content.empty() ? nlohmann::json() : nlohmann::json(r.content);
          m["tool_calls"] = tool_calls_json(*x, r.calls);
        }
      }
      choices.push_back(one["choices"][0]);
      if (res.is_null()) res = std::move(one);
    }
    res["choices"] = std::move(choices);
    res["usage"] = usage;
    res["watermark"] = g.watermark;
    stop_watching();
    send(http::status::ok, dump(res), keep_alive_);
  }

  void cancel_jobs() {
    for (uint64_t j : jobs_) srv_.engine->cancel(j);
  }

  // The tokens' texts one after another (special tokens as their text, a SentencePiece word's
  // space kept): what an echoed prompt reads as, so that every token has its offset in it.
  std::string token_texts(std::span<const int32_t> ids) const {
    std::string out;
    for (int32_t id : ids) out += srv_.tok->token_bytes(id);
    return out;
  }

  // choices[0].logprobs: the legacy completions' {tokens, token_logprobs, top_logprobs,
  // text_offset} (the echoed prompt first, its first token without a log-probability), or the chat
  // form {content: [{token, logprob, bytes, top_logprobs}]}. New tokens beyond a stop string are
  // left out, as their text is.
  // `upto` bytes of the new text (a stream's released part) bound the new tokens listed, from the
  // first not yet sent (g.lp_sent), which it advances; echo lists the prompt first, once.
  // Offsets count from the start of the echoed prompt (`echoed_bytes` long).
  nlohmann::json logprobs_json(Generation& g, size_t echoed_bytes, size_t upto) const {
    const Tokenizer& tok = *srv_.tok;
    const size_t prompt_entries = g.echo && !g.prompt.empty() ? g.prompt.size() - 1 : 0;
    nlohmann::json tokens = nlohmann::json::array(), token_lp = nlohmann::json::array(),
                   top = nlohmann::json::array(), offsets = nlohmann::json::array(),
                   content = nlohmann::json::array();
    const bool list_prompt = g.echo && !g.echo_sent;
    size_t offset = list_prompt ? 0 : echoed_bytes + g.lp_offset;
    auto add = [&](int32_t id, const TokenLogprobs* lp, bool generated) {
      const std::string text = tok.token_bytes(id);
      tokens.push_back(text);
      offsets.push_back(offset);
      offset += text.size();
      if (!lp) {
        token_lp.push_back(nullptr);
        top.push_back(nullptr);
        return;
      }
      token_lp.push_back(lp->logprob);
      nlohmann::json alts = nlohmann::json::object(), chat_alts = nlohmann::json::array();
      for (const auto& [alt, v] : lp->top) {
        const std::string t = tok.token_bytes(alt);
        if (!alts.contains(t)) alts[t] = v;  // tokens with one text share a key, as OpenAI's do
        chat_alts.push_back(
            {{"token", t}, {"logprob", v}, {"bytes", std::vector<uint8_t>(t.begin(), t.end())}});
      }
      top.push_back(std::move(alts));
      if (generated)  // the chat form lists new tokens only
        content.push_back({{"token", text},
                           {"logprob", lp->logprob},
                           {"bytes", std::vector<uint8_t>(text.begin(), text.end())},
                           {"top_logprobs", std::move(chat_alts)}});
    };
    if (list_prompt)
      for (size_t i = 0; i < g.prompt.size(); ++i)
        add(g.prompt[i], i > 0 && i - 1 < g.lps.size() ? &g.lps[i - 1] : nullptr, false);
    for (size_t i = g.lp_sent; i < g.tokens.size(); ++i) {
      // A token is listed once its text is out: whole, or cut by a stop string at the end.
      const size_t start = offset - echoed_bytes;
      const size_t end = start + tok.token_bytes(g.tokens[i]).size();
      if (start >= std::min(upto, g.text.size()) || (end > upto && upto < g.text.size())) break;
      const size_t k = prompt_entries + i;
      add(g.tokens[i], k < g.lps.size() ? &g.lps[k] : nullptr, true);
      g.lp_sent = i + 1;
      g.lp_offset = offset - echoed_bytes;
    }
    if (g.chat) return {{"content", std::move(content)}, {"refusal", nullptr}};
    return {{"tokens", std::move(tokens)},
            {"token_logprobs", std::move(token_lp)},
            {"top_logprobs", std::move(top)},
            {"text_offset", std::move(offsets)}};
  }

  // A detection result cut to its verdict (ServerLimits::detect_verdict_only): the p-value is the
  // corrected one under rotation, and a text too short to say much about gets no verdict.
  nlohmann::json verdict_only(const nlohmann::json& r) const {
    const int64_t least = limits().verdict_min_tokens;
    nlohmann::json v = {{"method", r["method"]}, {"verdict_only", true}};
    if (r["n"].get<int64_t>() < least) {
      v["detected"] = false;
      v["p_value"] = nullptr;
      v["reason"] = "fewer than " + std::to_string(least) + " scored tokens";
      return v;
    }
    v["detected"] = r["detected"];
    v["p_value"] = r.contains("keyring") ? r["keyring"]["p_corrected"] : r["p_value"];
    v["reason"] = r["reason"];
    return v;
  }

  void detect(const std::string& body) {
    const ModelConfig& c = srv_.model.config();
    const auto j = serve::parse_body(body);
    const bool batch = j.contains("inputs");
    auto items = serve::parse_detect(j, srv_.tok.get(), c.vocab_size, c.bos_token_id, limits());
    if (srv_.lists.empty()) throw bad_request("this server has no watermark keys");
    // Per-token detail gives each scored token's expert and green bit: a few queries would read
    // the green lists out exactly (docs/THREAT_MODEL.md), so with API keys only admins get it.
    for (const auto& d : items)
      if (d.tokens_detail && !admin_)
        throw ApiError(403, "permission_error",
                       "this API key may not read per-token detail (tokens_detail needs the "
                       "admin role)");
    // Under rotation, which key wrote a text is what an attacker clusters his samples by: only an
    // admin API key may ask for one key or read which one matched (an open server never names it).
    const bool privileged = admin_ && !srv_.opt.api_keys.keys.empty();
    const bool named = !srv_.opt.rotate_keys || privileged;
    const bool whole = !limits().detect_verdict_only || privileged;
    if (!named && !items[0].key_id.empty())
      throw ApiError(403, "permission_error",
                     "this server rotates its keys: choosing the key (key_id) needs an API key "
                     "with the admin role");
    // Empty: every key of the keyring (rotation without key_id).
    const std::string id = srv_.opt.rotate_keys && items[0].key_id.empty() ? std::string()
                           : items[0].key_id.empty() ? srv_.opt.keyring.default_id
                                                     : items[0].key_id;
    if (!id.empty() && !srv_.lists.count(id))
      throw bad_request("unknown watermark key id", "key_id");
    const double n = static_cast<double>(items.size());
    if (n > limits().detect_per_minute)
      throw ApiError(429, "rate_limit_error",
                     "a batch of " + std::to_string(items.size()) +
                         " texts exceeds the detection allowance of " +
                         nlohmann::json(limits().detect_per_minute).dump() + " a minute");
    if (!srv_.allow_detection(who_, n))
      throw ApiError(429, "rate_limit_error",
                     "detection is limited to " +
                         nlohmann::json(limits().detect_per_minute).dump() +
                         " texts a minute for each client; try again later");
    auto self = this->shared_from_this();
    net::post(srv_.detect_pool, [self, items = std::move(items), id, batch, named, whole] {
      int status = 200;
      nlohmann::json results = nlohmann::json::array();
      try {
        std::vector<std::string> ids;  // the whole keyring, for detection without a key id
        std::vector<std::shared_ptr<const GreenLists>> lists;
        if (id.empty())
          for (const auto& [k, l] : self->srv_.lists) ids.push_back(k), lists.push_back(l);
        for (const auto& d : items) {
          DetectOptions o = self->srv_.opt.detect;
          o.method = d.method;
          o.tokens_detail = d.tokens_detail;
          nlohmann::json r;
          std::string matched = id;
          if (id.empty()) {
            const KeyringDetector det(ids, lists, o);
            const KeyringResult kr =
                detect_tokens(self->srv_.model, det, d.tokens, d.prompt_tokens, self->srv_.layer);
            matched = kr.key_id;
            r = to_json(kr);
            if (!named) r["keyring"].erase("key_id"), r["keyring"].erase("per_key");
          } else {
            const Detector det(self->srv_.lists.at(id), o);
            r = to_json(
                detect_tokens(self->srv_.model, det, d.tokens, d.prompt_tokens, self->srv_.layer));
          }
          // Detection is an oracle: every use is logged (who, how much, the verdict).
          std::fprintf(stderr, "epwa serve: detect by %s: key %s, %zu tokens, z %.2f, %s\n",
                       self->who_.c_str(), matched.c_str(), d.tokens.size(), r["z"].get<double>(),
                       r["detected"].get<bool>() ? "detected" : "not detected");
          if (!whole) r = self->verdict_only(r);
          if (named) r["key_id"] = matched;
          r["router_hash"] = self->srv_.router_hash;
          if (!d.id.is_null()) r["id"] = d.id;
          results.push_back(std::move(r));
        }
      } catch (const Error& e) {
        status = 400;
        results = serve::error_json(bad_request(e.what()));
      }
      nlohmann::json out = status != 200 ? std::move(results)
                           : batch
                               ? nlohmann::json{{"object", "list"}, {"data", std::move(results)}}
                               : std::move(results[0]);
      net::post(self->stream_.get_executor(), [self, status, out = std::move(out)] {
        self->send(static_cast<http::status>(status), dump(out), self->keep_alive_);
      });
    });
  }

  // Streamed output: raw bytes written in order, one write at a time.
  void push(std::string s) {
    out_.push_back(std::move(s));
    if (!writing_) write_next();
  }
  void write_next() {
    if (out_.empty()) {
      writing_ = false;
      if (ending_) close();
      return;
    }
    writing_ = true;
    lowest().expires_after(limits().write_timeout);
    net::async_write(stream_, net::buffer(out_.front()),
                     [self = this->shared_from_this()](beast::error_code ec, size_t) {
                       if (ec) {  // the client went away: stop its generation
                         self->cancel_jobs();
                         self->out_.clear();
                         self->writing_ = false;
                         return self->close();
                       }
                       self->out_.pop_front();
                       self->write_next();
                     });
  }
  void end_stream() {
    push("data: [DONE]\n\n");
    ending_ = true;
  }

  Stream stream_;
  Server::Impl& srv_;
  bool tls_closing_ = false;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool keep_alive_ = true;
  std::string peer_, endpoint_ = "other", who_;
  bool admin_ = false;  // the request's API key has the admin role, or the server has no keys
  std::deque<std::string> out_;
  bool writing_ = false, ending_ = false;
  bool watching_ = false;       // a plain completion's hang-up watch is pending
  std::vector<uint64_t> jobs_;  // the generations of this connection's request
};

}  // namespace

nlohmann::json Server::Impl::watermark_record(bool applied, const std::string& key_id) const {
  nlohmann::json j = {{"policy", watermark_policy_name(opt.policy)}, {"applied", applied}};
  if (!applied) return j;
  if (!key_id.empty()) j["key_id"] = key_id;
  if (opt.rotate_keys) j["rotation"] = {{"scheme", "KR-v1"}, {"keys", lists.size()}};
  j["scheme"] = "EPW-A";
  j["mode"] = watermark_mode_name(opt.watermark.mode);
  j["gamma"] = opt.watermark.gamma;
  j["delta"] = opt.watermark.delta;
  j["router_layer"] = layer;
  j["router_hash"] = router_hash;
  if (opt.watermark.min_entropy > 0) j["min_entropy"] = opt.watermark.min_entropy;
  if (opt.watermark.context_buckets > 0) j["context_buckets"] = opt.watermark.context_buckets;
  return j;
}

std::string Server::Impl::rotated_key(uint64_t seed, std::span<const int32_t> prompt) const {
  auto it = lists.begin();
  std::advance(it, keyring_pick(rotation_secret, seed, prompt, lists.size()));
  return it->first;
}

void Server::Impl::count(const std::string& endpoint, int status) {
  std::lock_guard lock(metrics.mu);
  ++metrics.answers[{endpoint, status}];
  if (endpoint == "/v1/watermark/detect" && status == 200) ++metrics.detections;
}

void Server::Impl::observe_completion(double seconds) {
  std::lock_guard lock(metrics.mu);
  for (size_t i = 0; i < Metrics::kBounds.size(); ++i)
    if (seconds <= Metrics::kBounds[i]) ++metrics.buckets[i];
  metrics.seconds += seconds;
  ++metrics.completed;
}

bool Server::Impl::allow_detection(const std::string& who, double n) {
  const double cap = opt.limits.detect_per_minute;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(rate_mu);
  auto [it, fresh] = allowance.try_emplace(who, cap, now);
  auto& [left, last] = it->second;
  if (!fresh)
    left = std::min(cap, left + cap / 60 * std::chrono::duration<double>(now - last).count());
  last = now;
  if (left < n) return false;
  left -= n;
  return true;
}

std::string Server::Impl::metrics_text() {
  const auto st = engine->stats();
  std::string s;
  auto metric = [&](const char* name, const char* type, const char* help, auto value) {
    s += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
         name + " " + std::to_string(value) + "\n";
  };
  std::lock_guard lock(metrics.mu);
  s += "# HELP epwa_http_answers_total HTTP answers by endpoint and status.\n"
       "# TYPE epwa_http_answers_total counter\n";
  for (const auto& [k, n] : metrics.answers)
    s += "epwa_http_answers_total{endpoint=\"" + k.first + "\",status=\"" +
         std::to_string(k.second) + "\"} " + std::to_string(n) + "\n";
  metric("epwa_generated_tokens_total", "counter", "Tokens generated.", st.tokens_out);
  metric("epwa_model_tokens_total", "counter",
         "Tokens run through the model (prompts and generated).", st.tokens_in);
  metric("epwa_batch_steps_total", "counter", "Batched decoding steps.", st.steps);
  metric("epwa_detections_total", "counter", "Detection requests answered.", metrics.detections);
  metric("epwa_running", "gauge", "Requests generating now.", st.running);
  metric("epwa_queued", "gauge", "Requests waiting for a slot.", st.queued);
  metric("epwa_connections", "gauge", "Open HTTP connections.", connections.load());
  s += "# HELP epwa_completion_seconds Time from a completion request to its last token.\n"
       "# TYPE epwa_completion_seconds histogram\n";
  for (size_t i = 0; i < Metrics::kBounds.size(); ++i)
    s += "epwa_completion_seconds_bucket{le=\"" + nlohmann::json(Metrics::kBounds[i]).dump() +
         "\"} " + std::to_string(metrics.buckets[i]) + "\n";
  s += "epwa_completion_seconds_bucket{le=\"+Inf\"} " + std::to_string(metrics.completed) + "\n";
  s += "epwa_completion_seconds_sum " + nlohmann::json(metrics.seconds).dump() + "\n";
  s += "epwa_completion_seconds_count " + std::to_string(metrics.completed) + "\n";
  return s;
}

void Server::Impl::accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket s) {
    if (ec == net::error::operation_aborted) return;  // stopped
    if (!ec) {
      auto go = [&](auto session) {
        if (connections > opt.limits.max_connections)
          session->refuse_busy();
        else
          session->start();
      };
#if EPWA_HTTPS
      if (tls)
        go(std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(std::move(s), *this,
                                                                           *tls));
      else
#endif
        go(std::make_shared<Session<beast::tcp_stream>>(std::move(s), *this));
    }
    accept();
  });
}

Server::Server(Model& model, std::shared_ptr<const Tokenizer> tokenizer, ServerOptions o)
    : impl_(std::make_unique<Impl>(model, std::move(tokenizer), std::move(o))) {
  Impl& s = *impl_;
  check(s.opt.threads >= 1 && s.opt.threads <= 256,
        "serve: threads must be in [1, 256], got " + std::to_string(s.opt.threads));
  s.layer = model_router_layer(model, s.opt.watermark.router_layer);
  if (s.tok) {
    for (int32_t t : non_text_token_ids(*s.tok, model.config().vocab_size))
      if (t != model.config().eos_token_id) s.suppress.push_back(t);
    s.texts = std::make_shared<const TokenTexts>(*s.tok);
  }
  if (!s.opt.chat_template.empty()) {
    check(s.tok != nullptr, "serve: a chat template needs the model's tokenizer");
    s.chat.emplace(s.opt.chat_template, special_token_strings(*s.tok));
    s.end_of_turn = end_of_turn_tokens(*s.chat, *s.tok);
    s.tool_syntax = tool_call_syntax(*s.chat);
    try {
      s.tool_shape = tool_call_shape(*s.chat, s.tool_syntax);
    } catch (const Error& e) {
      s.tool_shape_error = e.what();
    }
    for (const std::string& m : tool_call_markers(s.tool_syntax)) {
      const auto ids = s.tok->encode(m, false, true);
      if (ids.size() == 1) s.tool_markers.push_back(ids[0]);
    }
    s.harmony = s.tool_syntax == ToolCallSyntax::Harmony;
  }
  const auto in = [](const std::vector<int32_t>& v, int32_t t) {
    return std::find(v.begin(), v.end(), t) != v.end();
  };
  for (int32_t t : s.suppress)
    if (!in(s.end_of_turn, t) && !(s.harmony && in(s.tool_markers, t)))
      s.chat_suppress.push_back(t);
  s.router_hash = epwa::router_hash(model);
  // Detection scores what generation wrote.
  s.opt.detect.scheme = detect_scheme_for(s.opt.watermark.mode);
  if (s.opt.policy != WatermarkPolicy::Off)
    check(!s.opt.keyring.keys.empty(), "serve: the watermark policy " +
                                           std::string(watermark_policy_name(s.opt.policy)) +
                                           " needs a keyring (--keyring)");
  std::vector<std::string> secrets;  // in id order, as KR-v1 takes them
  for (const auto& [id, secret] : s.opt.keyring.keys) {
    s.lists[id] =
        make_green_lists(model, secret, s.opt.watermark.gamma, s.opt.watermark.context_buckets);
    secrets.push_back(secret);
  }
  if (s.opt.rotate_keys) {
    check(!secrets.empty(), "serve: key rotation needs a keyring (--keyring)");
    s.rotation_secret = keyring_rotation_secret(secrets);
  }
  if (!s.opt.tls_cert.empty() || !s.opt.tls_key.empty()) {
    check(!s.opt.tls_cert.empty() && !s.opt.tls_key.empty(),
          "serve: TLS needs both a certificate (--tls-cert) and its key (--tls-key)");
#if !EPWA_HTTPS
    throw Error(
        "serve: --tls-cert/--tls-key: this build has no HTTPS (no OpenSSL); see docs/WINDOWS.md");
#else
    check_private_file(s.opt.tls_key, "--tls-key");
    s.tls.emplace(net::ssl::context::tls_server);
    SSL_CTX_set_min_proto_version(s.tls->native_handle(), TLS1_2_VERSION);
    beast::error_code tec;
    s.tls->use_certificate_chain_file(path_to_utf8(s.opt.tls_cert), tec);
    if (tec)
      throw Error("serve: --tls-cert " + path_to_utf8(s.opt.tls_cert) +
                  ": not a PEM certificate chain (" + tec.message() + ")");
    s.tls->use_private_key_file(path_to_utf8(s.opt.tls_key), net::ssl::context::pem, tec);
    if (tec)
      throw Error("serve: --tls-key " + path_to_utf8(s.opt.tls_key) + ": not a PEM private key (" +
                  tec.message() + ")");
    check(SSL_CTX_check_private_key(s.tls->native_handle()) == 1,
          "serve: --tls-key does not belong to the certificate in --tls-cert");
#endif
  }
  beast::error_code ec;
  const auto addr = net::ip::make_address(s.opt.host, ec);
  if (ec) throw Error("serve: '" + s.opt.host + "' is not an IP address");
  const tcp::endpoint ep(addr, s.opt.port);
  s.acceptor.open(ep.protocol(), ec);
  if (!ec) s.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(ep, ec);
  if (!ec) s.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    throw Error("serve: cannot listen on " + s.opt.host + ":" + std::to_string(s.opt.port) + ": " +
                ec.message());
  s.engine = std::make_unique<BatchEngine>(model, s.opt.engine);
}

Server::~Server() = default;

uint16_t Server::port() const {
  return impl_->acceptor.local_endpoint().port();
}

void Server::run() {
  Impl& s = *impl_;
  s.signals.add(SIGINT);
  s.signals.add(SIGTERM);
  s.signals.async_wait([this](beast::error_code ec, int) {
    if (!ec) stop();
  });
  s.accept();
  std::vector<std::thread> threads;
  for (int32_t i = 1; i < s.opt.threads; ++i) threads.emplace_back([&] { s.ioc.run(); });
  s.ioc.run();
  for (auto& t : threads) t.join();
}

void Server::stop() {
  net::post(impl_->acceptor.get_executor(), [this] {
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
    impl_->signals.cancel(ignored);
    impl_->ioc.stop();
  });
}

}  // namespace epwa
