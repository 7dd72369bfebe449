// One configurable BPE pipeline behind both the HF tokenizer.json loader and the GGUF vocabularies:
// added tokens -> normalizers -> pre-tokenizers -> BPE (by rank or by score) -> template.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "epwa/tokenizer.hpp"
#include "tokenizer/added_tokens.hpp"
#include "tokenizer/bpe.hpp"
#include "tokenizer/text_ops.hpp"

namespace epwa::tok {

struct NormStep {
  enum Kind { Unicode, Prepend, Replace } kind;
  NormForm form = NormForm::NFC;
  std::string a, b;  // Prepend: a; Replace: a -> b
};

struct PreStep {
  enum Kind { Metaspace, Split, ByteLevel } kind;
  explicit PreStep(Kind k) : kind(k) {}
  std::shared_ptr<RegexSplitter> re;                       // Split; ByteLevel with use_regex
  std::string replacement;                                 // Metaspace
  enum Prepend { Never, First, Always } prepend = Always;  // Metaspace
  bool split = true;                                       // Metaspace: split on the replacement
  bool add_prefix_space = false;                           // ByteLevel
};

struct BpeSpec {
  std::string kind;                 // Tokenizer::kind()
  std::vector<std::string> pieces;  // by id; holes are ""
  std::vector<TokenType> types;
  std::vector<NormStep> normalizers;
  std::vector<PreStep> pre;
  bool score_merge = false;  // SentencePiece merging by score (GGUF "llama")
  std::vector<float> scores;
  std::vector<std::pair<std::string, std::string>> merges;  // rank merging, best first
  bool byte_level = false;                                  // pieces are in GPT-2's byte alphabet
  bool byte_fallback = false;  // unknown characters become <0xNN> tokens
  bool fuse_unk = false;
  bool ignore_merges = false;
  std::vector<AddedToken> added;
  std::vector<int32_t> prefix, suffix;  // template tokens added by add_special
  bool decode_metaspace = false;        // decoding turns U+2581 into a space
  bool strip_leading_space = false;
  int32_t bos = -1, eos = -1, unk = -1;
};

class BpeTokenizer final : public Tokenizer {
 public:
  BpeTokenizer(BpeSpec spec, const std::string& name);  // throws Error naming `name`
  std::vector<int32_t> encode(std::string_view text, bool add_special,
                              bool parse_special) const override;
  std::string token_bytes(int32_t id) const override;

 private:
  void encode_segment(std::string_view text, bool at_start, std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  void score_word(std::string_view word, std::vector<int32_t>& out) const;
  int32_t lookup_model(std::string_view piece) const;

  BpeSpec spec_;
  AddedTokenMatcher added_;
  RankMerges merges_;
  PieceScores mergeable_;                               // score merging
  std::unordered_map<std::string, int32_t> model_ids_;  // the model's own vocabulary
  std::array<int32_t, 256> byte_ids_{};                 // <0xNN> ids, -1 if absent
};

}  // namespace epwa::tok
