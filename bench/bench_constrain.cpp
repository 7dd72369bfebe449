// The cost of structured output per generated token: JsonConstraint::mask over the whole
// vocabulary, then accept, while a JSON reply of a schema is written token by token. Vocabularies:
// the bundled model's (8,000 SentencePiece tokens) and a synthetic byte-level one of 151,000
// tokens (Qwen2's size) built from the held-out corpus: every word with and without a leading
// space, every prefix and ending of those, then two-word pieces (to 151,000), the 256 single bytes
// and JSON punctuation, so that its tokens are as long and as varied as a trained BPE vocabulary's.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "epwa/json_constraint.hpp"
#include "epwa/tokenizer.hpp"

namespace fs = std::filesystem;

namespace {

// The repository root, from this file's (absolute) path: the bench targets define no source dir.
fs::path root() {
  return fs::path(__FILE__).parent_path().parent_path();
}

std::shared_ptr<const epwa::TokenTexts> bundled_texts() {
  static auto t = std::make_shared<const epwa::TokenTexts>(
      *epwa::load_tokenizer(root() / "models" / "epwa-tiny-moe"));
  return t;
}

std::shared_ptr<const epwa::TokenTexts> wide_texts() {
  static auto t = [] {
    constexpr size_t kVocab = 151000;
    std::vector<std::string> bytes;
    std::set<std::string> seen;
    auto add = [&](const std::string& s) {
      if (bytes.size() < kVocab && !s.empty() && seen.insert(s).second) bytes.push_back(s);
    };
    for (int b = 0; b < 256; ++b) add(std::string(1, static_cast<char>(b)));
    for (const char* p : {"{\"", "\":", "\": ", "\",", "\", \"", "\"}", "},", "[\"", "\"]", "{\n",
                          "\n}", ",\n", "  ", "    ", "true", "false", "null", "\\n", "\\\""})
      add(p);
    std::ifstream in(root() / "data" / "heldout" / "heldout.txt");
    std::vector<std::string> words;
    for (std::string w; in >> w;) words.push_back(w);
    for (const auto& w : words) add(" " + w), add(w);
    for (const auto& w : words)
      for (size_t n = 2; n < w.size(); ++n) add(" " + w.substr(0, n)), add(w.substr(0, n));
    for (const auto& w : words)  // word endings, as BPE's continuation pieces
      for (size_t n = 1; n + 1 < w.size(); ++n) add(w.substr(n));
    for (size_t i = 0; i + 1 < words.size() && bytes.size() < kVocab; ++i)
      add(" " + words[i] + " " + words[i + 1]);
    std::vector<bool> control(bytes.size(), false);
    bytes.push_back("<|im_end|>");  // the end of the turn, a control token
    control.push_back(true);
    return std::make_shared<const epwa::TokenTexts>(std::move(bytes), std::move(control));
  }();
  return t;
}

// A reply as a model would write it: short keys and values, then a long free string.
const char* kReply =
    R"({"answer": "yes", "count": 1234, "sure": true, "tags": ["law", "psalm"], "note": "And the )"
    R"(king spake unto the people, saying, Hear me now, for the word of the Lord is with us this )"
    R"(day and all the days of our fathers."})";

const char* kSchema = R"({"type": "object", "properties": {
    "answer": {"enum": ["yes", "no"]}, "count": {"type": "integer"}, "sure": {"type": "boolean"},
    "tags": {"type": "array", "items": {"type": "string"}}, "note": {"type": "string"}},
    "required": ["answer", "count", "sure", "tags", "note"]})";

// Writes kReply token by token (the longest allowed token that continues it); only mask() and
// accept() are timed (manual time), the choice of the token is not.
void BM_JsonMask(benchmark::State& state) {
  using Clock = std::chrono::steady_clock;
  const auto texts = state.range(0) == 0 ? bundled_texts() : wide_texts();
  const auto schema = std::make_shared<const epwa::JsonSchema>(nlohmann::json::parse(kSchema));
  const int32_t end = texts->size() - 1;
  std::vector<float> logits(static_cast<size_t>(texts->size()));
  const std::string reply = kReply;
  int64_t steps = 0;
  double total = 0;
  for (auto _ : state) {
    epwa::JsonConstraint c(schema, texts, "", {end});
    double secs = 0;
    for (size_t at = 0; at < reply.size();) {
      std::fill(logits.begin(), logits.end(), 0.0f);
      const auto t0 = Clock::now();
      c.mask(logits);
      secs += std::chrono::duration<double>(Clock::now() - t0).count();
      ++steps;
      int32_t best = -1;
      for (int32_t id = 0; id < texts->size(); ++id) {
        const std::string& b = texts->bytes(id);
        if (logits[id] == 0.0f && !texts->control(id) && reply.compare(at, b.size(), b) == 0 &&
            (best < 0 || b.size() > texts->bytes(best).size()))
          best = id;
      }
      if (best < 0) {
        state.SkipWithError("no allowed token continues the reply");
        return;
      }
      const auto t1 = Clock::now();
      c.accept(best);
      secs += std::chrono::duration<double>(Clock::now() - t1).count();
      at += texts->bytes(best).size();
    }
    state.SetIterationTime(secs);
    total += secs;
  }
  state.counters["tokens"] = static_cast<double>(steps) / static_cast<double>(state.iterations());
  state.counters["us_per_token"] = 1e6 * total / static_cast<double>(steps);
  state.SetLabel(std::to_string(texts->size()) + "-token vocabulary");
}
BENCHMARK(BM_JsonMask)
    ->Arg(0)
    ->Arg(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);

}  // namespace
