// GPT-OSS's chat template (the harmony format) rendered by epwa and tokenized with o200k_harmony,
// and its replies parsed back into channels and calls.
// The expected prompts are written here from the harmony format (system message with knowledge
// cutoff, date and reasoning effort; developer instructions and tools; <|start|>role<|message|>
// ...<|end|> turns; tool calls to= a function on the commentary channel); tools/ref's Jinja2
// renders the template to the same text (docs/CHAT.md).
#include <gtest/gtest.h>

#include <ctime>
#include <fstream>
#include <sstream>

#include "epwa/chat_template.hpp"
#include "epwa/harmony.hpp"
#include "epwa/platform.hpp"
#include "epwa/tokenizer.hpp"

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

const fs::path kData = fs::path(EPWA_TEST_DATA_DIR);

std::string read(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The template calls strftime_now("%Y-%m-%d"): today, local time, as epwa's renderer gives it.
std::string today() {
  const std::tm tm = epwa::local_time(std::time(nullptr));  // portable localtime_r
  char buf[16];
  return std::string(buf, std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm));
}

std::string system_message(const std::string& effort, bool tools) {
  return "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
         "Knowledge cutoff: 2024-06\nCurrent date: " +
         today() + "\n\nReasoning: " + effort +
         "\n\n# Valid channels: analysis, commentary, final. Channel must be included for every "
         "message." +
         (tools ? "\nCalls to these tools must go to the commentary channel: 'functions'." : "") +
         "<|end|>";
}

const epwa::Tokenizer& o200k() {
  static const auto t = epwa::load_tokenizer(kData / "tokenizers" / "o200k_base.tiktoken");
  return *t;
}

epwa::ChatTemplate gpt_oss_template() {
  return epwa::ChatTemplate(read(kData / "gpt_oss" / "chat_template.jinja"),
                            epwa::special_token_strings(o200k()));
}

TEST(GptOssChat, ConversationWithDeveloperInstructions) {
  epwa::ChatInput in;
  in.messages = ordered_json::parse(R"([
    {"role": "system", "content": "Always respond in riddles"},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3 + 3?"}])");
  in.kwargs = {{"reasoning_effort", "high"}};
  const std::string prompt = gpt_oss_template().render(in);
  EXPECT_EQ(prompt, system_message("high", false) +
                        "<|start|>developer<|message|># Instructions\n\nAlways respond in "
                        "riddles\n\n<|end|>"
                        "<|start|>user<|message|>What is 2 + 2?<|end|>"
                        "<|start|>assistant<|channel|>final<|message|>4<|end|>"
                        "<|start|>user<|message|>And 3 + 3?<|end|>"
                        "<|start|>assistant");

  // The markers become harmony's special tokens; the prompt ends "<|start|>assistant".
  const std::vector<int32_t> ids = o200k().encode(prompt, true, true);
  std::vector<int32_t> specials;
  for (int32_t id : ids)
    if (o200k().is_special(id)) specials.push_back(id);
  const int32_t start = 200006, message = 200008, end = 200007, channel = 200005;
  EXPECT_EQ(specials,
            (std::vector<int32_t>{start, message, end, start, message, end, start, message, end,
                                  start, channel, message, end, start, message, end, start}));
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[ids.size() - 2], start);
  EXPECT_EQ(ids.back(), 173781);  // "assistant" (tools/tokenizer/o200k_reference.py)
  EXPECT_EQ(o200k().decode(ids), prompt);
}

TEST(GptOssChat, ToolCallAndResult) {
  epwa::ChatInput in;
  in.messages = ordered_json::parse(R"([
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "thinking": "Need the weather tool.",
     "tool_calls": [{"type": "function",
                     "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "sunny"}])");
  in.tools = ordered_json::parse(R"([{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {
      "city": {"type": "string", "description": "City name"},
      "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city"]}}}])");
  EXPECT_EQ(gpt_oss_template().render(in),
            system_message("medium", true) +
                "<|start|>developer<|message|># Tools\n\n## functions\n\nnamespace functions {\n\n"
                "// Current weather\ntype get_weather = (_: {\n// City name\ncity: string,\n"
                "unit?: \"c\" | \"f\",\n}) => any;\n\n} // namespace functions<|end|>"
                "<|start|>user<|message|>Weather in Paris?<|end|>"
                "<|start|>assistant<|channel|>analysis<|message|>Need the weather tool.<|end|>"
                "<|start|>assistant to=functions.get_weather<|channel|>commentary "
                "json<|message|>{\"city\": \"Paris\"}<|call|>"
                "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"
                "\"sunny\"<|end|>"
                "<|start|>assistant");
}

TEST(GptOssChat, RefusesChannelTagsInContent) {
  epwa::ChatInput in;
  in.messages = ordered_json::parse(R"([
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "<|channel|>final<|message|>Hello"}])");
  try {
    gpt_oss_template().render(in);
    FAIL() << "rendered";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("chat template refused the conversation: You have passed "
                                         "a message containing <|channel|> tags"),
              std::string::npos)
        << e.what();
  }
}

// An answer ends with <|return|> (the release's eos), a call with <|call|>: what `generate --chat`
// and the server stop on.
TEST(GptOssChat, AnAnswerEndsWithReturn) {
  const epwa::ChatTemplate tpl = gpt_oss_template();
  EXPECT_EQ(epwa::text_after_assistant_turn(tpl), "<|return|>");
  // A call to a tool ends the turn too (<|call|>, 200012).
  EXPECT_EQ(epwa::end_of_turn_tokens(tpl, o200k()), (std::vector<int32_t>{200002, 200012}));
  EXPECT_EQ(o200k().eos_id(), 200002);
}

}  // namespace

// A reply in the harmony format split as an OpenAI answer carries it: analysis as reasoning,
// final (and commentary preambles) as content, a message to a function as a call.
TEST(Harmony, ReplySplitsIntoReasoningContentAndCalls) {
  const epwa::AssistantReply a = epwa::parse_harmony(
      "<|channel|>analysis<|message|>User greets.<|end|>"
      "<|start|>assistant<|channel|>final<|message|>Hello!",
      true, false);
  EXPECT_EQ(a.reasoning, "User greets.");
  EXPECT_EQ(a.content, "Hello!");
  EXPECT_TRUE(a.calls.empty());
  // The model's own spelling (recipient after the channel, <|constrain|>) and the template's
  // (recipient in the role, before the channel), each with a preamble on commentary.
  for (const std::string call :
       {"<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>",
        " to=functions.get_weather<|channel|>commentary json<|message|>"}) {
    SCOPED_TRACE(call);
    const std::string text =
        "<|channel|>analysis<|message|>Need the tool.<|end|>"
        "<|start|>assistant<|channel|>commentary<|message|>Checking.<|end|><|start|>assistant" +
        call + "{\"city\": \"Paris\"}";
    const epwa::AssistantReply c = epwa::parse_harmony(text, true, true);
    EXPECT_EQ(c.reasoning, "Need the tool.");
    EXPECT_EQ(c.content, "Checking.");
    ASSERT_EQ(c.calls.size(), 1u);
    EXPECT_EQ(c.calls[0].name, "get_weather");
    EXPECT_EQ(c.calls[0].arguments, "{\"city\": \"Paris\"}");
    // Without tools in the request the message is text; a body that is not JSON stays text.
    EXPECT_EQ(epwa::parse_harmony(text, true, false).content, "Checking.\n{\"city\": \"Paris\"}");
    const epwa::AssistantReply bad =
        epwa::parse_harmony(text.substr(0, text.size() - 1), true, true);
    EXPECT_TRUE(bad.calls.empty());
    EXPECT_EQ(bad.content, "Checking.\n{\"city\": \"Paris\"");
    EXPECT_EQ(epwa::parse_tool_calls(epwa::ToolCallSyntax::Harmony, text).calls.size(), 1u);
  }
  // Never an empty answer: a reply that never reached a message body is shown as written.
  EXPECT_EQ(epwa::parse_harmony("Plain words", true, false).content, "Plain words");
  EXPECT_EQ(epwa::parse_harmony("<|channel|>ana", true, false).content, "<|channel|>ana");
  EXPECT_EQ(epwa::parse_harmony("<|channel|>ana", false, false).content, "");
}

// A stream sends the growth of each field: every prefix's fields begin the whole reply's, the
// text held back where a marker may be starting.
TEST(Harmony, PrefixesGrowIntoTheWholeReply) {
  EXPECT_EQ(epwa::harmony_ready("Hi <|chan"), 3u);
  EXPECT_EQ(epwa::harmony_ready("Hi <|channel|>"), 14u);
  EXPECT_EQ(epwa::harmony_ready("a < b"), 5u);
  EXPECT_EQ(epwa::harmony_ready("a <"), 2u);
  for (const std::string text :
       {"<|channel|>analysis<|message|>Think <a> bit.<|end|><|start|>assistant<|channel|>final"
        "<|message|>Answer: 4.",
        "<|channel|>analysis<|message|>Hmm.<|end|><|start|>assistant<|channel|>commentary "
        "to=functions.f <|constrain|>json<|message|>{\"x\": [1, 2]}",
        "<|channel|>commentary to=functions.f<|message|>{oops", "no markers at all",
        "<|channel|>final<|message|>One.<|end|><|start|>assistant<|channel|>final<|message|>"
        "Two."}) {
    SCOPED_TRACE(text);
    for (const bool calls : {false, true}) {
      const epwa::AssistantReply whole = epwa::parse_harmony(text, true, calls);
      for (size_t n = 0; n <= text.size(); ++n) {
        const std::string_view prefix = std::string_view(text).substr(0, n);
        const epwa::AssistantReply p =
            epwa::parse_harmony(prefix.substr(0, epwa::harmony_ready(prefix)), false, calls);
        ASSERT_TRUE(whole.content.starts_with(p.content)) << n << ": " << p.content;
        ASSERT_TRUE(whole.reasoning.starts_with(p.reasoning)) << n << ": " << p.reasoning;
        ASSERT_TRUE(p.calls.empty());
      }
    }
  }
}

// The template's syntax is harmony; a forced call opens as the template writes one and closes
// with <|call|>; every marker is one special token of o200k_harmony, so the server lets it through.
TEST(Harmony, TemplateCallShapeAndMarkerTokens) {
  const epwa::ChatTemplate tpl = gpt_oss_template();
  ASSERT_EQ(epwa::tool_call_syntax(tpl), epwa::ToolCallSyntax::Harmony);
  const epwa::ToolCallShape shape = epwa::tool_call_shape(tpl, epwa::ToolCallSyntax::Harmony);
  EXPECT_EQ(shape.opening("get_weather"),
            " to=functions.get_weather<|channel|>commentary json<|message|>");
  EXPECT_EQ(shape.closing("x"), "<|call|>");
  const epwa::AssistantReply r =
      epwa::parse_harmony(shape.opening("get_weather") + "{\"city\": \"Rome\"}", true, true);
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].name, "get_weather");
  for (const std::string& m : epwa::tool_call_markers(epwa::ToolCallSyntax::Harmony)) {
    const std::vector<int32_t> ids = o200k().encode(m, false, true);
    ASSERT_EQ(ids.size(), 1u) << m;
    EXPECT_TRUE(o200k().is_special(ids[0])) << m;
  }
}
