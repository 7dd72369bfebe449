// tokenizer.model through libsentencepiece: the reference implementation itself.
#include <sentencepiece_processor.h>

#include "epwa/error.hpp"
#include "epwa/platform.hpp"
#include "epwa/tokenizer.hpp"
#include "tokenizer/added_tokens.hpp"
#include "tokenizer/common.hpp"
#include "tokenizer/spm_proto.hpp"
#include "tokenizer/utf8.hpp"

namespace epwa {
namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& bytes, const std::string& name) {
    const tok::SpmModel m = tok::parse_spm_model(bytes, name);  // clear errors before the library
    const auto st = sp_.LoadFromSerializedProto(bytes);
    if (!st.ok()) throw Error(name + ": SentencePiece cannot load the model: " + st.ToString());
    const int n = sp_.GetPieceSize();
    if (n != static_cast<int>(m.pieces.size()))
      throw Error(name + ": SentencePiece piece count disagrees with the model file");
    kind_ = "sentencepiece";
    for (int i = 0; i < n; ++i) {
      pieces_.push_back(m.pieces[i].piece);
      const int32_t t = m.pieces[i].type;
      types_.push_back(t >= 1 && t <= 6 ? static_cast<TokenType>(t) : TokenType::Normal);
      if (types_.back() == TokenType::Control)
        specials_.add({pieces_.back(), i, true, false, false});
    }
    index_pieces();
    bos_id_ = sp_.bos_id();
    eos_id_ = sp_.eos_id();
    unk_id_ = sp_.unk_id();
    add_bos_ = bos_id_ >= 0;
    strip_leading_space_ = m.add_dummy_prefix;
    escape_ws_ = m.escape_whitespaces;
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special,
                              bool parse_special) const override {
    const std::string clean = tok::utf8_sanitize(text);
    std::vector<int32_t> out;
    if (add_special && add_bos_) out.push_back(bos_id_);
    std::vector<int> ids;
    for (const tok::Segment& s : specials_.split(clean, parse_special)) {
      if (s.id >= 0) {
        out.push_back(s.id);
        continue;
      }
      const auto st = sp_.Encode(s.text, &ids);
      if (!st.ok()) throw Error("SentencePiece encode failed: " + st.ToString());
      out.insert(out.end(), ids.begin(), ids.end());
    }
    return out;
  }

  std::string token_bytes(int32_t id) const override {
    check_id(id);
    const std::string& p = pieces_[id];
    if (types_[id] == TokenType::Byte) {
      const int32_t b = tok::byte_piece_value(p);
      return b >= 0 ? std::string(1, static_cast<char>(b)) : p;
    }
    if (types_[id] != TokenType::Normal && types_[id] != TokenType::UserDefined) return p;
    return escape_ws_ ? tok::replace_all(p, tok::kMetaSpace, " ") : p;
  }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  tok::AddedTokenMatcher specials_;
  bool escape_ws_ = true;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::filesystem::path& path) {
  return std::make_unique<SentencePieceTokenizer>(tok::read_file_bytes(path), path_to_utf8(path));
}

}  // namespace epwa
