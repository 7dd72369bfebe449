// A tiktoken ranks file (one "base64(token bytes) rank" per line) read as the tokenizer.json that
// transformers' TikTokenConverter makes of it, then loaded through the HF path like a release
// file. Only o200k_base is known: it becomes GPT-OSS's o200k_harmony (docs/TOKENIZERS.md).
#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "epwa/error.hpp"
#include "epwa/platform.hpp"
#include "epwa/tokenizer.hpp"
#include "tokenizer/common.hpp"
#include "tokenizer/hf_json.hpp"
#include "tokenizer/text_ops.hpp"
#include "tokenizer/utf8.hpp"

namespace epwa::tok {

constexpr int32_t kO200kRanks = 199998;    // mergeable tokens 0..199997
constexpr int32_t kHarmonyVocab = 201088;  // then the specials, 199998..201087
constexpr int32_t kStartOfText = 199998;   // bos of the release's tokenizer_config.json
constexpr int32_t kReturn = 200002;        // its eos: the end of an assistant's final answer

namespace {

using json = nlohmann::json;

// Standard base64 with padding, as tiktoken writes it; false on anything else. (Written here: the
// Windows build has no OpenSSL, whose decoder the Linux build could use.)
bool base64_decode(std::string_view s, std::string& out) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  out.clear();
  if (s.empty() || s.size() % 4 != 0) return false;
  for (size_t i = 0; i < s.size(); i += 4) {
    const bool last = i + 4 == s.size();
    const int pad = last ? (s[i + 3] == '=') + (s[i + 2] == '=') : 0;
    if (pad == 1 && s[i + 2] == '=') return false;
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const int d = k >= 4 - pad ? 0 : val(s[i + k]);
      if (d < 0) return false;
      v = v << 6 | static_cast<uint32_t>(d);
    }
    out += static_cast<char>(v >> 16);
    if (pad < 2) out += static_cast<char>(v >> 8 & 0xff);
    if (pad < 1) out += static_cast<char>(v & 0xff);
  }
  return true;
}

// Token bytes by rank; throws a one-line Error naming the file and line.
std::vector<std::string> read_ranks(const std::string& text, const std::string& name) {
  std::vector<std::string> by_rank;
  size_t pos = 0, line_no = 0;
  std::string bytes;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const std::string where = name + ":" + std::to_string(line_no) + ": ";
    const size_t sp = line.find(' ');
    if (sp == std::string_view::npos) throw Error(where + "expected \"base64 rank\", got no space");
    if (!base64_decode(line.substr(0, sp), bytes)) throw Error(where + "token is not valid base64");
    const std::string_view r = line.substr(sp + 1);
    if (r.empty() || r.size() > 9 ||
        !std::all_of(r.begin(), r.end(), [](char c) { return c >= '0' && c <= '9'; }))
      throw Error(where + "rank is not a number");
    if (std::stoll(std::string(r)) != static_cast<long long>(by_rank.size()))
      throw Error(where + "rank " + std::string(r) + " out of order (expected " +
                  std::to_string(by_rank.size()) + ")");
    by_rank.push_back(bytes);
  }
  return by_rank;
}

std::string byte_level(const std::string& bytes) {
  std::string s;
  for (char c : bytes) s += byte_to_unicode(static_cast<uint8_t>(c));
  return s;
}

// o200k_harmony's specials as the release's tokenizer.json lists them: the named ones, and
// <|reserved_N|> for every other id (tiktoken also maps <|reserved_200018|> to 200018; the
// release file does not, so neither do we).
std::string harmony_special(int32_t id) {
  switch (id) {
    case 199998:
      return "<|startoftext|>";
    case 199999:
      return "<|endoftext|>";
    case 200002:
      return "<|return|>";
    case 200003:
      return "<|constrain|>";
    case 200005:
      return "<|channel|>";
    case 200006:
      return "<|start|>";
    case 200007:
      return "<|end|>";
    case 200008:
      return "<|message|>";
    case 200012:
      return "<|call|>";
    case 200018:
      return "<|endofprompt|>";
    default:
      return "<|reserved_" + std::to_string(id) + "|>";
  }
}

}  // namespace

nlohmann::json tiktoken_to_hf_json(const std::filesystem::path& ranks_file) {
  const std::string name = path_to_utf8(ranks_file);
  const std::vector<std::string> by_rank = read_ranks(read_file_bytes(ranks_file), name);
  std::unordered_map<std::string, int32_t> rank_of;
  rank_of.reserve(by_rank.size());
  for (size_t i = 0; i < by_rank.size(); ++i)
    if (!rank_of.emplace(by_rank[i], static_cast<int32_t>(i)).second)
      throw Error(name + ": token of rank " + std::to_string(i) + " appears twice");
  if (by_rank.size() != kO200kRanks)
    throw Error(name + ": " + std::to_string(by_rank.size()) + " ranks; only o200k_base (" +
                std::to_string(kO200kRanks) + ") is known");

  json vocab = json::object();
  json merges = json::array();
  std::vector<std::pair<int32_t, int32_t>> local;
  for (size_t r = 0; r < by_rank.size(); ++r) {
    const std::string& t = by_rank[r];
    vocab[byte_level(t)] = r;
    // As the converter does: every split of the token into two tokens is a merge producing it,
    // ordered by the token's rank, then by the ranks of the left and right parts.
    local.clear();
    for (size_t i = 1; i < t.size(); ++i) {
      auto l = rank_of.find(t.substr(0, i)), rr = rank_of.find(t.substr(i));
      if (l != rank_of.end() && rr != rank_of.end()) local.emplace_back(l->second, rr->second);
    }
    std::sort(local.begin(), local.end());
    for (auto [a, b] : local) merges.push_back({byte_level(by_rank[a]), byte_level(by_rank[b])});
  }

  json added = json::array();
  for (int32_t id = kO200kRanks; id < kHarmonyVocab; ++id)
    added.push_back({{"id", id},
                     {"content", harmony_special(id)},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  json j;
  j["version"] = "1.0";
  j["added_tokens"] = std::move(added);
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Split"},
                           {"pattern", {{"Regex", kO200kPattern}}},
                           {"behavior", "Isolated"},
                           {"invert", false}},
                          {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", true},
                           {"use_regex", false}}}}};
  j["post_processor"] = {{"type", "ByteLevel"},
                         {"add_prefix_space", true},
                         {"trim_offsets", false},
                         {"use_regex", true}};
  j["decoder"] = {{"type", "ByteLevel"},
                  {"add_prefix_space", true},
                  {"trim_offsets", true},
                  {"use_regex", true}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", true},
                {"vocab", std::move(vocab)},
                {"merges", std::move(merges)}};
  return j;
}

}  // namespace epwa::tok

namespace epwa {

std::unique_ptr<Tokenizer> load_tiktoken(const std::filesystem::path& ranks_file) {
  const std::string name = path_to_utf8(ranks_file);
  tok::HfParsed p = tok::parse_hf_tokenizer(tok::tiktoken_to_hf_json(ranks_file), name);
  // The release's tokenizer_config.json: bos <|startoftext|> (never added), eos <|return|>.
  p.spec.bos = tok::kStartOfText;
  p.spec.eos = tok::kReturn;
  return std::make_unique<tok::BpeTokenizer>(std::move(p.spec), name);
}

}  // namespace epwa
