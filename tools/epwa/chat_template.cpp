// epwa chat-template: renders a conversation with a model's chat template (or a given one), as the
// server does for /v1/chat/completions.
#include "epwa/chat_template.hpp"

#include <fmt/core.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "command.hpp"
#include "common.hpp"
#include "epwa/error.hpp"
#include "epwa/files.hpp"
#include "epwa/platform.hpp"
#include "epwa/tokenizer.hpp"

namespace epwa::cli {
namespace {

const Command kChatTemplate{
    "chat-template", "Render a conversation with the model's chat template", [](CLI::App& app) {
      auto model = std::make_shared<std::string>();
      auto messages = std::make_shared<std::string>();
      auto tpl_file = std::make_shared<std::string>();
      auto tools = std::make_shared<std::string>();
      auto kwargs = std::make_shared<std::string>();
      auto no_gen = std::make_shared<bool>(false);
      auto json_out = std::make_shared<bool>(false);
      app.add_option("--model", *model,
                     "model folder or .gguf whose template and special tokens are used (default: "
                     "$EPW_MODEL_PATH, then the bundled model)");
      app.add_option("--messages", *messages,
                     "JSON file: an array of {role, content} messages, or a chat request body "
                     "with \"messages\" (and \"tools\")")
          ->required();
      app.add_option("--template", *tpl_file, "a Jinja template file instead of the model's own");
      app.add_option("--tools", *tools, "JSON file with the tools array");
      app.add_option("--kwargs", *kwargs,
                     "JSON object of more template variables, e.g. '{\"enable_thinking\": false}'");
      app.add_flag("--no-generation-prompt", *no_gen,
                   "leave out the assistant header that starts the reply");
      app.add_flag("--json", *json_out, "print {\"text\": ..., \"ids\": [...]} (ids: the tokens)");
      return [=] {
        const std::filesystem::path path = resolve_model_path(*model);
        const auto tok = load_tokenizer(path);
        const ChatTemplate tpl(chat_template_source(path, *tpl_file, "--template"),
                               special_token_strings(*tok));
        ChatInput in;
        read_conversation(*messages, in);
        if (!tools->empty()) in.tools = parse_json_file(*tools, "--tools");
        if (!kwargs->empty()) {
          try {
            in.kwargs = nlohmann::ordered_json::parse(*kwargs);
          } catch (const nlohmann::json::exception&) {
            throw Error("--kwargs: not a JSON object: " + *kwargs);
          }
          check(in.kwargs.is_object(), "--kwargs: not a JSON object: " + *kwargs);
        }
        in.add_generation_prompt = !*no_gen;
        const std::string text = tpl.render(in);
        if (*json_out) {
          // The template writes special tokens as text: they are parsed as specials, and no BOS is
          // added (the template places its own).
          const auto ids = tok->encode(text, false, true);
          std::cout << nlohmann::json{{"text", text}, {"ids", ids}}.dump() << "\n";
        } else {
          std::cout << text;  // exactly the rendering (no newline added)
        }
        return 0;
      };
    }};

}  // namespace
}  // namespace epwa::cli
