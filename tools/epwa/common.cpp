#include "common.hpp"

#include <charconv>
#include <cstdlib>

#include "epwa/error.hpp"

namespace epwa::cli {

std::filesystem::path resolve_model_path(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("EPW_MODEL_PATH"); env && *env) return env;
  return std::filesystem::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe";
}

void ModelArgs::add(CLI::App& app) {
  app.add_option("--model", model, "HF folder or .gguf file (default: $EPW_MODEL_PATH, then the bundled model)");
}

std::unique_ptr<Model> ModelArgs::load() const { return Model::load(resolve_model_path(model)); }

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

std::vector<int32_t> parse_token_list(const std::string& s) { return parse_list<int32_t>(s, "token id"); }
std::vector<float> parse_float_list(const std::string& s) { return parse_list<float>(s, "number"); }

}  // namespace epwa::cli
