// Chat templates: the Jinja template a model ships (tokenizer_config.json's chat_template, a
// chat_template.jinja file, or GGUF tokenizer.chat_template) rendered as transformers'
// apply_chat_template renders it (Jinja2 with trim_blocks, lstrip_blocks and loop controls; its
// tojson, raise_exception and strftime_now). docs/CHAT.md lists what the renderer covers.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace epwa {

class Tokenizer;
namespace jinja {
struct Template;
}

struct ChatInput {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();  // [{role, content, ...}]
  nlohmann::ordered_json tools;  // null: no tools (passed as None, as transformers does)
  bool add_generation_prompt = true;
  // More top-level variables (chat_template_kwargs, e.g. {"enable_thinking": false}).
  nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();
};

class ChatTemplate {
 public:
  // Parses the template; throws Error "chat template: line N: ..." on a syntax error or an
  // unknown filter or test. `special_tokens`: bos_token, eos_token, ... as the template sees them.
  ChatTemplate(std::string source, std::map<std::string, std::string> special_tokens = {});

  // Throws Error "chat template: ..." on a runtime error; a template's raise_exception(msg)
  // becomes Error "chat template refused the conversation: msg".
  std::string render(const ChatInput& in) const;

  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::map<std::string, std::string> special_;
  std::shared_ptr<const jinja::Template> tpl_;
};

// The template a model ships, nullopt when it has none: for a folder, chat_template.jinja, else
// tokenizer_config.json's "chat_template" (a string, or a list of {name, template}: "default");
// for a .gguf file, tokenizer.chat_template. Throws Error on an unreadable or malformed file.
std::optional<std::string> find_chat_template(const std::filesystem::path& model);

// bos_token, eos_token and unk_token as text, for the tokens the tokenizer has.
std::map<std::string, std::string> special_token_strings(const Tokenizer& tok);

// What the template writes right after an assistant message's content, to the end of its rendering
// of a probe conversation (user "Hi", then the assistant; beside `tools` when given, as some
// templates render turns only so). nullopt when it refuses the probe.
std::optional<std::string> text_after_assistant_turn(
    const ChatTemplate& tpl, const nlohmann::ordered_json& tools = nlohmann::ordered_json());

// The tokens that end an assistant turn in this template: the special token the template writes
// right after an assistant message's content (Qwen's <|im_end|>, Mixtral's </s>), found by
// rendering a probe conversation. Empty when it writes none there or refuses the probe. A harmony
// template's turn also ends with a call to a tool (<|call|>), where the caller must answer.
std::vector<int32_t> end_of_turn_tokens(const ChatTemplate& tpl, const Tokenizer& tok);

// Checks OpenAI-style chat messages and brings them to the form templates expect: an array of
// objects with a string role; content a string, null, or an array of text parts (joined into one
// string; other part types are refused). Other fields (name, tool_calls, reasoning_content, ...)
// pass through. Throws Error naming the first bad message.
nlohmann::ordered_json normalize_chat_messages(const nlohmann::ordered_json& messages);

}  // namespace epwa
