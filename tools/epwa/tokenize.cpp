// epwa tokenize: text to token ids and pieces with a model's tokenizer.
#include <fmt/core.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "command.hpp"
#include "common.hpp"
#include "epwa/tokenizer.hpp"

namespace epwa::cli {
namespace {

const Command kTokenize{
    "tokenize", "Encode text with a tokenizer (model folder, tokenizer file or .gguf)",
    [](CLI::App& app) {
      auto model = std::make_shared<std::string>();
      auto text = std::make_shared<std::string>();
      auto json = std::make_shared<bool>(false);
      auto no_special = std::make_shared<bool>(false);
      app.add_option(
          "--model", *model,
          "model folder, tokenizer.json, tokenizer.model, .tiktoken (o200k_base) or .gguf "
          "(default: $EPW_MODEL_PATH, "
          "then the bundled model)");
      app.add_option("--text", *text, "text to encode")->required();
      app.add_flag("--json", *json, "print {\"ids\":[...],\"pieces\":[...]}");
      app.add_flag("--no-special", *no_special,
                   "add no BOS/EOS and treat special tokens in the text as plain text");
      return [=] {
        const auto tok = load_tokenizer(resolve_model_path(*model));
        const auto ids = tok->encode(*text, !*no_special, !*no_special);
        std::vector<std::string> pieces;
        for (int32_t id : ids) pieces.push_back(tok->token_to_piece(id));
        if (*json) {
          nlohmann::json j{{"ids", ids}, {"pieces", pieces}};
          // Pieces may hold partial UTF-8 only through byte tokens, which are ASCII "<0xNN>".
          std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
        } else {
          for (size_t i = 0; i < ids.size(); ++i) fmt::print("{}\t{}\n", ids[i], pieces[i]);
        }
        return 0;
      };
    }};

}  // namespace
}  // namespace epwa::cli
