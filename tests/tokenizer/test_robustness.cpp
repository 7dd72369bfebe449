// Malformed tokenizer files give clear Errors; random input never crashes; streaming decode never
// emits broken UTF-8.
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "epwa/error.hpp"
#include "epwa/tokenizer.hpp"
#include "support/error_of.hpp"
#include "support/run_cli.hpp"
#include "tokenizer/utf8.hpp"

namespace fs = std::filesystem;

using epwa_test::error_of;

namespace {

const fs::path kDir = fs::path(EPWA_TEST_DATA_DIR) / "tokenizers";
const char* const kFiles[] = {"llama_spm.model", "llama_bpe_norm.json", "llama_bpe_meta.json",
                              "gpt2_bl.json", "qwen_bl.json"};

std::string read(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

TEST(TokenizerErrors, MalformedJsonNamesTheProblem) {
  const std::string good = read(kDir / "gpt2_bl.json");
  EXPECT_NE(error_of([&] {
              epwa::hf_tokenizer_from_json(good.substr(0, good.size() / 2), "x");
            }).find("malformed"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              epwa::hf_tokenizer_from_json(R"({"model":{"type":"WordPiece"}})");
            }).find("WordPiece"),
            std::string::npos);
  EXPECT_NE(
      error_of([&] {
        epwa::hf_tokenizer_from_json(
            R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"normalizer":{"type":"Lowercase"}})");
      }).find("normalizer Lowercase"),
      std::string::npos);
  EXPECT_NE(
      error_of([&] {
        epwa::hf_tokenizer_from_json(
            R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"BertPreTokenizer"}})");
      }).find("BertPreTokenizer"),
      std::string::npos);
  EXPECT_NE(error_of([&] {
              epwa::hf_tokenizer_from_json(
                  R"({"model":{"type":"BPE","vocab":{"a":0},"merges":["a b"]}})");
            }).find("merge"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              epwa::hf_tokenizer_from_json(R"({"model":{"type":"BPE","vocab":{"a":-3}}})");
            }).find("bad id"),
            std::string::npos);
  EXPECT_NE(error_of([&] { epwa::hf_tokenizer_from_json("[1,2]"); }).find("no model"),
            std::string::npos);
}

TEST(TokenizerErrors, MalformedSentencePieceModel) {
  const fs::path p = fs::temp_directory_path() / "epwa_bad_tokenizer.model";
  std::string bytes = read(kDir / "llama_spm.model");
  for (const std::string& bad : {std::string("not a model at all \xff\xff\xff\xff"),
                                 bytes.substr(0, bytes.size() / 3), std::string()}) {
    std::ofstream(p, std::ios::binary) << bad;
    EXPECT_FALSE(error_of([&] { epwa::load_sentencepiece(p); }).empty());
  }
  fs::remove(p);
  EXPECT_NE(error_of([] { epwa::load_tokenizer("/nonexistent/dir"); }).find("no such"),
            std::string::npos);
}

TEST(TokenizerErrors, BadVocabularies) {
  epwa::GgufVocab v;
  v.model = "llama";
  v.tokens = {"a", "b"};
  v.scores = {0.f};
  EXPECT_NE(error_of([&] { epwa::tokenizer_from_vocab(v); }).find("scores"), std::string::npos);
  v.model = "bert";
  EXPECT_NE(error_of([&] { epwa::tokenizer_from_vocab(v); }).find("bert"), std::string::npos);
  v.model = "gpt2";
  v.pre = "made-up";
  EXPECT_NE(error_of([&] { epwa::tokenizer_from_vocab(v); }).find("made-up"), std::string::npos);
  v.pre = "gpt-2";
  v.bos_id = 7;
  EXPECT_NE(error_of([&] { epwa::tokenizer_from_vocab(v); }).find("bos"), std::string::npos);
  auto tok = epwa::load_tokenizer(kDir / "gpt2_bl.json");
  const std::vector<int32_t> bad{1, tok->vocab_size()};
  EXPECT_NE(error_of([&] { tok->decode(bad); }).find("outside the vocabulary"), std::string::npos);
  EXPECT_THROW(tok->token_to_piece(-1), epwa::Error);
}

// Random bytes, invalid UTF-8 included: encode never crashes, ids are in range, decode is valid.
TEST(TokenizerFuzz, RandomBytesAndIds) {
  std::mt19937 rng(1234);
  for (const char* name : kFiles) {
    auto tok = epwa::load_tokenizer(kDir / name);
    for (int iter = 0; iter < 150; ++iter) {
      std::string s(rng() % 64, '\0');
      for (char& c : s) {
        const uint32_t r = rng();
        // Mix ASCII, continuation/lead bytes and specials so that UTF-8 edges get hit.
        c = static_cast<char>(r % 3 == 0 ? 0x20 + (r >> 8) % 0x60 : (r >> 8) & 0xff);
      }
      if (iter % 10 == 0) s += "<s><|im_start|>";
      const auto ids = tok->encode(s, iter % 2 == 0, iter % 3 != 0);
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok->vocab_size()) << name;
      const std::string back = tok->decode(ids);
      EXPECT_TRUE(epwa::tok::utf8_valid(back)) << name;
      if (epwa::tok::utf8_valid(s) && std::string(name) == "gpt2_bl.json") {
        EXPECT_EQ(back, s);  // byte-level BPE is lossless on valid text
      }
      std::vector<int32_t> rid(rng() % 20);
      for (int32_t& id : rid) id = static_cast<int32_t>(rng() % tok->vocab_size());
      EXPECT_TRUE(epwa::tok::utf8_valid(tok->decode(rid))) << name;
    }
  }
}

TEST(TokenizerStream, EmitsOnlyCompleteUtf8) {
  const std::string text =
      "Emoji 😀🎉👍🏽 日本語 Ελληνικά 𝔘𝔫𝔦 ☃ café\nend";
  for (const char* name : kFiles) {
    auto tok = epwa::load_tokenizer(kDir / name);
    const auto ids = tok->encode(text, true, true);
    epwa::StreamDecoder sd(*tok);
    std::string all;
    for (int32_t id : ids) {
      const std::string part = sd.push(id);
      EXPECT_TRUE(epwa::tok::utf8_valid(part)) << name;
      all += part;
    }
    all += sd.finish();
    EXPECT_EQ(all, tok->decode(ids, true)) << name;
    EXPECT_EQ(all, text) << name;
  }
}

TEST(TokenizerStream, SplitCharacterWaitsForItsLastByte) {
  auto tok = epwa::load_tokenizer(kDir / "llama_spm.model");
  // U+1D518 is not in the vocabulary: it encodes as four <0xNN> byte tokens.
  const auto ids = tok->encode("\xF0\x9D\x94\x98", false, false);
  ASSERT_EQ(ids.size(), 5u);  // "▁" + four bytes
  epwa::StreamDecoder sd(*tok);
  std::string got;
  for (size_t i = 0; i + 1 < ids.size(); ++i) EXPECT_EQ(sd.push(ids[i]), "");
  EXPECT_EQ(sd.push(ids.back()), "\xF0\x9D\x94\x98");
  // A sequence left incomplete comes out as U+FFFD at the end.
  EXPECT_EQ(sd.push(ids[1]), "");
  EXPECT_EQ(sd.finish(), "\xEF\xBF\xBD");
}

TEST(TokenizerUtf8, SanitizeUsesMaximalSubparts) {
  using epwa::tok::utf8_sanitize;
  EXPECT_EQ(utf8_sanitize("a\xF0\x9F\x98"), "a\xEF\xBF\xBD");        // truncated: one U+FFFD
  EXPECT_EQ(utf8_sanitize("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong: two
  EXPECT_EQ(utf8_sanitize("\xED\xA0\x80"),
            std::string(3 * 3, '\0').replace(0, 9, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"));
  EXPECT_EQ(utf8_sanitize("ok \xE2\x82\xAC"), "ok \xE2\x82\xAC");
}

}  // namespace

namespace {
std::string run_cli(const std::string& args, int* rc) {
  auto r = epwa_test::run_cli("tokenize " + args);
  *rc = r.code;
  return r.out;
}

TEST(TokenizeCommand, PrintsJsonIdsAndPieces) {
  int rc = 0;
  const std::string out = run_cli(
      "--model " + (kDir / "llama_bpe_norm.json").string() + " --text 'Hello world' --json", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(out,
            "{\"ids\":[1,713,812,361,814,276,270,608],\"pieces\":[\"<s>\",\"\xE2\x96\x81H\","
            "\"e\",\"ll\",\"o\",\"\xE2\x96\x81w\",\"or\",\"ld\"]}\n");
  const std::string plain = run_cli(
      "--model " + (kDir / "llama_spm.model").string() + " --text 'Hello' --no-special", &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(plain.substr(0, 4), "713\t");
  const std::string bad = run_cli("--model /nonexistent.json --text x", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(bad.find("error"), std::string::npos);
}
}  // namespace
