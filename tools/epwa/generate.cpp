// epwa generate: continue a prompt, optionally with the EPW-A watermark.
#include "epwa/generate.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "command.hpp"
#include "common.hpp"
#include "epwa/chat_template.hpp"
#include "epwa/error.hpp"
#include "epwa/files.hpp"
#include "epwa/json_constraint.hpp"
#include "epwa/platform.hpp"
#include "epwa/session.hpp"
#include "epwa/tokenizer.hpp"
#include "watermark_args.hpp"

namespace epwa::cli {
namespace {

struct Args {
  ModelArgs model;
  std::string prompt_tokens, prompt;
  bool have_prompt = false;
  std::string watermark = "none";
  WatermarkArgs wm;
  int32_t max_new = 32;
  int32_t min_new = 0;
  SamplingOptions s;
  bool json = false;
  bool allow_special = false;
  std::filesystem::path json_schema;
  bool chat = false;
  std::string messages, chat_template;
};

// --chat's conversation (--messages FILE, or --prompt as one user message) and template (the
// model's own, or --chat-template FILE), read before the model loads: a mistake there fails fast.
struct ChatRequest {
  std::string source;
  ChatInput input;
};

ChatRequest read_chat(const Args& a) {
  ChatRequest r;
  r.source =
      chat_template_source(resolve_model_path(a.model.model), a.chat_template, "--chat-template");
  if (!a.messages.empty()) {
    read_conversation(a.messages, r.input);
  } else {
    check(!a.prompt.empty(), "--prompt is empty");
    r.input.messages = normalize_chat_messages(
        nlohmann::ordered_json::array({{{"role", "user"}, {"content", a.prompt}}}));
  }
  return r;
}

// The conversation rendered up to the assistant's turn, as the server renders
// /v1/chat/completions; the template's end of turn joins `stop`.
std::vector<int32_t> chat_prompt(const ChatRequest& r, const Tokenizer& tok,
                                 std::vector<int32_t>& stop) {
  const ChatTemplate tpl(r.source, special_token_strings(tok));
  for (int32_t t : end_of_turn_tokens(tpl, tok))
    if (std::find(stop.begin(), stop.end(), t) == stop.end()) stop.push_back(t);
  // The template writes special tokens as text and its own BOS: parsed as specials, none added.
  return tok.encode(tpl.render(r.input), false, true);
}

const Command kGenerate{
    "generate", "Generate text after a prompt, optionally watermarked", [](CLI::App& app) {
      auto a = std::make_shared<Args>();
      a->model.add(app);
      auto* pt = app.add_option("--prompt-tokens", a->prompt_tokens,
                                "comma-separated prompt token ids (BOS included)");
      app.add_option("--prompt", a->prompt,
                     "prompt text (tokenized with the model's tokenizer, BOS added)")
          ->excludes(pt);
      app.add_flag("--chat", a->chat,
                   "--prompt is a user message, rendered with the model's chat template; the "
                   "reply stops at the template's end of turn");
      app.add_option("--messages", a->messages,
                     "with --chat: a JSON file with the conversation (an array of {role, content}, "
                     "or a chat request body with \"messages\" and \"tools\") instead of --prompt");
      app.add_option("--chat-template", a->chat_template,
                     "with --chat: a Jinja template file instead of the model's own");
      app.add_option("--watermark", a->watermark,
                     "gsg, ewp, exp (distortion-free: the key makes the sampling draw; needs "
                     "--temperature > 0) or none")
          ->check(CLI::IsMember({"gsg", "ewp", "exp", "none"}));
      a->wm.add(app, true);
      app.add_option("--max-new-tokens,-n", a->max_new,
                     "tokens to generate, at most (capped at the model's context)")
          ->check(whole_number(0, std::numeric_limits<int32_t>::max()));
      app.add_option("--min-new-tokens", a->min_new,
                     "EOS is not sampled before this many new tokens (texts of a set length)")
          ->check(whole_number(0, std::numeric_limits<int32_t>::max()));
      app.add_option("--temperature", a->s.temperature,
                     "0 = greedy (the default; generation_config.json is not read)")
          ->check(real_number({.lo = 0, .hi = 100}));
      app.add_option("--top-k", a->s.top_k, "keep the k most likely tokens (0 = off)")
          ->check(whole_number(0, std::numeric_limits<int32_t>::max()));
      app.add_option("--top-p", a->s.top_p, "nucleus sampling mass (1 = off)")
          ->check(real_number({.lo = 0, .hi = 1, .lo_open = true}));
      app.add_option("--seed", a->s.seed, "sampling seed, 0 to 2^64-1");
      app.add_flag("--allow-special-tokens", a->allow_special,
                   "let the sampler pick special tokens (<unk>, BOS, control tokens); without it "
                   "only EOS, which ends the text");
      add_path_option(app, "--json-schema", a->json_schema,
                      "the text is JSON that matches this JSON schema (a file; constrained "
                      "decoding, docs/SERVER.md \"Structured output\"); {} for any JSON")
          ->check(existing_file());
      app.add_flag("--json", a->json,
                   "print JSON (prompt_tokens, tokens, text, watermark parameters)");
      return [a, &app] {
        const bool text_prompt = app.count("--prompt") > 0;
        const bool have_messages = !a->messages.empty();
        check(a->chat || (!have_messages && a->chat_template.empty()),
              "--messages and --chat-template are for --chat");
        if (a->chat) {
          check(app.count("--prompt-tokens") == 0, "--chat takes text, not --prompt-tokens");
          check(text_prompt != have_messages, "--chat takes --prompt TEXT or --messages FILE");
        }
        check(text_prompt || have_messages || app.count("--prompt-tokens") > 0,
              "give --prompt TEXT or --prompt-tokens IDS");
        // Resolve the key before loading anything: a missing key is the most common mistake.
        a->wm.check_used(app, a->watermark);
        const bool watermarking = a->watermark != "none";
        const bool ring = !a->wm.keyring.empty();
        const WatermarkArgs::Keys keys = ring ? a->wm.resolve_keyring() : WatermarkArgs::Keys{};
        std::string key = watermarking && !ring ? a->wm.resolve_key() : std::string();
        const std::optional<ChatRequest> chat =
            a->chat ? std::optional(read_chat(*a)) : std::nullopt;
        a->model.json_stats = a->json;
        auto m = a->model.load();
        std::unique_ptr<Tokenizer> tok;
        try {
          tok = load_tokenizer(resolve_model_path(a->model.model));
        } catch (const Error&) {
          if (text_prompt || a->chat) throw;  // without a tokenizer only token ids in and out
        }
        std::vector<int32_t> prompt, stop{m->config().eos_token_id};
        if (chat) {
          prompt = chat_prompt(*chat, *tok, stop);
        } else if (text_prompt) {
          check(!a->prompt.empty(), "--prompt is empty");
          prompt = tok->encode(a->prompt, true, false);
        } else {
          prompt = parse_token_list(a->prompt_tokens);
        }
        const int64_t ctx = m->config().max_position_embeddings;
        check(static_cast<int64_t>(prompt.size()) <= ctx, [&] {
          return "the prompt's " + std::to_string(prompt.size()) +
                 " tokens are beyond the model's context of " + std::to_string(ctx) +
                 " positions (max_position_embeddings); shorten it";
        });
        const int32_t room =
            max_generated_tokens(*m, static_cast<int64_t>(prompt.size()), a->max_new);
        if (room < a->max_new)
          std::cerr << "Note: at most " << room << " new tokens (--max-new-tokens " << a->max_new
                    << "): the prompt's " << prompt.size() << " tokens and the text must fit the "
                    << "model's context of " << m->config().max_position_embeddings << " tokens\n";
        GenerateOptions o;
        o.max_new_tokens = a->max_new;
        o.min_new_tokens = a->min_new;
        o.sampling = a->s;
        o.stop_tokens = stop;
        if (!a->allow_special) {
          const int32_t vocab = m->config().vocab_size;
          o.suppress_tokens = tok ? non_text_token_ids(*tok, vocab) : std::vector<int32_t>{};
          if (const int32_t bos = m->config().bos_token_id; bos >= 0 && bos < vocab)
            o.suppress_tokens.push_back(bos);
          std::erase_if(o.suppress_tokens, [&](int32_t id) {
            return std::find(o.stop_tokens.begin(), o.stop_tokens.end(), id) != o.stop_tokens.end();
          });
        }
        std::unique_ptr<JsonConstraint> constraint;
        if (!a->json_schema.empty()) {
          check(tok != nullptr, "--json-schema needs the model's tokenizer");
          check(a->min_new == 0,
                "--min-new-tokens and --json-schema exclude each other (a "
                "finished JSON value allows only EOS)");
          const std::string text = read_input_file(a->json_schema, "--json-schema");
          nlohmann::json schema;
          try {
            schema = nlohmann::json::parse(text);
          } catch (const nlohmann::json::exception&) {
            throw Error("--json-schema " + path_to_utf8(a->json_schema) + ": not valid JSON");
          }
          try {
            constraint = std::make_unique<JsonConstraint>(
                std::make_shared<const JsonSchema>(schema),
                std::make_shared<const TokenTexts>(*tok), "", o.stop_tokens);
          } catch (const Error& e) {
            throw Error("--json-schema " + path_to_utf8(a->json_schema) + ": " + e.what());
          }
          o.constraint = constraint.get();
        }
        size_t key_index = 0;
        if (ring) {
          key_index = keyring_pick(keyring_rotation_secret(keys.secrets), a->s.seed, prompt,
                                   keys.secrets.size());
          key = keys.secrets[key_index];
        }
        std::vector<int32_t> out;
        std::optional<Watermarker> wm;
        const auto t0 = std::chrono::steady_clock::now();
        if (watermarking) {
          wm.emplace(*m, key, a->wm.config(watermark_mode_from_name(a->watermark), *m));
          out = wm->generate(*m, prompt, o);
        } else {
          out = generate(*m, prompt, o);
        }
        const double secs =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        // The continuation keeps its leading space: prompt + text is the real string.
        const std::string text = tok ? tok->decode_continuation(out, true) : std::string();
        if (a->json) {
          nlohmann::json j{{"prompt_tokens", prompt},
                           {"tokens", out},
                           {"seconds", secs},
                           {"load", a->model.load_json()}};
          if (tok) j["text"] = text;
          if (text_prompt) j["prompt"] = a->prompt;
          if (wm) {
            j["watermark"] = watermark_json(wm->config(), wm->router_hash());
            // The operator's record; a service must not tell the client (docs/THREAT_MODEL.md).
            if (ring)
              j["watermark"]["keyring"] = {{"keys", keys.ids.size()},
                                           {"key_id", keys.ids[key_index]}};
          } else {
            j["watermark"] = {{"mode", "none"}, {"router_hash", router_hash(*m)}};
          }
          std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
        } else if (tok) {
          std::cout << text << "\n";
        } else {
          for (size_t i = 0; i < out.size(); ++i) std::cout << (i ? "," : "") << out[i];
          std::cout << "\n";
        }
        return 0;
      };
    }};

}  // namespace
}  // namespace epwa::cli
