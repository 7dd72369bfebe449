// Helpers shared by the subcommands: model loading (path and loading-mode options), token lists,
// output.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "epwa/chat_template.hpp"
#include "epwa/load_options.hpp"
#include "epwa/model.hpp"
#include "epwa/numbers.hpp"
#include "epwa/platform.hpp"
#include "epwa/tokenizer.hpp"

namespace epwa::cli {

// The model options every command shares: --model and the loading modes (--load-in-4bit,
// --load-in-8bit, --fast-loading, --load, --cpu, --no-cache, --cache-dir, --quiet), each flag
// winning over its EPW_* variable (docs/LOADING.md).
struct ModelArgs {
  std::string model;
  std::optional<bool> load_in_4bit, load_in_8bit, fast_loading, cpu;
  std::string load_mode;  // --load
  std::string cache_dir;
  bool no_cache = false;
  bool quiet = false;       // hides the statistics block
  bool json_stats = false;  // a command printing JSON sets this: the block goes in load_json()

  void add(CLI::App& app);
  // Resolves the settings, loads the model (and, timed for the statistics block, its tokenizer
  // when one is found beside it), hashes the routers, prints warnings and the block to stderr.
  std::unique_ptr<Model> load() const;

  // The model path these settings resolve to (flag, variable or the bundled model).
  std::filesystem::path path() const;

  // After load(): the tokenizer (throws Error with the reason when none could be loaded), the
  // resolved settings, the report and the timings.
  const Tokenizer& tokenizer() const;
  ResolvedLoad resolved() const;
  const LoadReport& report() const { return state_->report; }
  const LoadTimes& times() const { return state_->times; }
  const std::string& router_hash() const { return state_->router_hash; }
  // {"mode", "effective", "cpu", "device", "sources", "cache", "reason", "warnings",
  //  "weight_bytes", "bytes_by_type", "router_hash", "load_time_statistics": {...}}
  nlohmann::json load_json() const;

 private:
  struct State {
    ResolvedLoad resolved;
    LoadReport report;
    LoadTimes times;
    std::string router_hash;
    std::shared_ptr<Tokenizer> tokenizer;
    std::string tokenizer_error;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

// --model flag, else $EPW_MODEL_PATH, else the bundled model.
std::filesystem::path resolve_model_path(const std::string& flag);
// A JSON file given with `flag`; throws Error naming the flag and file when unreadable or not JSON.
nlohmann::ordered_json parse_json_file(const std::string& path, const char* flag);
// The chat template for `model`: the file given with `flag` when `file` is not empty, else the
// model's own; throws Error naming the model and the flag when it has none.
std::string chat_template_source(const std::filesystem::path& model, const std::string& file,
                                 const char* flag);
// A --messages file into `in`: an array of messages, or a chat request body with "messages" (and
// "tools").
void read_conversation(const std::string& file, ChatInput& in);
// "1,5,9" -> {1, 5, 9}; throws Error on anything else.
std::vector<int32_t> parse_token_list(const std::string& s);
// "0.5,1,2" -> floats; throws Error on anything else.
std::vector<float> parse_float_list(const std::string& s);

// Option validators whose messages give the allowed values in plain words (epwa/numbers.hpp);
// CLI11 puts the flag's name in front.
CLI::Validator whole_number(int64_t lo = std::numeric_limits<int64_t>::min(),
                            int64_t hi = std::numeric_limits<int64_t>::max());
CLI::Validator unsigned_number();  // 0 to 2^64 - 1: seeds
CLI::Validator real_number(RealRange range = {});
CLI::Validator non_empty();
// An existing regular file, the name read as UTF-8 (CLI::ExistingFile reads it in the ANSI code
// page on Windows).
CLI::Validator existing_file();
// A file or folder option stored as a path: CLI11 would build the path from the argument in the
// ANSI code page on Windows; this reads it as UTF-8 (path_from_utf8), as every argument is.
CLI::Option* add_path_option(CLI::App& app, const std::string& name, std::filesystem::path& target,
                             const std::string& help);
// Every option of `app` and its subcommands gets the check its type asks for (a whole number, a
// non-negative whole number, a finite number, a non-empty text), after the checks it already has.
void check_value_syntax(CLI::App& app);
// -t/--threads: the kernels' pool size (0: $EPWA_THREADS, else every core). Call before the first
// kernel runs; starts the pool with that many threads.
void add_threads_option(CLI::App& app, int32_t& threads);
void start_thread_pool(int32_t threads);
// The message of a CLI11 parse error in plain words (a repeated flag, a value out of range).
std::string plain_parse_error(const CLI::ParseError& e);

}  // namespace epwa::cli
