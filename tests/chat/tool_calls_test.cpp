// Tool calls parsed back from a reply: each real template's own rendering of an assistant's
// tool_calls is parsed into the same calls; malformed calls stay text; where a stream must wait.
#include "epwa/tool_calls.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "epwa/chat_template.hpp"
#include "epwa/error.hpp"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using epwa::ToolCallSyntax;

namespace {

const fs::path kDir = fs::path(EPWA_TEST_DATA_DIR) / "chat_templates";

std::string read(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Case {
  const char* name;
  ToolCallSyntax syntax;
  bool string_arguments;     // the template writes arguments given as a JSON text
  const char* start;         // what the template writes before the reply (the assistant's turn)
  const char* end;           // what it writes after the reply (the end of the turn)
  const char* content = "";  // what it writes around the calls
};

TEST(ToolCalls, EachTemplatesOwnRenderingParsesBackToTheCalls) {
  const char* kQwen = "<|im_start|>assistant\n";
  const char* kDs = "<｜Assistant｜>";
  const std::map<std::string, std::string> special = {
      {"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}};
  const json args1 =
      json::parse(R"({"city": "Paris", "unit": "celsius", "note": "a } in \"it\""})");
  const json args2 = json::parse(R"({"zone": "CET", "days": [1, 2]})");
  for (const Case& c :
       {Case{"qwen2.5-instruct", ToolCallSyntax::Hermes, false, kQwen, "<|im_end|>"},
        Case{"qwen3", ToolCallSyntax::Hermes, true, kQwen, "<|im_end|>", "<think>\n\n</think>"},
        Case{"hermes-3-tool-use", ToolCallSyntax::Hermes, false, kQwen, "<|im_end|>"},
        Case{"mistral-nemo-instruct", ToolCallSyntax::Mistral, false, "[/INST]", "</s>"},
        Case{"deepseek-r1", ToolCallSyntax::DeepSeek, true, kDs, "<｜end▁of▁sentence｜>"},
        Case{"deepseek-v3.1", ToolCallSyntax::DeepSeek, true, kDs, "<｜end▁of▁sentence｜>",
             "</think>"}}) {
    SCOPED_TRACE(c.name);
    const epwa::ChatTemplate tpl(read(kDir / (std::string(c.name) + ".jinja")), special);
    EXPECT_EQ(epwa::tool_call_syntax(tpl), c.syntax);
    auto call = [&](const char* id, const char* name, const json& args) {
      return json{{"id", id},
                  {"type", "function"},
                  {"function",
                   {{"name", name}, {"arguments", c.string_arguments ? json(args.dump()) : args}}}};
    };
    epwa::ChatInput in;
    in.messages = json::array({{{"role", "user"}, {"content", "Weather and time in Paris?"}}});
    in.tools = json::parse(R"([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "get_time", "description": "Time",
         "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}}])");
    in.messages.push_back(
        {{"role", "assistant"},
         // DeepSeek's templates write calls only for null content; Qwen3's needs a string.
         {"content", c.syntax == ToolCallSyntax::DeepSeek ? json(nullptr) : json("")},
         {"tool_calls",
          {call("call00001", "get_weather", args1), call("call00002", "get_time", args2)}}});
    in.add_generation_prompt = false;
    const std::string all = tpl.render(in);
    // The reply: after the assistant's opening that follows the user's message.
    const size_t user = all.find("Paris?");
    ASSERT_NE(user, std::string::npos) << all;
    const size_t start = all.find(c.start, user);
    ASSERT_NE(start, std::string::npos) << all;
    std::string reply = all.substr(start + std::string(c.start).size());
    reply = reply.substr(0, reply.rfind(c.end));  // generation stops at the end of the turn
    const epwa::AssistantReply r = epwa::parse_tool_calls(c.syntax, reply);
    ASSERT_EQ(r.calls.size(), 2u) << reply;
    EXPECT_EQ(r.calls[0].name, "get_weather");
    EXPECT_EQ(json::parse(r.calls[0].arguments), args1) << r.calls[0].arguments;
    EXPECT_EQ(r.calls[1].name, "get_time");
    EXPECT_EQ(json::parse(r.calls[1].arguments), args2);
    EXPECT_EQ(r.content, c.content) << reply;
    // tool_choice: a call's opening as the template writes it, naming the function or not.
    const epwa::ToolCallShape shape = epwa::tool_call_shape(tpl, c.syntax);
    const std::string named = shape.opening("get_weather");
    const std::string any = shape.opening("");
    EXPECT_NE(reply.find(named), std::string::npos) << named;
    EXPECT_EQ(named.rfind(any, 0), 0u) << any;
    EXPECT_EQ(any.rfind(epwa::tool_call_markers(c.syntax)[0], 0), 0u) << any;
    // The named opening, arguments and the closing make one whole call (constrained decoding
    // writes exactly these), the end of the turn not in it.
    const std::string closing = shape.closing("call00002");
    EXPECT_NE(reply.find(closing), std::string::npos) << closing;
    EXPECT_EQ(closing.find(c.end), std::string::npos) << closing;
    const epwa::AssistantReply one =
        epwa::parse_tool_calls(c.syntax, named + args2.dump() + closing);
    ASSERT_EQ(one.calls.size(), 1u) << named + args2.dump() + closing;
    EXPECT_EQ(one.calls[0].name, "get_weather");
    EXPECT_EQ(json::parse(one.calls[0].arguments), args2);
    EXPECT_EQ(one.content, "");
  }
  const epwa::ChatTemplate mixtral(read(kDir / "mixtral-8x7b-instruct.jinja"), special);
  EXPECT_EQ(epwa::tool_call_syntax(mixtral), ToolCallSyntax::None);
  EXPECT_THROW(epwa::tool_call_shape(mixtral, ToolCallSyntax::None), epwa::Error);
}

TEST(ToolCalls, TextAroundCallsIsContentAndMalformedCallsStayText) {
  const auto H = ToolCallSyntax::Hermes;
  auto r = epwa::parse_tool_calls(
      H, "Let me check.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.content, "Let me check.");
  EXPECT_EQ(r.calls[0].arguments, R"({"x":1})");
  // The end of the turn came before the closing tag.
  r = epwa::parse_tool_calls(H, "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].name, "f");
  for (const std::string bad :
       {"<tool_call>{\"name\": \"f\", \"arguments\": {</tool_call>",
        "<tool_call>[1, 2]</tool_call>", "<tool_call>{\"arguments\": {}}</tool_call>",
        "<tool_call>{\"name\": \"f\", \"arguments\": \"not json\"}</tool_call>"}) {
    r = epwa::parse_tool_calls(H, bad);
    EXPECT_TRUE(r.calls.empty()) << bad;
    EXPECT_EQ(r.content, bad);
  }
  EXPECT_EQ(epwa::parse_tool_calls(H, "  plain text ").content, "  plain text ");
  EXPECT_TRUE(epwa::parse_tool_calls(ToolCallSyntax::None, "<tool_call>{}").calls.empty());
  // Mistral: an array that does not close, or is not one, stays text.
  const auto M = ToolCallSyntax::Mistral;
  EXPECT_TRUE(epwa::parse_tool_calls(M, "[TOOL_CALLS][{\"name\": \"f\"").calls.empty());
  EXPECT_TRUE(epwa::parse_tool_calls(M, "[TOOL_CALLS] nothing").calls.empty());
  r = epwa::parse_tool_calls(M, "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {\"a\": \"]\"}}]");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].arguments, R"({"a":"]"})");
  // DeepSeek: a call without its separator or with arguments that do not parse stays text.
  const auto D = ToolCallSyntax::DeepSeek;
  EXPECT_TRUE(
      epwa::parse_tool_calls(D, "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f{}<｜tool▁call▁end｜>")
          .calls.empty());
  EXPECT_TRUE(
      epwa::parse_tool_calls(
          D, "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{x<｜tool▁call▁end｜>")
          .calls.empty());
}

TEST(ToolCalls, StreamsWaitFromTheMarkerOrItsBeginning) {
  const auto H = ToolCallSyntax::Hermes;
  EXPECT_EQ(epwa::tool_call_start(H, "Sure"), std::string::npos);
  EXPECT_EQ(epwa::tool_call_start(H, "Sure <tool_"), 5u);
  EXPECT_EQ(epwa::tool_call_start(H, "Sure <"), 5u);
  EXPECT_EQ(epwa::tool_call_start(H, "a<tool_call>{\"na"), 1u);
  EXPECT_EQ(epwa::tool_call_start(H, "a < b"), std::string::npos);
  EXPECT_EQ(epwa::tool_call_start(ToolCallSyntax::Mistral, "x [TOOL"), 2u);
  EXPECT_EQ(epwa::tool_call_start(ToolCallSyntax::None, "<tool_call>"), std::string::npos);
}

}  // namespace
