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
};

// The reply split into content and tool calls. A reply without the syntax's opening marker, or
// whose calls are not well formed (JSON that does not parse, a call without a name), is all
// content: a malformed call is shown to the client as text, never dropped.
AssistantReply parse_tool_calls(ToolCallSyntax s, std::string_view text);

// What makes a reply open with a tool call, as the template itself writes one (found by rendering
// a probe call): the call's opening up to its function name when `name` is empty (tool_choice
// "required": the model names the function), else up to its arguments with `name` written in
// (a named tool_choice). Throws Error when the syntax is None or the template's rendering of a
// call is not understood.
std::string tool_call_opening(const ChatTemplate& tpl, ToolCallSyntax s, std::string_view name);

// What the template writes after a call's arguments, up to the end of the turn (what it writes
// after an assistant message: "<|im_end|>", "</s>"): Qwen2.5's "}\n</tool_call>", Mistral's "}]".
// With the named opening and arguments in between, the reply is a whole call. A template that
// writes the call's id there (Mistral's) gets `id` (Mistral's are 9 letters and digits). Throws
// Error as tool_call_opening.
std::string tool_call_closing(const ChatTemplate& tpl, ToolCallSyntax s, std::string_view id);

// Where in `text` a tool call starts or may be starting (a prefix of the opening marker at the
// end): a stream holds the text back from there. npos: nowhere.
size_t tool_call_start(ToolCallSyntax s, std::string_view text);

}  // namespace epwa
