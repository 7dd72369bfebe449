#include "common.hpp"

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "epwa/error.hpp"
#include "epwa/files.hpp"
#include "epwa/platform.hpp"
#include "epwa/session.hpp"
#include "epwa/thread_pool.hpp"
#include "epwa/watermark.hpp"

namespace epwa::cli {

nlohmann::ordered_json parse_json_file(const std::string& path, const char* flag) {
  const std::string text = read_input_file(path_from_utf8(path), flag);
  try {
    return nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string(flag) + " '" + path + "': not valid JSON (" + e.what() + ")");
  }
}

std::string chat_template_source(const std::filesystem::path& model, const std::string& file,
                                 const char* flag) {
  if (!file.empty()) return read_input_file(path_from_utf8(file), flag);
  auto found = find_chat_template(model);
  check(found.has_value(), [&] {
    return "the model " + path_to_utf8(model) +
           " has no chat template (tokenizer_config.json, chat_template.jinja or GGUF "
           "tokenizer.chat_template); give one with " +
           flag + " FILE";
  });
  return *found;
}

void read_conversation(const std::string& file, ChatInput& in) {
  const auto body = parse_json_file(file, "--messages");
  const bool is_request = body.is_object() && body.contains("messages");
  in.messages = normalize_chat_messages(is_request ? body["messages"] : body);
  if (is_request && body.contains("tools")) in.tools = body["tools"];
}

std::filesystem::path resolve_model_path(const std::string& flag) {
  if (!flag.empty()) return path_from_utf8(flag);
  if (const auto env = get_env("EPW_MODEL_PATH"); env && !env->empty()) return path_from_utf8(*env);
  return path_from_utf8(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe";
}

void ModelArgs::add(CLI::App& app) {
  app.add_option("--model", model,
                 "HF folder or .gguf file (default: $EPW_MODEL_PATH, then the bundled model)");
  auto flag = [&](const char* name, std::optional<bool>& target, const char* help) {
    app.add_flag_function(
        name, [&target](int64_t count) { target = count > 0; }, help);
  };
  flag("--load-in-4bit", load_in_4bit, "weights in 4 bits (Q4_0); default $EPW_LOAD_IN_4BIT");
  flag("--load-in-8bit", load_in_8bit, "weights in 8 bits (Q8_0); default $EPW_LOAD_IN_8BIT");
  flag("--fast-loading", fast_loading,
       "4-bit through a cached quantized GGUF; default $EPW_FAST_LOADING");
  flag("--cpu", cpu, "run on the CPU even where a GPU is usable; default $EPW_USE_CPU");
  app.add_option("--load", load_mode,
                 "loading mode: standard, fast, 4bit, 8bit or auto (wins over the other flags)")
      ->check(CLI::IsMember({"standard", "fast", "4bit", "8bit", "auto"}));
  app.add_flag("--no-cache", no_cache, "fast mode: neither read nor write the quantized cache");
  app.add_option("--cache-dir", cache_dir,
                 "fast mode's cache folder (default $XDG_CACHE_HOME/epwa or ~/.cache/epwa)");
  app.add_flag("--quiet,-q", quiet, "do not print the load time statistics");
}

ResolvedLoad ModelArgs::resolved() const {
  LoadFlags f;
  f.load_in_4bit = load_in_4bit, f.load_in_8bit = load_in_8bit, f.fast_loading = fast_loading,
  f.cpu = cpu;
  if (!load_mode.empty()) f.load = load_mode;
  if (!model.empty()) f.model = model;
  ResolvedLoad r = resolve_load(f);
  r.options.use_cache = !no_cache;
  if (!cache_dir.empty()) r.options.cache_dir = path_from_utf8(cache_dir);
  return r;
}

std::filesystem::path ModelArgs::path() const {
  return resolve_model_path(resolved().model.value_or(""));
}

std::unique_ptr<Model> ModelArgs::load() const {
  using Clock = std::chrono::steady_clock;
  auto secs = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  State& st = *state_;
  st = State{};
  st.resolved = resolved();
  for (const std::string& w : st.resolved.warnings) std::fprintf(stderr, "%s\n", w.c_str());
  const std::filesystem::path path = resolve_model_path(st.resolved.model.value_or(""));

  const auto t0 = Clock::now();
  try {
    st.tokenizer = load_tokenizer(path);
  } catch (const std::exception& e) {
    st.tokenizer_error = e.what();
  }
  const auto t1 = Clock::now();
  auto m = Model::load(path, st.resolved.options, &st.report);
  const auto t2 = Clock::now();
  st.router_hash = epwa::router_hash(*m);
  const auto t3 = Clock::now();
  st.times = {secs(t0, t1), secs(t1, t2), secs(t2, t3), secs(t0, t3)};
  if (!quiet && !json_stats) std::fputs(format_load_times(st.times).c_str(), stderr);
  return m;
}

const Tokenizer& ModelArgs::tokenizer() const {
  if (!state_->tokenizer)
    throw Error(state_->tokenizer_error.empty() ? "no tokenizer loaded (load the model first)"
                                                : state_->tokenizer_error);
  return *state_->tokenizer;
}

nlohmann::json ModelArgs::load_json() const {
  const State& st = *state_;
  const LoadReport& r = st.report;
  nlohmann::json j{{"mode", std::string(load_mode_name(r.requested))},
                   {"effective", r.effective},
                   {"cpu", r.cpu},
                   {"device", r.device},
                   {"device_why", r.device_why},
                   {"sources", st.resolved.sources},
                   {"cache", r.cache},
                   {"reason", r.reason},
                   {"warnings", r.warnings},
                   {"weight_bytes", r.weight_bytes},
                   {"bytes_by_type", r.bytes_by_type},
                   {"router_hash", st.router_hash},
                   {"load_time_statistics",
                    {{"tokenizer_s", st.times.tokenizer_s},
                     {"model_s", st.times.model_s},
                     {"router_hash_s", st.times.router_hash_s},
                     {"total_s", st.times.total_s},
                     {"text", format_load_times(st.times)}}}};
  if (!r.cache_path.empty()) j["cache_path"] = path_to_utf8(r.cache_path);
  return j;
}

namespace {
template <typename T>
std::vector<T> parse_list(const std::string& s, const char* what) {
  std::vector<T> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    std::string item = s.substr(pos, end - pos);
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    T v{};
    const auto r = std::from_chars(item.data(), item.data() + item.size(), v);
    check(!item.empty() && r.ec == std::errc() && r.ptr == item.data() + item.size(),
          std::string("invalid ") + what + " '" + item + "' in list '" + s + "'");
    out.push_back(v);
    pos = end + 1;
  }
  return out;
}
}  // namespace

std::vector<int32_t> parse_token_list(const std::string& s) {
  return parse_list<int32_t>(s, "token id");
}
std::vector<float> parse_float_list(const std::string& s) {
  return parse_list<float>(s, "number");
}

namespace {
// A validator from a parse function that throws Error.
template <class Parse>
CLI::Validator validator(std::string desc, Parse parse) {
  return CLI::Validator(
      [parse](std::string& text) {
        try {
          parse(text);
        } catch (const Error& e) {
          return std::string(e.what());
        }
        return std::string();
      },
      std::move(desc));
}
}  // namespace

CLI::Validator whole_number(int64_t lo, int64_t hi) {
  using L = std::numeric_limits<int64_t>;
  std::string desc = lo == L::min()   ? ""
                     : hi == L::max() ? ">= " + std::to_string(lo)
                                      : std::to_string(lo) + " to " + std::to_string(hi);
  return validator(desc, [lo, hi](const std::string& t) { parse_whole_number(t, lo, hi); });
}

CLI::Validator unsigned_number() {
  return validator("", [](const std::string& t) { parse_unsigned_number(t); });
}

CLI::Validator real_number(RealRange range) {
  std::string desc = describe(range);
  desc = desc == "a number" ? "" : desc.substr(std::string("a number ").size());
  if (desc.starts_with("of ")) desc.erase(0, 3);
  return validator(desc, [range](const std::string& t) { parse_real_number(t, range); });
}

CLI::Validator non_empty() {
  return validator("", [](const std::string& t) { check(!t.empty(), "must not be empty"); });
}

CLI::Validator existing_file() {
  return validator("", [](const std::string& t) {
    const std::filesystem::path p = path_from_utf8(t);
    check(std::filesystem::exists(p), "no such file: " + t);
    check(std::filesystem::is_regular_file(p), "not a regular file: " + t);
  });
}

CLI::Option* add_path_option(CLI::App& app, const std::string& name, std::filesystem::path& target,
                             const std::string& help) {
  return app.add_option_function<std::string>(
      name, [&target](const std::string& s) { target = path_from_utf8(s); }, help);
}

void add_threads_option(CLI::App& app, int32_t& threads) {
  app.add_option("-t,--threads", threads, "threads (default $EPWA_THREADS, else all cores)")
      ->check(whole_number(0, 1024));
}

void start_thread_pool(int32_t threads) {
  // The pool reads EPWA_THREADS when it starts.
  if (threads > 0) set_env("EPWA_THREADS", std::to_string(threads));
  check(threads == 0 || ThreadPool::global().size() == threads,
        "-t: the thread pool already runs " + std::to_string(ThreadPool::global().size()) +
            " threads");
}

void check_value_syntax(CLI::App& app) {
  for (CLI::Option* o : app.get_options()) {
    if (o->get_expected_min() == 0) continue;  // a flag
    const std::string type = o->get_type_name();
    if (type == "INT") o->check(whole_number());
    if (type == "UINT") o->check(unsigned_number());
    if (type == "FLOAT") o->check(real_number());
    if (type == "TEXT") o->check(non_empty());
  }
  for (CLI::App* sub : app.get_subcommands({})) check_value_syntax(*sub);
}

std::string plain_parse_error(const CLI::ParseError& e) {
  const std::string what = e.what();
  // "NAME: At Most 1 required but received N"
  if (const size_t at = what.find(": At Most 1 required but received "); at != std::string::npos)
    return what.substr(0, at) + " is given " + what.substr(what.rfind(' ') + 1) +
           " times: give it once";
  // "Could not convert: NAME = VALUE": the text passed the syntax check, so the number is beyond
  // what the option's type holds (32 bits for most whole numbers).
  if (what.starts_with("Could not convert: ")) {
    const std::string rest = what.substr(19);
    const size_t eq = rest.find(" = ");
    if (eq != std::string::npos)
      return rest.substr(0, eq) + ": '" + rest.substr(eq + 3) +
             "' is too large for this option (whole numbers here are 32-bit: at most 2147483647 "
             "in size)";
  }
  return what;
}

}  // namespace epwa::cli
