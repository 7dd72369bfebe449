#include "tokenizer/spm_proto.hpp"

#include <cstring>

#include "epwa/error.hpp"

namespace epwa::tok {
namespace {

// Protobuf wire format: (field << 3 | wire type) varint keys; 0 varint, 1 fixed64, 2 bytes, 5
// fixed32.
class Reader {
 public:
  Reader(std::string_view b, const std::string& name) : b_(b), name_(name) {}
  bool done() const { return pos_ >= b_.size(); }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= b_.size()) fail("truncated varint");
      const auto c = static_cast<uint8_t>(b_[pos_++]);
      v |= static_cast<uint64_t>(c & 0x7f) << shift;
      if (!(c & 0x80)) return v;
    }
    fail("overlong varint");
  }
  std::string_view bytes() {
    const uint64_t n = varint();
    if (n > b_.size() - pos_) fail("field length past the end");
    auto s = b_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  float f32() {
    if (b_.size() - pos_ < 4) fail("truncated fixed32");
    float f;
    std::memcpy(&f, b_.data() + pos_, 4);
    pos_ += 4;
    return f;
  }
  void skip(uint32_t wire) {
    switch (wire) {
      case 0:
        varint();
        break;
      case 1:
        advance(8);
        break;
      case 2:
        bytes();
        break;
      case 5:
        advance(4);
        break;
      default:
        fail("unknown wire type " + std::to_string(wire));
    }
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(name_ + ": not a SentencePiece model (" + what + ")");
  }

 private:
  void advance(size_t n) {
    if (b_.size() - pos_ < n) fail("truncated field");
    pos_ += n;
  }
  std::string_view b_;
  const std::string& name_;
  size_t pos_ = 0;
};

SpmPiece parse_piece(std::string_view b, const std::string& name) {
  Reader r(b, name);
  SpmPiece p;
  while (!r.done()) {
    const uint64_t key = r.varint();
    const auto field = static_cast<uint32_t>(key >> 3), wire = static_cast<uint32_t>(key & 7);
    if (field == 1 && wire == 2)
      p.piece = std::string(r.bytes());
    else if (field == 2 && wire == 5)
      p.score = r.f32();
    else if (field == 3 && wire == 0)
      p.type = static_cast<int32_t>(r.varint());
    else
      r.skip(wire);
  }
  return p;
}

}  // namespace

SpmModel parse_spm_model(std::string_view bytes, const std::string& name) {
  Reader r(bytes, name);
  SpmModel m;
  while (!r.done()) {
    const uint64_t key = r.varint();
    const auto field = static_cast<uint32_t>(key >> 3), wire = static_cast<uint32_t>(key & 7);
    if (field == 1 && wire == 2) {
      m.pieces.push_back(parse_piece(r.bytes(), name));
    } else if (field == 2 && wire == 2) {  // TrainerSpec
      Reader t(r.bytes(), name);
      while (!t.done()) {
        const uint64_t k = t.varint();
        const auto f = static_cast<uint32_t>(k >> 3), w = static_cast<uint32_t>(k & 7);
        if (w != 0) {
          t.skip(w);
          continue;
        }
        const auto v = static_cast<int32_t>(t.varint());  // int32 fields: two's complement
        if (f == 3)
          m.model_type = v;
        else if (f == 35)
          m.byte_fallback = v != 0;
        else if (f == 40)
          m.unk_id = v;
        else if (f == 41)
          m.bos_id = v;
        else if (f == 42)
          m.eos_id = v;
        else if (f == 43)
          m.pad_id = v;
      }
    } else if (field == 3 && wire == 2) {  // NormalizerSpec
      Reader n(r.bytes(), name);
      while (!n.done()) {
        const uint64_t k = n.varint();
        const auto f = static_cast<uint32_t>(k >> 3), w = static_cast<uint32_t>(k & 7);
        if (f == 1 && w == 2)
          m.normalizer_name = std::string(n.bytes());
        else if (f == 2 && w == 2)
          m.has_charsmap = !n.bytes().empty();
        else if (f == 3 && w == 0)
          m.add_dummy_prefix = n.varint() != 0;
        else if (f == 4 && w == 0)
          m.remove_extra_whitespaces = n.varint() != 0;
        else if (f == 5 && w == 0)
          m.escape_whitespaces = n.varint() != 0;
        else
          n.skip(w);
      }
    } else {
      r.skip(wire);
    }
  }
  if (m.pieces.empty()) r.fail("no pieces");
  return m;
}

}  // namespace epwa::tok
