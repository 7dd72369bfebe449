// The parts every tokenizer shares: id checks, decode, streaming decode.
#include "epwa/tokenizer.hpp"

#include <algorithm>

#include "epwa/error.hpp"
#include "tokenizer/utf8.hpp"

namespace epwa {

void Tokenizer::check_id(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw Error("token id " + std::to_string(id) + " is outside the vocabulary (size " +
                std::to_string(vocab_size()) + ")");
}

void Tokenizer::index_pieces() {
  piece_ids_.clear();
  piece_ids_.reserve(pieces_.size());
  for (size_t i = 0; i < pieces_.size(); ++i)
    piece_ids_.try_emplace(pieces_[i], static_cast<int32_t>(i));
}

std::string Tokenizer::token_to_piece(int32_t id) const {
  check_id(id);
  return pieces_[id];
}

std::optional<int32_t> Tokenizer::piece_to_id(std::string_view piece) const {
  auto it = piece_ids_.find(std::string(piece));
  if (it == piece_ids_.end()) return std::nullopt;
  return it->second;
}

TokenType Tokenizer::token_type(int32_t id) const {
  check_id(id);
  return types_[id];
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  return decode_text(ids, skip_special, true);
}

std::string Tokenizer::decode_continuation(std::span<const int32_t> ids, bool skip_special) const {
  return decode_text(ids, skip_special, false);
}

std::string Tokenizer::decode_text(std::span<const int32_t> ids, bool skip_special,
                                   bool at_start) const {
  std::string raw;
  for (int32_t id : ids) {
    check_id(id);
    if (skip_special && types_[id] == TokenType::Control) continue;
    raw += token_bytes(id);
  }
  if (at_start && strip_leading_space_ && !raw.empty() && raw[0] == ' ') raw.erase(0, 1);
  return tok::utf8_sanitize(raw);
}

std::vector<int32_t> non_text_token_ids(const Tokenizer& tok, int32_t model_vocab) {
  std::vector<int32_t> out;
  for (int32_t id = 0; id < std::max(model_vocab, tok.vocab_size()); ++id) {
    if (id >= tok.vocab_size()) {
      out.push_back(id);
      continue;
    }
    const TokenType t = tok.token_type(id);
    if (t == TokenType::Control || t == TokenType::Unknown || t == TokenType::Unused ||
        id == tok.unk_id() || id == tok.bos_id() || id == tok.eos_id())
      out.push_back(id);
  }
  return out;
}

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special)
    : tok_(&tok), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  if (skip_special_ && tok_->is_special(id)) return {};
  std::string bytes = tok_->token_bytes(id);
  if (at_start_ && !bytes.empty()) {
    if (tok_->strips_leading_space() && bytes[0] == ' ') bytes.erase(0, 1);
    at_start_ = false;
  }
  pending_ += bytes;
  // Emit everything up to a trailing sequence that may still be completed by the next token.
  size_t cut = pending_.size();
  for (size_t i = 0; i < pending_.size();) {
    const tok::Utf8Step st = tok::utf8_step(pending_, i);
    if (st.status == tok::Utf8Status::Truncated) {
      cut = i;
      break;
    }
    i += st.len;
  }
  std::string out = tok::utf8_sanitize(std::string_view(pending_).substr(0, cut));
  pending_.erase(0, cut);
  return out;
}

std::string StreamDecoder::finish() {
  std::string out = tok::utf8_sanitize(pending_);
  pending_.clear();
  at_start_ = true;
  return out;
}

}  // namespace epwa
