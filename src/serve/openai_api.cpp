// Request parsing for the server (openai_api.hpp): every field's type and range checked, with
// OpenAI's error shapes; unknown fields are refused as OpenAI refuses them.
#include "openai_api.hpp"

#include <random>
#include <set>

#include "epwa/tool_calls.hpp"

namespace epwa::serve {

ApiError bad_request(const std::string& message, const std::string& param) {
  return ApiError(400, "invalid_request_error", message, param);
}

nlohmann::json error_json(const ApiError& e) {
  return {{"error",
           {{"message", e.what()},
            {"type", e.type},
            {"param", e.param.empty() ? nlohmann::json() : nlohmann::json(e.param)},
            {"code", nullptr}}}};
}

nlohmann::json parse_body(const std::string& body) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(body);
  } catch (const nlohmann::json::parse_error& e) {
    // The library's message names a byte offset; ours says what is wrong in words.
    throw bad_request(std::string("the body is not valid JSON") +
                      (e.id == 101 && std::string(e.what()).find("UTF-8") != std::string::npos
                           ? " (invalid UTF-8)"
                           : "") +
                      " at byte " + std::to_string(e.byte));
  }
  if (!j.is_object()) throw bad_request("the body must be a JSON object");
  return j;
}

namespace {

void refuse_unknown(const nlohmann::json& j, const std::set<std::string>& known) {
  for (const auto& [k, v] : j.items())
    if (!known.count(k)) throw bad_request("unrecognized request argument supplied: " + k, k);
}

int64_t integer(const nlohmann::json& v, const std::string& name, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) throw bad_request("'" + name + "' must be an integer", name);
  const int64_t x =
      v.is_number_unsigned() && v.get<uint64_t>() > INT64_MAX ? INT64_MAX : v.get<int64_t>();
  if (x < lo || x > hi)
    throw bad_request("'" + name + "' must be in [" + std::to_string(lo) + ", " +
                          std::to_string(hi) + "], got " + v.dump(),
                      name);
  return x;
}

double number(const nlohmann::json& v, const std::string& name, double lo, double hi,
              bool lo_open = false) {
  if (!v.is_number()) throw bad_request("'" + name + "' must be a number", name);
  const double x = v.get<double>();
  if (!(lo_open ? x > lo : x >= lo) || !(x <= hi))
    throw bad_request("'" + name + "' must be in " + std::string(lo_open ? "(" : "[") +
                          nlohmann::json(lo).dump() + ", " + nlohmann::json(hi).dump() + "], got " +
                          v.dump(),
                      name);
  return x;
}

// Text (tokenized, with BOS when `bos`) or an array of token ids.
std::vector<int32_t> tokens_of(const nlohmann::json& v, const std::string& name,
                               const Tokenizer* tok, int32_t vocab, bool bos) {
  if (v.is_string()) {
    if (!tok)
      throw bad_request("the server's model has no tokenizer: send '" + name + "' as token ids",
                        name);
    return tok->encode(v.get<std::string>(), bos, false);
  }
  if (!v.is_array()) throw bad_request("'" + name + "' must be a string or token ids", name);
  std::vector<int32_t> ids;
  ids.reserve(v.size());
  for (const auto& x : v) {
    if (!x.is_number_integer())
      throw bad_request("'" + name + "' holds " + x.dump() + ", not an integer token id", name);
    const int64_t id =
        x.is_number_unsigned() && x.get<uint64_t>() > INT64_MAX ? -1 : x.get<int64_t>();
    if (id < 0 || id >= vocab)
      throw bad_request("token id " + x.dump() + " out of range [0, " + std::to_string(vocab) + ")",
                        name);
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

}  // namespace

namespace {

// The sampling, length, stop, stream and watermark fields both completion endpoints take.
void parse_generation_fields(const nlohmann::json& j, CompletionParams& p, int32_t vocab,
                             const ServerLimits& limits) {
  p.max_tokens = limits.default_max_tokens;
  for (const char* name : {"max_tokens", "max_completion_tokens"})
    if (j.contains(name) && !j[name].is_null())
      p.max_tokens = static_cast<int32_t>(integer(j[name], name, 0, limits.max_tokens));
  if (j.contains("min_tokens") && !j["min_tokens"].is_null())
    p.min_tokens = static_cast<int32_t>(integer(j["min_tokens"], "min_tokens", 0, p.max_tokens));
  p.sampling.temperature = 1.0f;  // OpenAI's default
  if (j.contains("temperature") && !j["temperature"].is_null())
    p.sampling.temperature = static_cast<float>(number(j["temperature"], "temperature", 0, 2));
  if (j.contains("top_p") && !j["top_p"].is_null())
    p.sampling.top_p = static_cast<float>(number(j["top_p"], "top_p", 0, 1, true));
  if (j.contains("top_k") && !j["top_k"].is_null())
    p.sampling.top_k = static_cast<int32_t>(integer(j["top_k"], "top_k", 0, vocab));
  // Without a seed every request samples differently (as OpenAI's do); with one, repeatably.
  if (j.contains("seed") && !j["seed"].is_null())
    p.sampling.seed = static_cast<uint64_t>(integer(j["seed"], "seed", INT64_MIN, INT64_MAX));
  else
    p.sampling.seed =
        (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  if (j.contains("n") && !j["n"].is_null())
    p.n = static_cast<int32_t>(integer(j["n"], "n", 1, kMaxChoices));
  for (const char* pen : {"frequency_penalty", "presence_penalty"})
    if (j.contains(pen) && !j[pen].is_null() && number(j[pen], pen, -2, 2) != 0)
      throw bad_request(std::string("'") + pen + "' other than 0 is not supported", pen);
  if (j.contains("stop") && !j["stop"].is_null()) {
    const auto& s = j["stop"];
    if (s.is_string()) {
      p.stop.push_back(s.get<std::string>());
    } else if (s.is_array() && s.size() <= 4) {
      for (const auto& x : s) {
        if (!x.is_string()) throw bad_request("'stop' must hold strings", "stop");
        p.stop.push_back(x.get<std::string>());
      }
    } else {
      throw bad_request("'stop' must be a string or up to 4 strings", "stop");
    }
    for (const auto& x : p.stop)
      if (x.empty()) throw bad_request("'stop' strings must not be empty", "stop");
  }
  if (j.contains("stream") && !j["stream"].is_null()) {
    if (!j["stream"].is_boolean()) throw bad_request("'stream' must be true or false", "stream");
    p.stream = j["stream"].get<bool>();
  }
  if (j.contains("watermark") && !j["watermark"].is_null()) {
    const auto& w = j["watermark"];
    if (w.is_boolean()) {
      p.watermark = w.get<bool>();
    } else if (w.is_string()) {
      p.watermark = true;
      p.key_id = w.get<std::string>();
    } else {
      throw bad_request("'watermark' must be true, false or a key id", "watermark");
    }
  }
}

// response_format: {"type": "text"} (or absent): free text; {"type": "json_object"}: a JSON
// object; {"type": "json_schema", "json_schema": {"name", "schema", "strict", "description"}}:
// JSON of the schema (an absent schema: any JSON value).
std::shared_ptr<const JsonSchema> response_schema(const nlohmann::json& j) {
  if (!j.contains("response_format") || j["response_format"].is_null()) return nullptr;
  const auto& rf = j["response_format"];
  constexpr const char* kForms =
      "'response_format' must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or "
      "{\"type\": \"json_schema\", \"json_schema\": {\"name\": ..., \"schema\": {...}}}";
  if (!rf.is_object() || !rf.contains("type") || !rf["type"].is_string())
    throw bad_request(kForms, "response_format");
  const std::string type = rf["type"].get<std::string>();
  try {
    if (type == "text") {
      if (rf.size() != 1) throw bad_request(kForms, "response_format");
      return nullptr;
    }
    if (type == "json_object") {
      if (rf.size() != 1) throw bad_request(kForms, "response_format");
      return std::make_shared<const JsonSchema>(nlohmann::json{{"type", "object"}});
    }
    if (type != "json_schema" || rf.size() != 2 || !rf.contains("json_schema") ||
        !rf["json_schema"].is_object())
      throw bad_request(kForms, "response_format");
    const auto& js = rf["json_schema"];
    for (const auto& [k, v] : js.items())
      if (k != "name" && k != "schema" && k != "strict" && k != "description")
        throw bad_request("'response_format.json_schema' has an unknown field '" + k + "'",
                          "response_format");
    if (!js.contains("name") || !js["name"].is_string())
      throw bad_request("'response_format.json_schema.name' is required (a string)",
                        "response_format");
    if (js.contains("strict") && !js["strict"].is_boolean())
      throw bad_request("'response_format.json_schema.strict' must be true or false",
                        "response_format");
    return std::make_shared<const JsonSchema>(js.value("schema", nlohmann::json::object()));
  } catch (const ApiError&) {
    throw;
  } catch (const Error& e) {
    throw bad_request(std::string("'response_format': ") + e.what(), "response_format");
  }
}
}  // namespace

CompletionParams parse_completion(const nlohmann::json& j, const Tokenizer* tok, int32_t vocab,
                                  const ServerLimits& limits) {
  refuse_unknown(j, {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed",
                     "stop", "stream", "n", "user", "watermark", "frequency_penalty",
                     "presence_penalty", "logprobs", "echo", "response_format", "min_tokens"});
  CompletionParams p;
  if (!j.contains("prompt")) throw bad_request("'prompt' is required", "prompt");
  p.prompt = tokens_of(j["prompt"], "prompt", tok, vocab, true);
  if (p.prompt.empty()) throw bad_request("'prompt' is empty", "prompt");
  parse_generation_fields(j, p, vocab, limits);
  if (j.contains("logprobs") && !j["logprobs"].is_null())
    p.logprobs = static_cast<int32_t>(integer(j["logprobs"], "logprobs", 0, kMaxLogprobs));
  if (j.contains("echo") && !j["echo"].is_null()) {
    if (!j["echo"].is_boolean()) throw bad_request("'echo' must be true or false", "echo");
    p.echo = j["echo"].get<bool>();
  }
  if (!tok && (p.echo || p.logprobs >= 0))
    throw bad_request("'echo' and 'logprobs' need the model's tokenizer", "logprobs");
  p.response_schema = response_schema(j);
  if (!tok && p.response_schema)
    throw bad_request("'response_format' needs the model's tokenizer", "response_format");
  return p;
}

CompletionParams parse_chat_completion(const nlohmann::json& j, const std::string& body,
                                       const ChatTemplate* chat, ToolCallSyntax syntax,
                                       const Tokenizer* tok, int32_t vocab,
                                       const ServerLimits& limits) {
  refuse_unknown(j, {"model",
                     "messages",
                     "max_tokens",
                     "max_completion_tokens",
                     "min_tokens",
                     "temperature",
                     "top_p",
                     "top_k",
                     "seed",
                     "stop",
                     "stream",
                     "stream_options",
                     "n",
                     "user",
                     "watermark",
                     "frequency_penalty",
                     "presence_penalty",
                     "tools",
                     "tool_choice",
                     "chat_template_kwargs",
                     "logprobs",
                     "top_logprobs",
                     "response_format"});
  if (!chat || !tok)
    throw bad_request(
        "this server has no chat template: start it with --chat-template FILE "
        "(the model ships none)");
  if (!j.contains("messages")) throw bad_request("'messages' is required", "messages");
  // What the template sees keeps the request's key order (a tool schema's tojson writes it as
  // sent, as transformers does with Python dicts): read again as an ordered object.
  const auto ordered = nlohmann::ordered_json::parse(body);
  ChatInput in;
  try {
    in.messages = normalize_chat_messages(ordered["messages"]);
  } catch (const ApiError&) {
    throw;
  } catch (const Error& e) {
    throw bad_request(e.what(), "messages");
  }
  // A harmony template reads an earlier turn's analysis from "thinking"; this server answers it
  // as "reasoning_content", which a client sends back.
  if (syntax == ToolCallSyntax::Harmony)
    for (auto& m : in.messages)
      if (m.contains("reasoning_content") && !m.contains("thinking"))
        m["thinking"] = m["reasoning_content"];
  bool tools = false;
  if (j.contains("tools") && !j["tools"].is_null()) {
    if (!j["tools"].is_array()) throw bad_request("'tools' must be an array", "tools");
    in.tools = ordered["tools"];
    tools = !in.tools.empty();
  }
  // tool_choice: "auto" (the default), "none", "required" or {"type": "function", "function":
  // {"name": N}} naming one of the tools.
  constexpr const char* kToolChoiceForms =
      "'tool_choice' must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", "
      "\"function\": {\"name\": ...}}";
  const nlohmann::json choice = j.value("tool_choice", nlohmann::json());
  bool tool_required = false;
  std::string tool_name;
  if (choice.is_object()) {
    const auto fn = choice.value("function", nlohmann::json());
    if (choice.value("type", nlohmann::json()) != "function" || !fn.is_object() ||
        !fn.contains("name") || !fn["name"].is_string())
      throw bad_request(kToolChoiceForms, "tool_choice");
    tool_name = fn["name"].get<std::string>();
    bool known = false;
    for (const auto& t : in.tools)
      known = known || (t.contains("function") && t["function"].is_object() &&
                        t["function"].value("name", nlohmann::ordered_json()) == tool_name);
    if (!known)
      throw bad_request("'tool_choice' names '" + tool_name + "', which is not among 'tools'",
                        "tool_choice");
  } else if (choice == "required") {
    if (!tools) throw bad_request("'tool_choice' \"required\" needs 'tools'", "tool_choice");
    tool_required = true;
  } else if (!choice.is_null() && choice != "auto" && choice != "none") {
    throw bad_request(kToolChoiceForms, "tool_choice");
  }
  if (j.contains("chat_template_kwargs") && !j["chat_template_kwargs"].is_null()) {
    if (!j["chat_template_kwargs"].is_object())
      throw bad_request("'chat_template_kwargs' must be an object", "chat_template_kwargs");
    in.kwargs = ordered["chat_template_kwargs"];
  }
  bool want_logprobs = false;
  if (j.contains("logprobs") && !j["logprobs"].is_null()) {
    if (!j["logprobs"].is_boolean())
      throw bad_request("'logprobs' must be true or false", "logprobs");
    want_logprobs = j["logprobs"].get<bool>();
  }
  int32_t top = 0;
  if (j.contains("top_logprobs") && !j["top_logprobs"].is_null()) {
    top = static_cast<int32_t>(integer(j["top_logprobs"], "top_logprobs", 0, kMaxLogprobs));
    if (!want_logprobs) throw bad_request("'top_logprobs' needs 'logprobs': true", "top_logprobs");
  }
  if (j.contains("stream_options") && !j["stream_options"].is_null()) {
    const auto& so = j["stream_options"];
    if (!so.is_object()) throw bad_request("'stream_options' must be an object", "stream_options");
    for (const auto& [k, v] : so.items()) {
      if (k != "include_usage" || !v.is_boolean())
        throw bad_request("'stream_options' takes only include_usage (true or false)",
                          "stream_options");
    }
  }
  CompletionParams p;
  std::string text;
  try {
    text = chat->render(in);
  } catch (const Error& e) {
    throw bad_request(e.what(), "messages");
  }
  // The template writes the special tokens (BOS included) as text: parse them, add none.
  p.prompt = tok->encode(text, false, true);
  if (p.prompt.empty()) throw bad_request("the chat template rendered an empty prompt", "messages");
  parse_generation_fields(j, p, vocab, limits);
  if (want_logprobs) p.logprobs = top;
  p.tools = tools && choice != "none";
  p.tool_required = tool_required;
  p.tool_name = tool_name;
  if (tool_required && in.tools.size() == 1) {  // the only tool: as if named
    const auto& only = in.tools[0];
    if (only.contains("function") && only["function"].is_object() &&
        only["function"].value("name", nlohmann::ordered_json()).is_string()) {
      p.tool_name = only["function"]["name"].get<std::string>();
      p.tool_required = false;
    }
  }
  if (!p.tool_name.empty() || p.tool_required) {
    for (const auto& t : j["tools"]) {
      if (!t.contains("function") || !t["function"].is_object() ||
          !t["function"].value("name", nlohmann::json()).is_string())
        continue;
      const std::string name = t["function"]["name"].get<std::string>();
      if (!p.tool_name.empty() && name != p.tool_name) continue;
      const auto params = t["function"].value("parameters", nlohmann::json{{"type", "object"}});
      try {
        p.tool_schemas.emplace_back(name, std::make_shared<const JsonSchema>(params));
      } catch (const Error& e) {
        throw bad_request(std::string("'tools': function '") + name + "': " + e.what(), "tools");
      }
    }
  }
  p.response_schema = response_schema(j);
  if (p.response_schema && (!p.tool_name.empty() || p.tool_required))
    throw bad_request(
        "'response_format' JSON and a 'tool_choice' that forces a call exclude each other",
        "response_format");
  return p;
}

namespace {

// One text to score: "text" or "tokens", optional "prompt"; `where` prefixes field names in errors.
DetectParams detect_input(const nlohmann::json& j, const std::string& where, const Tokenizer* tok,
                          int32_t vocab, int32_t bos, const ServerLimits& limits) {
  DetectParams d;
  const bool text = j.contains("text"), ids = j.contains("tokens");
  if (text == ids) throw bad_request(where + "give exactly one of 'text' and 'tokens'");
  std::vector<int32_t> context{bos};
  if (j.contains("prompt") && !j["prompt"].is_null())
    context = tokens_of(j["prompt"], where + "prompt", tok, vocab, true);
  std::vector<int32_t> body = text ? tokens_of(j["text"], where + "text", tok, vocab, false)
                                   : tokens_of(j["tokens"], where + "tokens", tok, vocab, false);
  d.prompt_tokens = static_cast<int64_t>(context.size());
  d.tokens = std::move(context);
  d.tokens.insert(d.tokens.end(), body.begin(), body.end());
  if (static_cast<int64_t>(d.tokens.size()) > limits.max_detect_tokens)
    throw bad_request(where + "the text has " + std::to_string(d.tokens.size()) +
                      " tokens with its context; at most " +
                      std::to_string(limits.max_detect_tokens) + " are scored per text");
  return d;
}

}  // namespace

std::vector<DetectParams> parse_detect(const nlohmann::json& j, const Tokenizer* tok, int32_t vocab,
                                       int32_t bos, const ServerLimits& limits) {
  const bool batch = j.contains("inputs");
  if (batch)
    refuse_unknown(j, {"model", "inputs", "key_id", "method", "tokens_detail"});
  else
    refuse_unknown(j, {"model", "text", "tokens", "prompt", "key_id", "method", "tokens_detail"});
  DetectParams shared;
  if (j.contains("key_id")) {
    if (!j["key_id"].is_string()) throw bad_request("'key_id' must be a string", "key_id");
    shared.key_id = j["key_id"].get<std::string>();
  }
  if (j.contains("method")) {
    const auto& m = j["method"];
    if (m == "full")
      shared.method = DetectMethod::Full;
    else if (m == "weighted")
      shared.method = DetectMethod::Weighted;
    else
      throw bad_request("'method' must be \"full\" or \"weighted\"", "method");
  }
  if (j.contains("tokens_detail")) {
    if (!j["tokens_detail"].is_boolean())
      throw bad_request("'tokens_detail' must be true or false", "tokens_detail");
    shared.tokens_detail = j["tokens_detail"].get<bool>();
  }
  std::vector<DetectParams> out;
  auto add = [&](DetectParams d) {
    d.key_id = shared.key_id;
    d.method = shared.method;
    d.tokens_detail = shared.tokens_detail;
    out.push_back(std::move(d));
  };
  if (!batch) {
    add(detect_input(j, "", tok, vocab, bos, limits));
    return out;
  }
  const auto& in = j["inputs"];
  if (!in.is_array() || in.empty() || static_cast<int64_t>(in.size()) > limits.max_detect_batch)
    throw bad_request(
        "'inputs' must be an array of 1 to " + std::to_string(limits.max_detect_batch) + " texts",
        "inputs");
  for (size_t k = 0; k < in.size(); ++k) {
    const std::string where = "inputs[" + std::to_string(k) + "].";
    if (!in[k].is_object())
      throw bad_request("'inputs[" + std::to_string(k) + "]' must be an object", "inputs");
    for (const auto& [key, v] : in[k].items())
      if (key != "text" && key != "tokens" && key != "prompt" && key != "id")
        throw bad_request("unrecognized field " + where + key, "inputs");
    DetectParams d = detect_input(in[k], where, tok, vocab, bos, limits);
    if (in[k].contains("id")) d.id = in[k]["id"];
    add(std::move(d));
  }
  return out;
}

size_t complete_utf8_prefix(const std::string& s) {
  // Walk back over at most 3 continuation bytes to the last lead byte.
  size_t i = s.size();
  int cont = 0;
  while (i > 0 && cont < 4 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) --i, ++cont;
  if (i == 0) return cont ? 0 : s.size();
  const auto lead = static_cast<unsigned char>(s[i - 1]);
  const int need = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
  return need > cont ? i - 1 : s.size();
}

}  // namespace epwa::serve
