// Reading an HF tokenizer.json into a BpeSpec (shared with the GGUF converter).
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "tokenizer/bpe_tokenizer.hpp"

namespace epwa::tok {

struct HfParsed {
  BpeSpec spec;
  std::string pre_regex;  // the Split pattern, "" when none ("gpt2" when ByteLevel's own regex)
  bool has_nfc = false;
  bool prepend_space = false;  // Prepend("▁") normalizer or a prepending Metaspace
  bool metaspace_first = false;
};

// Throws Error naming `name` and the unsupported component or malformed field.
HfParsed parse_hf_tokenizer(const nlohmann::json& j, const std::string& name);
// bos/eos from a tokenizer_config.json beside the file, when present.
void apply_tokenizer_config(HfParsed& p, const nlohmann::json& config);
// The tokenizer.json that transformers' TikTokenConverter makes of a tiktoken ranks file (only
// o200k_base, with o200k_harmony's specials: GPT-OSS). Throws Error naming the file and line.
nlohmann::json tiktoken_to_hf_json(const std::filesystem::path& ranks_file);

}  // namespace epwa::tok
