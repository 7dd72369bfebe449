#include "epwa/harmony.hpp"

#include <nlohmann/json.hpp>

#include "epwa/text.hpp"

namespace epwa {
namespace {

constexpr std::string_view kStart = "<|start|>", kChannel = "<|channel|>", kMessage = "<|message|>",
                           kEnd = "<|end|>", kReturn = "<|return|>", kCall = "<|call|>";
constexpr size_t npos = std::string_view::npos;

// A header's value after `key`, up to a space or a marker: "final" after "<|channel|>".
std::string_view field(std::string_view header, std::string_view key) {
  const size_t at = header.find(key);
  if (at == npos) return {};
  const std::string_view v = header.substr(at + key.size());
  return v.substr(0, v.find_first_of(" <\n"));
}

// Appends one message's body to a channel's text, the messages joined by "\n".
void append(std::string& out, bool& any, std::string_view body) {
  if (any) out += '\n';
  out += body;
  any = true;
}

}  // namespace

const std::vector<std::string>& harmony_markers() {
  static const std::vector<std::string> m = {
      std::string(kStart),  std::string(kChannel), std::string(kMessage),       std::string(kEnd),
      std::string(kReturn), std::string(kCall),    std::string("<|constrain|>")};
  return m;
}

AssistantReply parse_harmony(std::string_view text, bool done, bool calls) {
  AssistantReply r;
  bool any_reasoning = false, any_content = false, any_body = false;
  std::string unparsed;  // a call's body that is not JSON: text after the rest
  size_t at = 0;
  while (at < text.size()) {
    const size_t body = text.find(kMessage, at);
    if (body == npos) break;  // a header not finished: nothing of it is shown
    const std::string_view header = text.substr(at, body - at);
    const size_t from = body + kMessage.size();
    size_t end = text.size();
    std::string_view ender;
    for (const std::string_view m : {kEnd, kReturn, kCall})
      if (const size_t e = text.find(m, from); e < end) end = e, ender = m;
    const std::string_view b = text.substr(from, end - from);
    any_body = true;
    const std::string_view channel = field(header, kChannel);
    std::string_view to = field(header, "to=");
    if (channel == "analysis") {
      append(r.reasoning, any_reasoning, b);
    } else if (to.empty() || !calls) {
      append(r.content, any_content, b);
    } else if (done) {  // a call is known whole only at the end
      if (to.starts_with("functions.")) to.remove_prefix(10);
      const std::string_view args = trim_space(b);
      if (!to.empty() && nlohmann::json::accept(args))
        r.calls.push_back({std::string(to), std::string(args)});
      else
        unparsed += b;
    }
    if (ender != kEnd) break;  // <|return|>, <|call|> or the end of the text
    at = end + kEnd.size();
    if (text.substr(at).starts_with(kStart)) at += kStart.size();
  }
  if (done && !unparsed.empty()) append(r.content, any_content, unparsed);
  if (done && !any_body) r.content = std::string(text);
  return r;
}

size_t harmony_ready(std::string_view text) {
  for (size_t at = text.rfind('<'); at != npos; at = at ? text.rfind('<', at - 1) : npos) {
    const std::string_view tail = text.substr(at);
    if (tail.size() >= 13) break;  // longer than any marker
    for (const std::string& m : harmony_markers())
      if (tail.size() < m.size() && m.starts_with(tail)) return at;
  }
  return text.size();
}

}  // namespace epwa
