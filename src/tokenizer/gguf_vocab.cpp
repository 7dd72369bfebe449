// tokenizer.ggml.* metadata: reading a vocabulary from a GGUF file and writing one for the
// converter.
#include "epwa/gguf.hpp"
#include "epwa/tokenizer.hpp"

namespace epwa {

GgufVocab vocab_from_gguf(const GgufFile& f) {
  GgufVocab v;
  const std::string& name = f.name();
  const std::string* model = f.find_string("tokenizer.ggml.model");
  if (!model) throw Error(name + ": no tokenizer.ggml.model (the file holds no vocabulary)");
  // llama.cpp's converters write "none" / "no_vocab" for a model without a tokenizer.
  if (*model == "none" || *model == "no_vocab")
    throw Error(name + ": tokenizer.ggml.model is \"" + *model + "\" (the file holds no vocabulary)");
  v.model = *model;
  if (const std::string* pre = f.find_string("tokenizer.ggml.pre")) v.pre = *pre;
  v.tokens = f.get_array("tokenizer.ggml.tokens").strings();
  if (const GgufArray* a = f.find_array("tokenizer.ggml.scores")) v.scores = a->as<float>();
  if (const GgufArray* a = f.find_array("tokenizer.ggml.token_type"))
    v.token_types = a->as<int32_t>();
  if (const GgufArray* a = f.find_array("tokenizer.ggml.merges")) v.merges = a->strings();
  auto id = [&](const char* key) {
    const auto x = f.find_u32(key);
    return x ? static_cast<int32_t>(*x) : -1;
  };
  v.bos_id = id("tokenizer.ggml.bos_token_id");
  v.eos_id = id("tokenizer.ggml.eos_token_id");
  v.unk_id = id("tokenizer.ggml.unknown_token_id");
  v.pad_id = id("tokenizer.ggml.padding_token_id");
  // llama.cpp's defaults when the flags are absent: SentencePiece vocabularies add BOS and a space.
  v.add_bos = f.find_bool("tokenizer.ggml.add_bos_token").value_or(v.model == "llama");
  v.add_eos = f.find_bool("tokenizer.ggml.add_eos_token").value_or(false);
  v.add_space_prefix = f.find_bool("tokenizer.ggml.add_space_prefix").value_or(v.model == "llama");
  return v;
}

void write_tokenizer_gguf_metadata(const GgufVocab& v, GgufWriter& w) {
  w.set_string("tokenizer.ggml.model", v.model);
  if (v.model == "gpt2") w.set_string("tokenizer.ggml.pre", v.pre);
  w.set_array("tokenizer.ggml.tokens", GgufArray(v.tokens));
  if (!v.scores.empty()) w.set_array("tokenizer.ggml.scores", GgufArray(v.scores));
  if (!v.token_types.empty()) w.set_array("tokenizer.ggml.token_type", GgufArray(v.token_types));
  if (!v.merges.empty()) w.set_array("tokenizer.ggml.merges", GgufArray(v.merges));
  auto id = [&](const char* key, int32_t x) {
    if (x >= 0) w.set_u32(key, static_cast<uint32_t>(x));
  };
  id("tokenizer.ggml.bos_token_id", v.bos_id);
  id("tokenizer.ggml.eos_token_id", v.eos_id);
  id("tokenizer.ggml.unknown_token_id", v.unk_id);
  id("tokenizer.ggml.padding_token_id", v.pad_id);
  w.set_bool("tokenizer.ggml.add_bos_token", v.add_bos);
  w.set_bool("tokenizer.ggml.add_eos_token", v.add_eos);
  if (v.model == "llama") w.set_bool("tokenizer.ggml.add_space_prefix", v.add_space_prefix);
}

}  // namespace epwa
