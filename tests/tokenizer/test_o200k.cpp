// GPT-OSS's o200k_harmony tokenizer: epwa's ids equal those of an independent Python
// implementation of tiktoken's algorithm (tools/tokenizer/o200k_reference.py ->
// tests/data/tokenizers/o200k_refs.json), for the ranks file read directly and for the
// tokenizer.json the HF converter makes of it (the form the release ships).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "epwa/error.hpp"
#include "epwa/gguf.hpp"
#include "epwa/tokenizer.hpp"
#include "tokenizer/hf_json.hpp"
#include "tokenizer/utf8.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kDir = fs::path(EPWA_TEST_DATA_DIR) / "tokenizers";
const fs::path kRanks = kDir / "o200k_base.tiktoken";

const json& refs() {
  static const json j = [] {
    std::ifstream f(kDir / "o200k_refs.json");
    return json::parse(f);
  }();
  return j;
}

const epwa::Tokenizer& o200k() {
  static const std::unique_ptr<epwa::Tokenizer> t = epwa::load_tokenizer(kRanks);
  return *t;
}

std::string unhex(const std::string& h) {
  std::string s;
  for (size_t i = 0; i + 1 < h.size(); i += 2)
    s += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return s;
}

std::string fnv1a64(const std::vector<int32_t>& ids) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int32_t id : ids)
    for (int k = 0; k < 4; ++k) {
      h ^= (static_cast<uint32_t>(id) >> (8 * k)) & 0xff;
      h *= 0x100000001b3ull;
    }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// train.txt (license texts and multilingual lines): per line, then whole, the reference's token
// count and a hash of its ids.
void check_corpus(const epwa::Tokenizer& tok) {
  const json& c = refs()["corpus"];
  std::ifstream f(kDir / c["file"].get<std::string>(), std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const json& lines = c["lines"];
  size_t pos = 0, n = 0;
  for (; pos < text.size(); ++n) {
    size_t end = text.find('\n', pos);
    end = end == std::string::npos ? text.size() : end + 1;
    const std::string line = text.substr(pos, end - pos);
    pos = end;
    ASSERT_LT(n, lines.size());
    const auto ids = tok.encode(line, false, true);
    EXPECT_EQ(ids.size(), lines[n][0].get<size_t>()) << "line " << n + 1 << ": " << line;
    EXPECT_EQ(fnv1a64(ids), lines[n][1].get<std::string>()) << "line " << n + 1 << ": " << line;
  }
  EXPECT_EQ(n, lines.size());
  const auto ids = tok.encode(text, false, true);
  EXPECT_EQ(ids.size(), c["whole"][0].get<size_t>());
  EXPECT_EQ(fnv1a64(ids), c["whole"][1].get<std::string>());
  EXPECT_EQ(tok.decode(ids), text);
}

void check_refs(const epwa::Tokenizer& tok) {
  check_corpus(tok);
  const json& cases = refs()["cases"];
  ASSERT_GE(cases.size(), 30u);
  for (size_t i = 0; i < cases.size(); ++i) {
    const json& c = cases[i];
    const std::string text = unhex(c["hex"]);
    SCOPED_TRACE("case #" + std::to_string(i) + ": " + text.substr(0, 80));
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text, false, true), ids);
    EXPECT_EQ(tok.encode(text, true, true), ids);  // the release adds no BOS/EOS
    EXPECT_EQ(tok.encode(text, false, false), c["ids_plain"].get<std::vector<int32_t>>());
    // decode(encode(s)) == s, with invalid UTF-8 replaced by U+FFFD as encoding did.
    EXPECT_EQ(tok.decode(ids), unhex(c["decoded_hex"]));
  }
}

TEST(O200k, RanksFileGivesTheReferenceIds) {
  const epwa::Tokenizer& tok = o200k();
  EXPECT_EQ(tok.vocab_size(), 201088);
  EXPECT_EQ(tok.kind(), "hf-bpe");
  check_refs(tok);
}

TEST(O200k, HarmonySpecialTokens) {
  const epwa::Tokenizer& tok = o200k();
  const std::pair<const char*, int32_t> named[] = {{"<|startoftext|>", 199998},
                                                   {"<|endoftext|>", 199999},
                                                   {"<|return|>", 200002},
                                                   {"<|constrain|>", 200003},
                                                   {"<|channel|>", 200005},
                                                   {"<|start|>", 200006},
                                                   {"<|end|>", 200007},
                                                   {"<|message|>", 200008},
                                                   {"<|call|>", 200012},
                                                   {"<|endofprompt|>", 200018},
                                                   {"<|reserved_200000|>", 200000},
                                                   {"<|reserved_201087|>", 201087}};
  for (auto [piece, id] : named) {
    SCOPED_TRACE(piece);
    EXPECT_EQ(tok.piece_to_id(piece), id);
    EXPECT_TRUE(tok.is_special(id));
    EXPECT_EQ(tok.decode(std::vector<int32_t>{id}), piece);
    EXPECT_EQ(tok.decode(std::vector<int32_t>{id}, true), "");
  }
  EXPECT_FALSE(tok.is_special(199997));
  EXPECT_EQ(tok.bos_id(), 199998);
  EXPECT_EQ(tok.eos_id(), 200002);
  EXPECT_FALSE(tok.add_bos());
}

TEST(O200k, StreamDecoderJoinsACharacterSplitAcrossTokens) {
  const epwa::Tokenizer& tok = o200k();
  const std::string text = "emoji 👨‍👩‍👧‍👦 and 日本語 ok";
  epwa::StreamDecoder d(tok);
  std::string out;
  for (int32_t id : tok.encode(text, false, true)) {
    const std::string piece = d.push(id);
    out += piece;
  }
  out += d.finish();
  EXPECT_EQ(out, text);
}

// Random text mixing ASCII, whitespace runs, multi-byte characters, combining marks, ZWJ, digits
// and stray bytes: every id is in the vocabulary and decoding gives the text back (invalid bytes
// as U+FFFD, as encoding read them).
TEST(O200k, RandomTextRoundTrips) {
  const epwa::Tokenizer& tok = o200k();
  const char* const pool[] = {"a",
                              "Z",
                              " ",
                              "  ",
                              "\n",
                              "\r\n",
                              "\t",
                              "'s",
                              "'LL",
                              "7",
                              "42",
                              "\xC3\xA9",
                              "\xE6\x97\xA5",
                              "\xD8\xB9",
                              "\xE0\xA4\xA8",
                              "\xCC\x81",
                              "\xE2\x80\x8D",
                              "\xF0\x9F\x98\x80",
                              "\xEF\xBC\xA1",
                              "<|",
                              "|>",
                              "\xFF",
                              "\x80",
                              "\xE6\x97"};
  std::mt19937 rng(20);
  for (int iter = 0; iter < 300; ++iter) {
    std::string s;
    for (uint32_t n = rng() % 40; n > 0; --n) s += pool[rng() % std::size(pool)];
    const auto ids = tok.encode(s, false, false);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < 199998) << s;
    EXPECT_EQ(tok.decode(ids), epwa::tok::utf8_sanitize(s)) << s;
  }
}

// The release ships tokenizer.json: the converter's output, written out as text and read by the
// HF loader, gives the same ids.
TEST(O200k, ConvertedTokenizerJsonGivesTheReferenceIds) {
  const std::string text = epwa::tok::tiktoken_to_hf_json(kRanks).dump();
  const auto tok = epwa::hf_tokenizer_from_json(text, "o200k tokenizer.json");
  EXPECT_EQ(tok->vocab_size(), 201088);
  check_refs(*tok);
}

// llama.cpp's GGUF form (tokenizer.ggml.pre "gpt-4o"), written with GgufWriter and read back.
TEST(O200k, GgufMetadataGivesTheReferenceIds) {
  const fs::path dir = fs::temp_directory_path() / "epwa_o200k_json";
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << epwa::tok::tiktoken_to_hf_json(kRanks).dump();
  const epwa::GgufVocab v = epwa::vocab_from_model_files(dir);
  fs::remove_all(dir);
  EXPECT_EQ(v.model, "gpt2");
  EXPECT_EQ(v.pre, "gpt-4o");
  epwa::GgufWriter w;
  w.set_string("general.architecture", "gpt-oss");
  epwa::write_tokenizer_gguf_metadata(v, w);
  const fs::path out = fs::temp_directory_path() / "epwa_o200k.gguf";
  w.write(out);
  const auto tok = epwa::load_tokenizer(out);
  fs::remove(out);
  EXPECT_EQ(tok->kind(), "gguf-gpt2");
  check_refs(*tok);
}

std::string load_error(const std::string& content) {
  const fs::path p = fs::temp_directory_path() / "epwa_bad.tiktoken";
  std::ofstream(p, std::ios::binary) << content;
  std::string msg;
  try {
    epwa::load_tokenizer(p);
  } catch (const epwa::Error& e) {
    msg = e.what();
  }
  fs::remove(p);
  return msg;
}

// The real file cut short or with a damaged line: one line naming the problem, never a crash.
TEST(O200k, DamagedRanksFileIsOneLineError) {
  std::ifstream f(kRanks, std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::string cut = good.substr(0, good.size() / 2);
  cut = cut.substr(0, cut.rfind('\n') + 1);
  EXPECT_NE(load_error(cut).find("ranks; only o200k_base (199998) is known"), std::string::npos);
  std::string damaged = good;
  damaged[good.find('\n', 1000) + 1] = '#';
  const std::string msg = load_error(damaged);
  EXPECT_NE(msg.find("token is not valid base64"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

TEST(O200k, MalformedRanksFilesAreOneLineErrors) {
  const std::pair<std::string, std::string> bad[] = {
      {"IQ== 0\nIg==\n", ":2: expected \"base64 rank\""},
      {"IQ== 0\nI!== 1\n", ":2: token is not valid base64"},
      {"IQ== 0\nIg== x\n", ":2: rank is not a number"},
      {"IQ== 0\nIg== 2\n", ":2: rank 2 out of order (expected 1)"},
      {"IQ== 0\nIQ== 1\n", "appears twice"},
      {"IQ== 0\nIg== 1\n", "2 ranks; only o200k_base (199998) is known"},
  };
  for (auto& [content, want] : bad) {
    SCOPED_TRACE(content);
    const std::string msg = load_error(content);
    EXPECT_NE(msg.find(want), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

}  // namespace
