// Loading modes (docs/LOADING.md): 4-bit, 8-bit, fast (4-bit with a quantized cache), standard,
// auto, and CPU; how flags and EPW_* variables pick them; the statistics a load reports.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace epwa {

enum class LoadMode : uint8_t { Standard, Fast, Bits4, Bits8, Auto };
std::string_view load_mode_name(LoadMode m);     // "standard", "fast", "4bit", "8bit", "auto"
LoadMode load_mode_from_name(std::string_view);  // inverse; throws Error on an unknown name

struct LoadOptions {
  LoadMode mode = LoadMode::Standard;
  bool cpu = false;  // run on the CPU even when a GPU backend is built and a device is present
  // Fast mode's cache folder; empty = $XDG_CACHE_HOME/epwa, else ~/.cache/epwa.
  std::filesystem::path cache_dir;
  bool use_cache = true;  // fast mode reads/writes the cache
  // Memory figure for the out-of-memory check and --load auto; nullopt = available_memory_bytes().
  std::optional<uint64_t> available_memory;
  // Receives each warning line (without newline); empty = print to stderr.
  std::function<void(const std::string&)> warn;
};

// What a load did, for the statistics block and `epwa info --json`.
struct LoadReport {
  LoadMode requested = LoadMode::Standard;
  std::string effective;  // "4bit", "8bit" or "stored": the precision the matrices got
  std::string reason;     // why (auto's choice, standard's rule, cache hit)
  bool cpu = false;
  std::string device;      // where the model runs (Backend::device()), "cpu" or "cuda:0 (...)"
  std::string device_why;  // why not on a GPU, when it runs on the CPU
  std::string cache;       // "hit", "miss" (written), "off" or "" (not fast mode)
  std::filesystem::path cache_path;
  uint64_t weight_bytes = 0;  // bytes of every weight tensor as held in memory
  std::map<std::string, uint64_t> bytes_by_type;
  std::vector<std::string> warnings;
  double model_s = 0, quantize_s = 0;
};

// Statistics block printed after a load. Times in seconds.
struct LoadTimes {
  double tokenizer_s = 0, model_s = 0, router_hash_s = 0, total_s = 0;
};
// The exact block of issue 3 ("=== Load time statistics ===" ... "============================"),
// each line ending in '\n'.
std::string format_load_times(const LoadTimes& t);

// Parses an EPW_* boolean: true/1/yes/on (any case, surrounding spaces ignored) -> true;
// false/0/no/off/"" -> false; anything else -> false and *recognised = false.
bool parse_bool_setting(std::string_view value, bool* recognised = nullptr);

// Command-line values; nullopt = not given. A given flag replaces its variable.
struct LoadFlags {
  std::optional<bool> load_in_4bit, load_in_8bit, fast_loading, cpu;
  std::optional<std::string> load;  // --load standard|fast|4bit|8bit|auto (wins over the others)
  std::optional<std::string> model;
};

// The settings a command loads with, and where each came from ("flag --x", "variable EPW_X",
// "default").
struct ResolvedLoad {
  LoadOptions options;
  std::optional<std::string> model;            // nullopt: the caller's default model
  std::map<std::string, std::string> sources;  // keys "mode", "cpu", "model"
  std::vector<std::string> warnings;           // unrecognised values, each naming its variable
};

// Applies the rules: mode priority 4BIT > 8BIT > FAST > standard, over the variables
// EPW_LOAD_IN_4BIT, EPW_LOAD_IN_8BIT, EPW_FAST_LOADING; a mode flag given on the command line
// replaces all the mode variables; --cpu replaces EPW_USE_CPU, --model EPW_MODEL_PATH.
// `getenv` returns nullptr for an unset variable (defaults to std::getenv).
ResolvedLoad resolve_load(const LoadFlags& flags,
                          const std::function<const char*(const char*)>& getenv = {});

// Standard mode's rule: 4-bit for Mixtral-scale models only (architecture Mixtral and hidden size
// >= 4096, i.e. the 8x7B/8x22B checkpoints the guide was written for), else the stored precision.
struct ModelConfig;
bool standard_mode_quantizes(const ModelConfig& c);

// Cache file name for a fast load of `source` in the given precision: keyed by the source files'
// sizes, mtimes and a hash of their headers. Throws Error when the source cannot be read.
std::filesystem::path fast_cache_path(const std::filesystem::path& source,
                                      std::string_view precision,
                                      const std::filesystem::path& cache_dir = {});
std::filesystem::path default_cache_dir();

class Model;
struct GgufExportOptions;
// Writes a loaded model's weights as a llama.cpp-convention GGUF (write_model_gguf). With
// o.matrix_type nullopt every tensor keeps the type it has in memory (fast mode's cache); else the
// matrices and the embedding get that type, a tensor whose rows do not fit its blocks gets
// llama.cpp's fallback (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0) or keeps its type: one note each
// is returned. Norms and routers are written as f32.
std::vector<std::string> save_model_gguf(const Model& m, const GgufExportOptions& o,
                                         const std::filesystem::path& out);
// Bytes of every weight tensor as held in memory, by type name ("bf16", "q4_0", ...); a tied
// output head is counted once.
std::map<std::string, uint64_t> weight_bytes_by_type(const Model& m);
// The block-quantized types among `m`'s weights as held in memory ("q8_0", ...; empty for a float
// model): quantizing such a model again compounds the rounding error.
std::vector<std::string> quantized_weight_types(const Model& m);

}  // namespace epwa
