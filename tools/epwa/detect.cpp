// epwa detect: test a text (or token ids) for the EPW-A watermark, one text or a JSON-lines batch.
#include <fmt/core.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "command.hpp"
#include "common.hpp"
#include "epwa/batch.hpp"
#include "epwa/error.hpp"
#include "epwa/files.hpp"
#include "epwa/session.hpp"
#include "epwa/thread_pool.hpp"
#include "epwa/tokenizer.hpp"
#include "pepi_args.hpp"
#include "progress.hpp"
#include "watermark_args.hpp"

namespace epwa::cli {
namespace {

struct Args {
  ModelArgs model;
  WatermarkArgs wm;
  PepiArgs pepi;
  std::string method = "full", scheme = "green";
  std::string prompt, prompt_tokens, text, file, tokens, jsonl, output;
  bool resume = false;
  int64_t sample = 64;  // CSPV, as `epwa eval`
  DetectOptions opt;
  bool json = false;
};

// One input: the context ids (BOS and prompt) and the ids of the text to score.
struct Input {
  std::vector<int32_t> context, text;
};

struct Env {
  Model* model = nullptr;
  const Tokenizer* tok = nullptr;
  const Detector* det = nullptr;
  const KeyringDetector* ring = nullptr;  // with --keyring, instead of det
  int32_t layer = 0;
};

const Tokenizer& need(const Tokenizer* tok) {
  check(tok != nullptr, "the model has no usable tokenizer: give token ids (--tokens)");
  return *tok;
}

std::vector<int32_t> context_ids(const Env& env, const std::string* prompt,
                                 const std::vector<int32_t>* ids) {
  if (ids != nullptr) return *ids;
  if (prompt != nullptr) {
    check(!prompt->empty(), "the prompt is empty");
    return need(env.tok).encode(*prompt, true, false);
  }
  // Unknown prompt: BOS only, so the first token of the text is scored too.
  const int32_t bos = env.tok ? env.tok->bos_id() : env.model->config().bos_token_id;
  return bos >= 0 ? std::vector<int32_t>{bos} : std::vector<int32_t>{};
}

std::vector<int32_t> text_ids(const Env& env, const std::string& text) {
  check(!text.empty(), "the text is empty");
  auto ids = need(env.tok).encode(text, false, false);
  check(!ids.empty(), "the text encodes to no tokens");
  return ids;
}

nlohmann::json run_one(const Env& env, const Input& in) {
  check(!in.text.empty(), "no tokens to test");
  std::vector<int32_t> seq = in.context;
  seq.insert(seq.end(), in.text.begin(), in.text.end());
  const auto prompt = static_cast<int64_t>(in.context.size());
  nlohmann::json j = env.ring
                         ? to_json(detect_tokens(*env.model, *env.ring, seq, prompt, env.layer))
                         : to_json(detect_tokens(*env.model, *env.det, seq, prompt, env.layer));
  j["prompt_tokens"] = in.context.size();
  j["text_tokens"] = in.text.size();
  if (env.tok != nullptr && j.contains("tokens"))
    for (auto& t : j["tokens"]) t["piece"] = env.tok->token_to_piece(t["token"].get<int32_t>());
  return j;
}

// A JSON-lines input line (parse_batch_line): an object with "tokens" (ids of the text) or "text",
// and optionally "prompt_tokens" (ids) or "prompt" (text) -- `epwa generate --json` lines qualify;
// or plain text, the text itself.
Input batch_input(const Env& env, const BatchLine& b) {
  Input in;
  if (!b.is_object) {
    in.context = context_ids(env, nullptr, nullptr);
    in.text = text_ids(env, b.text);
    return in;
  }
  const nlohmann::json& j = b.object;
  if (j.contains("prompt_tokens")) {
    const auto p = j.at("prompt_tokens").get<std::vector<int32_t>>();
    in.context = context_ids(env, nullptr, &p);
  } else if (j.contains("prompt")) {
    const auto p = j.at("prompt").get<std::string>();
    in.context = context_ids(env, &p, nullptr);
  } else {
    in.context = context_ids(env, nullptr, nullptr);
  }
  if (j.contains("tokens")) {
    in.text = j.at("tokens").get<std::vector<int32_t>>();
  } else {
    check(j.contains("text"), "line has neither \"tokens\" nor \"text\"");
    in.text = text_ids(env, j.at("text").get<std::string>());
  }
  return in;
}

std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string number(const nlohmann::json& v) {
  return v.is_number() ? fmt::format("{:.2f}", v.get<double>()) : "n/a";
}

void print_human(const nlohmann::json& j) {
  fmt::print(
      "{}: {} ({}): z={} log10_p={}, {} green of {} tokens scored (green fraction {}, gamma "
      "{})\n",
      j["method"].get<std::string>(), j["detected"].get<bool>() ? "WATERMARKED" : "not watermarked",
      j["reason"].get<std::string>(), number(j["z"]), number(j["log10_p"]), j["g"].get<int64_t>(),
      j["n"].get<int64_t>(), number(j["green_fraction"]), j["gamma"].get<double>());
  if (j.contains("keyring")) {
    const nlohmann::json& k = j["keyring"];
    fmt::print(
        "keyring: best of {} keys '{}', z threshold {} (Bonferroni), p raw {:.3g}, corrected "
        "{:.3g}\n",
        k["keys"].get<int32_t>(), k["key_id"].get<std::string>(), number(k["z_threshold"]),
        k["p_raw"].get<double>(), k["p_corrected"].get<double>());
  }
}

// Exit status for scripts, as grep's: 0 watermarked, 1 not watermarked (main's errors are 2).
int exit_status(bool detected) {
  return detected ? 0 : 1;
}

const Command kDetect{
    "detect", "Detect the EPW-A watermark in a text or token ids", [](CLI::App& app) {
      auto a = std::make_shared<Args>();
      a->model.add(app);
      a->wm.add(app, false);
      app.add_option("--method", a->method, "full, cspv, weighted, pepi (black-box: --oracle)")
          ->check(CLI::IsMember({"full", "cspv", "weighted", "pepi"}));
      app.add_option("--scheme", a->scheme,
                     "green (texts of --watermark gsg or ewp) or exp (of --watermark exp; "
                     "methods full and pepi)")
          ->check(CLI::IsMember({"green", "exp"}));
      auto* p = app.add_option("--prompt", a->prompt, "prompt text (context only, BOS added)");
      app.add_option("--prompt-tokens", a->prompt_tokens, "context token ids, BOS included")
          ->excludes(p);
      auto* t = app.add_option("--text", a->text, "text to test");
      auto* f =
          app.add_option("--file", a->file, "file whose content is the text to test")->excludes(t);
      auto* k =
          app.add_option("--tokens", a->tokens, "token ids of the text (context added in front)")
              ->excludes(t)
              ->excludes(f);
      auto* jl = app.add_option("--jsonl", a->jsonl,
                                "batch: one input per line (JSON with "
                                "tokens/text[/prompt_tokens/prompt], or plain "
                                "text); one JSON result line per input line")
                     ->excludes(t)
                     ->excludes(f)
                     ->excludes(k);
      auto* o = app.add_option("--output,-o", a->output,
                               "batch: append the result lines to this file (flushed line by line) "
                               "instead of printing them; it must not exist unless --resume")
                    ->needs(jl);
      app.add_flag("--resume", a->resume,
                   "batch: keep the results already in --output and score only the input lines "
                   "not there (matched by \"id\", else by line number)")
          ->needs(o);
      app.add_option("--sample", a->sample, "CSPV: number of tokens to score")
          ->check(whole_number(1));
      app.add_flag("--count-repeats", a->opt.count_repeats,
                   "score repeated (expert, token) pairs too");
      app.add_flag("--tokens-detail", a->opt.tokens_detail, "per-token detail in the JSON output");
      app.add_option("--threshold", a->opt.threshold, "z threshold of the decision")
          ->check(real_number({.lo = -100, .hi = 100}));
      app.add_flag("--json", a->json, "print JSON");
      a->pepi.add(app);
      return [a, &app] {
        const int inputs = static_cast<int>(app.count("--text") + app.count("--file") +
                                            app.count("--tokens") + app.count("--jsonl"));
        check(inputs == 1, "give one of --text, --file, --tokens or --jsonl");
        a->opt.method = detect_method_from_name(a->method);
        a->opt.scheme = detect_scheme_from_name(a->scheme);
        check(a->opt.method == DetectMethod::Cspv || app.count("--sample") == 0,
              "--sample is for --method cspv");
        if (a->opt.method == DetectMethod::Cspv) a->opt.sample = a->sample;
        a->opt.min_entropy = a->wm.min_entropy;
        const bool use_ring = !a->wm.keyring.empty();
        const WatermarkArgs::Keys keys = use_ring ? a->wm.resolve_keyring() : WatermarkArgs::Keys{};
        const std::string key = use_ring ? std::string() : a->wm.resolve_key();
        // A batch's files are checked before the model loads.
        std::ifstream in;
        BatchProgress done;
        std::ofstream file;
        std::ostream* out = &std::cout;
        if (app.count("--jsonl")) {
          in = open_input_file(path_from_utf8(a->jsonl), "--jsonl file");
          if (!a->output.empty()) {
            check_output_not_input(path_from_utf8(a->output), {path_from_utf8(a->jsonl)},
                                   "--output");
            if (a->resume) {
              done = resume_batch_output(path_from_utf8(a->output));
            } else {
              check(!std::filesystem::exists(path_from_utf8(a->output)),
                    "--output '" + a->output +
                        "' exists: give --resume to continue it, or another path");
            }
            file.open(path_from_utf8(a->output), std::ios::binary | std::ios::app);
            check(file.good(), "--output '" + a->output + "' cannot be written");
            out = &file;
          }
        }
        const bool single_json = a->json && app.count("--jsonl") == 0;
        a->model.json_stats = single_json;  // --json: the load statistics go in its "load" field
        auto m = a->model.load();
        std::unique_ptr<Tokenizer> tok;
        try {
          tok = load_tokenizer(resolve_model_path(a->model.model));
        } catch (const Error&) {
          if (app.count("--tokens") == 0 && app.count("--jsonl") == 0) throw;
        }
        std::optional<Detector> det;
        std::optional<KeyringDetector> ring;
        if (use_ring) {
          std::vector<std::shared_ptr<const GreenLists>> lists;
          for (const std::string& s : keys.secrets)
            lists.push_back(make_green_lists(*m, s, a->wm.gamma, a->wm.context_buckets));
          ring.emplace(keys.ids, std::move(lists), a->opt);
          ring->set_parallel_for(
              [](int64_t n, const auto& fn) { ThreadPool::global().parallel_for(n, fn); });
        } else {
          det.emplace(make_green_lists(*m, key, a->wm.gamma, a->wm.context_buckets), a->opt);
        }
        if (a->opt.method == DetectMethod::Pepi) {
          auto predictor = a->pepi.predictor(*m, resolve_model_path(a->model.model));
          if (ring)
            ring->set_expert_predictor(predictor);
          else
            det->set_expert_predictor(predictor);
        }
        Env env{m.get(), tok.get(), det ? &*det : nullptr, ring ? &*ring : nullptr,
                model_router_layer(*m, a->wm.router_layer)};
        std::vector<int32_t> pids;
        if (app.count("--prompt-tokens")) pids = parse_token_list(a->prompt_tokens);
        const std::string* prompt = app.count("--prompt") ? &a->prompt : nullptr;
        const std::vector<int32_t>* prompt_ids = app.count("--prompt-tokens") ? &pids : nullptr;

        if (app.count("--jsonl")) {
          std::string line;
          int64_t lineno = 0;
          // With --output the terminal shows how far the file is (results go to the file).
          TerminalProgress progress("detecting", a->model.quiet || a->output.empty());
          std::error_code size_error;
          const auto bytes = static_cast<int64_t>(
              std::filesystem::file_size(path_from_utf8(a->jsonl), size_error));
          while (std::getline(in, line)) {
            ++lineno;
            if (!size_error)
              progress.update(in.eof() ? bytes : static_cast<int64_t>(in.tellg()), bytes, " bytes");
            BatchLine b;
            nlohmann::json j;
            try {
              b = parse_batch_line(line);
            } catch (const Error& e) {
              j = {{"error", e.what()}};
            }
            if (done.take(batch_key(b.object, lineno))) continue;
            if (j.empty()) {
              try {  // one bad line does not stop the batch
                Input x = batch_input(env, b);
                if (prompt != nullptr || prompt_ids != nullptr)
                  x.context = context_ids(env, prompt, prompt_ids);
                j = run_one(env, x);
              } catch (const std::exception& e) {
                j = {{"error", e.what()}};
              }
            }
            done.any_error = done.any_error || j.contains("error");
            done.any_detected = done.any_detected || j.value("detected", false);
            j["line"] = lineno;
            if (b.is_object && b.object.contains("id")) j["id"] = b.object["id"];
            // Flushed line by line: an interrupted batch keeps every finished result.
            *out << dump(j) << '\n' << std::flush;
            check(out->good(), "writing the results failed");
          }
          progress.finish();
          check(!in.bad(), "--jsonl file '" + a->jsonl + "' cannot be read");
          // A batch: 2 when a line failed (even with others scored), else as for one text, on
          // whether any line is watermarked; the results kept by --resume count too.
          return done.any_error ? 2 : exit_status(done.any_detected);
        }
        Input x;
        x.context = context_ids(env, prompt, prompt_ids);
        if (app.count("--tokens")) {
          x.text = parse_token_list(a->tokens);
        } else {
          x.text = text_ids(env, app.count("--text")
                                     ? a->text
                                     : read_input_file(path_from_utf8(a->file), "--file"));
        }
        nlohmann::json j = run_one(env, x);
        j["router_hash"] = router_hash(*m);
        if (single_json) j["load"] = a->model.load_json();
        if (a->json) {
          std::cout << dump(j) << "\n";
        } else {
          print_human(j);
        }
        return exit_status(j["detected"].get<bool>());
      };
    }};

}  // namespace
}  // namespace epwa::cli
