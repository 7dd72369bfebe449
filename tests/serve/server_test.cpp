// `epwa serve` over real HTTP on loopback (cpp-httplib as the client, raw sockets for hostile
// clients): completions as the library generates them, streamed and not; the watermark policy and
// detection; every kind of bad request answered with a JSON 4xx; slow and idle clients holding
// nothing; 429 beyond the queue.
#include "epwa/server.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "epwa/chat_template.hpp"
#include "epwa/pepi.hpp"
#include "epwa/session.hpp"
#include "epwa/tool_calls.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kBundle = fs::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe";

struct Bundle {
  std::unique_ptr<epwa::Model> model = epwa::Model::load(kBundle);
  std::shared_ptr<const epwa::Tokenizer> tok = epwa::load_tokenizer(kBundle);
};
Bundle& bundle() {
  static Bundle b;
  return b;
}

// A server on a free loopback port, serving on its own thread for the test's life.
class Running {
 public:
  explicit Running(epwa::ServerOptions o) {
    o.port = 0;
    server_ = std::make_unique<epwa::Server>(*bundle().model, bundle().tok, std::move(o));
    thread_ = std::thread([this] { server_->run(); });
  }
  ~Running() {
    server_->stop();
    thread_.join();
  }
  uint16_t port() const { return server_->port(); }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port());
    c.set_read_timeout(60, 0);
    return c;
  }
  json post(const std::string& path, const std::string& body, int* status = nullptr,
            const std::string& bearer = "") const {
    auto c = client();
    if (!bearer.empty()) c.set_bearer_token_auth(bearer);
    auto res = c.Post(path.c_str(), body, "application/json");
    EXPECT_TRUE(res) << "no answer to " << path;
    if (!res) return {};
    if (status) *status = res->status;
    EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
    return json::parse(res->body);
  }

 private:
  std::unique_ptr<epwa::Server> server_;
  std::thread thread_;
};

epwa::Keyring keyring() {
  epwa::Keyring k;
  k.keys = {{"k1", "server-test-secret-1"}, {"k2", "server-test-secret-2"}};
  k.default_id = "k1";
  return k;
}

// Two bearer keys (mode 0600 file): "app" may generate and detect, "audit" detects as an admin.
epwa::ApiKeys app_and_audit_keys(const std::string& file) {
  const fs::path p = fs::temp_directory_path() / file;
  std::ofstream(p) << R"({"keys": [
      {"name": "app", "key": "generate-key-0123456789", "roles": ["generate", "detect"]},
      {"name": "audit", "key": "audit-key-0123456789", "roles": ["detect", "admin"]}]})";
  fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write);
  return epwa::ApiKeys::load(p);
}
constexpr const char* kApp = "generate-key-0123456789";
constexpr const char* kAudit = "audit-key-0123456789";

std::string text_of(const std::string& prompt, const epwa::GenerateOptions& go,
                    epwa::Watermarker* wm = nullptr) {
  auto& b = bundle();
  const auto ids = b.tok->encode(prompt, true, false);
  epwa::GenerateOptions o = go;  // what the server does: no special token in the text
  for (int32_t t : epwa::non_text_token_ids(*b.tok, b.model->config().vocab_size))
    if (t != b.model->config().eos_token_id) o.suppress_tokens.push_back(t);
  auto out = wm ? wm->generate(*b.model, ids, o) : epwa::generate(*b.model, ids, o);
  if (!out.empty() && out.back() == b.model->config().eos_token_id) out.pop_back();
  std::vector<int32_t> all = ids;
  all.insert(all.end(), out.begin(), out.end());
  return b.tok->decode(all, true).substr(b.tok->decode(ids, true).size());
}

// The server's prompt for a chat: the template's rendering (with the tools when given), its
// special tokens parsed, no BOS added.
std::vector<int32_t> chat_ids(const std::string& tpl_source, const json& messages,
                              const json& tools = nullptr) {
  auto& b = bundle();
  const epwa::ChatTemplate tpl(tpl_source, epwa::special_token_strings(*b.tok));
  epwa::ChatInput in;
  in.messages = messages;
  if (!tools.is_null()) in.tools = tools;
  return b.tok->encode(tpl.render(in), false, true);
}

// The content of a streamed chat completion of `body`, its deltas joined; `check` sees each delta.
std::string streamed_content(const Running& s, json body,
                             const std::function<void(const json&)>& check = nullptr) {
  body["stream"] = true;
  auto res = s.client().Post("/v1/chat/completions", body.dump(), "application/json");
  EXPECT_TRUE(res);
  if (!res) return {};
  std::string joined;
  std::istringstream lines(res->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("data: ", 0) != 0 || line == "data: [DONE]") continue;
    const json d = json::parse(line.substr(6))["choices"][0]["delta"];
    if (check) check(d);
    if (d.contains("content")) joined += d["content"].get<std::string>();
  }
  return joined;
}

// What the library generates with watermarker `w` for `prompt`, stopping at EOS as the server does.
std::string library_text(epwa::Watermarker& w, int32_t max_tokens, float temperature, uint64_t seed,
                         const std::string& prompt = "The river") {
  epwa::GenerateOptions go;
  go.max_new_tokens = max_tokens;
  go.sampling.temperature = temperature;
  go.sampling.seed = seed;
  go.stop_tokens = {bundle().model->config().eos_token_id};
  return text_of(prompt, go, &w);
}

TEST(Server, CompletionsAsTheLibraryGenerates) {
  Running s({});
  int status = 0;
  const json r = s.post("/v1/completions",
                        R"({"model": "epwa", "prompt": "The river", "max_tokens": 24,
                            "temperature": 0.7, "seed": 5})",
                        &status);
  ASSERT_EQ(status, 200) << r.dump();
  epwa::GenerateOptions go;
  go.max_new_tokens = 24;
  go.sampling.temperature = 0.7f;
  go.sampling.seed = 5;
  go.stop_tokens = {bundle().model->config().eos_token_id};
  EXPECT_EQ(r["choices"][0]["text"], text_of("The river", go));
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(r["watermark"]["applied"], false);

  // Streamed: the deltas add up to the same text, then [DONE].
  auto res = s.client().Post(
      "/v1/completions",
      R"({"prompt": "The river", "max_tokens": 24, "temperature": 0.7, "seed": 5, "stream": true})",
      "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
  std::string joined, finish;
  size_t events = 0;
  std::istringstream lines(res->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("data: ", 0) != 0) continue;
    ++events;
    if (line == "data: [DONE]") break;
    const json e = json::parse(line.substr(6));
    joined += e["choices"][0]["text"].get<std::string>();
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(joined, r["choices"][0]["text"]);
  EXPECT_EQ(finish, r["choices"][0]["finish_reason"]);
  EXPECT_GT(events, 5u);

  // Token ids as the prompt; a stop string cuts the text before it.
  const std::string full = r["choices"][0]["text"];
  const std::string stop = full.substr(full.size() / 2, 3);
  const json cut = s.post("/v1/completions", json{{"prompt", "The river"},
                                                  {"max_tokens", 24},
                                                  {"temperature", 0.7},
                                                  {"seed", 5},
                                                  {"stop", stop}}
                                                 .dump());
  EXPECT_EQ(cut["choices"][0]["text"], full.substr(0, full.find(stop)));
  EXPECT_EQ(cut["choices"][0]["finish_reason"], "stop");
}

// n choices: choice i is what a request with seed + i generates; streamed, each index's deltas add
// up to its choice. Without a seed two requests sample differently.
TEST(Server, SeveralChoicesAndUnseededRequests) {
  Running s({});
  int status = 0;
  const json r = s.post("/v1/completions",
                        R"({"prompt": "The river", "max_tokens": 16, "temperature": 0.9, "seed": 5,
                            "n": 3})",
                        &status);
  ASSERT_EQ(status, 200) << r.dump();
  ASSERT_EQ(r["choices"].size(), 3u);
  int64_t total = 0;
  std::set<std::string> distinct;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(r["choices"][i]["index"], i);
    const json one = s.post(
        "/v1/completions",
        json{{"prompt", "The river"}, {"max_tokens", 16}, {"temperature", 0.9}, {"seed", 5 + i}}
            .dump());
    EXPECT_EQ(r["choices"][i]["text"], one["choices"][0]["text"]) << "choice " << i;
    total += one["usage"]["completion_tokens"].get<int64_t>();
    distinct.insert(r["choices"][i]["text"].get<std::string>());
  }
  EXPECT_EQ(r["usage"]["completion_tokens"], total);
  EXPECT_EQ(distinct.size(), 3u);

  auto res = s.client().Post("/v1/completions",
                             R"({"prompt": "The river", "max_tokens": 16, "temperature": 0.9,
                                 "seed": 5, "n": 3, "stream": true})",
                             "application/json");
  ASSERT_TRUE(res);
  std::vector<std::string> texts(3);
  std::vector<int> finished(3, 0);
  std::istringstream lines(res->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("data: ", 0) != 0 || line == "data: [DONE]") continue;
    const json e = json::parse(line.substr(6));
    const int i = e["choices"][0]["index"];
    texts[i] += e["choices"][0]["text"].get<std::string>();
    if (!e["choices"][0]["finish_reason"].is_null()) ++finished[i];
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(texts[i], r["choices"][i]["text"]) << "choice " << i;
    EXPECT_EQ(finished[i], 1);
  }
  s.post("/v1/completions", R"({"prompt": "x", "n": 17})", &status);
  EXPECT_EQ(status, 400);

  const std::string unseeded = R"({"prompt": "The river", "max_tokens": 24, "temperature": 1})";
  EXPECT_NE(s.post("/v1/completions", unseeded)["choices"][0]["text"],
            s.post("/v1/completions", unseeded)["choices"][0]["text"]);
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Chat completions render the messages with the template and generate from exactly those tokens:
// the same text as a completion of the rendered ids, whole and streamed (deltas, role first).
TEST(Server, ChatCompletionsGenerateFromTheRenderedTemplate) {
  const fs::path tpl_file =
      fs::path(EPWA_TEST_DATA_DIR) / "chat_templates" / "mixtral-8x7b-instruct.jinja";
  epwa::ServerOptions o;
  o.chat_template = read_file(tpl_file);
  Running s(o);
  const json messages = json::parse(R"([{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "The river"}])");
  int status = 0;
  const json r = s.post("/v1/chat/completions",
                        json{{"model", "epwa"},
                             {"messages", messages},
                             {"max_tokens", 20},
                             {"temperature", 0.7},
                             {"seed", 9}}
                            .dump(),
                        &status);
  ASSERT_EQ(status, 200) << r.dump();
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["choices"][0]["message"]["role"], "assistant");

  auto& b = bundle();
  const auto ids = chat_ids(o.chat_template, messages);
  EXPECT_EQ(ids[0], b.model->config().bos_token_id);  // the template's <s> is the BOS token
  EXPECT_EQ(r["usage"]["prompt_tokens"], ids.size());
  const json plain =
      s.post("/v1/completions",
             json{{"prompt", ids}, {"max_tokens", 20}, {"temperature", 0.7}, {"seed", 9}}.dump());
  EXPECT_EQ(r["choices"][0]["message"]["content"], plain["choices"][0]["text"]);
  EXPECT_EQ(r["choices"][0]["finish_reason"], plain["choices"][0]["finish_reason"]);

  auto res = s.client().Post("/v1/chat/completions",
                             json{{"messages", messages},
                                  {"max_tokens", 20},
                                  {"temperature", 0.7},
                                  {"seed", 9},
                                  {"stream", true},
                                  {"stream_options", {{"include_usage", true}}}}
                                 .dump(),
                             "application/json");
  ASSERT_TRUE(res);
  std::string joined;
  int roles = 0;
  std::istringstream lines(res->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("data: ", 0) != 0 || line == "data: [DONE]") continue;
    const json e = json::parse(line.substr(6));
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    const json& d = e["choices"][0]["delta"];
    if (d.contains("role")) ++roles;
    if (d.contains("content")) joined += d["content"].get<std::string>();
  }
  EXPECT_EQ(roles, 1);
  EXPECT_EQ(joined, r["choices"][0]["message"]["content"]);

  // logprobs: one entry per new token, in the chat form, with the alternatives asked for.
  const json lp = s.post("/v1/chat/completions",
                         json{{"messages", messages},
                              {"max_tokens", 6},
                              {"temperature", 0},
                              {"logprobs", true},
                              {"top_logprobs", 2}}
                             .dump(),
                         &status);
  ASSERT_EQ(status, 200) << lp.dump();
  const json& content = lp["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), lp["usage"]["completion_tokens"].get<size_t>());
  std::string said;
  for (const auto& c : content) {
    EXPECT_EQ(c["top_logprobs"].size(), 2u);
    EXPECT_LE(c["logprob"].get<double>(), 0);
    EXPECT_EQ(c["top_logprobs"][0]["token"], c["token"]);  // greedy: the best is the one taken
    said += c["token"].get<std::string>();
  }
  EXPECT_EQ(said, lp["choices"][0]["message"]["content"]);

  // The template's refusal and malformed messages are 400s naming the problem.
  const json refused = s.post("/v1/chat/completions",
                              R"({"messages": [{"role": "user", "content": "a"},
                                               {"role": "user", "content": "b"}]})",
                              &status);
  EXPECT_EQ(status, 400);
  EXPECT_NE(refused["error"]["message"].get<std::string>().find(
                "chat template refused the conversation: After the optional system message"),
            std::string::npos);
  const json bad = s.post("/v1/chat/completions", R"({"messages": [{"content": "x"}]})", &status);
  EXPECT_EQ(status, 400);
  EXPECT_EQ(bad["error"]["message"], "messages[0].role must be a string");
  EXPECT_EQ(bad["error"]["param"], "messages");
}

TEST(Server, ChatWithoutATemplateIsAClear400) {
  Running s({});
  int status = 0;
  const json r = s.post("/v1/chat/completions",
                        R"({"messages": [{"role": "user", "content": "hi"}]})", &status);
  EXPECT_EQ(status, 400);
  EXPECT_NE(r["error"]["message"].get<std::string>().find("--chat-template"), std::string::npos);
}

// HTTPS with a self-signed certificate made by the openssl command: a verifying client gets the
// same completion as over plain HTTP; a plain-HTTP client gets nothing and changes nothing; bad
// certificate settings are refused at start with the file named.
TEST(Server, ServesHttpsWithTheGivenCertificate) {
  const fs::path d = fs::temp_directory_path() / "epwa_tls_test";
  fs::remove_all(d);
  fs::create_directories(d);
  const std::string cert = (d / "cert.pem").string(), key = (d / "key.pem").string();
  ASSERT_EQ(std::system(("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
                         "-addext subjectAltName=IP:127.0.0.1 -keyout " +
                         key + " -out " + cert + " 2>/dev/null")
                            .c_str()),
            0);
  fs::permissions(key, fs::perms::owner_read | fs::perms::owner_write);
  epwa::ServerOptions o;
  o.tls_cert = cert;
  o.tls_key = key;
  Running s(o);
  httplib::SSLClient c("127.0.0.1", s.port());
  c.set_ca_cert_path(cert.c_str());
  c.enable_server_certificate_verification(true);
  c.set_read_timeout(60, 0);
  const std::string body = R"({"prompt": "The river", "max_tokens": 12, "temperature": 0})";
  auto res = c.Post("/v1/completions", body, "application/json");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  ASSERT_EQ(res->status, 200);
  httplib::Client plain("127.0.0.1", s.port());
  plain.set_read_timeout(5, 0);
  EXPECT_FALSE(plain.Post("/v1/completions", body, "application/json"));
  Running http({});
  EXPECT_EQ(json::parse(res->body)["choices"][0]["text"],
            http.post("/v1/completions", body)["choices"][0]["text"]);
  auto again = c.Get("/health");  // still serving after the plain-HTTP attempt
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);

  auto start_error = [&](const std::string& cert_path, const std::string& key_path) {
    epwa::ServerOptions bad;
    bad.port = 0;
    bad.tls_cert = cert_path;
    bad.tls_key = key_path;
    try {
      epwa::Server srv(*bundle().model, bundle().tok, bad);
    } catch (const epwa::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(start_error(key, key).find("not a PEM certificate chain"), std::string::npos);
  EXPECT_NE(start_error(cert, "").find("needs both"), std::string::npos);
  fs::permissions(key, fs::perms::group_read, fs::perm_options::add);
  EXPECT_NE(start_error(cert, key).find("--tls-key"), std::string::npos);
  fs::remove_all(d);
}

// echo + logprobs: the prompt's log-probabilities are what PEPI's HTTP client reads (equal to the
// local model's), and a watermarked answer's log-probabilities are the model's own (no bias shows).
TEST(Server, LogprobsAreTheModelsOwnAndServePepi) {
  epwa::ServerOptions o;
  o.policy = epwa::WatermarkPolicy::Enforced;
  o.keyring = keyring();
  o.watermark.router_layer = -1;
  Running s(o);
  auto& b = bundle();
  const auto ids = b.tok->encode("The river runs past the old mill", true, false);
  epwa::ApiOptions api;
  api.url = "http://127.0.0.1:" + std::to_string(s.port());
  api.top_k = 5;
  epwa::ApiDistributionSource remote(api, b.tok);
  epwa::LocalDistributionSource local(*b.model, 5);
  const auto got = remote.distributions(ids), want = local.distributions(ids);
  ASSERT_EQ(got.size(), ids.size() - 1);
  for (size_t i = 0; i < got.size(); ++i)
    for (size_t r = 0; r < 3; ++r) {  // keyed by text, as OpenAI's: tokens compared by text
      EXPECT_EQ(b.tok->token_bytes(got[i].tokens[r]), b.tok->token_bytes(want[i].tokens[r]))
          << "position " << i;
      EXPECT_NEAR(got[i].logprobs[r], want[i].logprobs[r], 1e-4) << "position " << i;
    }

  // Greedy and watermarked: each token's log-probability is the unbiased model's, the same as an
  // echo of the prompt and the answer gives.
  int status = 0;
  const json r =
      s.post("/v1/completions",
             json{{"prompt", ids}, {"max_tokens", 12}, {"temperature", 0}, {"logprobs", 2}}.dump(),
             &status);
  ASSERT_EQ(status, 200) << r.dump();
  const json& lp = r["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 12u);
  epwa::WatermarkConfig wc;
  wc.router_layer = -1;
  epwa::Watermarker w(*b.model, "server-test-secret-1", wc);
  epwa::GenerateOptions go;
  go.max_new_tokens = 12;
  go.sampling.temperature = 0;
  for (int32_t t : epwa::non_text_token_ids(*b.tok, b.model->config().vocab_size))
    if (t != b.model->config().eos_token_id) go.suppress_tokens.push_back(t);
  std::vector<int32_t> all = ids;
  for (int32_t t : w.generate(*b.model, ids, go)) all.push_back(t);
  ASSERT_EQ(all.size(), ids.size() + 12);
  for (size_t i = 0; i < 12; ++i)
    EXPECT_EQ(lp["tokens"][i], b.tok->token_bytes(all[ids.size() + i]));
  std::string joined;
  for (const auto& t : lp["tokens"]) joined += t.get<std::string>();
  EXPECT_EQ(joined, r["choices"][0]["text"]);
  const json e = s.post(
      "/v1/completions",
      json{{"prompt", all}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 1}}.dump(), &status);
  ASSERT_EQ(status, 200) << e.dump();
  const json& elp = e["choices"][0]["logprobs"];
  ASSERT_EQ(elp["token_logprobs"].size(), all.size());
  EXPECT_TRUE(elp["token_logprobs"][0].is_null());
  for (size_t i = 0; i < 12; ++i)
    EXPECT_NEAR(lp["token_logprobs"][i].get<double>(),
                elp["token_logprobs"][ids.size() + i].get<double>(), 1e-4)
        << "token " << i;
  EXPECT_EQ(e["usage"]["completion_tokens"], 0);
  s.post("/v1/completions", R"({"prompt": "x", "logprobs": 21})", &status);
  EXPECT_EQ(status, 400);

  // Streamed: each chunk carries the log-probabilities of the tokens its text completes; together
  // they are the whole answer's.
  auto res = s.client().Post("/v1/completions",
                             json{{"prompt", ids},
                                  {"max_tokens", 12},
                                  {"temperature", 0},
                                  {"logprobs", 2},
                                  {"stream", true}}
                                 .dump(),
                             "application/json");
  ASSERT_TRUE(res);
  json streamed_tokens = json::array(), streamed_lp = json::array();
  std::istringstream lines(res->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("data: ", 0) != 0 || line == "data: [DONE]") continue;
    const json ev = json::parse(line.substr(6));
    const json& l = ev["choices"][0]["logprobs"];
    ASSERT_TRUE(l.is_object()) << line;
    for (size_t i = 0; i < l["tokens"].size(); ++i) {
      streamed_tokens.push_back(l["tokens"][i]);
      streamed_lp.push_back(l["token_logprobs"][i]);
    }
  }
  EXPECT_EQ(streamed_tokens, lp["tokens"]);
  EXPECT_EQ(streamed_lp, lp["token_logprobs"]);

  // Echo in a stream: the first chunk starts with the prompt; the chunks' text, tokens,
  // log-probabilities and offsets add up to the unstreamed answer's (new tokens and none).
  for (int max_tokens : {12, 0}) {
    const json body = {{"prompt", ids},
                       {"max_tokens", max_tokens},
                       {"temperature", 0},
                       {"echo", true},
                       {"logprobs", 1}};
    const json whole = s.post("/v1/completions", body.dump(), &status);
    ASSERT_EQ(status, 200) << whole.dump();
    json streamed = body;
    streamed["stream"] = true;
    auto sr = s.client().Post("/v1/completions", streamed.dump(), "application/json");
    ASSERT_TRUE(sr);
    ASSERT_EQ(sr->status, 200) << sr->body;
    std::string text, first;
    json parts = {{"tokens", json::array()},
                  {"token_logprobs", json::array()},
                  {"top_logprobs", json::array()},
                  {"text_offset", json::array()}};
    std::istringstream events(sr->body);
    for (std::string line; std::getline(events, line);) {
      if (line.rfind("data: ", 0) != 0 || line == "data: [DONE]") continue;
      const json ev = json::parse(line.substr(6));
      const std::string t = ev["choices"][0]["text"];
      if (first.empty()) first = t;
      text += t;
      const json& l = ev["choices"][0]["logprobs"];
      ASSERT_TRUE(l.is_object()) << line;
      for (auto& [k, v] : parts.items())
        for (const auto& x : l[k]) v.push_back(x);
    }
    const json& want = whole["choices"][0]["logprobs"];
    EXPECT_EQ(text, whole["choices"][0]["text"]) << max_tokens;
    std::string prompt_text;
    for (int32_t id : ids) prompt_text += b.tok->token_bytes(id);
    EXPECT_EQ(first.rfind(prompt_text, 0), 0u) << "the whole prompt comes first";
    ASSERT_EQ(parts["tokens"].size(), ids.size() + max_tokens);
    for (const auto& k : {"tokens", "text_offset", "top_logprobs"})
      EXPECT_EQ(parts[k], want[k]) << k << ", max_tokens " << max_tokens;
    for (size_t i = 0; i < want["token_logprobs"].size(); ++i)
      if (want["token_logprobs"][i].is_null())
        EXPECT_TRUE(parts["token_logprobs"][i].is_null()) << i;
      else
        EXPECT_NEAR(parts["token_logprobs"][i].get<double>(),
                    want["token_logprobs"][i].get<double>(), 1e-5)
            << i;
  }
}

TEST(Server, EnforcedWatermarkIsDetected) {
  epwa::ServerOptions o;
  o.policy = epwa::WatermarkPolicy::Enforced;
  o.keyring = keyring();
  o.watermark.router_layer = -1;
  Running s(o);
  const json r =
      s.post("/v1/completions",
             R"({"prompt": "The river", "max_tokens": 200, "temperature": 0.7, "seed": 1})");
  const json& wm = r["watermark"];
  EXPECT_EQ(wm["policy"], "enforced");
  EXPECT_EQ(wm["applied"], true);
  EXPECT_EQ(wm["key_id"], "k1");
  EXPECT_EQ(wm["router_hash"], epwa::router_hash(*bundle().model));
  EXPECT_EQ(r.dump().find("server-test-secret"), std::string::npos);  // never the secret
  // The same text as the library's watermarked generation with that key.
  epwa::WatermarkConfig wc;
  wc.router_layer = -1;
  epwa::Watermarker w(*bundle().model, "server-test-secret-1", wc);
  const std::string text = r["choices"][0]["text"];
  EXPECT_EQ(text, library_text(w, 200, 0.7f, 1));
  const json d =
      s.post("/v1/watermark/detect", json{{"prompt", "The river"}, {"text", text}}.dump());
  EXPECT_EQ(d["detected"], true) << d.dump();
  EXPECT_GT(d["z"].get<double>(), 4);
  const json other = s.post("/v1/watermark/detect",
                            json{{"prompt", "The river"}, {"text", text}, {"key_id", "k2"}}.dump());
  EXPECT_EQ(other["detected"], false) << other.dump();
  int status = 0;
  s.post("/v1/completions", R"({"prompt": "x", "watermark": false})", &status);
  EXPECT_EQ(status, 400);

  // The batch form: each text scored as alone, in order, ids echoed.
  const std::string human = "The river runs past the old mill and on toward the sea.";
  const json batch = s.post(
      "/v1/watermark/detect",
      json{{"key_id", "k1"},
           {"inputs",
            {{{"id", "w"}, {"prompt", "The river"}, {"text", text}}, {{"id", 7}, {"text", human}}}}}
          .dump(),
      &status);
  ASSERT_EQ(status, 200) << batch.dump();
  EXPECT_EQ(batch["object"], "list");
  ASSERT_EQ(batch["data"].size(), 2u);
  EXPECT_EQ(batch["data"][0]["id"], "w");
  EXPECT_EQ(batch["data"][0]["z"], d["z"]);
  EXPECT_EQ(batch["data"][0]["detected"], true);
  const json alone = s.post("/v1/watermark/detect", json{{"text", human}}.dump());
  EXPECT_EQ(batch["data"][1]["id"], 7);
  EXPECT_EQ(batch["data"][1]["z"], alone["z"]);
  const json bad = s.post("/v1/watermark/detect",
                          R"({"inputs": [{"text": "a"}, {"tokens": [1, 1.5]}]})", &status);
  EXPECT_EQ(status, 400);
  EXPECT_EQ(bad["error"]["message"], "'inputs[1].tokens' holds 1.5, not an integer token id");
  s.post("/v1/watermark/detect", R"({"inputs": []})", &status);
  EXPECT_EQ(status, 400);
}

// A batch costs one detection per text: beyond the allowance it is refused whole.
TEST(Server, BatchDetectionCountsEveryText) {
  epwa::ServerOptions o;
  o.policy = epwa::WatermarkPolicy::OptIn;
  o.keyring = keyring();
  o.limits.detect_per_minute = 3;
  Running s(o);
  int status = 0;
  s.post("/v1/watermark/detect",
         R"({"inputs": [{"text": "a"}, {"text": "b"}, {"text": "c"}, {"text": "d"}]})", &status);
  EXPECT_EQ(status, 429);
  s.post("/v1/watermark/detect", R"({"inputs": [{"text": "a"}, {"text": "b"}]})", &status);
  EXPECT_EQ(status, 200);
  s.post("/v1/watermark/detect", R"({"inputs": [{"text": "a"}, {"text": "b"}]})", &status);
  EXPECT_EQ(status, 429);  // one left this minute
  s.post("/v1/watermark/detect", R"({"text": "a"})", &status);
  EXPECT_EQ(status, 200);
}

TEST(Server, BadRequestsGetJson4xx) {
  epwa::ServerOptions o;
  o.limits.max_body_bytes = 4096;
  o.engine.context = 64;
  Running s(o);
  const std::vector<std::pair<std::string, int>> cases = {
      {"{not json", 400},
      {"[1, 2]", 400},
      {"{\"prompt\": \"\xff\xfe\"}", 400},
      {R"({"prompt": [1, 2.5]})", 400},
      {R"({"prompt": [1, 99999999]})", 400},
      {R"({"prompt": [1, -3]})", 400},
      {R"({"prompt": "x", "max_tokens": "9"})", 400},
      {R"({"prompt": "x", "max_tokens": 1e3})", 400},
      {R"({"prompt": "x", "max_tokens": 100000000})", 400},
      {R"({"prompt": "x", "max_tokens": 100})", 400},  // beyond the context of 64
      {R"({"prompt": "x", "temperature": -1})", 400},
      {R"({"prompt": "x", "top_p": 0})", 400},
      {R"({"prompt": "x", "n": 17})", 400},
      {R"({"prompt": "x", "stop": [1]})", 400},
      {R"({"prompt": "x", "stream": "yes"})", 400},
      {R"({"prompt": "x", "bogus": 1})", 400},
      {R"({"prompt": "x", "watermark": true})", 400},  // the policy is off
      {R"({"max_tokens": 3})", 400},
      {R"({"prompt": []})", 400},
      {"{\"prompt\": \"" + std::string(5000, 'a') + "\"}", 413},
  };
  for (const auto& [body, want] : cases) {
    int status = 0;
    const json e = s.post("/v1/completions", body, &status);
    EXPECT_EQ(status, want) << body.substr(0, 60);
    EXPECT_TRUE(e.contains("error") && e["error"]["message"].is_string()) << e.dump();
  }
  int status = 0;
  s.post("/v1/watermark/detect", R"({"text": "x"})", &status);  // no keys on this server
  EXPECT_EQ(status, 400);
  auto res = s.client().Get("/v1/completions");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 405);
  res = s.client().Get("/nope");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  // Still answering after all that.
  EXPECT_EQ(s.client().Get("/health")->status, 200);
}

int connect_to(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  return fd;
}

// 16 idle sockets and 16 sending their headers a byte at a time hold no thread: a valid request
// is answered at once; the slow ones are cut off at the header deadline.
TEST(Server, SlowAndIdleClientsHoldNothing) {
  epwa::ServerOptions o;
  o.threads = 1;
  o.limits.header_timeout = std::chrono::milliseconds(800);
  Running s(o);
  std::vector<int> idle, slow;
  for (int i = 0; i < 16; ++i) idle.push_back(connect_to(s.port()));
  for (int i = 0; i < 16; ++i) {
    slow.push_back(connect_to(s.port()));
    ASSERT_EQ(::send(slow.back(), "POST /v1/comp", 13, 0), 13);
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto res = s.client().Get("/health");
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_LT(ms, 500);
  // Past the deadline the server has closed them: a read returns 0 (end of stream).
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  for (int fd : slow) {
    char c;
    EXPECT_EQ(::recv(fd, &c, 1, MSG_DONTWAIT), 0);
    ::close(fd);
  }
  for (int fd : idle) ::close(fd);
}

// A client that hangs up on a plain (not streamed) completion frees its slot at once.
TEST(Server, HangingUpCancelsAPlainCompletion) {
  epwa::ServerOptions o;
  o.engine.slots = 1;
  o.engine.queue = 4;
  Running s(o);
  const int fd = connect_to(s.port());
  const std::string body = R"({"prompt": "a", "max_tokens": 1000, "temperature": 0.8})";
  const std::string req =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
      "application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(::send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ::close(fd);
  // The generation stops: the slot is free and far fewer than 1000 tokens were made.
  for (int i = 0;
       i < 500 && s.client().Get("/health")->body.find("\"running\":0") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const std::string m = s.client().Get("/metrics")->body;
  const std::string key = "\nepwa_generated_tokens_total ";
  const auto at = m.find(key);
  ASSERT_NE(at, std::string::npos) << m;
  EXPECT_LT(std::stoll(m.substr(at + key.size())), 1000) << m;
  const json r = s.post("/v1/completions", R"({"prompt": "b", "max_tokens": 4})");
  EXPECT_EQ(r["usage"]["completion_tokens"], 4);
}

TEST(Server, QueueFullIs429AndConcurrentRequestsAllAnswer) {
  {
    epwa::ServerOptions o;
    o.engine.slots = 1;
    o.engine.queue = 0;
    o.engine.context = 2048;
    Running s(o);
    // One long generation holds the only slot; a second request is refused with 429.
    int first = 0;
    std::thread t([&] {
      s.post("/v1/completions", R"({"prompt": "a", "max_tokens": 1000, "temperature": 0.8})",
             &first);
    });
    // Wait until it holds the slot (a fixed sleep was too short on a loaded machine).
    for (int i = 0;
         i < 500 && s.client().Get("/health")->body.find("\"running\":1") == std::string::npos; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    int status = 0;
    const json e = s.post("/v1/completions", R"({"prompt": "b", "max_tokens": 4})", &status);
    EXPECT_EQ(status, 429) << e.dump();
    EXPECT_EQ(e["error"]["type"], "rate_limit_error");
    t.join();
    EXPECT_EQ(first, 200);  // the first one had the free slot
  }
  epwa::ServerOptions o;
  o.engine.slots = 4;
  Running s(o);
  std::vector<std::thread> threads;
  std::vector<json> got(8);
  // Some ask for log-probabilities, some echo theirs (every position's logits in their prefill
  // steps): no request's text depends on what it was batched with.
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      json body{
          {"prompt", "The river " + std::to_string(i)}, {"max_tokens", 16}, {"temperature", 0}};
      if (i % 3 == 1) body["logprobs"] = 3;
      if (i % 3 == 2) body["echo"] = true, body["logprobs"] = 1;
      got[i] = s.post("/v1/completions", body.dump());
    });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 8; ++i) {
    epwa::GenerateOptions go;
    go.max_new_tokens = 16;
    go.stop_tokens = {bundle().model->config().eos_token_id};
    const std::string want = text_of("The river " + std::to_string(i), go);
    const std::string text = got[i]["choices"][0]["text"];
    ASSERT_GE(text.size(), want.size()) << i;
    EXPECT_EQ(text.substr(text.size() - want.size()), want) << i;
    if (i % 3 != 2) {
      EXPECT_EQ(text, want) << i;
    }
  }
}

// Bearer keys with roles: 401 without or with a wrong key, 403 for a role the key lacks (and for
// per-token detection detail without the admin role); the detection allowance per key; the
// metrics for the admin.
TEST(Server, ApiKeysRolesRateLimitAndMetrics) {
  const fs::path p = fs::temp_directory_path() / "epwa-api-keys-test.json";
  std::ofstream(p) << R"({"keys": [
      {"name": "gen", "key": "generate-key-0123456789", "roles": ["generate"]},
      {"name": "det", "key": "detect-key-0123456789", "roles": ["detect"]},
      {"name": "ops", "key": "admin-key-0123456789", "roles": ["admin"]},
      {"name": "audit", "key": "audit-key-0123456789", "roles": ["detect", "admin"]}]})";
  fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write);
  epwa::ServerOptions o;
  o.api_keys = epwa::ApiKeys::load(p);
  o.keyring = keyring();
  o.policy = epwa::WatermarkPolicy::OptIn;
  o.limits.detect_per_minute = 3;
  Running s(o);
  auto call = [&](const std::string& key, const char* method, const std::string& path,
                  const std::string& body = "") {
    auto c = s.client();
    if (!key.empty()) c.set_bearer_token_auth(key);
    auto res = std::string(method) == "GET" ? c.Get(path.c_str())
                                            : c.Post(path.c_str(), body, "application/json");
    EXPECT_TRUE(res);
    return res ? res->status : 0;
  };
  const std::string gen = R"({"prompt": "a", "max_tokens": 2})";
  const std::string det = R"({"text": "the river is long"})";
  EXPECT_EQ(call("", "POST", "/v1/completions", gen), 401);
  EXPECT_EQ(call("generate-key-012345678X", "POST", "/v1/completions", gen), 401);
  EXPECT_EQ(call("generate-key-0123456789", "POST", "/v1/completions", gen), 200);
  EXPECT_EQ(call("detect-key-0123456789", "POST", "/v1/completions", gen), 403);
  EXPECT_EQ(call("generate-key-0123456789", "POST", "/v1/watermark/detect", det), 403);
  const std::string detail = R"({"text": "the river is long", "tokens_detail": true})";
  EXPECT_EQ(call("detect-key-0123456789", "POST", "/v1/watermark/detect", detail), 403);
  EXPECT_EQ(call("audit-key-0123456789", "POST", "/v1/watermark/detect", detail), 200);
  EXPECT_EQ(call("", "GET", "/health"), 200);  // open: for load balancers
  EXPECT_EQ(call("", "GET", "/v1/models"), 401);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(call("detect-key-0123456789", "POST", "/v1/watermark/detect", det), 200) << i;
  EXPECT_EQ(call("detect-key-0123456789", "POST", "/v1/watermark/detect", det), 429);
  EXPECT_EQ(call("generate-key-0123456789", "GET", "/metrics"), 403);
  auto c = s.client();
  c.set_bearer_token_auth("admin-key-0123456789");
  auto m = c.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  EXPECT_NE(m->body.find(R"(epwa_http_answers_total{endpoint="/v1/completions",status="401"} 2)"),
            std::string::npos)
      << m->body;
  EXPECT_NE(m->body.find("epwa_detections_total 4"), std::string::npos);
  EXPECT_NE(m->body.find("epwa_generated_tokens_total 2"), std::string::npos);
  EXPECT_NE(m->body.find("epwa_completion_seconds_count 1"), std::string::npos);
  fs::remove(p);
}

TEST(ApiKeys, RefusesWeakDuplicateOrMalformedKeys) {
  const fs::path p = fs::temp_directory_path() / "epwa-api-keys-bad.json";
  for (const std::string bad :
       {R"({"keys": []})", R"({"keys": [{"name": "a", "key": "short", "roles": []}]})",
        R"({"keys": [{"name": "a", "key": "0123456789abcdef", "roles": ["root"]}]})",
        R"({"keys": [{"name": "a", "key": "0123456789abcdef", "roles": []},
                     {"name": "b", "key": "0123456789abcdef", "roles": []}]})",
        R"({"keys": [{"name": "a", "roles": []}]})", "nonsense"}) {
    std::ofstream(p) << bad;
    fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write);
    EXPECT_THROW(epwa::ApiKeys::load(p), epwa::Error) << bad;
    fs::remove(p);
  }
}

TEST(Keyring, RefusesWhatAnotherUserCouldReadOrWhatIsMalformed) {
  const fs::path p = fs::temp_directory_path() / "epwa-keyring-test.json";
  auto write = [&](const std::string& s, fs::perms mode) {
    std::ofstream(p) << s;
    fs::permissions(p, mode);
  };
  const auto owner = fs::perms::owner_read | fs::perms::owner_write;
  write(R"({"default": "a", "keys": {"a": "s1", "b": "s2"}})", owner);
  const auto k = epwa::Keyring::load(p);
  EXPECT_EQ(k.default_id, "a");
  EXPECT_EQ(k.keys.size(), 2u);
  write(R"({"keys": {"only": "s"}})", owner);
  EXPECT_EQ(epwa::Keyring::load(p).default_id, "only");
  for (const std::string bad :
       {"{", "[]", R"({"keys": {}})", R"({"keys": {"a": ""}})", R"({"keys": {"a": 5}})",
        R"({"keys": {"a": "s", "b": "t"}})", R"({"default": "z", "keys": {"a": "s"}})"}) {
    write(bad, owner);
    EXPECT_THROW(epwa::Keyring::load(p), epwa::Error) << bad;
  }
  write(R"({"keys": {"a": "s"}})", owner | fs::perms::group_read);
  try {
    epwa::Keyring::load(p);
    ADD_FAILURE() << "a group-readable keyring was accepted";
  } catch (const epwa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("chmod 600"), std::string::npos) << e.what();
  }
  fs::remove(p);
  EXPECT_THROW(epwa::Keyring::load(p), epwa::Error);
}

// Key rotation (KR-v1): each response is watermarked with the key the rotation picks from its seed
// and prompt (the library's generation with that key gives the same text), names no key, and is
// detected by trying every key; only an admin API key learns which key matched or picks one.
TEST(Server, RotatedKeysNameNoKeyAndAreDetectedWithTheKeyring) {
  epwa::ServerOptions o;
  o.api_keys = app_and_audit_keys("epwa-api-keys-rotation-test.json");
  o.keyring.keys = {{"a", "rot-secret-a"}, {"b", "rot-secret-b"}, {"c", "rot-secret-c"}};
  o.keyring.default_id = "a";
  o.rotate_keys = true;
  o.policy = epwa::WatermarkPolicy::Enforced;
  o.watermark.router_layer = -1;
  o.watermark.delta = 4;  // strong enough that a text ended early by EOS is still detected
  Running s(o);
  auto call = [&](const std::string& key, const std::string& path, const json& body, int* status) {
    return s.post(path, body.dump(), status, key);
  };
  const std::string rotation = epwa::keyring_rotation_secret(
      std::vector<std::string>{"rot-secret-a", "rot-secret-b", "rot-secret-c"});
  const auto prompt = bundle().tok->encode("The river", true, false);
  std::set<size_t> picked;
  int status = 0;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    const json r =
        call(kApp, "/v1/completions",
             {{"prompt", "The river"}, {"max_tokens", 120}, {"temperature", 0.7}, {"seed", seed}},
             &status);
    ASSERT_EQ(status, 200) << r.dump();
    const json& wm = r["watermark"];
    EXPECT_EQ(wm["applied"], true);
    EXPECT_FALSE(wm.contains("key_id")) << wm.dump();
    EXPECT_EQ(wm["rotation"]["scheme"], "KR-v1");
    EXPECT_EQ(wm["rotation"]["keys"], 3);
    const size_t k = epwa::keyring_pick(rotation, seed, prompt, 3);
    picked.insert(k);
    const std::string secret = std::string("rot-secret-") + static_cast<char>('a' + k);
    epwa::WatermarkConfig wc;
    wc.router_layer = -1;
    wc.delta = 4;
    epwa::Watermarker w(*bundle().model, secret, wc);
    const std::string text = r["choices"][0]["text"];
    EXPECT_EQ(text, library_text(w, 120, 0.7f, seed)) << "seed " << seed << ", key " << k;
    // A detecting client gets the verdict under the corrected threshold, not the key.
    const json body = {{"prompt", "The river"}, {"text", text}};
    const json d = call(kApp, "/v1/watermark/detect", body, &status);
    ASSERT_EQ(status, 200) << d.dump();
    EXPECT_EQ(d["detected"], true) << d.dump();
    EXPECT_FALSE(d.contains("key_id"));
    EXPECT_EQ(d["keyring"]["keys"], 3);
    EXPECT_FALSE(d["keyring"].contains("key_id"));
    EXPECT_FALSE(d["keyring"].contains("per_key"));
    EXPECT_GT(d["keyring"]["z_threshold"].get<double>(), 4.0);
    const json a = call(kAudit, "/v1/watermark/detect", body, &status);
    ASSERT_EQ(status, 200) << a.dump();
    EXPECT_EQ(a["key_id"], std::string(1, static_cast<char>('a' + k)));
    EXPECT_EQ(a["keyring"]["per_key"].size(), 3u);
    EXPECT_EQ(a["z"], d["z"]);
  }
  EXPECT_GE(picked.size(), 2u) << "four seeds met a single key";
  // Choosing a key: refused for generation, and for detection without the admin role.
  call(kApp, "/v1/completions", {{"prompt", "x"}, {"watermark", "b"}}, &status);
  EXPECT_EQ(status, 400);
  call(kApp, "/v1/watermark/detect", {{"text", "a b c"}, {"key_id", "b"}}, &status);
  EXPECT_EQ(status, 403);
  call(kAudit, "/v1/watermark/detect", {{"text", "a b c"}, {"key_id", "b"}}, &status);
  EXPECT_EQ(status, 200);
}

// Context buckets (CTX-v1): the server generates what the library generates with the same lists,
// records H, and detects with them; the text is not detected under GL-v1 lists of the same key.
TEST(Server, ContextBucketsGenerateAsTheLibraryAndDetect) {
  epwa::ServerOptions o;
  o.policy = epwa::WatermarkPolicy::Enforced;
  o.keyring = keyring();
  o.watermark.router_layer = -1;
  o.watermark.context_buckets = 64;
  Running s(o);
  const json r =
      s.post("/v1/completions",
             R"({"prompt": "The river", "max_tokens": 150, "temperature": 0.7, "seed": 2})");
  EXPECT_EQ(r["watermark"]["context_buckets"], 64);
  epwa::WatermarkConfig wc;
  wc.router_layer = -1;
  wc.context_buckets = 64;
  const auto lists = epwa::make_green_lists(*bundle().model, "server-test-secret-1", 0.5, 64);
  epwa::Watermarker w(*bundle().model, lists, wc);
  const std::string text = r["choices"][0]["text"];
  EXPECT_EQ(text, library_text(w, 150, 0.7f, 2));
  const json d =
      s.post("/v1/watermark/detect", json{{"prompt", "The river"}, {"text", text}}.dump());
  EXPECT_EQ(d["detected"], true) << d.dump();
  epwa::ServerOptions plain = o;
  plain.watermark.context_buckets = 0;
  Running gl(plain);
  const json g =
      gl.post("/v1/watermark/detect", json{{"prompt", "The river"}, {"text", text}}.dump());
  EXPECT_EQ(g["detected"], false) << g.dump();
}

// Verdict-only detection: a caller without the admin role gets the verdict, its p-value and reason
// (nothing per token, no z / g / n), and "not detected" below the minimum of scored tokens; an
// admin API key gets the whole result.
TEST(Server, VerdictOnlyDetectionForCallersWithoutAdmin) {
  epwa::ServerOptions o;
  o.api_keys = app_and_audit_keys("epwa-api-keys-verdict-test.json");
  o.keyring = keyring();
  o.policy = epwa::WatermarkPolicy::Enforced;
  o.watermark.router_layer = -1;
  o.watermark.delta = 4;
  o.limits.detect_verdict_only = true;
  o.limits.verdict_min_tokens = 60;
  Running s(o);
  auto call = [&](const std::string& key, const std::string& path, const json& body) {
    int status = 0;
    const json j = s.post(path, body.dump(), &status, key);
    EXPECT_EQ(status, 200) << j.dump();
    return j;
  };
  const json r =
      call(kApp, "/v1/completions", {{"prompt", "The river"}, {"max_tokens", 120}, {"seed", 3}});
  const std::string text = r["choices"][0]["text"];
  const json body = {{"prompt", "The river"}, {"text", text}};
  const json v = call(kApp, "/v1/watermark/detect", body);
  const json a = call(kAudit, "/v1/watermark/detect", body);
  ASSERT_GE(a["n"].get<int64_t>(), 60) << a.dump();
  EXPECT_EQ(v["detected"], true) << v.dump();
  EXPECT_EQ(v["detected"], a["detected"]);
  EXPECT_EQ(v["p_value"], a["p_value"]);
  EXPECT_EQ(v["reason"], a["reason"]);
  EXPECT_EQ(v["verdict_only"], true);
  for (const char* k : {"z", "g", "n", "green_fraction", "candidates", "tokens"})
    EXPECT_FALSE(v.contains(k)) << k << " in " << v.dump();
  // A short piece of the same text: the whole result for the admin, no verdict for the caller.
  const auto ids = bundle().tok->encode(text, false, false);
  const std::vector<int32_t> piece(ids.begin(), ids.begin() + 30);
  const json short_body = {{"prompt", "The river"}, {"tokens", piece}};
  const json sv = call(kApp, "/v1/watermark/detect", short_body);
  const json sa = call(kAudit, "/v1/watermark/detect", short_body);
  EXPECT_LT(sa["n"].get<int64_t>(), 60);
  EXPECT_EQ(sv["detected"], false);
  EXPECT_TRUE(sv["p_value"].is_null());
  EXPECT_EQ(sv["reason"], "fewer than 60 scored tokens");
}

// A chat with tools renders them with the template (Qwen2.5's, whose tool calls are Hermes-style)
// and generates what a completion of the rendered ids generates; a reply without the call
// marker is content, streamed or not, and finishes as the completion does. (The bundled model
// never writes a call: the parsing of calls is tested on each template's own rendering.)
TEST(Server, ChatWithToolsRendersThemAndKeepsAReplyWithoutCallsAsContent) {
  const fs::path tpl_file =
      fs::path(EPWA_TEST_DATA_DIR) / "chat_templates" / "qwen2.5-instruct.jinja";
  epwa::ServerOptions o;
  o.chat_template = read_file(tpl_file);
  Running s(o);
  const json messages = json::parse(R"([{"role": "user", "content": "Weather in Paris?"}])");
  const json tools = json::parse(R"([{"type": "function", "function": {"name": "get_weather",
      "description": "Weather of a city", "parameters": {"type": "object",
      "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])");
  const json body = {{"messages", messages},
                     {"tools", tools},
                     {"max_tokens", 24},
                     {"temperature", 0.7},
                     {"seed", 4}};
  int status = 0;
  const json r = s.post("/v1/chat/completions", body.dump(), &status);
  ASSERT_EQ(status, 200) << r.dump();
  auto& b = bundle();
  const auto ids = chat_ids(o.chat_template, messages, tools);
  ASSERT_NE(b.tok->decode(ids, false).find("get_weather"), std::string::npos);
  EXPECT_EQ(r["usage"]["prompt_tokens"], ids.size());
  const json plain =
      s.post("/v1/completions",
             json{{"prompt", ids}, {"max_tokens", 24}, {"temperature", 0.7}, {"seed", 4}}.dump());
  const std::string text = plain["choices"][0]["text"];
  ASSERT_EQ(text.find("<tool_call>"), std::string::npos);
  EXPECT_EQ(r["choices"][0]["message"]["content"], text);
  EXPECT_FALSE(r["choices"][0]["message"].contains("tool_calls"));
  EXPECT_EQ(r["choices"][0]["finish_reason"], plain["choices"][0]["finish_reason"]);
  const std::string joined =
      streamed_content(s, body, [](const json& d) { EXPECT_FALSE(d.contains("tool_calls")); });
  EXPECT_EQ(joined, text);
}

// tool_choice naming a function makes the reply open with its call as the template writes it
// (Qwen2.5's Hermes syntax), its arguments follow the function's schema and the template's closing
// ends it, whatever the model: a tool call with valid arguments. "required" with several tools
// leaves the name to the model; bad forms, an unknown function and a template without tool calls
// get 400.
TEST(Server, ToolChoiceOpensTheReplyWithACall) {
  epwa::ServerOptions o;
  o.chat_template =
      read_file(fs::path(EPWA_TEST_DATA_DIR) / "chat_templates" / "qwen2.5-instruct.jinja");
  Running s(o);
  const json messages = json::parse(R"([{"role": "user", "content": "Weather in Paris?"}])");
  const json tools = json::parse(R"([{"type": "function", "function": {"name": "get_weather",
      "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]},
      "days": {"type": "integer"}}, "required": ["city", "days"]}}}])");
  json body = {{"messages", messages},
               {"tools", tools},
               {"tool_choice", {{"type", "function"}, {"function", {{"name", "get_weather"}}}}},
               {"max_tokens", 200},
               {"temperature", 0.7}};
  auto& b = bundle();
  const epwa::ChatTemplate tpl(o.chat_template, epwa::special_token_strings(*b.tok));
  const std::string opening =
      epwa::tool_call_shape(tpl, epwa::ToolCallSyntax::Hermes).opening("get_weather");
  EXPECT_EQ(opening, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": ");
  EXPECT_EQ(epwa::tool_call_shape(tpl, epwa::ToolCallSyntax::Hermes).closing("x"),
            "}\n</tool_call>");
  const auto ids = chat_ids(o.chat_template, messages, tools);
  const auto opening_ids = b.tok->encode(opening, false, true);
  int status = 0;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    body["seed"] = seed;
    const json r = s.post("/v1/chat/completions", body.dump(), &status);
    ASSERT_EQ(status, 200) << r.dump();
    const json& m = r["choices"][0]["message"];
    ASSERT_TRUE(m.contains("tool_calls")) << r.dump();
    EXPECT_EQ(r["choices"][0]["finish_reason"], "tool_calls");
    EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
    const json args = json::parse(m["tool_calls"][0]["function"]["arguments"].get<std::string>());
    EXPECT_TRUE(args.at("city") == "Paris" || args.at("city") == "Rome") << args.dump();
    EXPECT_TRUE(args.at("days").is_number_integer()) << args.dump();
    EXPECT_EQ(args.size(), 2u);
    EXPECT_EQ(r["usage"]["prompt_tokens"], ids.size());
    EXPECT_GT(r["usage"]["completion_tokens"].get<size_t>(), opening_ids.size());
  }
  // With several tools "required" lets the model name one: the name is one of theirs and the
  // arguments follow that function's schema.
  json two = tools;
  two.push_back(json::parse(R"({"type": "function", "function": {"name": "get_time",
      "parameters": {"type": "object", "properties": {"zone": {"enum": ["CET", "UTC"]}}}}})"));
  body["tools"] = two;
  body["tool_choice"] = "required";
  std::set<std::string> named;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    body["seed"] = seed;
    const json any = s.post("/v1/chat/completions", body.dump(), &status);
    ASSERT_EQ(status, 200) << any.dump();
    const json& m = any["choices"][0]["message"];
    ASSERT_TRUE(m.contains("tool_calls")) << any.dump();
    const std::string name = m["tool_calls"][0]["function"]["name"];
    const json args = json::parse(m["tool_calls"][0]["function"]["arguments"].get<std::string>());
    named.insert(name);
    if (name == "get_time") {
      EXPECT_LE(args.size(), 1u) << args.dump();
      if (args.contains("zone")) {
        EXPECT_TRUE(args["zone"] == "CET" || args["zone"] == "UTC");
      }
    } else {
      EXPECT_EQ(name, "get_weather");
      EXPECT_TRUE(args.at("days").is_number_integer()) << args.dump();
    }
  }
  std::cout << "required: the model named " << named.size() << " distinct functions\n";
  body["max_tokens"] = 16;
  for (const json& bad : {json("always"), json(42), json{{"type", "function"}},
                          json{{"type", "function"}, {"function", {{"name", "get_date"}}}}}) {
    body["tool_choice"] = bad;
    const json e = s.post("/v1/chat/completions", body.dump(), &status);
    EXPECT_EQ(status, 400) << bad.dump();
    EXPECT_EQ(e["error"]["param"], "tool_choice") << e.dump();
  }
  body.erase("tools");
  body["tool_choice"] = "required";
  s.post("/v1/chat/completions", body.dump(), &status);
  EXPECT_EQ(status, 400);
  epwa::ServerOptions mixtral;  // a template that writes no tool calls
  mixtral.chat_template =
      read_file(fs::path(EPWA_TEST_DATA_DIR) / "chat_templates" / "mixtral-8x7b-instruct.jinja");
  Running ms(mixtral);
  body["tools"] = tools;
  body["tool_choice"] = {{"type", "function"}, {"function", {{"name", "get_weather"}}}};
  const json e = ms.post("/v1/chat/completions", body.dump(), &status);
  EXPECT_EQ(status, 400) << e.dump();
}

// response_format: JSON of the request's schema whatever the model (the bundled model writes
// Bible verses); a JSON object; malformed forms and schemas it cannot enforce get 400.
TEST(Server, ResponseFormatConstrainsTheReplyToTheSchema) {
  epwa::ServerOptions o;
  o.chat_template =
      read_file(fs::path(EPWA_TEST_DATA_DIR) / "chat_templates" / "qwen2.5-instruct.jinja");
  Running s(o);
  const json schema = json::parse(R"({"type": "object", "properties": {
      "answer": {"enum": ["yes", "no"]}, "count": {"type": "integer"},
      "sure": {"type": "boolean"}}, "required": ["answer", "count", "sure"]})");
  json body = {
      {"messages", json::parse(R"([{"role": "user", "content": "Is it so?"}])")},
      {"response_format",
       {{"type", "json_schema"}, {"json_schema", {{"name", "reply"}, {"schema", schema}}}}},
      {"max_tokens", 300},
      {"temperature", 1.0}};
  int status = 0;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    body["seed"] = seed;
    const json r = s.post("/v1/chat/completions", body.dump(), &status);
    ASSERT_EQ(status, 200) << r.dump();
    EXPECT_EQ(r["choices"][0]["finish_reason"], "stop") << r.dump();
    const json v = json::parse(r["choices"][0]["message"]["content"].get<std::string>());
    EXPECT_TRUE(v.at("answer") == "yes" || v.at("answer") == "no") << v.dump();
    EXPECT_TRUE(v.at("count").is_number_integer()) << v.dump();
    EXPECT_TRUE(v.at("sure").is_boolean()) << v.dump();
    EXPECT_EQ(v.size(), 3u);
  }
  // Streamed: the deltas add up to the same JSON.
  const std::string joined = streamed_content(s, body);
  const json last = s.post("/v1/chat/completions", body.dump(), &status);
  EXPECT_EQ(joined, last["choices"][0]["message"]["content"]);
  EXPECT_NO_THROW(json::parse(joined)) << joined;
  body["response_format"] = {{"type", "json_object"}};
  body["max_tokens"] = 16;  // at most 12 bytes of whitespace, then the object
  const json r = s.post("/v1/chat/completions", body.dump(), &status);
  ASSERT_EQ(status, 200) << r.dump();
  const std::string text = r["choices"][0]["message"]["content"];
  EXPECT_EQ(text.substr(text.find_first_not_of(" \n\r\t")).front(), '{') << text;
  // Completions take it too: the continuation of a plain prompt is the schema's JSON.
  json plain = {{"prompt", "The reply, as JSON:"},
                {"response_format",
                 {{"type", "json_schema"}, {"json_schema", {{"name", "r"}, {"schema", schema}}}}},
                {"max_tokens", 300},
                {"temperature", 1.0}};
  for (uint64_t seed = 1; seed <= 2; ++seed) {
    plain["seed"] = seed;
    const json c = s.post("/v1/completions", plain.dump(), &status);
    ASSERT_EQ(status, 200) << c.dump();
    EXPECT_EQ(c["choices"][0]["finish_reason"], "stop") << c.dump();
    const json v = json::parse(c["choices"][0]["text"].get<std::string>());
    EXPECT_TRUE(v.at("count").is_number_integer()) << v.dump();
    EXPECT_EQ(v.size(), 3u);
  }
  plain["response_format"] = {{"type", "xml"}};
  const json ce = s.post("/v1/completions", plain.dump(), &status);
  EXPECT_EQ(status, 400) << ce.dump();
  EXPECT_EQ(ce["error"]["param"], "response_format") << ce.dump();
  for (const json& bad :
       {json{{"type", "xml"}}, json{{"type", "json_schema"}}, json("json"),
        json{{"type", "json_schema"}, {"json_schema", {{"schema", schema}}}},
        json{{"type", "json_schema"},
             {"json_schema", {{"name", "x"}, {"schema", {{"allOf", json::array()}}}}}}}) {
    body["response_format"] = bad;
    const json e = s.post("/v1/chat/completions", body.dump(), &status);
    EXPECT_EQ(status, 400) << bad.dump();
    EXPECT_EQ(e["error"]["param"], "response_format") << e.dump();
  }
}

// min_tokens (vLLM's): a completion that sampling ends at once (EOS first: the bundled model,
// seed 2) runs to max_tokens; more than max_tokens, or with JSON output, is a 400.
TEST(Server, MinTokensHoldsTheEndBack) {
  Running s({});
  json body = {{"prompt", "The end."}, {"max_tokens", 20}, {"temperature", 1.0}, {"seed", 2}};
  int status = 0;
  const json a = s.post("/v1/completions", body.dump(), &status);
  ASSERT_EQ(status, 200) << a.dump();
  EXPECT_EQ(a["usage"]["completion_tokens"], 0) << a.dump();  // EOS is not counted
  EXPECT_EQ(a["choices"][0]["finish_reason"], "stop");
  body["min_tokens"] = 20;
  const json b = s.post("/v1/completions", body.dump(), &status);
  ASSERT_EQ(status, 200) << b.dump();
  EXPECT_EQ(b["usage"]["completion_tokens"], 20) << b.dump();
  EXPECT_EQ(b["choices"][0]["finish_reason"], "length");
  body["min_tokens"] = 21;
  json e = s.post("/v1/completions", body.dump(), &status);
  EXPECT_EQ(status, 400) << e.dump();
  EXPECT_EQ(e["error"]["param"], "min_tokens");
  body["min_tokens"] = 5;
  body["response_format"] = {{"type", "json_object"}};
  e = s.post("/v1/completions", body.dump(), &status);
  EXPECT_EQ(status, 400) << e.dump();
  EXPECT_EQ(e["error"]["param"], "min_tokens");
}

// The distortion-free mode behind the server: the library's exp generation, detected with the exp
// scheme; a greedy request is refused (there is no draw to key).
TEST(Server, ExpModeGeneratesAsTheLibraryAndDetects) {
  epwa::ServerOptions o;
  o.policy = epwa::WatermarkPolicy::Enforced;
  o.keyring = keyring();
  o.watermark.router_layer = -1;
  o.watermark.mode = epwa::WatermarkMode::Exp;
  Running s(o);
  const json r =
      s.post("/v1/completions",
             R"({"prompt": "The river", "max_tokens": 150, "temperature": 0.8, "seed": 6})");
  EXPECT_EQ(r["watermark"]["mode"], "exp");
  epwa::WatermarkConfig wc;
  wc.mode = epwa::WatermarkMode::Exp;
  wc.router_layer = -1;
  epwa::Watermarker w(*bundle().model, "server-test-secret-1", wc);
  const std::string text = r["choices"][0]["text"];
  EXPECT_EQ(text, library_text(w, 150, 0.8f, 6));
  const json d =
      s.post("/v1/watermark/detect", json{{"prompt", "The river"}, {"text", text}}.dump());
  EXPECT_EQ(d["scheme"], "exp") << d.dump();
  EXPECT_EQ(d["detected"], true) << d.dump();
  int status = 0;
  const json e = s.post("/v1/completions", R"({"prompt": "x", "temperature": 0})", &status);
  EXPECT_EQ(status, 400) << e.dump();
  EXPECT_EQ(e["error"]["param"], "temperature");
}

}  // namespace

// GPT-OSS's harmony template: replies split into channels (the bundled model's vocabulary spells
// harmony's markers as text, which the split reads the same way). A JSON reply is the final
// channel's message, a forced call a message to the function; a reply that never opens a message
// is shown as written; streams add up to the whole answers.
TEST(Server, HarmonyRepliesSplitIntoChannelsAndCalls) {
  epwa::ServerOptions o;
  o.chat_template = read_file(fs::path(EPWA_TEST_DATA_DIR) / "gpt_oss" / "chat_template.jinja");
  Running s(o);
  const json messages = json::parse(R"([{"role": "user", "content": "Weather in Paris?"}])");
  int status = 0;
  json body = {{"messages", messages}, {"max_tokens", 24}, {"temperature", 0.8}, {"seed", 3}};
  const json r = s.post("/v1/chat/completions", body.dump(), &status);
  ASSERT_EQ(status, 200) << r.dump();
  const json plain = s.post("/v1/completions", json{{"prompt", chat_ids(o.chat_template, messages)},
                                                    {"max_tokens", 24},
                                                    {"temperature", 0.8},
                                                    {"seed", 3}}
                                                   .dump());
  EXPECT_EQ(r["choices"][0]["message"]["content"], plain["choices"][0]["text"]);
  EXPECT_FALSE(r["choices"][0]["message"].contains("reasoning_content"));
  // Streamed, the reply that opens no message is held back to the end: it goes out once.
  int pieces = 0;
  const auto count = [&](const json& d) { pieces += d.value("content", "").empty() ? 0 : 1; };
  EXPECT_EQ(streamed_content(s, body, count), r["choices"][0]["message"]["content"]);
  EXPECT_EQ(pieces, 1);

  const json schema = json::parse(R"({"type": "object", "properties": {
      "answer": {"enum": ["sun", "rain"]}}, "required": ["answer"]})");
  body["max_tokens"] = 60;
  body["response_format"] = {{"type", "json_schema"},
                             {"json_schema", {{"name", "reply"}, {"schema", schema}}}};
  const json j = s.post("/v1/chat/completions", body.dump(), &status);
  ASSERT_EQ(status, 200) << j.dump();
  const json v = json::parse(j["choices"][0]["message"]["content"].get<std::string>());
  EXPECT_TRUE(v.at("answer") == "sun" || v.at("answer") == "rain") << v.dump();
  // The final channel's message streams as it is written.
  pieces = 0;
  EXPECT_EQ(streamed_content(s, body, count), j["choices"][0]["message"]["content"]);
  EXPECT_GT(pieces, 1);
  body.erase("response_format");

  body["tools"] = json::parse(R"([{"type": "function", "function": {"name": "get_weather",
      "description": "Current weather", "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}},
      "required": ["city"]}}}])");
  body["tool_choice"] = {{"type", "function"}, {"function", {{"name", "get_weather"}}}};
  const json c = s.post("/v1/chat/completions", body.dump(), &status);
  ASSERT_EQ(status, 200) << c.dump();
  EXPECT_EQ(c["choices"][0]["finish_reason"], "tool_calls") << c.dump();
  const json& m = c["choices"][0]["message"];
  ASSERT_TRUE(m.contains("tool_calls")) << c.dump();
  EXPECT_TRUE(m["content"].is_null()) << c.dump();
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  const json args = json::parse(m["tool_calls"][0]["function"]["arguments"].get<std::string>());
  EXPECT_TRUE(args.at("city") == "Paris" || args.at("city") == "Rome") << args.dump();
  json calls;
  const std::string streamed = streamed_content(s, body, [&](const json& d) {
    if (d.contains("tool_calls")) calls = d["tool_calls"];
  });
  EXPECT_EQ(streamed, "");
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0]["function"]["arguments"], m["tool_calls"][0]["function"]["arguments"]);

  // An earlier turn's reasoning_content, sent back, is what the template renders as "thinking".
  const json turns = json::parse(R"([{"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "reasoning_content": "Need the tool.", "tool_calls": [{"type":
       "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
      {"role": "tool", "content": "sunny"}])");
  json thinking = turns;
  thinking[1].erase("reasoning_content");
  const size_t without = chat_ids(o.chat_template, thinking, body["tools"]).size();
  thinking[1]["thinking"] = "Need the tool.";
  const size_t with = chat_ids(o.chat_template, thinking, body["tools"]).size();
  EXPECT_GT(with, without);
  const json t = s.post(
      "/v1/chat/completions",
      json{{"messages", turns}, {"tools", body["tools"]}, {"max_tokens", 1}}.dump(), &status);
  ASSERT_EQ(status, 200) << t.dump();
  EXPECT_EQ(t["usage"]["prompt_tokens"], with);
}
