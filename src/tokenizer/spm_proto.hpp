// A reader for the few fields of SentencePiece's ModelProto that a GGUF vocabulary needs (piece
// types and normalizer settings are not exposed by libsentencepiece's public API).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace epwa::tok {

struct SpmPiece {
  std::string piece;
  float score = 0;
  int32_t type = 1;  // NORMAL
};

struct SpmModel {
  std::vector<SpmPiece> pieces;
  int32_t model_type = 1;  // 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR
  int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
  bool byte_fallback = false;
  std::string normalizer_name;
  bool has_charsmap = false;
  bool add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true;
};

// Throws Error naming `name` when the bytes are not a ModelProto.
SpmModel parse_spm_model(std::string_view bytes, const std::string& name);

}  // namespace epwa::tok
