// GGUF-style vocabularies: building a tokenizer from one, and converting tokenizer files to one the
// way llama.cpp's convert_hf_to_gguf.py does.
#include <nlohmann/json.hpp>

#include "epwa/error.hpp"
#include "epwa/platform.hpp"
#include "epwa/tokenizer.hpp"
#include "tokenizer/bpe_tokenizer.hpp"
#include "tokenizer/common.hpp"
#include "tokenizer/hf_json.hpp"
#include "tokenizer/spm_proto.hpp"

namespace epwa {

std::unique_ptr<Tokenizer> tokenizer_from_vocab(const GgufVocab& v, std::string name) {
  using namespace tok;
  const size_t n = v.tokens.size();
  if (n == 0) throw Error(name + ": vocabulary has no tokens");
  if (!v.token_types.empty() && v.token_types.size() != n)
    throw Error(name + ": tokenizer.ggml.token_type has " + std::to_string(v.token_types.size()) +
                " entries for " + std::to_string(n) + " tokens");
  BpeSpec s;
  s.pieces = v.tokens;
  s.types.resize(n, TokenType::Normal);
  for (size_t i = 0; i < v.token_types.size(); ++i) {
    const int32_t t = v.token_types[i];
    if (t < 0 || t > 6)
      throw Error(name + ": token " + std::to_string(i) + " has type " + std::to_string(t));
    s.types[i] = static_cast<TokenType>(t);
  }
  s.bos = v.bos_id;
  s.eos = v.eos_id;
  s.unk = v.unk_id;
  if (v.add_bos && v.bos_id >= 0) s.prefix.push_back(v.bos_id);
  if (v.add_eos && v.eos_id >= 0) s.suffix.push_back(v.eos_id);
  for (size_t i = 0; i < n; ++i)
    if (s.types[i] == TokenType::Control || s.types[i] == TokenType::UserDefined)
      s.added.push_back(
          {v.tokens[i], static_cast<int32_t>(i), s.types[i] == TokenType::Control, false, false});
  if (v.model == "llama") {
    if (v.scores.size() != n)
      throw Error(name + ": tokenizer.ggml.scores has " + std::to_string(v.scores.size()) +
                  " entries for " + std::to_string(n) + " tokens");
    s.kind = "gguf-llama";
    s.score_merge = true;
    s.scores = v.scores;
    s.byte_fallback = true;
    if (v.add_space_prefix) s.normalizers.push_back({NormStep::Prepend, NormForm::NFC, " ", ""});
    s.normalizers.push_back({NormStep::Replace, NormForm::NFC, " ", std::string(kMetaSpace)});
    s.decode_metaspace = true;
    s.strip_leading_space = v.add_space_prefix;
  } else if (v.model == "gpt2") {
    s.kind = "gguf-gpt2";
    s.byte_level = true;
    std::string pattern;
    if (v.pre == "default" || v.pre == "gpt-2" || v.pre == "gpt2" || v.pre.empty()) {
      pattern = kGpt2Pattern;
    } else if (v.pre == "qwen2") {
      pattern = kQwen2Pattern;
      s.normalizers.push_back({NormStep::Unicode, NormForm::NFC, "", ""});  // as HF Qwen2 does
    } else if (v.pre == "llama-bpe" || v.pre == "llama3") {
      pattern = kLlama3Pattern;
      s.ignore_merges = true;
    } else if (v.pre == "gpt-4o") {  // llama.cpp's name for o200k (GPT-OSS)
      pattern = kO200kPattern;
      s.ignore_merges = true;  // as the HF file and tiktoken: a pre-token that is a token is kept
    } else {
      throw Error(name + ": tokenizer.ggml.pre \"" + v.pre + "\" is not supported");
    }
    PreStep split{PreStep::Split};
    split.re = std::make_shared<RegexSplitter>(pattern);
    s.pre.push_back(split);
    s.pre.push_back(PreStep{PreStep::ByteLevel});
    for (const std::string& m : v.merges) {
      const size_t sp = m.find(' ', 1);
      if (sp == std::string::npos) throw Error(name + ": merge \"" + m + "\" has no space");
      s.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
    }
  } else {
    throw Error(name + ": tokenizer.ggml.model \"" + v.model + "\" is not supported");
  }
  return std::make_unique<BpeTokenizer>(std::move(s), name);
}

namespace {

GgufVocab vocab_from_spm(const std::filesystem::path& path) {
  const std::string name = path_to_utf8(path);
  const tok::SpmModel m = tok::parse_spm_model(tok::read_file_bytes(path), name);
  if (m.model_type != 2)
    throw Error(name + ": only BPE SentencePiece models convert to a GGUF llama vocabulary");
  if (m.has_charsmap || !(m.normalizer_name.empty() || m.normalizer_name == "identity"))
    throw Error(name + ": normalizer \"" + m.normalizer_name +
                "\" cannot be expressed in a GGUF vocabulary (needs identity)");
  if (m.remove_extra_whitespaces)
    throw Error(name + ": remove_extra_whitespaces cannot be expressed in a GGUF vocabulary");
  GgufVocab v;
  v.model = "llama";
  for (const auto& p : m.pieces) {
    v.tokens.push_back(p.piece);
    v.scores.push_back(p.score);
    v.token_types.push_back(p.type);
  }
  v.unk_id = m.unk_id;
  v.bos_id = m.bos_id;
  v.eos_id = m.eos_id;
  v.pad_id = m.pad_id;
  v.add_bos = m.bos_id >= 0;
  v.add_space_prefix = m.add_dummy_prefix;
  return v;
}

GgufVocab vocab_from_json(const std::filesystem::path& path) {
  const std::string name = path_to_utf8(path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(tok::read_file_bytes(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(name + ": invalid JSON: " + e.what());
  }
  tok::HfParsed p;
  try {
    p = tok::parse_hf_tokenizer(j, name);
    const auto cfg = path.parent_path() / "tokenizer_config.json";
    if (std::filesystem::exists(cfg))
      tok::apply_tokenizer_config(p, nlohmann::json::parse(tok::read_file_bytes(cfg)));
  } catch (const nlohmann::json::exception& e) {
    throw Error(name + ": malformed field: " + e.what());
  }
  const tok::BpeSpec& s = p.spec;
  GgufVocab v;
  v.tokens = s.pieces;
  for (size_t i = 0; i < s.pieces.size(); ++i)
    if (v.tokens[i].empty()) v.tokens[i] = "[PAD" + std::to_string(i) + "]";  // as llama.cpp
  for (TokenType t : s.types) v.token_types.push_back(static_cast<int32_t>(t));
  v.bos_id = s.bos;
  v.eos_id = s.eos;
  v.unk_id = s.unk;
  v.add_bos = !s.prefix.empty() && s.prefix.front() == s.bos;
  v.add_eos = !s.suffix.empty() && s.suffix.back() == s.eos;
  if (s.byte_level) {
    v.model = "gpt2";
    if (p.pre_regex == "gpt2")
      v.pre = "gpt-2";
    else if (p.pre_regex == tok::kQwen2Pattern)
      v.pre = "qwen2";
    else if (p.pre_regex == tok::kLlama3Pattern)
      v.pre = "llama-bpe";
    else if (p.pre_regex == tok::kO200kPattern)
      v.pre = "gpt-4o";
    else
      throw Error(name + ": pre-tokenizer regex has no GGUF name: " + p.pre_regex);
    for (auto& [a, b] : s.merges) v.merges.push_back(a + " " + b);
  } else if (s.byte_fallback) {
    if (p.metaspace_first)
      throw Error(name +
                  ": Metaspace prepend_scheme \"first\" cannot be expressed in a GGUF "
                  "llama vocabulary (llama.cpp prepends a space to every text fragment)");
    v.model = "llama";
    v.add_space_prefix = p.prepend_space;
    // Score merging must pick merges in rank order: a merged token scores minus its first rank.
    tok::RankMerges rm;
    std::unordered_map<std::string, int32_t> ids;
    for (size_t i = 0; i < s.pieces.size(); ++i)
      ids.try_emplace(s.pieces[i], static_cast<int32_t>(i));
    v.scores.assign(s.pieces.size(), 0.0f);
    for (auto& [a, b] : s.merges) {
      auto it = ids.find(a + b), ia = ids.find(a), ib = ids.find(b);
      if (it == ids.end() || ia == ids.end() || ib == ids.end())
        throw Error(name + ": merge \"" + a + " " + b + "\" uses a token not in the vocabulary");
      rm.add(ia->second, ib->second, it->second);
    }
    for (size_t i = 0; i < s.pieces.size(); ++i) {
      const int32_t r = rm.first_rank_of(static_cast<int32_t>(i));
      if (r >= 0) v.scores[i] = -static_cast<float>(r) - 1.0f;
    }
  } else {
    throw Error(name + ": BPE without byte-level or byte fallback has no GGUF vocabulary form");
  }
  return v;
}

}  // namespace

GgufVocab vocab_from_model_files(const std::filesystem::path& p) {
  std::filesystem::path file = p;
  if (std::filesystem::is_directory(p)) {
    if (std::filesystem::exists(p / "tokenizer.model"))
      file = p / "tokenizer.model";
    else if (std::filesystem::exists(p / "tokenizer.json"))
      file = p / "tokenizer.json";
    else
      throw Error(path_to_utf8(p) + ": holds neither tokenizer.model nor tokenizer.json");
  }
  if (file.extension() == ".json") return vocab_from_json(file);
  return vocab_from_spm(file);
}

}  // namespace epwa
