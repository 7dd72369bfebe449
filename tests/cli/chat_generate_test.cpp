// epwa generate --chat: the prompt is the conversation rendered with the chat template, exactly as
// `epwa chat-template` renders and tokenizes it, and the reply is what generation from those
// tokens gives; misuse of the chat flags is a one-line error.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "support/run_cli.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kTemplate =
    (fs::path(EPWA_TEST_DATA_DIR) / "chat_templates" / "mixtral-8x7b-instruct.jinja").string();

json run_json(const std::string& args) {
  const auto r = epwa_test::run_cli(args + " --json", epwa_test::Stderr::Drop);
  EXPECT_EQ(r.code, 0) << args;
  return json::parse(r.out);
}

std::string ids_arg(const json& ids) {
  std::string s;
  for (const auto& t : ids) s += (s.empty() ? "" : ",") + std::to_string(t.get<int>());
  return s;
}

TEST(ChatGenerate, PromptIsTheTemplatesRenderingAndTheReplyItsContinuation) {
  const fs::path conv = fs::temp_directory_path() / "epwa-chat-generate.json";
  std::ofstream(conv) << R"([{"role": "user", "content": "Where do rivers begin?"},
      {"role": "assistant", "content": "In the hills."}, {"role": "user", "content": "And end?"}])";
  const std::string one = fs::temp_directory_path() / "epwa-chat-generate-one.json";
  std::ofstream(one) << R"([{"role": "user", "content": "Tell me about rivers"}])";
  const std::string gen = "generate -q -n 12 --temperature 0 --chat --chat-template " + kTemplate;
  for (const auto& [chat_args, messages] :
       {std::pair{gen + " --prompt 'Tell me about rivers'", one},
        std::pair{gen + " --messages " + conv.string(), conv.string()}}) {
    const json chat = run_json(chat_args);
    const json rendered =
        run_json("chat-template --template " + kTemplate + " --messages " + messages);
    EXPECT_EQ(chat["prompt_tokens"], rendered["ids"]);
    const json plain =
        run_json("generate -q -n 12 --temperature 0 --prompt-tokens " + ids_arg(rendered["ids"]));
    EXPECT_EQ(chat["tokens"], plain["tokens"]);
    EXPECT_FALSE(chat["tokens"].empty());
  }
  fs::remove(conv);
  fs::remove(one);
}

TEST(ChatGenerate, MisuseIsAOneLineError) {
  for (const auto& [args, want] :
       {std::pair{std::string("generate --chat --prompt hi -n 2"), "has no chat template"},
        std::pair{std::string("generate --prompt hi --chat-template ") + kTemplate,
                  "are for --chat"},
        std::pair{"generate --chat --prompt-tokens 1,2 --chat-template " + kTemplate,
                  "--chat takes text"},
        std::pair{"generate --chat --chat-template " + kTemplate + " --messages /nonexistent.json",
                  "/nonexistent.json"}}) {
    const auto r = epwa_test::run_cli(args);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_NE(r.out.find(want), std::string::npos) << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  }
}

}  // namespace
