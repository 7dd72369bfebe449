// Loading-mode settings: parsing EPW_* values, the flag/variable priority rules, the statistics
// block and the fast-load cache key.
#include "epwa/load_options.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>

#include "epwa/config.hpp"
#include "epwa/error.hpp"
#include "epwa/platform.hpp"

namespace epwa {

std::string_view load_mode_name(LoadMode m) {
  switch (m) {
    case LoadMode::Standard:
      return "standard";
    case LoadMode::Fast:
      return "fast";
    case LoadMode::Bits4:
      return "4bit";
    case LoadMode::Bits8:
      return "8bit";
    case LoadMode::Auto:
      return "auto";
  }
  return "standard";
}

LoadMode load_mode_from_name(std::string_view s) {
  for (LoadMode m :
       {LoadMode::Standard, LoadMode::Fast, LoadMode::Bits4, LoadMode::Bits8, LoadMode::Auto})
    if (s == load_mode_name(m)) return m;
  throw Error("unknown load mode '" + std::string(s) +
              "' (expected standard, fast, 4bit, 8bit or auto)");
}

std::string format_load_times(const LoadTimes& t) {
  char buf[256];
  std::snprintf(
      buf, sizeof buf,
      "=== Load time statistics ===\nTokenizer: %.2f s\nModel: %.2f s\nRouter hash: %.2f s\n"
      "Total load time: %.2f s\n============================\n",
      t.tokenizer_s, t.model_s, t.router_hash_s, t.total_s);
  return buf;
}

bool parse_bool_setting(std::string_view value, bool* recognised) {
  std::string v;
  for (char c : value)
    if (!std::isspace(static_cast<unsigned char>(c)))
      v += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (recognised) *recognised = true;
  if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "0" || v == "no" || v == "off" || v.empty()) return false;
  if (recognised) *recognised = false;
  return false;
}

ResolvedLoad resolve_load(const LoadFlags& flags,
                          const std::function<const char*(const char*)>& getenv_fn) {
  std::map<std::string, std::optional<std::string>> read;  // get_env's values, as UTF-8
  auto env = [&](const char* name) -> const char* {
    if (getenv_fn) return getenv_fn(name);
    const auto& v = read.try_emplace(name, get_env(name)).first->second;
    return v ? v->c_str() : nullptr;
  };
  ResolvedLoad r;
  auto env_bool = [&](const char* name) {
    const char* v = env(name);
    if (!v) return false;
    bool ok = true;
    const bool on = parse_bool_setting(v, &ok);
    if (!ok)
      r.warnings.push_back(
          "Warning: " + std::string(name) + "='" + v +
          "' is not a recognised value (true/1/yes/on or false/0/no/off); treated as off");
    return on;
  };
  // Variables are read (and warned about) even when a flag replaces them, so a typo never goes
  // unseen.
  const bool e4 = env_bool("EPW_LOAD_IN_4BIT"), e8 = env_bool("EPW_LOAD_IN_8BIT"),
             ef = env_bool("EPW_FAST_LOADING"), ecpu = env_bool("EPW_USE_CPU");

  const bool mode_flag =
      flags.load || flags.load_in_4bit || flags.load_in_8bit || flags.fast_loading;
  if (flags.load) {
    r.options.mode = load_mode_from_name(*flags.load);
    r.sources["mode"] = "flag --load";
  } else if (mode_flag) {
    // The command line states the mode: the mode variables are ignored.
    if (flags.load_in_4bit.value_or(false)) {
      r.options.mode = LoadMode::Bits4, r.sources["mode"] = "flag --load-in-4bit";
    } else if (flags.load_in_8bit.value_or(false)) {
      r.options.mode = LoadMode::Bits8, r.sources["mode"] = "flag --load-in-8bit";
    } else if (flags.fast_loading.value_or(false)) {
      r.options.mode = LoadMode::Fast, r.sources["mode"] = "flag --fast-loading";
    } else {
      r.options.mode = LoadMode::Standard, r.sources["mode"] = "flag (all mode flags off)";
    }
  } else if (e4) {
    r.options.mode = LoadMode::Bits4, r.sources["mode"] = "variable EPW_LOAD_IN_4BIT";
  } else if (e8) {
    r.options.mode = LoadMode::Bits8, r.sources["mode"] = "variable EPW_LOAD_IN_8BIT";
  } else if (ef) {
    r.options.mode = LoadMode::Fast, r.sources["mode"] = "variable EPW_FAST_LOADING";
  } else {
    r.options.mode = LoadMode::Standard, r.sources["mode"] = "default";
  }

  if (flags.cpu) {
    r.options.cpu = *flags.cpu, r.sources["cpu"] = "flag --cpu";
  } else if (env("EPW_USE_CPU")) {
    r.options.cpu = ecpu, r.sources["cpu"] = "variable EPW_USE_CPU";
  } else {
    r.options.cpu = false, r.sources["cpu"] = "default";
  }

  if (flags.model && !flags.model->empty()) {
    r.model = *flags.model, r.sources["model"] = "flag --model";
  } else if (const char* m = env("EPW_MODEL_PATH"); m && *m) {
    r.model = std::string(m), r.sources["model"] = "variable EPW_MODEL_PATH";
  } else {
    r.sources["model"] = "default";
  }
  return r;
}

bool standard_mode_quantizes(const ModelConfig& c) {
  return c.architecture.find("Mixtral") != std::string::npos && c.hidden_size >= 4096;
}

std::filesystem::path default_cache_dir() {
  if (const auto x = get_env("XDG_CACHE_HOME"); x && !x->empty())
    return path_from_utf8(*x) / "epwa";
  if (const auto h = get_env("HOME"); h && !h->empty())
    return path_from_utf8(*h) / ".cache" / "epwa";
  return std::filesystem::temp_directory_path() / "epwa-cache";
}

namespace {

// FNV-1a 64: a cache key, not a security boundary (size and mtime are part of the key too).
uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

// The bytes that describe a file's tensors: a safetensors JSON header, or a GGUF's first MiB
// (metadata and tensor infos).
std::string header_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  check(in.good(), "cannot read " + path_to_utf8(p));
  uint64_t n = 1 << 20;
  if (p.extension() == ".safetensors") {
    std::array<unsigned char, 8> len{};
    in.read(reinterpret_cast<char*>(len.data()), 8);
    check(in.gcount() == 8, "cannot read the header of " + path_to_utf8(p));
    n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
    n = std::min<uint64_t>(n, 100u << 20);
  }
  std::string buf(n, '\0');
  in.read(buf.data(), static_cast<std::streamsize>(n));
  buf.resize(static_cast<size_t>(in.gcount()));
  return buf;
}

}  // namespace

std::filesystem::path fast_cache_path(const std::filesystem::path& source,
                                      std::string_view precision,
                                      const std::filesystem::path& cache_dir) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  if (fs::is_directory(source)) {
    for (const auto& e : fs::directory_iterator(source))
      if (e.path().extension() == ".safetensors" || e.path().filename() == "config.json")
        files.push_back(e.path());
  } else {
    files.push_back(source);
    if (source.extension() == ".safetensors") files.push_back(source.parent_path() / "config.json");
  }
  std::sort(files.begin(), files.end());
  check(!files.empty(), "no model files in " + path_to_utf8(source));
  uint64_t h = 0xcbf29ce484222325ull;
  for (const fs::path& f : files) {
    const std::string name = path_to_utf8(f.filename());
    const uint64_t size = fs::file_size(f);
    const auto mtime = fs::last_write_time(f).time_since_epoch().count();
    const std::string head = header_bytes(f);
    h = fnv1a(h, name.data(), name.size());
    h = fnv1a(h, &size, sizeof size);
    h = fnv1a(h, &mtime, sizeof mtime);
    h = fnv1a(h, head.data(), head.size());
  }
  h = fnv1a(h, precision.data(), precision.size());
  const fs::path canon = fs::weakly_canonical(source);
  fs::path name = canon.filename();  // a path, not a string: it may hold any character
  if (name.empty()) name = canon.parent_path().filename();
  if (name.extension() == ".gguf" || name.extension() == ".safetensors") name = name.stem();
  const fs::path dir = cache_dir.empty() ? default_cache_dir() : cache_dir;
  char key[17];
  std::snprintf(key, sizeof key, "%016llx", static_cast<unsigned long long>(h));
  name += "-" + std::string(key) + "-" + std::string(precision) + ".gguf";
  return dir / name;
}

}  // namespace epwa
