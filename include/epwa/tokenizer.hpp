// Tokenizers: text to token ids and back, identical to the model's reference tokenizer.
// Three sources: a SentencePiece tokenizer.model (through libsentencepiece), an HF tokenizer.json
// with a BPE model (byte-level or byte-fallback), and a vocabulary embedded in GGUF metadata
// (tokenizer.ggml.*, as llama.cpp writes it). docs/TOKENIZERS.md describes the supported parts.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace epwa {

class GgufFile;
class GgufWriter;

// llama.cpp's token types (tokenizer.ggml.token_type); the values are SentencePiece's piece types.
enum class TokenType : int32_t {
  Undefined = 0,
  Normal = 1,
  Unknown = 2,
  Control = 3,      // special tokens: BOS, EOS, chat markers
  UserDefined = 4,  // added tokens that are matched in text but are not special
  Unused = 5,
  Byte = 6,  // <0xNN>
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text to ids. Invalid UTF-8 in `text` is first replaced by U+FFFD (one per maximal invalid
  // subsequence). `add_special`: add the BOS/EOS tokens the tokenizer's template asks for.
  // `parse_special`: special (control) tokens written in the text, such as "<s>" or
  // "<|im_start|>", become their ids; false treats them as plain text. HF tokenizers and llama.cpp
  // parse them; SentencePiece itself never does (use false to match spm_encode).
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special = true,
                                      bool parse_special = true) const = 0;
  // Ids to text, always valid UTF-8 (broken byte sequences become U+FFFD). Special tokens are
  // written as their text unless `skip_special`. Throws Error on an id outside the vocabulary.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // The text `ids` add after a context (a prompt): as decode(), but keeping the leading space that
  // decode() drops at the start of a text, so that the context's text + this is the whole text
  // ("The river" + " is called", not "The riveris called").
  std::string decode_continuation(std::span<const int32_t> ids, bool skip_special = false) const;
  // The raw vocabulary string of one token ("▁the", "Ġthe", "<0x0A>", "<s>").
  std::string token_to_piece(int32_t id) const;
  std::optional<int32_t> piece_to_id(std::string_view piece) const;
  int32_t vocab_size() const { return static_cast<int32_t>(pieces_.size()); }
  TokenType token_type(int32_t id) const;
  bool is_special(int32_t id) const { return token_type(id) == TokenType::Control; }
  int32_t bos_id() const { return bos_id_; }  // -1 when the tokenizer has none
  int32_t eos_id() const { return eos_id_; }
  int32_t unk_id() const { return unk_id_; }
  bool add_bos() const { return add_bos_; }
  const std::string& kind() const { return kind_; }  // "sentencepiece", "hf-bpe", "gguf-llama", ...

  // The bytes token `id` contributes to decoded text, before the leading-space rule below (may
  // be an incomplete UTF-8 sequence: one byte of a multi-byte character).
  virtual std::string token_bytes(int32_t id) const = 0;
  // Whether decoding drops one leading space of the text (the dummy prefix SentencePiece-style
  // tokenizers add when encoding).
  bool strips_leading_space() const { return strip_leading_space_; }

 protected:
  void check_id(int32_t id) const;
  std::string decode_text(std::span<const int32_t> ids, bool skip_special, bool at_start) const;
  std::vector<std::string> pieces_;
  std::vector<TokenType> types_;
  int32_t bos_id_ = -1, eos_id_ = -1, unk_id_ = -1;
  bool add_bos_ = false;
  bool strip_leading_space_ = false;
  std::string kind_;
  std::unordered_map<std::string, int32_t> piece_ids_;  // filled by subclasses (first id wins)
  void index_pieces();
};

// Incremental decode for generation: feed ids one at a time, get back only complete UTF-8
// characters; bytes of a character split across tokens wait for the rest.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = true);
  std::string push(int32_t id);  // text that became complete with this token ("" if none)
  std::string finish();          // what is left, incomplete sequences as U+FFFD
 private:
  const Tokenizer* tok_;
  bool skip_special_;
  bool at_start_ = true;
  std::string pending_;
};

// The ids a sampler must not pick as text: control tokens (BOS, EOS, padding, chat markers), the
// unknown token, unused pieces, and the ids from vocab_size() up to `model_vocab` (a model's
// padding rows, which have no text). EOS is among them: give it as a stop token as well.
std::vector<int32_t> non_text_token_ids(const Tokenizer& tok, int32_t model_vocab);

// Picks the tokenizer: a .gguf file (its tokenizer.ggml.* metadata), a tokenizer.model,
// tokenizer.json or .tiktoken file, or a model directory holding tokenizer.json (preferred) or
// tokenizer.model. Throws Error naming the path and the problem.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir_or_file);
std::unique_ptr<Tokenizer> load_sentencepiece(const std::filesystem::path& tokenizer_model);
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path& tokenizer_json);
// A tiktoken ranks file ("base64 rank" lines). Only o200k_base is known; it loads as GPT-OSS's
// o200k_harmony (its special tokens 199998..201087, bos <|startoftext|>, eos <|return|>), the same
// tokenizer as the release's tokenizer.json.
std::unique_ptr<Tokenizer> load_tiktoken(const std::filesystem::path& ranks_file);
// `name` stands for the source in error messages.
std::unique_ptr<Tokenizer> hf_tokenizer_from_json(std::string_view json_text,
                                                  std::string name = "<tokenizer.json>");

// The vocabulary as GGUF holds it (llama.cpp's tokenizer.ggml.* keys).
struct GgufVocab {
  std::string model;  // "llama" (merging by score, byte fallback) or "gpt2" (byte-level, merges)
  std::string pre = "default";  // gpt2 pre-tokenizer name: "default"/"gpt-2", "qwen2", "llama-bpe"
  std::vector<std::string> tokens;
  std::vector<float> scores;         // llama: one per token
  std::vector<int32_t> token_types;  // TokenType values, one per token
  std::vector<std::string> merges;   // gpt2: "left right", highest priority first
  int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;
  bool add_bos = false, add_eos = false;
  bool add_space_prefix = true;  // llama: prepend a space to the text before encoding
};

// Builds a tokenizer from a vocabulary; throws Error naming the first inconsistent field.
std::unique_ptr<Tokenizer> tokenizer_from_vocab(const GgufVocab& v, std::string name = "<vocab>");
// The vocabulary of a tokenizer.model or tokenizer.json (or a directory holding one), converted
// the way llama.cpp's convert_hf_to_gguf.py does: SentencePiece and byte-fallback BPE -> "llama",
// byte-level BPE -> "gpt2". A tokenizer_config.json beside it supplies bos/eos and add_bos.
GgufVocab vocab_from_model_files(const std::filesystem::path& model_dir_or_file);

// GGUF glue: read tokenizer.ggml.* from a file, and write them for the converter.
GgufVocab vocab_from_gguf(const GgufFile& f);
void write_tokenizer_gguf_metadata(const GgufVocab& v, GgufWriter& w);

}  // namespace epwa
