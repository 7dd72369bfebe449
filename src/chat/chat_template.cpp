#include "epwa/chat_template.hpp"

#include <fstream>
#include <sstream>

#include "chat/ast.hpp"
#include "chat/builtins.hpp"
#include "chat/render.hpp"
#include "epwa/error.hpp"
#include "epwa/gguf.hpp"
#include "epwa/platform.hpp"
#include "epwa/tokenizer.hpp"
#include "epwa/tool_calls.hpp"
#include "tokenizer/utf8.hpp"

namespace epwa {

ChatTemplate::ChatTemplate(std::string source, std::map<std::string, std::string> special_tokens)
    : source_(std::move(source)), special_(std::move(special_tokens)) {
  check(tok::utf8_valid(source_), "chat template: the template is not valid UTF-8");
  try {
    tpl_ = jinja::parse(source_);
  } catch (const Error& e) {
    throw Error(std::string("chat template: ") + e.what());
  }
}

std::string ChatTemplate::render(const ChatInput& in) const {
  jinja::Dict ctx;
  ctx.emplace_back("messages", jinja::from_json(in.messages));
  ctx.emplace_back("tools", jinja::from_json(in.tools));
  ctx.emplace_back("documents", jinja::Value::none());
  ctx.emplace_back("add_generation_prompt", jinja::Value::boolean(in.add_generation_prompt));
  for (const auto& [k, v] : special_) ctx.emplace_back(k, jinja::Value::string(v));
  if (!in.kwargs.is_null()) {
    check(in.kwargs.is_object(), "chat template: extra variables must be a JSON object");
    for (const auto& [k, v] : in.kwargs.items()) ctx.emplace_back(k, jinja::from_json(v));
  }
  try {
    return jinja::render(*tpl_, ctx);
  } catch (const jinja::TemplateRaised& e) {
    throw Error(std::string("chat template refused the conversation: ") + e.what());
  } catch (const Error& e) {
    throw Error(std::string("chat template: ") + e.what());
  }
}

namespace {

std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  check(bool(f), "cannot read " + path_to_utf8(p));
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

std::optional<std::string> find_chat_template(const std::filesystem::path& model) {
  if (std::filesystem::is_regular_file(model)) {
    GgufFile g(model);
    if (g.find("tokenizer.chat_template")) return g.get_string("tokenizer.chat_template");
    return std::nullopt;
  }
  const auto jinja_file = model / "chat_template.jinja";
  if (std::filesystem::is_regular_file(jinja_file)) return read_text(jinja_file);
  const auto cfg_file = model / "tokenizer_config.json";
  if (!std::filesystem::is_regular_file(cfg_file)) return std::nullopt;
  nlohmann::json cfg;
  try {
    cfg = nlohmann::json::parse(read_text(cfg_file));
  } catch (const nlohmann::json::exception& e) {
    throw Error(path_to_utf8(cfg_file) + ": not valid JSON (" + e.what() + ")");
  }
  const auto it = cfg.find("chat_template");
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    for (const auto& t : *it)
      if (t.is_object() && t.value("name", "") == "default" && t.contains("template") &&
          t["template"].is_string())
        return t["template"].get<std::string>();
    return std::nullopt;
  }
  throw Error(path_to_utf8(cfg_file) +
              ": chat_template is neither a string nor a list of templates");
}

std::map<std::string, std::string> special_token_strings(const Tokenizer& tok) {
  std::map<std::string, std::string> out;
  auto add = [&](const char* name, int32_t id) {
    if (id >= 0 && id < tok.vocab_size()) out[name] = tok.token_to_piece(id);
  };
  add("bos_token", tok.bos_id());
  add("eos_token", tok.eos_id());
  add("unk_token", tok.unk_id());
  return out;
}

std::optional<std::string> text_after_assistant_turn(const ChatTemplate& tpl,
                                                     const nlohmann::ordered_json& tools) {
  static const std::string kProbe = "EPWA_END_OF_TURN_PROBE";
  ChatInput in;
  in.messages = nlohmann::ordered_json::parse(
      R"([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ")" + kProbe +
      R"("}])");
  if (!tools.is_null()) in.tools = tools;
  in.add_generation_prompt = false;
  std::string text;
  try {
    text = tpl.render(in);
  } catch (const Error&) {
    return std::nullopt;
  }
  const size_t at = text.rfind(kProbe);
  if (at == std::string::npos) return std::nullopt;
  return text.substr(at + kProbe.size());
}

std::vector<int32_t> end_of_turn_tokens(const ChatTemplate& tpl, const Tokenizer& tok) {
  const auto after = text_after_assistant_turn(tpl);
  if (!after) return {};
  const auto ids = tok.encode(*after, false, true);
  if (ids.empty() || !tok.is_special(ids[0])) return {};
  std::vector<int32_t> out = {ids[0]};
  if (const auto call = tok.encode("<|call|>", false, true);
      tool_call_syntax(tpl) == ToolCallSyntax::Harmony && call.size() == 1 &&
      tok.is_special(call[0]))
    out.push_back(call[0]);
  return out;
}

nlohmann::ordered_json normalize_chat_messages(const nlohmann::ordered_json& messages) {
  check(messages.is_array(), "messages must be an array");
  check(!messages.empty(), "messages must not be empty");
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (size_t k = 0; k < messages.size(); ++k) {
    const auto& m = messages[k];
    const std::string where = "messages[" + std::to_string(k) + "]";
    check(m.is_object(), where + " must be an object");
    check(m.contains("role") && m["role"].is_string(), where + ".role must be a string");
    nlohmann::ordered_json msg = m;
    if (m.contains("content")) {
      const auto& c = m["content"];
      if (c.is_array()) {
        std::string text;
        for (size_t p = 0; p < c.size(); ++p) {
          const auto& part = c[p];
          const std::string pw = where + ".content[" + std::to_string(p) + "]";
          check(part.is_object() && part.value("type", "") == "text" && part.contains("text") &&
                    part["text"].is_string(),
                pw + " must be a text part ({\"type\": \"text\", \"text\": ...}); other parts are "
                     "not supported");
          text += part["text"].get<std::string>();
        }
        msg["content"] = text;
      } else {
        check(c.is_string() || c.is_null(),
              where + ".content must be a string, null or an array of text parts");
      }
    }
    out.push_back(std::move(msg));
  }
  return out;
}

}  // namespace epwa
