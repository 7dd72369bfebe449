// Tool calls in a model's reply: which syntax a chat template writes them in, and the reply's
// text parsed back into OpenAI's tool_calls (docs/SERVER.md, "Tool calls").
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace epwa {

class ChatTemplate;

enum class ToolCallSyntax {
  None,      // the template writes no tool calls
  Hermes,    // <tool_call>{"name": .., "arguments": {..}}</tool_call>, repeated (Qwen2.5/3, Hermes)
  Mistral,   // [TOOL_CALLS][{"name": .., "arguments": {..}}, ..] (Mistral v0.3, Nemo)
  DeepSeek,  // <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>..<｜tool▁sep｜>..<｜tool▁call▁end｜>..
  Harmony,   // GPT-OSS: <|start|>assistant to=functions.NAME<|channel|>commentary
             // json<|message|>..<|call|>
};
std::string_view tool_call_syntax_name(ToolCallSyntax s);  // "none", "hermes", ...

// The syntax the template's own rendering of an assistant's tool_calls uses, by its markers.
ToolCallSyntax tool_call_syntax(const ChatTemplate& tpl);

// The marker strings of a syntax (each may be one special token of the model's vocabulary, which
// a server must then let the model emit).
std::vector<std::string> tool_call_markers(ToolCallSyntax s);

struct ToolCall {
  std::string name;
  std::string arguments;  // a JSON text (OpenAI sends arguments as a string)
};

struct AssistantReply {
  std::string content;  // the text outside the calls (before the first), trimmed
  std::vector<ToolCall> calls;
  std::string reasoning;  // harmony's analysis channel (include/epwa/harmony.hpp)
};

// The reply split into content and tool calls. A reply without the syntax's opening marker, or
// whose calls are not well formed (JSON that does not parse, a call without a name), is all
// content: a malformed call is shown to the client as text, never dropped. Harmony replies are
// parsed by parse_harmony (also their channels, without tools).
AssistantReply parse_tool_calls(ToolCallSyntax s, std::string_view text);

// How the template writes a tool call (found once by rendering a probe call): what a reply that
// opens with a call writes before the function's name, between the name and the arguments, and
// after the arguments up to the end of the turn (what the template writes after an assistant
// message: "<|im_end|>", "</s>"). A named tool_choice's reply is opening(name), the arguments,
// then closing(id): one whole call.
struct ToolCallShape {
  std::string before_name, before_arguments, after_arguments;
  // The opening up to the name when `name` is empty (tool_choice "required": the model names the
  // function), else up to the arguments with `name` written in. Qwen2.5: `<tool_call>\n{"name":
  // "f", "arguments": `.
  std::string opening(std::string_view name) const;
  // after_arguments, with `id` where the template writes the call's id (Mistral's, 9 letters and
  // digits). Qwen2.5: "}\n</tool_call>"; Mistral: `, "id": "..."}]`.
  std::string closing(std::string_view id) const;
};
// Throws Error when the syntax is None or the template's rendering of a call is not understood.
ToolCallShape tool_call_shape(const ChatTemplate& tpl, ToolCallSyntax s);

// Where in `text` a tool call starts or may be starting (a prefix of the opening marker at the
// end): a stream holds the text back from there. npos: nowhere.
size_t tool_call_start(ToolCallSyntax s, std::string_view text);

}  // namespace epwa
