// Identical ids to the reference tokenizers (HF tokenizers 0.23, sentencepiece 0.2) on every test
// text, for every kind and both file paths (the tokenizer file and GGUF metadata).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "epwa/error.hpp"
#include "epwa/gguf.hpp"
#include "epwa/tokenizer.hpp"
#include "tokenizer/utf8.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kDir = fs::path(EPWA_TEST_DATA_DIR) / "tokenizers";

const json& refs() {
  static const json j = [] {
    std::ifstream f(kDir / "refs.json");
    return json::parse(f);
  }();
  return j;
}

std::vector<int32_t> ids_of(const json& a) {
  return a.get<std::vector<int32_t>>();
}

// Writes the vocabulary of `file` into GGUF metadata, reads it back and builds the tokenizer.
std::unique_ptr<epwa::Tokenizer> via_gguf(const fs::path& file) {
  const epwa::GgufVocab v = epwa::vocab_from_model_files(file);
  epwa::GgufWriter w;
  w.set_string("general.architecture", "llama");
  epwa::write_tokenizer_gguf_metadata(v, w);
  const fs::path out = fs::temp_directory_path() / ("epwa_tok_" + file.stem().string() + ".gguf");
  w.write(out);
  auto tok = epwa::load_tokenizer(out);
  fs::remove(out);
  return tok;
}

void check_hf(const std::string& name, const epwa::Tokenizer& tok, bool check_decode) {
  const json& texts = refs()["texts"];
  const json& enc = refs()["tokenizers"][name]["encodings"];
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i];
    SCOPED_TRACE(name + " text #" + std::to_string(i) + ": " + text);
    EXPECT_EQ(tok.encode(text, false, true), ids_of(enc[i]["ids"]));
    EXPECT_EQ(tok.encode(text, true, true), ids_of(enc[i]["ids_special"]));
    if (check_decode) {
      EXPECT_EQ(tok.decode(ids_of(enc[i]["ids"])), enc[i]["decoded"].get<std::string>());
      EXPECT_EQ(tok.decode(ids_of(enc[i]["ids_special"]), true),
                enc[i]["decoded_skip"].get<std::string>());
    }
  }
}

void check_spm(const epwa::Tokenizer& tok) {
  const json& texts = refs()["texts"];
  const json& enc = refs()["tokenizers"]["llama_spm"]["encodings"];
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i];
    SCOPED_TRACE("llama_spm text #" + std::to_string(i) + ": " + text);
    const auto want = ids_of(enc[i]["ids"]);
    EXPECT_EQ(tok.encode(text, false, false), want);
    auto with_bos = want;
    with_bos.insert(with_bos.begin(), tok.bos_id());
    EXPECT_EQ(tok.encode(text, true, false), with_bos);
    EXPECT_EQ(tok.decode(want), enc[i]["decoded"].get<std::string>());
  }
}

TEST(TokenizerReference, SentencePieceModel) {
  auto tok = epwa::load_tokenizer(kDir / "llama_spm.model");
  EXPECT_EQ(tok->kind(), "sentencepiece");
  EXPECT_EQ(tok->vocab_size(), 1000);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  check_spm(*tok);
}

TEST(TokenizerReference, SentencePieceViaGguf) {
  auto tok = via_gguf(kDir / "llama_spm.model");
  EXPECT_EQ(tok->kind(), "gguf-llama");
  check_spm(*tok);
}

TEST(TokenizerReference, HfLlamaPrependNormalizer) {
  check_hf("llama_bpe_norm", *epwa::load_tokenizer(kDir / "llama_bpe_norm.json"), true);
}
TEST(TokenizerReference, HfLlamaPrependNormalizerViaGguf) {
  check_hf("llama_bpe_norm", *via_gguf(kDir / "llama_bpe_norm.json"), true);
}
TEST(TokenizerReference, HfLlamaMetaspace) {
  check_hf("llama_bpe_meta", *epwa::load_tokenizer(kDir / "llama_bpe_meta.json"), true);
}
TEST(TokenizerReference, HfLlamaMetaspaceFirstHasNoGgufForm) {
  try {
    epwa::vocab_from_model_files(kDir / "llama_bpe_meta.json");
    FAIL() << "expected an Error";
  } catch (const epwa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("prepend_scheme"), std::string::npos) << e.what();
  }
}
TEST(TokenizerReference, HfGpt2ByteLevel) {
  check_hf("gpt2_bl", *epwa::load_tokenizer(kDir / "gpt2_bl.json"), true);
}
TEST(TokenizerReference, HfGpt2ByteLevelViaGguf) {
  check_hf("gpt2_bl", *via_gguf(kDir / "gpt2_bl.json"), true);
}
TEST(TokenizerReference, HfQwenByteLevel) {
  check_hf("qwen_bl", *epwa::load_tokenizer(kDir / "qwen_bl.json"), true);
}
TEST(TokenizerReference, HfQwenByteLevelViaGguf) {
  auto tok = via_gguf(kDir / "qwen_bl.json");
  EXPECT_EQ(tok->kind(), "gguf-gpt2");
  check_hf("qwen_bl", *tok, true);
}

// Exact round trip of every test text that the reference itself round-trips.
TEST(TokenizerReference, RoundTrip) {
  for (const char* name : {"llama_spm.model", "llama_bpe_norm.json", "llama_bpe_meta.json",
                           "gpt2_bl.json", "qwen_bl.json"}) {
    auto tok = epwa::load_tokenizer(kDir / name);
    int exact = 0;
    for (const auto& t : refs()["texts"]) {
      const std::string text = t;
      const std::string back = tok->decode(tok->encode(text, false, true));
      if (back == text) ++exact;
      EXPECT_TRUE(epwa::tok::utf8_valid(back)) << name;
    }
    // Texts with leading spaces (Metaspace "first") or decomposed accents (NFC) or U+2581 may not.
    EXPECT_GE(exact, static_cast<int>(refs()["texts"].size()) - 5) << name;
  }
}

}  // namespace
