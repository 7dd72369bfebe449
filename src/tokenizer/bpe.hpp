// The two BPE merge loops: by merge rank (HF tokenizers, GGUF "gpt2") and by the score of the
// merged piece (SentencePiece BPE, GGUF "llama"). Both merge the best pair first, the leftmost on
// ties.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace epwa::tok {

// Merge rules on token ids: (left, right) -> (rank, merged id).
class RankMerges {
 public:
  // Later duplicates of a pair are ignored (the first rank wins, as in HF).
  void add(int32_t left, int32_t right, int32_t merged);
  // Merges `syms` in place until no rule applies.
  void apply(std::vector<int32_t>& syms) const;
  size_t size() const { return rules_.size(); }
  // Rank of the first rule producing `merged`, or -1.
  int32_t first_rank_of(int32_t merged) const;

 private:
  struct Rule {
    int32_t rank, merged;
  };
  static uint64_t key(int32_t a, int32_t b) {
    return static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32 | static_cast<uint32_t>(b);
  }
  std::unordered_map<uint64_t, Rule> rules_;
  std::unordered_map<int32_t, int32_t> first_rank_;
};

// Looks up a piece among the tokens a score merge may produce; returns -1 when absent.
struct PieceScores {
  std::unordered_map<std::string, int32_t> ids;  // mergeable pieces only
  std::vector<float> scores;                     // by id
};

// SentencePiece BPE: merges the characters of `text` (valid UTF-8) by the score of the merged
// piece; returns the final pieces as views into `text`.
std::vector<std::string_view> score_merge(std::string_view text, const PieceScores& ps);

}  // namespace epwa::tok
