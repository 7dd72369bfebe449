// load_tokenizer: picks the source by what the path is.
#include <nlohmann/json.hpp>

#include "epwa/error.hpp"
#include "epwa/gguf.hpp"
#include "epwa/platform.hpp"
#include "epwa/tokenizer.hpp"
#include "tokenizer/common.hpp"
#include "tokenizer/hf_json.hpp"

namespace epwa {

std::unique_ptr<Tokenizer> hf_tokenizer_from_json(std::string_view text, std::string name) {
  try {
    const auto j = nlohmann::json::parse(text);
    tok::HfParsed p = tok::parse_hf_tokenizer(j, name);
    return std::make_unique<tok::BpeTokenizer>(std::move(p.spec), name);
  } catch (const nlohmann::json::exception& e) {
    throw Error(name + ": malformed tokenizer.json: " + e.what());
  }
}

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path& path) {
  const std::string name = path_to_utf8(path);
  try {
    const auto j = nlohmann::json::parse(tok::read_file_bytes(path));
    tok::HfParsed p = tok::parse_hf_tokenizer(j, name);
    const auto cfg = path.parent_path() / "tokenizer_config.json";
    if (std::filesystem::exists(cfg))
      tok::apply_tokenizer_config(p, nlohmann::json::parse(tok::read_file_bytes(cfg)));
    return std::make_unique<tok::BpeTokenizer>(std::move(p.spec), name);
  } catch (const nlohmann::json::exception& e) {
    throw Error(name + ": malformed tokenizer.json: " + e.what());
  }
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& p) {
  namespace fs = std::filesystem;
  if (!fs::exists(p)) throw Error(path_to_utf8(p) + ": no such file or directory");
  if (fs::is_directory(p)) {
    if (fs::exists(p / "tokenizer.json")) return load_hf_tokenizer(p / "tokenizer.json");
    if (fs::exists(p / "tokenizer.model")) return load_sentencepiece(p / "tokenizer.model");
    for (const auto& e : fs::directory_iterator(p))
      if (e.path().extension() == ".gguf") return load_tokenizer(e.path());
    throw Error(path_to_utf8(p) + ": holds no tokenizer.json, tokenizer.model or .gguf file");
  }
  const auto ext = p.extension();
  if (ext == ".json") return load_hf_tokenizer(p);
  if (ext == ".tiktoken") return load_tiktoken(p);
  if (ext == ".gguf") {
    GgufReadOptions opts;
    opts.allow_unsupported_types = true;  // only the metadata matters here
    const GgufFile f(p, opts);
    return tokenizer_from_vocab(vocab_from_gguf(f), path_to_utf8(p));
  }
  return load_sentencepiece(p);
}

}  // namespace epwa
