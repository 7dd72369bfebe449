#include "epwa/tool_calls.hpp"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <optional>

#include "epwa/chat_template.hpp"
#include "epwa/error.hpp"
#include "epwa/harmony.hpp"
#include "epwa/text.hpp"

namespace epwa {
namespace {

constexpr std::string_view kHermesOpen = "<tool_call>", kHermesClose = "</tool_call>";
constexpr std::string_view kMistralOpen = "[TOOL_CALLS]";
constexpr std::string_view kDeepSeekOpen = "<｜tool▁calls▁begin｜>",
                           kDeepSeekClose = "<｜tool▁calls▁end｜>",
                           kDeepSeekCall = "<｜tool▁call▁begin｜>",
                           kDeepSeekCallEnd = "<｜tool▁call▁end｜>",
                           kDeepSeekSep = "<｜tool▁sep｜>";
// A harmony call is a message to a function; what follows the prompt's "<|start|>assistant".
constexpr std::string_view kHarmonyTo = " to=functions.";

std::string_view opening(ToolCallSyntax s) {
  switch (s) {
    case ToolCallSyntax::Hermes:
      return kHermesOpen;
    case ToolCallSyntax::Mistral:
      return kMistralOpen;
    case ToolCallSyntax::DeepSeek:
      return kDeepSeekOpen;
    case ToolCallSyntax::Harmony:
      return kHarmonyTo;
    case ToolCallSyntax::None:
      break;
  }
  return {};
}

// The end of the JSON object or array that starts at s[at] (one past its closing bracket), npos
// when it does not close. Brackets inside strings do not count.
size_t json_end(std::string_view s, size_t at) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = at; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if ((c == '}' || c == ']') && --depth == 0) {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

// Ordered: arguments keep the model's key order.
std::optional<nlohmann::ordered_json> parse_json(std::string_view s) {
  auto j = nlohmann::ordered_json::parse(s, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

// {"name": "...", "arguments": {...} or a JSON text} ("parameters" is taken for "arguments").
std::optional<ToolCall> call_of(const nlohmann::ordered_json& j) {
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) return std::nullopt;
  ToolCall c{j["name"].get<std::string>(), "{}"};
  const char* key = j.contains("arguments") ? "arguments" : "parameters";
  if (j.contains(key)) {
    const auto& a = j[key];
    if (a.is_string()) {
      if (!parse_json(a.get<std::string>())) return std::nullopt;
      c.arguments = a.get<std::string>();
    } else {
      c.arguments = a.dump();
    }
  }
  return c;
}

AssistantReply hermes(std::string_view text) {
  AssistantReply r;
  std::string content;
  size_t at = 0;
  while (true) {
    const size_t open = text.find(kHermesOpen, at);
    content += text.substr(at, open == std::string_view::npos ? text.size() - at : open - at);
    if (open == std::string_view::npos) break;
    const size_t body = open + kHermesOpen.size();
    const size_t close = text.find(kHermesClose, body);  // EOS may come before the closing tag
    const auto j = parse_json(trim_space(text.substr(
        body, close == std::string_view::npos ? std::string_view::npos : close - body)));
    const auto call = j ? call_of(*j) : std::nullopt;
    if (!call) return {std::string(text), {}, {}};
    r.calls.push_back(*call);
    if (close == std::string_view::npos) break;
    at = close + kHermesClose.size();
  }
  r.content = trim_space(content);
  return r;
}

AssistantReply mistral(std::string_view text) {
  const size_t open = text.find(kMistralOpen);
  const size_t start = text.find_first_not_of(" \n\r\t", open + kMistralOpen.size());
  const size_t end =
      start != std::string_view::npos && text[start] == '[' ? json_end(text, start) : start;
  const auto j =
      end != std::string_view::npos ? parse_json(text.substr(start, end - start)) : std::nullopt;
  if (!j || !j->is_array() || j->empty()) return {std::string(text), {}, {}};
  AssistantReply r;
  for (const auto& x : *j) {
    const auto call = call_of(x);
    if (!call) return {std::string(text), {}, {}};
    r.calls.push_back(*call);
  }
  r.content = trim_space(std::string(text.substr(0, open)) + std::string(text.substr(end)));
  return r;
}

// <｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜> (V3.1), or with the type first
// and the arguments fenced: TYPE<｜tool▁sep｜>NAME\n```json\nARGS\n```  (V3, R1).
AssistantReply deepseek(std::string_view text) {
  const size_t open = text.find(kDeepSeekOpen);
  const size_t close = text.find(kDeepSeekClose, open);
  const std::string_view calls =
      text.substr(open + kDeepSeekOpen.size(), close == std::string_view::npos
                                                   ? std::string_view::npos
                                                   : close - open - kDeepSeekOpen.size());
  AssistantReply r;
  const auto bad = [&] { return AssistantReply{std::string(text), {}, {}}; };
  for (size_t at = calls.find(kDeepSeekCall); at != std::string_view::npos;
       at = calls.find(kDeepSeekCall, at)) {
    at += kDeepSeekCall.size();
    const size_t end = calls.find(kDeepSeekCallEnd, at);
    const std::string_view one = calls.substr(at, end == std::string_view::npos ? end : end - at);
    const size_t sep = one.find(kDeepSeekSep);
    if (sep == std::string_view::npos) return bad();
    std::string_view name = trim_space(one.substr(0, sep)),
                     args = one.substr(sep + kDeepSeekSep.size());
    const size_t fence = args.find("```json");
    if (fence != std::string_view::npos) {
      name = trim_space(args.substr(0, fence));
      args = args.substr(fence + 7);
      args = args.substr(0, args.rfind("```"));
    }
    args = trim_space(args);
    if (name.empty() || !parse_json(args)) return bad();
    r.calls.push_back({std::string(name), std::string(args)});
    if (end == std::string_view::npos) break;
    at = end;
  }
  if (r.calls.empty()) return bad();
  const std::string_view after = close == std::string_view::npos
                                     ? std::string_view()
                                     : text.substr(close + kDeepSeekClose.size());
  r.content = trim_space(std::string(text.substr(0, open)) + std::string(after));
  return r;
}

}  // namespace

std::string_view tool_call_syntax_name(ToolCallSyntax s) {
  switch (s) {
    case ToolCallSyntax::Hermes:
      return "hermes";
    case ToolCallSyntax::Mistral:
      return "mistral";
    case ToolCallSyntax::DeepSeek:
      return "deepseek";
    case ToolCallSyntax::Harmony:
      return "harmony";
    case ToolCallSyntax::None:
      break;
  }
  return "none";
}

ToolCallSyntax tool_call_syntax(const ChatTemplate& tpl) {
  const std::string& src = tpl.source();
  // The template spells "to=functions." in pieces; its channel and call markers are harmony's.
  if (src.find("<|channel|>") != std::string::npos && src.find("<|call|>") != std::string::npos)
    return ToolCallSyntax::Harmony;
  for (ToolCallSyntax s :
       {ToolCallSyntax::Hermes, ToolCallSyntax::Mistral, ToolCallSyntax::DeepSeek})
    if (src.find(opening(s)) != std::string::npos) return s;
  return ToolCallSyntax::None;
}

std::vector<std::string> tool_call_markers(ToolCallSyntax s) {
  switch (s) {
    case ToolCallSyntax::Hermes:
      return {std::string(kHermesOpen), std::string(kHermesClose)};
    case ToolCallSyntax::Mistral:
      return {std::string(kMistralOpen)};
    case ToolCallSyntax::DeepSeek:
      return {std::string(kDeepSeekOpen), std::string(kDeepSeekClose), std::string(kDeepSeekCall),
              std::string(kDeepSeekCallEnd), std::string(kDeepSeekSep)};
    case ToolCallSyntax::Harmony:
      return harmony_markers();
    case ToolCallSyntax::None:
      break;
  }
  return {};
}

AssistantReply parse_tool_calls(ToolCallSyntax s, std::string_view text) {
  if (s == ToolCallSyntax::Harmony) return parse_harmony(text, true, true);
  if (s == ToolCallSyntax::None || text.find(opening(s)) == std::string_view::npos)
    return {std::string(text), {}, {}};
  switch (s) {
    case ToolCallSyntax::Hermes:
      return hermes(text);
    case ToolCallSyntax::Mistral:
      return mistral(text);
    default:
      return deepseek(text);
  }
}

namespace {
constexpr std::string_view kProbeName = "epwa_probe_function", kProbeKey = "epwa_probe_argument",
                           kProbeId = "probe0001";

nlohmann::ordered_json probe_tools() {
  return nlohmann::ordered_json::array(
      {{{"type", "function"},
        {"function",
         {{"name", kProbeName},
          {"description", "probe"},
          {"parameters",
           {{"type", "object"}, {"properties", {{kProbeKey, {{"type", "integer"}}}}}}}}}}});
}

// The template's rendering of a conversation that ends with a probe call, and where in it the
// call's marker, function name and arguments ({"epwa_probe_argument": 1}) are.
struct ProbeCall {
  std::string text;
  size_t at, at_name, after_name, args_at, args_end;
};

ProbeCall probe_call(const ChatTemplate& tpl, ToolCallSyntax s) {
  const std::string_view marker = opening(s);
  check(!marker.empty(), "tool_choice: this model's chat template writes no tool calls");
  const nlohmann::ordered_json args = {{kProbeKey, 1}};
  // Templates differ in what they accept: a null or empty content beside the calls (DeepSeek's
  // write calls only for null), arguments as an object or as a JSON text.
  for (const bool null_content : {false, true})
    for (const bool text_args : {false, true}) {
      ChatInput in;
      in.messages = nlohmann::ordered_json::array(
          {{{"role", "user"}, {"content", "probe"}},
           {{"role", "assistant"},
            {"content", null_content ? nlohmann::ordered_json() : nlohmann::ordered_json("")},
            {"tool_calls",
             {{{"id", kProbeId},
               {"type", "function"},
               {"function",
                {{"name", kProbeName},
                 {"arguments", text_args ? nlohmann::ordered_json(args.dump()) : args}}}}}}}});
      // Some templates (Hermes 3) render calls only beside the tools: the probe's own, whose
      // description comes before the call (hence the last occurrences below).
      in.tools = probe_tools();
      in.add_generation_prompt = false;
      ProbeCall p;
      try {
        p.text = tpl.render(in);
      } catch (const Error&) {
        continue;
      }
      p.at_name = p.text.rfind(kProbeName);
      if (p.at_name == std::string::npos) continue;
      p.at = p.text.rfind(marker, p.at_name);
      p.after_name = p.at_name + kProbeName.size();
      const size_t key = p.text.find(kProbeKey, p.after_name);
      if (p.at == std::string::npos || key == std::string::npos) continue;
      p.args_at = p.text.rfind('{', key);
      p.args_end = p.text.find('}', key);
      if (p.args_at == std::string::npos || p.args_at < p.after_name ||
          p.args_end == std::string::npos)
        continue;
      ++p.args_end;
      return p;
    }
  throw Error(
      "tool_choice: this model's chat template's rendering of a tool call was not "
      "understood");
}
}  // namespace

ToolCallShape tool_call_shape(const ChatTemplate& tpl, ToolCallSyntax s) {
  const ProbeCall p = probe_call(tpl, s);
  // The end of a turn: what the template writes after a plain assistant message (beside the
  // tools, as some templates render only so), without the whitespace around it.
  std::string turn_end = text_after_assistant_turn(tpl, probe_tools()).value_or("");
  const size_t first = turn_end.find_first_not_of(" \n\r\t");
  turn_end = first == std::string::npos ? "" : turn_end.substr(first);
  while (!turn_end.empty() && std::isspace(static_cast<unsigned char>(turn_end.back())))
    turn_end.pop_back();
  size_t end = turn_end.empty() ? std::string::npos : p.text.find(turn_end, p.args_end);
  if (end == std::string::npos) end = p.text.size();
  // The whitespace a template writes before the end of its turn is not part of the call.
  while (end > p.args_end && std::isspace(static_cast<unsigned char>(p.text[end - 1]))) --end;
  return {p.text.substr(p.at, p.at_name - p.at),
          p.text.substr(p.after_name, p.args_at - p.after_name),
          p.text.substr(p.args_end, end - p.args_end)};
}

std::string ToolCallShape::opening(std::string_view name) const {
  return name.empty() ? before_name : before_name + std::string(name) + before_arguments;
}

std::string ToolCallShape::closing(std::string_view id) const {
  std::string out = after_arguments;
  // Templates that write the call's id after its arguments (Mistral's): the caller's id.
  if (const size_t at = out.find(kProbeId); at != std::string::npos)
    out.replace(at, kProbeId.size(), id);
  return out;
}

size_t tool_call_start(ToolCallSyntax s, std::string_view text) {
  const std::string_view open = opening(s);
  if (open.empty()) return std::string_view::npos;
  const size_t at = text.find(open);
  if (at != std::string_view::npos) return at;
  for (size_t k = std::min(open.size() - 1, text.size()); k > 0; --k)
    if (text.substr(text.size() - k) == open.substr(0, k)) return text.size() - k;
  return std::string_view::npos;
}

}  // namespace epwa
